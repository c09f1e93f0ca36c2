//! Cost of a global rate limit against a local one, in one run: the same allowed requests through
//! egress_filter, first with a local limit (token bucket in shared data), then with a global
//! limit asked of the test rate limit service (`tests/rls-server`: limitador over a real
//! `redis-server`, HTTP/2 gRPC on loopback). Prints latency per request (mean, p50, p99) on one
//! worker, and requests per second with four workers on threads of their own. Then the Redis
//! memory one counter takes: 10,000 requests from distinct namespaces (one counter each),
//! `used_memory` (`redis-cli INFO memory`) before and after.
//!
//! Needs `redis-server` and the filter:
//! `cargo build --release --target wasm32-wasip1 -p egress-filter`
//! then `cargo bench -p egress-sim --bench global_ratelimit`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egress_sim::{
    limits, Deployment, Host, HostOptions, HttpRequest, PluginConfig, StreamResult, VmConfig,
    Worker,
};
use rls_server::redis::RedisServer;
use rls_server::{load_limits, AnswerStyle, RlsOptions, RlsServer};

const CLUSTER: &str = "outbound|8081||limitador.limitador.svc.cluster.local";
const WARMUP: usize = 300;
const SEQUENTIAL: usize = 5_000;
const PARALLEL_WORKERS: usize = 4;
const PER_WORKER: usize = 2_000;
const COUNTERS: usize = 10_000;

fn egress_filter() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("wasm32-wasip1/release/egress_filter.wasm");
    assert!(
        path.exists(),
        "{} not found: build it with `cargo build --release --target wasm32-wasip1 -p egress-filter`",
        path.display()
    );
    path
}

/// One limit keyed by namespace that every request matches and none exhausts; `global` adds
/// the rate limit service.
fn config(global: bool) -> String {
    let global = if global {
        format!(
            r#","global":{{"cluster":"{CLUSTER}","domain":"egress","timeoutMs":1000,"failureMode":"deny"}}"#
        )
    } else {
        String::new()
    };
    format!(
        r#"{{"rateLimits":[{{"name":"openai","match":{{"to":[{{"operation":{{"hosts":["api.openai.com"]}}}}]}},
            "key":["source.namespace"],"maxTokens":4000000000,"fillInterval":"1h"{global}}}]}}"#
    )
}

fn deploy(config: &str, rls: std::net::SocketAddr, workers: usize) -> Deployment {
    let mut options = HostOptions::default();
    options.cluster_endpoints.insert(CLUSTER.to_string(), rls);
    Host::from_file(&egress_filter(), VmConfig::default(), options)
        .expect("the filter loads")
        .start(
            vec![PluginConfig::http("egress-guard", "egress-guard", config)],
            workers,
        )
        .expect("the filter starts")
}

fn request() -> HttpRequest {
    let mut request = HttpRequest::get("api.openai.com", "/v1/chat");
    request.connection.principal = Some("cluster.local/ns/ml/sa/app".into());
    request
}

fn one(worker: &mut Worker, request: &HttpRequest) {
    let outcome = worker.http(request).expect("the host runs the request");
    assert_eq!(
        outcome.result,
        StreamResult::Continued,
        "every request is allowed: {:?}",
        outcome.messages()
    );
}

struct Latency {
    mean: Duration,
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn sequential(deployment: &mut Deployment) -> Latency {
    let request = request();
    let worker = deployment.worker(0);
    for _ in 0..WARMUP {
        one(worker, &request);
    }
    let mut samples = Vec::with_capacity(SEQUENTIAL);
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        one(worker, &request);
        samples.push(t.elapsed());
    }
    let total = started.elapsed();
    samples.sort();
    Latency {
        mean: total / SEQUENTIAL as u32,
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
        per_second: SEQUENTIAL as f64 / total.as_secs_f64(),
    }
}

fn parallel(deployment: &mut Deployment) -> f64 {
    let request = request();
    for worker in deployment.workers().iter_mut() {
        for _ in 0..WARMUP / 4 {
            one(worker, &request);
        }
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in deployment.workers().iter_mut() {
            let request = &request;
            scope.spawn(move || {
                for _ in 0..PER_WORKER {
                    one(worker, request);
                }
            });
        }
    });
    (PARALLEL_WORKERS * PER_WORKER) as f64 / started.elapsed().as_secs_f64()
}

/// `used_memory` of the Redis on `port`, in bytes.
fn redis_used_memory(port: u16) -> u64 {
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "memory"])
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.trim().strip_prefix("used_memory:")?.parse().ok())
        .expect("INFO memory has used_memory")
}

/// Bytes of Redis memory per counter: `COUNTERS` requests from distinct namespaces.
fn bytes_per_counter(deployment: &mut Deployment, redis_port: u16) -> u64 {
    let before = redis_used_memory(redis_port);
    let worker = deployment.worker(0);
    for i in 0..COUNTERS {
        let mut request = request();
        request.connection.principal = Some(format!("cluster.local/ns/namespace-{i}/sa/app"));
        one(worker, &request);
    }
    redis_used_memory(redis_port).saturating_sub(before) / COUNTERS as u64
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported: there is one case.
    let redis = match RedisServer::start() {
        Ok(redis) => redis,
        Err(e) => {
            eprintln!("global_ratelimit bench not run: {e}");
            return;
        }
    };
    let global_config = config(true);
    let report = Host::from_file(
        &egress_filter(),
        VmConfig::default(),
        HostOptions::default(),
    )
    .expect("the filter loads")
    .canary(&PluginConfig::http(
        "egress-guard",
        "egress-guard",
        global_config.as_str(),
    ))
    .expect("the configuration is accepted");
    let described = limits::described_limits(report.logs.iter().map(|l| l.message.as_str()))
        .expect("the filter describes its global limit");
    let yaml = limits::limitador_limits(&described, "the bench configuration").expect("limits");
    let server = RlsServer::start(RlsOptions {
        redis_url: redis.url(),
        limits: load_limits(&yaml).expect("limits load"),
        style: AnswerStyle::Limitador,
        // As limitador-server runs: concurrent checks, not one at a time.
        serialize: false,
    })
    .expect("the rate limit service starts");

    let mut rows = Vec::new();
    for (name, config) in [("local", config(false)), ("global", global_config.clone())] {
        let latency = sequential(&mut deploy(&config, server.addr(), 1));
        let throughput = parallel(&mut deploy(&config, server.addr(), PARALLEL_WORKERS));
        println!(
            "{name:>6}: 1 worker mean {} p50 {} p99 {} ({:.0} req/s); {PARALLEL_WORKERS} workers {:.0} req/s",
            micros(latency.mean),
            micros(latency.p50),
            micros(latency.p99),
            latency.per_second,
            throughput
        );
        rows.push((name, latency, throughput));
    }
    if let [(_, local, local_rps), (_, global, global_rps)] = &rows[..] {
        println!(
            "added by the global limit: mean {} p50 {} p99 {} per request; {:.1}x fewer req/s on one worker, {:.1}x on {PARALLEL_WORKERS}",
            micros(global.mean.saturating_sub(local.mean)),
            micros(global.p50.saturating_sub(local.p50)),
            micros(global.p99.saturating_sub(local.p99)),
            local.per_second / global.per_second,
            local_rps / global_rps
        );
    }
    let per_counter =
        bytes_per_counter(&mut deploy(&global_config, server.addr(), 1), redis.port());
    println!("redis: {per_counter} bytes per counter ({COUNTERS} counters, one per namespace)");
    println!(
        "rate limit service: {} calls, {} over limit, {} errors",
        server.calls(),
        server.over_limit(),
        server.errors()
    );
}
