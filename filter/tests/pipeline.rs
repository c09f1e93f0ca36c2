//! The whole per-stream decision natively: `rateLimits` and `protocol` read from pluginConfig
//! JSON (located errors), and the order policies → protocol checks → rate limits.

use egress_filter::attributes::{Attributes, HttpAttributes, RequestHead};
use egress_filter::protocol::HttpViolation;
use egress_filter::ratelimit::MemoryStore;
use egress_filter::{CompiledConfig, FinalVerdict, ProtocolViolation};

fn compile(json: &str) -> CompiledConfig {
    CompiledConfig::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{json}"))
}

fn error(json: &str) -> String {
    CompiledConfig::from_json(json.as_bytes())
        .err()
        .unwrap_or_else(|| panic!("accepted: {json}"))
        .to_string()
}

fn request(principal: &str, authority: &str, tenant: Option<&str>) -> Attributes {
    let headers: Vec<(&str, &str)> = tenant.map(|t| ("x-tenant", t)).into_iter().collect();
    let head = RequestHead {
        authority: Some(authority),
        method: Some("GET"),
        path: Some("/"),
        protocol: Some("HTTP/1.1"),
        headers: &headers,
        ..RequestHead::default()
    };
    let http = HttpAttributes::from_request(&head, &["x-tenant".to_string()]).unwrap();
    Attributes::default()
        .with_principal(principal)
        .with_http(http)
}

const NS: u64 = 1_000_000_000;

#[test]
fn rate_limit_and_protocol_errors_are_located() {
    let cases = [
        (
            r#"{"rateLimits":[{"name":"a","maxTokens":1,"fillInterval":"1s"},{"name":"b","maxTokens":1,"fillInterval":"10ms"}]}"#,
            r#"rateLimits[1].fillInterval: "10ms" is below the 50ms minimum"#,
        ),
        (
            r#"{"rateLimits":[{"name":"a","maxTokens":1,"fillInterval":"1s","match":{"to":[{"operation":{"ports":["https"]}}]}}]}"#,
            r#"rateLimits[0].match.to[0].operation.ports[0]: "https" is not a port"#,
        ),
        (
            r#"{"rateLimits":[{"name":"a","fillInterval":"1s"}]}"#,
            "rateLimits[0]: missing field `maxTokens`",
        ),
        (
            r#"{"rateLimits":[{"name":"a","maxTokens":-1,"fillInterval":"1s"}]}"#,
            "rateLimits[0].maxTokens: -1 is not an integer in 0..=4294967295",
        ),
        (
            r#"{"rateLimits":[{"name":"a","maxTokens":1,"fillInterval":"1s","burst":2}]}"#,
            "rateLimits[0].burst: unknown field `burst`, expected one of `name`, `match`, `key`, `maxTokens`, `tokensPerFill`, `fillInterval`, `maxKeys`, `global`",
        ),
        (
            r#"{"protocol":{"tcp":{"tlsPorts":[443,70000]}}}"#,
            "protocol.tcp.tlsPorts[1]: 70000 is not a port (1..=65535)",
        ),
        (
            r#"{"protocol":{"udp":{}}}"#,
            "protocol.udp: unknown field `udp`, expected one of `http`, `tcp`",
        ),
        (
            r#"{"policies":[{"name":"p","rules":[{"when":[{"key":"connection.protocol","values":["TLS"]}]}]}]}"#,
            r#"policies[0].rules[0].when[0].values[0]: "TLS" is not one of tls, http1, http2, http3, ssh, unknown"#,
        ),
    ];
    for (json, expected) in cases {
        assert_eq!(error(json), expected, "{json}");
    }
}

#[test]
fn denied_and_protocol_refused_streams_take_no_token() {
    let config = compile(
        r#"{"policies":[{"name":"no-evil","action":"DENY","rules":[{"to":[{"operation":{"hosts":["evil.example"]}}]}]}],
            "rateLimits":[{"name":"one","maxTokens":1,"fillInterval":"1s"}]}"#,
    );
    let store = MemoryStore::new();
    let evil = request("cluster.local/ns/a/sa/x", "evil.example", None);
    let ok = request("cluster.local/ns/a/sa/x", "api.example.com", None);
    let denied = config.decide(&evil, None, &store, 5 * NS);
    assert_eq!(denied.verdict(), FinalVerdict::Deny);
    assert_eq!(denied.reason(), "denied_by_policy");
    assert!(denied.rate_limit.is_none());
    let refused = config.decide(
        &ok,
        Some(ProtocolViolation::Http(HttpViolation::ConnectNotAllowed)),
        &store,
        5 * NS,
    );
    assert_eq!(refused.verdict(), FinalVerdict::Deny);
    assert_eq!(refused.reason(), "http_connect_not_allowed");
    assert!(store.is_empty(), "no bucket was touched");
    let first = config.decide(&ok, None, &store, 5 * NS);
    assert_eq!(first.verdict(), FinalVerdict::Allow);
    let second = config.decide(&ok, None, &store, 5 * NS);
    assert_eq!(second.verdict(), FinalVerdict::RateLimited);
    assert_eq!(second.reason(), "rate_limited");
    assert_eq!(second.reply_body(), "egress rate limited by one\n");
    assert_eq!(
        config.decide(&ok, None, &store, 6 * NS).verdict(),
        FinalVerdict::Allow
    );
}

#[test]
fn every_matching_limit_takes_a_token_and_the_most_restrictive_answers() {
    let config = compile(
        r#"{"rateLimits":[
            {"name":"wide","maxTokens":10,"fillInterval":"1s"},
            {"name":"per-tenant","key":["request.headers[X-Tenant]"],"maxTokens":2,"fillInterval":"1s"},
            {"name":"other-host","match":{"to":[{"operation":{"hosts":["other.example"]}}]},"maxTokens":1,"fillInterval":"1s"}]}"#,
    );
    assert_eq!(config.header_names(), ["x-tenant"]);
    let store = MemoryStore::new();
    let t1 = request("cluster.local/ns/a/sa/x", "api.example.com", Some("t1"));
    let t2 = request("cluster.local/ns/a/sa/x", "api.example.com", Some("t2"));
    for _ in 0..2 {
        let o = config.decide(&t1, None, &store, NS);
        assert_eq!(o.verdict(), FinalVerdict::Allow);
        assert_eq!(o.rate_limit.as_ref().unwrap().matched, 2);
    }
    let limited = config.decide(&t1, None, &store, NS);
    assert_eq!(limited.verdict(), FinalVerdict::RateLimited);
    let hit = limited.rate_limit.unwrap();
    assert_eq!(&*hit.decision.limit_name, "per-tenant");
    assert_eq!(hit.key, "2:t1");
    // Another tenant has its own bucket; the wide limit has taken 3 + 1 tokens.
    let other = config.decide(&t2, None, &store, NS);
    assert_eq!(other.verdict(), FinalVerdict::Allow);
    assert_eq!(
        other.rate_limit.unwrap().decision.limit_name.as_ref(),
        "per-tenant"
    );
}

#[test]
fn inspection_is_needed_only_when_something_reads_its_facts() {
    assert!(!compile(r#"{"policies":[{"name":"p","rules":[{}]}]}"#).tcp_needs_inspection());
    assert!(compile(r#"{"protocol":{}}"#).tcp_needs_inspection());
    assert!(compile(
        r#"{"policies":[{"name":"p","rules":[{"when":[{"key":"connection.alpn","values":["h2"]}]}]}]}"#
    )
    .tcp_needs_inspection());
}
