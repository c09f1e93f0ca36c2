//! The decision as filter state for Envoy's access log, and `log.allowed: false`, through the
//! real `egress_filter.wasm`:
//! - every decision is set as `wasm.egress_guard.decision`, and agrees with the decision line;
//! - with `log.allowed: false` an allowed request writes no line, reads only the connection
//!   properties the configuration looks at, and decides as it does when it reads them all;
//! - a stream whose line is written (denied, audited, dry run) still gets every attribute.

mod common;

use common::egress_filter;
use egress_sim::replay;
use egress_sim::{
    Connection, Deployment, Host, HostOptions, HttpRequest, PluginConfig, StreamOutcome, TcpStream,
    VmConfig,
};
use serde_json::{json, Map, Value};

const STATE: &str = "wasm.egress_guard.decision";

fn deploy(config: &Value) -> Deployment {
    let options = HostOptions {
        record_property_reads: true,
        ..HostOptions::default()
    };
    let host = Host::from_file(&egress_filter(), VmConfig::default(), options)
        .unwrap_or_else(|e| panic!("{e}"));
    let config = config.to_string().into_bytes();
    host.start(
        vec![
            PluginConfig::http("egress-guard", "egress-guard", config.clone()),
            PluginConfig::network("egress-guard-tcp", "egress-guard-tcp", config),
        ],
        1,
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", e.logs()))
}

/// `config` with `log` set to `log`.
fn with_log(config: &Value, log: Value) -> Value {
    let mut config = config.clone();
    config["log"] = log;
    config
}

fn unlogged(config: &Value) -> Value {
    with_log(config, json!({"allowed": false}))
}

/// An ALLOW policy on hosts and source namespace, an AUDIT policy and a DENY policy on a host:
/// nothing here looks at addresses, ports, the SNI or the protocol.
fn hosts_only() -> Value {
    json!({"policies": [
        {"name": "deny-metadata", "action": "DENY",
         "rules": [{"to": [{"operation": {"hosts": ["169.254.169.254"]}}]}]},
        {"name": "audit-uploads", "action": "AUDIT",
         "rules": [{"to": [{"operation": {"hosts": ["upload.example.com"]}}]}]},
        {"name": "allow-listed", "rules": [{
            "from": [{"source": {"namespaces": ["ci"]}}],
            "to": [{"operation": {"hosts": ["api.example.com", "upload.example.com"]}}]}]}
    ]})
}

fn connection() -> Connection {
    Connection {
        principal: Some("cluster.local/ns/ci/sa/runner".into()),
        source: "10.1.2.3:40000".parse().unwrap(),
        destination: "10.0.0.9:8443".parse().unwrap(),
        sni: Some("outbound.istio-egressgateway.istio-system".into()),
        ..Connection::default()
    }
}

fn request(authority: &str) -> HttpRequest {
    HttpRequest {
        connection: connection(),
        ..HttpRequest::get(authority, "/v1/items")
    }
}

fn decision_line(outcome: &StreamOutcome) -> Option<Map<String, Value>> {
    replay::decision_log(&replay::log_lines(outcome))
}

fn state(outcome: &StreamOutcome) -> Map<String, Value> {
    let text = outcome
        .filter_state(STATE)
        .unwrap_or_else(|| panic!("no {STATE} in {:?}", outcome.filter_state));
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => map,
        other => panic!("{STATE} is not a JSON object: {text} ({other:?})"),
    }
}

/// The filter state holds what the line says of the decision.
fn assert_state_agrees(outcome: &StreamOutcome) {
    let state = state(outcome);
    let line = decision_line(outcome).expect("a decision line");
    for key in ["decision", "policy", "rule", "reason"] {
        assert_eq!(
            state.get(key),
            line.get(key),
            "{key}: {state:?} against {line:?}"
        );
    }
    assert_eq!(state.len(), 4, "only the decision: {state:?}");
}

#[test]
fn every_decision_is_set_as_filter_state_for_the_access_log() {
    let mut gateway = deploy(&hosts_only());
    let worker = gateway.worker(0);

    let allowed = worker.http(&request("api.example.com")).unwrap();
    assert_eq!(allowed.status(), None);
    assert_eq!(
        Value::Object(state(&allowed)),
        json!({"decision": "allow", "policy": "allow-listed", "rule": 0,
               "reason": "allowed_by_policy"})
    );
    assert_state_agrees(&allowed);

    let denied = worker.http(&request("169.254.169.254")).unwrap();
    assert_eq!(denied.status(), Some(403));
    assert_eq!(state(&denied)["reason"], "denied_by_policy");
    assert_state_agrees(&denied);

    let unlisted = worker.http(&request("other.example.org")).unwrap();
    assert_eq!(state(&unlisted)["reason"], "no_allow_policy_matched");
    assert_eq!(state(&unlisted)["policy"], Value::Null);
    assert_state_agrees(&unlisted);

    // A request head the filter cannot read is denied as unevaluable, and says so there too.
    let bad = worker.http(&request("a b")).unwrap();
    assert_eq!(bad.status(), Some(403));
    assert_eq!(state(&bad)["reason"], "cannot_evaluate");
    assert_state_agrees(&bad);

    // TCP connections too (HTTP-only rules do not apply to them: none allows this one).
    let tcp = worker
        .tcp(&TcpStream {
            connection: Connection {
                sni: Some("api.example.com".into()),
                ..Connection::default()
            },
            downstream: vec![b"hello".to_vec()],
            ..TcpStream::default()
        })
        .unwrap();
    assert_eq!(state(&tcp)["decision"], "deny");
    assert_state_agrees(&tcp);
}

#[test]
fn filter_state_can_be_turned_off() {
    let config = with_log(&hosts_only(), json!({"filterState": false}));
    let mut gateway = deploy(&config);
    let outcome = gateway.worker(0).http(&request("api.example.com")).unwrap();
    assert!(
        outcome.filter_state.is_empty(),
        "{:?}",
        outcome.filter_state
    );
    assert!(
        decision_line(&outcome).is_some(),
        "the line is still written"
    );
}

#[test]
fn with_log_allowed_false_an_allowed_request_writes_no_line_and_reads_only_what_rules_need() {
    let mut gateway = deploy(&unlogged(&hosts_only()));
    let worker = gateway.worker(0);

    let allowed = worker.http(&request("api.example.com")).unwrap();
    assert_eq!(allowed.status(), None);
    assert_eq!(decision_line(&allowed), None, "{:?}", allowed.logs);
    assert_eq!(state(&allowed)["decision"], "allow");
    // The peer certificate (for `namespaces`) and nothing else: no addresses, SNI or protocol.
    assert_eq!(
        allowed.properties_read,
        ["connection.uri_san_peer_certificate"]
    );

    // Every decision is still counted.
    let metrics = gateway.host().shared().metrics.snapshot();
    let count = |name: &str| metrics.iter().find(|m| m.name == name).map(|m| m.value);
    assert_eq!(count("egress_filter.decision.http.allow"), Some(1));
    assert_eq!(count("egress_filter.reason.allowed_by_policy"), Some(1));
}

#[test]
fn a_logged_decision_carries_every_attribute_with_log_allowed_false() {
    let logged = deploy(&hosts_only());
    let unlogged = deploy(&unlogged(&hosts_only()));
    let mut gateways = [logged, unlogged];
    for (host, reason) in [
        ("169.254.169.254", "denied_by_policy"),
        ("other.example.org", "no_allow_policy_matched"),
        // Allowed, but an AUDIT policy matched: the line says so.
        ("upload.example.com", "allowed_by_policy"),
    ] {
        let lines: Vec<Map<String, Value>> = gateways
            .iter_mut()
            .map(|g| {
                let outcome = g.worker(0).http(&request(host)).unwrap();
                assert_state_agrees(&outcome);
                decision_line(&outcome).unwrap_or_else(|| panic!("{host}: no line"))
            })
            .collect();
        assert_eq!(lines[0]["reason"], reason, "{host}");
        // The same line, attributes included, whether they were read before or after the
        // decision.
        assert_eq!(lines[0], lines[1], "{host}");
        let attributes = &lines[1]["attributes"];
        for key in [
            "source.ip",
            "source.port",
            "destination.ip",
            "destination.port",
            "connection.sni",
            "request.protocol",
        ] {
            assert!(
                attributes.get(key).is_some(),
                "{host}: {key} in {attributes}"
            );
        }
    }
    let audited = gateways[1]
        .worker(0)
        .http(&request("upload.example.com"))
        .unwrap();
    assert_eq!(
        decision_line(&audited).unwrap()["audit"],
        json!(["audit-uploads"])
    );

    // A dry-run match is logged as well.
    let dry_run = json!({"log": {"allowed": false}, "policies": [
        {"name": "would-deny", "action": "DENY", "dryRun": true,
         "rules": [{"to": [{"operation": {"hosts": ["api.example.com"]}}]}]}
    ]});
    let outcome = deploy(&dry_run)
        .worker(0)
        .http(&request("api.example.com"))
        .unwrap();
    assert_eq!(outcome.status(), None);
    let line = decision_line(&outcome).expect("a line for the dry-run match");
    assert_eq!(line["dryRun"][0]["policy"], "would-deny");
    assert!(line["attributes"].get("source.ip").is_some());
}

/// A configuration for each connection property a rule, a limit key or a check can look at.
/// With `log.allowed: false` those are read before the decision; each request must be decided
/// exactly as when every property is read first.
fn configurations_that_look_at_the_connection() -> Vec<(&'static str, Value)> {
    let allow_all = json!({"name": "allow-all", "rules": [{}]});
    let deny = |name: &str, rule: Value| json!({"name": name, "action": "DENY", "rules": [rule]});
    vec![
        (
            "ipBlocks",
            json!({"policies": [deny("deny-source", json!({"from": [{"source": {"ipBlocks": ["10.1.0.0/16"]}}]})), allow_all]}),
        ),
        (
            "notRemoteIpBlocks",
            json!({"policies": [deny("deny-remote", json!({"from": [{"source": {"notRemoteIpBlocks": ["10.1.0.0/16"]}}]})), allow_all]}),
        ),
        (
            "ports",
            json!({"policies": [deny("deny-port", json!({"to": [{"operation": {"ports": ["8443"]}}]})), allow_all]}),
        ),
        (
            "destination.ip",
            json!({"policies": [deny("deny-ip", json!({"when": [{"key": "destination.ip", "values": ["10.0.0.9"]}]})), allow_all]}),
        ),
        (
            "connection.sni",
            json!({"policies": [deny("deny-sni", json!({"when": [{"key": "connection.sni", "values": ["outbound.istio-egressgateway.istio-system"]}]})), allow_all]}),
        ),
        (
            "connection.protocol",
            json!({"policies": [deny("deny-h2", json!({"when": [{"key": "connection.protocol", "values": ["http2"]}]})), allow_all]}),
        ),
        (
            "rate limit keyed by source.ip",
            json!({"policies": [allow_all], "rateLimits": [
                {"name": "per-ip", "key": ["source.ip"], "maxTokens": 1, "tokensPerFill": 1, "fillInterval": "1h"}]}),
        ),
        (
            "rate limit keyed by destination.port",
            json!({"policies": [allow_all], "rateLimits": [
                {"name": "per-port", "key": ["destination.port"], "maxTokens": 1, "tokensPerFill": 1, "fillInterval": "1h"}]}),
        ),
        (
            "tiers with an admin rule on ipBlocks",
            json!({"tiers": {"default": "ALLOW", "admin": [{"name": "block-subnet", "priority": 1,
                "rules": [{"name": "subnet", "action": "DENY", "from": [{"source": {"ipBlocks": ["10.1.0.0/16"]}}]}]}]}}),
        ),
        (
            "protocol checks",
            json!({"policies": [allow_all], "protocol": {"http": {"requireSniMatch": true}}}),
        ),
    ]
}

/// Requests that differ in each property those configurations look at.
fn varied_requests() -> Vec<HttpRequest> {
    let mut requests = Vec::new();
    for (source, destination, sni, protocol) in [
        (
            "10.1.2.3:40000",
            "10.0.0.9:8443",
            Some("outbound.istio-egressgateway.istio-system"),
            "HTTP/1.1",
        ),
        (
            "10.2.2.3:40000",
            "10.0.0.9:8443",
            Some("api.example.com"),
            "HTTP/2",
        ),
        ("10.1.2.3:40001", "10.0.0.8:443", None, "HTTP/2"),
        (
            "10.2.2.4:40000",
            "10.0.0.8:443",
            Some("api.example.com"),
            "HTTP/1.1",
        ),
    ] {
        // Twice each: the second one meets a spent one-token bucket.
        for _ in 0..2 {
            requests.push(HttpRequest {
                connection: Connection {
                    source: source.parse().unwrap(),
                    destination: destination.parse().unwrap(),
                    sni: sni.map(str::to_string),
                    ..connection()
                },
                protocol: protocol.to_string(),
                ..HttpRequest::get("api.example.com", "/")
            });
        }
    }
    requests
}

#[test]
fn reading_only_what_the_configuration_looks_at_decides_as_reading_everything() {
    for (what, config) in configurations_that_look_at_the_connection() {
        let mut everything = deploy(&config);
        let mut needed = deploy(&unlogged(&config));
        let mut statuses = Vec::new();
        for (i, request) in varied_requests().iter().enumerate() {
            let a = everything.worker(0).http(request).unwrap();
            let b = needed.worker(0).http(request).unwrap();
            assert_eq!(
                (a.status(), state(&a)),
                (b.status(), state(&b)),
                "{what}, request {i}: {:?}",
                b.logs
            );
            statuses.push(a.status());
        }
        // Each configuration tells some of these requests apart: the property mattered.
        assert!(
            statuses.contains(&None) && statuses.iter().any(Option::is_some),
            "{what}: {statuses:?}"
        );
    }
}

#[test]
fn a_configuration_that_looks_at_nothing_more_reads_nothing_more() {
    // Without a principal rule the peer certificate is still read: the identity is always known.
    let config = json!({"log": {"allowed": false}, "policies": [
        {"name": "allow-api", "rules": [{"to": [{"operation": {"hosts": ["api.example.com"]}}]}]}]});
    let mut gateway = deploy(&config);
    let outcome = gateway.worker(0).http(&request("api.example.com")).unwrap();
    assert_eq!(
        outcome.properties_read,
        ["connection.uri_san_peer_certificate"]
    );

    // One rule on ports adds the destination, and only that.
    let config = json!({"log": {"allowed": false}, "policies": [
        {"name": "allow-api", "rules": [{"to": [{"operation": {"hosts": ["api.example.com"], "ports": ["8443"]}}]}]}]});
    let mut gateway = deploy(&config);
    let outcome = gateway.worker(0).http(&request("api.example.com")).unwrap();
    assert_eq!(outcome.status(), None);
    assert_eq!(
        outcome.properties_read,
        ["connection.uri_san_peer_certificate", "destination.address"]
    );

    // Logging every decision reads everything, before the decision.
    let mut gateway = deploy(&hosts_only());
    let outcome = gateway.worker(0).http(&request("api.example.com")).unwrap();
    assert_eq!(
        outcome.properties_read,
        [
            "connection.uri_san_peer_certificate",
            "source.address",
            "destination.address",
            "connection.requested_server_name",
            "request.protocol"
        ]
    );
}
