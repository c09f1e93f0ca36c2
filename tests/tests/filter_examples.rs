//! The bundled example (examples/egress-policy.json + examples/traffic.jsonl) through the real
//! `egress_filter.wasm`: the lines that show rate limits and protocol checks get their outcome.

mod common;

use std::path::Path;

use common::egress_filter;
use egress_sim::replay::{self, Decision};
use egress_sim::{Deployment, Host, HostOptions, PluginConfig, VmConfig};

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The filter as the HTTP and the network plugin, on 2 workers.
fn deploy(config: &str) -> Deployment {
    Host::from_file(
        &egress_filter(),
        VmConfig::default(),
        HostOptions::default(),
    )
    .unwrap()
    .start(
        vec![
            PluginConfig::http("egress-guard", "egress-guard", config),
            PluginConfig::network("egress-guard-tcp", "egress-guard-tcp", config),
        ],
        2,
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", e.logs()))
}

#[test]
fn example_traffic_shows_a_429_burst_and_protocol_denials() {
    let mut deployment = deploy(&example("egress-policy.json"));
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

/// The tiers example (examples/tiers-policy.json + examples/tiers-traffic.jsonl): a security
/// team's admin tier (paste sites blocked for all, CI namespaces held to GitHub and PyPI, the
/// rest passed to the teams), two teams' own policies, a baseline package mirror.
#[test]
fn tiers_example_traffic_gets_its_tiers() {
    let mut deployment = deploy(&example("tiers-policy.json"));
    let items = replay::parse_requests(&example("tiers-traffic.jsonl")).unwrap();
    let results = replay::run(&mut deployment, &items).unwrap();
    let expected: [(&str, Decision, &str, Option<&str>, &str); 15] = [
        (
            "ci-github",
            Decision::Allow,
            "admin",
            Some("ci-allowlist"),
            "github",
        ),
        (
            "ci-pypi",
            Decision::Allow,
            "admin",
            Some("ci-allowlist"),
            "pypi",
        ),
        (
            "ci-paste",
            Decision::Deny,
            "admin",
            Some("block-paste-sites"),
            "paste-http",
        ),
        (
            "ci-elsewhere",
            Decision::Deny,
            "admin",
            Some("ci-allowlist"),
            "nothing-else",
        ),
        (
            "ci-tls-github",
            Decision::Allow,
            "admin",
            Some("ci-allowlist"),
            "github-tls",
        ),
        (
            "ci-tls-other",
            Decision::Deny,
            "admin",
            Some("ci-allowlist"),
            "nothing-else",
        ),
        (
            "payments-stripe",
            Decision::Allow,
            "namespace",
            Some("allow-stripe"),
            "0",
        ),
        (
            "payments-tls-stripe",
            Decision::Allow,
            "namespace",
            Some("allow-stripe"),
            "1",
        ),
        (
            "payments-elsewhere",
            Decision::Deny,
            "namespace",
            None,
            "null",
        ),
        (
            "shop-mirror",
            Decision::Allow,
            "baseline",
            Some("package-mirror"),
            "mirror",
        ),
        (
            "shop-tracker",
            Decision::Deny,
            "namespace",
            Some("deny-trackers"),
            "0",
        ),
        ("shop-upload", Decision::Deny, "default", None, "null"),
        (
            "plaintext-mirror",
            Decision::Allow,
            "baseline",
            Some("package-mirror"),
            "mirror",
        ),
        ("plaintext-github", Decision::Deny, "default", None, "null"),
        (
            "plaintext-paste",
            Decision::Deny,
            "admin",
            Some("block-paste-sites"),
            "paste-tls",
        ),
    ];
    assert_eq!(results.len(), expected.len());
    for (result, (id, decision, tier, policy, rule)) in results.iter().zip(expected) {
        assert_eq!(result.id, id);
        assert_eq!(result.decision, decision, "{id}");
        let line = replay::decision_log(&result.logs).unwrap();
        assert_eq!(line["tier"], tier, "{id}");
        assert_eq!(line["policy"].as_str(), policy, "{id}");
        let got = match &line["rule"] {
            serde_json::Value::String(name) => name.clone(),
            other => other.to_string(),
        };
        assert_eq!(got, rule, "{id}");
        // Requests from the teams went through the admin tier's PASS.
        let passed = line.get("passed").map(|p| p["policy"].clone());
        let from_team = id.starts_with("payments")
            || id.starts_with("shop")
            || id == "plaintext-mirror"
            || id == "plaintext-github";
        assert_eq!(passed.is_some(), from_team, "{id}: passed {passed:?}");
    }
    let upload = results.iter().find(|r| r.id == "shop-upload").unwrap();
    assert_eq!(
        replay::decision_log(&upload.logs).unwrap()["audit"],
        serde_json::json!(["audit-uploads"])
    );
}
