//! The HTML reports as a person sees them: rendered by headless Chromium (Debian `chromium`;
//! skipped with the reason where it is not installed, required in CI), the screenshot shows a
//! page and not a blank one, and the text of what matters most is in the rendered DOM:
//! - `egress-auditor scan --format html` of examples/cluster: the worst findings, in that order,
//!   with how to fix them;
//! - `egress-sim replay --format html` of examples/access-log.json: the totals, the most denied
//!   destinations and the decisions-over-time chart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use common::{
    built_egress_auditor, built_egress_sim, built_filter_wasm, repo_root, require_tool, run, run_ok,
};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 1600;

struct Rendered {
    /// The DOM after loading, as text a person reads (tags dropped, entities decoded).
    text: String,
    /// The DOM's markup.
    dom: String,
    screenshot: Screenshot,
}

struct Screenshot {
    width: u32,
    height: u32,
    /// RGB triples, row by row.
    rgb: Vec<[u8; 3]>,
}

impl Screenshot {
    fn share(&self, pred: impl Fn([u8; 3]) -> bool) -> f64 {
        let n = self.rgb.iter().filter(|p| pred(**p)).count();
        n as f64 / self.rgb.len() as f64
    }

    /// Pixels near `color` (each channel within 24).
    fn share_near(&self, color: [u8; 3]) -> f64 {
        self.share(|p| p.iter().zip(color).all(|(a, b)| a.abs_diff(b) <= 24))
    }
}

fn chromium(profile: &Path, args: &[&str], page: &Path) -> std::process::Output {
    let binary = require_tool("chromium").expect("checked by the caller");
    run(Command::new(binary)
        .args([
            "--headless",
            // Root in a container: no user namespace sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .args(args)
        .arg(format!("file://{}", page.display())))
}

fn render(html: &str, name: &str) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join(format!("{name}.html"));
    std::fs::write(&page, html).unwrap();
    let profile = dir.path().join("profile");

    let dump = chromium(&profile, &["--dump-dom"], &page);
    assert!(dump.status.success(), "chromium --dump-dom: {dump:?}");
    let dom = String::from_utf8(dump.stdout).expect("the DOM is UTF-8");
    assert!(dom.contains("</html>"), "chromium printed no DOM: {dom}");

    let png: PathBuf = dir.path().join(format!("{name}.png"));
    let shot = chromium(
        &profile,
        &[&format!("--screenshot={}", png.display())],
        &page,
    );
    assert!(shot.status.success(), "chromium --screenshot: {shot:?}");
    let screenshot = decode_png(&png);
    assert_eq!((screenshot.width, screenshot.height), (WIDTH, HEIGHT));

    Rendered {
        text: visible_text(&dom),
        dom,
        screenshot,
    }
}

fn decode_png(path: &Path) -> Screenshot {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let rgb = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| match channels {
            1 | 2 => [p[0]; 3],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    Screenshot {
        width: info.width,
        height: info.height,
        rgb,
    }
}

/// The text of the body: `<style>` dropped, tags dropped, entities decoded, whitespace collapsed.
fn visible_text(dom: &str) -> String {
    let no_style = regex::Regex::new(r"(?s)<style.*?</style>|<title.*?</title>").unwrap();
    let tags = regex::Regex::new(r"(?s)<[^>]*>").unwrap();
    let body = no_style.replace_all(dom, " ");
    let text = tags.replace_all(&body, " ");
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Where `needle` is in `text`, or a failure that shows what was there.
fn position(text: &str, needle: &str) -> usize {
    let needle = needle.split_whitespace().collect::<Vec<_>>().join(" ");
    text.find(&needle)
        .unwrap_or_else(|| panic!("`{needle}` is not on the page:\n{text}"))
}

/// A page someone can read: mostly background, and a good part of it ink.
fn assert_not_blank(screenshot: &Screenshot) {
    let white = screenshot.share_near([255, 255, 255]);
    let ink = screenshot.share(|p| p.iter().all(|c| *c < 160));
    assert!(
        white < 0.97,
        "the screenshot is blank ({:.1}% white)",
        white * 100.0
    );
    assert!(
        ink > 0.005,
        "no text on the screenshot ({:.2}% dark pixels)",
        ink * 100.0
    );
}

fn severity_rank(severity: &str) -> u8 {
    match severity {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

#[test]
fn the_audit_report_shows_the_worst_findings_first_with_their_fix() {
    if require_tool("chromium").is_none() {
        return;
    }
    let cluster = repo_root().join("examples/cluster");
    let scan = |format: &str| {
        let output = run(Command::new(built_egress_auditor())
            .args(["scan", "--format", format, "--input"])
            .arg(&cluster));
        // 1: findings at or above --fail-on, which this snapshot has.
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "egress-auditor scan --format {format}: {output:?}"
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let report: Value = serde_json::from_str(&scan("json")).unwrap();
    let mut findings: Vec<&Value> = report["findings"].as_array().unwrap().iter().collect();
    assert!(findings.len() >= 3, "the example cluster has findings");
    findings.sort_by_key(|f| std::cmp::Reverse(severity_rank(f["severity"].as_str().unwrap())));
    let worst = findings[0]["severity"].as_str().unwrap();
    let least = findings.last().unwrap()["severity"].as_str().unwrap();
    assert_ne!(
        severity_rank(worst),
        severity_rank(least),
        "severities differ"
    );

    let page = render(&scan("html"), "audit");
    assert_not_blank(&page.screenshot);
    // Nothing to fetch: the page is one file.
    assert!(
        !page.dom.contains("src=\"http"),
        "the report fetches nothing"
    );

    let heading = position(&page.text, "Findings, worst first");
    let findings_text = &page.text[heading..];
    // The three worst and the mildest: shown in order of severity (any order among equals),
    // the worst with how to fix them.
    let mut shown: Vec<&Value> = findings.iter().take(3).copied().collect();
    shown.push(findings.last().unwrap());
    let placed: Vec<(u8, usize)> = shown
        .iter()
        .map(|f| {
            let rank = severity_rank(f["severity"].as_str().unwrap());
            (
                rank,
                position(findings_text, f["message"].as_str().unwrap()),
            )
        })
        .collect();
    for (i, (rank, at)) in placed.iter().enumerate() {
        for (milder_rank, milder_at) in &placed[i + 1..] {
            if milder_rank < rank {
                assert!(
                    milder_at > at,
                    "a milder finding comes before a worse one: {placed:?}"
                );
            }
        }
    }
    for finding in shown.iter().take(3) {
        let rule = finding["rule"].as_str().unwrap();
        let info = egress_auditor::rules::rule(rule).unwrap_or_else(|| panic!("rule {rule}"));
        position(findings_text, info.fix);
    }
    position(&page.text, "Risk by namespace");
}

#[test]
fn the_replay_report_shows_what_would_break_and_when() {
    if require_tool("chromium").is_none() {
        return;
    }
    let root = repo_root();
    let replay = |format: &str| {
        run_ok(
            Command::new(built_egress_sim())
                .current_dir(&root)
                .args(["replay", "--format", format, "--wasm"])
                .arg(built_filter_wasm())
                .args([
                    "--config",
                    "examples/egress-policy.json",
                    "--envoy-access-log",
                    "examples/access-log.json",
                    "--principal-field",
                    "downstream_peer_uri_san",
                ]),
        )
    };
    let summary: Value = serde_json::from_str(&replay("json")).unwrap();
    let mut groups: Vec<&Value> = summary["groups"].as_array().unwrap().iter().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g["deny"].as_u64().unwrap()));
    let top_denied: Vec<&str> = groups
        .iter()
        .take(3)
        .map(|g| g["host"].as_str().unwrap())
        .collect();
    assert!(
        groups[0]["deny"].as_u64().unwrap() > 0,
        "the example log has denies"
    );
    let denied: u64 = groups.iter().map(|g| g["deny"].as_u64().unwrap()).sum();

    let page = render(&replay("html"), "replay");
    assert_not_blank(&page.screenshot);
    assert!(
        !page.dom.contains("src=\"http"),
        "the report fetches nothing"
    );

    let breaks = position(&page.text, "What would break");
    for host in &top_denied {
        position(&page.text[breaks..], host);
    }
    position(&page.text, &format!("{denied} would be denied"));

    // The chart: an SVG with a bar per time bucket, drawn in the allow and deny colours.
    position(&page.text, "Decisions over time");
    let bars = page.dom.matches("<rect").count();
    assert!(bars >= 20, "{bars} bars in the chart");
    let green = page.screenshot.share_near([0x2e, 0x7d, 0x32]);
    let red = page.screenshot.share_near([0xc6, 0x28, 0x28]);
    assert!(
        green > 0.01 && red > 0.01,
        "chart colours on screen: green {green:.3}, red {red:.3}"
    );
}
