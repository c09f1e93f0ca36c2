//! Counter names exported through the proxy-wasm metrics ABI.
//!
//! The ABI has no labels, so labels are encoded in dotted names the way Envoy names its own
//! stats; Envoy prefixes them with `wasmcustom.` and tag-extraction regexes can turn the parts
//! into Prometheus labels (see docs/config.md):
//! - `egress_filter.decision.<http|tcp>.<allow|deny>`: every decision;
//! - `egress_filter.reason.<reason code>`: every decision, by reason;
//! - `egress_filter.policy.<name>.<allow|deny|audit>`: decisions (and audit hits) per policy;
//! - `egress_filter.policy.<name>.dry_run.<allow|deny|audit>`: dry-run outcomes per policy;
//! - `egress_filter.ratelimited.<http|tcp>` and `egress_filter.ratelimit.<limit>.limited`:
//!   streams refused by a rate limit (total, and by the limit that answered);
//! - `egress_filter.protocol_denied.<http|tcp>`: streams refused by a protocol check;
//! - `egress_filter.rls.<calls|ok|over_limit>`: calls to the rate limit service of global
//!   limits, and its answers; `egress_filter.rls.error.<kind>`: calls without a usable answer
//!   (`unknown_cluster`, `dispatch_failed`, `timeout`, `unavailable`, `grpc_status`,
//!   `bad_response`), then `egress_filter.rls.failure_mode_<allowed|denied>` for what the failure
//!   mode did; `egress_filter.rls.latency_le_<1|5|10|25|50|100|250|1000>ms` and `.latency_le_inf`:
//!   cumulative latency buckets (an answer in 3ms counts in `le_5ms` and every larger bucket;
//!   `le_inf` counts every answer and error after the call was made).
//!
//! The refusals of global limits count in `ratelimited.*` and `ratelimit.<limit>.limited` as
//! those of local ones do.
//!
//! With `tiers`, instead of `policy.*`:
//! - `egress_filter.tier.<admin|namespace|baseline|default>.<allow|deny>`: decisions by the tier
//!   that made them, and `egress_filter.tier.admin.pass`: PASSes taken;
//! - `egress_filter.admin_policy.<name>.<allow|deny|pass>`,
//!   `egress_filter.baseline_policy.<name>.<allow|deny>` and
//!   `egress_filter.namespace_policy.<namespace>.<name>.<allow|deny|audit>` (namespace-tier
//!   names are unique only within their namespace), each with `.dry_run.<outcome>` for dry-run
//!   policies.
//!
//! `decision.*`, `reason.*`, `policy.*` and `tier*` count the policy decision, which comes
//! first; a stream a policy allowed may still be refused by a protocol check or a rate limit.
//!
//! Names come only from the configuration (policy names are restricted to `[A-Za-z0-9_-]`), so
//! their number is bounded by it.

use crate::attributes::TrafficKind;
use crate::policy::{PolicyAction, PolicyInfo, Reason, TierName, Verdict, WouldBe};

pub const PREFIX: &str = "egress_filter";

#[inline(never)]
pub fn decision_counter(kind: TrafficKind, verdict: Verdict) -> String {
    format!("{PREFIX}.decision.{}.{}", kind.as_str(), verdict.as_str())
}

#[inline(never)]
pub fn reason_counter(code: &str) -> String {
    format!("{PREFIX}.reason.{code}")
}

#[inline(never)]
pub fn policy_counter(policy: &str, outcome: &str) -> String {
    format!("{}.{outcome}", policy_prefix(policy))
}

/// What a policy's counter names start with: `egress_filter.policy.<name>`.
#[inline(never)]
pub fn policy_prefix(policy: &str) -> String {
    format!("{PREFIX}.policy.{policy}")
}

/// `egress_filter.tier.<tier>.<outcome>`: decisions (and PASSes) by tier.
#[inline(never)]
pub fn tier_counter(tier: TierName, outcome: &str) -> String {
    format!("{PREFIX}.tier.{}.{outcome}", tier.as_str())
}

/// What a tier policy's counter names start with: `egress_filter.<tier>_policy.[<ns>.]<name>`.
#[inline(never)]
pub fn tier_policy_prefix(tier: TierName, namespace: Option<&str>, policy: &str) -> String {
    match namespace {
        Some(ns) => format!("{PREFIX}.{}_policy.{ns}.{policy}", tier.as_str()),
        None => format!("{PREFIX}.{}_policy.{policy}", tier.as_str()),
    }
}

/// `egress_filter.ratelimited.<http|tcp>`: streams refused by a rate limit.
#[inline(never)]
pub fn ratelimited_counter(kind: TrafficKind) -> String {
    format!("{PREFIX}.ratelimited.{}", kind.as_str())
}

/// `egress_filter.protocol_denied.<http|tcp>`: streams refused by a protocol check.
#[inline(never)]
pub fn protocol_denied_counter(kind: TrafficKind) -> String {
    format!("{PREFIX}.protocol_denied.{}", kind.as_str())
}

/// `egress_filter.ratelimit.<name>.limited`: refusals answered by this limit.
#[inline(never)]
pub fn limit_counter(limit: &str) -> String {
    format!("{PREFIX}.ratelimit.{limit}.limited")
}

/// `egress_filter.rls.<name>`: the rate limit service's counters.
#[inline(never)]
pub fn rls_counter(name: &str) -> String {
    format!("{PREFIX}.rls.{name}")
}

/// `egress_filter.rls.latency_le_<bound>ms`, or `_le_inf` for `None`.
pub fn rls_latency_counter(bound_ms: Option<u64>) -> String {
    match bound_ms {
        Some(ms) => rls_counter(&format!("latency_le_{ms}ms")),
        None => rls_counter("latency_le_inf"),
    }
}

/// The per-policy outcome counted for an enforced policy of this action.
pub fn policy_outcome(action: PolicyAction) -> &'static str {
    match action {
        PolicyAction::Allow => "allow",
        PolicyAction::Deny => "deny",
        PolicyAction::Audit => "audit",
    }
}

#[inline(never)]
pub fn dry_run_counter(policy: &str, would_be: WouldBe) -> String {
    format!("{}.dry_run.{}", policy_prefix(policy), would_be.as_str())
}

/// Every counter name a configuration can produce, for defining them at configure time.
pub fn all_counter_names(policies: &[PolicyInfo]) -> Vec<String> {
    let mut names = Vec::new();
    for kind in [TrafficKind::Http, TrafficKind::Tcp] {
        for verdict in [Verdict::Allow, Verdict::Deny] {
            names.push(decision_counter(kind, verdict));
        }
    }
    names.extend(Reason::CODES.iter().map(|code| reason_counter(code)));
    for policy in policies {
        if policy.dry_run {
            for would_be in [WouldBe::Allow, WouldBe::Deny, WouldBe::Audit] {
                names.push(dry_run_counter(&policy.name, would_be));
            }
        } else {
            names.push(policy_counter(&policy.name, policy_outcome(policy.action)));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_by_the_configuration() {
        let policies = [
            PolicyInfo {
                name: "allow-ci".into(),
                action: PolicyAction::Allow,
                dry_run: false,
                rules: 1,
            },
            PolicyInfo {
                name: "deny-evil".into(),
                action: PolicyAction::Deny,
                dry_run: false,
                rules: 1,
            },
            PolicyInfo {
                name: "try".into(),
                action: PolicyAction::Deny,
                dry_run: true,
                rules: 1,
            },
        ];
        let names = all_counter_names(&policies);
        assert_eq!(names.len(), 4 + 5 + 1 + 1 + 3);
        assert!(names.contains(&"egress_filter.decision.http.allow".to_string()));
        assert!(names.contains(&"egress_filter.decision.tcp.deny".to_string()));
        assert!(names.contains(&"egress_filter.reason.cannot_evaluate".to_string()));
        assert!(names.contains(&"egress_filter.policy.allow-ci.allow".to_string()));
        assert!(names.contains(&"egress_filter.policy.deny-evil.deny".to_string()));
        assert!(names.contains(&"egress_filter.policy.try.dry_run.deny".to_string()));
    }
}
