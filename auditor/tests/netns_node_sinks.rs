//! `egress-auditor node --sink ...` end to end: the real binary inspects real network namespaces,
//! reads its pods from the mock API server and delivers to PolicyReports, Events and a webhook;
//! a cluster scan in between leaves the node's report alone, and a fixed namespace empties it.
//!
//! Needs root, iproute2, iptables and nftables; skips with a printed reason otherwise.

use kube_mock as mock_api;
mod netns_support;

use std::path::Path;
use std::process::Output;

use egress_auditor::sinks::events::REPORTING_CONTROLLER;
use egress_auditor::sinks::policyreport::{REPORT_NAME, SOURCE_LABEL};
use mock_api::{MockApi, MockReceiver};
use netns_support::{data, iptables_backends, load_iptables, skip, TestNetns};
use serde_json::{json, Value};

const NODE_REPORT: &str = "egress-guard-node-node-a";

fn pod(name: &str, node: &str) -> Value {
    let text = std::fs::read_to_string(data("pod-sidecar.yaml")).unwrap();
    let mut pod: Value = serde_saphyr::from_str(&text).expect("pod-sidecar.yaml");
    pod["metadata"]["name"] = json!(name);
    pod["spec"]["nodeName"] = json!(node);
    pod
}

async fn run(args: Vec<String>) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_egress-auditor"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("NODE_NAME")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run egress-auditor")
}

fn node_args(kubeconfig: &Path, webhook: &str) -> Vec<String> {
    [
        "node",
        "--node-name",
        "node-a",
        "--no-proc",
        "--netns-dir",
        "/run/netns",
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--sink",
        "policyreport",
        "--sink",
        "events",
        "--sink",
        &format!("webhook={webhook}/hook"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn rules_for(report: &Value, pod: &str) -> Vec<String> {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["resources"][0]["name"] == pod)
        .map(|r| r["rule"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_findings_reach_policyreports_events_and_webhook() {
    if skip(
        "node_findings_reach_policyreports_events_and_webhook",
        &["ip", "nft", "iptables-legacy-save"],
    ) {
        return;
    }
    let Some((variant, _)) = iptables_backends().into_iter().next() else {
        eprintln!("skipping: no iptables backend");
        return;
    };
    let iptables = format!("iptables-{variant}");
    let here = TestNetns::new("sinks");
    load_iptables(&here, variant);
    here.exec(&[
        &iptables,
        "-t",
        "nat",
        "-I",
        "ISTIO_OUTPUT",
        "1",
        "-j",
        "RETURN",
    ]);

    let api = MockApi::start().await;
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    api.apply(pod(&here.name, "node-a"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let hook = MockReceiver::start().await;

    // Pass 1: the tampered namespace is reported everywhere.
    let out = run(node_args(&kubeconfig, &hook.url())).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(out.status.code(), Some(1), "{stderr}\n{doc:#}");
    let printed: Vec<&Value> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["name"] == here.name.as_str())
        .collect();
    assert_eq!(printed.len(), 1, "{doc:#}");
    assert_eq!(printed[0]["rule"], "iptables-tampered");

    let report = api
        .object("policyreports", Some("shop"), NODE_REPORT)
        .unwrap_or_else(|| panic!("no node report; stderr: {stderr}"));
    assert_eq!(report["metadata"]["labels"][SOURCE_LABEL], "node");
    assert_eq!(rules_for(&report, &here.name), ["iptables-tampered"]);
    assert!(
        api.object("policyreports", Some("shop"), REPORT_NAME)
            .is_none(),
        "the node agent wrote the cluster scan's report"
    );
    assert!(
        api.objects("clusterpolicyreports").is_empty(),
        "the node agent wrote a ClusterPolicyReport"
    );

    let events: Vec<Value> = api
        .objects("events")
        .into_iter()
        .filter(|e| e["regarding"]["name"] == here.name.as_str())
        .collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["reason"], "IptablesTampered");
    assert_eq!(events[0]["reportingController"], REPORTING_CONTROLLER);
    assert_eq!(events[0]["metadata"]["namespace"], "shop");

    let posts = hook.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].0, "/hook");
    assert_eq!(posts[0].1["findings"], doc["findings"]);

    // A cluster scan replaces its own report in shop and leaves the node's alone.
    let scan = run(vec![
        "scan".into(),
        "--cluster".into(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--sink".into(),
        "policyreport".into(),
    ])
    .await;
    assert!(
        matches!(scan.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&scan.stderr)
    );
    let scan_report = api
        .object("policyreports", Some("shop"), REPORT_NAME)
        .expect("the scan's own report");
    assert!(rules_for(&scan_report, &here.name)
        .iter()
        .all(|r| r != "iptables-tampered"));
    let after_scan = api
        .object("policyreports", Some("shop"), NODE_REPORT)
        .expect("the node report survives the cluster scan");
    assert_eq!(
        after_scan, report,
        "the cluster scan changed the node report"
    );

    // Pass 2: the tamper is undone; the node's report empties, no new Event, the webhook hears.
    here.exec(&[&iptables, "-t", "nat", "-D", "ISTIO_OUTPUT", "1"]);
    let out = run(node_args(&kubeconfig, &hook.url())).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fixed = api
        .object("policyreports", Some("shop"), NODE_REPORT)
        .expect("node report");
    assert!(rules_for(&fixed, &here.name).is_empty(), "{fixed:#}");
    assert_eq!(fixed["summary"]["fail"], 0);
    assert_eq!(
        api.object("policyreports", Some("shop"), REPORT_NAME),
        Some(scan_report),
        "the node agent changed the cluster scan's report"
    );
    assert_eq!(hook.posts().len(), 2);
}
