//! The real `egress_filter.wasm` through the host: policy decisions for HTTP and TCP, the deny
//! reply, configuration updates, and the same traffic through `egress-sim replay`.
//!
//! The module is built by the test command first
//! (`cargo build --release --target wasm32-wasip1 -p egress-filter`); without it these tests
//! fail and say so.

mod common;

use std::process::Command;

use common::{data, egress_filter};
use egress_sim::replay::{self, Decision, ReplayResult};
use egress_sim::{
    Deployment, Host, HostError, HostOptions, PluginConfig, StreamOutcome, StreamResult, VmConfig,
};

fn policy() -> Vec<u8> {
    std::fs::read(data("filter/policy.json")).unwrap()
}

fn deploy(config: &[u8], workers: usize) -> Deployment {
    let host = Host::from_file(
        &egress_filter(),
        VmConfig::default(),
        HostOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    host.start(
        vec![
            PluginConfig::http("egress-guard", "egress-guard", config),
            PluginConfig::network("egress-guard-tcp", "egress-guard-tcp", config),
        ],
        workers,
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", e.logs()))
}

/// The filter's decision line for a stream.
fn decision(outcome: &StreamOutcome) -> serde_json::Map<String, serde_json::Value> {
    replay::decision_log(&replay::log_lines(outcome))
        .unwrap_or_else(|| panic!("no decision line in {:?}", outcome.logs))
}

fn field<'a>(d: &'a serde_json::Map<String, serde_json::Value>, name: &str) -> &'a str {
    d.get(name).and_then(|v| v.as_str()).unwrap_or("")
}

fn run(deployment: &mut Deployment) -> Vec<(ReplayResult, StreamOutcome)> {
    let text = std::fs::read_to_string(data("filter/traffic.jsonl")).unwrap();
    let items = replay::parse_requests(&text).unwrap();
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let worker = deployment.worker(i);
            let outcome = match &item.input {
                replay::StreamInput::Http(r) => worker.http(r),
                replay::StreamInput::Tcp(c) => worker.tcp(c),
            }
            .unwrap();
            (replay::to_result(&item.id, &outcome), outcome)
        })
        .collect()
}

#[test]
fn policy_decisions_for_http_and_tcp() {
    let mut deployment = deploy(&policy(), 2);
    let results = run(&mut deployment);
    let by_id = |id: &str| {
        results
            .iter()
            .find(|(r, _)| r.id == id)
            .unwrap_or_else(|| panic!("no result for {id}"))
    };

    let (r, o) = by_id("ci-github");
    assert_eq!((r.decision, r.status), (Decision::Allow, None));
    assert_eq!(o.result, StreamResult::Continued);
    let d = decision(o);
    assert_eq!(
        (field(&d, "decision"), field(&d, "policy")),
        ("allow", "ci-to-github")
    );
    assert!(o.forwarded_request_headers.is_some());

    for id in ["ci-elsewhere", "dev-github"] {
        let (r, o) = by_id(id);
        assert_eq!((r.decision, r.status), (Decision::Deny, Some(403)), "{id}");
        let reply = o.local_reply().unwrap();
        assert!(
            !reply.body.is_empty(),
            "{id}: a deny reply has a short body"
        );
        assert_eq!(
            field(&decision(o), "reason"),
            "no_allow_policy_matched",
            "{id}"
        );
        assert_eq!(o.forwarded_request_headers, None, "{id}: nothing forwarded");
    }

    // The DENY policy holds whatever the case and port of :authority.
    let (r, o) = by_id("evil-mixed-case");
    assert_eq!((r.decision, r.status), (Decision::Deny, Some(403)));
    let d = decision(o);
    assert_eq!(
        (field(&d, "policy"), field(&d, "reason")),
        ("deny-evil", "denied_by_policy")
    );

    let (r, o) = by_id("tls-github");
    assert_eq!((r.decision, r.status), (Decision::Allow, None));
    assert_eq!(o.forwarded_bytes, [0x16, 0x03, 0x01, 0, 0]);
    assert_eq!(field(&decision(o), "policy"), "tls-to-github");

    let (r, o) = by_id("tls-other");
    assert_eq!((r.decision, r.status), (Decision::Deny, None));
    assert_eq!(o.result, StreamResult::Closed);
    assert!(
        o.forwarded_bytes.is_empty(),
        "not a byte of a denied connection goes upstream"
    );
}

#[test]
fn every_worker_decides_the_same() {
    let mut deployment = deploy(&policy(), 3);
    let first: Vec<Decision> = run(&mut deployment)
        .into_iter()
        .map(|(r, _)| r.decision)
        .collect();
    for _ in 0..2 {
        let again: Vec<Decision> = run(&mut deployment)
            .into_iter()
            .map(|(r, _)| r.decision)
            .collect();
        assert_eq!(again, first);
    }
    for worker in deployment.workers() {
        assert_eq!(worker.failure(), None);
        // Streams leave no contexts behind: the VM context and two roots.
        assert_eq!(worker.live_contexts(), 3);
    }
}

#[test]
fn a_configuration_update_applies_to_new_streams() {
    let allow_all = br#"{"policies":[{"name":"all","action":"ALLOW","rules":[{}]}]}"#;
    let deny_all = br#"{"policies":[{"name":"none","action":"DENY","rules":[{}]}]}"#;
    let mut deployment = deploy(allow_all, 2);
    let request = egress_sim::HttpRequest::get("pypi.org", "/");
    for i in 0..2 {
        assert_eq!(deployment.worker(i).http(&request).unwrap().status(), None);
    }
    deployment
        .update_plugin(PluginConfig::http(
            "egress-guard",
            "egress-guard",
            deny_all.to_vec(),
        ))
        .unwrap();
    for i in 0..2 {
        assert_eq!(
            deployment.worker(i).http(&request).unwrap().status(),
            Some(403)
        );
    }
    let broken = br#"{"policies":[{"name":"x","action":"MAYBE"}]}"#;
    let error = deployment
        .update_plugin(PluginConfig::http(
            "egress-guard",
            "egress-guard",
            broken.to_vec(),
        ))
        .unwrap_err();
    assert!(matches!(error, HostError::ConfigRejected { .. }), "{error}");
    assert!(
        error
            .logs()
            .iter()
            .any(|l| l.message.contains("policies[0].action")),
        "the filter says what is wrong: {:?}",
        error.logs()
    );
    assert_eq!(
        deployment.worker(0).http(&request).unwrap().status(),
        Some(403)
    );
}

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_egress-sim"))
}

#[test]
fn replay_cli_prints_the_same_decisions() {
    let output = sim()
        .args(["replay", "--workers", "2", "--wasm"])
        .arg(egress_filter())
        .arg("--config")
        .arg(data("filter/policy.json"))
        .arg("--requests")
        .arg(data("filter/traffic.jsonl"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<ReplayResult> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decisions: Vec<(&str, Decision, Option<u32>)> = lines
        .iter()
        .map(|r| (r.id.as_str(), r.decision, r.status))
        .collect();
    assert_eq!(
        decisions,
        [
            ("ci-github", Decision::Allow, None),
            ("ci-elsewhere", Decision::Deny, Some(403)),
            ("dev-github", Decision::Deny, Some(403)),
            ("evil-mixed-case", Decision::Deny, Some(403)),
            ("tls-github", Decision::Allow, None),
            ("tls-other", Decision::Deny, None),
        ]
    );
    assert_eq!(
        lines[1].headers.get("content-type").map(String::as_str),
        Some("text/plain")
    );

    let summary = sim()
        .args(["replay", "--summary", "--wasm"])
        .arg(egress_filter())
        .arg("--config")
        .arg(data("filter/policy.json"))
        .arg("--requests")
        .arg(data("filter/traffic.jsonl"))
        .output()
        .unwrap();
    let text = String::from_utf8(summary.stdout).unwrap();
    assert!(text.contains("ci-to-github"), "{text}");
    assert!(text.contains("denied_by_policy"), "{text}");
    assert!(
        text.contains("6 requests: 2 allowed, 4 denied, 0 rate-limited, 0 errors"),
        "{text}"
    );
}

#[test]
fn check_config_reports_the_filters_reason() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("filter_check_config");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"policies":[{"name":"p","rules":[{"to":[{"operation":{"ports":["https"]}}]}]}]}"#,
    )
    .unwrap();
    let output = sim()
        .args(["check-config", "--wasm"])
        .arg(egress_filter())
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("policies[0].rules[0].to[0].operation.ports[0]"),
        "the reason names the field: {stdout}"
    );

    let output = sim()
        .args(["check-config", "--wasm"])
        .arg(egress_filter())
        .arg("--config")
        .arg(data("filter/policy.json"))
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ok\n");

    // replay refuses to start with a rejected configuration: exit 2, the reason on stderr.
    let output = sim()
        .args(["replay", "--wasm"])
        .arg(egress_filter())
        .arg("--config")
        .arg(&bad)
        .arg("--requests")
        .arg(data("filter/traffic.jsonl"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rejected"), "{stderr}");
    assert!(stderr.contains("ports[0]"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn a_trapping_module_gets_503_in_replay() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("filter_trap");
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = dir.join("trap.wasm");
    std::fs::write(&wasm, common::wat_file("trap.wat")).unwrap();
    let requests = dir.join("requests.jsonl");
    std::fs::write(
        &requests,
        "{\"id\":\"a\",\"http\":{\"authority\":\"x\"}}\n{\"id\":\"b\",\"http\":{\"authority\":\"x\"}}\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let output = sim()
            .args(["replay", "--wasm"])
            .arg(&wasm)
            .arg("--config")
            .arg(data("filter/policy.json"))
            .arg("--requests")
            .arg(&requests)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<ReplayResult>(l).unwrap())
            .collect::<Vec<_>>()
    };
    for result in run(&[]) {
        assert_eq!(
            (result.decision, result.status),
            (Decision::Error, Some(503))
        );
        assert_eq!(result.details.as_deref(), Some("wasm_fail_stream"));
        assert!(result.error.unwrap().contains("unreachable"));
    }
    for result in run(&["--fail-open"]) {
        assert_eq!((result.decision, result.status), (Decision::Allow, None));
        assert!(result.error.is_some());
    }
}
