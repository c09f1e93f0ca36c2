//! `egress-sim` as a user runs it: exit codes, messages for bad input, decisions, summary.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{noop_filter, wat_file};
use egress_sim::replay::{Decision, ReplayResult};

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_egress-sim"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn replay(wasm: &Path, config: &Path, requests: &str, extra: &[&str]) -> Output {
    let mut child = sim()
        .args(["replay", "--wasm"])
        .arg(wasm)
        .arg("--config")
        .arg(config)
        .args(extra)
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
    child.wait_with_output().unwrap()
}

fn parse(output: &Output) -> Vec<ReplayResult> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_noop_filter_allows_http_and_tcp_from_stdin() {
    let dir = scratch("noop");
    let config = write(&dir, "config.json", "{}");
    let output = replay(
        &noop_filter(),
        &config,
        "{\"id\":\"h\",\"http\":{\"authority\":\"a\"}}\n\n{\"id\":\"t\",\"tcp\":{\"data_base64\":\"aGk=\"}}\n",
        &["--workers", "2"],
    );
    let results = parse(&output);
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!((r.decision, r.status), (Decision::Allow, None), "{}", r.id);
        assert!(r.logs.is_empty());
    }
}

#[test]
fn local_replies_and_closes_map_to_decisions() {
    let dir = scratch("ratelimit");
    let wasm = write(&dir, "ratelimit.wasm", wat_file("ratelimit.wat"));
    let config = write(&dir, "config.json", "{}");
    let output = replay(
        &wasm,
        &config,
        "{\"id\":\"h\",\"http\":{}}\n{\"id\":\"t\",\"tcp\":{}}\n",
        &[],
    );
    let results = parse(&output);
    assert_eq!(
        (results[0].decision, results[0].status),
        (Decision::Ratelimited, Some(429))
    );
    assert_eq!(
        (results[1].decision, results[1].status),
        (Decision::Ratelimited, None)
    );
    assert_eq!(results[1].logs[0].level, "info");

    let output = replay(
        &wasm,
        &config,
        "{\"id\":\"h\",\"http\":{}}\n{\"id\":\"t\",\"tcp\":{}}\n",
        &["--summary"],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let tcp_row = text.lines().find(|l| l.starts_with("t ")).unwrap();
    assert!(
        tcp_row.contains("ratelimited")
            && tcp_row.contains("burst")
            && tcp_row.contains("rate_limited"),
        "{text}"
    );
}

#[test]
fn deny_and_reset_from_the_recorder() {
    let dir = scratch("recorder");
    let wasm = write(&dir, "recorder.wasm", wat_file("recorder.wat"));
    let deny = write(&dir, "deny.json", "\"d\"");
    let output = replay(
        &wasm,
        &deny,
        "{\"id\":\"h\",\"http\":{}}\n{\"id\":\"t\",\"tcp\":{}}\n",
        &[],
    );
    let results = parse(&output);
    assert_eq!(
        (results[0].decision, results[0].status),
        (Decision::Deny, Some(403))
    );
    assert_eq!(
        results[0].headers.get("x-deny").map(String::as_str),
        Some("yes")
    );
    assert_eq!(results[0].details.as_deref(), Some("denied_by_test"));
    assert_eq!(
        (results[1].decision, results[1].status),
        (Decision::Deny, None)
    );

    // A configuration that is JSON but starts with 'c' (the recorder reads the first byte).
    let reset = write(&dir, "reset.json", "\"c\"");
    let output = replay(&wasm, &reset, "{\"id\":\"h\",\"http\":{}}\n", &[]);
    let results = parse(&output);
    assert_eq!(
        (results[0].decision, results[0].status),
        (Decision::Deny, None)
    );
    assert_eq!(results[0].details.as_deref(), Some("wasm_close_stream"));
}

#[test]
fn check_config_runs_the_canary() {
    let dir = scratch("check");
    let wasm = write(&dir, "recorder.wasm", wat_file("recorder.wat"));
    let rejected = write(&dir, "reject.json", "\"r\"");
    let output = sim()
        .args(["check-config", "--wasm"])
        .arg(&wasm)
        .arg("--config")
        .arg(&rejected)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "configuration rejected: mode r asks for it\n"
    );
    let accepted = write(&dir, "accept.json", "\"a\"");
    let output = sim()
        .args(["check-config", "--wasm"])
        .arg(&wasm)
        .arg("--config")
        .arg(&accepted)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ok\n");
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let dir = scratch("usage");
    let config = write(&dir, "config.json", "{}");

    let missing = dir.join("target/wasm32-wasip1/release/egress_filter.wasm");
    let output = replay(&missing, &config, "", &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(
            "egress_filter.wasm not found: build it with `cargo build --release --target wasm32-wasip1 -p egress-filter`"
        ),
        "{}",
        stderr(&output)
    );
    let output = sim()
        .args(["check-config", "--wasm"])
        .arg(&missing)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));

    // A bad line stops the replay before anything runs.
    let output = replay(
        &noop_filter(),
        &config,
        "{\"id\":\"ok\",\"http\":{}}\n{\"id\":\"bad\",\"http\":{\"methd\":\"GET\"}}\n",
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("line 2"), "{}", stderr(&output));
    assert!(stderr(&output).contains("methd"), "{}", stderr(&output));
    assert!(output.stdout.is_empty());

    let not_json = write(&dir, "config.yaml", "policies: []\n");
    let output = replay(&noop_filter(), &not_json, "", &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("config.yaml: not valid JSON"),
        "{}",
        stderr(&output)
    );

    let output = replay(&noop_filter(), &config, "", &["--workers", "0"]);
    assert_eq!(output.status.code(), Some(2));

    let output = replay(
        &noop_filter(),
        &config,
        "",
        &["--requests", "/nonexistent/requests.jsonl"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("/nonexistent/requests.jsonl"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_clock_follows_at_ms() {
    // The ticker module ticks every second: a request at 2.5 s has seen ticks on the worker.
    let dir = scratch("clock");
    let wasm = write(&dir, "ticker.wasm", wat_file("ticker.wat"));
    let config = write(&dir, "config.json", "{}");
    let output = replay(
        &wasm,
        &config,
        "{\"id\":\"a\",\"at_ms\":0,\"http\":{}}\n{\"id\":\"b\",\"at_ms\":2500,\"http\":{}}\n",
        &["--verbose"],
    );
    assert_eq!(parse(&output).len(), 2);
    let output = replay(
        &wasm,
        &config,
        "{\"id\":\"a\",\"at_ms\":10,\"http\":{}}\n{\"id\":\"b\",\"at_ms\":5,\"http\":{}}\n",
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("line 2: at_ms 5 is earlier than at_ms 10 on line 1"),
        "{}",
        stderr(&output)
    );
}
