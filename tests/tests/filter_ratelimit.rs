//! Rate limits of the real `egress_filter.wasm` through the host: buckets in shared data across
//! worker VMs on OS threads, 429 replies with their headers, refills on the host clock, per-key
//! buckets and the key cap.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::egress_filter;
use egress_sim::replay::{self, Decision, ReplayResult};
use egress_sim::{Deployment, Host, HostOptions, HttpRequest, PluginConfig, VmConfig};

fn host() -> Host {
    Host::from_file(
        &egress_filter(),
        VmConfig::default(),
        HostOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn deploy(config: &str, workers: usize) -> Deployment {
    host()
        .start(
            vec![
                PluginConfig::http("egress-guard", "egress-guard", config),
                PluginConfig::network("egress-guard-tcp", "egress-guard-tcp", config),
            ],
            workers,
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}", e.logs()))
}

fn replay(deployment: &mut Deployment, lines: &[String]) -> Vec<ReplayResult> {
    let items = replay::parse_requests(&lines.join("\n")).unwrap();
    replay::run(deployment, &items).unwrap()
}

fn decision_field(result: &ReplayResult, path: &[&str]) -> serde_json::Value {
    let mut value = serde_json::Value::Object(
        replay::decision_log(&result.logs)
            .unwrap_or_else(|| panic!("{}: no decision line", result.id)),
    );
    for key in path {
        value = value.get(*key).cloned().unwrap_or(serde_json::Value::Null);
    }
    value
}

fn rate_limit_keys(host: &Host, limit: &str) -> usize {
    let prefix = format!("egress-guard/rl/v1/{limit}/");
    host.shared()
        .data
        .keys(&host.vm_config().vm_id)
        .iter()
        .filter(|k| k.starts_with(prefix.as_bytes()))
        .count()
}

#[test]
fn workers_on_threads_admit_exactly_the_tokens_plus_refills() {
    const WORKERS: usize = 4;
    const REQUESTS_PER_PHASE: usize = 40;
    const PHASES: usize = 3;
    const MAX_TOKENS: usize = 50;
    const TOKENS_PER_FILL: usize = 20;
    let config = format!(
        r#"{{"rateLimits":[{{"name":"global","maxTokens":{MAX_TOKENS},"tokensPerFill":{TOKENS_PER_FILL},"fillInterval":"1s"}}]}}"#
    );
    let host = host();
    let workers = host
        .start(
            vec![PluginConfig::http("egress-guard", "egress-guard", config)],
            WORKERS,
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}", e.logs()))
        .into_workers();
    // Phases start and end together; between phases the host clock moves one fill interval.
    let barrier = Arc::new(Barrier::new(WORKERS + 1));
    let threads: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut admitted = vec![0usize; PHASES];
                for count in admitted.iter_mut() {
                    barrier.wait();
                    for _ in 0..REQUESTS_PER_PHASE {
                        let outcome = worker
                            .http(&HttpRequest::get("api.example.com", "/"))
                            .unwrap();
                        match outcome.status() {
                            None => *count += 1,
                            Some(429) => {}
                            other => panic!("unexpected status {other:?}: {:?}", outcome.logs),
                        }
                    }
                    barrier.wait();
                }
                assert_eq!(worker.failure(), None);
                admitted
            })
        })
        .collect();
    for _ in 0..PHASES {
        barrier.wait();
        barrier.wait();
        host.clock().advance(Duration::from_secs(1));
    }
    let per_worker: Vec<Vec<usize>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let per_phase: Vec<usize> = (0..PHASES)
        .map(|p| per_worker.iter().map(|w| w[p]).sum())
        .collect();
    let total: usize = per_phase.iter().sum();
    println!(
        "{WORKERS} workers on {WORKERS} threads x {REQUESTS_PER_PHASE} requests x {PHASES} phases \
         ({} requests): admitted {per_phase:?} = {total}",
        WORKERS * REQUESTS_PER_PHASE * PHASES
    );
    assert_eq!(per_phase[0], MAX_TOKENS, "a new bucket is full");
    for admitted in &per_phase[1..] {
        assert_eq!(*admitted, TOKENS_PER_FILL, "one fill per interval");
    }
    assert_eq!(total, MAX_TOKENS + (PHASES - 1) * TOKENS_PER_FILL);
    assert!(
        per_worker
            .iter()
            .filter(|w| w.iter().sum::<usize>() > 0)
            .count()
            > 1,
        "more than one worker took tokens: {per_worker:?}"
    );
}

fn principal_request(id: &str, at_ms: u64, principal: &str) -> String {
    format!(
        r#"{{"id":"{id}","at_ms":{at_ms},"source":{{"principal":"cluster.local/ns/{principal}/sa/app"}},"http":{{"authority":"api.example.com","path":"/"}}}}"#
    )
}

#[test]
fn bursts_get_429_with_headers_and_tokens_come_back_per_key() {
    let config = r#"{
      "policies": [{"name": "deny-evil", "action": "DENY",
                    "rules": [{"to": [{"operation": {"hosts": ["evil.example"]}}]}]}],
      "rateLimits": [{"name": "per-principal", "key": ["source.principal"],
                      "maxTokens": 3, "tokensPerFill": 3, "fillInterval": "10s"}]
    }"#;
    let mut deployment = deploy(config, 2);
    let mut lines = Vec::new();
    // A denied request takes no token.
    lines.push(r#"{"id":"evil","at_ms":0,"source":{"principal":"cluster.local/ns/a/sa/app"},"http":{"authority":"evil.example","path":"/"}}"#.to_string());
    for i in 0..5 {
        lines.push(principal_request(&format!("a{i}"), 0, "a"));
    }
    for i in 0..3 {
        lines.push(principal_request(&format!("b{i}"), 0, "b"));
    }
    for i in 0..4 {
        lines.push(principal_request(&format!("a-later{i}"), 10_000, "a"));
    }
    let results = replay(&mut deployment, &lines);
    let by_id = |id: &str| results.iter().find(|r| r.id == id).unwrap();

    assert_eq!(by_id("evil").status, Some(403));
    for id in [
        "a0", "a1", "a2", "b0", "b1", "b2", "a-later0", "a-later1", "a-later2",
    ] {
        assert_eq!(by_id(id).decision, Decision::Allow, "{id}");
    }
    assert_eq!(decision_field(by_id("a0"), &["rateLimit", "remaining"]), 2);
    assert_eq!(decision_field(by_id("a2"), &["rateLimit", "remaining"]), 0);
    for id in ["a3", "a4", "a-later3"] {
        let r = by_id(id);
        assert_eq!(
            (r.decision, r.status),
            (Decision::Ratelimited, Some(429)),
            "{id}"
        );
        assert_eq!(
            r.headers.get("x-envoy-ratelimited").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            r.headers.get("x-ratelimit-limit").map(String::as_str),
            Some("3")
        );
        assert_eq!(
            r.headers.get("x-ratelimit-remaining").map(String::as_str),
            Some("0")
        );
        let reset: u64 = r.headers["x-ratelimit-reset"].parse().unwrap();
        let retry: u64 = r.headers["retry-after"].parse().unwrap();
        assert!((1..=10).contains(&reset), "{id}: reset {reset}");
        assert!((1..=10).contains(&retry), "{id}: retry-after {retry}");
        assert_eq!(decision_field(r, &["decision"]), "ratelimited");
        assert_eq!(decision_field(r, &["reason"]), "rate_limited");
        assert_eq!(decision_field(r, &["rateLimit", "name"]), "per-principal");
        let principal = "cluster.local/ns/a/sa/app";
        assert_eq!(
            decision_field(r, &["rateLimit", "bucket"]),
            format!("{}:{principal}", principal.len()).as_str()
        );
    }
    let metrics = deployment.host().shared().metrics.snapshot();
    let value = |name: &str| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
            .unwrap_or_else(|| panic!("no metric {name}"))
    };
    assert_eq!(value("egress_filter.ratelimited.http"), 3);
    assert_eq!(value("egress_filter.ratelimit.per-principal.limited"), 3);
}

#[test]
fn tcp_connections_take_tokens_and_are_closed_when_limited() {
    let config = r#"{"rateLimits": [{"name": "db", "match": {"to": [{"operation": {"ports": [5432]}}]},
                     "maxTokens": 2, "fillInterval": "1s"}]}"#;
    let mut deployment = deploy(config, 1);
    let lines: Vec<String> = (0..4)
        .map(|i| {
            format!(
                r#"{{"id":"c{i}","destination":{{"port":5432}},"tcp":{{"data_base64":"AAAA"}}}}"#
            )
        })
        .chain([
            r#"{"id":"other-port","destination":{"port":6379},"tcp":{"data_base64":"AAAA"}}"#
                .to_string(),
        ])
        .collect();
    let results = replay(&mut deployment, &lines);
    let decisions: Vec<Decision> = results.iter().map(|r| r.decision).collect();
    assert_eq!(
        decisions,
        [
            Decision::Allow,
            Decision::Allow,
            Decision::Ratelimited,
            Decision::Ratelimited,
            Decision::Allow
        ]
    );
}

#[test]
fn the_key_cap_holds_under_a_spray_of_unique_keys() {
    const SPRAY: usize = 500;
    let config = r#"{"rateLimits": [{"name": "per-client", "key": ["request.headers[x-client]"],
                     "maxTokens": 2, "tokensPerFill": 1, "fillInterval": "1m", "maxKeys": 16}]}"#;
    let mut deployment = deploy(config, 2);
    let lines: Vec<String> = (0..SPRAY)
        .map(|i| {
            format!(
                r#"{{"id":"k{i}","http":{{"authority":"api.example.com","headers":{{"x-client":"client-{i}"}}}}}}"#
            )
        })
        .collect();
    let results = replay(&mut deployment, &lines);
    let admitted = results
        .iter()
        .filter(|r| r.decision == Decision::Allow)
        .count();
    let limited: Vec<&ReplayResult> = results
        .iter()
        .filter(|r| r.decision == Decision::Ratelimited)
        .collect();
    // 16 keyed buckets (one request each), then the overflow bucket's 2 tokens.
    assert_eq!(
        admitted,
        16 + 2,
        "unique keys never get past the limit unlimited"
    );
    assert_eq!(limited.len(), SPRAY - admitted);
    assert_eq!(decision_field(limited[0], &["rateLimit", "overflow"]), true);
    assert_eq!(
        decision_field(limited[0], &["rateLimit", "result"]),
        "rate_limited_overflow"
    );
    // ceil(16 / 8) bucket sets plus the overflow bucket.
    let keys = rate_limit_keys(deployment.host(), "per-client");
    println!("{SPRAY} unique keys: {admitted} admitted, {keys} shared-data keys");
    assert!(keys <= 3, "{keys} shared-data keys");
}
