//! The bundled example (examples/egress-policy.json + examples/traffic.jsonl) through the real
//! `egress_filter.wasm`: the lines that show rate limits and protocol checks get their outcome.

mod common;

use std::path::Path;

use common::egress_filter;
use egress_sim::replay::{self, Decision};
use egress_sim::{Host, HostOptions, PluginConfig, VmConfig};

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn example_traffic_shows_a_429_burst_and_protocol_denials() {
    let config = example("egress-policy.json");
    let mut deployment = Host::from_file(
        &egress_filter(),
        VmConfig::default(),
        HostOptions::default(),
    )
    .unwrap()
    .start(
        vec![
            PluginConfig::http("egress-guard", "egress-guard", config.as_str()),
            PluginConfig::network("egress-guard-tcp", "egress-guard-tcp", config.as_str()),
        ],
        2,
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", e.logs()));
    let items = replay::parse_requests(&example("traffic.jsonl")).unwrap();
    let results = replay::run(&mut deployment, &items).unwrap();
    let by_id = |id: &str| results.iter().find(|r| r.id == id).unwrap();
    let reason = |id: &str| {
        replay::decision_log(&by_id(id).logs).unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // Three POSTs to Stripe per 2s per workload: the first (payments-create-intent) and two of
    // the burst pass, the rest get 429.
    for id in [
        "payments-create-intent",
        "payments-burst-1",
        "payments-burst-2",
    ] {
        assert_eq!(by_id(id).decision, Decision::Allow, "{id}");
    }
    for id in ["payments-burst-3", "payments-burst-4"] {
        let r = by_id(id);
        assert_eq!(
            (r.decision, r.status),
            (Decision::Ratelimited, Some(429)),
            "{id}"
        );
        assert_eq!(
            r.headers.get("x-ratelimit-limit").map(String::as_str),
            Some("3")
        );
        assert!(r.headers.contains_key("retry-after"));
    }
    assert_eq!(by_id("app-fronted-sni").status, Some(403));
    assert_eq!(reason("app-fronted-sni"), "http_sni_mismatch");
    assert_eq!(by_id("app-ssh-over-443").decision, Decision::Deny);
    assert_eq!(reason("app-ssh-over-443"), "tcp_not_tls");
    // Real ClientHellos on the allowed TLS lines pass the TCP checks.
    for id in ["ci-tls-github", "payments-tls-stripe", "app-tls-mirror"] {
        assert_eq!(by_id(id).decision, Decision::Allow, "{id}");
    }
    assert!(results.iter().all(|r| r.decision != Decision::Error));
}
