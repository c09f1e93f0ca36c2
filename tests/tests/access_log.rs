//! Envoy access logs through `egress-sim` and the real `egress_filter.wasm`: the bundled log is
//! what its generator writes, its replay summary says what the example policy does to it, a
//! recommended allow-list admits all of it and nothing else, the HTML report is self-contained
//! and escapes what the traffic carries, and a long log is streamed in bounded memory.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::egress_filter;
use egress_sim::accesslog::{LogClock, LogOptions, LogReader};
use egress_sim::insights::recommend::{GroupBy, Observed};
use egress_sim::insights::RequestFacts;
use egress_sim::replay::{Decision, ReplayResult};

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_egress-sim"))
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("access_log")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = sim()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = stdin.unwrap_or("").to_string();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn replay_log(config: &Path, log: &str, extra: &[&str]) -> Output {
    let wasm = egress_filter();
    let mut args = vec![
        "replay",
        "--wasm",
        wasm.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--envoy-access-log",
        log,
        "--principal-field",
        "downstream_peer_uri_san",
        "--workers",
        "2",
    ];
    args.extend_from_slice(extra);
    run(&args, None)
}

#[test]
fn the_bundled_log_is_what_the_generator_writes() {
    let mut generated = Vec::new();
    egress_sim::synthetic::generate(
        egress_sim::synthetic::EXAMPLE_SEED,
        egress_sim::synthetic::EXAMPLE_LINES,
        &mut generated,
    )
    .unwrap();
    let bundled = std::fs::read(example("access-log.json")).unwrap();
    assert!(
        generated == bundled,
        "examples/access-log.json differs from the generator's output: regenerate it with \
         `egress-sim generate-access-log > examples/access-log.json`"
    );
}

#[test]
fn the_example_summary_says_what_would_break_and_why() {
    let log = example("access-log.json");
    let output = replay_log(
        &example("egress-policy.json"),
        log.to_str().unwrap(),
        &["--summary"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let table = text(&output.stdout);
    let row = |ns: &str, host: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.len() > 2 && cells[0] == ns && cells[1] == host
            })
            .unwrap_or_else(|| panic!("no row {ns} {host} in\n{table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    // Exfiltration sites are denied by their DENY policy, by HTTP host and by TLS server name.
    let paste = row("shop", "pastebin.com");
    assert_eq!(paste[3], "0", "{paste:?}");
    assert!(
        paste.iter().any(|c| c == "block-exfiltration-sites[0]"),
        "{paste:?}"
    );
    let transfer = row("shop", "transfer.sh");
    assert!(
        transfer.iter().any(|c| c == "block-exfiltration-sites[1]"),
        "{transfer:?}"
    );
    // CI reaches GitHub over HTTP (rule 0) and TLS passthrough (rule 1).
    let github = row("ci", "github.com");
    assert_eq!(github[2], github[3], "all allowed: {github:?}");
    assert!(
        github.iter().any(|c| c == "allow-ci-github[1]"),
        "{github:?}"
    );
    // The data team has no policy yet: all of it would break.
    let s3 = row("data", "acme-events.s3.eu-west-1.amazonaws.com");
    assert_eq!((s3[3].as_str(), s3[2] == s3[4]), ("0", true), "{s3:?}");
    // Bursts of Stripe writes meet the limit.
    let stripe = row("payments", "api.stripe.com");
    assert_ne!(stripe[5], "0", "rate-limited: {stripe:?}");
    // The pod without a sidecar identity.
    let legacy = table
        .lines()
        .find(|l| l.starts_with("(no identity)") && l.contains("packages.acme.example"))
        .unwrap();
    assert!(legacy.contains("require-mesh-identity[0]"), "{legacy}");

    // Lines that are not access log lines are counted and the first named, and the run goes on.
    let err = text(&output.stderr);
    assert!(
        err.contains("access-log.json:410: skipped: one of Envoy's own log messages (warning)"),
        "{err}"
    );
    assert!(
        err.contains("access-log.json: 13 of 2400 lines could not be used"),
        "{err}"
    );
    assert_eq!(err.matches(": skipped: ").count(), 5, "{err}");
    assert!(table.contains("2387 requests:"), "{table}");
}

#[test]
fn the_recommended_allow_list_admits_the_whole_log_and_nothing_else() {
    let dir = scratch("recommend");
    let log = example("access-log.json");
    let output = run(
        &[
            "recommend",
            "--envoy-access-log",
            log.to_str().unwrap(),
            "--principal-field",
            "downstream_peer_uri_san",
            "--output",
            "plugin-config",
        ],
        None,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let err = text(&output.stderr);
    assert!(
        err.contains("admits all 2387 requests of the"),
        "the claim is stated: {err}"
    );
    let config = dir.join("recommended.json");
    std::fs::write(&config, &output.stdout).unwrap();
    let recommended: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let data_hosts = recommended["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "data-observed")
        .unwrap()["rules"]
        .to_string();
    assert!(data_hosts.contains("\"*.datadoghq.eu\""), "{data_hosts}");
    assert!(
        !data_hosts.contains("*.s3.eu-west-1.amazonaws.com"),
        "s3.eu-west-1.amazonaws.com is a public suffix: {data_hosts}"
    );

    // Every usable line of the log is allowed by the real filter with that configuration.
    let output = replay_log(&config, log.to_str().unwrap(), &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let results: Vec<ReplayResult> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 2387);
    let refused: Vec<&ReplayResult> = results
        .iter()
        .filter(|r| r.decision != Decision::Allow)
        .collect();
    assert!(
        refused.is_empty(),
        "{} refused, first {:?}",
        refused.len(),
        refused.first()
    );

    // A host the log never shows, and a host one namespace used asked for by another, are not.
    let outside = concat!(
        r#"{"start_time":"2026-03-02T10:00:00.000Z","method":"GET","authority":"evil.example","path":"/","protocol":"HTTP/1.1","downstream_local_address":"10.20.0.5:80","downstream_remote_address":"10.1.4.20:40000","downstream_peer_uri_san":"spiffe://cluster.local/ns/ci/sa/github-runner"}"#,
        "\n",
        r#"{"start_time":"2026-03-02T10:00:01.000Z","method":"POST","authority":"api.stripe.com","path":"/v1/refunds","protocol":"HTTP/1.1","downstream_local_address":"10.20.0.5:80","downstream_remote_address":"10.1.4.20:40002","downstream_peer_uri_san":"spiffe://cluster.local/ns/ci/sa/github-runner"}"#,
        "\n",
        r#"{"start_time":"2026-03-02T10:00:02.000Z","method":null,"requested_server_name":"pastebin.com","downstream_local_address":"10.20.0.5:443","downstream_remote_address":"10.1.9.11:40004","downstream_peer_uri_san":"spiffe://cluster.local/ns/shop/sa/frontend"}"#,
        "\n",
    );
    let outside_log = dir.join("outside.json");
    std::fs::write(&outside_log, outside).unwrap();
    let output = replay_log(&config, outside_log.to_str().unwrap(), &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let results: Vec<ReplayResult> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 3);
    for r in &results {
        assert_eq!(r.decision, Decision::Deny, "{r:?}");
    }
}

#[test]
fn min_requests_leaves_rare_pairs_out_and_says_which() {
    let log = example("access-log.json");
    let output = run(
        &[
            "recommend",
            "--envoy-access-log",
            log.to_str().unwrap(),
            "--principal-field",
            "downstream_peer_uri_san",
            "--min-requests",
            "20",
        ],
        None,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let err = text(&output.stderr);
    assert!(
        err.contains("left out: namespace shop -> pastebin.com (15 requests)"),
        "{err}"
    );
    assert!(
        err.contains("pairs seen too rarely (--min-requests)"),
        "{err}"
    );
    let yaml = text(&output.stdout);
    assert!(yaml.starts_with("# recommended from"), "{yaml}");
    assert!(!yaml.contains("pastebin.com"), "{yaml}");
    assert!(yaml.contains("kind: EgressPolicy\n"), "{yaml}");
    assert!(yaml.contains("  namespace: payments\n"), "{yaml}");
}

#[test]
fn the_html_report_is_self_contained_and_escapes_the_traffic() {
    let dir = scratch("html");
    let hostile = concat!(
        r#"{"start_time":"2026-03-02T10:00:00.000Z","method":"GET","authority":"<script>alert(1)</script>.example","path":"/","downstream_local_address":"10.20.0.5:80","downstream_remote_address":"10.1.4.20:40000","downstream_peer_uri_san":"spiffe://cluster.local/ns/ci/sa/github-runner"}"#,
        "\n",
        "<img src=x onerror=alert(2)>\n",
    );
    let log = dir.join("hostile.json");
    std::fs::write(&log, hostile).unwrap();
    let output = replay_log(
        &example("egress-policy.json"),
        log.to_str().unwrap(),
        &["--format", "html"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let html = text(&output.stdout);
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;.example"),
        "{html}"
    );
    for attribute in [
        "src=\"http",
        "src='http",
        "href=\"http",
        "href='http",
        "url(http",
        "@import",
    ] {
        assert!(!html.contains(attribute), "fetches something: {attribute}");
    }
    assert!(html.contains("default-src 'none'"), "a CSP forbids fetches");
    assert!(html.contains("<svg"), "the chart is inline SVG");
}

#[test]
fn text_logs_with_the_principal_operator() {
    let format = format!(
        "{} %DOWNSTREAM_PEER_URI_SAN%",
        egress_sim::accesslog::text::ISTIO_TEXT_FORMAT
    );
    let lines = concat!(
        "[2026-03-02T09:00:00.000Z] \"GET /acme-corp/api.git/info/refs HTTP/1.1\" 200 - via_upstream - \"-\" ",
        "0 512 20 18 \"-\" \"git/2.43.0\" \"r-1\" \"github.com\" \"140.82.121.4:443\" outbound|443||github.com ",
        "10.20.0.5:41000 10.20.0.5:80 10.1.4.20:40000 outbound_.80_._.istio-egressgateway.istio-system.svc.cluster.local - ",
        "spiffe://cluster.local/ns/ci/sa/github-runner\n",
        "[2026-03-02T09:00:01.000Z] \"- - -\" 0 - - - \"-\" 517 4000 900 - \"-\" \"-\" \"-\" \"-\" \"140.82.121.4:443\" ",
        "outbound|443||github.com 10.20.0.5:41002 10.20.0.5:443 10.1.4.20:40002 github.com - -\n",
        "2026-03-02T09:00:02.000000Z\twarning\tenvoy config\tStreamAggregatedResources gRPC config stream closed\n",
    );
    let wasm = egress_filter();
    let config = example("egress-policy.json");
    let output = run(
        &[
            "replay",
            "--wasm",
            wasm.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--envoy-access-log",
            "-",
            "--text-format",
            &format,
            "--principal-field",
            "%DOWNSTREAM_PEER_URI_SAN%",
        ],
        Some(lines),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let results: Vec<ReplayResult> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 2, "{}", text(&output.stdout));
    assert_eq!(
        (results[0].id.as_str(), results[0].decision),
        ("line-1", Decision::Allow)
    );
    // TLS passthrough without identity meets require-mesh-identity.
    assert_eq!(
        (results[1].id.as_str(), results[1].decision),
        ("line-2", Decision::Deny)
    );
    assert!(
        text(&output.stderr).contains("-:3: skipped: one of Envoy's own log messages (warning)"),
        "{}",
        text(&output.stderr)
    );

    // The operator named must be in the format.
    let output = run(
        &[
            "recommend",
            "--envoy-access-log",
            "-",
            "--access-log-encoding",
            "text",
            "--principal-field",
            "%DOWNSTREAM_PEER_URI_SAN%",
        ],
        Some(lines),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains(
            "--principal-field %DOWNSTREAM_PEER_URI_SAN%: the text format has no such operator"
        ),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn a_file_with_no_usable_line_is_an_error() {
    let output = run(
        &["recommend", "--envoy-access-log", "-"],
        Some("hello\nworld\n"),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("no line could be used"),
        "{}",
        text(&output.stderr)
    );
}

/// Peak resident memory of this process (nextest runs each test in its own process).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_long_log_is_streamed_in_bounded_memory() {
    // 120,000 lines (about 105 MB), written by the generator into a pipe as they are read:
    // the log never exists whole, and memory must not grow with it.
    const LINES: usize = 120_000;
    let (reader, mut writer) = std::io::pipe().unwrap();
    let producer = std::thread::spawn(move || {
        let mut buffered = std::io::BufWriter::new(&mut writer);
        egress_sim::synthetic::generate(1, LINES, &mut buffered).unwrap();
        buffered.flush().unwrap();
    });
    let before = peak_rss_kib();
    let options = LogOptions {
        principal_field: Some("downstream_peer_uri_san".into()),
        ..LogOptions::default()
    };
    let mut log = LogReader::new(std::io::BufReader::new(reader), options).unwrap();
    let mut clock = LogClock::default();
    let mut observed = Observed::new(GroupBy::Principal);
    let mut requests = 0u64;
    while let Some((line, entry)) = log.next_entry().unwrap() {
        if let Ok(item) = entry.and_then(|e| e.into_item(line, &mut clock)) {
            requests += 1;
            observed.add(&RequestFacts::of(&item)).unwrap();
        }
    }
    producer.join().unwrap();
    assert_eq!(log.lines(), LINES);
    assert!(requests > 119_000, "{requests} of {LINES} lines used");
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "peak memory grew by {grown} KiB while streaming ~105 MB of log"
    );
}
