//! Shared by the controller's integration tests: where things are, and a gateway that runs the
//! real `egress_filter.wasm` (through the proxy-wasm host) with a compiled configuration.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egress_sim::replay::{self, Decision, ReplayItem};
use egress_sim::{Deployment, Host, HostOptions, PluginConfig, VmConfig};
use serde_json::{Map, Value};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn examples() -> PathBuf {
    repo_root().join("examples/policies")
}

/// The release `egress_filter.wasm` of this workspace (built by the test command first).
pub fn egress_filter_wasm() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let path = target.join("wasm32-wasip1/release/egress_filter.wasm");
    assert!(
        path.exists(),
        "{} not found: build it with `cargo build --release --target wasm32-wasip1 -p egress-filter`",
        path.display()
    );
    path
}

/// The egress gateway with one HTTP and one network plugin holding `config`.
pub struct Gateway {
    deployment: Deployment,
}

/// What the gateway did with one request, and the filter's decision line.
#[derive(Debug, Clone)]
pub struct Seen {
    pub decision: Decision,
    pub line: Map<String, Value>,
}

impl Seen {
    pub fn field(&self, name: &str) -> &str {
        self.line.get(name).and_then(Value::as_str).unwrap_or("")
    }
}

impl Gateway {
    /// Fails (with the filter's logs) when the filter refuses the configuration.
    pub fn new(config: &[u8]) -> Gateway {
        let host = Host::from_file(
            &egress_filter_wasm(),
            VmConfig::default(),
            HostOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let deployment = host
            .start(
                vec![
                    PluginConfig::http("egress-filter-http", "egress-filter-http", config),
                    PluginConfig::network("egress-filter-network", "egress-filter-network", config),
                ],
                1,
            )
            .unwrap_or_else(|e| {
                panic!("the filter refused the configuration: {e}: {:?}", e.logs())
            });
        Gateway { deployment }
    }

    /// Runs requests in `egress-sim replay` form (JSON lines).
    pub fn run(&mut self, requests: &str) -> Vec<(String, Seen)> {
        let items: Vec<ReplayItem> =
            replay::parse_requests(requests).unwrap_or_else(|e| panic!("{e}"));
        let results = replay::run(&mut self.deployment, &items).unwrap_or_else(|e| panic!("{e}"));
        results
            .into_iter()
            .map(|r| {
                let line = replay::decision_log(&r.logs).unwrap_or_default();
                (
                    r.id.clone(),
                    Seen {
                        decision: r.decision,
                        line,
                    },
                )
            })
            .collect()
    }

    pub fn one(&mut self, request: &str) -> Seen {
        self.run(request).remove(0).1
    }
}

/// An HTTP request from a workload of `namespace` in `egress-sim replay` form.
pub fn http_request(id: &str, namespace: &str, method: &str, host: &str, path: &str) -> String {
    serde_json::json!({
        "id": id,
        "source": {"principal": format!("cluster.local/ns/{namespace}/sa/default")},
        "http": {"method": method, "authority": host, "path": path},
    })
    .to_string()
}

/// Polls `check` until it returns `Some`, or panics with `what` and the last state seen.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) if started.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
