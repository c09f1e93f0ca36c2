//! The host behaves as Envoy does where the code Envoy runs says so: each test pins one row of
//! `docs/envoy-fidelity.md` with a probe module (or the recorders in `data/`), independent of the
//! filter. The exploits of the same behaviours through the real filter are in
//! `filter_fidelity.rs`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{host_from_wat, probe, probe_status, probe_value, property_probes, stashed, wat_file};
use egress_sim::abi::Action;
use egress_sim::{
    Connection, DataCall, Direction, Host, HostError, HostOptions, HttpRequest, PathNormalization,
    PluginConfig, StreamResult, TcpEvent, TcpStream, VmConfig,
};

fn http_host(wasm: &[u8], options: HostOptions) -> (Host, egress_sim::Deployment) {
    let host = Host::new(wasm, VmConfig::default(), options).unwrap();
    let deployment = host
        .start(vec![PluginConfig::http("p", "p", "")], 1)
        .unwrap();
    (host, deployment)
}

fn tcp_host(wasm: &[u8], config: &str, options: HostOptions) -> (Host, egress_sim::Deployment) {
    let host = Host::new(wasm, VmConfig::default(), options).unwrap();
    let deployment = host
        .start(vec![PluginConfig::network("p", "p", config)], 1)
        .unwrap();
    (host, deployment)
}

fn forwarded(outcome: &egress_sim::StreamOutcome, name: &str) -> Vec<String> {
    outcome
        .forwarded_request_headers
        .as_ref()
        .expect("forwarded")
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

fn recorder(config: &str) -> (Host, egress_sim::Deployment) {
    let host = host_from_wat("recorder.wat");
    let deployment = host
        .start(vec![PluginConfig::http("test.http", "", config)], 1)
        .unwrap();
    (host, deployment)
}

// ---------------------------------------------------------------------------------------------
// 1. Repeated request headers
// ---------------------------------------------------------------------------------------------

/// Envoy folds a repeated inline header (`user-agent`, `:authority`/`host`, ...) into one entry
/// joined with `,`; any other header keeps its entries. `proxy_get_header_map_value` returns the
/// first entry; the `request.headers` property joins them all, as RBAC's header matcher does.
#[test]
fn repeated_inline_headers_fold_and_others_stay_separate() {
    let body = r#"
        (call $rec (call $proxy_get_header_map_value (i32.const 0) (i32.const 4096) (i32.const 10) (i32.const 600) (i32.const 604)))
        (call $stash (i32.const 4200) (i32.const 2) (i32.const 600))
        (call $rec (call $proxy_get_header_map_value (i32.const 0) (i32.const 4110) (i32.const 6) (i32.const 600) (i32.const 604)))
        (call $stash (i32.const 4210) (i32.const 2) (i32.const 600))
        (call $rec (call $proxy_get_header_map_value (i32.const 0) (i32.const 4120) (i32.const 4) (i32.const 600) (i32.const 604)))
        (call $stash (i32.const 4220) (i32.const 2) (i32.const 600))
        (call $rec (call $proxy_get_property (i32.const 4130) (i32.const 22) (i32.const 600) (i32.const 604)))
        (call $stash (i32.const 4230) (i32.const 2) (i32.const 600))
    "#;
    let extra = r#"(data (i32.const 4096) "user-agent") (data (i32.const 4110) "x-team")
        (data (i32.const 4120) "host") (data (i32.const 4130) "request\00headers\00x-team")
        (data (i32.const 4200) "ua") (data (i32.const 4210) "xt") (data (i32.const 4220) "ho")
        (data (i32.const 4230) "pt")"#;
    let wasm = probe("proxy_on_request_headers", body, extra);
    let (host, mut deployment) = http_host(&wasm, HostOptions::default());
    let request = HttpRequest {
        headers: vec![
            ("User-Agent".into(), "a".into()),
            ("x-team".into(), "a".into()),
            ("user-agent".into(), "b".into()),
            ("x-team".into(), "b".into()),
            // A second Host line (HTTP/1.1): it joins `:authority`.
            ("host".into(), "evil.example".into()),
        ],
        ..HttpRequest::get("api.example.com", "/")
    };
    let outcome = deployment.worker(0).http(&request).unwrap();
    assert_eq!(common::results(&host), [0, 0, 0, 0]);
    assert_eq!(stashed(&host, "ua"), b"a,b");
    assert_eq!(stashed(&host, "xt"), b"a", "the first entry only");
    assert_eq!(stashed(&host, "ho"), b"api.example.com,evil.example");
    assert_eq!(stashed(&host, "pt"), b"a,b", "the property joins like RBAC");
    assert_eq!(forwarded(&outcome, "user-agent"), ["a,b"]);
    assert_eq!(forwarded(&outcome, "x-team"), ["a", "b"]);
    assert_eq!(
        forwarded(&outcome, ":authority"),
        ["api.example.com,evil.example"]
    );
    assert!(forwarded(&outcome, "host").is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. Authority and path before the filters
// ---------------------------------------------------------------------------------------------

#[test]
fn http2_drops_host_next_to_authority() {
    let (_, mut deployment) = recorder("a");
    let request = |authority: Option<&str>| HttpRequest {
        protocol: "HTTP/2".into(),
        authority: authority.map(str::to_string),
        headers: vec![("host".into(), "b.example".into())],
        ..HttpRequest::get("", "/")
    };
    let outcome = deployment
        .worker(0)
        .http(&request(Some("a.example")))
        .unwrap();
    assert_eq!(forwarded(&outcome, ":authority"), ["a.example"]);
    // Without :authority, `host` is the authority.
    let outcome = deployment.worker(0).http(&request(None)).unwrap();
    assert_eq!(forwarded(&outcome, ":authority"), ["b.example"]);
    // HTTP/1.1 folds them instead.
    let outcome = deployment
        .worker(0)
        .http(&HttpRequest {
            protocol: "HTTP/1.1".into(),
            ..request(Some("a.example"))
        })
        .unwrap();
    assert_eq!(forwarded(&outcome, ":authority"), ["a.example,b.example"]);
}

#[test]
fn absolute_form_and_connect_targets_set_the_authority() {
    let (_, mut deployment) = recorder("a");
    let outcome = deployment
        .worker(0)
        .http(&HttpRequest {
            headers: vec![("host".into(), "api.example.com".into())],
            ..HttpRequest::get("api.example.com", "HTTP://evil.example:8080/x?y=1")
        })
        .unwrap();
    assert_eq!(forwarded(&outcome, ":authority"), ["evil.example:8080"]);
    assert_eq!(forwarded(&outcome, ":path"), ["/x?y=1"]);
    assert_eq!(forwarded(&outcome, ":scheme"), ["http"]);

    let outcome = deployment
        .worker(0)
        .http(&HttpRequest {
            method: Some("CONNECT".into()),
            headers: vec![("host".into(), "other.example".into())],
            ..HttpRequest::get("db.example:5432", "/ignored")
        })
        .unwrap();
    assert_eq!(forwarded(&outcome, ":authority"), ["db.example:5432"]);
    assert!(forwarded(&outcome, ":path").is_empty(), "no :path");
}

#[test]
fn http10_is_answered_by_the_codec_unless_accepted() {
    let (_, mut deployment) = recorder("a");
    let request = HttpRequest {
        protocol: "HTTP/1.0".into(),
        ..HttpRequest::get("a.example", "/")
    };
    let outcome = deployment.worker(0).http(&request).unwrap();
    assert_eq!(outcome.status(), Some(426));
    assert!(outcome.messages().is_empty(), "no filter callback ran");

    let options = HostOptions {
        accept_http_10: true,
        ..HostOptions::default()
    };
    let host = Host::new(&wat_file("recorder.wat"), VmConfig::default(), options).unwrap();
    let mut deployment = host
        .start(vec![PluginConfig::http("t", "", "a")], 1)
        .unwrap();
    let outcome = deployment.worker(0).http(&request).unwrap();
    assert_eq!(outcome.result, StreamResult::Continued);
}

/// Istio's gateway default (mesh `pathNormalization: BASE`): `normalize_path` on,
/// `merge_slashes` off, escaped slashes kept, `#fragment` cut; the query is kept as sent.
#[test]
fn the_connection_manager_normalises_the_path_before_filters() {
    let cases = [
        (
            PathNormalization::Base,
            "/public/%2e%2e/admin?x=%2e%2e",
            "/admin?x=%2e%2e",
        ),
        (PathNormalization::Base, "/public/../admin", "/admin"),
        (PathNormalization::Base, "/a\\..\\b", "/b"),
        (
            PathNormalization::Base,
            "/public/..%2Fadmin",
            "/public/..%2Fadmin",
        ),
        (PathNormalization::Base, "//admin", "//admin"),
        (PathNormalization::Base, "/x#frag", "/x"),
        (PathNormalization::None, "/a/../b#f", "/a/../b"),
        // Dot segments first, then slashes merged (`maybeNormalizePath`'s order).
        (PathNormalization::MergeSlashes, "//a//../b", "/a/b"),
        (
            PathNormalization::DecodeAndMergeSlashes,
            "/public/..%2Fadmin",
            "/admin",
        ),
    ];
    for (mode, raw, seen) in cases {
        let options = HostOptions {
            path_normalization: mode,
            ..HostOptions::default()
        };
        let host = Host::new(&wat_file("recorder.wat"), VmConfig::default(), options).unwrap();
        let mut deployment = host
            .start(vec![PluginConfig::http("t", "", "a")], 1)
            .unwrap();
        let outcome = deployment
            .worker(0)
            .http(&HttpRequest::get("a.example", raw))
            .unwrap();
        assert_eq!(forwarded(&outcome, ":path"), [seen], "{mode:?} {raw}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Properties
// ---------------------------------------------------------------------------------------------

const TLS_PATHS: [&str; 6] = [
    "connection.mtls",
    "connection.uri_san_peer_certificate",
    "connection.tls_version",
    "connection.subject_local_certificate",
    "connection.requested_server_name",
    "filter_state\0io.istio.peer_principal",
];

fn http_properties(connection: Connection) -> Host {
    let wasm = property_probes(&[("proxy_on_request_headers", "h")], &TLS_PATHS);
    let (host, mut deployment) = http_host(&wasm, HostOptions::default());
    deployment
        .worker(0)
        .http(&HttpRequest {
            connection,
            ..HttpRequest::get("a.example", "/")
        })
        .unwrap();
    host
}

fn statuses(host: &Host, prefix: &str, n: usize) -> Vec<i32> {
    (0..n)
        .map(|i| probe_status(host, &format!("{prefix}s{i}")).unwrap_or(-1))
        .collect()
}

#[test]
fn tls_fields_on_plaintext_mtls_simple_tls_and_a_waypoint() {
    // Plaintext (or TLS passed through): no SSL object, so every TLS field is absent but mtls.
    let host = http_properties(Connection::default());
    assert_eq!(statuses(&host, "h", 6), [0, 1, 1, 1, 0, 1]);
    assert_eq!(probe_value(&host, "h0"), Some(vec![0]));
    // Mutual TLS terminated by the gateway.
    let host = http_properties(Connection {
        principal: Some("cluster.local/ns/dev/sa/app".into()),
        ..Connection::default()
    });
    assert_eq!(statuses(&host, "h", 6), [0, 0, 0, 0, 0, 1]);
    assert_eq!(probe_value(&host, "h0"), Some(vec![1]));
    assert_eq!(probe_value(&host, "h2").as_deref(), Some(&b"TLSv1.3"[..]));
    // TLS without a client certificate: the TLS fields exist, the peer's do not.
    let host = http_properties(Connection {
        tls_terminated: true,
        ..Connection::default()
    });
    assert_eq!(statuses(&host, "h", 6), [0, 1, 0, 0, 0, 1]);
    assert_eq!(probe_value(&host, "h0"), Some(vec![0]));
    // A waypoint's internal listener: no TLS, the caller in filter state as a string.
    let host = http_properties(Connection::waypoint("cluster.local/ns/dev/sa/app"));
    assert_eq!(statuses(&host, "h", 6), [0, 1, 1, 1, 0, 0]);
    assert_eq!(
        probe_value(&host, "h5").as_deref(),
        Some(&b"spiffe://cluster.local/ns/dev/sa/app"[..])
    );
}

/// On a TLS-terminating TCP listener the filter chain (and `proxy_on_new_connection`) runs
/// when the connection is accepted: the client certificate is known only after the handshake,
/// at the first data. `connection.tls_version` is cached on its first read.
#[test]
fn tcp_identity_arrives_with_the_handshake_and_tls_version_is_cached() {
    let connection = Connection {
        principal: Some("cluster.local/ns/dev/sa/app".into()),
        ..Connection::default()
    };
    let wasm = property_probes(
        &[
            ("proxy_on_new_connection", "n"),
            ("proxy_on_downstream_data", "d"),
        ],
        &TLS_PATHS,
    );
    let (host, mut deployment) = tcp_host(&wasm, "", HostOptions::default());
    let tcp = TcpStream {
        connection: connection.clone(),
        downstream: vec![b"x".to_vec()],
        ..TcpStream::default()
    };
    deployment.worker(0).tcp(&tcp).unwrap();
    assert_eq!(statuses(&host, "n", 4), [0, 1, 0, 0]);
    assert_eq!(
        probe_value(&host, "n0"),
        Some(vec![0]),
        "no certificate yet"
    );
    assert_eq!(probe_value(&host, "n2").as_deref(), Some(&b"unknown"[..]));
    assert_eq!(statuses(&host, "d", 4), [0, 0, 0, 0]);
    assert_eq!(probe_value(&host, "d0"), Some(vec![1]));
    assert_eq!(
        probe_value(&host, "d2").as_deref(),
        Some(&b"unknown"[..]),
        "read before the handshake, the version stays cached"
    );

    // Without the early read the negotiated version shows.
    let wasm = property_probes(&[("proxy_on_downstream_data", "d")], &TLS_PATHS);
    let (host, mut deployment) = tcp_host(&wasm, "", HostOptions::default());
    deployment.worker(0).tcp(&tcp).unwrap();
    assert_eq!(probe_value(&host, "d2").as_deref(), Some(&b"TLSv1.3"[..]));
}

#[test]
fn upstream_address_exists_once_tcp_proxy_connected() {
    let paths = ["upstream.address", "upstream.port"];
    let wasm = property_probes(
        &[
            ("proxy_on_new_connection", "n"),
            ("proxy_on_downstream_data", "d"),
        ],
        &paths,
    );
    let (host, mut deployment) = tcp_host(&wasm, "", HostOptions::default());
    let tcp = TcpStream {
        downstream: vec![b"x".to_vec()],
        ..TcpStream::default()
    };
    deployment.worker(0).tcp(&tcp).unwrap();
    assert_eq!(statuses(&host, "n", 2), [1, 1]);
    assert_eq!(statuses(&host, "d", 2), [0, 0]);
    assert_eq!(
        probe_value(&host, "d0").as_deref(),
        Some(&b"203.0.113.10:443"[..])
    );
    assert_eq!(
        probe_value(&host, "d1"),
        Some(443i64.to_le_bytes().to_vec())
    );

    // HTTP: the router picks the upstream after the request filters.
    let wasm = property_probes(&[("proxy_on_request_headers", "h")], &paths);
    let (host, mut deployment) = http_host(&wasm, HostOptions::default());
    deployment
        .worker(0)
        .http(&HttpRequest::get("a", "/"))
        .unwrap();
    assert_eq!(statuses(&host, "h", 2), [1, 1]);
}

#[test]
fn request_size_is_absent_for_an_invalid_content_length() {
    let wasm = property_probes(&[("proxy_on_request_headers", "h")], &["request.size"]);
    let (host, mut deployment) = http_host(&wasm, HostOptions::default());
    let request = |length: &str| HttpRequest {
        headers: vec![("content-length".into(), length.into())],
        ..HttpRequest::get("a", "/")
    };
    deployment.worker(0).http(&request("12")).unwrap();
    assert_eq!(probe_value(&host, "h0"), Some(12i64.to_le_bytes().to_vec()));
    deployment.worker(0).http(&request("12x")).unwrap();
    assert_eq!(probe_status(&host, "hs0"), Some(1));
}

// ---------------------------------------------------------------------------------------------
// 4. Local replies
// ---------------------------------------------------------------------------------------------

#[test]
fn local_reply_details_and_grpc_status_as_envoy_maps_them() {
    for (grpc, expected) in [(-1, None), (17, None), (7, Some(7))] {
        let body = format!(
            "(call $rec (call $proxy_send_local_response (i32.const 403) (i32.const 4096) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const {grpc})))"
        );
        let wasm = probe(
            "proxy_on_request_headers",
            &body,
            r#"(data (i32.const 4096) "a b\09c")"#,
        );
        let (_, mut deployment) = http_host(&wasm, HostOptions::default());
        let outcome = deployment
            .worker(0)
            .http(&HttpRequest::get("a", "/"))
            .unwrap();
        // The probe returns Continue; the reply still stops the request.
        let reply = outcome.local_reply().expect("a local reply");
        assert_eq!(reply.details, "a_b_c");
        assert_eq!(reply.grpc_status, expected);
        assert_eq!(outcome.forwarded_request_headers, None);
    }
}

#[test]
fn local_reply_on_a_connection_does_nothing() {
    let body = "(call $rec (call $proxy_send_local_response (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))";
    let wasm = probe("proxy_on_downstream_data", body, "");
    let (host, mut deployment) = tcp_host(&wasm, "", HostOptions::default());
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream {
            downstream: vec![b"hello".to_vec()],
            ..TcpStream::default()
        })
        .unwrap();
    assert_eq!(common::results(&host), [0]);
    assert_eq!(outcome.result, StreamResult::Continued);
    assert_eq!(outcome.forwarded_bytes, b"hello");
}

// ---------------------------------------------------------------------------------------------
// 5. TCP
// ---------------------------------------------------------------------------------------------

fn tcp_probe(mode: &str, options: HostOptions) -> egress_sim::Deployment {
    tcp_host(&wat_file("tcp_probe.wat"), mode, options).1
}

fn call(direction: Direction, size: usize, end_of_stream: bool, action: Action) -> DataCall {
    DataCall {
        direction,
        size,
        end_of_stream,
        action,
    }
}

/// A Pause from `proxy_on_new_connection` stops the chain before tcp_proxy, which disables
/// client reads until it has connected upstream: no data callback ever comes, and the
/// connection hangs until the client gives up. (What the filter did before it continued here.)
#[test]
fn a_pause_on_new_connection_hangs_the_connection() {
    let mut deployment = tcp_probe("p", HostOptions::default());
    let script = vec![
        TcpEvent::ClientData(b"hello".to_vec()),
        TcpEvent::UpstreamData(b"220 ready".to_vec()),
        TcpEvent::ClientFin,
    ];
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream::scripted(Connection::default(), script))
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Paused);
    assert!(outcome.data_calls.is_empty());
    assert!(outcome.forwarded_bytes.is_empty());
    assert_eq!(outcome.messages(), ["new_connection", "downstream_close:2"]);
}

/// Events in script order: upstream data can come first (tcp_proxy connected before reading
/// the client), held bytes come again with the next read, end_of_stream comes with the FIN even
/// without new bytes, and the server's FIN raises the upstream close with peer Unknown.
#[test]
fn tcp_events_follow_the_script() {
    let mut deployment = tcp_probe("h", HostOptions::default());
    let script = vec![
        TcpEvent::UpstreamData(b"220 ready".to_vec()),
        TcpEvent::ClientData(b"ab".to_vec()),
        TcpEvent::ClientData(b"cd".to_vec()),
        TcpEvent::UpstreamData(b"!".to_vec()),
        TcpEvent::ClientFin,
        TcpEvent::UpstreamFin,
    ];
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream::scripted(Connection::default(), script))
        .unwrap();
    use Action::{Continue, Pause};
    use Direction::{Downstream, Upstream};
    assert_eq!(
        outcome.data_calls,
        [
            call(Upstream, 9, false, Pause),
            call(Downstream, 2, false, Pause),
            call(Downstream, 4, false, Pause),
            call(Upstream, 10, false, Pause),
            call(Downstream, 4, true, Continue),
            call(Upstream, 10, true, Pause),
        ]
    );
    assert_eq!(outcome.forwarded_bytes, b"abcd");
    assert!(outcome.received_bytes.is_empty(), "held upstream bytes");
    assert_eq!(outcome.result, StreamResult::Paused);
    assert!(outcome.messages().contains(&"upstream_close:0"));
    assert_eq!(outcome.messages().last(), Some(&"downstream_close:2"));
}

#[test]
fn an_earlier_filter_can_shrink_the_buffer_between_reads() {
    let mut deployment = tcp_probe("h", HostOptions::default());
    let script = vec![
        TcpEvent::ClientData(b"hello".to_vec()),
        TcpEvent::EarlierFilterDrains(3),
        TcpEvent::ClientData(b"!!".to_vec()),
        TcpEvent::ClientFin,
    ];
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream::scripted(Connection::default(), script))
        .unwrap();
    let sizes: Vec<usize> = outcome.data_calls.iter().map(|c| c.size).collect();
    assert_eq!(sizes, [5, 4, 4]);
    assert_eq!(outcome.forwarded_bytes, b"lo!!");
}

/// Past the connection buffer limit Envoy stops reading (high watermark): no more data
/// callbacks, the FIN is not read either, and the connection is not closed.
#[test]
fn reads_stop_past_the_connection_buffer_limit() {
    let options = HostOptions {
        connection_buffer_limit: 8,
        ..HostOptions::default()
    };
    let mut deployment = tcp_probe("h", options);
    let script = vec![
        TcpEvent::ClientData(vec![1; 6]),
        TcpEvent::ClientData(vec![2; 6]),
        TcpEvent::ClientData(vec![3; 6]),
        TcpEvent::ClientFin,
    ];
    let outcome = deployment
        .worker(0)
        .tcp(&TcpStream::scripted(Connection::default(), script))
        .unwrap();
    let sizes: Vec<usize> = outcome.data_calls.iter().map(|c| c.size).collect();
    assert_eq!(sizes, [6, 12]);
    assert_eq!(outcome.result, StreamResult::Paused);
    assert!(outcome.forwarded_bytes.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 6 and 8. Configuration and lifecycle
// ---------------------------------------------------------------------------------------------

fn root_logs(worker: &mut egress_sim::Worker) -> Vec<String> {
    worker
        .take_root_logs()
        .into_iter()
        .map(|l| l.message)
        .collect()
}

/// Every accepted configuration gets a new root context; the old one lives until the last
/// stream that started on it ends (each stream holds the plugin handle).
#[test]
fn the_old_root_serves_its_streams_until_they_end() {
    let (_, mut deployment) = recorder("p");
    let worker = deployment.worker(0);
    root_logs(worker);
    let paused = worker.begin_http(&HttpRequest::get("a", "/")).unwrap();
    assert!(worker.is_paused(paused));
    deployment
        .update_plugin(PluginConfig::http("test.http", "", "a"))
        .unwrap();
    let worker = deployment.worker(0);
    assert_eq!(root_logs(worker), ["create", "vm_start", "configure"]);
    assert_eq!(worker.draining_roots().len(), 1);
    let outcome = worker.finish(paused);
    assert_eq!(outcome.result, StreamResult::Paused);
    assert_eq!(root_logs(worker), ["done", "delete"]);
    assert!(worker.draining_roots().is_empty());
    assert_eq!(worker.live_contexts(), 2);
}

/// A configuration the canary rejects is refused before any VM of the deployment sees it.
#[test]
fn a_rejected_update_never_reaches_a_worker() {
    let (_, mut deployment) = recorder("a");
    root_logs(deployment.worker(0));
    root_logs(deployment.main_thread().unwrap());
    let error = deployment
        .update_plugin(PluginConfig::http("test.http", "", "r"))
        .unwrap_err();
    assert!(matches!(error, HostError::ConfigRejected { .. }), "{error}");
    assert!(root_logs(deployment.worker(0)).is_empty());
    assert!(root_logs(deployment.main_thread().unwrap()).is_empty());
    let outcome = deployment
        .worker(0)
        .http(&HttpRequest::get("a", "/"))
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Continued);
}

/// Envoy's main thread runs the plugins too: configured, ticking, never serving a stream.
#[test]
fn the_main_thread_vm_is_configured_ticks_and_serves_no_stream() {
    let (_, mut deployment) = recorder("a");
    let main = deployment.main_thread().expect("a main-thread VM");
    assert!(main.is_main_thread());
    assert_eq!(root_logs(main), ["create", "vm_start", "configure"]);
    assert!(matches!(
        main.http(&HttpRequest::get("a", "/")),
        Err(HostError::MainThreadServesNoStreams)
    ));

    let host = host_from_wat("ticker.wat");
    let mut deployment = host
        .start(vec![PluginConfig::http("t", "", "")], 2)
        .unwrap();
    host.clock().advance(Duration::from_secs(1));
    deployment.poll();
    let ticks = host.shared().data.get("", b"ticks").unwrap().0[0];
    assert_eq!(ticks, 3, "two workers and the main thread");

    let options = HostOptions {
        main_thread_vm: false,
        ..HostOptions::default()
    };
    let host = Host::new(&wat_file("recorder.wat"), VmConfig::default(), options).unwrap();
    let mut deployment = host
        .start(vec![PluginConfig::http("t", "", "a")], 1)
        .unwrap();
    assert!(deployment.main_thread().is_none());
}

// ---------------------------------------------------------------------------------------------
// 9. Shared data
// ---------------------------------------------------------------------------------------------

/// Shared data is process-wide per `vm_id`: a second module loaded in the same process (a new
/// build during a rollout) sees the first one's keys.
#[test]
fn modules_in_one_process_share_data_by_vm_id() {
    let writer = probe(
        "proxy_on_request_headers",
        r#"(call $rec (call $proxy_set_shared_data (i32.const 4096) (i32.const 1) (i32.const 4100) (i32.const 2) (i32.const 0)))"#,
        r#"(data (i32.const 4096) "k") (data (i32.const 4100) "v1")"#,
    );
    let reader = probe(
        "proxy_on_request_headers",
        r#"(call $rec (call $proxy_get_shared_data (i32.const 4096) (i32.const 1) (i32.const 600) (i32.const 604) (i32.const 608)))
           (call $stash (i32.const 4110) (i32.const 4) (i32.const 600))"#,
        r#"(data (i32.const 4096) "k") (data (i32.const 4110) "read")"#,
    );
    let first = Host::new(&writer, VmConfig::default(), HostOptions::default()).unwrap();
    let second = first
        .alongside(&reader, VmConfig::default(), HostOptions::default())
        .unwrap();
    let other_vm = first
        .alongside(
            &reader,
            VmConfig {
                vm_id: "other".into(),
                ..VmConfig::default()
            },
            HostOptions::default(),
        )
        .unwrap();
    for host in [&first, &second, &other_vm] {
        host.start(vec![PluginConfig::http("p", "p", "")], 1)
            .unwrap()
            .worker(0)
            .http(&HttpRequest::get("a", "/"))
            .unwrap();
    }
    assert_eq!(common::results(&second), [0]);
    assert_eq!(stashed(&second, "read"), b"v1");
    assert_eq!(
        common::results(&other_vm),
        [1],
        "another vm_id has its own namespace"
    );
}

// ---------------------------------------------------------------------------------------------
// 10. gRPC callouts
// ---------------------------------------------------------------------------------------------

/// Envoy's unary gRPC handler (`GrpcCallClientHandler`) has only the message and the failure
/// callbacks; `proxy_grpc_close` on a call cancels it (`Context::grpcClose`).
#[test]
fn unary_grpc_calls_get_no_metadata_and_close_cancels_them() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/grpc.wat"))
        .unwrap();
    let host = |text: &str| {
        Host::new(
            &wat::parse_str(text).unwrap(),
            VmConfig::default(),
            HostOptions {
                clusters: vec!["svc".into()],
                ..HostOptions::default()
            },
        )
        .unwrap()
    };
    let plain = host(&text);
    let mut deployment = plain
        .start(vec![PluginConfig::http("p", "p", "")], 1)
        .unwrap();
    let worker = deployment.worker(0);
    worker.http(&HttpRequest::get("a", "/")).unwrap();
    let token = worker.grpc_callouts()[0].token;
    let with_metadata = egress_sim::GrpcResponse {
        initial_metadata: vec![("k".into(), "v".into())],
        messages: vec![b"pong".to_vec()],
        ..Default::default()
    };
    assert!(matches!(
        worker.respond_grpc_callout(token, with_metadata),
        Err(HostError::MetadataForUnaryCall(t)) if t == token
    ));
    assert_eq!(worker.grpc_callouts().len(), 1, "the call is still pending");

    let closing = text
        .replace(
            r#"(import "env" "proxy_log""#,
            r#"(import "env" "proxy_grpc_close" (func $close (param i32) (result i32)))
  (import "env" "proxy_log""#,
        )
        .replace(
            "      (then unreachable))\n    (i32.const 0))",
            "      (then unreachable))\n    (if (call $close (i32.load (i32.const 0))) (then unreachable))\n    (i32.const 0))",
        );
    assert_ne!(closing, text);
    let closing = host(&closing);
    let mut deployment = closing
        .start(vec![PluginConfig::http("p", "p", "")], 1)
        .unwrap();
    let worker = deployment.worker(0);
    worker.http(&HttpRequest::get("a", "/")).unwrap();
    assert!(
        worker.grpc_callouts().is_empty(),
        "closing a call cancels it"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Restricted host calls
// ---------------------------------------------------------------------------------------------

/// cpp-host's `WasmBase::startVm`: a reactor's `_initialize`, then `main` if exported; a
/// command's `_start` only when there is no `_initialize`.
#[test]
fn start_functions_run_as_cpp_host_runs_them() {
    let module = |exports: &[(&str, &str)]| {
        let funcs: String = exports
            .iter()
            .enumerate()
            .map(|(i, (name, signature))| {
                let result = if signature.contains("result") { "(i32.const 0)" } else { "" };
                format!(
                    r#"(data (i32.const {at}) "{name}")
                    (func (export "{name}") {signature}
                      (drop (call $log (i32.const 2) (i32.const {at}) (i32.const {len}))) {result})"#,
                    at = 16 + i * 16,
                    len = name.len(),
                )
            })
            .collect();
        wat::parse_str(format!(
            r#"(module
              (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
              (memory (export "memory") 2)
              (global $heap (mut i32) (i32.const 65536))
              (func (export "proxy_abi_version_0_2_1"))
              (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
                (local $p i32)
                (local.set $p (global.get $heap))
                (global.set $heap (i32.add (global.get $heap) (local.get $size)))
                (local.get $p))
              {funcs})"#
        ))
        .unwrap()
    };
    let started = |wasm: Vec<u8>| -> Vec<String> {
        Host::new(&wasm, VmConfig::default(), HostOptions::default())
            .unwrap()
            .canary(&PluginConfig::http("p", "p", ""))
            .unwrap()
            .logs
            .into_iter()
            .map(|l| l.message)
            .collect()
    };
    let main = ("main", "(param i32 i32) (result i32)");
    let initialize = ("_initialize", "");
    let start = ("_start", "");
    assert_eq!(
        started(module(&[main, initialize])),
        ["_initialize", "main"]
    );
    assert_eq!(started(module(&[start])), ["_start"]);
    assert_eq!(started(module(&[start, initialize])), ["_initialize"]);
}

/// A module whose `_initialize` makes `call` (after a `proxy_log`, which is allowed) and whose
/// allocator makes `alloc_call` before bumping.
fn restricted_module(init_call: &str, alloc_call: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
          (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
          (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
          (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 2)
          (global $heap (mut i32) (i32.const 65536))
          (data (i32.const 16) "hello")
          (data (i32.const 32) "plugin_name")
          (func (export "proxy_abi_version_0_2_1"))
          (func (export "_initialize")
            (drop (call $log (i32.const 2) (i32.const 16) (i32.const 5)))
            {init_call})
          (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
            (local $p i32)
            {alloc_call}
            (local.set $p (global.get $heap))
            (global.set $heap (i32.add (global.get $heap) (local.get $size)))
            (local.get $p))
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
            (drop (call $get_property (i32.const 32) (i32.const 11) (i32.const 0) (i32.const 4)))
            (i32.const 0)))"#
    );
    wat::parse_str(&text).unwrap()
}

#[test]
fn host_calls_are_restricted_while_starting_and_allocating() {
    let define = "(drop (call $define (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 0)))";
    // Logging is allowed in `_initialize`; defining a metric is not.
    let wasm = restricted_module("", "");
    assert!(
        Host::new(&wasm, VmConfig::default(), HostOptions::default())
            .unwrap()
            .start(vec![PluginConfig::http("p", "p", "")], 1)
            .is_ok()
    );
    let wasm = restricted_module(define, "");
    let error = Host::new(&wasm, VmConfig::default(), HostOptions::default())
        .unwrap()
        .start(vec![PluginConfig::http("p", "p", "")], 1)
        .err()
        .expect("refused");
    assert!(error.to_string().contains("restricted_callback"), "{error}");
    // An allocator that defines a metric traps the host call that allocated (here
    // proxy_get_property handing a value over): the VM fails and the stream fails closed.
    let wasm = restricted_module("", define);
    let mut deployment = Host::new(&wasm, VmConfig::default(), HostOptions::default())
        .unwrap()
        .start(vec![PluginConfig::http("p", "p", "")], 1)
        .unwrap();
    let outcome = deployment
        .worker(0)
        .http(&HttpRequest::get("a", "/"))
        .unwrap();
    assert!(
        matches!(&outcome.result, StreamResult::FailedClosed { error } if error.contains("restricted_callback")),
        "{:?}",
        outcome.result
    );
}
