//! Objects for the cluster-mode tests: the in-repo set (`tests/data/cluster/objects.json`) and,
//! when the shared fixtures are present, pods built from Istio's injection golden files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use egress_auditor::checks::live::LiveCheckOptions;
use egress_auditor::checks::CheckOptions;
use egress_auditor::cli::pipeline::{self, ClusterScan};
use egress_auditor::finding::Finding;
use egress_auditor::kube_client::{self, ApiContext, ClusterError, ConnectOptions, RetryPolicy};
use egress_auditor::metrics::Metrics;
use egress_auditor::rules::{EGRESS_FILTER_MISSING, SCAN_INCOMPLETE, SIDECAR_NOT_RUNNING};
use egress_auditor::sources::cluster::ClusterScanOptions;
use serde_json::{json, Value};

use kube_mock::MockApi;

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cluster")
}

pub fn objects_path() -> PathBuf {
    data_dir().join("objects.json")
}

/// The items of `objects.json`.
pub fn repo_objects() -> Vec<Value> {
    let text = std::fs::read_to_string(objects_path()).expect("read objects.json");
    let list: Value = serde_json::from_str(&text).expect("objects.json is JSON");
    list["items"].as_array().expect("items").clone()
}

/// The shared fixtures folder, or `None` (the test then skips).
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("EGRESS_GUARD_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"),
    };
    dir.is_dir().then_some(dir)
}

fn pod_from_template(name: &str, namespace: &str, template: &Value) -> Value {
    let mut metadata = template["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(namespace);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

/// Pods built from every `*.injected` golden file of Istio's injector (Pods as they are;
/// controllers' pod templates as Pods), all placed in `namespace`. `None` without fixtures.
pub fn injected_fixture_pods(namespace: &str) -> Option<Vec<Value>> {
    let dir = fixtures_dir()?.join("istio/inject");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "injected"))
        .collect();
    entries.sort();
    let mut pods = Vec::new();
    for path in entries {
        let text = std::fs::read_to_string(&path).ok()?;
        let stem: String = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
            .trim_end_matches(".injected")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        for (i, (_, doc)) in egress_auditor::sources::files::split_yaml_documents(&text)
            .into_iter()
            .enumerate()
        {
            let Ok(obj) = serde_saphyr::from_str::<Value>(doc) else {
                continue;
            };
            let name = format!("{stem}-{i}");
            let pod = match obj["kind"].as_str() {
                Some("Pod") => {
                    let mut p = obj.clone();
                    p["metadata"]["name"] = json!(name);
                    p["metadata"]["namespace"] = json!(namespace);
                    p
                }
                Some("CronJob") => pod_from_template(
                    &name,
                    namespace,
                    &obj["spec"]["jobTemplate"]["spec"]["template"],
                ),
                _ if obj["spec"]["template"]["spec"].is_object() => {
                    pod_from_template(&name, namespace, &obj["spec"]["template"])
                }
                _ => continue,
            };
            if pod["spec"].is_object() {
                pods.push(pod);
            }
        }
    }
    Some(pods)
}

/// Writes objects as a `kind: List` JSON file.
pub fn write_list(path: &Path, items: &[Value]) {
    let doc = json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(path, serde_json::to_string_pretty(&doc).expect("json")).expect("write list");
}

/// Findings of the rules file mode also runs (drops live-only rules and scan-incomplete).
pub fn file_mode_rules(findings: &[Finding]) -> Vec<Finding> {
    findings
        .iter()
        .filter(|f| {
            ![SIDECAR_NOT_RUNNING, EGRESS_FILTER_MISSING, SCAN_INCOMPLETE]
                .contains(&f.rule.as_str())
        })
        .cloned()
        .collect()
}

/// Fast retries so fault tests finish quickly.
pub fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
        deadline: Duration::from_secs(20),
    }
}

/// A client for the mock.
pub async fn api_for(mock: &MockApi, dir: &Path, retry: RetryPolicy) -> ApiContext {
    let kubeconfig = mock.write_kubeconfig(dir);
    let client = kube_client::connect(&ConnectOptions {
        kubeconfig: Some(kubeconfig),
        context: None,
    })
    .await
    .expect("client for the mock");
    ApiContext::new(client, retry, Metrics::new())
}

pub async fn scan(
    api: &ApiContext,
    namespaces: &[&str],
    page_size: u32,
) -> Result<ClusterScan, ClusterError> {
    let opts = ClusterScanOptions {
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        page_size,
    };
    pipeline::scan_cluster(
        api,
        &opts,
        &CheckOptions::default(),
        &LiveCheckOptions::default(),
    )
    .await
}

/// The cluster judged the other way: every pod read into one snapshot, then every check over it
/// (what `watch` does). `scan_cluster` judges page by page and must give the same findings.
pub async fn judge_whole_snapshot(
    api: &ApiContext,
    page_size: u32,
) -> Result<ClusterScan, ClusterError> {
    let opts = ClusterScanOptions {
        namespaces: Vec::new(),
        page_size,
    };
    let read = egress_auditor::sources::cluster::read_snapshot(api, &opts).await?;
    Ok(pipeline::judge(
        &read.snapshot,
        &read.unreadable,
        read.scope,
        &CheckOptions::default(),
        &LiveCheckOptions::default(),
    ))
}

/// Short identities of findings, for readable assertions.
pub fn ids(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .map(|f| {
            format!(
                "{} {}/{}/{}",
                f.rule,
                f.kind,
                f.namespace.as_deref().unwrap_or("-"),
                f.name
            )
        })
        .collect()
}
