//! `--sink policyreport`: findings as `wgpolicyk8s.io/v1alpha2` PolicyReports (one per namespace,
//! named `egress-auditor`) and one ClusterPolicyReport for cluster-scoped findings.
//!
//! The node agent writes its own reports, named `egress-guard-node-<node>` and labelled
//! `egress-guard.io/source=node`, only in namespaces where it has findings or had a report: each
//! mode replaces only the reports it owns, so neither clears what only the other can see.
//!
//! Each run writes the whole current state: a report is created, or replaced when its results
//! changed, so fixed findings disappear. A result that was already in the report keeps its
//! original timestamp (when it was first found). Namespaces judged clean get an empty report, so
//! "checked and clean" is visible and distinct from "never checked".

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::{json, Value};

use super::kube_objects::{api_version_of, MANAGED_BY, MANAGED_BY_LABEL};
use crate::finding::Finding;
use crate::kube_client::{ApiContext, ClusterError};
use crate::rules::{rule, SCAN_INCOMPLETE};
use crate::snapshot::{Origin, ScanScope};

pub const REPORT_NAME: &str = "egress-auditor";
/// Prefix of a node agent's report name; the node name follows.
pub const NODE_REPORT_PREFIX: &str = "egress-guard-node-";
/// Label saying which mode wrote a report ([`Origin::source`]).
pub const SOURCE_LABEL: &str = "egress-guard.io/source";
pub const GROUP: &str = "wgpolicyk8s.io";
pub const VERSION: &str = "v1alpha2";
/// `source` of every result.
pub const SOURCE: &str = "egress-auditor";
/// `policy` of every result; `rule` carries the rule id.
pub const POLICY: &str = "egress-bypass";
pub const CATEGORY: &str = "Egress bypass";

pub fn policy_report_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "PolicyReport"),
        "policyreports",
    )
}

pub fn cluster_policy_report_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "ClusterPolicyReport"),
        "clusterpolicyreports",
    )
}

/// The name of the reports `origin` writes: `egress-auditor` for scans, `egress-guard-node-<node>`
/// for a node agent. Node names are DNS subdomains of up to 253 characters; a name that would
/// exceed that limit with the prefix ends in a digest of the node name instead, so it stays
/// unique and stable.
pub fn report_name(origin: &Origin) -> String {
    match origin {
        Origin::Scan => REPORT_NAME.to_string(),
        Origin::Node { node } => {
            let name = format!("{NODE_REPORT_PREFIX}{node}");
            if name.len() <= 253 {
                return name;
            }
            use sha2::Digest;
            let digest = hex::encode(sha2::Sha256::digest(node.as_bytes()));
            let keep = 253 - NODE_REPORT_PREFIX.len() - 17;
            let head: String = node.chars().take(keep).collect();
            format!(
                "{NODE_REPORT_PREFIX}{}-{}",
                head.trim_end_matches(['.', '-']),
                &digest[..16]
            )
        }
    }
}

/// One report result for a finding.
pub fn result(f: &Finding, now: jiff::Timestamp) -> Value {
    let mut resource =
        json!({"apiVersion": api_version_of(&f.kind), "kind": f.kind, "name": f.name});
    if let Some(ns) = &f.namespace {
        resource["namespace"] = json!(ns);
    }
    let mut properties = serde_json::Map::new();
    if let Some(c) = &f.container {
        properties.insert("container".into(), json!(c));
    }
    if !f.evidence.is_null() {
        properties.insert("evidence".into(), json!(f.evidence.to_string()));
    }
    if let Some(info) = rule(&f.rule) {
        properties.insert("fix".into(), json!(info.fix));
    }
    let mut r = json!({
        "source": SOURCE,
        "policy": POLICY,
        "rule": f.rule,
        "category": CATEGORY,
        "severity": f.severity.as_str(),
        // A scan that could not read something could not evaluate it.
        "result": if f.rule == SCAN_INCOMPLETE { "error" } else { "fail" },
        "scored": true,
        "timestamp": {"seconds": now.as_second(), "nanos": now.subsec_nanosecond()},
        "message": f.message,
        "properties": properties,
    });
    if f.kind != "Cluster" {
        r["resources"] = json!([resource]);
    }
    r
}

/// What makes two results "the same finding" across runs (everything but the timestamp).
fn result_key(r: &Value) -> String {
    let mut r = r.clone();
    if let Some(o) = r.as_object_mut() {
        o.remove("timestamp");
    }
    r.to_string()
}

/// The results for `findings`, keeping the timestamp a result already had in `previous`.
fn results_with_history(
    findings: &[&Finding],
    previous: Option<&Value>,
    now: jiff::Timestamp,
) -> Vec<Value> {
    let known: BTreeMap<String, Value> = previous
        .and_then(|p| p["results"].as_array())
        .map(|rs| {
            rs.iter()
                .map(|r| (result_key(r), r["timestamp"].clone()))
                .collect()
        })
        .unwrap_or_default();
    findings
        .iter()
        .map(|f| {
            let mut r = result(f, now);
            if let Some(ts) = known.get(&result_key(&r)) {
                if ts.is_object() {
                    r["timestamp"] = ts.clone();
                }
            }
            r
        })
        .collect()
}

fn summary(results: &[Value]) -> Value {
    let count = |kind: &str| results.iter().filter(|r| r["result"] == kind).count();
    json!({"pass": count("pass"), "fail": count("fail"), "warn": count("warn"), "error": count("error"), "skip": count("skip")})
}

fn report(kind: &str, namespace: Option<&str>, results: Vec<Value>, origin: &Origin) -> Value {
    let mut metadata = json!({
        "name": report_name(origin),
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, SOURCE_LABEL: origin.source()},
    });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": kind,
        "metadata": metadata,
        "summary": summary(&results),
        "results": results,
    })
}

/// The PolicyReport of one namespace.
pub fn namespace_report(
    namespace: &str,
    findings: &[&Finding],
    previous: Option<&Value>,
    origin: &Origin,
    now: jiff::Timestamp,
) -> Value {
    report(
        "PolicyReport",
        Some(namespace),
        results_with_history(findings, previous, now),
        origin,
    )
}

/// The namespace a cluster-report result is about (for a Namespace finding), if any.
fn cluster_result_namespace(r: &Value) -> Option<&str> {
    let res = &r["resources"][0];
    (res["kind"] == "Namespace")
        .then(|| res["name"].as_str())
        .flatten()
}

/// The ClusterPolicyReport. When only part of the cluster was judged, results about namespaces
/// outside the scope are kept from `previous` (this run knows nothing new about them).
pub fn cluster_report(
    findings: &[&Finding],
    scope: &ScanScope,
    previous: Option<&Value>,
    now: jiff::Timestamp,
) -> Value {
    let mut results = results_with_history(findings, previous, now);
    if !scope.covers_cluster() {
        let kept = previous
            .and_then(|p| p["results"].as_array())
            .into_iter()
            .flatten()
            .filter(|r| cluster_result_namespace(r).is_none_or(|ns| !scope.covers_namespace(ns)))
            .cloned();
        let new_keys: BTreeSet<String> = results.iter().map(result_key).collect();
        let kept: Vec<Value> = kept
            .filter(|r| !new_keys.contains(&result_key(r)))
            .collect();
        results.extend(kept);
    }
    report("ClusterPolicyReport", None, results, &Origin::Scan)
}

/// Every report this run should write, keyed by namespace (`None`: the cluster report, which
/// only scans write: node findings are always about a pod).
pub fn desired_reports(
    findings: &[Finding],
    scope: &ScanScope,
    previous: &BTreeMap<Option<String>, Value>,
    origin: &Origin,
    now: jiff::Timestamp,
) -> BTreeMap<Option<String>, Value> {
    let mut by_ns: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    let mut cluster = Vec::new();
    for ns in &scope.namespaces {
        by_ns.entry(ns.as_str()).or_default();
    }
    for f in findings {
        match (&f.namespace, unreadable_namespace(f)) {
            (Some(ns), _) => by_ns.entry(ns.as_str()).or_default().push(f),
            // What could not be read in a namespace shows in that namespace's report, so the
            // report never looks clean when it was not checked.
            (None, Some(ns)) => by_ns.entry(ns).or_default().push(f),
            (None, None) => cluster.push(f),
        }
    }
    let mut out = BTreeMap::new();
    for (ns, fs) in by_ns {
        let key = Some(ns.to_string());
        let report = namespace_report(ns, &fs, previous.get(&key), origin, now);
        out.insert(key, report);
    }
    if *origin != Origin::Scan {
        return out;
    }
    if scope.covers_cluster() || !cluster.is_empty() || previous.contains_key(&None) {
        out.insert(
            None,
            cluster_report(&cluster, scope, previous.get(&None), now),
        );
    }
    out
}

/// The namespace a `scan-incomplete` finding is about, when that namespace exists.
fn unreadable_namespace(f: &Finding) -> Option<&str> {
    let missing_namespace =
        f.evidence["resource"] == "namespaces" && f.evidence["httpStatus"] == 404;
    (f.rule == SCAN_INCOMPLETE && f.kind == "Namespace" && !missing_namespace)
        .then_some(f.name.as_str())
}

/// Whether `desired` differs from what is stored (results and summary; metadata is the server's).
fn changed(desired: &Value, stored: &Value) -> bool {
    desired["results"] != stored["results"] || desired["summary"] != stored["summary"]
}

/// What one delivery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportStats {
    pub created: usize,
    pub replaced: usize,
    pub unchanged: usize,
}

fn explain(e: ClusterError) -> String {
    if e.is_not_found() {
        format!("{e} (is the wgpolicyk8s.io PolicyReport CRD installed?)")
    } else {
        e.to_string()
    }
}

/// Writes the reports: creates the missing ones, replaces the changed ones.
pub async fn publish(
    api: &ApiContext,
    findings: &[Finding],
    scope: &ScanScope,
    origin: &Origin,
    now: jiff::Timestamp,
) -> Result<ReportStats, String> {
    if let Origin::Node { .. } = origin {
        return publish_node(api, findings, origin, now).await;
    }
    let namespaced = policy_report_resource();
    let clustered = cluster_policy_report_resource();
    // Listed by label, then kept by name: the reports of node agents carry the same label but
    // another name, and are never read, replaced or emptied here.
    let params = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));

    // What is stored now.
    let mut stored: BTreeMap<Option<String>, Value> = BTreeMap::new();
    let keep_ours = |o: DynamicObject| {
        (o.metadata.name.as_deref() == Some(REPORT_NAME))
            .then(|| serde_json::to_value(&o).unwrap_or(Value::Null))
    };
    let mut namespaces: BTreeSet<String> = scope.namespaces.clone();
    namespaces.extend(findings.iter().filter_map(|f| f.namespace.clone()));
    if scope.all_namespaces {
        let all: Api<DynamicObject> = Api::all_with(api.client.clone(), &namespaced);
        for r in api
            .list_all(
                &all,
                &params,
                500,
                "list policyreports",
                "policyreports",
                keep_ours,
            )
            .await
            .map_err(explain)?
        {
            stored.insert(r["metadata"]["namespace"].as_str().map(str::to_string), r);
        }
    } else {
        for ns in &namespaces {
            let in_ns: Api<DynamicObject> =
                Api::namespaced_with(api.client.clone(), ns, &namespaced);
            for r in api
                .list_all(
                    &in_ns,
                    &params,
                    500,
                    &format!("list policyreports in {ns}"),
                    "policyreports",
                    keep_ours,
                )
                .await
                .map_err(explain)?
            {
                stored.insert(Some(ns.clone()), r);
            }
        }
    }
    let cluster_api: Api<DynamicObject> = Api::all_with(api.client.clone(), &clustered);
    if let Some(r) = api
        .list_all(
            &cluster_api,
            &params,
            500,
            "list clusterpolicyreports",
            "clusterpolicyreports",
            keep_ours,
        )
        .await
        .map_err(explain)?
        .into_iter()
        .next()
    {
        stored.insert(None, r);
    }

    let desired = desired_reports(findings, scope, &stored, origin, now);
    write_reports(api, desired, &stored, REPORT_NAME).await
}

/// A node agent's reports: its own reports are listed cluster-wide (by the source label, then
/// by name), and written where it has findings now or had a report before, so a report whose
/// findings were fixed (or whose pods left the node) is emptied rather than left stale.
async fn publish_node(
    api: &ApiContext,
    findings: &[Finding],
    origin: &Origin,
    now: jiff::Timestamp,
) -> Result<ReportStats, String> {
    let name = report_name(origin);
    let namespaced = policy_report_resource();
    let params = ListParams::default().labels(&format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY},{SOURCE_LABEL}={}",
        origin.source()
    ));
    let all: Api<DynamicObject> = Api::all_with(api.client.clone(), &namespaced);
    let mut stored: BTreeMap<Option<String>, Value> = BTreeMap::new();
    for r in api
        .list_all(
            &all,
            &params,
            500,
            "list policyreports",
            "policyreports",
            |o: DynamicObject| {
                (o.metadata.name.as_deref() == Some(name.as_str()))
                    .then(|| serde_json::to_value(&o).unwrap_or(Value::Null))
            },
        )
        .await
        .map_err(explain)?
    {
        stored.insert(r["metadata"]["namespace"].as_str().map(str::to_string), r);
    }
    let scope = ScanScope {
        all_namespaces: false,
        namespaces: stored.keys().flatten().cloned().collect(),
    };
    let desired = desired_reports(findings, &scope, &stored, origin, now);
    write_reports(api, desired, &stored, &name).await
}

/// Creates the desired reports that are missing and replaces those that changed.
async fn write_reports(
    api: &ApiContext,
    desired: BTreeMap<Option<String>, Value>,
    stored: &BTreeMap<Option<String>, Value>,
    name: &str,
) -> Result<ReportStats, String> {
    let namespaced = policy_report_resource();
    let cluster_api: Api<DynamicObject> =
        Api::all_with(api.client.clone(), &cluster_policy_report_resource());
    let mut stats = ReportStats::default();
    let mut errors = Vec::new();
    for (ns, report) in desired {
        let target: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(api.client.clone(), ns, &namespaced),
            None => cluster_api.clone(),
        };
        let place = ns.clone().unwrap_or_else(|| "cluster".to_string());
        let outcome = match stored.get(&ns) {
            Some(current) if !changed(&report, current) => {
                stats.unchanged += 1;
                continue;
            }
            Some(current) => replace(api, &target, name, report, current, &place)
                .await
                .map(|_| stats.replaced += 1),
            None => create(api, &target, &report, &place)
                .await
                .map(|_| stats.created += 1),
        };
        if let Err(e) = outcome {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(stats)
    } else {
        Err(format!(
            "{} report(s) not written; first error: {}",
            errors.len(),
            errors[0]
        ))
    }
}

fn to_dynamic(v: &Value) -> Result<DynamicObject, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("report is not a Kubernetes object: {e}"))
}

async fn create(
    api: &ApiContext,
    target: &Api<DynamicObject>,
    report: &Value,
    place: &str,
) -> Result<(), String> {
    let obj = to_dynamic(report)?;
    let params = PostParams::default();
    api.call(
        &format!("create policy report {place}"),
        "policyreports",
        || target.create(&params, &obj),
    )
    .await
    .map(|_| ())
    .map_err(explain)
}

/// Replaces with optimistic concurrency; on a conflict (someone wrote in between) re-reads once.
async fn replace(
    api: &ApiContext,
    target: &Api<DynamicObject>,
    name: &str,
    mut report: Value,
    current: &Value,
    place: &str,
) -> Result<(), String> {
    let what = format!("replace policy report {place}");
    let params = PostParams::default();
    report["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    let obj = to_dynamic(&report)?;
    match api
        .call(&what, "policyreports", || {
            target.replace(name, &params, &obj)
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(409) => {
            let fresh = api
                .call(&what, "policyreports", || target.get(name))
                .await
                .map_err(explain)?;
            report["metadata"]["resourceVersion"] = json!(fresh.metadata.resource_version);
            let obj = to_dynamic(&report)?;
            api.call(&what, "policyreports", || {
                target.replace(name, &params, &obj)
            })
            .await
            .map(|_| ())
            .map_err(explain)
        }
        Err(e) => Err(explain(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Severity;

    fn finding(rule: &str, ns: Option<&str>, kind: &str, name: &str) -> Finding {
        Finding {
            rule: rule.into(),
            severity: Severity::High,
            kind: kind.into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
            container: Some("app".into()),
            message: format!("{rule} on {name}"),
            evidence: json!({"k": 1}),
        }
    }

    fn scope(all: bool, ns: &[&str]) -> ScanScope {
        ScanScope {
            all_namespaces: all,
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn reports_per_namespace_and_cluster() {
        let now: jiff::Timestamp = "2025-06-01T12:00:00.5Z".parse().unwrap();
        let fs = vec![
            finding("host-network", Some("a"), "Pod", "p1"),
            finding("privileged", Some("a"), "Pod", "p2"),
            finding("egress-networkpolicy-missing", None, "Namespace", "a"),
        ];
        let out = desired_reports(
            &fs,
            &scope(true, &["a", "b"]),
            &BTreeMap::new(),
            &Origin::Scan,
            now,
        );
        let a = &out[&Some("a".to_string())];
        assert_eq!(a["kind"], "PolicyReport");
        assert_eq!(a["metadata"]["namespace"], "a");
        assert_eq!(a["summary"]["fail"], 2);
        assert_eq!(
            a["results"][0]["timestamp"],
            json!({"seconds": now.as_second(), "nanos": 500_000_000})
        );
        assert_eq!(a["results"][0]["resources"][0]["kind"], "Pod");
        assert_eq!(a["results"][0]["properties"]["container"], "app");
        let b = &out[&Some("b".to_string())];
        assert_eq!(b["results"], json!([]));
        let c = &out[&None];
        assert_eq!(c["kind"], "ClusterPolicyReport");
        assert_eq!(c["results"][0]["resources"][0]["name"], "a");
    }

    #[test]
    fn node_reports_have_their_own_name_and_label() {
        let now: jiff::Timestamp = "2025-06-01T12:00:00Z".parse().unwrap();
        let node = Origin::Node {
            node: "worker-1".into(),
        };
        let fs = vec![finding("iptables-tampered", Some("a"), "Pod", "p1")];
        let out = desired_reports(&fs, &scope(false, &["b"]), &BTreeMap::new(), &node, now);
        let a = &out[&Some("a".to_string())];
        assert_eq!(a["metadata"]["name"], "egress-guard-node-worker-1");
        assert_eq!(a["metadata"]["labels"][SOURCE_LABEL], "node");
        assert_eq!(a["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(a["summary"]["fail"], 1);
        // A namespace where it had a report and now has no finding gets an empty one.
        assert_eq!(out[&Some("b".to_string())]["results"], json!([]));
        // Never a ClusterPolicyReport: that one belongs to the cluster scan.
        assert!(!out.contains_key(&None));
        let scan = desired_reports(
            &fs,
            &scope(false, &["a"]),
            &BTreeMap::new(),
            &Origin::Scan,
            now,
        );
        assert_eq!(
            scan[&Some("a".to_string())]["metadata"]["name"],
            REPORT_NAME
        );
        assert_eq!(
            scan[&Some("a".to_string())]["metadata"]["labels"][SOURCE_LABEL],
            "scan"
        );
    }

    #[test]
    fn long_node_names_give_valid_report_names() {
        let long = "n".repeat(253);
        let name = report_name(&Origin::Node { node: long.clone() });
        assert!(name.len() <= 253, "{}", name.len());
        assert!(name.starts_with(NODE_REPORT_PREFIX));
        let other = report_name(&Origin::Node {
            node: format!("{}m", &long[..252]),
        });
        assert_ne!(name, other);
    }

    #[test]
    fn known_results_keep_their_first_timestamp() {
        let t1: jiff::Timestamp = "2025-06-01T12:00:00Z".parse().unwrap();
        let t2: jiff::Timestamp = "2025-06-01T13:00:00Z".parse().unwrap();
        let fs = vec![finding("host-network", Some("a"), "Pod", "p1")];
        let first = desired_reports(
            &fs,
            &scope(true, &["a"]),
            &BTreeMap::new(),
            &Origin::Scan,
            t1,
        );
        let second = desired_reports(&fs, &scope(true, &["a"]), &first, &Origin::Scan, t2);
        let key = Some("a".to_string());
        assert!(!changed(&second[&key], &first[&key]));
        let more = vec![fs[0].clone(), finding("privileged", Some("a"), "Pod", "p1")];
        let third = desired_reports(&more, &scope(true, &["a"]), &first, &Origin::Scan, t2);
        assert_eq!(
            third[&key]["results"][0]["timestamp"]["seconds"],
            t1.as_second()
        );
        assert_eq!(
            third[&key]["results"][1]["timestamp"]["seconds"],
            t2.as_second()
        );
    }

    #[test]
    fn partial_scope_keeps_other_namespaces_in_the_cluster_report() {
        let now: jiff::Timestamp = "2025-06-01T12:00:00Z".parse().unwrap();
        let all = vec![
            finding("egress-networkpolicy-missing", None, "Namespace", "a"),
            finding("egress-networkpolicy-missing", None, "Namespace", "b"),
        ];
        let before = desired_reports(
            &all,
            &scope(true, &["a", "b"]),
            &BTreeMap::new(),
            &Origin::Scan,
            now,
        );
        // Namespace a was fixed and only a was scanned: b's result stays.
        let after = desired_reports(&[], &scope(false, &["a"]), &before, &Origin::Scan, now);
        let results = after[&None]["results"].as_array().unwrap().clone();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0]["resources"][0]["name"], "b");
    }
}
