//! The sinks end to end: the real `egress-auditor scan --cluster` binary against the mock API
//! server, a mock Alertmanager and webhook receivers.

#[path = "support/cluster_data.rs"]
mod cluster_data;
use kube_mock as mock_api;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use axum::http::Method;
use cluster_data::*;
use egress_auditor::sinks::alertmanager::ALERT_NAME;
use egress_auditor::sinks::events::{event_name, REPORTING_CONTROLLER};
use mock_api::{MockApi, MockReceiver};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_egress-auditor");

async fn run(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("KUBECONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run egress-auditor")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn finding_names(doc: &Value) -> Vec<String> {
    doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["rule"].as_str().unwrap_or(""),
                f["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

async fn setup() -> (MockApi, tempfile::TempDir, String) {
    let mock = MockApi::start().await;
    mock.apply_all(repo_objects());
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = mock.write_kubeconfig(dir.path()).display().to_string();
    (mock, dir, kubeconfig)
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sink_exits_3_and_findings_are_still_printed_and_delivered_elsewhere() {
    let (_mock, _dir, kubeconfig) = setup().await;
    let broken = MockReceiver::start().await;
    broken.fail_with(Some(503));
    let working = MockReceiver::start().await;
    let broken_url = format!("webhook={}/hook", broken.url());
    let working_url = format!("webhook={}/hook", working.url());
    let out = run(&[
        "scan",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "--sink",
        &broken_url,
        "--sink",
        &working_url,
        "--sink-timeout",
        "1s",
    ])
    .await;
    assert_eq!(
        code(&out),
        3,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = stdout_json(&out);
    let names = finding_names(&printed);
    assert!(
        names.contains(&"sidecar-missing web-2".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"sidecar-not-running crashy".to_string()),
        "{names:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sink webhook=") && stderr.contains("503"),
        "{stderr}"
    );
    // The working webhook got the same document that was printed.
    let posts = working.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].0, "/hook");
    assert_eq!(posts[0].1["findings"], printed["findings"]);
    // The broken one was retried before giving up.
    assert!(broken.posts().is_empty());
    assert!(broken.attempts() >= 2, "attempts: {}", broken.attempts());

    // Without the broken sink the exit code is about findings again.
    let out = run(&[
        "scan",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "--sink",
        &working_url,
    ])
    .await;
    assert_eq!(code(&out), 1);
    assert_eq!(working.posts().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sinks_need_cluster_mode_but_http_sinks_work_on_files() {
    let receiver = MockReceiver::start().await;
    let objects = objects_path().display().to_string();
    let out = run(&["scan", "--input", &objects, "--sink", "events"]).await;
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --cluster"));
    let hook = format!("webhook={}/files", receiver.url());
    let out = run(&["scan", "--input", &objects, "--sink", &hook]).await;
    assert_eq!(
        code(&out),
        1,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let posts = receiver.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].1["findings"], stdout_json(&out)["findings"]);
}

fn report(mock: &MockApi, ns: &str) -> Value {
    mock.object("policyreports", Some(ns), "egress-auditor")
        .unwrap_or_else(|| panic!("no PolicyReport in {ns}"))
}

fn rules_in(report: &Value) -> Vec<String> {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["rule"].as_str().unwrap_or(""),
                r["resources"][0]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reports_are_replaced_so_fixed_findings_disappear() {
    let (mock, _dir, kubeconfig) = setup().await;
    let out = run(&[
        "scan",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "--sink",
        "policyreport",
    ])
    .await;
    assert_eq!(
        code(&out),
        1,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shop = report(&mock, "shop");
    let mut rules = rules_in(&shop);
    rules.sort();
    assert_eq!(
        rules,
        vec![
            "capture-exclusion excluder",
            "sidecar-missing web-2",
            "sidecar-not-running crashy"
        ]
    );
    assert_eq!(shop["summary"]["fail"], 3);
    assert_eq!(
        rules_in(&report(&mock, "payments")),
        vec!["host-network debug"]
    );
    // Namespaces judged clean get an empty report.
    assert_eq!(report(&mock, "legacy")["results"], Value::Array(vec![]));
    assert!(mock
        .object("clusterpolicyreports", None, "egress-auditor")
        .is_some());
    let created = mock.requests_matching(&Method::POST, "/apis/wgpolicyk8s.io/v1alpha2/");
    assert_eq!(created.len(), 5, "4 namespaces + the cluster report");

    // Fix web-2 (its pod is gone) and scan again: only the shop report is rewritten.
    assert!(mock.delete("pods", Some("shop"), "web-2"));
    mock.clear_requests();
    let out = run(&[
        "scan",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "--sink",
        "policyreport",
    ])
    .await;
    assert_eq!(code(&out), 1);
    let shop_after = report(&mock, "shop");
    let mut rules = rules_in(&shop_after);
    rules.sort();
    assert_eq!(
        rules,
        vec!["capture-exclusion excluder", "sidecar-not-running crashy"]
    );
    assert_eq!(shop_after["summary"]["fail"], 2);
    let puts = mock.requests_matching(&Method::PUT, "/apis/wgpolicyk8s.io/v1alpha2/");
    assert_eq!(puts.len(), 1, "{puts:#?}");
    assert!(puts[0]
        .path
        .ends_with("/namespaces/shop/policyreports/egress-auditor"));
    assert!(mock
        .requests_matching(&Method::POST, "/apis/wgpolicyk8s.io/")
        .is_empty());
    // A result still present keeps the time it was first found.
    let ts = |r: &Value, rule: &str| {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["rule"] == rule)
            .unwrap()["timestamp"]
            .clone()
    };
    assert_eq!(
        ts(&shop, "capture-exclusion"),
        ts(&shop_after, "capture-exclusion")
    );
}

// --- CRD schema validation -----------------------------------------------------------------

/// Validates `value` against an OpenAPI v3 (structural) schema the way the API server does for a
/// CRD, plus: a field the schema does not know is an error (the server would silently prune it).
fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            errors.push(format!("{path}: {value} not in {allowed:?}"));
        }
    }
    match schema["type"].as_str() {
        Some("object") => {
            let Some(obj) = value.as_object() else {
                errors.push(format!("{path}: expected an object, got {value}"));
                return;
            };
            for req in schema["required"].as_array().into_iter().flatten() {
                let key = req.as_str().unwrap_or("");
                if !obj.contains_key(key) {
                    errors.push(format!("{path}: required field {key} missing"));
                }
            }
            let props = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            let open = path.ends_with(".metadata")
                || schema["x-kubernetes-preserve-unknown-fields"] == true;
            for (k, v) in obj {
                let sub = format!("{path}.{k}");
                match props.and_then(|p| p.get(k)) {
                    Some(s) => validate(s, v, &sub, errors),
                    None if additional.is_object() => validate(additional, v, &sub, errors),
                    None if open || (props.is_none() && additional.is_null()) => {}
                    None => errors.push(format!("{sub}: field not in the schema")),
                }
            }
        }
        Some("array") => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    validate(&schema["items"], item, &format!("{path}[{i}]"), errors);
                }
            }
            None => errors.push(format!("{path}: expected an array")),
        },
        Some("string") if !value.is_string() => {
            errors.push(format!("{path}: expected a string, got {value}"))
        }
        Some("boolean") if !value.is_boolean() => {
            errors.push(format!("{path}: expected a boolean"))
        }
        Some("integer") => match value.as_i64() {
            Some(n) => {
                if schema["format"] == "int32" && i32::try_from(n).is_err() {
                    errors.push(format!("{path}: {n} out of int32 range"));
                }
            }
            None => errors.push(format!("{path}: expected an integer, got {value}")),
        },
        _ => {}
    }
}

fn crd_schema(fixtures: &Path, file: &str, version: &str) -> Value {
    let text = std::fs::read_to_string(fixtures.join("policyreport").join(file)).expect("CRD file");
    let crd: Value = serde_saphyr::from_str(&text).expect("CRD YAML");
    crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{file} has no version {version}"))["schema"]["openAPIV3Schema"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_reports_validate_against_the_crd_schema() {
    let Some(fixtures) = fixtures_dir() else {
        eprintln!("skipped: shared fixtures not found (set EGRESS_GUARD_FIXTURES)");
        return;
    };
    let namespaced = crd_schema(&fixtures, "wgpolicyk8s.io_policyreports.yaml", "v1alpha2");
    let clustered = crd_schema(
        &fixtures,
        "wgpolicyk8s.io_clusterpolicyreports.yaml",
        "v1alpha2",
    );
    let (mock, dir, kubeconfig) = setup().await;
    // A forbidden namespace too, so a scan-incomplete ("error") result is in the cluster report.
    mock.forbid_cluster_list("pods");
    mock.forbid_in_namespace("legacy", "pods");
    let out = run(&[
        "scan",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "--sink",
        "policyreport",
    ])
    .await;
    assert_eq!(
        code(&out),
        1,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(dir);
    let reports = mock.objects("policyreports");
    assert_eq!(reports.len(), 4, "shop, payments, legacy, istio-system");
    // The unreadable namespace's report says so instead of looking clean.
    let legacy = mock
        .object("policyreports", Some("legacy"), "egress-auditor")
        .expect("legacy report");
    assert_eq!(legacy["summary"]["error"], 1, "{legacy:#}");
    assert_eq!(legacy["results"][0]["rule"], "scan-incomplete");
    let mut results = 0;
    for r in &reports {
        let mut errors = Vec::new();
        validate(&namespaced, r, "PolicyReport", &mut errors);
        assert!(errors.is_empty(), "{errors:#?}\n{r:#}");
        results += r["results"].as_array().map_or(0, Vec::len);
    }
    assert!(results >= 4);
    let cluster = mock
        .object("clusterpolicyreports", None, "egress-auditor")
        .expect("cluster report");
    let mut errors = Vec::new();
    validate(&clustered, &cluster, "ClusterPolicyReport", &mut errors);
    assert!(errors.is_empty(), "{errors:#?}\n{cluster:#}");
    // The validator does catch what the server would reject or prune.
    let mut broken = reports[0].clone();
    broken["results"] = serde_json::json!([{"policy": "p", "severity": "urgent", "timestamp": "2025-01-01T00:00:00Z", "extra": 1}]);
    let mut errors = Vec::new();
    validate(&namespaced, &broken, "PolicyReport", &mut errors);
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

// --- Events --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_raised_once_per_finding_and_not_repeated() {
    let (mock, _dir, kubeconfig) = setup().await;
    let out = run(&[
        "scan",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "--sink",
        "events",
    ])
    .await;
    assert_eq!(
        code(&out),
        1,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = stdout_json(&out);
    let with_object = printed["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] != "Cluster")
        .count();
    let created = mock.requests_matching(&Method::POST, "/apis/events.k8s.io/v1/namespaces/");
    assert_eq!(created.len(), with_object);
    let events = mock.objects("events");
    let crashy = events
        .iter()
        .find(|e| e["regarding"]["name"] == "crashy")
        .expect("event on crashy");
    assert_eq!(crashy["type"], "Warning");
    assert_eq!(crashy["reason"], "SidecarNotRunning");
    assert_eq!(crashy["reportingController"], REPORTING_CONTROLLER);
    assert_eq!(crashy["regarding"]["kind"], "Pod");
    assert_eq!(crashy["regarding"]["namespace"], "shop");
    assert!(crashy["note"]
        .as_str()
        .unwrap()
        .contains("CrashLoopBackOff"));
    assert!(crashy["eventTime"].is_string());

    // Same findings again: nothing new is written.
    mock.clear_requests();
    let out = run(&[
        "scan",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "--sink",
        "events",
    ])
    .await;
    assert_eq!(code(&out), 1);
    let writes: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.method != Method::GET)
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");

    // Once the refresh interval has passed, the existing events count the repeat instead.
    let out = run(&[
        "scan",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "--sink",
        "events",
        "--event-refresh",
        "0s",
    ])
    .await;
    assert_eq!(code(&out), 1);
    assert!(mock
        .requests_matching(&Method::POST, "/apis/events.k8s.io/")
        .is_empty());
    let patches = mock.requests_matching(&Method::PATCH, "/apis/events.k8s.io/");
    assert_eq!(patches.len(), with_object);
    let crashy_after = mock
        .objects("events")
        .into_iter()
        .find(|e| e["regarding"]["name"] == "crashy")
        .unwrap();
    assert_eq!(crashy_after["series"]["count"], 2);
    assert_eq!(crashy_after["metadata"]["name"], crashy["metadata"]["name"]);
    assert_eq!(mock.objects("events").len(), events.len());
}

#[test]
fn event_names_follow_the_finding_identity() {
    let f = egress_auditor::finding::Finding {
        rule: "host-network".into(),
        severity: egress_auditor::finding::Severity::High,
        kind: "Pod".into(),
        namespace: Some("payments".into()),
        name: "debug".into(),
        container: None,
        message: "first wording".into(),
        evidence: Value::Null,
    };
    let mut reworded = f.clone();
    reworded.message = "second wording".into();
    assert_eq!(event_name(&f), event_name(&reworded));
}

// --- Alertmanager (mock) ------------------------------------------------------------------

fn alert_for<'a>(
    alerts: &'a [mock_api::StoredAlert],
    pod: &str,
) -> Option<&'a mock_api::StoredAlert> {
    alerts
        .iter()
        .find(|a| a.labels.get("name").map(String::as_str) == Some(pod))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_stay_firing_between_runs_and_resolve_once_fixed() {
    let (mock, _dir, kubeconfig) = setup().await;
    let am = MockReceiver::start().await;
    let sink = format!("alertmanager={}", am.url());
    let before = jiff::Timestamp::now();
    let out = run(&[
        "scan",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "--sink",
        &sink,
        "--alert-ttl",
        "2h",
    ])
    .await;
    assert_eq!(
        code(&out),
        1,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let findings = stdout_json(&out)["findings"].as_array().unwrap().len();
    let alerts = am.alerts();
    assert_eq!(alerts.len(), findings);
    let web2 = alert_for(&alerts, "web-2").expect("alert for web-2");
    let labels: BTreeMap<&str, &str> = web2
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(labels["alertname"], ALERT_NAME);
    assert_eq!(labels["rule"], "sidecar-missing");
    assert_eq!(labels["severity"], "high");
    assert_eq!(labels["namespace"], "shop");
    assert_eq!(labels["pod"], "web-2");
    let ends: jiff::Timestamp = web2.ends_at.parse().expect("endsAt is RFC 3339");
    let ttl = ends.duration_since(before);
    assert!(
        ttl >= jiff::SignedDuration::from_mins(119) && ttl <= jiff::SignedDuration::from_mins(121),
        "{ttl:?}"
    );

    // Fix web-2 and, outside the next run's scope, payments/debug too.
    assert!(mock.delete("pods", Some("shop"), "web-2"));
    assert!(mock.delete("pods", Some("payments"), "debug"));
    let out = run(&[
        "scan",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "-n",
        "shop",
        "--sink",
        &sink,
    ])
    .await;
    assert_eq!(
        code(&out),
        1,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = jiff::Timestamp::now();
    let alerts = am.alerts();
    let resolved: jiff::Timestamp = alert_for(&alerts, "web-2")
        .unwrap()
        .ends_at
        .parse()
        .unwrap();
    assert!(
        resolved <= now,
        "web-2 resolved: endsAt {resolved} <= {now}"
    );
    // Still-present findings keep firing; the payments alert was outside the scope and stays.
    let crashy: jiff::Timestamp = alert_for(&alerts, "crashy")
        .unwrap()
        .ends_at
        .parse()
        .unwrap();
    assert!(crashy > now + jiff::SignedDuration::from_mins(60));
    let debug: jiff::Timestamp = alert_for(&alerts, "debug")
        .unwrap()
        .ends_at
        .parse()
        .unwrap();
    assert!(debug > now);

    // A full scan resolves it.
    let out = run(&[
        "scan",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "--sink",
        &sink,
    ])
    .await;
    assert_eq!(code(&out), 1);
    let debug: jiff::Timestamp = alert_for(&am.alerts(), "debug")
        .unwrap()
        .ends_at
        .parse()
        .unwrap();
    assert!(debug <= jiff::Timestamp::now());
}
