//! proxy-wasm contexts: the root context compiles the configuration once per `on_configure` and
//! hands an `Rc` of it to every HTTP and TCP stream; streams gather attributes, ask the engine,
//! log, count and act. Nothing here parses JSON per request.

mod abi;
mod imports;

use std::rc::Rc;

use abi::Action;

use crate::attributes::{Attributes, TrafficKind};
use crate::gather::{gather_connection, gather_http_checked};
use crate::log::{decision_line, outcome_line, trace_line};
use crate::metrics;
use crate::policy::{
    Decision, PolicyAction, PolicyInfo, Reason, RuleAction, TierName, TraceStep, Verdict, WouldBe,
};
use crate::protocol::http::is_istio_internal_sni;
use crate::protocol::{ConnectionFacts, ConnectionInspector, DEFAULT_MAX_CLIENT_HELLO_BYTES};
use crate::{CompiledConfig, CompiledTiers, FinalVerdict, Outcome, ProtocolViolation};
use imports::{Host, LogLevel, SharedData};

/// Counter ids, defined at configure time (names are bounded by the configuration), laid out so
/// counting a decision formats no names.
#[derive(Default)]
struct Counters {
    /// `[kind][verdict]`: http/tcp × allow/deny.
    decision: [[Option<u32>; 2]; 2],
    /// By [`Reason::index`].
    reason: [Option<u32>; 7],
    /// Plain `policies`.
    policy: PolicyCounterList,
    /// `tiers`: `[tier][verdict]`, and PASSes taken in the admin tier.
    tier: [[Option<u32>; 2]; 4],
    tier_pass: Option<u32>,
    /// `tiers`: admin and baseline policies, and the namespace tier's by namespace index.
    admin: PolicyCounterList,
    baseline: PolicyCounterList,
    namespaces: Vec<PolicyCounterList>,
    /// `[kind]`: http, tcp.
    ratelimited: [Option<u32>; 2],
    protocol_denied: [Option<u32>; 2],
    /// By limit name, in configuration order.
    limit: Vec<(String, Option<u32>)>,
}

/// Policies' counters by policy name, sorted for binary search.
type PolicyCounterList = Vec<(String, PolicyCounters)>;

fn sort_counters(list: &mut PolicyCounterList) {
    crate::text::sort_by(list, |a, b| a.0 < b.0);
}

fn find<'c>(list: &'c PolicyCounterList, name: &str) -> Option<&'c PolicyCounters> {
    let at = list.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok()?;
    list.get(at).map(|(_, ids)| ids)
}

#[derive(Default)]
struct PolicyCounters {
    /// By [`outcome_index`]: allow, deny, audit, pass (those the policy can produce).
    outcome: [Option<u32>; 4],
    /// Dry-run outcomes, same layout.
    dry_run: [Option<u32>; 4],
}

impl PolicyCounters {
    /// The counters of an AuthorizationPolicy-like policy whose names start with `prefix`.
    fn istio(info: &PolicyInfo, prefix: &str) -> Self {
        let mut ids = Self::default();
        if info.dry_run {
            for would_be in [WouldBe::Allow, WouldBe::Deny, WouldBe::Audit] {
                ids.set(true, would_be, prefix);
            }
        } else {
            ids.set(false, action_outcome(info.action), prefix);
        }
        ids
    }

    fn set(&mut self, dry_run: bool, outcome: WouldBe, prefix: &str) {
        let (slots, name) = if dry_run {
            (
                &mut self.dry_run,
                format!("{prefix}.dry_run.{}", outcome.as_str()),
            )
        } else {
            (&mut self.outcome, format!("{prefix}.{}", outcome.as_str()))
        };
        if let Some(slot) = slots.get_mut(outcome_index(outcome)) {
            *slot = define(&name);
        }
    }
}

fn define(name: &str) -> Option<u32> {
    match imports::define_counter(name) {
        Ok(id) => Some(id),
        Err(status) => {
            imports::log(
                LogLevel::Warn,
                &format!("cannot define metric {name}: status {}", status.0),
            );
            None
        }
    }
}

fn kind_index(kind: TrafficKind) -> usize {
    match kind {
        TrafficKind::Http => 0,
        TrafficKind::Tcp => 1,
    }
}

fn verdict_index(verdict: Verdict) -> usize {
    match verdict {
        Verdict::Allow => 0,
        Verdict::Deny => 1,
    }
}

fn outcome_index(outcome: WouldBe) -> usize {
    match outcome {
        WouldBe::Allow => 0,
        WouldBe::Deny => 1,
        WouldBe::Audit => 2,
        WouldBe::Pass => 3,
    }
}

/// The outcome counted when a policy of this action decides (or, for AUDIT, matches).
fn action_outcome(action: PolicyAction) -> WouldBe {
    match action {
        PolicyAction::Allow => WouldBe::Allow,
        PolicyAction::Deny => WouldBe::Deny,
        PolicyAction::Audit => WouldBe::Audit,
    }
}

fn tier_index(tier: TierName) -> usize {
    match tier {
        TierName::Admin => 0,
        TierName::Namespace => 1,
        TierName::Baseline => 2,
        TierName::Default => 3,
    }
}

impl Counters {
    #[inline(never)]
    fn define(config: &CompiledConfig) -> Self {
        let mut counters = Self::default();
        for kind in [TrafficKind::Http, TrafficKind::Tcp] {
            for verdict in [Verdict::Allow, Verdict::Deny] {
                if let Some(slot) = counters
                    .decision
                    .get_mut(kind_index(kind))
                    .and_then(|row| row.get_mut(verdict_index(verdict)))
                {
                    *slot = define(&metrics::decision_counter(kind, verdict));
                }
            }
        }
        for kind in [TrafficKind::Http, TrafficKind::Tcp] {
            if let Some(slot) = counters.ratelimited.get_mut(kind_index(kind)) {
                *slot = define(&metrics::ratelimited_counter(kind));
            }
            if let Some(slot) = counters.protocol_denied.get_mut(kind_index(kind)) {
                *slot = define(&metrics::protocol_denied_counter(kind));
            }
        }
        for limit in &config.rate_limits {
            let name = limit.limiter.name();
            counters
                .limit
                .push((name.to_string(), define(&metrics::limit_counter(name))));
        }
        for (slot, code) in counters.reason.iter_mut().zip(Reason::CODES) {
            *slot = define(&metrics::reason_counter(code));
        }
        for policy in config.policy.policies() {
            let ids = PolicyCounters::istio(policy, &metrics::policy_prefix(&policy.name));
            counters.policy.push((policy.name.clone(), ids));
        }
        sort_counters(&mut counters.policy);
        if let Some(tiers) = &config.tiers {
            counters.define_tiers(tiers);
        }
        counters
    }

    #[inline(never)]
    fn define_tiers(&mut self, tiers: &CompiledTiers) {
        let tier_codes = self.reason.iter_mut().skip(Reason::CODES.len());
        for (slot, code) in tier_codes.zip(Reason::TIER_CODES) {
            *slot = define(&metrics::reason_counter(code));
        }
        // Rows in `tier_index` order, columns in `verdict_index` order.
        for (row, tier) in self.tier.iter_mut().zip(TierName::ALL) {
            for (slot, verdict) in row.iter_mut().zip(["allow", "deny"]) {
                *slot = define(&metrics::tier_counter(tier, verdict));
            }
        }
        self.tier_pass = define(&metrics::tier_counter(TierName::Admin, "pass"));
        for (tier, policies, list) in [
            (TierName::Admin, tiers.admin(), &mut self.admin),
            (TierName::Baseline, tiers.baseline(), &mut self.baseline),
        ] {
            for info in policies {
                let prefix = metrics::tier_policy_prefix(tier, None, &info.name);
                let mut ids = PolicyCounters::default();
                for action in RuleAction::ALL.into_iter().filter(|a| info.has_action(*a)) {
                    ids.set(info.dry_run, action.would_be(), &prefix);
                }
                list.push((info.name.clone(), ids));
            }
            sort_counters(list);
        }
        for (namespace, policy) in tiers.namespaces() {
            let mut list = PolicyCounterList::new();
            for info in policy.map_or(&[][..], |p| p.policies()) {
                let prefix =
                    metrics::tier_policy_prefix(TierName::Namespace, Some(namespace), &info.name);
                list.push((info.name.clone(), PolicyCounters::istio(info, &prefix)));
            }
            sort_counters(&mut list);
            self.namespaces.push(list);
        }
    }

    /// The counters of a policy of `tier`; `namespace`: the source namespace's index.
    fn tier_policy(
        &self,
        tier: TierName,
        namespace: Option<usize>,
        name: &str,
    ) -> Option<&PolicyCounters> {
        let list = match tier {
            TierName::Admin => &self.admin,
            TierName::Baseline => &self.baseline,
            _ => self.namespaces.get(namespace?)?,
        };
        find(list, name)
    }

    /// `namespace`: the index of the request's source namespace in the namespace tier.
    fn record_outcome(&self, kind: TrafficKind, outcome: &Outcome<'_>, namespace: Option<usize>) {
        self.record(kind, &outcome.decision, namespace);
        match outcome.verdict() {
            FinalVerdict::RateLimited => {
                bump(self.ratelimited.get(kind_index(kind)));
                if let Some(hit) = &outcome.rate_limit {
                    let name: &str = &hit.decision.limit_name;
                    bump(self.limit.iter().find(|(n, _)| n == name).map(|(_, id)| id));
                }
            }
            FinalVerdict::Deny if outcome.violation.is_some() => {
                bump(self.protocol_denied.get(kind_index(kind)));
            }
            _ => {}
        }
    }

    fn record(&self, kind: TrafficKind, decision: &Decision<'_>, namespace: Option<usize>) {
        bump(
            self.decision
                .get(kind_index(kind))
                .and_then(|row| row.get(verdict_index(decision.verdict))),
        );
        bump(self.reason.get(decision.reason.index()));
        let Some(tier) = decision.tier else {
            if let Some(policy) = decision.policy {
                let outcome = decision.action.map_or(WouldBe::Allow, action_outcome);
                let ids = find(&self.policy, policy);
                bump(ids.and_then(|p| p.outcome.get(outcome_index(outcome))));
            }
            for policy in &decision.audit {
                let ids = find(&self.policy, policy);
                bump(ids.and_then(|p| p.outcome.get(outcome_index(WouldBe::Audit))));
            }
            for hit in &decision.dry_run {
                bump(
                    find(&self.policy, hit.policy)
                        .and_then(|p| p.dry_run.get(outcome_index(hit.would_be))),
                );
            }
            return;
        };
        bump(
            self.tier
                .get(tier_index(tier))
                .and_then(|row| row.get(verdict_index(decision.verdict))),
        );
        if let Some(passed) = &decision.passed {
            bump(Some(&self.tier_pass));
            bump(
                self.tier_policy(TierName::Admin, None, passed.policy)
                    .and_then(|p| p.outcome.get(outcome_index(WouldBe::Pass))),
            );
        }
        if let (Some(policy), Some(action)) = (decision.policy, decision.action) {
            bump(
                self.tier_policy(tier, namespace, policy)
                    .and_then(|p| p.outcome.get(outcome_index(action_outcome(action)))),
            );
        }
        for policy in &decision.audit {
            bump(
                self.tier_policy(TierName::Namespace, namespace, policy)
                    .and_then(|p| p.outcome.get(outcome_index(WouldBe::Audit))),
            );
        }
        for hit in &decision.dry_run {
            let Some(tier) = hit.tier else { continue };
            bump(
                self.tier_policy(tier, namespace, hit.policy)
                    .and_then(|p| p.dry_run.get(outcome_index(hit.would_be))),
            );
        }
    }
}

/// Counts one on a counter that was defined (a failed definition was logged at configure time).
fn bump(id: Option<&Option<u32>>) {
    if let Some(Some(id)) = id {
        imports::increment_counter(*id);
    }
}

/// What every stream of a configuration shares.
struct FilterState {
    config: CompiledConfig,
    counters: Counters,
    /// The host logs at debug level (read at configure time): every evaluation step is logged
    /// for `explain`.
    explain: bool,
}

#[derive(Default, Clone)]
struct EgressRoot {
    state: Option<Rc<FilterState>>,
}

impl EgressRoot {
    fn on_configure(&mut self) -> bool {
        let bytes = match imports::get_plugin_configuration() {
            Ok(bytes) => bytes,
            Err(status) => {
                imports::log(
                    LogLevel::Error,
                    &format!("invalid configuration: $: cannot read the plugin configuration (status {})", status.0),
                );
                return false;
            }
        };
        match CompiledConfig::from_json(&bytes) {
            Ok(config) => {
                let counters = Counters::define(&config);
                // With `tiers`, `policies` counts the policies of every tier.
                let policies = config.policy.policies().len()
                    + config.tiers.as_ref().map_or(0, CompiledTiers::policy_count);
                imports::log(
                    LogLevel::Info,
                    &format!(
                        "{{\"event\":\"configured\",\"policies\":{policies},\"rateLimits\":{},\"protocolChecks\":{}}}",
                        config.rate_limits.len(),
                        config.protocol.is_some()
                    ),
                );
                // 0 is trace, 1 debug.
                let explain = imports::log_level().is_some_and(|level| level <= 1);
                self.state = Some(Rc::new(FilterState {
                    config,
                    counters,
                    explain,
                }));
                true
            }
            Err(err) => {
                // Envoy gives every configuration a root context of its own and checks it in
                // a canary VM first: a rejected one never reaches the workers, whose roots keep
                // serving the previous configuration, and the update is refused (NACK).
                imports::log(LogLevel::Error, &format!("invalid configuration: {err}"));
                false
            }
        }
    }

    fn create_http_context(&self) -> EgressHttp {
        EgressHttp {
            state: self.state.clone(),
        }
    }

    fn create_stream_context(&self) -> EgressStream {
        EgressStream {
            state: self.state.clone(),
            verdict: None,
            identity_pending: false,
            attrs: None,
            inspection: None,
            closing: false,
        }
    }
}

/// A local reply: 403 for a denial, 429 for a rate-limited request.
struct Reply {
    status: u32,
    details: &'static str,
    body: String,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn deny(body: String) -> Self {
        Self {
            status: 403,
            details: "egress_denied",
            body,
            headers: Vec::new(),
        }
    }
}

/// Denies a stream that cannot be evaluated, logging and counting it.
fn cannot_evaluate(state: Option<&FilterState>, kind: TrafficKind, detail: String) -> Reply {
    let decision = Decision::cannot_evaluate(detail);
    imports::log(LogLevel::Info, &decision_line(kind, &decision, None));
    if let Some(state) = state {
        state.counters.record(kind, &decision, None);
    }
    Reply::deny(decision.deny_body())
}

/// Evaluates (policies, then the protocol check result, then rate limits), logs and counts one
/// stream; returns the reply to send, `None` when the stream may go on.
fn decide(
    state: Option<&FilterState>,
    kind: TrafficKind,
    attrs: Result<&Attributes, String>,
    violation: Option<ProtocolViolation>,
) -> Option<Reply> {
    let Some(state) = state else {
        return Some(cannot_evaluate(
            None,
            kind,
            "the filter has no valid configuration".to_string(),
        ));
    };
    let attrs = match attrs {
        Ok(attrs) => attrs,
        Err(detail) => return Some(cannot_evaluate(Some(state), kind, detail)),
    };
    // The clock is read only when a limit may need it (each host call costs time).
    let now_ns = if state.config.rate_limits.is_empty() {
        0
    } else {
        match imports::current_time_ns() {
            Some(now) => now,
            None => {
                return Some(cannot_evaluate(
                    Some(state),
                    kind,
                    "cannot read the host clock".to_string(),
                ))
            }
        }
    };
    let mut log_step = |step: &TraceStep<'_>| imports::log(LogLevel::Debug, &trace_line(step));
    let tracer = match state.explain {
        true => Some(&mut log_step as &mut dyn FnMut(&TraceStep<'_>)),
        false => None,
    };
    let outcome = state
        .config
        .decide_traced(attrs, violation, &SharedData, now_ns, tracer);
    imports::log(LogLevel::Info, &outcome_line(kind, &outcome, Some(attrs)));
    let namespace = outcome.decision.namespace.map(|n| n as usize);
    state.counters.record_outcome(kind, &outcome, namespace);
    match outcome.verdict() {
        FinalVerdict::Allow => None,
        FinalVerdict::Deny => Some(Reply::deny(outcome.reply_body())),
        FinalVerdict::RateLimited => Some(Reply {
            status: 429,
            details: "egress_rate_limited",
            body: outcome.reply_body(),
            headers: outcome
                .rate_limit
                .as_ref()
                .map(|hit| hit.decision.limited_response_headers())
                .unwrap_or_default(),
        }),
    }
}

struct EgressHttp {
    state: Option<Rc<FilterState>>,
}

impl EgressHttp {
    fn on_http_request_headers(&mut self) -> Action {
        let state = self.state.as_deref();
        let wanted: &[String] = state.map_or(&[], |s| s.config.header_names());
        let checks = state
            .and_then(|s| s.config.protocol.as_ref())
            .map(|p| &p.http);
        let (attrs, violation) = match gather_http_checked(&Host, wanted, checks) {
            Ok((attrs, violation)) => (Ok(attrs), violation.map(ProtocolViolation::Http)),
            Err(e) => (Err(e.to_string()), None),
        };
        let Some(reply) = decide(
            state,
            TrafficKind::Http,
            attrs.as_ref().map_err(Clone::clone),
            violation,
        ) else {
            return Action::Continue;
        };
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "text/plain")];
        headers.extend(reply.headers.iter().map(|(k, v)| (*k, v.as_str())));
        if let Err(status) =
            imports::send_local_response(reply.status, reply.details, &headers, &reply.body)
        {
            // Fail closed: without a reply, the request must not go on.
            imports::log(
                LogLevel::Error,
                &format!(
                    "cannot send the local reply (status {}); resetting the stream",
                    status.0
                ),
            );
            let _ = imports::reset_http_request();
        }
        Action::Pause
    }
}

/// A connection waiting for its first bytes to be inspected.
struct Inspection {
    inspector: ConnectionInspector,
    /// Bytes of the downstream buffer already fed: Envoy hands over the whole buffered data
    /// on every call while the filter holds it.
    fed: usize,
}

/// Why a connection the filter has not judged yet is refused when its server speaks first.
const UPSTREAM_BEFORE_DECISION: &str = "the upstream sent data before the connection was judged \
(server-first protocols cannot be held: Envoy has no continue on the write path)";

struct EgressStream {
    state: Option<Rc<FilterState>>,
    verdict: Option<Verdict>,
    /// The connection terminates TLS but the peer certificate is not known yet (handshake still
    /// running at connect time); the decision waits for the first data, as Envoy's network RBAC
    /// filter does.
    identity_pending: bool,
    /// Attributes gathered at connect time, kept while the decision waits.
    attrs: Option<Result<Attributes, String>>,
    inspection: Option<Inspection>,
    /// The client closed: a late decision is logged and counted, there is nothing to close.
    closing: bool,
}

impl EgressStream {
    fn decide_now(
        &mut self,
        attrs: Result<&Attributes, String>,
        violation: Option<ProtocolViolation>,
    ) -> Action {
        let denied = decide(self.state.as_deref(), TrafficKind::Tcp, attrs, violation).is_some();
        self.verdict = Some(if denied {
            Verdict::Deny
        } else {
            Verdict::Allow
        });
        self.inspection = None;
        self.attrs = None;
        self.enforce()
    }

    fn enforce(&self) -> Action {
        match self.verdict {
            Some(Verdict::Deny) => {
                if self.closing {
                    return Action::Pause;
                }
                if let Err(status) = imports::close_downstream() {
                    imports::log(
                        LogLevel::Error,
                        &format!("cannot close the denied connection (status {})", status.0),
                    );
                }
                Action::Pause
            }
            Some(Verdict::Allow) => Action::Continue,
            None => Action::Pause,
        }
    }

    /// Feeds the bytes not seen yet; the facts once inspection is complete (or must end).
    fn inspect(
        &mut self,
        data_size: usize,
        end_of_stream: bool,
    ) -> Result<Option<ConnectionFacts>, String> {
        let Some(inspection) = self.inspection.as_mut() else {
            return Ok(None);
        };
        // Bytes already inspected are gone from the buffer (a filter before this one drained
        // it): what follows cannot be lined up with what was seen.
        if data_size < inspection.fed {
            return Err(format!(
                "the connection's buffered data shrank from {} to {data_size} bytes during inspection",
                inspection.fed
            ));
        }
        let new = data_size - inspection.fed;
        if new > 0 {
            let bytes = imports::get_downstream_data(inspection.fed, new)
                .map_err(|s| format!("cannot read the connection's data (status {})", s.0))?;
            inspection.fed = inspection.fed.saturating_add(bytes.len());
            if let Some(facts) = inspection.inspector.feed(&bytes) {
                return Ok(Some(facts.clone()));
            }
        }
        if end_of_stream {
            return Ok(Some(inspection.inspector.finish().clone()));
        }
        Ok(None)
    }

    /// Decides with the inspected `facts`: they become attributes for the policies, and the
    /// TCP protocol checks run on them.
    fn decide_with_facts(&mut self, facts: &ConnectionFacts) -> Action {
        let mut attrs = match self.attrs.take() {
            Some(Ok(attrs)) => attrs,
            Some(Err(detail)) => return self.decide_now(Err(detail), None),
            None => return self.decide_now(Err("connection attributes missing".to_string()), None),
        };
        attrs.set_facts(facts);
        let violation = self
            .state
            .as_deref()
            .and_then(|s| s.config.protocol.as_ref())
            .and_then(|p| {
                let requested = attrs.sni.as_deref().filter(|s| !is_istio_internal_sni(s));
                p.tcp
                    .check(facts, attrs.destination_port.unwrap_or(0), requested)
                    .err()
            })
            .map(ProtocolViolation::Tcp);
        self.decide_now(Ok(&attrs), violation)
    }
}

impl EgressStream {
    /// Returns Continue unless the connection is denied at once. A Pause here would stop the
    /// filter chain before tcp_proxy, which disables reading from the client until it has
    /// connected upstream: no data callback would ever come. Holding the client's bytes until
    /// the decision is `on_downstream_data`'s job (Envoy keeps what a filter did not let through
    /// and hands it over again, with the new bytes, on the next read). tcp_proxy opens the
    /// upstream connection right after this returns; no byte goes over it before the decision.
    fn on_new_connection(&mut self) -> Action {
        let attrs = gather_connection(&Host).map_err(|e| e.to_string());
        // TLS is terminated here but no client certificate is known yet: the handshake is still
        // running. A local certificate exists from the start on such a connection; its
        // subject is read rather than `connection.tls_version`, which Envoy caches on the first
        // read ("unknown" before the handshake, for the access log too).
        if matches!(&attrs, Ok(a) if a.mtls != Some(true))
            && matches!(
                imports::get_property("connection\0subject_local_certificate"),
                Ok(Some(_))
            )
        {
            self.identity_pending = true;
        }
        let inspect = attrs.is_ok()
            && self
                .state
                .as_deref()
                .is_some_and(|s| s.config.tcp_needs_inspection());
        if inspect {
            let max = self
                .state
                .as_deref()
                .and_then(|s| s.config.protocol.as_ref())
                .map_or(DEFAULT_MAX_CLIENT_HELLO_BYTES, |p| {
                    p.tcp.max_client_hello_bytes
                });
            self.inspection = Some(Inspection {
                inspector: ConnectionInspector::new(max),
                fed: 0,
            });
        }
        if self.identity_pending || inspect {
            self.attrs = Some(attrs);
            return Action::Continue;
        }
        self.decide_now(attrs.as_ref().map_err(Clone::clone), None)
    }

    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        if self.verdict.is_some() {
            // Never forward a byte of a denied connection.
            return self.enforce();
        }
        if self.identity_pending {
            self.identity_pending = false;
            self.attrs = Some(gather_connection(&Host).map_err(|e| e.to_string()));
        }
        if self.inspection.is_none() {
            let attrs = self
                .attrs
                .take()
                .unwrap_or_else(|| Err("connection attributes missing".to_string()));
            return self.decide_now(attrs.as_ref().map_err(Clone::clone), None);
        }
        match self.inspect(data_size, end_of_stream) {
            Err(detail) => self.decide_now(Err(detail), None),
            Ok(None) => Action::Pause,
            Ok(Some(facts)) => self.decide_with_facts(&facts),
        }
    }

    /// Server bytes reach the client only once the connection is allowed. Before the decision
    /// they cannot be held: Envoy's write path has no continue (tcp_proxy expects every write
    /// to go through), so bytes paused here would wait for the server's next read, which a
    /// server-first protocol never sends while its client waits. A connection whose identity
    /// just arrived is decided here; any other is refused, so the client never sees a byte of
    /// a server it was not allowed to reach.
    fn on_upstream_data(&mut self) -> Action {
        match self.verdict {
            Some(Verdict::Allow) => return Action::Continue,
            Some(Verdict::Deny) => return Action::Pause,
            None => {}
        }
        if self.identity_pending && self.inspection.is_none() {
            let attrs = gather_connection(&Host).map_err(|e| e.to_string());
            if matches!(&attrs, Ok(a) if a.mtls == Some(true)) {
                self.identity_pending = false;
                self.attrs = None;
                return self.decide_now(attrs.as_ref().map_err(Clone::clone), None);
            }
        }
        self.decide_now(Err(UPSTREAM_BEFORE_DECISION.to_string()), None)
    }

    fn on_downstream_close(&mut self) {
        // Closed before inspection settled: decide on what arrived, so the log says why
        // nothing was forwarded.
        if self.verdict.is_none() {
            self.closing = true;
            if let Some(inspection) = self.inspection.as_mut() {
                let facts = inspection.inspector.finish().clone();
                let _ = self.decide_with_facts(&facts);
            }
        }
    }
}
