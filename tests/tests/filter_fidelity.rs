//! Requests built to exploit the places where Envoy's view of a stream differs from a naive
//! one (repeated headers, authority and path, identity and TLS properties, TCP ordering), sent
//! through the real `egress_filter.wasm`: each is decided as Envoy's RBAC would, or refused.
//! The host's side of each behaviour is pinned in `host_fidelity.rs`; the table is
//! `docs/envoy-fidelity.md`.

mod common;

use std::path::Path;

use common::egress_filter;
use egress_sim::abi::Action;
use egress_sim::replay;
use egress_sim::{
    Connection, Deployment, Direction, Host, HostOptions, HttpRequest, PluginConfig, StreamOutcome,
    StreamResult, TcpEvent, TcpStream, VmConfig,
};
use serde_json::{Map, Value};

fn host(options: HostOptions) -> Host {
    Host::from_file(&egress_filter(), VmConfig::default(), options)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn deploy_on(host: &Host, config: &str) -> Deployment {
    host.start(
        vec![
            PluginConfig::http("egress-guard", "egress-guard", config),
            PluginConfig::network("egress-guard-tcp", "egress-guard-tcp", config),
        ],
        1,
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", e.logs()))
}

fn deploy(config: &str) -> Deployment {
    deploy_on(&host(HostOptions::default()), config)
}

fn decision(outcome: &StreamOutcome) -> Map<String, Value> {
    replay::decision_log(&replay::log_lines(outcome))
        .unwrap_or_else(|| panic!("no decision line in {:?}", outcome.logs))
}

fn field(d: &Map<String, Value>, name: &str) -> String {
    d.get(name)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn attribute(d: &Map<String, Value>, name: &str) -> Value {
    d.get("attributes")
        .and_then(|a| a.get(name))
        .cloned()
        .unwrap_or(Value::Null)
}

fn status(outcome: &StreamOutcome) -> Option<u32> {
    outcome.status()
}

fn hello(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../filter/tests/data/tls")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// 1. Repeated headers: judged on the joined value, as RBAC's header matcher judges them
// ---------------------------------------------------------------------------------------------

#[test]
fn a_smuggled_second_x_team_header_is_judged_like_rbac() {
    let allow_team_a = r#"{"policies": [{"name": "team-a", "action": "ALLOW",
        "rules": [{"when": [{"key": "request.headers[x-team]", "values": ["a"]}]}]}]}"#;
    let mut deployment = deploy(allow_team_a);
    let request = |teams: &[&str]| HttpRequest {
        headers: teams
            .iter()
            .map(|t| ("x-team".into(), (*t).into()))
            .collect(),
        ..HttpRequest::get("api.example.com", "/")
    };
    let outcome = deployment.worker(0).http(&request(&["a"])).unwrap();
    assert_eq!(outcome.result, StreamResult::Continued);
    // `x-team: a` then `x-team: b`: RBAC sees "a,b", which is not "a".
    let outcome = deployment.worker(0).http(&request(&["a", "b"])).unwrap();
    assert_eq!(status(&outcome), Some(403));
    let d = decision(&outcome);
    assert_eq!(
        attribute(&d, "request.headers")["x-team"],
        Value::from("a,b")
    );

    // A DENY on "b" does not match "a,b" either: Istio lets it through, and so does the filter.
    let deny_team_b = r#"{"policies": [{"name": "no-team-b", "action": "DENY",
        "rules": [{"when": [{"key": "request.headers[x-team]", "values": ["b"]}]}]}]}"#;
    let mut deployment = deploy(deny_team_b);
    let outcome = deployment.worker(0).http(&request(&["b"])).unwrap();
    assert_eq!(status(&outcome), Some(403));
    let outcome = deployment.worker(0).http(&request(&["a", "b"])).unwrap();
    assert_eq!(outcome.result, StreamResult::Continued);
}

// ---------------------------------------------------------------------------------------------
// 2. Authority and path
// ---------------------------------------------------------------------------------------------

const ALLOW_EXAMPLE_COM: &str = r#"{"policies": [{"name": "example", "action": "ALLOW",
    "rules": [{"to": [{"operation": {"hosts": ["*.example.com"]}}]}]}]}"#;

/// A second `Host` line folds into `:authority: api.example.com,evil.example`; a `,` is never
/// part of a host name, so the filter refuses it instead of matching `*.example.com`.
#[test]
fn a_folded_duplicate_host_is_refused() {
    let mut deployment = deploy(ALLOW_EXAMPLE_COM);
    for (authority, extra) in [
        ("api.example.com", "evil.example"),
        ("evil.example", "api.example.com"),
    ] {
        let outcome = deployment
            .worker(0)
            .http(&HttpRequest {
                headers: vec![("host".into(), extra.into())],
                ..HttpRequest::get(authority, "/")
            })
            .unwrap();
        assert_eq!(status(&outcome), Some(403), "{authority} + {extra}");
        assert_eq!(field(&decision(&outcome), "reason"), "cannot_evaluate");
    }
    // The protocol checks refuse it by name too.
    let mut deployment = deploy(r#"{"protocol": {}}"#);
    let outcome = deployment
        .worker(0)
        .http(&HttpRequest {
            headers: vec![("host".into(), "evil.example".into())],
            ..HttpRequest::get("api.example.com", "/")
        })
        .unwrap();
    assert_eq!(status(&outcome), Some(403));
}

/// `GET http://evil.example/x` with `Host: api.example.com`: Envoy takes the authority from
/// the URL, and so is the request judged.
#[test]
fn an_absolute_form_target_is_judged_on_its_own_host() {
    let mut deployment = deploy(ALLOW_EXAMPLE_COM);
    let outcome = deployment
        .worker(0)
        .http(&HttpRequest {
            headers: vec![("host".into(), "api.example.com".into())],
            ..HttpRequest::get("api.example.com", "http://evil.example/x")
        })
        .unwrap();
    assert_eq!(status(&outcome), Some(403));
    assert_eq!(
        attribute(&decision(&outcome), "request.host"),
        Value::from("evil.example")
    );
    let outcome = deployment
        .worker(0)
        .http(&HttpRequest::get(
            "api.example.com",
            "http://api.example.com/x",
        ))
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Continued);
}

/// The filter's path is the one RBAC matches under Istio's gateway defaults (normalised,
/// query cut); paths that an upstream decoding `%2F` or merging slashes would resolve elsewhere
/// are refused.
#[test]
fn path_exploits_are_denied_and_plain_paths_match_as_rbac_sees_them() {
    let config = r#"{"policies": [{"name": "public-only", "action": "ALLOW",
        "rules": [{"to": [{"operation": {"paths": ["/public/*"]}}]}]}]}"#;
    let mut deployment = deploy(config);
    for path in [
        "/public/%2e%2e/admin",
        "/public/../admin",
        "/public/%2E%2E/%61dmin",
        "/public/..%2Fadmin",
        "/public/%2e%2e%2fadmin",
        "/public/..%5Cadmin",
        "/public\\..\\admin",
    ] {
        let outcome = deployment
            .worker(0)
            .http(&HttpRequest::get("api.example.com", path))
            .unwrap();
        assert_eq!(status(&outcome), Some(403), "{path}");
    }
    for (path, rbac_view) in [
        ("/public/docs?x=/admin", "/public/docs"),
        ("/public/a/../b", "/public/b"),
        ("/public/group%2Frepo", "/public/group%2Frepo"),
        ("/public/%7Euser", "/public/~user"),
        ("/public/x#/admin", "/public/x"),
        // Envoy resolves the `..` against the empty segment and forwards `/public/admin`.
        ("/public//../admin", "/public/admin"),
    ] {
        let outcome = deployment
            .worker(0)
            .http(&HttpRequest::get("api.example.com", path))
            .unwrap();
        assert_eq!(outcome.result, StreamResult::Continued, "{path}");
        // What went upstream is Envoy's normalised path; the filter matched the same.
        let sent = outcome
            .forwarded_request_headers
            .as_ref()
            .unwrap()
            .iter()
            .find(|(k, _)| k == ":path")
            .map(|(_, v)| v.split('?').next().unwrap_or("").to_string())
            .unwrap();
        assert_eq!(sent, rbac_view, "{path}");
        assert_eq!(
            attribute(&decision(&outcome), "request.normalized_path"),
            Value::from(rbac_view),
            "{path}"
        );
    }
}

/// With the mesh's normalisation off (`pathNormalization: NONE`) Envoy forwards the path as
/// sent and RBAC matches it raw; the filter still normalises, and refuses what an upstream
/// merging slashes would resolve elsewhere.
#[test]
fn without_envoy_normalisation_the_filter_still_normalises() {
    let options = HostOptions {
        path_normalization: egress_sim::PathNormalization::None,
        ..HostOptions::default()
    };
    let config = r#"{"policies": [{"name": "public-only", "action": "ALLOW",
        "rules": [{"to": [{"operation": {"paths": ["/public/*"]}}]}]}]}"#;
    let mut deployment = deploy_on(&host(options), config);
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public//../admin",
    ] {
        let outcome = deployment
            .worker(0)
            .http(&HttpRequest::get("api.example.com", path))
            .unwrap();
        assert_eq!(status(&outcome), Some(403), "{path}");
    }
    let outcome = deployment
        .worker(0)
        .http(&HttpRequest::get("api.example.com", "/public/a/../b"))
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Continued);
}

#[test]
fn http3_requests_have_a_connection_protocol() {
    let config = r#"{"policies": [{"name": "h3", "action": "ALLOW",
        "rules": [{"when": [{"key": "connection.protocol", "values": ["http3"]}]}]}]}"#;
    let mut deployment = deploy(config);
    let request = |protocol: &str| HttpRequest {
        protocol: protocol.into(),
        ..HttpRequest::get("api.example.com", "/")
    };
    let outcome = deployment.worker(0).http(&request("HTTP/3")).unwrap();
    assert_eq!(outcome.result, StreamResult::Continued);
    let outcome = deployment.worker(0).http(&request("HTTP/2")).unwrap();
    assert_eq!(status(&outcome), Some(403));
}

// ---------------------------------------------------------------------------------------------
// 3. Identity: certificate, waypoint filter state, handshake timing
// ---------------------------------------------------------------------------------------------

const ALLOW_DEV_APP: &str = r#"{"policies": [{"name": "dev-app", "action": "ALLOW",
    "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/dev/sa/app"]}}]}]}]}"#;

#[test]
fn the_principal_comes_from_the_certificate_or_a_waypoints_filter_state() {
    let mut deployment = deploy(ALLOW_DEV_APP);
    let mut run = |connection: Connection| {
        deployment
            .worker(0)
            .http(&HttpRequest {
                connection,
                ..HttpRequest::get("api.example.com", "/")
            })
            .unwrap()
    };
    let mtls = run(Connection {
        principal: Some("cluster.local/ns/dev/sa/app".into()),
        ..Connection::default()
    });
    assert_eq!(mtls.result, StreamResult::Continued);
    let waypoint = run(Connection::waypoint("cluster.local/ns/dev/sa/app"));
    assert_eq!(waypoint.result, StreamResult::Continued);
    assert_eq!(
        attribute(&decision(&waypoint), "source.principal"),
        Value::from("cluster.local/ns/dev/sa/app")
    );
    for denied in [
        Connection::waypoint("cluster.local/ns/other/sa/app"),
        Connection::default(),
        Connection {
            filter_state: vec![(
                egress_sim::WAYPOINT_PEER_PRINCIPAL_KEY.into(),
                b"cluster.local/ns/dev/sa/app".to_vec(),
            )],
            ..Connection::default()
        },
        Connection {
            tls_terminated: true,
            ..Connection::default()
        },
    ] {
        let outcome = run(denied.clone());
        assert_eq!(status(&outcome), Some(403), "{denied:?}");
    }
}

fn mtls_connection() -> Connection {
    Connection {
        principal: Some("cluster.local/ns/dev/sa/app".into()),
        ..Connection::default()
    }
}

/// On a TLS-terminating TCP listener the certificate is known only after the handshake: the
/// filter lets tcp_proxy connect, holds nothing yet, and decides at the first data with the
/// identity.
#[test]
fn mtls_tcp_is_decided_at_the_first_data_with_the_certificate() {
    let mut deployment = deploy(ALLOW_DEV_APP);
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream {
            connection: mtls_connection(),
            downstream: vec![b"hello".to_vec()],
            upstream: vec![b"welcome".to_vec()],
            ..TcpStream::default()
        })
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Continued);
    assert_eq!(outcome.forwarded_bytes, b"hello");
    assert_eq!(outcome.received_bytes, b"welcome");
    assert_eq!(
        attribute(&decision(&outcome), "source.principal"),
        Value::from("cluster.local/ns/dev/sa/app")
    );

    // TLS without a client certificate: decided at the first data, without identity.
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream {
            connection: Connection {
                tls_terminated: true,
                ..Connection::default()
            },
            downstream: vec![b"hello".to_vec()],
            ..TcpStream::default()
        })
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Closed);
    assert!(outcome.forwarded_bytes.is_empty());
}

/// The identity is absent at `on_new_connection` (the handshake has not run): a DENY on the
/// principal cannot match then, so a filter deciding there would let the denied workload
/// through. The filter waits for the certificate and refuses the connection before any of its
/// bytes go upstream; another workload passes.
#[test]
fn a_denied_principal_is_not_let_through_before_its_certificate_arrives() {
    let mut deployment = deploy(
        r#"{"policies": [{"name": "no-dev-app", "action": "DENY",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/dev/sa/app"]}}]}]}]}"#,
    );
    let mut run = |principal: &str| {
        deployment
            .worker(0)
            .tcp(&TcpStream {
                connection: Connection {
                    principal: Some(principal.into()),
                    ..Connection::default()
                },
                downstream: vec![b"hello".to_vec()],
                upstream: vec![b"welcome".to_vec()],
                ..TcpStream::default()
            })
            .unwrap()
    };
    let denied = run("cluster.local/ns/dev/sa/app");
    assert_eq!(denied.result, StreamResult::Closed);
    assert!(denied.forwarded_bytes.is_empty());
    assert!(denied.received_bytes.is_empty());
    assert_eq!(
        attribute(&decision(&denied), "source.principal"),
        Value::from("cluster.local/ns/dev/sa/app")
    );
    let other = run("cluster.local/ns/ci/sa/runner");
    assert_eq!(other.result, StreamResult::Continued);
    assert_eq!(other.forwarded_bytes, b"hello");
}

/// A server that speaks first (SMTP, MySQL) on a connection not yet judged: its bytes never
/// reach the client. If the handshake is over, the identity is there and the filter decides
/// on the spot; otherwise the connection is refused.
#[test]
fn server_bytes_before_the_decision_never_reach_the_client() {
    let mut deployment = deploy(ALLOW_DEV_APP);
    let banner = b"220 mail.example ESMTP".to_vec();
    // Handshake done, then the banner: decided there, and the banner goes through.
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream::scripted(
            mtls_connection(),
            vec![
                TcpEvent::HandshakeComplete,
                TcpEvent::UpstreamData(banner.clone()),
                TcpEvent::ClientData(b"EHLO x".to_vec()),
            ],
        ))
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Continued);
    assert_eq!(outcome.received_bytes, banner);
    assert_eq!(outcome.forwarded_bytes, b"EHLO x");
    // Banner before the handshake: refused, nothing either way.
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream::scripted(
            mtls_connection(),
            vec![
                TcpEvent::UpstreamData(banner.clone()),
                TcpEvent::ClientData(b"EHLO x".to_vec()),
            ],
        ))
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Closed);
    assert!(outcome.received_bytes.is_empty());
    assert!(outcome.forwarded_bytes.is_empty());
    let d = decision(&outcome);
    assert_eq!(field(&d, "reason"), "cannot_evaluate");
    assert!(
        field(&d, "detail").contains("upstream sent data before"),
        "{d:?}"
    );

    // Waiting for a ClientHello: a banner first is refused too, for an allowed SNI as well.
    let mut deployment = deploy(TLS_ON_443);
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream::scripted(
            sni_connection("api.example.com"),
            vec![
                TcpEvent::UpstreamData(banner),
                TcpEvent::ClientData(hello("curl.bin")),
            ],
        ))
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Closed);
    assert!(outcome.received_bytes.is_empty());
    assert!(outcome.forwarded_bytes.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 5. TCP: ClientHello inspection
// ---------------------------------------------------------------------------------------------

const TLS_ON_443: &str =
    r#"{"protocol": {"tcp": {"tlsPorts": [443], "allowedAlpn": ["h2", "http/1.1"]}}}"#;

fn sni_connection(sni: &str) -> Connection {
    Connection {
        sni: Some(sni.into()),
        destination: "10.0.0.2:443".parse().unwrap(),
        ..Connection::default()
    }
}

/// The filter continues `proxy_on_new_connection` (a Pause there would hang the connection in
/// Envoy), holds the client's bytes until the ClientHello is complete, then lets all of them
/// through, or none.
#[test]
fn client_hello_inspection_holds_the_bytes_and_never_stops_the_chain() {
    let mut deployment = deploy(TLS_ON_443);
    let curl = hello("curl.bin");
    let script = vec![
        TcpEvent::ClientData(curl[..100].to_vec()),
        TcpEvent::ClientData(curl[100..].to_vec()),
        TcpEvent::UpstreamData(b"server hello".to_vec()),
    ];
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream::scripted(
            sni_connection("api.example.com"),
            script,
        ))
        .unwrap();
    let calls: Vec<(Direction, usize, Action)> = outcome
        .data_calls
        .iter()
        .map(|c| (c.direction, c.size, c.action))
        .collect();
    assert_eq!(
        calls,
        [
            (Direction::Downstream, 100, Action::Pause),
            (Direction::Downstream, curl.len(), Action::Continue),
            (Direction::Upstream, 12, Action::Continue),
        ]
    );
    assert_eq!(outcome.forwarded_bytes, curl);
    assert_eq!(outcome.received_bytes, b"server hello");

    // Not TLS on a TLS port: refused, nothing goes upstream.
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream {
            connection: sni_connection("api.example.com"),
            downstream: vec![b"GET / HTTP/1.1\r\n\r\n".to_vec()],
            ..TcpStream::default()
        })
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Closed);
    assert!(outcome.forwarded_bytes.is_empty());
}

#[test]
fn a_client_hello_cut_short_by_a_fin_is_refused() {
    let mut deployment = deploy(TLS_ON_443);
    let curl = hello("curl.bin");
    let script = vec![
        TcpEvent::ClientData(curl[..3].to_vec()),
        TcpEvent::ClientData(curl[3..13].to_vec()),
        TcpEvent::ClientFin,
    ];
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream::scripted(
            sni_connection("api.example.com"),
            script,
        ))
        .unwrap();
    let calls: Vec<(usize, bool)> = outcome
        .data_calls
        .iter()
        .map(|c| (c.size, c.end_of_stream))
        .collect();
    assert_eq!(calls, [(3, false), (13, false), (13, true)]);
    assert_eq!(outcome.result, StreamResult::Closed);
    assert!(outcome.forwarded_bytes.is_empty());
    assert_eq!(field(&decision(&outcome), "decision"), "deny");
}

/// A filter before this one drained part of the buffer while the ClientHello was incomplete:
/// the bytes no longer line up with what was inspected, and the connection is refused.
#[test]
fn a_buffer_drained_during_inspection_is_refused() {
    let mut deployment = deploy(TLS_ON_443);
    let curl = hello("curl.bin");
    let script = vec![
        TcpEvent::ClientData(curl[..100].to_vec()),
        TcpEvent::EarlierFilterDrains(90),
        TcpEvent::ClientData(curl[100..110].to_vec()),
    ];
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream::scripted(
            sni_connection("api.example.com"),
            script,
        ))
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Closed);
    assert!(outcome.forwarded_bytes.is_empty());
    assert!(field(&decision(&outcome), "detail").contains("shrank"));
}

/// `maxClientHelloBytes` above the listener's buffer limit: Envoy stops reading before the
/// filter can decide, and the connection stalls (nothing is forwarded).
#[test]
fn a_client_hello_limit_above_the_connection_buffer_limit_stalls() {
    let options = HostOptions {
        connection_buffer_limit: 64,
        ..HostOptions::default()
    };
    let config = r#"{"protocol": {"tcp": {"tlsPorts": [443], "maxClientHelloBytes": 4096}}}"#;
    let mut deployment = deploy_on(&host(options), config);
    let curl = hello("curl.bin");
    let script: Vec<TcpEvent> = curl
        .chunks(50)
        .map(|c| TcpEvent::ClientData(c.to_vec()))
        .collect();
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream::scripted(
            sni_connection("api.example.com"),
            script,
        ))
        .unwrap();
    assert_eq!(outcome.data_calls.len(), 2, "reads stop past 64 bytes");
    assert_eq!(outcome.result, StreamResult::Paused);
    assert!(outcome.forwarded_bytes.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 7 and 9. Metric names, shared data across builds
// ---------------------------------------------------------------------------------------------

/// Istio's default unanchored stats tag extractors (`tools/packaging/common/
/// envoy_bootstrap.json`), as plain checks: none may match a counter the filter defines, or the
/// counter would lose part of its name to a tag.
fn istio_tag_extractor_hit(name: &str) -> Option<&'static str> {
    let after = |needle: &str| name.find(needle).map(|at| &name[at + needle.len()..]);
    // (cache\.(.+?)\.), (component\.(.+?)\.), (wasm_filter\.(.+?)\.): a segment ending so,
    // followed by at least two more dots' worth of name.
    for (needle, regex) in [
        ("cache.", "cache"),
        ("component.", "component"),
        ("wasm_filter.", "wasm_filter"),
    ] {
        if after(needle).is_some_and(|rest| rest.len() > 1 && rest[1..].contains('.')) {
            return Some(regex);
        }
    }
    for (needle, regex) in [
        (".shadow_allowed", "shadow"),
        (".shadow_denied", "shadow"),
        (".istio_dry_run_allow_", "istio_dry_run"),
        (".istio_dry_run_deny_", "istio_dry_run"),
        ("rbac.allowed", "rbac"),
        ("rbac.denied", "rbac"),
        ("=.=", "extra stat tag"),
    ] {
        if name.contains(needle) {
            return Some(regex);
        }
    }
    if after("tag.").is_some_and(|rest| rest.contains(";.")) {
        return Some("tag");
    }
    let bytes = name.as_bytes();
    let n = bytes.len();
    if n >= 7 && name[..n - 4].ends_with("_rq") && bytes[n - 4] == b'_' {
        let code = &bytes[n - 3..];
        let digits = code.iter().all(u8::is_ascii_digit);
        let class = code[0].is_ascii_digit() && &code[1..] == b"xx";
        if digits || class {
            return Some("response code");
        }
    }
    None
}

#[test]
fn no_counter_of_the_example_configuration_meets_istios_tag_extractors() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/egress-policy.json"),
    )
    .unwrap();
    let host = host(HostOptions::default());
    let _deployment = deploy_on(&host, &example);
    let names: Vec<String> = host
        .shared()
        .metrics
        .snapshot()
        .into_iter()
        .map(|m| m.full_name)
        .collect();
    assert!(names.len() > 20, "{names:?}");
    for name in &names {
        assert!(name.starts_with("wasmcustom.egress_filter."), "{name}");
        assert_eq!(istio_tag_extractor_hit(name), None, "{name}");
    }
    // The checks catch what the filter refuses.
    assert!(
        istio_tag_extractor_hit("wasmcustom.egress_filter.policy.edge-cache.dry_run.deny")
            .is_some()
    );
}

/// Two builds of the filter in one Envoy (a rollout: the old VM drains while the new one
/// serves) read and write the same rate-limit buckets: shared data is keyed by `vm_id` only.
#[test]
fn two_builds_in_one_process_share_the_rate_limit_buckets() {
    let config = r#"{"rateLimits": [{"name": "all", "maxTokens": 2, "fillInterval": "1h"}]}"#;
    let old = host(HostOptions::default());
    let wasm = std::fs::read(egress_filter()).unwrap();
    let new = old
        .alongside(&wasm, VmConfig::default(), HostOptions::default())
        .unwrap();
    let mut old_deployment = deploy_on(&old, config);
    let mut new_deployment = deploy_on(&new, config);
    let request = HttpRequest::get("api.example.com", "/");
    let results = [
        old_deployment.worker(0).http(&request).unwrap(),
        new_deployment.worker(0).http(&request).unwrap(),
        old_deployment.worker(0).http(&request).unwrap(),
        new_deployment.worker(0).http(&request).unwrap(),
    ];
    let statuses: Vec<Option<u32>> = results.iter().map(status).collect();
    assert_eq!(statuses, [None, None, Some(429), Some(429)]);
}

/// Istio's HTTP and NETWORK WasmPlugins of one image share one VM per worker and, with the
/// empty VM id, one shared-data namespace: a limit of the same name in both configurations is
/// one limit, whose tokens HTTP requests and TCP connections take alike.
#[test]
fn the_http_and_network_plugins_share_a_limit_of_the_same_name() {
    let config = r#"{"rateLimits": [{"name": "all", "maxTokens": 1, "fillInterval": "1h"}]}"#;
    let mut deployment = deploy(config);
    let request = deployment
        .worker(0)
        .http(&HttpRequest::get("api.example.com", "/"))
        .unwrap();
    assert_eq!(status(&request), None);
    let connection = deployment
        .worker(0)
        .tcp(&TcpStream {
            connection: sni_connection("api.example.com"),
            downstream: vec![b"hello".to_vec()],
            ..TcpStream::default()
        })
        .unwrap();
    assert_eq!(connection.result, StreamResult::Closed);
    assert!(connection.forwarded_bytes.is_empty());
    assert_eq!(field(&decision(&connection), "reason"), "rate_limited");
}
