//! proxy-wasm contexts: the root context compiles the configuration once per `on_configure` and
//! hands an `Rc` of it to every HTTP and TCP stream; streams gather attributes, ask the engine,
//! log, count and act. Nothing here parses JSON per request.

mod host;

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, PeerType};

use crate::attributes::{Attributes, TrafficKind};
use crate::gather::{gather_connection, gather_http};
use crate::log::decision_line;
use crate::metrics;
use crate::policy::{Decision, Reason, Verdict, WouldBe};
use crate::CompiledConfig;
use host::{Host, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EgressRoot::default()) });
}}

/// Counter ids, defined at configure time (names are bounded by the configuration), laid out so
/// counting a decision formats no names.
#[derive(Default)]
struct Counters {
    /// `[kind][verdict]`: http/tcp × allow/deny.
    decision: [[Option<u32>; 2]; 2],
    reason: [Option<u32>; 5],
    /// By policy name, sorted for binary search.
    policy: Vec<(String, PolicyCounters)>,
}

#[derive(Default)]
struct PolicyCounters {
    /// allow, deny or audit, by the policy's action.
    outcome: Option<u32>,
    /// allow, deny, audit.
    dry_run: [Option<u32>; 3],
}

fn define(name: &str) -> Option<u32> {
    match host::define_counter(name) {
        Ok(id) => Some(id),
        Err(status) => {
            host::log(
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

fn would_be_index(would_be: WouldBe) -> usize {
    match would_be {
        WouldBe::Allow => 0,
        WouldBe::Deny => 1,
        WouldBe::Audit => 2,
    }
}

impl Counters {
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
        for (slot, code) in counters.reason.iter_mut().zip(Reason::CODES) {
            *slot = define(&metrics::reason_counter(code));
        }
        for policy in config.policy.policies() {
            let mut ids = PolicyCounters::default();
            if policy.dry_run {
                for would_be in [WouldBe::Allow, WouldBe::Deny, WouldBe::Audit] {
                    if let Some(slot) = ids.dry_run.get_mut(would_be_index(would_be)) {
                        *slot = define(&metrics::dry_run_counter(&policy.name, would_be));
                    }
                }
            } else {
                ids.outcome = define(&metrics::policy_counter(
                    &policy.name,
                    metrics::policy_outcome(policy.action),
                ));
            }
            counters.policy.push((policy.name.clone(), ids));
        }
        crate::text::sort_by(&mut counters.policy, |a, b| a.0 < b.0);
        counters
    }

    fn policy(&self, name: &str) -> Option<&PolicyCounters> {
        let at = self
            .policy
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()?;
        self.policy.get(at).map(|(_, ids)| ids)
    }

    fn record(&self, kind: TrafficKind, decision: &Decision<'_>) {
        let bump = |id: Option<&Option<u32>>| {
            if let Some(Some(id)) = id {
                host::increment_counter(*id);
            }
        };
        bump(
            self.decision
                .get(kind_index(kind))
                .and_then(|row| row.get(verdict_index(decision.verdict))),
        );
        let reason = Reason::CODES
            .iter()
            .position(|c| *c == decision.reason.code());
        bump(reason.and_then(|i| self.reason.get(i)));
        if let Some(policy) = decision.policy {
            bump(self.policy(policy).map(|p| &p.outcome));
        }
        for policy in &decision.audit {
            bump(self.policy(policy).map(|p| &p.outcome));
        }
        for hit in &decision.dry_run {
            bump(
                self.policy(hit.policy)
                    .and_then(|p| p.dry_run.get(would_be_index(hit.would_be))),
            );
        }
    }
}

/// What every stream of a configuration shares.
struct FilterState {
    config: CompiledConfig,
    counters: Counters,
}

#[derive(Default)]
struct EgressRoot {
    state: Option<Rc<FilterState>>,
}

impl Context for EgressRoot {}

impl RootContext for EgressRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match host::get_plugin_configuration() {
            Ok(bytes) => bytes,
            Err(status) => {
                host::log(
                    LogLevel::Error,
                    &format!("invalid configuration: $: cannot read the plugin configuration (status {})", status.0),
                );
                return false;
            }
        };
        match CompiledConfig::from_json(&bytes) {
            Ok(config) => {
                let counters = Counters::define(&config);
                host::log(
                    LogLevel::Info,
                    &format!(
                        "{{\"event\":\"configured\",\"policies\":{}}}",
                        config.policy.policies().len()
                    ),
                );
                self.state = Some(Rc::new(FilterState { config, counters }));
                true
            }
            Err(err) => {
                // The previous configuration (if any) stays in force, as Envoy keeps it.
                host::log(LogLevel::Error, &format!("invalid configuration: {err}"));
                false
            }
        }
    }

    /// proxy-wasm does not say whether a new stream belongs to an HTTP or a network filter, so
    /// it is asked of the stream itself while it is being created: Envoy gives an HTTP stream
    /// its protocol (`request.protocol`) before the filter chain runs, a TCP connection has none.
    fn get_type(&self) -> Option<ContextType> {
        let is_http = matches!(host::get_property(&["request", "protocol"]), Ok(Some(p)) if !p.is_empty())
            || matches!(host::get_request_headers(), Ok(h) if !h.is_empty());
        if is_http {
            Some(ContextType::HttpContext)
        } else {
            Some(ContextType::StreamContext)
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EgressHttp {
            state: self.state.clone(),
        }))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(EgressStream {
            state: self.state.clone(),
            verdict: None,
            identity_pending: false,
        }))
    }
}

/// Evaluates, logs and counts one decision; returns the body of the deny reply, `None` when
/// the request is allowed.
fn decide(
    state: Option<&FilterState>,
    kind: TrafficKind,
    attrs: Result<Attributes, String>,
) -> Option<String> {
    let Some(state) = state else {
        let decision = Decision::cannot_evaluate("the filter has no valid configuration");
        host::log(LogLevel::Info, &decision_line(kind, &decision, None));
        return Some(decision.deny_body());
    };
    let (decision, attrs) = match &attrs {
        Ok(attrs) => (state.config.policy.evaluate(attrs), Some(attrs)),
        Err(detail) => (Decision::cannot_evaluate(detail.clone()), None),
    };
    host::log(LogLevel::Info, &decision_line(kind, &decision, attrs));
    state.counters.record(kind, &decision);
    (!decision.is_allowed()).then(|| decision.deny_body())
}

struct EgressHttp {
    state: Option<Rc<FilterState>>,
}

impl Context for EgressHttp {}

impl HttpContext for EgressHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let state = self.state.as_deref();
        let wanted: &[String] = state.map_or(&[], |s| s.config.policy.header_names());
        let attrs = gather_http(&Host, wanted).map_err(|e| e.to_string());
        let Some(body) = decide(state, TrafficKind::Http, attrs) else {
            return Action::Continue;
        };
        let headers = [("content-type", "text/plain")];
        if let Err(status) = host::send_local_response(403, &headers, &body) {
            // Fail closed: without a reply, the request must not go on.
            host::log(
                LogLevel::Error,
                &format!(
                    "cannot send the deny reply (status {}); resetting the stream",
                    status.0
                ),
            );
            let _ = host::reset_http_request();
        }
        Action::Pause
    }
}

struct EgressStream {
    state: Option<Rc<FilterState>>,
    verdict: Option<Verdict>,
    /// The connection terminates TLS but the peer certificate is not known yet (handshake still
    /// running at connect time); the decision waits for the first data, as Envoy's network RBAC
    /// filter does.
    identity_pending: bool,
}

impl EgressStream {
    fn decide_now(&mut self, attrs: Result<Attributes, String>) -> Action {
        let denied = decide(self.state.as_deref(), TrafficKind::Tcp, attrs).is_some();
        self.verdict = Some(if denied {
            Verdict::Deny
        } else {
            Verdict::Allow
        });
        self.enforce()
    }

    fn enforce(&self) -> Action {
        match self.verdict {
            Some(Verdict::Deny) => {
                if let Err(status) = host::close_downstream() {
                    host::log(
                        LogLevel::Error,
                        &format!("cannot close the denied connection (status {})", status.0),
                    );
                }
                Action::Pause
            }
            _ => Action::Continue,
        }
    }
}

impl Context for EgressStream {}

impl StreamContext for EgressStream {
    fn on_new_connection(&mut self) -> Action {
        let attrs = gather_connection(&Host).map_err(|e| e.to_string());
        // TLS terminated here (a tls_version exists) without a peer certificate yet: wait.
        if matches!(&attrs, Ok(a) if a.mtls != Some(true))
            && matches!(
                host::get_property(&["connection", "tls_version"]),
                Ok(Some(_))
            )
        {
            self.identity_pending = true;
            return Action::Continue;
        }
        self.decide_now(attrs)
    }

    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        if self.identity_pending {
            self.identity_pending = false;
            let attrs = gather_connection(&Host).map_err(|e| e.to_string());
            return self.decide_now(attrs);
        }
        // Never forward a byte of a denied connection.
        self.enforce()
    }

    fn on_upstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        if self.verdict == Some(Verdict::Deny) {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {}
}
