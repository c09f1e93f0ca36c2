//! Protocol checks of the real `egress_filter.wasm` through the host: TLS ClientHellos captured
//! from real clients (whole and split across reads), other protocols on a TLS port, domain
//! fronting and CONNECT over HTTP, and inspection facts in policy rules.

mod common;

use std::path::Path;

use base64::Engine as _;
use common::egress_filter;
use egress_sim::replay::{self, Decision, ReplayResult};
use egress_sim::{Deployment, Host, HostOptions, PluginConfig, VmConfig};

fn deploy(config: &str) -> Deployment {
    deploy_with(config, HostOptions::default())
}

fn deploy_with(config: &str, options: HostOptions) -> Deployment {
    Host::from_file(&egress_filter(), VmConfig::default(), options)
        .unwrap_or_else(|e| panic!("{e}"))
        .start(
            vec![
                PluginConfig::http("egress-guard", "egress-guard", config),
                PluginConfig::network("egress-guard-tcp", "egress-guard-tcp", config),
            ],
            2,
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}", e.logs()))
}

/// A ClientHello captured from a real client (`filter/tests/data/tls`).
fn hello(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../filter/tests/data/tls")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn tcp_line(id: &str, sni: Option<&str>, port: u16, data: &[u8]) -> String {
    let sni = sni.map_or(String::new(), |s| format!(r#""sni":"{s}","#));
    format!(
        r#"{{"id":"{id}",{sni}"destination":{{"port":{port}}},"tcp":{{"data_base64":"{}"}}}}"#,
        b64(data)
    )
}

fn replay(deployment: &mut Deployment, lines: &[String]) -> Vec<ReplayResult> {
    let items = replay::parse_requests(&lines.join("\n")).unwrap();
    replay::run(deployment, &items).unwrap()
}

fn field(result: &ReplayResult, key: &str) -> String {
    replay::decision_log(&result.logs)
        .unwrap_or_else(|| panic!("{}: no decision line", result.id))
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

const TLS_ON_443: &str =
    r#"{"protocol": {"tcp": {"tlsPorts": [443], "allowedAlpn": ["h2", "http/1.1"]}}}"#;

#[test]
fn real_client_hellos_are_inspected_whole_and_split_across_reads() {
    let mut deployment = deploy(TLS_ON_443);
    let curl = hello("curl.bin");
    // Split into uneven reads: the record header itself is cut in two.
    let cuts = [3usize, 10, 64, 200];
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts.iter().copied().chain([curl.len()]) {
        chunks.push(format!("\"{}\"", b64(&curl[start..cut])));
        start = cut;
    }
    let split = format!(
        r#"{{"id":"curl-split","sni":"api.example.com","destination":{{"port":443}},"tcp":{{"chunks_base64":[{}]}}}}"#,
        chunks.join(",")
    );
    let lines = vec![
        tcp_line("curl", Some("api.example.com"), 443, &curl),
        split,
        tcp_line(
            "openssl-h2",
            Some("api.example.com"),
            443,
            &hello("openssl_s_client_h2.bin"),
        ),
        tcp_line("fronted", Some("other.example.com"), 443, &curl),
        tcp_line("no-sni", None, 443, &hello("openssl_s_client_no_sni.bin")),
        tcp_line(
            "ssh-on-443",
            None,
            443,
            b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
        ),
        tcp_line(
            "http-on-443",
            None,
            443,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        tcp_line(
            "garbage-tls",
            None,
            443,
            &[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
        tcp_line("ssh-on-22", None, 22, b"SSH-2.0-OpenSSH_9.2p1\r\n"),
    ];
    let results = replay(&mut deployment, &lines);
    let by_id = |id: &str| results.iter().find(|r| r.id == id).unwrap();
    for id in ["curl", "curl-split", "openssl-h2", "ssh-on-22"] {
        assert_eq!(
            by_id(id).decision,
            Decision::Allow,
            "{id}: {:?}",
            by_id(id).logs
        );
    }
    // Nothing is held back or lost: the whole ClientHello goes upstream once allowed.
    let outcome = deployment
        .worker(0)
        .tcp(&egress_sim::TcpStream {
            connection: egress_sim::Connection {
                sni: Some("api.example.com".into()),
                destination: "10.0.0.2:443".parse().unwrap(),
                ..egress_sim::Connection::default()
            },
            downstream: vec![curl[..100].to_vec(), curl[100..].to_vec()],
            ..egress_sim::TcpStream::default()
        })
        .unwrap();
    assert_eq!(outcome.forwarded_bytes, curl);

    for (id, reason) in [
        ("fronted", "tls_sni_mismatch"),
        ("no-sni", "tls_sni_missing"),
        ("ssh-on-443", "tcp_not_tls"),
        ("http-on-443", "tcp_not_tls"),
    ] {
        let r = by_id(id);
        assert_eq!(r.decision, Decision::Deny, "{id}");
        assert_eq!(field(r, "decision"), "deny", "{id}");
        assert_eq!(field(r, "reason"), reason, "{id}: {:?}", r.logs);
        assert!(
            !field(r, "detail").is_empty(),
            "{id}: the log says what failed"
        );
    }
    // Unparseable input on a TLS port is denied, never passed.
    assert_eq!(by_id("garbage-tls").decision, Decision::Deny);
    let metrics = deployment.host().shared().metrics.snapshot();
    let denied = metrics
        .iter()
        .find(|m| m.name == "egress_filter.protocol_denied.tcp")
        .map(|m| m.value);
    assert_eq!(denied, Some(5));
}

#[test]
fn tls_version_and_alpn_limits() {
    let mut deployment = deploy(
        r#"{"protocol": {"tcp": {"tlsPorts": [443], "minTlsVersion": "1.3", "allowedAlpn": ["h2"]}}}"#,
    );
    let lines = vec![
        tcp_line(
            "tls12",
            Some("legacy.example.org"),
            443,
            &hello("openssl_s_client_tls12.bin"),
        ),
        tcp_line(
            "h2-and-http1",
            Some("api.example.com"),
            443,
            &hello("curl.bin"),
        ),
    ];
    let results = replay(&mut deployment, &lines);
    assert_eq!(field(&results[0], "reason"), "tls_version_too_low");
    assert_eq!(field(&results[1], "reason"), "tls_alpn_not_allowed");
    assert!(results.iter().all(|r| r.decision == Decision::Deny));
}

#[test]
fn inspection_facts_are_rule_keys() {
    // Only TLS 1.3 clients and SSH to port 22; the policy waits for the first bytes.
    let config = r#"{"policies": [{"name": "modern-tls", "rules": [
        {"to": [{"operation": {"ports": [443]}}],
         "when": [{"key": "connection.protocol", "values": ["tls"]},
                  {"key": "connection.tls_version", "values": ["1.3"]},
                  {"key": "connection.alpn", "values": ["h2"]}]},
        {"to": [{"operation": {"ports": [22]}}],
         "when": [{"key": "connection.protocol", "values": ["ssh"]}]}]}]}"#;
    let mut deployment = deploy(config);
    let lines = vec![
        tcp_line("tls13-h2", Some("api.example.com"), 443, &hello("curl.bin")),
        tcp_line(
            "tls12",
            Some("legacy.example.org"),
            443,
            &hello("openssl_s_client_tls12.bin"),
        ),
        tcp_line("ssh", None, 22, b"SSH-2.0-OpenSSH_9.2p1\r\n"),
        tcp_line("http-on-22", None, 22, b"GET / HTTP/1.1\r\n\r\n"),
    ];
    let results = replay(&mut deployment, &lines);
    let decisions: Vec<Decision> = results.iter().map(|r| r.decision).collect();
    assert_eq!(
        decisions,
        [
            Decision::Allow,
            Decision::Deny,
            Decision::Allow,
            Decision::Deny
        ]
    );
    assert_eq!(field(&results[0], "policy"), "modern-tls");
    assert_eq!(field(&results[1], "reason"), "no_allow_policy_matched");
    let log = replay::decision_log(&results[0].logs).unwrap();
    assert_eq!(log["attributes"]["connection.tls_version"], "1.3");
    assert_eq!(
        log["attributes"]["connection.alpn"],
        serde_json::json!(["h2", "http/1.1"])
    );
}

#[test]
fn http_domain_fronting_and_connect_are_refused() {
    // HTTP/1.0 reaches filters only where the listener accepts it (`accept_http_10`).
    let options = HostOptions {
        accept_http_10: true,
        ..HostOptions::default()
    };
    let mut deployment = deploy_with(r#"{"protocol": {}}"#, options);
    let lines = vec![
        r#"{"id":"same","sni":"api.example.com","http":{"authority":"api.example.com","path":"/"}}"#.to_string(),
        r#"{"id":"fronted","sni":"allowed-cdn.example.com","http":{"authority":"blocked.example.net","path":"/"}}"#.to_string(),
        r#"{"id":"connect","http":{"method":"CONNECT","authority":"db.example.com:5432"}}"#.to_string(),
        r#"{"id":"http10","http":{"authority":"a.example","protocol":"HTTP/1.0"}}"#.to_string(),
    ];
    let results = replay(&mut deployment, &lines);
    assert_eq!(
        results[0].decision,
        Decision::Allow,
        "{:?}",
        results[0].logs
    );
    for (r, reason) in results[1..].iter().zip([
        "http_sni_mismatch",
        "http_connect_not_allowed",
        "http_version_not_allowed",
    ]) {
        assert_eq!(
            (r.decision, r.status),
            (Decision::Deny, Some(403)),
            "{}",
            r.id
        );
        assert_eq!(field(r, "reason"), reason, "{}", r.id);
        assert!(r.body.as_deref().unwrap_or("").contains(reason), "{}", r.id);
    }
}

#[test]
fn policies_decide_before_protocol_checks() {
    let config = r#"{"policies": [{"name": "no-evil", "action": "DENY",
        "rules": [{"to": [{"operation": {"hosts": ["evil.example"]}}]}]}], "protocol": {}}"#;
    let mut deployment = deploy(config);
    let lines = vec![
        r#"{"id":"evil-connect","http":{"method":"CONNECT","authority":"evil.example:443"}}"#
            .to_string(),
    ];
    let results = replay(&mut deployment, &lines);
    assert_eq!(field(&results[0], "reason"), "denied_by_policy");
    assert_eq!(field(&results[0], "policy"), "no-evil");
}
