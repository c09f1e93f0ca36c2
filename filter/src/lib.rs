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
pub mod text;

#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static HEAP: heap::SizeClasses<std::alloc::System> = heap::SizeClasses::new(std::alloc::System);

pub use attributes::{Attributes, HttpAttributes, RequestHead, TrafficKind};
pub use config::{ConfigError, ConfigPath};
pub use policy::{CompiledPolicy, Decision, PolicyAction, Reason, Verdict};

pub use outcome::{
    CompiledGlobalLimit, CompiledRateLimit, FinalVerdict, Outcome, ProtocolViolation, RateLimitHit,
};

use policy::{compile_rule, HttpOnlyOnTcp};
use protocol::ProtocolChecks;
use ratelimit::global::EntryValue;
use ratelimit::{validate_rate_limits, CasStore, KeyAttribute, RateLimiter};

/// Everything the filter compiles from one pluginConfig.
#[derive(Debug, Clone, Default)]
pub struct CompiledConfig {
    pub policy: CompiledPolicy,
    /// Local limits (token buckets in shared data), checked first.
    pub rate_limits: Vec<CompiledRateLimit>,
    /// Limits decided by a rate limit service, asked once the local ones allowed a stream.
    pub global_limits: Vec<CompiledGlobalLimit>,
    /// `None`: the configuration has no `protocol` key, no protocol checks run.
    pub protocol: Option<ProtocolChecks>,
    header_names: Vec<String>,
    tcp_needs_inspection: bool,
}

impl CompiledConfig {
    /// Parses, validates and compiles pluginConfig JSON; the error names the offending value.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let config = config::parse_config(json)?;
        let root = ConfigPath::root();
        let policy = CompiledPolicy::compile(&config.policies, &root.field("policies"))?;

        let limits_path = root.field("rateLimits");
        let specs = validate_rate_limits(&config.rate_limits, &limits_path)?;
        let mut header_names: Vec<String> = policy.header_names().to_vec();
        let mut add_header = |name: &str| {
            if !header_names.iter().any(|h| h == name) {
                header_names.push(name.to_string());
            }
        };
        let mut rate_limits = Vec::with_capacity(specs.len());
        let mut global_limits = Vec::new();
        let no_match = config::RuleSpec::default();
        for (i, (limit, spec)) in config.rate_limits.iter().zip(specs).enumerate() {
            // A limit on HTTP-only fields (hosts, paths, ...) does not apply to TCP connections.
            let rule = compile_rule(
                limit.match_rule.as_ref().unwrap_or(&no_match),
                &limits_path.index(i).field("match"),
                HttpOnlyOnTcp::DropRule,
            )?;
            rule.http.header_names().for_each(&mut add_header);
            for attr in &spec.key {
                if let KeyAttribute::RequestHeader(name) = attr {
                    add_header(name);
                }
            }
            match &limit.global {
                Some(global) => {
                    let limit = global.validate(&limits_path.index(i).field("global"), &spec)?;
                    for entry in limit.descriptors.iter().flatten() {
                        if let EntryValue::Attribute(KeyAttribute::RequestHeader(name)) =
                            &entry.value
                        {
                            add_header(name);
                        }
                    }
                    global_limits.push(CompiledGlobalLimit {
                        limit,
                        http: rule.http,
                        tcp: rule.tcp,
                    });
                }
                None => rate_limits.push(CompiledRateLimit {
                    limiter: RateLimiter::new(spec),
                    http: rule.http,
                    tcp: rule.tcp,
                }),
            }
        }
        text::sort_by(&mut header_names, |a, b| a < b);

        let protocol = match &config.protocol {
            Some(p) => Some(p.validate(&root.field("protocol"))?),
            None => None,
        };
        let tcp_needs_inspection = protocol.is_some()
            || policy.tcp_needs_inspection()
            || rate_limits
                .iter()
                .any(|l| l.tcp.as_ref().is_some_and(|m| m.needs_inspection()))
            || global_limits
                .iter()
                .any(|l| l.tcp.as_ref().is_some_and(|m| m.needs_inspection()));
        Ok(Self {
            policy,
            rate_limits,
            global_limits,
            protocol,
            header_names,
            tcp_needs_inspection,
        })
    }

    /// Lower-case names of the request headers policies and rate limits read.
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// TCP connections wait for their first bytes to be inspected before they are decided.
    pub fn tcp_needs_inspection(&self) -> bool {
        self.tcp_needs_inspection
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
        let decision = self.policy.evaluate(attrs);
        if !decision.is_allowed() {
            return Outcome::policy_only(decision);
        }
        // A stream refused by a protocol check takes no token.
        let rate_limit = match violation {
            Some(_) => None,
            None => outcome::check_rate_limits(&self.rate_limits, attrs, store, now_ns),
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
