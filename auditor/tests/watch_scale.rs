//! Figures for docs/BENCHMARKS.md: `watch` over 50,000 pods through the mock API server, how long
//! a change to one pod (and to one namespace's labels) takes to show in `/metrics`, and how many
//! pods each change had judged again. Ignored by default (it takes a while and measures, it does
//! not assert speed; it asserts only that the findings are right):
//!
//! `cargo test -p egress-auditor --release --test watch_scale -- --ignored --nocapture`

#[path = "support/cluster_data.rs"]
mod cluster_data;
use kube_mock as mock_api;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cluster_data::{ids, quick_retry, repo_objects};
use egress_auditor::kube_client::ConnectOptions;
use egress_auditor::watch::{self, WatchOptions};
use mock_api::MockApi;
use serde_json::{json, Value};

const PODS: usize = 50_000;
const NAMESPACES: usize = 100;
const ROUNDS: usize = 5;
const REJUDGED: &str = "egress_auditor_watch_pods_rejudged_total";
const CONTEXT_REJUDGED: &str = "egress_auditor_watch_pods_context_rejudged_total";

async fn metrics_text(client: &reqwest::Client, addr: SocketAddr) -> String {
    client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap_or_default()
}

/// The sum of every series of `family` whose labels start with `labels_prefix`.
fn sum(text: &str, family: &str, labels_prefix: &str) -> Option<f64> {
    let prefix = format!("{family}{{{labels_prefix}");
    let mut total = None;
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let v: f64 = line.rsplit(' ').next()?.parse().ok()?;
        *total.get_or_insert(0.0) += v;
    }
    total
}

/// A series without labels.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .filter(|rest| rest.starts_with(' '))
            .and_then(|rest| rest.trim().parse().ok())
    })
}

fn rule_count(text: &str, rule: &str) -> f64 {
    sum(text, "egress_auditor_findings", &format!("rule=\"{rule}\"")).unwrap_or(0.0)
}

fn all_findings(text: &str) -> f64 {
    sum(text, "egress_auditor_findings", "").unwrap_or(0.0)
}

fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

fn mib(kb: Option<u64>) -> String {
    kb.map(|k| format!("{:.0} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

/// Polls `/metrics` every 5 ms until `done` holds; returns the time since `since` and the text.
async fn wait_for(
    client: &reqwest::Client,
    addr: SocketAddr,
    since: Instant,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> (Duration, String) {
    loop {
        let text = metrics_text(client, addr).await;
        if done(&text) {
            return (since.elapsed(), text);
        }
        if since.elapsed() > Duration::from_secs(300) {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn stats(
    label: &str,
    mut times: Vec<Duration>,
    mut judging: Vec<f64>,
    rejudged: &[Option<f64>],
    context: &[Option<f64>],
) {
    times.sort();
    judging.sort_by(f64::total_cmp);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let show = |v: &[Option<f64>]| {
        v.iter()
            .map(|r| r.map_or("n/a".to_string(), |r| format!("{r:.0}")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{label}: event -> /metrics min {:.0} ms, median {:.0} ms, max {:.0} ms over {} changes (the judgement itself: min {:.0} ms, median {:.0} ms, max {:.0} ms); pods re-judged per change: [{}]; pods whose namespace rules re-ran: [{}]",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len(),
        judging[0] * 1000.0,
        judging[judging.len() / 2] * 1000.0,
        judging[judging.len() - 1] * 1000.0,
        show(rejudged),
        show(context),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with --ignored"]
async fn watch_50k_pods_one_change() {
    let objects = repo_objects();
    let templates: Vec<Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Pod" && o["metadata"]["namespace"] != "istio-system")
        .cloned()
        .collect();
    let mock = MockApi::start().await;
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
    let rss_mock = status_kb("VmRSS:");
    egress_auditor::kube_client::ensure_crypto_provider();
    let client = reqwest::Client::new();

    let started = Instant::now();
    let handle = watch::start(WatchOptions {
        connect: ConnectOptions {
            kubeconfig: Some(kubeconfig.clone()),
            context: None,
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        debounce: Duration::from_millis(50),
        resync: Duration::from_secs(3600),
        retry: quick_retry(),
        ..WatchOptions::default()
    })
    .await
    .expect("controller starts");
    let addr = handle.addr;
    let (ready_after, text) = wait_for(&client, addr, started, "the first judgement", |t| {
        value(t, "egress_auditor_scans_total{result=\"success\"}").is_some()
    })
    .await;
    let first_judgement = value(&text, "egress_auditor_last_scan_duration_seconds").unwrap_or(0.0);
    assert_eq!(
        value(&text, "egress_auditor_judged_workloads"),
        Some((PODS + 1) as f64)
    );
    let rss_ready = status_kb("VmRSS:");
    let hwm_ready = status_kb("VmHWM:");
    println!(
        "watch: {PODS} pods in {NAMESPACES} namespaces: ready (list + first judgement) after {:.2} s, first judgement {:.0} ms, {} findings; RSS {} before the controller started (the mock), {} once ready (peak {})",
        ready_after.as_secs_f64(),
        first_judgement * 1000.0,
        all_findings(&text),
        mib(rss_mock),
        mib(rss_ready),
        mib(hwm_ready),
    );

    // One pod opts out of injection: pod-1 (template web-2: no sidecar) in injected team-1 turns
    // from sidecar-missing into sidecar-opt-out, and back.
    let opt_outs = rule_count(&text, "sidecar-opt-out");
    let mut times = Vec::new();
    let mut judging = Vec::new();
    let mut rejudged = Vec::new();
    let mut context = Vec::new();
    let mut last = text;
    for round in 0..ROUNDS {
        let add = round % 2 == 0;
        let mut pod = mock.object("pods", Some("team-1"), "pod-1").expect("pod-1");
        if add {
            pod["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"});
        } else {
            pod["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("annotations");
        }
        let want = if add { opt_outs + 1.0 } else { opt_outs };
        let scans = value(&last, "egress_auditor_scans_total{result=\"success\"}").unwrap_or(0.0);
        let changed = Instant::now();
        mock.apply(pod);
        let (took, text) = wait_for(&client, addr, changed, "the opt-out in /metrics", |t| {
            rule_count(t, "sidecar-opt-out") == want
                && value(t, "egress_auditor_scans_total{result=\"success\"}").unwrap_or(0.0) > scans
        })
        .await;
        times.push(took);
        judging.push(value(&text, "egress_auditor_last_scan_duration_seconds").unwrap_or(0.0));
        let delta =
            |series: &str| Some(value(&text, series)? - value(&last, series).unwrap_or(0.0));
        rejudged.push(delta(REJUDGED));
        context.push(delta(CONTEXT_REJUDGED));
        last = text;
    }
    stats("one pod's annotation", times, judging, &rejudged, &context);

    // One namespace loses (then regains) istio-injection: team-3's 500 pods (excluder, web-2 and
    // batch-1 alike) lose their sidecar-missing findings, and the namespace its
    // egress-networkpolicy-missing.
    let before = all_findings(&last);
    let mut without: Option<f64> = None;
    let mut times = Vec::new();
    let mut judging = Vec::new();
    let mut rejudged = Vec::new();
    let mut context = Vec::new();
    for round in 0..ROUNDS {
        let remove = round % 2 == 0;
        let mut ns = mock.object("namespaces", None, "team-3").expect("team-3");
        ns["metadata"]["labels"] = if remove {
            json!({})
        } else {
            json!({"istio-injection": "enabled"})
        };
        let scans = value(&last, "egress_auditor_scans_total{result=\"success\"}").unwrap_or(0.0);
        let changed = Instant::now();
        mock.apply(ns);
        let (took, text) = wait_for(&client, addr, changed, "the namespace change", |t| {
            let total = all_findings(t);
            let scanned =
                value(t, "egress_auditor_scans_total{result=\"success\"}").unwrap_or(0.0) > scans;
            scanned
                && if remove {
                    without.map_or(total != before, |w| total == w)
                } else {
                    total == before
                }
        })
        .await;
        if remove {
            without = Some(all_findings(&text));
        }
        times.push(took);
        judging.push(value(&text, "egress_auditor_last_scan_duration_seconds").unwrap_or(0.0));
        let delta =
            |series: &str| Some(value(&text, series)? - value(&last, series).unwrap_or(0.0));
        rejudged.push(delta(REJUDGED));
        context.push(delta(CONTEXT_REJUDGED));
        last = text;
    }
    stats("one namespace's label", times, judging, &rejudged, &context);
    println!(
        "findings: {before} with team-3 injected, {} without; peak RSS of the test process {}",
        without.unwrap_or(0.0),
        mib(status_kb("VmHWM:")),
    );

    // The watch's findings are those of a full scan of the same objects.
    let api = cluster_data::api_for(&mock, dir.path(), quick_retry()).await;
    let scan = cluster_data::scan(&api, &[], 500).await.expect("scan");
    let watched = handle.findings();
    assert_eq!(watched.len(), scan.findings.len());
    assert!(watched == scan.findings, "{:?}", {
        let (a, b) = (ids(&watched), ids(&scan.findings));
        a.iter()
            .zip(&b)
            .find(|(x, y)| x != y)
            .map(|(x, y)| format!("{x} != {y}"))
    });
    handle.stop().await;
}
