//! Global rate limits of the real `egress_filter.wasm`, answered by a real rate limit service:
//! the test service of `tests/rls-server` (limitador's counting engine over a real
//! `redis-server`), reached over HTTP/2 gRPC through the host's `proxy_grpc_call`. Its limits
//! file is the one `egress-sim limits` makes from the filter's own description.
//!
//! Every test skips, saying why, when `redis-server` is not installed.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::egress_filter;
use egress_sim::replay::{self, Decision, ReplayResult};
use egress_sim::{
    limits, Deployment, Host, HostOptions, HttpRequest, PluginConfig, StreamResult, TcpStream,
    VmConfig,
};
use rls_server::redis::{RedisError, RedisServer};
use rls_server::{load_limits, AnswerStyle, RlsOptions, RlsServer};
use serde_json::{json, Value};

const CLUSTER: &str = "outbound|8081||limitador.limitador.svc.cluster.local";

fn redis() -> Option<RedisServer> {
    match RedisServer::start() {
        Ok(redis) => Some(redis),
        Err(RedisError::NotInstalled) => {
            eprintln!("skipping: {}", RedisError::NotInstalled);
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// A configuration with one global limit (and `extra` rate limits before it).
fn config(global: Value, extra: Vec<Value>, key: &[&str], max: u32) -> String {
    let mut limits = extra;
    limits.push(json!({
        "name": "openai",
        "match": {"to": [{"operation": {"hosts": ["api.openai.com"]}}]},
        "key": key,
        "maxTokens": max,
        "fillInterval": "1m",
        "global": global,
    }));
    json!({"rateLimits": limits}).to_string()
}

fn global(timeout_ms: u32, failure_mode: &str) -> Value {
    json!({"cluster": CLUSTER, "domain": "egress", "timeoutMs": timeout_ms,
           "failureMode": failure_mode})
}

/// The limits file `egress-sim limits` writes for `config`, parsed as the service reads it.
fn limits_file(config: &str) -> String {
    let host = Host::from_file(
        &egress_filter(),
        VmConfig::default(),
        HostOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let report = host
        .canary(&PluginConfig::http("egress-guard", "egress-guard", config))
        .unwrap_or_else(|e| panic!("{e}: {:?}", e.logs()));
    let described = limits::described_limits(report.logs.iter().map(|l| l.message.as_str()))
        .expect("the filter describes its global limits");
    limits::limitador_limits(&described, "the test configuration").unwrap()
}

fn start_rls(redis: &RedisServer, config: &str, style: AnswerStyle) -> RlsServer {
    start_rls_on(redis, config, style, SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn start_rls_on(
    redis: &RedisServer,
    config: &str,
    style: AnswerStyle,
    addr: SocketAddr,
) -> RlsServer {
    RlsServer::start_on(
        addr,
        RlsOptions {
            redis_url: redis.url(),
            limits: load_limits(&limits_file(config)).unwrap(),
            style,
            serialize: true,
        },
    )
    .unwrap()
}

fn deploy(config: &str, rls: Option<SocketAddr>, workers: usize) -> Deployment {
    let mut options = HostOptions::default();
    if let Some(addr) = rls {
        options.cluster_endpoints.insert(CLUSTER.to_string(), addr);
    }
    Host::from_file(&egress_filter(), VmConfig::default(), options)
        .unwrap_or_else(|e| panic!("{e}"))
        .start(
            vec![
                PluginConfig::http("egress-guard", "egress-guard", config),
                PluginConfig::network("egress-guard-tcp", "egress-guard-tcp", config),
            ],
            workers,
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}", e.logs()))
}

fn request(id: &str, namespace: &str) -> String {
    json!({"id": id, "source": {"principal": format!("cluster.local/ns/{namespace}/sa/app")},
           "http": {"authority": "api.openai.com", "path": "/v1/chat"}})
    .to_string()
}

fn replay(deployment: &mut Deployment, lines: &[String]) -> Vec<ReplayResult> {
    let items = replay::parse_requests(&lines.join("\n")).unwrap();
    replay::run(deployment, &items).unwrap()
}

fn rate_limit_line(result: &ReplayResult) -> Value {
    let line = replay::decision_log(&result.logs)
        .unwrap_or_else(|| panic!("{}: no decision line in {:?}", result.id, result.logs));
    line.get("rateLimit").cloned().unwrap_or(Value::Null)
}

fn metric(deployment: &Deployment, name: &str) -> u64 {
    deployment.host().shared().metrics.value(name).unwrap_or(0)
}

fn decisions(results: &[ReplayResult]) -> Vec<Decision> {
    results.iter().map(|r| r.decision).collect()
}

#[test]
fn global_limit_is_counted_by_limitador_in_redis() {
    let Some(redis) = redis() else { return };
    let config = config(global(2_000, "deny"), vec![], &["source.namespace"], 3);
    let server = start_rls(&redis, &config, AnswerStyle::Limitador);
    // Two workers: one limit across both (and, through Redis, across replicas).
    let mut deployment = deploy(&config, Some(server.addr()), 2);
    let mut lines: Vec<String> = (0..5).map(|i| request(&format!("ml-{i}"), "ml")).collect();
    lines.push(request("web-0", "web"));
    let results = replay(&mut deployment, &lines);
    use Decision::{Allow, Ratelimited};
    assert_eq!(
        decisions(&results),
        [Allow, Allow, Allow, Ratelimited, Ratelimited, Allow]
    );
    assert_eq!(server.calls(), 6);
    assert_eq!(server.over_limit(), 2);

    let refused = &results[3];
    assert_eq!(refused.status, Some(429));
    assert_eq!(refused.headers["x-envoy-ratelimited"], "true");
    // Limitador's own headers, lower-cased as Envoy adds them.
    assert_eq!(
        refused.headers["x-ratelimit-limit"],
        "3, 3;w=60;name=\"openai\""
    );
    assert_eq!(refused.headers["x-ratelimit-remaining"], "0");
    let reset: u64 = refused.headers["x-ratelimit-reset"].parse().unwrap();
    assert!((1..=60).contains(&reset), "{reset}");
    assert_eq!(refused.headers["retry-after"], reset.to_string());
    assert_eq!(refused.details.as_deref(), Some("egress_rate_limited"));
    assert_eq!(
        refused.body.as_deref(),
        Some("egress rate limited by openai\n")
    );

    let line = rate_limit_line(refused);
    assert_eq!(line["name"], "openai");
    assert_eq!(line["scope"], "global");
    assert_eq!(line["result"], "over_limit");
    assert_eq!(line["domain"], "egress");
    assert_eq!(line["remaining"], 0);
    let allowed = rate_limit_line(&results[0]);
    assert_eq!(
        (&allowed["scope"], &allowed["result"]),
        (&json!("global"), &json!("ok"))
    );
    assert_eq!(allowed["remaining"], 2);
    let decision = replay::decision_log(&refused.logs).unwrap();
    assert_eq!(decision["decision"], "ratelimited");
    assert_eq!(decision["reason"], "global_rate_limited");

    assert_eq!(metric(&deployment, "egress_filter.rls.calls"), 6);
    assert_eq!(metric(&deployment, "egress_filter.rls.ok"), 4);
    assert_eq!(metric(&deployment, "egress_filter.rls.over_limit"), 2);
    assert_eq!(metric(&deployment, "egress_filter.rls.latency_le_inf"), 6);
    assert_eq!(
        metric(&deployment, "egress_filter.ratelimit.openai.limited"),
        2
    );
    assert_eq!(metric(&deployment, "egress_filter.ratelimited.http"), 2);
    for worker in deployment.workers() {
        assert_eq!(worker.callouts_in_flight(), 0);
        assert_eq!(worker.live_contexts(), 3, "no stream context left behind");
    }
}

#[test]
fn envoy_ratelimit_style_statuses_give_the_headers() {
    let Some(redis) = redis() else { return };
    let config = config(global(2_000, "deny"), vec![], &[], 1);
    let server = start_rls(&redis, &config, AnswerStyle::Statuses);
    let mut deployment = deploy(&config, Some(server.addr()), 1);
    let results = replay(&mut deployment, &[request("a", "ml"), request("b", "ml")]);
    assert_eq!(
        decisions(&results),
        [Decision::Allow, Decision::Ratelimited]
    );
    let headers = &results[1].headers;
    assert_eq!(headers["x-ratelimit-limit"], "1, 1;w=60;name=\"openai\"");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    let retry: u64 = headers["retry-after"].parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

#[test]
fn the_local_limit_is_checked_first_and_spares_the_service() {
    let Some(redis) = redis() else { return };
    let local = json!({"name": "local-cap", "maxTokens": 2, "fillInterval": "1m"});
    let config = config(global(2_000, "deny"), vec![local], &[], 10);
    let server = start_rls(&redis, &config, AnswerStyle::Limitador);
    let mut deployment = deploy(&config, Some(server.addr()), 1);
    let lines: Vec<String> = (0..4).map(|i| request(&i.to_string(), "ml")).collect();
    let results = replay(&mut deployment, &lines);
    use Decision::{Allow, Ratelimited};
    assert_eq!(
        decisions(&results),
        [Allow, Allow, Ratelimited, Ratelimited]
    );
    // Only the requests the local limit allowed were asked about.
    assert_eq!(server.calls(), 2);
    let refused = rate_limit_line(&results[2]);
    assert_eq!(
        (&refused["name"], &refused["scope"]),
        (&json!("local-cap"), &json!("local"))
    );
    let allowed = replay::decision_log(&results[0].logs).unwrap();
    assert_eq!(allowed["rateLimit"]["scope"], "global");
    assert_eq!(allowed["localRateLimit"]["name"], "local-cap");
}

#[test]
fn a_connection_is_held_until_the_service_answers() {
    let Some(redis) = redis() else { return };
    let limit = json!({"name": "per-sni", "key": ["connection.sni"], "maxTokens": 1,
                       "fillInterval": "1m", "global": global(2_000, "deny")});
    let config = json!({"rateLimits": [limit]}).to_string();
    let server = start_rls(&redis, &config, AnswerStyle::Limitador);
    let mut deployment = deploy(&config, Some(server.addr()), 1);
    let connection = || TcpStream {
        connection: egress_sim::Connection {
            sni: Some("api.example.com".into()),
            ..egress_sim::Connection::default()
        },
        downstream: vec![b"first bytes".to_vec()],
        upstream: Vec::new(),
        ..TcpStream::default()
    };
    let worker = deployment.worker(0);
    let first = worker.tcp(&connection()).unwrap();
    assert_eq!(first.result, StreamResult::Continued);
    assert_eq!(first.forwarded_bytes, b"first bytes");
    let second = worker.tcp(&connection()).unwrap();
    assert_eq!(second.result, StreamResult::Closed);
    assert!(second.forwarded_bytes.is_empty(), "nothing goes upstream");
    assert_eq!(server.calls(), 2);
    let messages = second.messages();
    let decision: Value = serde_json::from_str(
        messages
            .iter()
            .rev()
            .find(|m| m.contains("\"decision\""))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(decision["decision"], "ratelimited");
    assert_eq!(decision["rateLimit"]["scope"], "global");
}

#[test]
fn failures_follow_the_failure_mode() {
    let Some(mut redis) = redis() else { return };
    let deny = config(global(300, "deny"), vec![], &[], 100);
    let allow = config(global(300, "allow"), vec![], &[], 100);

    // No such cluster: Envoy refuses the call at once.
    let mut deployment = deploy(&deny, None, 1);
    let results = replay(&mut deployment, &[request("a", "ml")]);
    assert_eq!(results[0].status, Some(500));
    assert_eq!(
        results[0].details.as_deref(),
        Some("egress_rate_limit_error")
    );
    let line = rate_limit_line(&results[0]);
    assert_eq!(
        (&line["result"], &line["error"]),
        (&json!("error"), &json!("unknown_cluster"))
    );
    assert_eq!(
        metric(&deployment, "egress_filter.rls.error.unknown_cluster"),
        1
    );
    assert_eq!(
        metric(&deployment, "egress_filter.rls.failure_mode_denied"),
        1
    );
    let mut deployment = deploy(&allow, None, 1);
    let results = replay(&mut deployment, &[request("a", "ml")]);
    assert_eq!(results[0].decision, Decision::Allow);
    assert_eq!(
        replay::decision_log(&results[0].logs).unwrap()["reason"],
        "rate_limit_service_error_allowed"
    );

    // A service slower than timeoutMs.
    let server = start_rls(&redis, &deny, AnswerStyle::Limitador);
    server.set_delay(Duration::from_millis(1_500));
    let mut deployment = deploy(&deny, Some(server.addr()), 1);
    let started = Instant::now();
    let results = replay(&mut deployment, &[request("slow", "ml")]);
    assert!(
        started.elapsed() < Duration::from_millis(1_400),
        "the timeout did not fire"
    );
    assert_eq!(results[0].status, Some(500));
    assert_eq!(rate_limit_line(&results[0])["error"], "timeout");
    assert_eq!(metric(&deployment, "egress_filter.rls.error.timeout"), 1);
    server.set_delay(Duration::ZERO);

    // Redis gone: the service answers UNAVAILABLE.
    redis.stop();
    let results = replay(&mut deployment, &[request("no-redis", "ml")]);
    assert_eq!(results[0].status, Some(500));
    assert_eq!(rate_limit_line(&results[0])["error"], "unavailable");
    let mut open = deploy(&allow, Some(server.addr()), 1);
    let results = replay(&mut open, &[request("no-redis-open", "ml")]);
    assert_eq!(results[0].decision, Decision::Allow);
    assert_eq!(metric(&open, "egress_filter.rls.failure_mode_allowed"), 1);
    assert!(server.errors() >= 1);
    assert!(deployment.workers().iter().all(|w| w.failure().is_none()));
}

#[test]
fn limits_resume_when_the_service_restarts() {
    let Some(redis) = redis() else { return };
    let config = config(global(1_000, "deny"), vec![], &[], 3);
    let server = start_rls(&redis, &config, AnswerStyle::Limitador);
    let addr = server.addr();
    let mut deployment = deploy(&config, Some(addr), 1);
    let results = replay(&mut deployment, &[request("1", "ml"), request("2", "ml")]);
    assert_eq!(decisions(&results), [Decision::Allow, Decision::Allow]);

    server.stop();
    let results = replay(&mut deployment, &[request("down", "ml")]);
    assert_eq!(
        results[0].status,
        Some(500),
        "no service: failure mode deny"
    );
    assert_eq!(rate_limit_line(&results[0])["error"], "unavailable");

    // Same address, same Redis: the counters survive the service.
    let server = start_rls_on(&redis, &config, AnswerStyle::Limitador, addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut results;
    loop {
        results = replay(&mut deployment, &[request("3", "ml")]);
        if results[0].status != Some(500) || Instant::now() > deadline {
            break;
        }
    }
    assert_eq!(results[0].decision, Decision::Allow);
    let results = replay(&mut deployment, &[request("4", "ml")]);
    assert_eq!(results[0].decision, Decision::Ratelimited);
    assert!(server.calls() >= 2);
}

#[test]
fn replicas_share_one_limit_through_redis() {
    let Some(redis) = redis() else { return };
    const LIMIT: u32 = 40;
    const PER_REPLICA: usize = 60;
    let config = config(global(5_000, "deny"), vec![], &["source.namespace"], LIMIT);
    let dir = std::env::temp_dir().join(format!("egress-sim-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, &config).unwrap();
    let sim = env!("CARGO_BIN_EXE_egress-sim");
    let wasm = egress_filter();

    // The limits file comes from the CLI, as an operator would make it.
    let output = Command::new(sim)
        .args(["limits", "--wasm"])
        .arg(&wasm)
        .arg("--config")
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let limits = load_limits(&String::from_utf8(output.stdout).unwrap()).unwrap();
    let server = RlsServer::start(RlsOptions {
        redis_url: redis.url(),
        limits,
        style: AnswerStyle::Limitador,
        serialize: true,
    })
    .unwrap();

    let requests: String = (0..PER_REPLICA)
        .map(|i| request(&format!("r{i}"), "ml") + "\n")
        .collect();
    // Two gateway replicas, four workers each, all workers replaying at once.
    let replicas: Vec<_> = (0..2)
        .map(|_| {
            let mut child = Command::new(sim)
                .args(["replay", "--workers", "4", "--parallel", "--wasm"])
                .arg(&wasm)
                .arg("--config")
                .arg(&config_path)
                .arg("--rls")
                .arg(server.addr().to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(requests.as_bytes())
                .unwrap();
            child
        })
        .collect();
    let mut allowed = 0;
    let mut limited = 0;
    for child in replicas {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for line in String::from_utf8(output.stdout).unwrap().lines() {
            let result: ReplayResult = serde_json::from_str(line).unwrap();
            match result.decision {
                Decision::Allow => allowed += 1,
                Decision::Ratelimited => limited += 1,
                other => panic!(
                    "{}: {other} {:?} {:?}",
                    result.id, result.error, result.logs
                ),
            }
        }
    }
    assert_eq!(
        allowed, LIMIT as usize,
        "the limit holds across both replicas"
    );
    assert_eq!(allowed + limited, 2 * PER_REPLICA);
    assert_eq!(server.calls(), (2 * PER_REPLICA) as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_paused_request_abandoned_by_its_client_cancels_its_call() {
    let Some(redis) = redis() else { return };
    let config = config(global(5_000, "deny"), vec![], &[], 10);
    let server = start_rls(&redis, &config, AnswerStyle::Limitador);
    server.set_delay(Duration::from_millis(300));
    let mut deployment = deploy(&config, Some(server.addr()), 1);
    let worker = deployment.worker(0);
    let mut request = HttpRequest::get("api.openai.com", "/v1");
    request.connection.principal = Some("cluster.local/ns/ml/sa/app".into());
    let handle = worker.begin_http(&request).unwrap();
    assert!(worker.is_paused(handle));
    assert_eq!(worker.callouts_in_flight(), 1);
    let outcome = worker.finish(handle);
    assert_eq!(outcome.result, StreamResult::Paused);
    // The filter cancelled its call when the stream went away.
    assert_eq!(worker.callouts_in_flight(), 0);
    assert_eq!(worker.live_contexts(), 3);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        worker.deliver_callouts(),
        0,
        "a cancelled call delivers nothing"
    );
}

#[test]
fn redis_killed_mid_run_gives_the_failure_mode() {
    let Some(mut redis) = redis() else { return };
    const LIMIT: u32 = 10_000;
    let config = config(global(100, "deny"), vec![], &["source.namespace"], LIMIT);
    // Concurrent checks, as limitador-server makes them (the totals here need no exactness).
    let server = RlsServer::start(RlsOptions {
        redis_url: redis.url(),
        limits: load_limits(&limits_file(&config)).unwrap(),
        style: AnswerStyle::Limitador,
        serialize: false,
    })
    .unwrap();
    let mut deployment = deploy(&config, Some(server.addr()), 4);
    let lines: Vec<String> = (0..200).map(|i| request(&format!("r{i}"), "ml")).collect();
    let items = replay::parse_requests(&lines.join("\n")).unwrap();

    // Four workers replay at once; Redis is killed once the service has answered 40 calls.
    let results = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while server.calls() < 40 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            redis.stop();
        });
        let results = replay::run_parallel(&mut deployment, &items).unwrap();
        killer.join().unwrap();
        results
    });
    let allowed = results
        .iter()
        .filter(|r| r.decision == Decision::Allow)
        .count();
    let failed: Vec<&ReplayResult> = results.iter().filter(|r| r.status == Some(500)).collect();
    assert_eq!(
        allowed + failed.len(),
        results.len(),
        "allowed or 500, nothing else"
    );
    // Calls are counted as they arrive: up to one per worker was in flight at the kill.
    assert!(
        allowed >= 40 - 4,
        "{allowed} allowed before Redis went away"
    );
    assert!(!failed.is_empty(), "Redis was killed before the run ended");
    for result in &failed {
        let line = rate_limit_line(result);
        assert_eq!(line["result"], "error", "{}", result.id);
        // UNAVAILABLE from the service, or no answer in time while its Redis client reconnects.
        let error = line["error"].as_str().unwrap_or_default();
        assert!(
            ["unavailable", "timeout", "grpc_status"].contains(&error),
            "{}: {line}",
            result.id
        );
        assert_eq!(line["failureMode"], "deny");
    }
    assert_eq!(
        metric(&deployment, "egress_filter.rls.failure_mode_denied"),
        failed.len() as u64
    );
    for worker in deployment.workers() {
        assert!(worker.failure().is_none(), "{:?}", worker.failure());
        assert_eq!(worker.callouts_in_flight(), 0);
    }
}
