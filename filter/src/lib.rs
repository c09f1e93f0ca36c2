//! egress-filter: the egress gateway's policy engine and its proxy-wasm glue.
//!
//! The engine (configuration, matchers, Istio AuthorizationPolicy evaluation, attribute
//! gathering, decision log) is plain Rust that runs natively in tests and benchmarks; the
//! proxy-wasm contexts in `wasm` (wasm32 only) gather attributes, ask the engine and act.

#![deny(unsafe_code)]

pub mod attributes;
pub mod config;
pub mod gather;
pub mod heap;
pub mod log;
pub mod matchers;
pub mod metrics;
pub mod normalize;
pub mod outcome;
pub mod policy;
pub mod protocol;
pub mod ratelimit;
pub mod rls;
pub mod stat_name;
pub mod text;

#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static HEAP: heap::SizeClasses<std::alloc::System> = heap::SizeClasses::new(std::alloc::System);

pub use attributes::{Attributes, HttpAttributes, Reads, RequestHead, TrafficKind};
pub use config::{ConfigError, ConfigPath};
pub use policy::{
    CompiledPolicy, CompiledTiers, Decision, PolicyAction, Reason, TierName, TraceStep, Verdict,
};

pub use outcome::{
    CompiledGlobalLimit, CompiledRateLimit, FinalVerdict, Outcome, ProtocolViolation, RateLimitHit,
};

use policy::{compile_rule, HttpOnlyOnTcp, LimitPlan, Tracer};
use protocol::ProtocolChecks;
use ratelimit::global::EntryValue;
use ratelimit::{name_already_used, CasStore, KeyAttribute, RateLimitConfig, RateLimiter};

/// Everything the filter compiles from one pluginConfig.
#[derive(Debug, Clone, Default)]
pub struct CompiledConfig {
    /// Plain `policies` (empty with `tiers`).
    pub policy: CompiledPolicy,
    /// `Some` for a configuration with `tiers`.
    pub tiers: Option<CompiledTiers>,
    /// Every local limit (token buckets in shared data, checked first): the top-level
    /// `rateLimits` first, then those attached to tier policies.
    pub rate_limits: Vec<CompiledRateLimit>,
    /// How many of `rate_limits` are top-level (apply to every allowed stream they match).
    top_level_limits: usize,
    /// Limits decided by a rate limit service (top-level `rateLimits` with `global`), asked once
    /// the local ones allowed a stream.
    pub global_limits: Vec<CompiledGlobalLimit>,
    /// `None`: the configuration has no `protocol` key, no protocol checks run.
    pub protocol: Option<ProtocolChecks>,
    header_names: Vec<String>,
    /// What an HTTP request reads before its decision (see [`Reads`]).
    http_reads: Reads,
    tcp_needs_inspection: bool,
    /// What is logged, and where (`log`).
    pub log: config::LogConfig,
}

/// Compiles rate limits in document order, keeping their names unique across the document
/// (names key the shared data and the metrics).
#[derive(Default)]
struct LimitCompiler {
    limits: Vec<CompiledRateLimit>,
    global: Vec<CompiledGlobalLimit>,
    paths: Vec<(String, ConfigPath)>,
    header_names: Vec<String>,
    http_reads: Reads,
}

impl LimitCompiler {
    /// Validates and adds the limit at `path`; a `global` one only at the top level (`rateLimits`).
    /// Returns a local limit's index in `limits`.
    #[inline(never)]
    fn add(
        &mut self,
        limit: &RateLimitConfig,
        path: &ConfigPath,
        top_level: bool,
    ) -> Result<u32, ConfigError> {
        let spec = limit.validate(path)?;
        let metric_form = stat_name::prometheus_form(&spec.name);
        let earlier = self
            .paths
            .iter()
            .find(|(name, _)| stat_name::prometheus_form(name) == metric_form);
        if let Some((first_name, first)) = earlier {
            return Err(name_already_used(&spec.name, path, first_name, first));
        }
        let no_match = config::RuleSpec::default();
        // A limit on HTTP-only fields (hosts, paths, ...) does not apply to TCP connections.
        let rule = compile_rule(
            limit.match_rule.as_ref().unwrap_or(&no_match),
            &path.field("match"),
            HttpOnlyOnTcp::DropRule,
        )?;
        for name in rule.http.header_names() {
            text::add_unique(&mut self.header_names, name);
        }
        self.http_reads |= rule.http.reads();
        for attr in &spec.key {
            self.http_reads |= attr.reads();
            if let KeyAttribute::RequestHeader(name) = attr {
                text::add_unique(&mut self.header_names, name);
            }
        }
        self.paths.push((spec.name.clone(), path.clone()));
        if let Some(global) = &limit.global {
            if !top_level {
                return Err(ratelimit::global_limit_not_top_level(path));
            }
            let limit = global.validate(&path.field("global"), &spec)?;
            for entry in limit.descriptors.iter().flatten() {
                if let EntryValue::Attribute(attr) = &entry.value {
                    self.http_reads |= attr.reads();
                    if let KeyAttribute::RequestHeader(name) = attr {
                        text::add_unique(&mut self.header_names, name);
                    }
                }
            }
            self.global.push(CompiledGlobalLimit {
                limit,
                http: rule.http,
                tcp: rule.tcp,
            });
            return Ok((self.global.len() - 1) as u32);
        }
        self.limits.push(CompiledRateLimit {
            limiter: RateLimiter::new(spec),
            http: rule.http,
            tcp: rule.tcp,
        });
        Ok((self.limits.len() - 1) as u32)
    }
}

impl CompiledConfig {
    /// Parses, validates and compiles pluginConfig JSON; the error names the offending value.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let config = config::parse_config(json)?;
        let root = ConfigPath::root();
        let policy = CompiledPolicy::compile(&config.policies, &root.field("policies"))?;

        let limits_path = root.field("rateLimits");
        let mut limits = LimitCompiler::default();
        for (i, limit) in config.rate_limits.iter().enumerate() {
            limits.add(limit, &limits_path.index(i), true)?;
        }
        let top_level_limits = limits.limits.len();
        let tiers = match &config.tiers {
            Some(spec) => Some(CompiledTiers::compile(
                spec,
                &root.field("tiers"),
                &mut |limit, path| limits.add(limit, path, false),
            )?),
            None => None,
        };

        let mut header_names: Vec<String> = policy.header_names().to_vec();
        let tier_headers = tiers.iter().flat_map(|t| t.header_names());
        for name in tier_headers.chain(&limits.header_names) {
            text::add_unique(&mut header_names, name);
        }
        text::sort_by(&mut header_names, |a, b| a < b);
        let mut http_reads = policy.http_reads() | limits.http_reads;
        if let Some(tiers) = &tiers {
            http_reads |= tiers.http_reads();
        }
        if config.protocol.is_some() {
            // The HTTP checks compare the SNI with the host, and look at the protocol.
            http_reads |= Reads::SNI | Reads::PROTOCOL;
        }
        if !limits.global.is_empty() {
            // A request waiting for the rate limit service is decided again on its answer,
            // from attributes it keeps: it reads them all at once.
            http_reads = Reads::ALL;
        }
        let rate_limits = limits.limits;
        let global_limits = limits.global;

        let protocol = match &config.protocol {
            Some(p) => Some(p.validate(&root.field("protocol"))?),
            None => None,
        };
        let tcp_needs_inspection = protocol.is_some()
            || policy.tcp_needs_inspection()
            || tiers
                .as_ref()
                .is_some_and(CompiledTiers::tcp_needs_inspection)
            || rate_limits
                .iter()
                .any(|l| l.tcp.as_ref().is_some_and(|m| m.needs_inspection()))
            || global_limits
                .iter()
                .any(|l| l.tcp.as_ref().is_some_and(|m| m.needs_inspection()));
        Ok(Self {
            policy,
            tiers,
            rate_limits,
            top_level_limits,
            global_limits,
            protocol,
            header_names,
            http_reads,
            tcp_needs_inspection,
            log: config.log,
        })
    }

    /// The connection properties an HTTP request must have read before it is decided: those
    /// some rule, rate limit key or protocol check looks at. The peer identity is always read.
    /// The rest is read only for a decision line (see `log.allowed`).
    pub fn http_reads(&self) -> Reads {
        self.http_reads
    }

    /// Lower-case names of the request headers policies and rate limits read.
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// TCP connections wait for their first bytes to be inspected before they are decided.
    pub fn tcp_needs_inspection(&self) -> bool {
        self.tcp_needs_inspection
    }

    /// The policy decision alone (plain `policies`, or the tiers).
    pub fn evaluate(&self, attrs: &Attributes) -> Decision<'_> {
        self.evaluate_traced(attrs, None).0
    }

    /// The policy decision and the tier-attached limits that apply if the stream is allowed;
    /// every step goes to `tracer` when there is one (`explain`).
    pub fn evaluate_traced<'p>(
        &'p self,
        attrs: &Attributes,
        tracer: Option<Tracer<'_>>,
    ) -> (Decision<'p>, LimitPlan<'p>) {
        match &self.tiers {
            None => {
                if let Some(tracer) = tracer {
                    self.policy.trace(attrs, None, tracer);
                }
                (self.policy.evaluate(attrs), LimitPlan::default())
            }
            Some(tiers) => tiers.evaluate(attrs, tracer),
        }
    }

    /// Decides a stream: policies, then the protocol check result `violation` (computed by the
    /// caller from the request headers or the connection's first bytes), then rate limits
    /// against `store` at host time `now_ns`.
    pub fn decide<S: CasStore + ?Sized>(
        &self,
        attrs: &Attributes,
        violation: Option<ProtocolViolation>,
        store: &S,
        now_ns: u64,
    ) -> Outcome<'_> {
        self.decide_traced(attrs, violation, store, now_ns, None)
    }

    /// [`CompiledConfig::decide`], reporting the policy evaluation's steps to `tracer`.
    pub fn decide_traced<S: CasStore + ?Sized>(
        &self,
        attrs: &Attributes,
        violation: Option<ProtocolViolation>,
        store: &S,
        now_ns: u64,
        tracer: Option<Tracer<'_>>,
    ) -> Outcome<'_> {
        let (decision, plan) = self.evaluate_traced(attrs, tracer);
        if !decision.is_allowed() {
            return Outcome::policy_only(decision);
        }
        // A stream refused by a protocol check takes no token.
        let rate_limit = match violation {
            Some(_) => None,
            None => {
                let top_level = self.rate_limits.get(..self.top_level_limits).unwrap_or(&[]);
                let attached = plan
                    .rules
                    .iter()
                    .flatten()
                    .chain(plan.scope)
                    .filter_map(|&i| self.rate_limits.get(i as usize));
                outcome::check_rate_limits(top_level.iter().chain(attached), attrs, store, now_ns)
            }
        };
        Outcome {
            decision,
            violation,
            rate_limit,
            global: None,
        }
    }

    /// The first global limit from `from` on that applies to the stream: the next one to ask
    /// once the policies, protocol checks and local limits allowed it.
    pub fn next_global_limit(&self, attrs: &Attributes, from: usize) -> Option<usize> {
        let rest = self.global_limits.get(from..)?;
        rest.iter().position(|l| l.applies(attrs)).map(|i| i + from)
    }
}
