//! Cost of one request through the host: the no-op filter (the floor: host plus SDK dispatch),
//! the ABI floor (`tests/data/abi_floor.wat`: egress_filter's host calls and nothing else) and
//! egress_filter with 1, 1,000 and 100,000 hosts in its configuration, then the ratio of each
//! to the floors.
//!
//! Both modules must be built first:
//! `cargo build --release --target wasm32-wasip1 -p noop-filter -p egress-filter`
//! then `cargo bench -p egress-sim --bench host_overhead`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use egress_sim::{
    Connection, Host, HostOptions, HttpRequest, PluginConfig, StreamResult, TcpStream, VmConfig,
    Worker,
};

const HOST_COUNTS: [usize; 3] = [1, 1_000, 100_000];

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn module(name: &str) -> PathBuf {
    let path = target_dir().join(format!("wasm32-wasip1/release/{name}.wasm"));
    assert!(
        path.exists(),
        "{} not found: build it with `cargo build --release --target wasm32-wasip1 -p {}`",
        path.display(),
        name.replace('_', "-")
    );
    path
}

/// One ALLOW policy listing `hosts` hosts for mTLS callers of the `ci` namespace, plus a DENY
/// policy, as a gateway configuration grows. The hosts mix the three forms AuthorizationPolicy
/// has: seven in ten exact names, two suffixes (`*.zone-N.example.net`), one prefix
/// (`edge-N.*`).
fn config(hosts: usize) -> Vec<u8> {
    let list: Vec<String> = (0..hosts)
        .map(|i| match i % 10 {
            0..=6 => format!("\"host-{i}.example.com\""),
            7 | 8 => format!("\"*.zone-{i}.example.net\""),
            _ => format!("\"edge-{i}.*\""),
        })
        .collect();
    format!(
        r#"{{"policies":[
          {{"name":"deny-metadata","action":"DENY","rules":[{{"to":[{{"operation":{{"hosts":["169.254.169.254"]}}}}]}}]}},
          {{"name":"allow-listed","action":"ALLOW","rules":[{{
            "from":[{{"source":{{"namespaces":["ci"]}}}}],
            "to":[{{"operation":{{"hosts":[{}],"methods":["GET","POST"]}}}}]}}]}}
        ]}}"#,
        list.join(",")
    )
    .into_bytes()
}

/// The last exact name `config(hosts)` lists: the worst case for a list scan.
fn last_exact_host(hosts: usize) -> String {
    let last = (0..hosts).rev().find(|i| i % 10 <= 6).unwrap_or(0);
    format!("host-{last}.example.com")
}

/// `config(1_000)` plus ten rate limits every request matches (five one-bucket limits, five keyed
/// by principal), sized so that no request is ever limited: the cost of ten CAS updates.
fn config_with_limits() -> Vec<u8> {
    let base = String::from_utf8(config(1_000)).unwrap_or_default();
    let limits: Vec<String> = (0..10)
        .map(|i| {
            let key = if i % 2 == 0 { "[]" } else { r#"["source.principal"]"# };
            format!(
                r#"{{"name":"limit-{i}","key":{key},"maxTokens":4000000000,"tokensPerFill":1,"fillInterval":"1h"}}"#
            )
        })
        .collect();
    let body = base.trim_end().trim_end_matches('}');
    format!(r#"{body},"rateLimits":[{}]}}"#, limits.join(",")).into_bytes()
}

/// `config(1_000)` plus every protocol check at its defaults.
fn config_with_protocol() -> Vec<u8> {
    let base = String::from_utf8(config(1_000)).unwrap_or_default();
    let body = base.trim_end().trim_end_matches('}');
    format!(r#"{body},"protocol":{{}}}}"#).into_bytes()
}

/// `configuration` with `"log": {"allowed": false}`: an allowed request writes no decision
/// line (its decision goes to filter state for Envoy's access log) and reads only the
/// connection properties the rules look at.
fn unlogged(configuration: Vec<u8>) -> Vec<u8> {
    let base = String::from_utf8(configuration).unwrap_or_default();
    let body = base.trim_end().trim_end_matches('}');
    format!(r#"{body},"log":{{"allowed":false}}}}"#).into_bytes()
}

/// A ClientHello captured from curl (SNI api.example.com), whole.
fn client_hello() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../filter/tests/data/tls/curl.bin");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn worker(wasm: &Path, configuration: Vec<u8>) -> Worker {
    let host = Host::from_file(wasm, VmConfig::default(), HostOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    start(host, configuration)
}

/// The second floor: `tests/data/abi_floor.wat` makes egress_filter's host calls (property
/// reads, header list, log line, counters) and nothing else.
fn abi_floor_worker() -> Worker {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/abi_floor.wat");
    let wasm = wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let host = Host::new(&wasm, VmConfig::default(), HostOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    start(host, b"{}".to_vec())
}

fn start(host: Host, configuration: Vec<u8>) -> Worker {
    let plugins = vec![
        PluginConfig::http("bench", "bench", configuration.clone()),
        PluginConfig::network("bench-tcp", "bench-tcp", configuration),
    ];
    host.start(plugins, 1)
        .unwrap_or_else(|e| panic!("{e}: {:?}", e.logs()))
        .into_workers()
        .remove(0)
}

fn request(authority: &str) -> HttpRequest {
    HttpRequest {
        connection: Connection {
            principal: Some("cluster.local/ns/ci/sa/runner".into()),
            ..Connection::default()
        },
        headers: vec![
            ("user-agent".into(), "curl/8.5.0".into()),
            ("accept".into(), "*/*".into()),
        ],
        ..HttpRequest::get(authority, "/v1/items?page=2")
    }
}

fn tcp() -> TcpStream {
    TcpStream {
        connection: Connection {
            sni: Some("host-0.example.com".into()),
            ..Connection::default()
        },
        downstream: vec![vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]],
        ..TcpStream::default()
    }
}

fn bench_http(c: &mut Criterion) {
    let mut group = c.benchmark_group("http_request");
    let mut noop = worker(&module("noop_filter"), b"{}".to_vec());
    let allowed = request("host-0.example.com");
    group.bench_function("noop", |b| b.iter(|| noop.http(&allowed).unwrap()));
    let mut floor = abi_floor_worker();
    group.bench_function("abi_floor", |b| b.iter(|| floor.http(&allowed).unwrap()));

    let egress = module("egress_filter");
    for hosts in HOST_COUNTS {
        let mut worker = worker(&egress, config(hosts));
        let allowed = request(&last_exact_host(hosts));
        let denied = request("not-listed.example.org");
        assert_eq!(
            worker.http(&allowed).unwrap().result,
            StreamResult::Continued
        );
        assert_eq!(worker.http(&denied).unwrap().status(), Some(403));
        group.bench_with_input(
            BenchmarkId::new("egress_filter_allow", hosts),
            &allowed,
            |b, r| b.iter(|| worker.http(r).unwrap()),
        );
        group.bench_with_input(
            BenchmarkId::new("egress_filter_deny", hosts),
            &denied,
            |b, r| b.iter(|| worker.http(r).unwrap()),
        );
    }
    for hosts in [1_000, 100_000] {
        let mut worker = worker(&egress, unlogged(config(hosts)));
        let allowed = request(&last_exact_host(hosts));
        let denied = request("not-listed.example.org");
        let outcome = worker.http(&allowed).unwrap();
        assert_eq!(outcome.result, StreamResult::Continued);
        assert!(!outcome
            .messages()
            .iter()
            .any(|m| m.contains(r#""event":"decision""#)));
        assert!(outcome
            .filter_state("wasm.egress_guard.decision")
            .is_some_and(|s| s.contains(r#""decision":"allow""#)));
        let outcome = worker.http(&denied).unwrap();
        assert_eq!(outcome.status(), Some(403));
        assert!(outcome
            .messages()
            .iter()
            .any(|m| m.contains(r#""source.ip""#)));
        group.bench_with_input(
            BenchmarkId::new("egress_filter_allow_unlogged", hosts),
            &allowed,
            |b, r| b.iter(|| worker.http(r).unwrap()),
        );
        group.bench_with_input(
            BenchmarkId::new("egress_filter_deny_unlogged", hosts),
            &denied,
            |b, r| b.iter(|| worker.http(r).unwrap()),
        );
    }
    let allowed = request(&last_exact_host(1_000));
    for (name, configuration) in [
        ("egress_filter_10_limits", config_with_limits()),
        ("egress_filter_protocol_checks", config_with_protocol()),
    ] {
        let mut worker = worker(&egress, configuration);
        assert_eq!(
            worker.http(&allowed).unwrap().result,
            StreamResult::Continued
        );
        group.bench_with_input(BenchmarkId::new(name, 1_000), &allowed, |b, r| {
            b.iter(|| worker.http(r).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("tcp_connection");
    let connection = tcp();
    group.bench_function("noop", |b| b.iter(|| noop.tcp(&connection).unwrap()));
    let mut worker = worker(&egress, config(1_000));
    // The TCP floor makes the host calls of this very connection, which the filter denies.
    let mut floor = abi_floor_worker();
    let denied = worker.tcp(&connection).unwrap().result;
    assert_eq!(denied, StreamResult::Closed);
    assert_eq!(floor.tcp(&connection).unwrap().result, denied);
    group.bench_function("abi_floor", |b| b.iter(|| floor.tcp(&connection).unwrap()));
    group.bench_function("egress_filter/1000", |b| {
        b.iter(|| worker.tcp(&connection).unwrap())
    });
    // TLS passthrough with inspection: a real ClientHello parsed and checked, then forwarded.
    let hello = TcpStream {
        connection: Connection {
            sni: Some("api.example.com".into()),
            destination: "10.0.0.2:443".parse().unwrap_or_else(|e| panic!("{e}")),
            ..Connection::default()
        },
        downstream: vec![client_hello()],
        ..TcpStream::default()
    };
    let mut worker = self::worker(
        &egress,
        br#"{"protocol":{"tcp":{"tlsPorts":[443]}}}"#.to_vec(),
    );
    assert_eq!(worker.tcp(&hello).unwrap().result, StreamResult::Continued);
    group.bench_function("egress_filter_client_hello", |b| {
        b.iter(|| worker.tcp(&hello).unwrap())
    });
    let mut worker = self::worker(&egress, b"{}".to_vec());
    group.bench_function("egress_filter_no_inspection", |b| {
        b.iter(|| worker.tcp(&hello).unwrap())
    });
    group.finish();
}

/// Mean time per iteration criterion measured for a benchmark, in nanoseconds.
fn mean_nanos(id: &str) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("criterion"));
    let text = std::fs::read_to_string(home.join(id).join("new/estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

/// One table: every case, its mean, and its ratio to the no-op floor and the ABI floor of its
/// kind (HTTP or TCP).
fn print_ratios() {
    let http_noop = mean_nanos("http_request/noop");
    let abi = mean_nanos("http_request/abi_floor");
    let tcp_noop = mean_nanos("tcp_connection/noop");
    let tcp_abi = mean_nanos("tcp_connection/abi_floor");
    let mut rows: Vec<(String, String)> = vec![
        ("HTTP, no-op filter".into(), "http_request/noop".into()),
        (
            "HTTP, ABI floor (egress_filter's host calls only)".into(),
            "http_request/abi_floor".into(),
        ),
    ];
    for (kind, what) in [
        ("egress_filter_allow", "allowed"),
        ("egress_filter_deny", "denied"),
    ] {
        for hosts in HOST_COUNTS {
            rows.push((
                format!("HTTP, egress_filter, {hosts} hosts, {what}"),
                format!("http_request/{kind}/{hosts}"),
            ));
        }
    }
    for (kind, what) in [
        ("egress_filter_allow_unlogged", "allowed"),
        ("egress_filter_deny_unlogged", "denied"),
    ] {
        for hosts in [1_000, 100_000] {
            rows.push((
                format!("HTTP, egress_filter, {hosts} hosts, {what}, `log.allowed: false`"),
                format!("http_request/{kind}/{hosts}"),
            ));
        }
    }
    rows.push((
        "HTTP, egress_filter, 1000 hosts + 10 rate limits".into(),
        "http_request/egress_filter_10_limits/1000".into(),
    ));
    rows.push((
        "HTTP, egress_filter, 1000 hosts + protocol checks".into(),
        "http_request/egress_filter_protocol_checks/1000".into(),
    ));
    rows.push(("TCP, no-op filter".into(), "tcp_connection/noop".into()));
    rows.push((
        "TCP, ABI floor (egress_filter's host calls for a connection denied at connect)".into(),
        "tcp_connection/abi_floor".into(),
    ));
    rows.push((
        "TCP, egress_filter, 1000 hosts (SNI, denied)".into(),
        "tcp_connection/egress_filter_1000".into(),
    ));
    rows.push((
        "TCP, ClientHello inspected and allowed".into(),
        "tcp_connection/egress_filter_client_hello".into(),
    ));
    rows.push((
        "TCP, the same ClientHello, no inspection".into(),
        "tcp_connection/egress_filter_no_inspection".into(),
    ));
    println!("\n| case | per request | vs no-op floor | vs ABI floor |");
    println!("|---|---:|---:|---:|");
    for (label, id) in rows {
        let Some(mean) = mean_nanos(&id) else {
            continue;
        };
        let tcp = id.starts_with("tcp_connection/");
        let (noop, abi) = if tcp {
            (tcp_noop, tcp_abi)
        } else {
            (http_noop, abi)
        };
        let ratio =
            |floor: Option<f64>| floor.map_or(String::new(), |f| format!("{:.2}x", mean / f));
        let over_abi = ratio(abi);
        println!(
            "| {label} | {:.2} µs | {} | {over_abi} |",
            mean / 1000.0,
            ratio(noop)
        );
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_http(&mut criterion);
    criterion.final_summary();
    print_ratios();
}
