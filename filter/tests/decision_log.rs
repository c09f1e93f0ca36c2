//! The decision log line: one JSON object with a fixed set of keys (integration tests of the
//! proxy-wasm host grep these lines, so the format is part of the contract).

mod common;

use common::{compile, http, tcp};
use egress_filter::log::{decision_line, MAX_LOGGED_VALUE};
use egress_filter::policy::Decision;
use egress_filter::TrafficKind;
use serde_json::{json, Value};

fn line(policies: &str, req: &common::Req) -> Value {
    let config = compile(policies);
    let attrs = req.attributes(config.policy.header_names());
    let decision = config.policy.evaluate(&attrs);
    let kind = if req.http.is_some() {
        TrafficKind::Http
    } else {
        TrafficKind::Tcp
    };
    let text = decision_line(kind, &decision, Some(&attrs));
    assert!(!text.contains('\n'), "one line: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn http_deny_line() {
    let policies = r#"[{"name":"deny-evil","action":"DENY","rules":[{"to":[{"operation":{"hosts":["evil.example"]}}],"when":[{"key":"request.headers[x-team]","notValues":["sec"]}]}]},
                      {"name":"audit-all","action":"AUDIT","rules":[{}]},
                      {"name":"try","action":"DENY","dryRun":true,"rules":[{}]}]"#;
    let req = http("POST", "EVIL.example:443", "/a/%2e%2e/b?secret=1")
        .header("x-team", "payments")
        .header("authorization", "Bearer secret");
    let log = line(policies, &req);
    assert_eq!(
        log,
        json!({
            "event": "decision",
            "kind": "http",
            "decision": "deny",
            "policy": "deny-evil",
            "rule": 0,
            "action": "DENY",
            "reason": "denied_by_policy",
            "audit": ["audit-all"],
            "dryRun": [{"policy": "try", "rule": 0, "wouldBe": "deny"}],
            "attributes": {
                "source.principal": "cluster.local/ns/dev/sa/app",
                "source.namespace": "dev",
                "source.ip": "10.1.2.3",
                "remote.ip": "10.1.2.3",
                "destination.ip": "10.0.0.10",
                "destination.port": 443,
                "connection.mtls": true,
                "request.authority": "EVIL.example:443",
                "request.host": "evil.example",
                "request.method": "POST",
                "request.path": "/a/%2e%2e/b",
                "request.normalized_path": "/b",
                "request.scheme": "https",
                "request.protocol": "HTTP/1.1",
                "request.headers": {"x-team": "payments"}
            }
        })
    );
}

#[test]
fn tcp_default_lines() {
    let log = line("[]", &tcp("GitHub.com."));
    assert_eq!(log["kind"], "tcp");
    assert_eq!(log["decision"], "allow");
    assert_eq!(log["policy"], Value::Null);
    assert_eq!(log["rule"], Value::Null);
    assert_eq!(log["action"], Value::Null);
    assert_eq!(log["reason"], "no_allow_policies");
    assert_eq!(log["attributes"]["connection.sni"], "github.com");
    assert!(log["attributes"].get("request.host").is_none());

    let log = line(r#"[{"name":"allow-nothing"}]"#, &tcp("x").plaintext());
    assert_eq!(log["decision"], "deny");
    assert_eq!(log["reason"], "no_allow_policy_matched");
    assert!(log["attributes"].get("source.principal").is_none());
}

#[test]
fn cannot_evaluate_line() {
    let decision = Decision::cannot_evaluate("malformed :authority \"a b\"");
    let log: Value =
        serde_json::from_str(&decision_line(TrafficKind::Http, &decision, None)).unwrap();
    assert_eq!(log["decision"], "deny");
    assert_eq!(log["reason"], "cannot_evaluate");
    assert_eq!(log["detail"], "malformed :authority \"a b\"");
    assert_eq!(log["attributes"], json!({}));
    assert_eq!(
        decision.deny_body(),
        "egress denied: request could not be evaluated\n"
    );
}

#[test]
fn long_values_are_cut() {
    let long = "a".repeat(5000);
    let log = line("[]", &http("GET", "x.example", &format!("/{long}")));
    let path = log["attributes"]["request.path"].as_str().unwrap();
    assert_eq!(path.len(), MAX_LOGGED_VALUE + 3);
    assert!(path.ends_with("..."));
}

#[test]
fn deny_bodies_name_the_policy() {
    let config = compile(r#"[{"name":"deny-all","action":"DENY","rules":[{}]}]"#);
    let attrs = http("GET", "x", "/").attributes(&[]);
    assert_eq!(
        config.policy.evaluate(&attrs).deny_body(),
        "egress denied by policy deny-all\n"
    );
    let config = compile(r#"[{"name":"allow-nothing"}]"#);
    assert_eq!(
        config.policy.evaluate(&attrs).deny_body(),
        "egress denied: no ALLOW policy matched\n"
    );
}
