//! Figures for docs/BENCHMARKS.md: a 50,000-pod live scan through the mock API server, with the
//! real binary (`scan --cluster`). Ignored by default (it takes a while and measures, it does
//! not assert speed):
//!
//! `cargo test -p egress-auditor --release --test cluster_scale -- --ignored --nocapture`

#[path = "support/cluster_data.rs"]
mod cluster_data;
use kube_mock as mock_api;

use std::time::Instant;

use axum::http::Method;
use cluster_data::repo_objects;
use mock_api::MockApi;
use serde_json::{json, Value};

const PODS: usize = 50_000;
const NAMESPACES: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with --ignored"]
async fn scan_50k_pods_through_the_mock() {
    let objects = repo_objects();
    let templates: Vec<Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Pod" && o["metadata"]["namespace"] != "istio-system")
        .cloned()
        .collect();
    let mock = MockApi::start().await;
    // Cluster-wide objects as in the repo set, then PODS pods spread over NAMESPACES namespaces.
    mock.apply_all(
        objects
            .iter()
            .filter(|o| o["kind"] != "Pod" || o["metadata"]["namespace"] == "istio-system")
            .cloned(),
    );
    for n in 0..NAMESPACES {
        mock.apply(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": format!("team-{n}"), "labels": {"istio-injection": "enabled"}}}));
    }
    for i in 0..PODS {
        let mut pod = templates[i % templates.len()].clone();
        pod["metadata"]["name"] = json!(format!("pod-{i}"));
        pod["metadata"]["namespace"] = json!(format!("team-{}", i % NAMESPACES));
        mock.apply(pod);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = mock.write_kubeconfig(dir.path());
    mock.clear_requests();

    let bin = env!("CARGO_BIN_EXE_egress-auditor");
    let time = std::path::Path::new("/usr/bin/time");
    let mut cmd = if time.is_file() {
        let mut c = tokio::process::Command::new(time);
        c.arg("-f").arg("peak_rss_kb=%M").arg(bin);
        c
    } else {
        tokio::process::Command::new(bin)
    };
    cmd.args(["scan", "--cluster", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--format", "json", "--page-size", "500"]);
    let started = Instant::now();
    let out = cmd.output().await.expect("run scan");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(doc["summary"]["input"]["workloads"], PODS + 1);
    let requests = mock.requests();
    let pod_pages = mock.requests_matching(&Method::GET, "/api/v1/pods").len();
    let peak = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kb="))
        .map(|kb| {
            format!(
                "{:.0} MiB",
                kb.trim().parse::<f64>().unwrap_or(0.0) / 1024.0
            )
        })
        .unwrap_or_else(|| "n/a (/usr/bin/time missing)".into());
    println!(
        "live scan: {PODS} pods in {NAMESPACES} namespaces: {:.2} s wall, peak RSS {peak}, {} API requests ({pod_pages} pod pages of 500), {} findings",
        elapsed.as_secs_f64(),
        requests.len(),
        doc["findings"].as_array().map_or(0, Vec::len),
    );
}
