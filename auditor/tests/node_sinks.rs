//! The node agent's sinks without network namespaces: its PolicyReports and alerts against a
//! cluster scan's (mock API server, mock Alertmanager), and the CLI's sink failures.

#[path = "support/cluster_data.rs"]
mod cluster_data;
#[path = "support/mock_api.rs"]
mod mock_api;

use std::collections::BTreeMap;
use std::path::Path;

use cluster_data::*;
use egress_auditor::finding::{Finding, Severity};
use egress_auditor::sinks::alertmanager::{self, ALERT_NAME};
use egress_auditor::sinks::policyreport::{self, REPORT_NAME, SOURCE_LABEL};
use egress_auditor::sinks::settings::SinkSettings;
use egress_auditor::snapshot::{Origin, ScanScope};
use mock_api::{MockApi, MockReceiver};
use serde_json::{json, Value};

fn node(name: &str) -> Origin {
    Origin::Node { node: name.into() }
}

fn tampered(namespace: &str, pod: &str) -> Finding {
    Finding {
        rule: "iptables-tampered".into(),
        severity: Severity::Critical,
        kind: "Pod".into(),
        namespace: Some(namespace.into()),
        name: pod.into(),
        container: None,
        message: format!("{pod}: ISTIO_OUTPUT returns before the redirect"),
        evidence: json!({"netns": "test"}),
    }
}

fn all() -> ScanScope {
    ScanScope {
        all_namespaces: true,
        namespaces: Default::default(),
    }
}

fn rules(report: &Value) -> Vec<String> {
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
async fn scan_and_node_reports_never_replace_each_other() {
    let mock = MockApi::start().await;
    mock.apply_all(repo_objects());
    let dir = tempfile::tempdir().unwrap();
    let api = api_for(&mock, dir.path(), quick_retry()).await;
    let now = jiff::Timestamp::now();

    let scan = scan(&api, &[], 100).await.expect("cluster scan");
    let namespace = scan
        .findings
        .iter()
        .find_map(|f| f.namespace.clone())
        .expect("the repo objects give namespaced findings");
    let node_name = "egress-guard-node-node-a".to_string();

    // The node agent reports first, into a namespace the cluster scan covers.
    let stats = policyreport::publish(
        &api,
        &[tampered(&namespace, "web-7")],
        &all(),
        &node("node-a"),
        now,
    )
    .await
    .expect("node reports");
    assert_eq!(stats.created, 1);
    let node_report = mock
        .object("policyreports", Some(&namespace), &node_name)
        .expect("node report");
    assert_eq!(node_report["metadata"]["labels"][SOURCE_LABEL], "node");
    assert_eq!(rules(&node_report), ["iptables-tampered web-7".to_string()]);

    // A whole-cluster scan replaces its own reports twice (the second with nothing found, so a
    // report that listed node reports as its own would empty them).
    policyreport::publish(&api, &scan.findings, &scan.scope, &Origin::Scan, now)
        .await
        .expect("scan reports");
    let scan_report = mock
        .object("policyreports", Some(&namespace), REPORT_NAME)
        .expect("scan report");
    assert!(!rules(&scan_report).is_empty());
    assert_eq!(scan_report["metadata"]["labels"][SOURCE_LABEL], "scan");
    policyreport::publish(&api, &[], &scan.scope, &Origin::Scan, now)
        .await
        .expect("scan reports, all fixed");
    let emptied = mock
        .object("policyreports", Some(&namespace), REPORT_NAME)
        .expect("scan report");
    assert!(rules(&emptied).is_empty());
    assert_eq!(
        mock.object("policyreports", Some(&namespace), &node_name),
        Some(node_report.clone()),
        "the cluster scan changed the node's report"
    );

    // Another node's pass touches neither report.
    policyreport::publish(&api, &[], &all(), &node("node-b"), now)
        .await
        .expect("node-b reports");
    assert_eq!(
        mock.object("policyreports", Some(&namespace), &node_name),
        Some(node_report)
    );
    assert!(mock
        .object(
            "policyreports",
            Some(&namespace),
            "egress-guard-node-node-b"
        )
        .is_none());

    // node-a's bypass is fixed: its report empties (even though no pod of that namespace was
    // judged this time), the scan's report stays as it was.
    policyreport::publish(&api, &[], &all(), &node("node-a"), now)
        .await
        .expect("node reports, fixed");
    let fixed = mock
        .object("policyreports", Some(&namespace), &node_name)
        .expect("node report");
    assert!(rules(&fixed).is_empty(), "{fixed:#}");
    assert_eq!(
        mock.object("policyreports", Some(&namespace), REPORT_NAME),
        Some(emptied)
    );
}

fn host_network(namespace: &str, pod: &str) -> Finding {
    Finding {
        rule: "host-network".into(),
        severity: Severity::High,
        kind: "Pod".into(),
        namespace: Some(namespace.into()),
        name: pod.into(),
        container: None,
        message: format!("{pod} uses the host network"),
        evidence: json!({"hostNetwork": true}),
    }
}

fn active(am: &MockReceiver, now: jiff::Timestamp) -> Vec<BTreeMap<String, String>> {
    am.alerts()
        .into_iter()
        .filter(|a| a.ends_at.parse::<jiff::Timestamp>().is_ok_and(|t| t > now))
        .map(|a| a.labels)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_and_node_alerts_resolve_only_their_own() {
    egress_auditor::kube_client::ensure_crypto_provider();
    let am = MockReceiver::start().await;
    let http = reqwest::Client::new();
    let settings = |origin: Origin| SinkSettings {
        origin,
        ..SinkSettings::default()
    };
    let t0 = jiff::Timestamp::now();
    let publish = |findings: Vec<Finding>, origin: Origin| {
        let http = http.clone();
        let url = am.url();
        let s = settings(origin);
        async move {
            alertmanager::publish(&http, &url, &findings, &all(), &s, jiff::Timestamp::now())
                .await
                .expect("alerts posted")
        }
    };
    publish(vec![host_network("shop", "web-1")], Origin::Scan).await;
    publish(vec![tampered("shop", "web-2")], node("node-a")).await;
    publish(vec![tampered("shop", "web-3")], node("node-b")).await;
    assert_eq!(active(&am, t0).len(), 3);

    // A whole-cluster scan that finds nothing resolves its own alert only.
    let stats = publish(vec![], Origin::Scan).await;
    assert_eq!(stats.resolved, 1);
    let now = jiff::Timestamp::now();
    let left = active(&am, now);
    assert_eq!(left.len(), 2, "{left:#?}");
    assert!(left
        .iter()
        .all(|l| l["source"] == "node" && l["rule"] == "iptables-tampered"));
    assert!(left.iter().all(|l| l["alertname"] == ALERT_NAME));

    // node-a's pass with nothing found resolves node-a's alert, not node-b's.
    let stats = publish(vec![], node("node-a")).await;
    assert_eq!(stats.resolved, 1);
    let left = active(&am, jiff::Timestamp::now());
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(left[0]["node"], "node-b");
    assert_eq!(left[0]["pod"], "web-3");

    // A node finding firing again keeps the same identity (no duplicate alert).
    let stats = publish(vec![tampered("shop", "web-3")], node("node-b")).await;
    assert_eq!((stats.firing, stats.resolved), (1, 0));
    assert_eq!(active(&am, jiff::Timestamp::now()).len(), 1);
}

const BIN: &str = env!("CARGO_BIN_EXE_egress-auditor");

fn pods_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/netfilter/pod-sidecar.yaml")
}

/// The node command needs a rules tool on PATH even when there is no namespace to read.
fn no_tools() -> bool {
    let none = egress_auditor::node::inspect::Toolset::detect().is_empty();
    if none {
        eprintln!("skipping: neither iptables-save nor nft is on PATH");
    }
    none
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sink_failure_exits_3_with_the_report_printed() {
    if no_tools() {
        return;
    }
    let empty = tempfile::tempdir().unwrap();
    let broken = MockReceiver::start().await;
    broken.fail_with(Some(503));
    let working = MockReceiver::start().await;
    let out = tokio::process::Command::new(BIN)
        .arg("node")
        .arg("--pods")
        .arg(pods_file())
        .args(["--node-name", "node-a", "--no-proc", "--netns-dir"])
        .arg(empty.path())
        .args(["--sink-timeout", "1s", "--sink"])
        .arg(format!("webhook={}/broken", broken.url()))
        .arg("--sink")
        .arg(format!("webhook={}/working", working.url()))
        .env_remove("NODE_NAME")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("the report is printed");
    assert_eq!(doc["summary"]["input"]["pods"], 1);
    assert!(stderr.contains("sink webhook="), "{stderr}");
    assert!(broken.attempts() >= 1);
    let posts = working.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].1["summary"]["findings"],
        doc["summary"]["findings"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sinks_need_a_node_name() {
    if no_tools() {
        return;
    }
    let out = tokio::process::Command::new(BIN)
        .arg("node")
        .arg("--pods")
        .arg(pods_file())
        .args(["--no-proc", "--sink", "policyreport"])
        .env_remove("NODE_NAME")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node-name"));
}
