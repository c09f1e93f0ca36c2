//! What an HTTP request reads before its decision, worked out when a configuration is applied
//! (docs/config.md, "`log.allowed`"): each connection property is read only when some rule,
//! rate limit key or check can look at it.

use egress_filter::{CompiledConfig, Reads};

fn reads(json: &str) -> Reads {
    CompiledConfig::from_json(json.as_bytes())
        .unwrap_or_else(|e| panic!("{json}: {e}"))
        .http_reads()
}

fn policy(rule: &str) -> String {
    format!(r#"{{"policies":[{{"name":"p","action":"DENY","rules":[{rule}]}}]}}"#)
}

fn limit(key: &str) -> String {
    format!(
        r#"{{"rateLimits":[{{"name":"l","key":[{key}],"maxTokens":1,"tokensPerFill":1,"fillInterval":"1s"}}]}}"#
    )
}

#[test]
fn each_property_is_read_when_something_looks_at_it() {
    use Reads as R;
    let cases: Vec<(String, Reads)> = vec![
        (r#"{}"#.into(), R::NONE),
        (
            policy(r#"{"to":[{"operation":{"hosts":["a.example"],"methods":["GET"]}}]}"#),
            R::NONE,
        ),
        (
            policy(r#"{"from":[{"source":{"principals":["*"],"namespaces":["a"]}}]}"#),
            R::NONE,
        ),
        (
            policy(r#"{"from":[{"source":{"ipBlocks":["10.0.0.0/8"]}}]}"#),
            R::SOURCE,
        ),
        (
            policy(r#"{"from":[{"source":{"notRemoteIpBlocks":["10.0.0.0/8"]}}]}"#),
            R::SOURCE,
        ),
        (
            policy(r#"{"when":[{"key":"source.ip","values":["10.0.0.1"]}]}"#),
            R::SOURCE,
        ),
        (
            policy(r#"{"to":[{"operation":{"notPorts":["443"]}}]}"#),
            R::DESTINATION,
        ),
        (
            policy(r#"{"when":[{"key":"destination.ip","values":["10.0.0.1"]}]}"#),
            R::DESTINATION,
        ),
        (
            policy(r#"{"when":[{"key":"connection.sni","values":["a.example"]}]}"#),
            R::SNI,
        ),
        (
            policy(r#"{"when":[{"key":"connection.protocol","values":["http2"]}]}"#),
            R::PROTOCOL,
        ),
        (limit(r#""source.principal","request.headers[x-team]""#), R::NONE),
        (limit(r#""source.ip""#), R::SOURCE),
        (limit(r#""destination.port""#), R::DESTINATION),
        (limit(r#""destination.host""#), R::SNI),
        (limit(r#""connection.sni""#), R::SNI),
        (
            r#"{"protocol":{"http":{"requireSniMatch":true}}}"#.into(),
            R::SNI | R::PROTOCOL,
        ),
        (
            r#"{"rateLimits":[{"name":"g","key":["source.principal"],"maxTokens":1,"fillInterval":"1s",
                "global":{"cluster":"outbound|8081||limitador.limitador.svc.cluster.local","domain":"egress"}}]}"#
                .into(),
            R::ALL,
        ),
        (
            r#"{"tiers":{"default":"ALLOW","baseline":[{"name":"b","priority":1,
                "rules":[{"name":"r","action":"DENY","to":[{"operation":{"ports":["25"]}}]}]}]}}"#
                .into(),
            R::DESTINATION,
        ),
        (
            r#"{"tiers":{"default":"DENY","namespaces":{"ci":[{"name":"p",
                "rules":[{"from":[{"source":{"ipBlocks":["10.0.0.0/8"]}}]}]}]}}}"#
                .into(),
            R::SOURCE,
        ),
        (
            r#"{"rateLimits":[{"name":"l","match":{"to":[{"operation":{"ports":["443"]}}]},
                "maxTokens":1,"tokensPerFill":1,"fillInterval":"1s"}]}"#
                .into(),
            R::DESTINATION,
        ),
    ];
    for (json, expected) in cases {
        assert_eq!(reads(&json), expected, "{json}");
    }
}

#[test]
fn what_is_read_adds_up() {
    let json = r#"{"policies":[
        {"name":"a","action":"DENY","rules":[{"from":[{"source":{"ipBlocks":["10.0.0.0/8"]}}]}]},
        {"name":"b","rules":[{"to":[{"operation":{"ports":["443"]}}]}]}]}"#;
    let got = reads(json);
    assert!(got.contains(Reads::SOURCE) && got.contains(Reads::DESTINATION));
    assert!(!got.contains(Reads::SNI) && !got.contains(Reads::PROTOCOL));
    assert_eq!(Reads::ALL.without(got), Reads::SNI | Reads::PROTOCOL);
}
