//! `--sink alertmanager=URL`: findings as Alertmanager alerts (API v2, `POST /api/v2/alerts`).
//!
//! Every run re-sends each finding as a firing alert whose `endsAt` lies one TTL ahead (longer
//! than the time between two CronJob runs), so alerts stay firing between runs. Alerts this
//! auditor raised earlier that no longer have a finding are read back from Alertmanager and sent
//! again with `endsAt` = now: they resolve as soon as the bypass is fixed, without the auditor
//! keeping state of its own. Should the auditor stop running, its alerts end by themselves after
//! the TTL.
//!
//! Alerts of the node agent carry `source="node"` and `node=<name>`; each mode (and each node)
//! resolves only the alerts it raised, since none of them sees what the others judge.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::http::{post_json, send_with_retry};
use super::settings::SinkSettings;
use crate::finding::Finding;
use crate::rules::rule;
use crate::snapshot::{Origin, ScanScope};

/// `alertname` of every alert the auditor raises; the other labels tell findings apart.
pub const ALERT_NAME: &str = "EgressGuardBypass";

/// Alerts per POST, so one request stays small.
const BATCH: usize = 500;

/// The labels that identify a finding's alert: `alertname`, `rule`, `severity`, `namespace`,
/// `pod` (for Pod findings), plus `kind`, `name` and `container` so distinct findings never merge.
pub fn alert_labels(f: &Finding) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_string(), ALERT_NAME.to_string());
    labels.insert("rule".to_string(), f.rule.clone());
    labels.insert("severity".to_string(), f.severity.as_str().to_string());
    let namespace = match (&f.namespace, f.kind.as_str()) {
        (Some(ns), _) => Some(ns.clone()),
        (None, "Namespace") => Some(f.name.clone()),
        _ => None,
    };
    if let Some(ns) = namespace {
        labels.insert("namespace".to_string(), ns);
    }
    if f.kind == "Pod" {
        labels.insert("pod".to_string(), f.name.clone());
    }
    labels.insert("kind".to_string(), f.kind.clone());
    labels.insert("name".to_string(), f.name.clone());
    if let Some(c) = &f.container {
        labels.insert("container".to_string(), c.clone());
    }
    labels
}

/// [`alert_labels`] plus, for the node agent, `source="node"` and `node`. Scan alerts carry no
/// `source` label, so alerts raised before node alerts existed keep their identity.
pub fn alert_labels_from(f: &Finding, origin: &Origin) -> BTreeMap<String, String> {
    let mut labels = alert_labels(f);
    if let Origin::Node { node } = origin {
        labels.insert("source".to_string(), origin.source().to_string());
        labels.insert("node".to_string(), node.clone());
    }
    labels
}

/// Whether an active alert was raised by `origin`: a scan owns the alerts without a `source`
/// label, a node agent those with its own `source` and `node`.
pub fn raised_by(labels: &BTreeMap<String, String>, origin: &Origin) -> bool {
    match origin {
        Origin::Scan => !labels.contains_key("source"),
        Origin::Node { node } => {
            labels.get("source").map(String::as_str) == Some(origin.source())
                && labels.get("node") == Some(node)
        }
    }
}

/// A firing alert for a finding.
pub fn firing_alert(f: &Finding, now: jiff::Timestamp, ttl: std::time::Duration) -> Value {
    firing_alert_from(f, &Origin::Scan, now, ttl)
}

/// A firing alert for a finding of `origin`.
pub fn firing_alert_from(
    f: &Finding,
    origin: &Origin,
    now: jiff::Timestamp,
    ttl: std::time::Duration,
) -> Value {
    let ends = now
        .checked_add(
            jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::from_hours(3)),
        )
        .unwrap_or(now);
    let info = rule(&f.rule);
    json!({
        "labels": alert_labels_from(f, origin),
        "annotations": {
            "summary": f.message,
            "description": info.map(|r| format!("{}. Fix: {}", r.title, r.fix)).unwrap_or_default(),
            "evidence": f.evidence.to_string(),
        },
        "startsAt": now.to_string(),
        "endsAt": ends.to_string(),
    })
}

/// What one delivery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertStats {
    pub firing: usize,
    pub resolved: usize,
}

/// `http://host:9093` (or the same with `/api/v2/alerts` already on it) → the alerts endpoint.
pub fn alerts_endpoint(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/api/v2/alerts").unwrap_or(base);
    format!("{base}/api/v2/alerts")
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends the current findings as firing alerts and resolves the auditor's alerts whose finding
/// is gone (within the scope this run judged).
pub async fn publish(
    http: &reqwest::Client,
    base_url: &str,
    findings: &[Finding],
    scope: &ScanScope,
    settings: &SinkSettings,
    now: jiff::Timestamp,
) -> Result<AlertStats, String> {
    let endpoint = alerts_endpoint(base_url);
    let firing: Vec<Value> = findings
        .iter()
        .map(|f| firing_alert_from(f, &settings.origin, now, settings.alert_ttl))
        .collect();
    let current: BTreeSet<BTreeMap<String, String>> = findings
        .iter()
        .map(|f| alert_labels_from(f, &settings.origin))
        .collect();

    // Read what is active before posting, so a slow Alertmanager cannot make us resolve an alert
    // we are about to re-fire.
    let query = format!(
        "{endpoint}?active=true&silenced=true&inhibited=true&unprocessed=true&filter={}",
        percent_encode(&format!("alertname=\"{ALERT_NAME}\""))
    );
    let body = send_with_retry(&settings.http_retry, &endpoint, || http.get(&query)).await?;
    let active: Vec<Value> = serde_json::from_slice(&body)
        .map_err(|e| format!("{endpoint}: answer to GET is not a list of alerts: {e}"))?;

    for chunk in firing.chunks(BATCH) {
        post_json(
            http,
            &endpoint,
            &Value::Array(chunk.to_vec()),
            &settings.http_retry,
        )
        .await?;
    }

    let resolved: Vec<Value> = active
        .iter()
        .filter_map(|a| {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(a["labels"].clone()).ok()?;
            if labels.get("alertname").map(String::as_str) != Some(ALERT_NAME)
                || current.contains(&labels)
                || !raised_by(&labels, &settings.origin)
            {
                return None;
            }
            let in_scope = match (&settings.origin, labels.get("namespace")) {
                // A node agent judges every pod on its node in each pass: all its alerts are in
                // scope, whatever the namespace.
                (Origin::Node { .. }, _) => true,
                (Origin::Scan, Some(ns)) => scope.covers_namespace(ns),
                (Origin::Scan, None) => scope.covers_cluster(),
            };
            if !in_scope {
                return None;
            }
            Some(json!({
                "labels": labels,
                "annotations": a["annotations"],
                "startsAt": a["startsAt"],
                "endsAt": now.to_string(),
            }))
        })
        .collect();
    for chunk in resolved.chunks(BATCH) {
        post_json(
            http,
            &endpoint,
            &Value::Array(chunk.to_vec()),
            &settings.http_retry,
        )
        .await?;
    }
    Ok(AlertStats {
        firing: firing.len(),
        resolved: resolved.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Severity;

    fn finding(kind: &str, ns: Option<&str>, name: &str) -> Finding {
        Finding {
            rule: "host-network".into(),
            severity: Severity::High,
            kind: kind.into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
            container: None,
            message: "m".into(),
            evidence: json!({"hostNetwork": true}),
        }
    }

    #[test]
    fn labels_name_the_pod() {
        let l = alert_labels(&finding("Pod", Some("shop"), "web-1"));
        assert_eq!(l["alertname"], ALERT_NAME);
        assert_eq!(l["rule"], "host-network");
        assert_eq!(l["severity"], "high");
        assert_eq!(l["namespace"], "shop");
        assert_eq!(l["pod"], "web-1");
        let ns = alert_labels(&finding("Namespace", None, "shop"));
        assert_eq!(ns["namespace"], "shop");
        assert!(!ns.contains_key("pod"));
    }

    #[test]
    fn modes_own_only_their_alerts() {
        let node_a = Origin::Node {
            node: "node-a".into(),
        };
        let node_b = Origin::Node {
            node: "node-b".into(),
        };
        let f = finding("Pod", Some("shop"), "web-1");
        let scan_labels = alert_labels_from(&f, &Origin::Scan);
        assert_eq!(scan_labels, alert_labels(&f));
        let node_labels = alert_labels_from(&f, &node_a);
        assert_eq!(node_labels["source"], "node");
        assert_eq!(node_labels["node"], "node-a");
        assert!(raised_by(&scan_labels, &Origin::Scan));
        assert!(!raised_by(&scan_labels, &node_a));
        assert!(raised_by(&node_labels, &node_a));
        assert!(!raised_by(&node_labels, &node_b));
        assert!(!raised_by(&node_labels, &Origin::Scan));
    }

    #[test]
    fn ends_at_is_one_ttl_ahead() {
        let now: jiff::Timestamp = "2025-06-01T12:00:00Z".parse().unwrap();
        let a = firing_alert(
            &finding("Pod", Some("a"), "p"),
            now,
            std::time::Duration::from_secs(7200),
        );
        assert_eq!(a["startsAt"], "2025-06-01T12:00:00Z");
        assert_eq!(a["endsAt"], "2025-06-01T14:00:00Z");
        assert_eq!(a["annotations"]["summary"], "m");
    }

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            alerts_endpoint("http://am:9093"),
            "http://am:9093/api/v2/alerts"
        );
        assert_eq!(
            alerts_endpoint("http://am:9093/"),
            "http://am:9093/api/v2/alerts"
        );
        assert_eq!(
            alerts_endpoint("http://am:9093/api/v2/alerts"),
            "http://am:9093/api/v2/alerts"
        );
        assert_eq!(percent_encode("alertname=\"X\""), "alertname%3D%22X%22");
    }
}
