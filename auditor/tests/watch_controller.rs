//! `watch` mode against the mock API server: the controller lists, watches, re-judges after a
//! MODIFIED event, and the change shows in /metrics and in the sinks without a restart.

#[path = "support/cluster_data.rs"]
mod cluster_data;
#[path = "support/mock_api.rs"]
mod mock_api;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::Method;
use cluster_data::*;
use egress_auditor::kube_client::ConnectOptions;
use egress_auditor::sinks::delivery::SinkSpec;
use egress_auditor::watch::{self, WatchOptions};
use mock_api::{MockApi, MockReceiver};
use serde_json::{json, Value};

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let client = reqwest_client();
    let resp = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("GET controller endpoint");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

fn reqwest_client() -> reqwest::Client {
    egress_auditor::kube_client::ensure_crypto_provider();
    reqwest::Client::new()
}

/// Polls until `check` holds, or panics with what was last seen.
async fn eventually<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> (bool, T),
) -> T {
    let started = Instant::now();
    loop {
        let (ok, seen) = check().await;
        if ok {
            return seen;
        }
        if started.elapsed() > timeout {
            panic!("timed out waiting for {what}; last seen: {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

fn webhook_names(doc: &Value) -> Vec<String> {
    doc["findings"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    format!(
                        "{} {}",
                        f["rule"].as_str().unwrap_or(""),
                        f["name"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_rejudges_after_a_modified_pod_and_reports_without_restart() {
    let mock = MockApi::start().await;
    mock.apply_all(repo_objects());
    let hook = MockReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = mock.write_kubeconfig(dir.path());
    let handle = watch::start(WatchOptions {
        connect: ConnectOptions {
            kubeconfig: Some(kubeconfig),
            context: None,
        },
        sinks: vec![
            SinkSpec::Webhook(format!("{}/findings", hook.url())),
            SinkSpec::PolicyReport,
        ],
        listen: "127.0.0.1:0".parse().unwrap(),
        debounce: Duration::from_millis(100),
        resync: Duration::from_secs(600),
        retry: quick_retry(),
        page_size: 3,
        ..WatchOptions::default()
    })
    .await
    .expect("controller starts");
    let addr = handle.addr;

    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    let host_network = r#"egress_auditor_findings{rule="host-network",severity="high"}"#;
    let metrics = eventually("the first judgement", Duration::from_secs(20), async || {
        let (ready, _) = http_get(addr, "/readyz").await;
        let (_, text) = http_get(addr, "/metrics").await;
        (ready == 200 && metric(&text, host_network).is_some(), text)
    })
    .await;
    assert_eq!(metric(&metrics, host_network), Some(1.0), "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            r#"egress_auditor_findings{rule="sidecar-not-running",severity="high"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, r#"egress_auditor_scans_total{result="success"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert!(handle.is_ready());
    let first = hook.posts();
    assert_eq!(first.len(), 1);
    assert!(!webhook_names(&first[0].1).contains(&"host-network web-1".to_string()));
    let shop_report = mock
        .object("policyreports", Some("shop"), "egress-auditor")
        .expect("shop report");
    assert_eq!(shop_report["summary"]["fail"], 3);

    // The watches are open: a pod gains hostNetwork (a MODIFIED event, no new list).
    let lists_before = mock.requests_matching(&Method::GET, "/api/v1/pods").len();
    let mut web1 = mock.object("pods", Some("shop"), "web-1").expect("web-1");
    web1["spec"]["hostNetwork"] = json!(true);
    mock.apply(web1);

    let metrics = eventually(
        "host-network on web-1 in /metrics",
        Duration::from_secs(20),
        async || {
            let (_, text) = http_get(addr, "/metrics").await;
            (metric(&text, host_network) == Some(2.0), text)
        },
    )
    .await;
    assert_eq!(
        metric(&metrics, r#"egress_auditor_scans_total{result="success"}"#),
        Some(2.0),
        "{metrics}"
    );
    let posts = eventually(
        "a second webhook delivery",
        Duration::from_secs(10),
        async || {
            let p = hook.posts();
            (p.len() == 2, p)
        },
    )
    .await;
    assert!(
        webhook_names(&posts[1].1).contains(&"host-network web-1".to_string()),
        "{:#?}",
        posts[1].1
    );
    let shop_report = mock
        .object("policyreports", Some("shop"), "egress-auditor")
        .expect("shop report");
    assert_eq!(shop_report["summary"]["fail"], 4, "{shop_report:#}");
    assert!(handle
        .findings()
        .iter()
        .any(|f| f.rule == "host-network" && f.name == "web-1"));
    // The change arrived over the watch, not by listing again.
    let watches = mock
        .requests_matching(&Method::GET, "/api/v1/pods")
        .into_iter()
        .filter(|r| r.query_param("watch").is_some())
        .count();
    assert!(watches >= 1);
    let lists_after = mock
        .requests_matching(&Method::GET, "/api/v1/pods")
        .into_iter()
        .filter(|r| r.query_param("watch").is_none())
        .count();
    assert!(
        lists_after <= lists_before,
        "listed again: {lists_before} -> {lists_after}"
    );

    // Fixing it (the pod goes away) drops the count again.
    assert!(mock.delete("pods", Some("shop"), "web-1"));
    eventually(
        "host-network back to 1",
        Duration::from_secs(20),
        async || {
            let (_, text) = http_get(addr, "/metrics").await;
            (metric(&text, host_network) == Some(1.0), text)
        },
    )
    .await;
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_counts_sink_failures_and_api_errors() {
    let mock = MockApi::start().await;
    mock.apply_all(repo_objects());
    mock.inject(mock_api::Fault::new(
        "/apis/networking.k8s.io/v1/networkpolicies",
        1,
        mock_api::FaultAction::Status(500),
    ));
    let hook = MockReceiver::start().await;
    hook.fail_with(Some(400));
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = watch::start(WatchOptions {
        connect: ConnectOptions {
            kubeconfig: Some(mock.write_kubeconfig(dir.path())),
            context: None,
        },
        sinks: vec![SinkSpec::Webhook(format!("{}/findings", hook.url()))],
        listen: "127.0.0.1:0".parse().unwrap(),
        debounce: Duration::from_millis(50),
        retry: quick_retry(),
        ..WatchOptions::default()
    })
    .await
    .expect("controller starts");
    let addr = handle.addr;
    let text = eventually(
        "a failed delivery counted",
        Duration::from_secs(30),
        async || {
            let (_, text) = http_get(addr, "/metrics").await;
            (
                metric(
                    &text,
                    r#"egress_auditor_sink_failures_total{sink="webhook"}"#,
                )
                .is_some(),
                text,
            )
        },
    )
    .await;
    assert_eq!(
        metric(
            &text,
            r#"egress_auditor_api_errors_total{resource="networkpolicies",code="500"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, r#"egress_auditor_scans_total{result="error"}"#),
        Some(1.0),
        "{text}"
    );
    // Ready all the same: the findings are judged and served even when a sink is down.
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    handle.stop().await;
}
