//! The Alertmanager sink against a real Alertmanager (Debian package `prometheus-alertmanager`)
//! started on loopback: alerts are posted, read back through its API v2, and resolved once the
//! finding is fixed. Skips when the binary is not installed.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use egress_auditor::finding::{Finding, Severity};
use egress_auditor::sinks::alertmanager::{self, ALERT_NAME};
use egress_auditor::sinks::settings::SinkSettings;
use egress_auditor::snapshot::ScanScope;
use serde_json::{json, Value};

fn alertmanager_binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("ALERTMANAGER_BIN").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/prometheus-alertmanager")),
        Some(PathBuf::from("/usr/bin/alertmanager")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_alertmanager(bin: &PathBuf) -> Alertmanager {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: blackhole\n  group_wait: 1h\nreceivers:\n- name: blackhole\n",
    )
    .expect("write config");
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start alertmanager");
    let url = format!("http://127.0.0.1:{port}");
    let am = Alertmanager {
        child,
        url,
        _dir: dir,
    };
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{}/-/ready", am.url)).send().await {
            if r.status().is_success() {
                return am;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "alertmanager did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn finding(name: &str, rule: &str) -> Finding {
    Finding {
        rule: rule.into(),
        severity: Severity::High,
        kind: "Pod".into(),
        namespace: Some("shop".into()),
        name: name.into(),
        container: None,
        message: format!("{rule} on {name}"),
        evidence: json!({"why": "test"}),
    }
}

async fn active_alerts(url: &str) -> Vec<Value> {
    let body = reqwest::Client::new()
        .get(format!("{url}/api/v2/alerts?active=true"))
        .send()
        .await
        .expect("GET alerts")
        .text()
        .await
        .expect("body");
    let all: Vec<Value> = serde_json::from_str(&body).expect("alerts JSON");
    all.into_iter()
        .filter(|a| a["labels"]["alertname"] == ALERT_NAME)
        .collect()
}

fn pods(alerts: &[Value]) -> Vec<String> {
    let mut p: Vec<String> = alerts
        .iter()
        .map(|a| a["labels"]["pod"].as_str().unwrap_or("").to_string())
        .collect();
    p.sort();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_alertmanager_fires_and_resolves() {
    let Some(bin) = alertmanager_binary() else {
        eprintln!("skipped: prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)");
        return;
    };
    egress_auditor::kube_client::ensure_crypto_provider();
    let am = start_alertmanager(&bin).await;
    let http = reqwest::Client::new();
    let settings = SinkSettings {
        alert_ttl: Duration::from_secs(2 * 3600),
        ..SinkSettings::default()
    };
    let scope = ScanScope {
        all_namespaces: true,
        namespaces: Default::default(),
    };

    let first = vec![
        finding("web-1", "host-network"),
        finding("web-2", "sidecar-missing"),
    ];
    let stats = alertmanager::publish(
        &http,
        &am.url,
        &first,
        &scope,
        &settings,
        jiff::Timestamp::now(),
    )
    .await
    .expect("post alerts");
    assert_eq!(stats.firing, 2);
    assert_eq!(stats.resolved, 0);
    let alerts = active_alerts(&am.url).await;
    assert_eq!(pods(&alerts), vec!["web-1", "web-2"]);
    let web2 = alerts
        .iter()
        .find(|a| a["labels"]["pod"] == "web-2")
        .unwrap();
    assert_eq!(web2["labels"]["rule"], "sidecar-missing");
    assert_eq!(web2["labels"]["severity"], "high");
    assert_eq!(web2["labels"]["namespace"], "shop");
    assert_eq!(web2["status"]["state"], "active");
    let ends: jiff::Timestamp = web2["endsAt"].as_str().unwrap().parse().unwrap();
    assert!(
        ends > jiff::Timestamp::now() + jiff::SignedDuration::from_mins(110),
        "endsAt {ends}"
    );

    // Run again with web-2 fixed: its alert resolves, web-1's keeps firing.
    let second = vec![finding("web-1", "host-network")];
    let stats = alertmanager::publish(
        &http,
        &am.url,
        &second,
        &scope,
        &settings,
        jiff::Timestamp::now(),
    )
    .await
    .expect("post alerts");
    assert_eq!(stats.resolved, 1);
    // Alertmanager drops an ended alert from the active list once its endsAt has passed.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let alerts = active_alerts(&am.url).await;
    assert_eq!(pods(&alerts), vec!["web-1"]);

    // And nothing left once everything is fixed.
    let stats = alertmanager::publish(
        &http,
        &am.url,
        &[],
        &scope,
        &settings,
        jiff::Timestamp::now(),
    )
    .await
    .expect("post alerts");
    assert_eq!(stats.resolved, 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(active_alerts(&am.url).await.is_empty());
}
