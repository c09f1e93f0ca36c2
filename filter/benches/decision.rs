//! Decision cost against configurations with 1, 1,000 and 100,000 host entries.
//!
//! Run: `cargo bench -p egress-filter --bench decision`
//!
//! - `evaluate/one_rule/<n>`: one ALLOW rule listing n hosts (70% exact names, 30% `*.domain`)
//!   plus DENY and AUDIT policies; requests hit an exact name, hit a wildcard, or miss.
//! - `evaluate/one_policy_per_host/<n>`: n ALLOW policies with one host each (the host index
//!   narrows the rules before they are evaluated).
//! - `request/one_rule/<n>`: the whole per-request path of the filter natively: normalise the
//!   request head, evaluate (through `CompiledConfig::evaluate`, as the filter does), render
//!   the log line.
//! - `request/tiers/<n>`: the same with `tiers`: an admin tier (a DENY policy, a policy for CI
//!   namespaces, a PASS), 50 team namespaces whose ALLOW policy for the request's namespace
//!   lists n hosts, a baseline; the request is passed and allowed in the namespace tier.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use egress_filter::attributes::{Attributes, HttpAttributes, RequestHead};
use egress_filter::log::decision_line;
use egress_filter::{CompiledConfig, TrafficKind};

const SIZES: [usize; 3] = [1, 1_000, 100_000];

fn host(i: usize) -> String {
    if i % 10 < 7 {
        format!("api{i}.vendor{}.example.com", i % 97)
    } else {
        format!("*.svc{i}.example.net")
    }
}

fn one_rule_config(n: usize) -> CompiledConfig {
    let hosts: Vec<String> = (0..n).map(|i| format!("\"{}\"", host(i))).collect();
    let json = format!(
        r#"{{"policies":[
          {{"name":"require-identity","action":"DENY","rules":[{{"from":[{{"source":{{"notPrincipals":["*"]}}}}]}}]}},
          {{"name":"block","action":"DENY","rules":[{{"to":[{{"operation":{{"hosts":["evil.example","*.pastebin.com"],"ports":["80"]}}}}]}}]}},
          {{"name":"audit-posts","action":"AUDIT","rules":[{{"to":[{{"operation":{{"methods":["POST"],"ports":["80"]}}}}]}}]}},
          {{"name":"allow-vendors","rules":[{{"from":[{{"source":{{"principals":["cluster.local/*"]}}}}],
            "to":[{{"operation":{{"hosts":[{}],"methods":["GET","POST"]}}}}]}}]}}]}}"#,
        hosts.join(",")
    );
    CompiledConfig::from_json(json.as_bytes()).expect("bench config")
}

fn policy_per_host_config(n: usize) -> CompiledConfig {
    let policies: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"name":"allow-{i}","rules":[{{"from":[{{"source":{{"namespaces":["team-{}"]}}}}],"to":[{{"operation":{{"hosts":["{}"]}}}}]}}]}}"#,
                i % 50,
                host(i)
            )
        })
        .collect();
    let json = format!(r#"{{"policies":[{}]}}"#, policies.join(","));
    CompiledConfig::from_json(json.as_bytes()).expect("bench config")
}

fn request(authority: &str, namespace: &str) -> Attributes {
    let head = RequestHead {
        authority: Some(authority),
        method: Some("GET"),
        path: Some("/v1/items?page=2"),
        scheme: Some("https"),
        protocol: Some("HTTP/1.1"),
        headers: &[("user-agent", "bench")],
    };
    Attributes::default()
        .with_principal(&format!("cluster.local/ns/{namespace}/sa/app"))
        .with_source_ip("10.1.2.3".parse().expect("ip"))
        .with_destination(Some("10.20.0.5".parse().expect("ip")), Some(80))
        .with_http(HttpAttributes::from_request(&head, &[]).expect("request"))
}

/// Names that exist in a config of size n: an exact entry, a wildcard entry, and a miss.
fn probes(n: usize) -> Vec<(&'static str, String)> {
    let exact = (0..n)
        .rev()
        .find(|i| i % 10 < 7)
        .map_or_else(|| "api0.vendor0.example.com".to_string(), host);
    let wildcard = (0..n).rev().find(|i| i % 10 >= 7).map_or_else(
        || "x.svc7.example.net".to_string(),
        |i| host(i).replace('*', "deep.sub"),
    );
    vec![
        ("exact", exact),
        ("wildcard", wildcard),
        ("miss", "unknown.example.org".to_string()),
    ]
}

fn bench_one_rule(c: &mut Criterion) {
    let mut group = c.benchmark_group("evaluate/one_rule");
    for n in SIZES {
        let config = one_rule_config(n);
        for (label, authority) in probes(n) {
            let attrs = request(&format!("{authority}:443"), "dev");
            group.bench_with_input(BenchmarkId::new(label, n), &attrs, |b, attrs| {
                b.iter(|| black_box(config.policy.evaluate(black_box(attrs)).verdict))
            });
        }
    }
    group.finish();
}

fn bench_policy_per_host(c: &mut Criterion) {
    let mut group = c.benchmark_group("evaluate/one_policy_per_host");
    for n in SIZES {
        let config = policy_per_host_config(n);
        for (label, authority) in probes(n) {
            let namespace = format!("team-{}", n.saturating_sub(1) % 50);
            let attrs = request(&authority, &namespace);
            group.bench_with_input(BenchmarkId::new(label, n), &attrs, |b, attrs| {
                b.iter(|| black_box(config.policy.evaluate(black_box(attrs)).verdict))
            });
        }
    }
    group.finish();
}

/// The filter's per-request work for one HTTPS request from `principal`: normalise the head,
/// evaluate, render the decision line.
fn whole_request(config: &CompiledConfig, authority: &str, principal: &str) -> String {
    let headers = [("user-agent", "bench"), ("accept", "*/*")];
    let head = RequestHead {
        authority: Some(authority),
        method: Some("GET"),
        path: Some("/v1/items/../orders?page=2"),
        scheme: Some("https"),
        protocol: Some("HTTP/1.1"),
        headers: &headers,
    };
    let http = HttpAttributes::from_request(&head, config.header_names()).expect("request");
    let attrs = Attributes::default()
        .with_principal(principal)
        .with_source_ip("10.1.2.3".parse().expect("ip"))
        .with_http(http);
    let decision = config.evaluate(&attrs);
    decision_line(TrafficKind::Http, &decision, Some(&attrs))
}

fn bench_whole_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("request/one_rule");
    for n in SIZES {
        let config = one_rule_config(n);
        let authority = format!("{}:443", probes(n)[0].1);
        group.bench_function(BenchmarkId::new("exact", n), |b| {
            b.iter(|| {
                black_box(whole_request(
                    &config,
                    &authority,
                    "cluster.local/ns/dev/sa/app",
                ))
            })
        });
    }
    group.finish();
}

fn tiers_config(n: usize) -> CompiledConfig {
    let hosts: Vec<String> = (0..n).map(|i| format!("\"{}\"", host(i))).collect();
    let namespaces: Vec<String> = (0..50)
        .map(|t| {
            format!(
                r#""team-{t}":[{{"name":"allow-vendors","rules":[{{"to":[{{"operation":{{"hosts":[{}],"methods":["GET","POST"]}}}}]}}]}},
                   {{"name":"audit-posts","action":"AUDIT","rules":[{{"to":[{{"operation":{{"methods":["POST"],"ports":["80"]}}}}]}}]}}]"#,
                hosts.join(",")
            )
        })
        .collect();
    let json = format!(
        r#"{{"tiers":{{
          "admin":[
            {{"name":"block","priority":10,"rules":[{{"name":"paste","action":"DENY","to":[{{"operation":{{"hosts":["evil.example","*.pastebin.com"],"ports":["80"]}}}}]}}]}},
            {{"name":"ci","priority":20,"subject":{{"namespaces":["ci-a","ci-b"]}},"rules":[{{"name":"github","action":"ALLOW","to":[{{"operation":{{"hosts":["*.github.com"]}}}}]}},{{"name":"rest","action":"DENY"}}]}},
            {{"name":"delegate","priority":30,"rules":[{{"name":"teams","action":"PASS"}}]}}],
          "namespaces":{{{}}},
          "baseline":[{{"name":"mirror","priority":10,"rules":[{{"action":"ALLOW","to":[{{"operation":{{"hosts":["mirror.example"]}}}}]}}]}}]}}}}"#,
        namespaces.join(",")
    );
    CompiledConfig::from_json(json.as_bytes()).expect("bench config")
}

fn bench_whole_request_tiers(c: &mut Criterion) {
    let mut group = c.benchmark_group("request/tiers");
    for n in [1, 1_000] {
        let config = tiers_config(n);
        let authority = format!("{}:443", probes(n)[0].1);
        let line = whole_request(&config, &authority, "cluster.local/ns/team-7/sa/app");
        assert!(line.contains(r#""policy":"allow-vendors""#), "{line}");
        group.bench_function(BenchmarkId::new("exact", n), |b| {
            b.iter(|| {
                black_box(whole_request(
                    &config,
                    &authority,
                    "cluster.local/ns/team-7/sa/app",
                ))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_one_rule, bench_policy_per_host, bench_whole_request, bench_whole_request_tiers
}
criterion_main!(benches);
