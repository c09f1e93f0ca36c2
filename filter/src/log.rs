//! The one structured log line written for every decision.
//!
//! Format (one JSON object, keys always present unless noted):
//! `{"event":"decision","kind":"http"|"tcp","decision":"allow"|"deny","policy":<name>|null,
//!   "rule":<index>|null,"action":"ALLOW"|"DENY"|"AUDIT"|null,"reason":<code>,
//!   "detail":<text> (only for cannot_evaluate),"audit":[<policy>...],
//!   "dryRun":[{"policy":<name>,"rule":<index>|null,"wouldBe":"allow"|"deny"|"audit"}...],
//!   "attributes":{<Istio attribute name>: <value>, ...}}`
//! Attributes that are unknown are left out; long values are cut to [`MAX_LOGGED_VALUE`] bytes.
//!
//! A `tiers` configuration adds `"tier"` after `"decision"`, writes `"rule"` as the rule's name
//! when it has one (else its index), adds `"passed":{"policy","rule"}` after `"action"` when an
//! admin PASS was taken, and `"tier"` to each `dryRun` entry. Lines of plain `policies` are
//! unchanged.
//!
//! At debug level, [`trace_line`] renders the steps of an evaluation for `explain`:
//! `{"event":"explain","step":"policy"|"rule"|"tier",...}`.

use std::borrow::Cow;

use crate::attributes::{Attributes, TrafficKind};
use crate::config::JsonWriter;
use crate::outcome::{Outcome, RateLimitHit};
use crate::policy::{Decision, RuleResult, TraceStep};
use crate::ratelimit::{GlobalHit, GlobalResult};

/// Longest attribute value written to the log, in bytes; longer values end with `...`.
pub const MAX_LOGGED_VALUE: usize = 256;

fn clip(value: &str) -> Cow<'_, str> {
    if value.len() <= MAX_LOGGED_VALUE {
        return Cow::Borrowed(value);
    }
    let mut end = MAX_LOGGED_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...", value.get(..end).unwrap_or("")))
}

#[inline(never)]
fn text(w: &mut JsonWriter, key: &str, value: Option<&str>) {
    if let Some(value) = value {
        w.str(key, Some(&clip(value)));
    }
}

fn attributes(w: &mut JsonWriter, attrs: &Attributes) {
    w.key_object("attributes");
    text(w, "source.principal", attrs.source_principal.as_deref());
    text(w, "source.namespace", attrs.source_namespace.as_deref());
    if let Some(ip) = &attrs.source_ip {
        w.ip("source.ip", ip);
    }
    if let Some(port) = attrs.source_port {
        w.uint("source.port", Some(u64::from(port)));
    }
    if let Some(ip) = &attrs.remote_ip {
        w.ip("remote.ip", ip);
    }
    if let Some(ip) = &attrs.destination_ip {
        w.ip("destination.ip", ip);
    }
    if let Some(port) = attrs.destination_port {
        w.uint("destination.port", Some(u64::from(port)));
    }
    text(w, "connection.sni", attrs.sni.as_deref());
    text(w, "connection.protocol", attrs.connection_protocol);
    text(w, "connection.tls_version", attrs.tls_version);
    if !attrs.alpn.is_empty() {
        w.key_array("connection.alpn");
        for alpn in &attrs.alpn {
            w.element_str(&clip(alpn));
        }
        w.end_array();
    }
    if let Some(mtls) = attrs.mtls {
        w.bool("connection.mtls", mtls);
    }
    if let Some(http) = &attrs.http {
        text(w, "request.authority", http.authority.as_deref());
        text(w, "request.host", http.host.as_deref());
        text(w, "request.method", http.method.as_deref());
        text(w, "request.path", http.raw_path.as_deref());
        text(w, "request.normalized_path", http.path.as_deref());
        text(w, "request.scheme", http.scheme.as_deref());
        text(w, "request.protocol", http.protocol.as_deref());
        if !http.headers.is_empty() {
            w.key_object("request.headers");
            for (name, value) in &http.headers {
                w.str(name, Some(&clip(value)));
            }
            w.end_object();
        }
    }
    w.end_object();
}

fn local_limit(w: &mut JsonWriter, key: &str, hit: &RateLimitHit) {
    let d = &hit.decision;
    w.key_object(key);
    w.str("name", Some(&d.limit_name));
    w.str("scope", Some("local"));
    w.str("result", Some(d.reason()));
    w.str("bucket", Some(&clip(&hit.key)));
    w.bool(
        "overflow",
        d.bucket == crate::ratelimit::BucketRef::Overflow,
    );
    w.uint("limit", Some(u64::from(d.limit)));
    w.uint("remaining", Some(u64::from(d.remaining)));
    w.uint("resetSeconds", Some(d.reset_secs));
    w.uint("matchedLimits", Some(hit.matched as u64));
    w.end_object();
}

fn global_limit(w: &mut JsonWriter, g: &GlobalHit) {
    w.key_object("rateLimit");
    w.str("name", Some(&g.limit_name));
    w.str("scope", Some("global"));
    w.str("domain", Some(&g.domain));
    match &g.result {
        GlobalResult::Answered { code, over_limit } => {
            w.str(
                "result",
                Some(if *over_limit { "over_limit" } else { "ok" }),
            );
            w.uint("code", Some(u64::from(*code)));
        }
        GlobalResult::Failed { error, detail } => {
            w.str("result", Some("error"));
            w.str("error", Some(error.as_str()));
            w.str("detail", Some(&clip(detail)));
        }
    }
    w.str("failureMode", Some(g.failure_mode.as_str()));
    for (key, header) in [
        ("limit", "x-ratelimit-limit"),
        ("remaining", "x-ratelimit-remaining"),
        ("resetSeconds", "x-ratelimit-reset"),
    ] {
        if let Some(n) = g.header_number(header) {
            w.uint(key, Some(n));
        }
    }
    w.uint("latencyUs", Some(g.latency_ns / 1_000));
    w.end_object();
}

/// Renders the decision log line. `attrs` is `None` when nothing could be gathered.
pub fn decision_line(
    kind: TrafficKind,
    decision: &Decision<'_>,
    attrs: Option<&Attributes>,
) -> String {
    line(kind, decision, None, attrs)
}

/// Renders the decision log line of a whole stream outcome: `decision` becomes `deny` for a
/// failed protocol check (reason: the check's name, detail: what failed) and `ratelimited` for
/// a rate-limited stream; `rateLimit` describes the limit that answered, when one matched.
pub fn outcome_line(
    kind: TrafficKind,
    outcome: &Outcome<'_>,
    attrs: Option<&Attributes>,
) -> String {
    line(kind, &outcome.decision, Some(outcome), attrs)
}

fn line(
    kind: TrafficKind,
    decision: &Decision<'_>,
    outcome: Option<&Outcome<'_>>,
    attrs: Option<&Attributes>,
) -> String {
    let mut w = head(Some(kind), decision, outcome);
    w.str("action", decision.action.map(|a| a.as_str()));
    if let Some(passed) = &decision.passed {
        w.key_object("passed");
        w.str("policy", Some(passed.policy));
        rule(&mut w, Some(passed.rule), passed.name);
        w.end_object();
    }
    w.str(
        "reason",
        Some(outcome.map_or(decision.reason.code(), Outcome::reason)),
    );
    if let Some(detail) = decision.reason.detail() {
        w.str("detail", Some(detail));
    } else if let Some(v) = outcome.and_then(|o| o.violation.as_ref()) {
        w.str("detail", Some(&clip(&v.to_string())));
    }
    if let Some(o) = outcome {
        // The limit that decided is `rateLimit`: the global one when it was asked (the local
        // ones allowed the stream then, and are `localRateLimit`).
        match (&o.global, &o.rate_limit) {
            (Some(global), local) => {
                global_limit(&mut w, global);
                if let Some(hit) = local {
                    local_limit(&mut w, "localRateLimit", hit);
                }
            }
            (None, Some(hit)) => local_limit(&mut w, "rateLimit", hit),
            (None, None) => {}
        }
    }
    w.key_array("audit");
    for policy in &decision.audit {
        w.element_str(policy);
    }
    w.end_array();
    w.key_array("dryRun");
    for hit in &decision.dry_run {
        w.element_object();
        if let Some(tier) = hit.tier {
            w.str("tier", Some(tier.as_str()));
        }
        w.str("policy", Some(hit.policy));
        rule(&mut w, hit.rule, hit.rule_name);
        w.str("wouldBe", Some(hit.would_be.as_str()));
        w.end_object();
    }
    w.end_array();
    attributes(&mut w, attrs.unwrap_or(&Attributes::default()));
    w.end_object();
    w.finish()
}

/// The decision as filter state for Envoy's access log (`wasm.egress_guard.decision`): one
/// JSON object, `{"decision","tier" (tiers only),"policy","rule","reason"}`, with the values the
/// decision line gives them. `outcome` is `None` for a stream that could not be evaluated.
pub fn decision_state(outcome: Option<&Outcome<'_>>, decision: &Decision<'_>) -> String {
    let mut w = head(None, decision, outcome);
    w.str(
        "reason",
        Some(outcome.map_or(decision.reason.code(), Outcome::reason)),
    );
    w.end_object();
    w.finish()
}

/// What the decision line and the filter state begin with: the decision, then `tier`,
/// `policy` and `rule`; the line (`kind` given) puts `event` and `kind` first.
fn head(
    kind: Option<TrafficKind>,
    decision: &Decision<'_>,
    outcome: Option<&Outcome<'_>>,
) -> JsonWriter {
    let mut w = JsonWriter::new();
    // The fixed head in one piece: kinds and verdicts are plain identifiers.
    w.raw(match kind {
        Some(TrafficKind::Http) => r#"{"event":"decision","kind":"http","decision":""#,
        Some(TrafficKind::Tcp) => r#"{"event":"decision","kind":"tcp","decision":""#,
        None => r#"{"decision":""#,
    });
    w.raw(match outcome {
        Some(o) => o.verdict().as_str(),
        None => decision.verdict.as_str(),
    });
    w.raw("\"");
    if let Some(tier) = decision.tier {
        w.str("tier", Some(tier.as_str()));
    }
    w.str("policy", decision.policy);
    rule(&mut w, decision.rule, decision.rule_name);
    w
}

/// `"rule"`: the rule's name when it has one, else its index (or `null`).
fn rule(w: &mut JsonWriter, index: Option<usize>, name: Option<&str>) {
    match name {
        Some(name) => w.str("rule", Some(name)),
        None => w.uint("rule", index.map(|r| r as u64)),
    }
}

/// One step of an evaluation, for `explain` (logged at debug level only).
pub fn trace_line(step: &TraceStep<'_>) -> String {
    let mut w = JsonWriter::new();
    w.raw(r#"{"event":"explain""#);
    match step {
        TraceStep::Tier {
            tier,
            outcome,
            detail,
        } => {
            w.str("step", Some("tier"));
            w.str("tier", Some(tier.as_str()));
            w.str("outcome", Some(outcome));
            if !detail.is_empty() {
                w.str("detail", Some(detail));
            }
        }
        TraceStep::Policy {
            tier,
            policy,
            priority,
            dry_run,
            skipped,
        } => {
            w.str("step", Some("policy"));
            w.str("tier", tier.map(|t| t.as_str()));
            w.str("policy", Some(policy));
            if let Some(priority) = priority {
                w.uint("priority", Some(u64::from(*priority)));
            }
            w.bool("dryRun", *dry_run);
            w.str("skipped", *skipped);
        }
        TraceStep::Rule {
            tier,
            policy,
            rule,
            name,
            action,
            result,
        } => {
            w.str("step", Some("rule"));
            w.str("tier", tier.map(|t| t.as_str()));
            w.str("policy", Some(policy));
            w.uint("index", Some(*rule as u64));
            w.str("name", *name);
            w.str("action", Some(action));
            let (matched, why) = match result {
                RuleResult::Matched => (true, None),
                RuleResult::Missed(why) => (false, Some(why.as_str())),
                RuleResult::NotOnTcp => (
                    false,
                    Some("an ALLOW or PASS rule with HTTP-only fields never matches TCP"),
                ),
            };
            w.bool("matched", matched);
            if let Some(why) = why {
                w.str("why", Some(why));
            }
        }
    }
    w.end_object();
    w.finish()
}
