//! `scan --cluster` against a mock API server over real HTTP: same findings as file mode,
//! pagination through an expired continue token, retries on 429/500/slow answers, forbidden
//! namespaces reported.

#[path = "support/cluster_data.rs"]
mod cluster_data;
use kube_mock as mock_api;

use std::time::Duration;

use axum::http::Method;
use cluster_data::*;
use egress_auditor::checks::CheckOptions;
use egress_auditor::cli::pipeline::scan_files;
use egress_auditor::kube_client::RetryPolicy;
use egress_auditor::rules::{EGRESS_FILTER_MISSING, SCAN_INCOMPLETE, SIDECAR_NOT_RUNNING};
use mock_api::{Fault, FaultAction, MockApi};
use serde_json::json;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_equals_file_mode_on_the_repo_objects() {
    let mock = MockApi::start().await;
    mock.apply_all(repo_objects());
    let dir = tempdir();
    let api = api_for(&mock, dir.path(), quick_retry()).await;
    // Page size 2: every collection with more than two objects is read over several pages.
    let scan = scan(&api, &[], 2).await.expect("scan");

    let (file_findings, _) =
        scan_files(&[objects_path()], &CheckOptions::default()).expect("file scan");
    assert!(!file_findings.is_empty());
    assert_eq!(
        file_mode_rules(&scan.findings),
        file_findings,
        "cluster: {:#?}",
        ids(&scan.findings)
    );

    // The live-only rule sees the crash-looping proxy; the egress gateway has its filter.
    let live: Vec<String> = ids(&scan.findings)
        .into_iter()
        .filter(|i| {
            i.starts_with(SIDECAR_NOT_RUNNING)
                || i.starts_with(EGRESS_FILTER_MISSING)
                || i.starts_with(SCAN_INCOMPLETE)
        })
        .collect();
    assert_eq!(
        live,
        vec!["sidecar-not-running Pod/shop/crashy".to_string()]
    );
    assert_eq!(scan.workloads, 7);
    assert!(scan.scope.all_namespaces);
    assert_eq!(scan.scope.namespaces.len(), 4);

    // Pods were read in pages of two: limit=2 and continue tokens on the wire.
    let pod_lists = mock.requests_matching(&Method::GET, "/api/v1/pods");
    assert_eq!(pod_lists.len(), 4, "7 pods in pages of 2");
    assert!(pod_lists
        .iter()
        .all(|r| r.query_param("limit").as_deref() == Some("2")));
    assert_eq!(
        pod_lists
            .iter()
            .filter(|r| r.query_param("continue").is_some())
            .count(),
        3
    );
    // Istio objects went through the dynamic API at their group/version paths.
    assert_eq!(
        mock.requests_matching(
            &Method::GET,
            "/apis/extensions.istio.io/v1alpha1/wasmplugins"
        )
        .len(),
        1
    );
    assert_eq!(
        mock.requests_matching(
            &Method::GET,
            "/apis/networking.istio.io/v1alpha3/envoyfilters"
        )
        .len(),
        1
    );
    // Read-only: the scan wrote nothing.
    assert!(mock.requests().iter().all(|r| r.method == Method::GET));

    let whole = judge_whole_snapshot(&api, 2).await.expect("whole read");
    assert_eq!(scan.findings, whole.findings, "page by page = all at once");
    assert_eq!(scan.workloads, whole.workloads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_equals_file_mode_on_istio_injected_fixtures() {
    let Some(mut pods) = injected_fixture_pods("fixtures") else {
        eprintln!("skipped: shared fixtures not found (set EGRESS_GUARD_FIXTURES)");
        return;
    };
    assert!(
        pods.len() > 20,
        "expected the injection golden files, got {}",
        pods.len()
    );
    let mut objects = vec![json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "fixtures", "labels": {"istio-injection": "enabled"}}})];
    objects.append(&mut pods);
    let dir = tempdir();
    let list = dir.path().join("fixtures.json");
    write_list(&list, &objects);

    let mock = MockApi::start().await;
    mock.apply_all(objects.clone());
    let api = api_for(&mock, dir.path(), quick_retry()).await;
    let scan = scan(&api, &[], 7).await.expect("scan");
    let (file_findings, _) = scan_files(&[list], &CheckOptions::default()).expect("file scan");
    assert_eq!(file_mode_rules(&scan.findings), file_findings);
    let whole = judge_whole_snapshot(&api, 7).await.expect("whole read");
    assert_eq!(scan.findings, whole.findings, "page by page = all at once");
    // The plain injections carry no bypass: some pods must have no finding at all.
    let flagged: std::collections::BTreeSet<&str> =
        file_findings.iter().map(|f| f.name.as_str()).collect();
    assert!(
        flagged.len() < objects.len() - 1,
        "every fixture pod flagged: {flagged:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_continue_token_restarts_the_list() {
    let mock = MockApi::start().await;
    mock.apply_all(repo_objects());
    // The second page of pods answers 410 Gone once.
    mock.inject(Fault::new("/api/v1/pods", 1, FaultAction::ExpiredContinue).query("continue="));
    let dir = tempdir();
    let api = api_for(&mock, dir.path(), quick_retry()).await;
    let scan = scan(&api, &[], 3)
        .await
        .expect("scan survives an expired token");
    assert_eq!(scan.workloads, 7, "no pod lost, none duplicated");
    let (file_findings, _) =
        scan_files(&[objects_path()], &CheckOptions::default()).expect("file scan");
    assert_eq!(file_mode_rules(&scan.findings), file_findings);
    assert_eq!(api.stats.list_restarts(), 1);

    let pod_lists = mock.requests_matching(&Method::GET, "/api/v1/pods");
    let sequence: Vec<(Option<String>, u16)> = pod_lists
        .iter()
        .map(|r| (r.query_param("continue"), r.status))
        .collect();
    assert_eq!(
        sequence,
        vec![
            (None, 200),
            (Some("offset-3".into()), 410),
            (None, 200),
            (Some("offset-3".into()), 200),
            (Some("offset-6".into()), 200),
        ]
    );
    assert!(scan.findings.iter().any(|f| f.name == "crashy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried() {
    let mock = MockApi::start().await;
    mock.apply_all(repo_objects());
    mock.inject(Fault::new("/api/v1/pods", 2, FaultAction::Status(429)));
    mock.inject(Fault::new(
        "/api/v1/namespaces",
        1,
        FaultAction::Status(500),
    ));
    mock.inject(Fault::new("/networkpolicies", 1, FaultAction::Status(503)));
    let dir = tempdir();
    let api = api_for(&mock, dir.path(), quick_retry()).await;
    let scan = scan(&api, &[], 500).await.expect("scan after retries");
    let (file_findings, _) =
        scan_files(&[objects_path()], &CheckOptions::default()).expect("file scan");
    assert_eq!(file_mode_rules(&scan.findings), file_findings);

    let statuses = |path: &str| -> Vec<u16> {
        mock.requests()
            .iter()
            .filter(|r| r.method == Method::GET && r.path == path)
            .map(|r| r.status)
            .collect()
    };
    assert_eq!(statuses("/api/v1/pods"), vec![429, 429, 200]);
    assert_eq!(statuses("/api/v1/namespaces"), vec![500, 200]);
    assert_eq!(
        statuses("/apis/networking.k8s.io/v1/networkpolicies"),
        vec![503, 200]
    );
    assert_eq!(api.stats.retries(), 4);
    let metrics = api.metrics.encode();
    assert!(
        metrics.contains(r#"egress_auditor_api_errors_total{resource="pods",code="429"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"egress_auditor_api_errors_total{resource="namespaces",code="500"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_time_out_and_are_retried() {
    let mock = MockApi::start().await;
    mock.apply_all(repo_objects());
    mock.inject(Fault::new(
        "/networkpolicies",
        1,
        FaultAction::Delay(Duration::from_secs(5)),
    ));
    let dir = tempdir();
    let retry = RetryPolicy {
        request_timeout: Duration::from_millis(400),
        ..quick_retry()
    };
    let api = api_for(&mock, dir.path(), retry).await;
    let scan = scan(&api, &[], 500).await.expect("scan after a timeout");
    let (file_findings, _) =
        scan_files(&[objects_path()], &CheckOptions::default()).expect("file scan");
    assert_eq!(file_mode_rules(&scan.findings), file_findings);
    assert_eq!(api.stats.retries(), 1);
    assert!(api.metrics.encode().contains(
        r#"egress_auditor_api_errors_total{resource="networkpolicies",code="timeout"} 1"#
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_failure_gives_up_at_the_deadline() {
    let mock = MockApi::start().await;
    mock.apply_all(repo_objects());
    mock.inject(Fault::new(
        "/api/v1/pods",
        usize::MAX,
        FaultAction::Status(500),
    ));
    let dir = tempdir();
    let retry = RetryPolicy {
        deadline: Duration::from_millis(600),
        ..quick_retry()
    };
    let api = api_for(&mock, dir.path(), retry).await;
    let started = std::time::Instant::now();
    let err = scan(&api, &[], 500).await.expect_err("pods never readable");
    assert_eq!(err.code(), Some(500));
    assert!(err.to_string().contains("list pods"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up late: {:?}",
        started.elapsed()
    );
    assert!(
        mock.requests_matching(&Method::GET, "/api/v1/pods").len() >= 3,
        "retried before giving up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_namespace_is_reported_not_skipped() {
    let mock = MockApi::start().await;
    mock.apply_all(repo_objects());
    // Only per-namespace RoleBindings, and none in payments.
    mock.forbid_cluster_list("pods");
    mock.forbid_cluster_list("networkpolicies");
    mock.forbid_namespace("payments");
    let dir = tempdir();
    let api = api_for(&mock, dir.path(), quick_retry()).await;
    let scan = scan(&api, &[], 500).await.expect("scan");
    let found = ids(&scan.findings);
    assert!(
        found.contains(&"scan-incomplete Namespace/-/payments".to_string()),
        "{found:#?}"
    );
    let incomplete: Vec<_> = scan
        .findings
        .iter()
        .filter(|f| f.rule == SCAN_INCOMPLETE)
        .collect();
    assert_eq!(
        incomplete.len(),
        2,
        "pods and networkpolicies of payments: {found:#?}"
    );
    assert!(incomplete
        .iter()
        .all(|f| f.message.contains("403") && f.evidence["httpStatus"] == 403));
    // The readable namespaces were judged all the same; the payments pod was not seen.
    assert!(found.contains(&"sidecar-missing Pod/shop/web-2".to_string()));
    assert!(!found.iter().any(|f| f.contains("payments/debug")));
    assert_eq!(scan.unreadable.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_scan_reads_only_the_named_namespaces() {
    let mock = MockApi::start().await;
    mock.apply_all(repo_objects());
    let dir = tempdir();
    let api = api_for(&mock, dir.path(), quick_retry()).await;
    let scan = scan(&api, &["payments", "nowhere"], 500)
        .await
        .expect("scan");
    let found = ids(&scan.findings);
    assert!(
        found.contains(&"host-network Pod/payments/debug".to_string()),
        "{found:#?}"
    );
    assert!(!found.iter().any(|f| f.contains("/shop/")), "{found:#?}");
    assert!(
        found.contains(&"scan-incomplete Namespace/-/nowhere".to_string()),
        "{found:#?}"
    );
    assert!(!scan.scope.all_namespaces);
    // Nothing was listed cluster-wide.
    assert!(mock
        .requests_matching(&Method::GET, "/api/v1/pods")
        .is_empty());
    assert_eq!(
        mock.requests_matching(&Method::GET, "/api/v1/namespaces/payments/pods")
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_istio_crds_mean_no_filter() {
    let mock = MockApi::start().await;
    mock.apply_all(repo_objects());
    mock.remove_collection("wasmplugins");
    mock.remove_collection("envoyfilters");
    let dir = tempdir();
    let api = api_for(&mock, dir.path(), quick_retry()).await;
    let scan = scan(&api, &[], 500).await.expect("scan without Istio CRDs");
    let found = ids(&scan.findings);
    assert!(
        found.contains(
            &"egress-filter-missing Pod/istio-system/istio-egressgateway-7d9f6c".to_string()
        ),
        "{found:#?}"
    );
    assert!(
        !found.iter().any(|f| f.starts_with(SCAN_INCOMPLETE)),
        "{found:#?}"
    );
}

/// The objects of in-repo YAML files as JSON, keeping the kinds the mock serves.
fn yaml_objects(files: &[&str]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for f in files {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
        let text = std::fs::read_to_string(&path).expect("read");
        for (_, doc) in egress_auditor::sources::files::split_yaml_documents(&text) {
            let Ok(obj) = serde_saphyr::from_str::<serde_json::Value>(doc) else {
                continue;
            };
            let served = matches!(
                (obj["apiVersion"].as_str(), obj["kind"].as_str()),
                (Some("v1"), Some("Namespace" | "Pod" | "ConfigMap"))
                    | (Some("networking.k8s.io/v1"), Some("NetworkPolicy"))
                    | (Some("extensions.istio.io/v1alpha1"), Some("WasmPlugin"))
                    | (Some("networking.istio.io/v1"), Some("ServiceEntry"))
                    | (Some("gateway.networking.k8s.io/v1"), Some("Gateway"))
            );
            if served {
                out.push(obj);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambient_objects_are_read_and_judged_from_the_cluster() {
    let mock = MockApi::start().await;
    mock.apply_all(yaml_objects(&[
        "tests/data/base.yaml",
        "tests/data/ambient/enrolled.yaml",
        "tests/data/cases/waypoint.yaml",
    ]));
    let dir = tempdir();
    let api = api_for(&mock, dir.path(), quick_retry()).await;
    let scan = scan(&api, &[], 50).await.expect("scan");

    // ServiceEntries and Gateway API Gateways went through the dynamic API.
    for path in [
        "/apis/networking.istio.io/v1/serviceentries",
        "/apis/gateway.networking.k8s.io/v1/gateways",
    ] {
        assert_eq!(
            mock.requests_matching(&Method::GET, path).len(),
            1,
            "{path}"
        );
    }
    // The enrolled namespace is clean; the waypoint cases give what file mode gives.
    let waypoint = |f: &[egress_auditor::finding::Finding]| -> Vec<String> {
        let mut v: Vec<String> = ids(f)
            .into_iter()
            .filter(|i| i.starts_with("egress-waypoint-missing"))
            .collect();
        v.sort();
        v
    };
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let (files, _) = scan_files(
        &[data.join("base.yaml"), data.join("cases/waypoint.yaml")],
        &CheckOptions::default(),
    )
    .expect("file scan");
    assert_eq!(waypoint(&scan.findings), waypoint(&files));
    assert_eq!(waypoint(&files).len(), 7, "{:#?}", ids(&files));
    let other: Vec<String> = ids(&file_mode_rules(&scan.findings))
        .into_iter()
        .filter(|i| !i.starts_with("egress-waypoint-missing"))
        .collect();
    assert!(other.is_empty(), "{other:#?}");

    let whole = judge_whole_snapshot(&api, 50).await.expect("whole read");
    assert_eq!(scan.findings, whole.findings, "page by page = all at once");
}
