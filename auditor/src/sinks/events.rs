//! `--sink events`: an events.k8s.io/v1 Warning Event on each offending object, so
//! `kubectl describe pod` shows the bypass.
//!
//! Event names are derived from [`Finding::identity`], so the same finding maps to the same
//! Event on every run: the first run creates it, later runs only bump its series (count and last
//! observed time) and at most once per refresh interval. Events are best-effort by design
//! (the API server expires them); PolicyReports and alerts are the records that persist.

use std::collections::BTreeMap;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::kube_objects::{api_version_of, MANAGED_BY, MANAGED_BY_LABEL};
use super::settings::SinkSettings;
use crate::finding::Finding;
use crate::kube_client::ApiContext;
use crate::snapshot::ScanScope;

/// `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "egress-guard.io/auditor";
/// Namespace of Events about cluster-scoped objects (where Kubernetes itself puts them).
pub const CLUSTER_EVENT_NAMESPACE: &str = "default";
/// `note` may hold at most 1 kB.
const NOTE_MAX: usize = 1024;

/// The Event's name: stable for the same finding.
pub fn event_name(f: &Finding) -> String {
    let digest = Sha256::digest(f.identity().as_bytes());
    format!("egress-auditor.{}", &hex::encode(digest)[..20])
}

/// `sidecar-missing` → `SidecarMissing`.
pub fn reason(rule: &str) -> String {
    rule.split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|first| first.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<String>()
        .chars()
        .take(128)
        .collect()
}

/// Where the Event lives: the object's namespace, or `default` for cluster-scoped objects.
pub fn event_namespace(f: &Finding) -> &str {
    f.namespace.as_deref().unwrap_or(CLUSTER_EVENT_NAMESPACE)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Whether the finding is about an object an Event can point at.
pub fn has_object(f: &Finding) -> bool {
    f.kind != "Cluster" && !f.name.is_empty()
}

/// The Event for a finding, as first created.
pub fn new_event(f: &Finding, instance: &str, now: jiff::Timestamp) -> Value {
    let mut regarding = json!({
        "apiVersion": api_version_of(&f.kind),
        "kind": f.kind,
        "name": f.name,
    });
    if let Some(ns) = &f.namespace {
        regarding["namespace"] = json!(ns);
    }
    if let Some(c) = &f.container {
        regarding["fieldPath"] = json!(format!("spec.containers{{{c}}}"));
    }
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": event_name(f),
            "namespace": event_namespace(f),
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, "egress-guard.io/rule": f.rule},
        },
        "eventTime": MicroTime(now),
        "type": "Warning",
        "reason": reason(&f.rule),
        "action": "Audit",
        "note": truncate(&format!("[{}] {}", f.severity, f.message), NOTE_MAX),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": truncate(instance, 128),
        "regarding": regarding,
    })
}

/// What one delivery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventStats {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
}

fn last_seen(e: &Event) -> Option<jiff::Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
}

/// Creates the Events of new findings and bumps the series of those already reported (when the
/// last report is older than the refresh interval).
pub async fn publish(
    api: &ApiContext,
    findings: &[Finding],
    scope: &ScanScope,
    settings: &SinkSettings,
    now: jiff::Timestamp,
) -> Result<EventStats, String> {
    let mut wanted: BTreeMap<(String, String), &Finding> = BTreeMap::new();
    for f in findings.iter().filter(|f| has_object(f)) {
        wanted
            .entry((event_namespace(f).to_string(), event_name(f)))
            .or_insert(f);
    }
    let existing = existing_events(api, scope, wanted.keys().map(|(ns, _)| ns.as_str())).await?;
    let refresh = jiff::SignedDuration::try_from(settings.event_refresh)
        .unwrap_or(jiff::SignedDuration::from_hours(1));
    let mut stats = EventStats::default();
    let mut errors = Vec::new();
    let (post_params, patch_params) = (PostParams::default(), PatchParams::default());
    for ((ns, name), f) in &wanted {
        let events: Api<Event> = Api::namespaced(api.client.clone(), ns);
        match existing.get(&(ns.clone(), name.clone())) {
            Some(e) => {
                let due = last_seen(e).is_none_or(|t| now.duration_since(t) >= refresh);
                if !due {
                    stats.unchanged += 1;
                    continue;
                }
                let count = e
                    .series
                    .as_ref()
                    .map(|s| s.count)
                    .unwrap_or(1)
                    .saturating_add(1);
                let patch = Patch::Merge(
                    json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}}),
                );
                let what = format!("update event {ns}/{name}");
                match api
                    .call(&what, "events", || {
                        events.patch(name, &patch_params, &patch)
                    })
                    .await
                {
                    Ok(_) => stats.updated += 1,
                    Err(e) => errors.push(e.to_string()),
                }
            }
            None => {
                let event: Event =
                    match serde_json::from_value(new_event(f, &settings.reporting_instance, now)) {
                        Ok(e) => e,
                        Err(e) => {
                            errors.push(format!("event for {}: {e}", f.identity()));
                            continue;
                        }
                    };
                let what = format!("create event {ns}/{name}");
                match api
                    .call(&what, "events", || events.create(&post_params, &event))
                    .await
                {
                    Ok(_) => stats.created += 1,
                    // Another run created it meanwhile: the finding is reported.
                    Err(e) if e.code() == Some(409) => stats.unchanged += 1,
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(stats)
    } else {
        Err(format!(
            "{} of {} events not written; first error: {}",
            errors.len(),
            wanted.len(),
            errors[0]
        ))
    }
}

/// The auditor's own Events, by (namespace, name): listed by label, cluster-wide when the whole
/// cluster is judged, else in each namespace that will get an Event.
async fn existing_events<'a>(
    api: &ApiContext,
    scope: &ScanScope,
    namespaces: impl Iterator<Item = &'a str>,
) -> Result<BTreeMap<(String, String), Event>, String> {
    let params = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let mut lists = Vec::new();
    if scope.all_namespaces {
        let all: Api<Event> = Api::all(api.client.clone());
        lists.push(
            api.list_all(&all, &params, 500, "list events", "events", Some)
                .await
                .map_err(|e| e.to_string())?,
        );
    } else {
        let unique: std::collections::BTreeSet<&str> = namespaces.collect();
        for ns in unique {
            let in_ns: Api<Event> = Api::namespaced(api.client.clone(), ns);
            lists.push(
                api.list_all(
                    &in_ns,
                    &params,
                    500,
                    &format!("list events in {ns}"),
                    "events",
                    Some,
                )
                .await
                .map_err(|e| e.to_string())?,
            );
        }
    }
    Ok(lists
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let key = (e.metadata.namespace.clone()?, e.metadata.name.clone()?);
            Some((key, e))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Severity;

    fn finding(container: Option<&str>) -> Finding {
        Finding {
            rule: "sidecar-not-running".into(),
            severity: Severity::High,
            kind: "Pod".into(),
            namespace: Some("shop".into()),
            name: "web-1".into(),
            container: container.map(str::to_string),
            message: "istio-proxy is waiting".into(),
            evidence: json!({}),
        }
    }

    #[test]
    fn names_are_stable_and_distinct() {
        assert_eq!(event_name(&finding(None)), event_name(&finding(None)));
        assert_ne!(
            event_name(&finding(None)),
            event_name(&finding(Some("app")))
        );
        assert!(event_name(&finding(None)).len() <= 63);
    }

    #[test]
    fn reasons_are_pascal_case() {
        assert_eq!(reason("sidecar-missing"), "SidecarMissing");
        assert_eq!(
            reason("egress-networkpolicy-missing"),
            "EgressNetworkpolicyMissing"
        );
    }

    #[test]
    fn event_shape() {
        let now: jiff::Timestamp = "2025-06-01T12:00:00Z".parse().unwrap();
        let e = new_event(&finding(Some("istio-proxy")), "auditor-0", now);
        assert_eq!(e["type"], "Warning");
        assert_eq!(e["reportingController"], REPORTING_CONTROLLER);
        assert_eq!(e["reason"], "SidecarNotRunning");
        assert_eq!(e["regarding"]["fieldPath"], "spec.containers{istio-proxy}");
        assert_eq!(e["metadata"]["namespace"], "shop");
        assert!(e["eventTime"]
            .as_str()
            .unwrap()
            .starts_with("2025-06-01T12:00:00"));
        let typed: Event = serde_json::from_value(e).unwrap();
        assert_eq!(typed.reporting_instance.as_deref(), Some("auditor-0"));
    }

    #[test]
    fn long_notes_are_cut_at_a_char_boundary() {
        let s = "é".repeat(700);
        let t = truncate(&s, NOTE_MAX);
        assert!(t.len() <= NOTE_MAX);
        assert!(t.chars().all(|c| c == 'é'));
    }
}
