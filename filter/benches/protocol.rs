//! Cost of the protocol checks on their own: ClientHello parsing (whole, fragmented, one byte
//! per read), protocol detection, connection inspection + TCP checks, and HTTP header checks.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use egress_filter::protocol::{
    detect, ClientHelloParser, ConnectionInspector, HttpChecks, TcpChecks, TlsVersion,
    DEFAULT_MAX_CLIENT_HELLO_BYTES,
};

fn capture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tls")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The same handshake message re-framed into records cut at `cuts`.
fn refragment(stream: &[u8], cuts: &[usize]) -> Vec<u8> {
    let hs = &stream[5..];
    let mut out = Vec::new();
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(hs.len());
    for w in bounds.windows(2) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&((w[1] - w[0]) as u16).to_be_bytes());
        out.extend_from_slice(&hs[w[0]..w[1]]);
    }
    out
}

fn client_hello(c: &mut Criterion) {
    let curl = capture("curl.bin");
    let fragmented = refragment(&curl, &[100, 300]);
    let mut group = c.benchmark_group("client_hello");
    group.throughput(Throughput::Bytes(curl.len() as u64));
    group.bench_function("curl_517B_one_read", |b| {
        b.iter(|| {
            let mut p = ClientHelloParser::new(DEFAULT_MAX_CLIENT_HELLO_BYTES);
            black_box(p.feed(black_box(&curl)).map(|h| h.map(|h| h.records)))
        })
    });
    group.bench_function("curl_3_records_one_read", |b| {
        b.iter(|| {
            let mut p = ClientHelloParser::new(DEFAULT_MAX_CLIENT_HELLO_BYTES);
            black_box(p.feed(black_box(&fragmented)).map(|h| h.map(|h| h.records)))
        })
    });
    group.bench_function("curl_byte_per_read", |b| {
        b.iter(|| {
            let mut p = ClientHelloParser::new(DEFAULT_MAX_CLIENT_HELLO_BYTES);
            let mut done = false;
            for byte in &curl {
                done = matches!(p.feed(std::slice::from_ref(byte)), Ok(Some(_)));
            }
            black_box(done)
        })
    });
    group.finish();
}

fn detection_and_tcp(c: &mut Criterion) {
    let curl = capture("curl.bin");
    let request = b"GET /v1/objects?page=2 HTTP/1.1\r\nHost: api.example.com\r\n\r\n";
    c.bench_function("detect_http1_request_line", |b| {
        b.iter(|| black_box(detect(black_box(request))))
    });
    let checks = TcpChecks {
        tls_ports: vec![443],
        min_tls_version: TlsVersion::TLS12,
        allowed_alpn: Some(vec!["h2".into(), "http/1.1".into()]),
        ..TcpChecks::default()
    };
    c.bench_function("inspect_and_check_tls_connection", |b| {
        b.iter(|| {
            let mut i = ConnectionInspector::new(DEFAULT_MAX_CLIENT_HELLO_BYTES);
            let facts = i.feed(black_box(&curl)).cloned();
            black_box(facts.map(|f| checks.check(&f, 443, Some("api.example.com"))))
        })
    });
}

fn http_checks(c: &mut Criterion) {
    let headers: Vec<(String, String)> = [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "api.example.com"),
        (":path", "/v1/objects/1234?expand=owner"),
        ("user-agent", "python-requests/2.31.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate"),
        ("content-type", "application/json"),
        ("content-length", "512"),
        (
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
        ),
        ("x-request-id", "2f1c9a2e-7f3b-4c55-9d2e-0b7d6c1e4a11"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let checks = HttpChecks::default();
    c.bench_function("http_checks_12_headers", |b| {
        b.iter(|| {
            black_box(checks.check(black_box(&headers), Some("HTTP/2"), Some("api.example.com")))
        })
    });
}

criterion_group!(benches, client_hello, detection_and_tcp, http_checks);
criterion_main!(benches);
