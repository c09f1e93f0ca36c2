//! What a replay shows at a glance: decisions per source namespace and destination host, by
//! the policy and rule (and tier) that made them, and over time; and allow-lists recommended
//! from observed traffic.
//!
//! Everything here is built from the requests sent and the filter's own decision lines, one
//! request at a time, so a replay of any length holds only the aggregate. Hosts and namespaces
//! come from the traffic (attacker-controlled): the number of groups is capped, and the rest is
//! counted in one overflow group.

pub mod html;
pub mod recommend;
pub mod render;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::accesslog::Unusable;
use crate::replay::{decision_log, Decision, ReplayItem, ReplayResult, StreamInput};
use crate::stream::StreamKind;

/// Default cap on (namespace, host) groups.
pub const DEFAULT_MAX_GROUPS: usize = 10_000;
/// Unusable lines shown by number and reason; the rest are counted.
pub const UNUSABLE_EXAMPLES: usize = 5;
/// Most buckets of the decisions-over-time series; wider buckets beyond.
pub const MAX_BUCKETS: usize = 120;

/// What a request was, as far as grouping and allow-lists go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    pub principal: Option<String>,
    /// The `ns` segment of the principal.
    pub namespace: Option<String>,
    /// The host asked for: `:authority` without port (HTTP), the SNI (TLS), else the
    /// destination IP; lowercase, without a trailing dot.
    pub host: String,
    /// Whether `host` is a name the client gave (authority or SNI) rather than an address.
    pub named: bool,
    pub kind: StreamKind,
    /// `destination.port` as the filter sees it.
    pub port: u16,
    pub method: Option<String>,
}

/// The namespace of an Istio principal `<trust domain>/ns/<namespace>/sa/<account>`.
pub fn principal_namespace(principal: &str) -> Option<&str> {
    let mut parts = principal.split('/');
    while let Some(part) = parts.next() {
        if part == "ns" {
            return parts.next().filter(|ns| !ns.is_empty());
        }
    }
    None
}

/// `host[:port]` or `[v6]:port` → the host, lowercase, no trailing dot.
fn authority_host(authority: &str) -> String {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl RequestFacts {
    pub fn of(item: &ReplayItem) -> RequestFacts {
        let (connection, kind, method, authority) = match &item.input {
            StreamInput::Http(r) => (
                &r.connection,
                StreamKind::Http,
                r.method.clone(),
                r.authority.as_deref(),
            ),
            StreamInput::Tcp(t) => (&t.connection, StreamKind::Tcp, None, None),
        };
        let sni = connection
            .sni
            .as_deref()
            .filter(|s| !s.starts_with("outbound_.") && !s.starts_with("inbound_."));
        let (host, named) = match (kind, authority, sni) {
            (StreamKind::Http, Some(a), _) if !a.is_empty() => (authority_host(a), true),
            (_, _, Some(s)) if !s.is_empty() => (authority_host(s), true),
            _ => (connection.destination.ip().to_string(), false),
        };
        let principal = connection.principal.clone();
        RequestFacts {
            namespace: principal
                .as_deref()
                .and_then(principal_namespace)
                .map(str::to_string),
            principal,
            host,
            named,
            kind,
            port: connection.destination.port(),
            method,
        }
    }
}

/// Requests by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub requests: u64,
    pub allow: u64,
    pub deny: u64,
    pub ratelimited: u64,
    pub error: u64,
}

impl Counts {
    fn add(&mut self, decision: Decision) {
        self.requests += 1;
        match decision {
            Decision::Allow => self.allow += 1,
            Decision::Deny => self.deny += 1,
            Decision::Ratelimited => self.ratelimited += 1,
            Decision::Error => self.error += 1,
        }
    }

    pub fn merge(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.allow += other.allow;
        self.deny += other.deny;
        self.ratelimited += other.ratelimited;
        self.error += other.error;
    }
}

/// Who decided, from the filter's decision line.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DecidedBy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    pub policy: Option<String>,
    /// The rule's name, or its index.
    pub rule: Option<String>,
    /// The decision line's `reason` code.
    pub reason: Option<String>,
}

impl DecidedBy {
    /// `tier/policy[rule]`, then the reason when it says more than "a policy decided".
    pub fn label(&self) -> String {
        let mut out = String::new();
        if let Some(tier) = &self.tier {
            out.push_str(tier);
            if self.policy.is_some() {
                out.push('/');
            }
        }
        if let Some(policy) = &self.policy {
            out.push_str(policy);
            if let Some(rule) = &self.rule {
                out.push_str(&format!("[{rule}]"));
            }
        }
        let plain = matches!(
            self.reason.as_deref(),
            Some("allowed_by_policy" | "denied_by_policy") | None
        );
        if !plain || out.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&format!(
                "({})",
                self.reason.as_deref().unwrap_or("no decision line")
            ));
        }
        out
    }
}

/// A dry-run policy's verdict on requests of a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DryRunVerdict {
    pub policy: String,
    pub rule: Option<String>,
    pub would_be: String,
}

/// One (namespace, host) row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    pub counts: Counts,
    /// Counts by who decided.
    pub decided_by: BTreeMap<DecidedBy, Counts>,
    pub dry_run: BTreeMap<DryRunVerdict, u64>,
}

/// Decisions over time in buckets of equal width, widened (pairs merged) when the replay runs
/// longer than [`MAX_BUCKETS`] buckets.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub bucket_ms: u64,
    pub buckets: Vec<Counts>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            bucket_ms: 1000,
            buckets: Vec::new(),
        }
    }
}

impl Timeline {
    fn add(&mut self, at: Duration, decision: Decision) {
        let at_ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        let mut index = at_ms / self.bucket_ms;
        while index >= MAX_BUCKETS as u64 {
            let merged = self
                .buckets
                .chunks(2)
                .map(|pair| {
                    let mut c = Counts::default();
                    pair.iter().for_each(|b| c.merge(b));
                    c
                })
                .collect();
            self.buckets = merged;
            self.bucket_ms = self.bucket_ms.saturating_mul(2);
            index = at_ms / self.bucket_ms;
        }
        let index = usize::try_from(index).unwrap_or(0);
        if self.buckets.len() <= index {
            self.buckets.resize(index + 1, Counts::default());
        }
        if let Some(bucket) = self.buckets.get_mut(index) {
            bucket.add(decision);
        }
    }
}

/// Where the replayed requests came from, for the report's header.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InputStats {
    /// Lines read (blank ones included).
    pub lines: usize,
    pub unusable: usize,
    /// The first few unusable lines.
    pub unusable_examples: Vec<UnusableLine>,
    /// Start of the first request (ms since the epoch), when the input has times.
    pub start_ms: Option<i64>,
}

impl InputStats {
    /// Counts a line that could not be used, keeping the first few.
    pub fn unusable(&mut self, unusable: Unusable) {
        self.unusable += 1;
        if self.unusable_examples.len() < UNUSABLE_EXAMPLES {
            self.unusable_examples.push(UnusableLine {
                line: unusable.line,
                reason: unusable.reason,
            });
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnusableLine {
    pub line: usize,
    pub reason: String,
}

/// The aggregate of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub input: InputStats,
    pub totals: Counts,
    /// Rows by (namespace, host); `None` namespace: sources without a mesh identity.
    pub groups: BTreeMap<(Option<String>, String), Group>,
    /// Requests of groups beyond the cap.
    pub overflow: Option<Group>,
    pub max_groups: usize,
    pub timeline: Timeline,
    /// The latest replay time seen, for requests without one.
    clock: Duration,
}

impl Summary {
    pub fn new(max_groups: usize) -> Summary {
        Summary {
            input: InputStats::default(),
            totals: Counts::default(),
            groups: BTreeMap::new(),
            overflow: None,
            max_groups,
            timeline: Timeline::default(),
            clock: Duration::ZERO,
        }
    }

    /// Counts one replayed request.
    pub fn record(&mut self, item: &ReplayItem, result: &ReplayResult) {
        let facts = RequestFacts::of(item);
        if let Some(at) = item.at {
            self.clock = self.clock.max(at);
        }
        self.totals.add(result.decision);
        self.timeline.add(self.clock, result.decision);
        let key = (facts.namespace, facts.host);
        let group = if self.groups.contains_key(&key) || self.groups.len() < self.max_groups {
            self.groups.entry(key).or_default()
        } else {
            self.overflow.get_or_insert_with(Group::default)
        };
        group.counts.add(result.decision);
        let line = decision_log(&result.logs);
        let text = |name: &str| -> Option<String> {
            match line.as_ref()?.get(name)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let decided_by = DecidedBy {
            tier: text("tier"),
            policy: text("policy"),
            rule: text("rule"),
            reason: text("reason")
                .or_else(|| result.error.as_ref().map(|_| "filter_failed".into())),
        };
        group
            .decided_by
            .entry(decided_by)
            .or_default()
            .add(result.decision);
        let dry_run = line
            .as_ref()
            .and_then(|l| l.get("dryRun"))
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default();
        for entry in dry_run {
            let field = |name: &str| match entry.get(name) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            if let (Some(policy), Some(would_be)) = (field("policy"), field("wouldBe")) {
                *group
                    .dry_run
                    .entry(DryRunVerdict {
                        policy,
                        rule: field("rule"),
                        would_be,
                    })
                    .or_default() += 1;
            }
        }
    }

    /// Rows in reading order: by namespace (no identity last), most requests first.
    pub fn rows(&self) -> Vec<(Option<&str>, &str, &Group)> {
        let mut rows: Vec<(Option<&str>, &str, &Group)> = self
            .groups
            .iter()
            .map(|((ns, host), g)| (ns.as_deref(), host.as_str(), g))
            .collect();
        rows.sort_by(|a, b| {
            (
                a.0.is_none(),
                a.0,
                std::cmp::Reverse(a.2.counts.requests),
                a.1,
            )
                .cmp(&(
                    b.0.is_none(),
                    b.0,
                    std::cmp::Reverse(b.2.counts.requests),
                    b.1,
                ))
        });
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{parse_requests, LogLine};
    use std::collections::BTreeMap as Map;

    fn result(decision: Decision, line: &str) -> ReplayResult {
        ReplayResult {
            id: "x".into(),
            decision,
            status: None,
            headers: Map::new(),
            body: None,
            logs: vec![LogLine {
                level: "info".into(),
                message: line.into(),
            }],
            details: None,
            error: None,
        }
    }

    #[test]
    fn facts_name_the_namespace_host_and_port() {
        let items = parse_requests(concat!(
            r#"{"id":"a","source":{"principal":"cluster.local/ns/ci/sa/runner"},"destination":{"port":8080},"http":{"method":"PUT","authority":"API.GitHub.com.:80"}}"#,
            "\n",
            r#"{"id":"b","sni":"Files.PythonHosted.org","tcp":{}}"#,
            "\n",
            r#"{"id":"c","destination":{"ip":"10.20.0.5","port":8443},"sni":"outbound_.80_._.istio-egressgateway.istio-system.svc.cluster.local","tcp":{}}"#,
        ))
        .unwrap();
        let a = RequestFacts::of(&items[0]);
        assert_eq!(a.namespace.as_deref(), Some("ci"));
        assert_eq!(
            (a.host.as_str(), a.port, a.named),
            ("api.github.com", 8080, true)
        );
        assert_eq!(a.method.as_deref(), Some("PUT"));
        let b = RequestFacts::of(&items[1]);
        assert_eq!(
            (b.host.as_str(), b.kind, b.namespace),
            ("files.pythonhosted.org", StreamKind::Tcp, None)
        );
        let c = RequestFacts::of(&items[2]);
        assert_eq!((c.host.as_str(), c.named), ("10.20.0.5", false));
    }

    #[test]
    fn groups_count_decisions_by_policy_rule_and_tier() {
        let items = parse_requests(concat!(
            r#"{"id":"a","at_ms":0,"source":{"principal":"cluster.local/ns/ci/sa/runner"},"http":{"authority":"a.example"}}"#,
            "\n",
            r#"{"id":"b","at_ms":1500,"source":{"principal":"cluster.local/ns/ci/sa/runner"},"http":{"authority":"a.example"}}"#,
        ))
        .unwrap();
        let mut summary = Summary::new(10);
        summary.record(&items[0], &result(Decision::Allow, r#"{"event":"decision","policy":"p","rule":0,"reason":"allowed_by_policy","dryRun":[{"policy":"d","rule":1,"wouldBe":"deny"}]}"#));
        summary.record(&items[1], &result(Decision::Deny, r#"{"event":"decision","tier":"admin","policy":"block","rule":"paste","reason":"denied_by_policy"}"#));
        let group = &summary.groups[&(Some("ci".into()), "a.example".into())];
        assert_eq!(
            (group.counts.requests, group.counts.allow, group.counts.deny),
            (2, 1, 1)
        );
        let labels: Vec<String> = group.decided_by.keys().map(DecidedBy::label).collect();
        assert_eq!(labels, ["p[0]", "admin/block[paste]"]);
        assert_eq!(group.dry_run.values().sum::<u64>(), 1);
        assert_eq!(summary.timeline.buckets.len(), 2);
        assert_eq!(summary.timeline.buckets[1].deny, 1);
    }

    #[test]
    fn groups_beyond_the_cap_are_counted_together() {
        let mut summary = Summary::new(2);
        for i in 0..5 {
            let items = parse_requests(&format!(
                r#"{{"id":"r","http":{{"authority":"h{i}.example"}}}}"#
            ))
            .unwrap();
            summary.record(&items[0], &result(Decision::Deny, "{}"));
        }
        assert_eq!(summary.groups.len(), 2);
        assert_eq!(summary.overflow.as_ref().unwrap().counts.requests, 3);
        assert_eq!(summary.totals.requests, 5);
    }

    #[test]
    fn a_long_replay_widens_the_buckets() {
        let mut t = Timeline::default();
        for s in 0..1000u64 {
            t.add(Duration::from_secs(s), Decision::Allow);
        }
        assert!(t.buckets.len() <= MAX_BUCKETS);
        assert_eq!(t.bucket_ms, 16_000);
        assert_eq!(t.buckets.iter().map(|b| b.allow).sum::<u64>(), 1000);
        assert_eq!(t.buckets[0].allow, 16);
    }

    #[test]
    fn labels_say_the_reason_when_no_policy_decided() {
        let d = DecidedBy {
            reason: Some("no_allow_policy_matched".into()),
            ..DecidedBy::default()
        };
        assert_eq!(d.label(), "(no_allow_policy_matched)");
        let d = DecidedBy {
            policy: Some("p".into()),
            rule: Some("1".into()),
            reason: Some("http_sni_mismatch".into()),
            ..DecidedBy::default()
        };
        assert_eq!(d.label(), "p[1] (http_sni_mismatch)");
    }
}
