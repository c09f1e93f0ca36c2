//! proxy-wasm contexts: the root context compiles the configuration once per `on_configure` and
//! hands an `Rc` of it to every HTTP and TCP stream; streams gather attributes, ask the engine,
//! log, count and act. Nothing here parses JSON per request.

mod abi;
mod imports;

use std::cell::RefCell;
use std::rc::Rc;

use abi::Action;

use crate::attributes::{Attributes, Reads, TrafficKind};
use crate::gather::HostStatus;
use crate::gather::{gather_connection, gather_http_checked, read_more};
use crate::log::{decision_line, decision_state, outcome_line, trace_line};
use crate::metrics;
use crate::policy::{
    Decision, PolicyAction, PolicyInfo, Reason, RuleAction, TierName, TraceStep, Verdict, WouldBe,
};
use crate::protocol::http::is_istio_internal_sni;
use crate::protocol::{ConnectionFacts, ConnectionInspector, DEFAULT_MAX_CLIENT_HELLO_BYTES};
use crate::ratelimit::global::{latency_buckets, LATENCY_BOUNDS_MS};
use crate::ratelimit::{GlobalHit, RlsError};
use crate::{
    rls, CompiledConfig, CompiledTiers, FinalVerdict, Outcome, ProtocolViolation, RateLimitHit,
};
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
    /// By limit name, in configuration order (local limits, then global ones).
    limit: Vec<(String, Option<u32>)>,
    /// Defined only when there are global limits.
    rls: Option<Box<RlsCounters>>,
}

/// The rate limit service's counters (see `metrics`).
#[derive(Default)]
struct RlsCounters {
    calls: Option<u32>,
    ok: Option<u32>,
    over_limit: Option<u32>,
    failure_mode_allowed: Option<u32>,
    failure_mode_denied: Option<u32>,
    /// By [`RlsError::index`].
    errors: [Option<u32>; 6],
    /// By [`LATENCY_BOUNDS_MS`], then `le_inf`.
    latency: [Option<u32>; 9],
}

impl RlsCounters {
    fn define() -> Self {
        let mut c = RlsCounters {
            calls: define(&metrics::rls_counter("calls")),
            ok: define(&metrics::rls_counter("ok")),
            over_limit: define(&metrics::rls_counter("over_limit")),
            failure_mode_allowed: define(&metrics::rls_counter("failure_mode_allowed")),
            failure_mode_denied: define(&metrics::rls_counter("failure_mode_denied")),
            ..Default::default()
        };
        for (slot, error) in c.errors.iter_mut().zip(RlsError::ALL) {
            *slot = define(&metrics::rls_counter(&format!("error.{}", error.as_str())));
        }
        let bounds = LATENCY_BOUNDS_MS.iter().map(|b| Some(*b)).chain([None]);
        for (slot, bound) in c.latency.iter_mut().zip(bounds) {
            *slot = define(&metrics::rls_latency_counter(bound));
        }
        c
    }

    /// Counts what one call to the service ended with.
    fn record(&self, hit: &GlobalHit) {
        match hit.error() {
            None if hit.over_limit() => bump(Some(&self.over_limit)),
            None => bump(Some(&self.ok)),
            Some(error) => {
                bump(self.errors.get(error.index()));
                if hit.allowed() {
                    bump(Some(&self.failure_mode_allowed));
                } else {
                    bump(Some(&self.failure_mode_denied));
                }
            }
        }
        // A call that was never made has no latency.
        if !matches!(
            hit.error(),
            Some(RlsError::UnknownCluster | RlsError::DispatchFailed)
        ) {
            let buckets = latency_buckets(hit.latency_ns);
            let first = LATENCY_BOUNDS_MS.len() - buckets;
            for id in self.latency.get(first..).unwrap_or(&[]) {
                bump(Some(id));
            }
        }
    }
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
        let local = config.rate_limits.iter().map(|l| l.limiter.name());
        let global = config.global_limits.iter().map(|l| &*l.limit.name);
        for name in local.chain(global) {
            counters
                .limit
                .push((name.to_string(), define(&metrics::limit_counter(name))));
        }
        if !config.global_limits.is_empty() {
            counters.rls = Some(Box::new(RlsCounters::define()));
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
                if let Some(name) = outcome.refusing_limit() {
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
    /// The connection properties an HTTP request reads before its decision: all of them when
    /// every decision is logged (or explained), else what the configuration looks at.
    http_reads: Reads,
    /// The filter state value set last on this worker, with what it says: most streams in a
    /// row get the same decision, and reuse it.
    last_state: RefCell<Option<(StateKey, String)>>,
}

/// What a decision's filter state value says (a rule's name follows from its policy and
/// index). Names are compared by address: they live in the configuration, as long as the state
/// that caches them.
#[derive(Clone, Copy, PartialEq, Eq)]
struct StateKey {
    verdict: &'static str,
    tier: Option<&'static str>,
    policy: Option<(usize, usize)>,
    rule: Option<usize>,
    reason: &'static str,
}

impl StateKey {
    fn of(outcome: &Outcome<'_>) -> Self {
        let at = |name: &str| (name.as_ptr() as usize, name.len());
        let decision = &outcome.decision;
        Self {
            verdict: outcome.verdict().as_str(),
            tier: decision.tier.map(|t| t.as_str()),
            policy: decision.policy.map(at),
            rule: decision.rule,
            reason: outcome.reason(),
        }
    }
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
                if !config.global_limits.is_empty() {
                    // What `egress-sim limits` turns into the rate limit service's limits file.
                    let mut w = crate::config::JsonWriter::new();
                    w.begin_object();
                    w.str("event", Some("global_limits"));
                    w.key_array("limits");
                    for limit in &config.global_limits {
                        limit.limit.describe(&mut w);
                    }
                    w.end_array();
                    w.end_object();
                    imports::log(LogLevel::Info, &w.finish());
                }
                // 0 is trace, 1 debug.
                let explain = imports::log_level().is_some_and(|level| level <= 1);
                let http_reads = match config.log.allowed || explain {
                    true => Reads::ALL,
                    false => config.http_reads(),
                };
                self.state = Some(Rc::new(FilterState {
                    config,
                    counters,
                    explain,
                    http_reads,
                    last_state: RefCell::new(None),
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

    fn create_http_context(&self, id: u32) -> EgressHttp {
        EgressHttp {
            id,
            state: self.state.clone(),
            pending: None,
        }
    }

    fn create_stream_context(&self, id: u32) -> EgressStream {
        EgressStream {
            id,
            state: self.state.clone(),
            verdict: None,
            identity_pending: false,
            attrs: None,
            inspection: None,
            closing: false,
            pending: None,
        }
    }
}

/// A local reply: 403 for a denial, 429 for a rate-limited request, 500 when the rate limit
/// service gave no answer and the limit fails closed (as Envoy's ratelimit filter answers).
struct Reply {
    status: u32,
    details: &'static str,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn deny(body: String) -> Self {
        Self {
            status: 403,
            details: "egress_denied",
            body: body.into_bytes(),
            headers: Vec::new(),
        }
    }

    /// The reply for a stream the outcome refuses (`None`: it may go on).
    fn for_outcome(outcome: &Outcome<'_>) -> Option<Reply> {
        match outcome.verdict() {
            FinalVerdict::Allow => None,
            FinalVerdict::Deny if outcome.global_failed_closed() => Some(Reply {
                status: 500,
                details: "egress_rate_limit_error",
                body: outcome.reply_body().into_bytes(),
                headers: Vec::new(),
            }),
            FinalVerdict::Deny => Some(Reply::deny(outcome.reply_body())),
            FinalVerdict::RateLimited => {
                let (body, headers) = match &outcome.global {
                    Some(g) => {
                        let mut headers =
                            vec![("x-envoy-ratelimited".to_string(), "true".to_string())];
                        headers.extend(g.headers.iter().cloned());
                        let body = g.body.clone();
                        (
                            body.unwrap_or_else(|| outcome.reply_body().into_bytes()),
                            headers,
                        )
                    }
                    None => (
                        outcome.reply_body().into_bytes(),
                        outcome
                            .rate_limit
                            .as_ref()
                            .map(|h| h.decision.limited_response_headers())
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect(),
                    ),
                };
                Some(Reply {
                    status: 429,
                    details: "egress_rate_limited",
                    body,
                    headers,
                })
            }
        }
    }

    /// Sends it on the effective stream; without a reply, the request must not go on.
    fn send(&self) {
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "text/plain")];
        headers.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Err(status) =
            imports::send_local_response(self.status, self.details, &headers, &self.body)
        {
            imports::log(
                LogLevel::Error,
                &format!(
                    "cannot send the local reply (status {}); resetting the stream",
                    status.0
                ),
            );
            let _ = imports::reset_http_request();
        }
    }
}

/// Denies a stream that cannot be evaluated, logging and counting it.
fn cannot_evaluate(state: Option<&FilterState>, kind: TrafficKind, detail: String) -> Reply {
    let decision = Decision::cannot_evaluate(detail);
    if state.is_none_or(|s| s.config.log.filter_state) {
        set_decision_state(&decision_state(None, &decision));
    }
    imports::log(LogLevel::Info, &decision_line(kind, &decision, None));
    if let Some(state) = state {
        state.counters.record(kind, &decision, None);
    }
    Reply::deny(decision.deny_body())
}

/// A stream waiting for the rate limit service to answer about one of its global limits.
struct PendingGlobal {
    token: u32,
    /// Index in `config.global_limits`.
    limit: usize,
    attrs: Attributes,
    /// The local limits' answer (they allowed the stream), for the decision line.
    local: Option<RateLimitHit>,
    started_ns: u64,
}

/// What a decision leads to.
enum Next {
    Go,
    Reply(Reply),
    /// Waiting for the rate limit service.
    Wait(Box<PendingGlobal>),
}

/// The answer to a call: the response message, or the gRPC status and message of its close.
type Answer = Result<Vec<u8>, (u32, Vec<u8>)>;

/// The filter state key of every decision (Envoy prefixes it with `wasm.`).
const DECISION_STATE: &str = "egress_guard.decision";

/// Sets the decision as the stream's filter state, for Envoy's access log.
fn set_decision_state(value: &str) {
    if imports::set_property(DECISION_STATE, value.as_bytes()).is_err() {
        imports::log(
            LogLevel::Warn,
            "cannot set filter state egress_guard.decision",
        );
    }
}

/// Logs and counts a final outcome; the reply to send, if any. `unread`: the connection
/// properties not read yet, read now if the decision line is written.
fn conclude(
    state: &FilterState,
    kind: TrafficKind,
    outcome: &Outcome<'_>,
    attrs: &mut Attributes,
    unread: Reads,
) -> Next {
    let log = state.config.log;
    if log.filter_state {
        let key = StateKey::of(outcome);
        let mut last = state.last_state.borrow_mut();
        match &*last {
            Some((k, value)) if *k == key => set_decision_state(value),
            _ => {
                let value = decision_state(Some(outcome), &outcome.decision);
                set_decision_state(&value);
                *last = Some((key, value));
            }
        }
    }
    let decision = &outcome.decision;
    let logged = log.allowed
        || state.explain
        || outcome.verdict() != FinalVerdict::Allow
        || !decision.audit.is_empty()
        || !decision.dry_run.is_empty();
    if logged {
        // The line holds every attribute; properties the decision did not need are read for
        // it. One that cannot be read makes the stream unevaluable, as it would have before
        // the decision.
        if let Err(e) = read_more(&Host, attrs, unread) {
            return Next::Reply(cannot_evaluate(Some(state), kind, e.to_string()));
        }
        imports::log(LogLevel::Info, &outcome_line(kind, outcome, Some(attrs)));
    }
    let namespace = outcome.decision.namespace.map(|n| n as usize);
    state.counters.record_outcome(kind, outcome, namespace);
    match Reply::for_outcome(outcome) {
        Some(reply) => Next::Reply(reply),
        None => Next::Go,
    }
}

/// Asks the rate limit service about global limit `index` for this stream.
fn ask_global(
    state: &FilterState,
    kind: TrafficKind,
    attrs: Attributes,
    local: Option<RateLimitHit>,
    index: usize,
) -> Next {
    let Some(limit) = state.config.global_limits.get(index).map(|l| &l.limit) else {
        return Next::Reply(cannot_evaluate(
            Some(state),
            kind,
            "global limit missing".to_string(),
        ));
    };
    if let Some(rls) = &state.counters.rls {
        bump(Some(&rls.calls));
    }
    let started_ns = imports::current_time_ns().unwrap_or(0);
    let request = limit.request(&attrs);
    match imports::grpc_call(
        &limit.cluster,
        rls::SERVICE,
        rls::METHOD,
        &request,
        limit.timeout_ms,
    ) {
        Ok(token) => Next::Wait(Box::new(PendingGlobal {
            token,
            limit: index,
            attrs,
            local,
            started_ns,
        })),
        Err(HostStatus(status)) => {
            // Envoy refuses a cluster it does not know with ParseFailure (4), at once.
            let error = if status == 4 {
                RlsError::UnknownCluster
            } else {
                RlsError::DispatchFailed
            };
            let detail = format!(
                "proxy_grpc_call to {} returned status {status}",
                limit.cluster
            );
            let hit = GlobalHit::failed(limit, error, detail, 0);
            after_global(state, kind, attrs, local, index, hit)
        }
    }
}

/// Goes on after global limit `index` answered: to the next global limit that applies, or to
/// the stream's final outcome.
fn after_global(
    state: &FilterState,
    kind: TrafficKind,
    mut attrs: Attributes,
    local: Option<RateLimitHit>,
    index: usize,
    hit: GlobalHit,
) -> Next {
    if let Some(rls) = &state.counters.rls {
        rls.record(&hit);
    }
    if hit.allowed() {
        if let Some(next) = state.config.next_global_limit(&attrs, index + 1) {
            return ask_global(state, kind, attrs, local, next);
        }
    }
    // Policies are pure: evaluating them again gives the decision the stream got before the
    // call, without keeping a borrow of the configuration across callbacks.
    let outcome = Outcome {
        decision: state.config.evaluate(&attrs),
        violation: None,
        rate_limit: local,
        global: Some(hit),
    };
    conclude(state, kind, &outcome, &mut attrs, Reads::NONE)
}

/// The service's answer (or failure) for a waiting stream.
fn on_answer(
    state: &FilterState,
    kind: TrafficKind,
    pending: PendingGlobal,
    answer: Answer,
) -> Next {
    let Some(limit) = state
        .config
        .global_limits
        .get(pending.limit)
        .map(|l| &l.limit)
    else {
        return Next::Reply(cannot_evaluate(
            Some(state),
            kind,
            "global limit missing".to_string(),
        ));
    };
    let latency_ns = imports::current_time_ns()
        .unwrap_or(0)
        .saturating_sub(pending.started_ns);
    let hit = match answer {
        Ok(message) => match rls::decode_response(&message) {
            Ok(response) => GlobalHit::answered(limit, &response, latency_ns),
            Err(e) => GlobalHit::failed(limit, RlsError::BadResponse, e.to_string(), latency_ns),
        },
        Err((status, message)) => GlobalHit::failed(
            limit,
            RlsError::from_grpc_status(status, &message),
            format!(
                "gRPC status {status}: {}",
                String::from_utf8_lossy(&message)
            ),
            latency_ns,
        ),
    };
    after_global(
        state,
        kind,
        pending.attrs,
        pending.local,
        pending.limit,
        hit,
    )
}

/// Evaluates (policies, then the protocol check result, then local rate limits, then global
/// ones), logs and counts one stream; `unread`: the connection properties it has not read.
fn decide(
    state: Option<&FilterState>,
    kind: TrafficKind,
    attrs: Result<&mut Attributes, String>,
    violation: Option<ProtocolViolation>,
    unread: Reads,
) -> Next {
    let Some(state) = state else {
        return Next::Reply(cannot_evaluate(
            None,
            kind,
            "the filter has no valid configuration".to_string(),
        ));
    };
    let attrs = match attrs {
        Ok(attrs) => attrs,
        Err(detail) => return Next::Reply(cannot_evaluate(Some(state), kind, detail)),
    };
    // The clock is read only when a limit may need it (each host call costs time).
    let now_ns = if state.config.rate_limits.is_empty() {
        0
    } else {
        match imports::current_time_ns() {
            Some(now) => now,
            None => {
                return Next::Reply(cannot_evaluate(
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
    if outcome.verdict() == FinalVerdict::Allow {
        if let Some(index) = state.config.next_global_limit(attrs, 0) {
            let local = outcome.rate_limit.clone();
            return ask_global(state, kind, attrs.clone(), local, index);
        }
    }
    conclude(state, kind, &outcome, attrs, unread)
}

/// Token of a call → the stream that waits for it. Envoy delivers answers to the root context;
/// this is how they find their stream. At most one call per stream, so it is bounded by the
/// streams alive.
mod calls {
    use std::cell::RefCell;

    thread_local! {
        /// (token, stream); a handful at a time, so a list.
        static WAITING: RefCell<Vec<(u32, u32)>> = const { RefCell::new(Vec::new()) };
    }

    pub fn register(token: u32, stream: u32) {
        WAITING.with(|w| w.borrow_mut().push((token, stream)));
    }

    pub fn take(token: u32) -> Option<u32> {
        WAITING.with(|w| {
            let mut w = w.borrow_mut();
            let at = w.iter().position(|(t, _)| *t == token)?;
            Some(w.swap_remove(at).1)
        })
    }
}

pub(crate) use calls::take as take_waiting_stream;

struct EgressHttp {
    id: u32,
    state: Option<Rc<FilterState>>,
    pending: Option<Box<PendingGlobal>>,
}

impl EgressHttp {
    fn on_http_request_headers(&mut self) -> Action {
        let state = self.state.clone();
        let state = state.as_deref();
        let wanted: &[String] = state.map_or(&[], |s| s.config.header_names());
        let checks = state
            .and_then(|s| s.config.protocol.as_ref())
            .map(|p| &p.http);
        let reads = match (state, checks) {
            (None, _) => Reads::ALL,
            // The checks read the SNI and the protocol whatever the rules need.
            (Some(s), Some(_)) => s.http_reads | Reads::SNI | Reads::PROTOCOL,
            (Some(s), None) => s.http_reads,
        };
        let (mut attrs, violation) = match gather_http_checked(&Host, wanted, checks, reads) {
            Ok((attrs, violation)) => (Ok(attrs), violation.map(ProtocolViolation::Http)),
            Err(e) => (Err(e.to_string()), None),
        };
        let unread = Reads::ALL.without(reads);
        let next = decide(
            state,
            TrafficKind::Http,
            attrs.as_mut().map_err(|e| e.clone()),
            violation,
            unread,
        );
        self.act(next, false)
    }

    /// Carries out a decision; `resumed`: from a callout answer, where the request is resumed
    /// explicitly rather than by the callback's return value.
    fn act(&mut self, next: Next, resumed: bool) -> Action {
        match next {
            Next::Go => {
                if resumed {
                    if let Err(status) = imports::continue_http_request() {
                        imports::log(
                            LogLevel::Error,
                            &format!("cannot resume the request (status {})", status.0),
                        );
                    }
                }
                Action::Continue
            }
            Next::Reply(reply) => {
                reply.send();
                Action::Pause
            }
            Next::Wait(pending) => {
                calls::register(pending.token, self.id);
                self.pending = Some(pending);
                Action::Pause
            }
        }
    }

    /// The rate limit service answered (the effective context is this stream).
    fn on_rls_answer(&mut self, answer: Answer) {
        let (Some(pending), Some(state)) = (self.pending.take(), self.state.clone()) else {
            return;
        };
        let next = on_answer(&state, TrafficKind::Http, *pending, answer);
        self.act(next, true);
    }

    /// The stream ends: a call still running is cancelled (Envoy's ratelimit filter does so
    /// in `onDestroy`).
    fn on_delete(&mut self) {
        if let Some(pending) = self.pending.take() {
            calls::take(pending.token);
            imports::grpc_cancel(pending.token);
        }
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
    id: u32,
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
    /// Waiting for the rate limit service: nothing goes upstream meanwhile.
    pending: Option<Box<PendingGlobal>>,
}

impl EgressStream {
    fn decide_now(
        &mut self,
        attrs: Result<&mut Attributes, String>,
        violation: Option<ProtocolViolation>,
    ) -> Action {
        let state = self.state.clone();
        // A connection reads every property when it starts.
        let next = decide(
            state.as_deref(),
            TrafficKind::Tcp,
            attrs,
            violation,
            Reads::NONE,
        );
        self.inspection = None;
        self.attrs = None;
        self.act(next, false)
    }

    /// Carries out a decision; `resumed`: from a callout answer, where an allowed connection is
    /// resumed explicitly (Envoy `continueReading`) rather than by the callback's return value.
    fn act(&mut self, next: Next, resumed: bool) -> Action {
        self.verdict = match next {
            Next::Go => Some(Verdict::Allow),
            Next::Reply(_) => Some(Verdict::Deny),
            Next::Wait(pending) => {
                calls::register(pending.token, self.id);
                self.pending = Some(pending);
                return Action::Pause;
            }
        };
        if resumed && self.verdict == Some(Verdict::Allow) {
            if let Err(status) = imports::continue_downstream() {
                imports::log(
                    LogLevel::Error,
                    &format!("cannot resume the connection (status {})", status.0),
                );
            }
        }
        self.enforce()
    }

    /// The rate limit service answered (the effective context is this connection).
    fn on_rls_answer(&mut self, answer: Answer) {
        let (Some(pending), Some(state)) = (self.pending.take(), self.state.clone()) else {
            return;
        };
        let next = on_answer(&state, TrafficKind::Tcp, *pending, answer);
        self.act(next, true);
    }

    /// A call still running is cancelled, as Envoy's network ratelimit filter does when the
    /// connection closes.
    fn cancel_pending(&mut self) {
        if let Some(pending) = self.pending.take() {
            calls::take(pending.token);
            imports::grpc_cancel(pending.token);
        }
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
        self.decide_now(Ok(&mut attrs), violation)
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
        let mut attrs = attrs;
        self.decide_now(attrs.as_mut().map_err(|e| e.clone()), None)
    }

    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        if self.pending.is_some() {
            // Held (Envoy buffers it) until the rate limit service answers.
            return Action::Pause;
        }
        if self.verdict.is_some() {
            // Never forward a byte of a denied connection.
            return self.enforce();
        }
        if self.identity_pending {
            self.identity_pending = false;
            self.attrs = Some(gather_connection(&Host).map_err(|e| e.to_string()));
        }
        if self.inspection.is_none() {
            let mut attrs = self
                .attrs
                .take()
                .unwrap_or_else(|| Err("connection attributes missing".to_string()));
            return self.decide_now(attrs.as_mut().map_err(|e| e.clone()), None);
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
        if self.pending.is_some() {
            return Action::Pause;
        }
        match self.verdict {
            Some(Verdict::Allow) => return Action::Continue,
            Some(Verdict::Deny) => return Action::Pause,
            None => {}
        }
        if self.identity_pending && self.inspection.is_none() {
            let mut attrs = gather_connection(&Host).map_err(|e| e.to_string());
            if matches!(&attrs, Ok(a) if a.mtls == Some(true)) {
                self.identity_pending = false;
                self.attrs = None;
                return self.decide_now(attrs.as_mut().map_err(|e| e.clone()), None);
            }
        }
        self.decide_now(Err(UPSTREAM_BEFORE_DECISION.to_string()), None)
    }

    fn on_downstream_close(&mut self) {
        self.cancel_pending();
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
