//! Golden bytes: the ABI map serialisation and property values as Envoy encodes them, read by a
//! module through `proxy_get_header_map_pairs` and `proxy_get_property`.

mod common;

use std::net::SocketAddr;

use common::{probe, results, stashed};
use egress_sim::clock::DEFAULT_START_UNIX_NANOS;
use egress_sim::{Connection, Host, HostOptions, HttpRequest, PluginConfig, TcpStream, VmConfig};

#[test]
fn spec_map_example() {
    // The spec's example {"a": "1", "b": "22"}:
    let expected: &[u8] = &[
        2, 0, 0, 0, // two pairs
        1, 0, 0, 0, 1, 0, 0, 0, // "a" => "1"
        1, 0, 0, 0, 2, 0, 0, 0, // "b" => "22"
        b'a', 0, b'1', 0, b'b', 0, b'2', b'2', 0,
    ];
    assert_eq!(
        egress_sim::pairs::encode(&[("a", "1"), ("b", "22")]),
        expected
    );
}

#[test]
fn request_header_map_as_the_module_reads_it() {
    let body = r#"
        (call $rec (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 300) (i32.const 304)))
        (call $stash (i32.const 4096) (i32.const 5) (i32.const 300))
    "#;
    let wasm = probe(
        "proxy_on_request_headers",
        body,
        r#"(data (i32.const 4096) "pairs")"#,
    );
    let options = HostOptions {
        connection_manager_headers: false,
        ..HostOptions::default()
    };
    let host = Host::new(&wasm, VmConfig::default(), options).unwrap();
    let mut deployment = host
        .start(vec![PluginConfig::http("p", "p", "")], 1)
        .unwrap();
    let request = HttpRequest {
        // HTTP/1.1 Host becomes :authority; pseudo headers come first, as Envoy presents them.
        authority: None,
        headers: vec![("X-K".into(), "v".into()), ("Host".into(), "a.io".into())],
        ..HttpRequest::get("unused", "/")
    };
    deployment.worker(0).http(&request).unwrap();
    assert_eq!(results(&host), [0]);
    let mut expected: Vec<u8> = vec![
        5, 0, 0, 0, // five entries
        5, 0, 0, 0, 1, 0, 0, 0, // ":path" => "/"
        7, 0, 0, 0, 3, 0, 0, 0, // ":method" => "GET"
        7, 0, 0, 0, 4, 0, 0, 0, // ":scheme" => "http"
        10, 0, 0, 0, 4, 0, 0, 0, // ":authority" => "a.io"
        3, 0, 0, 0, 1, 0, 0, 0, // "x-k" => "v" (lower-cased)
    ];
    expected
        .extend_from_slice(b":path\0/\0:method\0GET\0:scheme\0http\0:authority\0a.io\0x-k\0v\0");
    assert_eq!(stashed(&host, "pairs"), expected);
}

/// Builds a probe that reads each path and stashes the value under "p<index>".
fn property_probe(callback: &str, paths: &[&str]) -> Vec<u8> {
    let mut body = String::new();
    let mut extra = String::new();
    let mut address = 4096;
    for (i, path) in paths.iter().enumerate() {
        let wat_path: String = path.replace('.', "\\00");
        let key = format!("p{i}");
        let key_at = address + 256;
        extra.push_str(&format!(
            "(data (i32.const {address}) \"{wat_path}\") (data (i32.const {key_at}) \"{key}\")\n"
        ));
        body.push_str(&format!(
            "(call $rec (call $proxy_get_property (i32.const {address}) (i32.const {}) (i32.const 600) (i32.const 604)))\n\
             (if (i32.eqz (i32.load (i32.sub (global.get $out) (i32.const 4))))\n\
               (then (call $stash (i32.const {key_at}) (i32.const {}) (i32.const 600))))\n\
             (i32.store (i32.const 600) (i32.const 0)) (i32.store (i32.const 604) (i32.const 0))\n",
            path.len(),
            key.len()
        ));
        address += 512;
    }
    probe(callback, &body, &extra)
}

fn int8(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

#[test]
fn http_stream_properties() {
    let paths = [
        "source.address",
        "source.port",
        "destination.address",
        "destination.port",
        "connection.mtls",
        "connection.uri_san_peer_certificate",
        "connection.requested_server_name",
        "connection.tls_version",
        "request.path",
        "request.url_path",
        "request.query",
        "request.host",
        "request.method",
        "request.scheme",
        "request.protocol",
        "request.useragent",
        "request.referer",
        "request.headers.x-dup",
        "request.headers",
        "request.time",
        "plugin_name",
        "plugin_root_id",
        "plugin_vm_id",
        "connection_id",
        "connection.id",
        "request",
        "connection",
        "nope",
        "source.port.deeper",
        "upstream.address",
        "request.headers.missing",
        "xds.node.id",
        "node.id",
        "metadata",
        "request.headers.X-DUP",
    ];
    let wasm = property_probe("proxy_on_request_headers", &paths);
    let vm = VmConfig {
        vm_id: "egress".into(),
        ..VmConfig::default()
    };
    let options = HostOptions {
        connection_manager_headers: false,
        ..HostOptions::default()
    };
    let host = Host::new(&wasm, vm, options).unwrap();
    let mut deployment = host
        .start(vec![PluginConfig::http("p-name", "p-root", "")], 1)
        .unwrap();
    let request = HttpRequest {
        connection: Connection {
            source: "10.1.2.3:51000".parse::<SocketAddr>().unwrap(),
            destination: "[2001:db8::1]:8443".parse::<SocketAddr>().unwrap(),
            principal: Some("cluster.local/ns/dev/sa/app".into()),
            sni: Some("api.example.com".into()),
            hbone_peer: None,
        },
        method: Some("POST".into()),
        scheme: Some("https".into()),
        protocol: "HTTP/2".into(),
        headers: vec![
            ("user-agent".into(), "curl/8".into()),
            ("x-dup".into(), "a".into()),
            ("x-dup".into(), "b".into()),
            ("referer".into(), "r".into()),
        ],
        ..HttpRequest::get("api.example.com", "/v1/items?q=1")
    };
    deployment.worker(0).http(&request).unwrap();

    let statuses = results(&host);
    let expected_statuses = [
        0, 0, 0, 0, 0, 0, 0, 0, // source, destination, connection
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // request fields
        0, 0, 0, 0, 0, // plugin, connection ids
        3, 3, // whole groups cannot be listed: SerializationFailure
        1, 1, 1, 1, 1,
        1, // NotFound: unknown name, below a scalar, no upstream, missing header, xds, node
        0, 0, // metadata (an empty message), header names are case-insensitive
    ];
    assert_eq!(statuses, expected_statuses);
    let value = |i: usize| stashed(&host, &format!("p{i}"));
    assert_eq!(value(0), b"10.1.2.3:51000");
    assert_eq!(
        value(1),
        [0x38, 0xc7, 0, 0, 0, 0, 0, 0],
        "51000 as int64 LE"
    );
    assert_eq!(value(2), b"[2001:db8::1]:8443");
    assert_eq!(value(3), int8(8443));
    assert_eq!(value(4), [1], "bool is one byte");
    assert_eq!(value(5), b"spiffe://cluster.local/ns/dev/sa/app");
    assert_eq!(value(6), b"api.example.com");
    assert_eq!(value(7), b"TLSv1.3");
    assert_eq!(value(8), b"/v1/items?q=1");
    assert_eq!(value(9), b"/v1/items");
    assert_eq!(value(10), b"q=1");
    assert_eq!(value(11), b"api.example.com");
    assert_eq!(value(12), b"POST");
    assert_eq!(value(13), b"https");
    assert_eq!(value(14), b"HTTP/2");
    assert_eq!(value(15), b"curl/8");
    assert_eq!(value(16), b"r");
    assert_eq!(value(17), b"a,b", "repeated headers joined with a comma");
    let mut headers: Vec<u8> = vec![
        7, 0, 0, 0, // seven distinct names
        10, 0, 0, 0, 15, 0, 0, 0, // :authority
        5, 0, 0, 0, 13, 0, 0, 0, // :path
        7, 0, 0, 0, 4, 0, 0, 0, // :method
        7, 0, 0, 0, 5, 0, 0, 0, // :scheme
        10, 0, 0, 0, 6, 0, 0, 0, // user-agent
        5, 0, 0, 0, 3, 0, 0, 0, // x-dup
        7, 0, 0, 0, 1, 0, 0, 0, // referer
    ];
    headers.extend_from_slice(
        b":authority\0api.example.com\0:path\0/v1/items?q=1\0:method\0POST\0:scheme\0https\0\
          user-agent\0curl/8\0x-dup\0a,b\0referer\0r\0",
    );
    assert_eq!(value(18), headers);
    assert_eq!(
        value(19),
        int8(DEFAULT_START_UNIX_NANOS as i64),
        "request.time: Unix ns"
    );
    assert_eq!(value(20), b"p-name");
    assert_eq!(value(21), b"p-root");
    assert_eq!(value(22), b"egress");
    assert_eq!(value(23), 1u64.to_le_bytes(), "uint64 LE");
    assert_eq!(value(24), 1u64.to_le_bytes());
    assert_eq!(value(33), b"");
    assert_eq!(value(34), b"a,b");
}

#[test]
fn tcp_and_plaintext_properties() {
    let paths = [
        "request.protocol",
        "request.path",
        "request.time",
        "source.address",
        "connection.mtls",
        "connection.uri_san_peer_certificate",
        "connection.tls_version",
        "connection.requested_server_name",
        "request.headers",
    ];
    let wasm = property_probe("proxy_on_new_connection", &paths);
    let host = Host::new(&wasm, VmConfig::default(), HostOptions::default()).unwrap();
    let mut deployment = host
        .start(vec![PluginConfig::network("p", "p", "")], 1)
        .unwrap();
    deployment.worker(0).tcp(&TcpStream::default()).unwrap();
    assert_eq!(results(&host), [1, 1, 0, 0, 0, 1, 1, 0, 1]);
    assert_eq!(stashed(&host, "p3"), b"10.0.0.1:50000");
    assert_eq!(stashed(&host, "p4"), [0], "plaintext: mtls false");
    // No SNI: an empty string, which the module gets as a null pointer and size 0.
    assert_eq!(stashed(&host, "p7"), b"");
}

#[test]
fn set_property_values_come_back_from_filter_state() {
    let body = r#"
        (call $rec (call $proxy_set_property (i32.const 4096) (i32.const 6) (i32.const 4110) (i32.const 5)))
        (call $rec (call $proxy_get_property (i32.const 4096) (i32.const 6) (i32.const 600) (i32.const 604)))
        (call $stash (i32.const 4120) (i32.const 2) (i32.const 600))
        (call $rec (call $proxy_get_property (i32.const 4130) (i32.const 24) (i32.const 600) (i32.const 604)))
        (call $stash (i32.const 4160) (i32.const 2) (i32.const 600))
    "#;
    let extra = r#"(data (i32.const 4096) "custom") (data (i32.const 4110) "value")
        (data (i32.const 4120) "v1") (data (i32.const 4130) "filter_state\00wasm.custom")
        (data (i32.const 4160) "v2")"#;
    let wasm = probe("proxy_on_request_headers", body, extra);
    let host = Host::new(&wasm, VmConfig::default(), HostOptions::default()).unwrap();
    let mut deployment = host
        .start(vec![PluginConfig::http("p", "p", "")], 1)
        .unwrap();
    deployment
        .worker(0)
        .http(&HttpRequest::get("a", "/"))
        .unwrap();
    assert_eq!(results(&host), [0, 0, 0]);
    assert_eq!(stashed(&host, "v1"), b"value");
    assert_eq!(stashed(&host, "v2"), b"value");
}
