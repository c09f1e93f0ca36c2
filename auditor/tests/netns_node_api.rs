//! `egress-auditor node` reading its pods from the API server (the mock in `support/`): it lists
//! only this node's pods (`fieldSelector=spec.nodeName=NODE`), matches them to the namespaces it
//! finds and judges them.
//!
//! Needs root, iproute2, iptables and nftables; skips with a printed reason otherwise.

use kube_mock as mock_api;
mod netns_support;

use mock_api::MockApi;
use netns_support::{data, iptables_backends, load_iptables, skip, TestNetns};
use serde_json::{json, Value};

fn pod(name: &str, node: &str) -> Value {
    let text = std::fs::read_to_string(data("pod-sidecar.yaml")).unwrap();
    let mut pod: Value = serde_saphyr::from_str(&text).expect("pod-sidecar.yaml");
    pod["metadata"]["name"] = json!(name);
    pod["spec"]["nodeName"] = json!(node);
    pod
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_lists_its_pods_from_the_api_server() {
    if skip(
        "node_lists_its_pods_from_the_api_server",
        &["ip", "nft", "iptables-legacy-save"],
    ) {
        return;
    }
    let Some((variant, _)) = iptables_backends().into_iter().next() else {
        eprintln!("skipping: no iptables backend");
        return;
    };
    let here = TestNetns::new("api");
    load_iptables(&here, variant);
    here.exec(&[
        &format!("iptables-{variant}"),
        "-t",
        "nat",
        "-I",
        "ISTIO_OUTPUT",
        "1",
        "-j",
        "RETURN",
    ]);
    // A namespace whose pod runs on another node: not this agent's to judge.
    let elsewhere = TestNetns::new("api");
    load_iptables(&elsewhere, variant);
    elsewhere.exec(&[&format!("iptables-{variant}"), "-t", "nat", "-F"]);

    let api = MockApi::start().await;
    // Named namespaces carry no pod UID (and the API server assigns its own): pods are matched by name.
    api.apply(pod(&here.name, "node-a"));
    api.apply(pod(&elsewhere.name, "node-b"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());

    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_egress-auditor"))
            .args([
                "node",
                "--node-name",
                "node-a",
                "--no-proc",
                "--netns-dir",
                "/run/netns",
                "--kubeconfig",
            ])
            .arg(&kubeconfig)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "{doc:#}");

    let lists = api.requests_matching(&axum::http::Method::GET, "/api/v1/pods");
    assert!(!lists.is_empty(), "no pod list request");
    for r in &lists {
        assert_eq!(
            r.query_param("fieldSelector").as_deref(),
            Some("spec.nodeName=node-a")
        );
    }

    let findings: Vec<&Value> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["name"] == here.name.as_str() || f["name"] == elsewhere.name.as_str())
        .collect();
    assert_eq!(findings.len(), 1, "{doc:#}");
    assert_eq!(findings[0]["name"], here.name.as_str());
    assert_eq!(findings[0]["rule"], "iptables-tampered");
    let details = doc["summary"]["input"]["details"].as_array().unwrap();
    let status = |ns: &TestNetns| {
        details
            .iter()
            .find(|d| d["path"] == ns.path().display().to_string())
            .map(|d| d["status"].clone())
    };
    assert_eq!(status(&here), Some(json!("judged")));
    assert_eq!(status(&elsewhere), Some(json!("noPod")));
}
