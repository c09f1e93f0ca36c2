//! Time for the node agent to inspect 200 pod network namespaces on one node.
//!
//! Run as root: `cargo bench -p egress-auditor --bench node_agent` (needs iproute2, iptables and
//! nftables). Creates 200 named namespaces holding the sidecar rules of
//! `tests/data/netfilter/` (a third each with iptables-legacy, iptables-nft and native nftables;
//! every tenth tampered), then times one agent pass over them at several parallelisms, the
//! `egress-auditor node` binary end to end, and the judge alone on the same rules (no process
//! spawning), and prints a Markdown table. Namespaces are deleted at the end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use egress_auditor::netfilter::judge::{families_in, judge, JudgeContext, Subject};
use egress_auditor::netfilter::{dump, Ruleset};
use egress_auditor::node::inspect::Toolset;
use egress_auditor::node::pods::PodIndex;
use egress_auditor::node::{run_node, NamespaceStatus, NodeOptions};
use egress_auditor::sources::files;

const NAMESPACES: usize = 200;
const RUNS: usize = 3;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/netfilter")
        .join(name)
}

fn sh(args: &[&str], stdin: Option<&Path>) {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    if let Some(f) = stdin {
        cmd.stdin(std::fs::File::open(f).expect("open"));
    }
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let euid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if euid.ok() != Some(0) {
        eprintln!("skipping node_agent bench: needs root");
        return;
    }
    let tools = Toolset::detect();
    for needed in [
        "ip",
        "nft",
        "iptables-legacy-restore",
        "iptables-nft-restore",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {needed}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            eprintln!("skipping node_agent bench: {needed} missing");
            return;
        }
    }

    let tag = std::process::id();
    let mut names = Namespaces(Vec::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let pod_template = std::fs::read_to_string(data("pod-sidecar.yaml")).expect("pod");
    let mut pods = String::new();
    let setup = Instant::now();
    for i in 0..NAMESPACES {
        let name = format!("eg-bench-{tag}-{i}");
        sh(&["ip", "netns", "add", &name], None);
        names.0.push(name.clone());
        let exec = |args: &[&str], stdin: Option<&Path>| {
            let mut full = vec!["ip", "netns", "exec", &name];
            full.extend_from_slice(args);
            sh(&full, stdin);
        };
        let tampered = i % 10 == 0;
        match i % 3 {
            0 | 1 => {
                let v = if i % 3 == 0 { "legacy" } else { "nft" };
                exec(
                    &[&format!("iptables-{v}-restore")],
                    Some(&data("sidecar.iptables")),
                );
                exec(
                    &[&format!("ip6tables-{v}-restore")],
                    Some(&data("sidecar.ip6tables")),
                );
                if tampered {
                    exec(
                        &[
                            &format!("iptables-{v}"),
                            "-t",
                            "nat",
                            "-I",
                            "ISTIO_OUTPUT",
                            "1",
                            "-j",
                            "RETURN",
                        ],
                        None,
                    );
                }
            }
            _ => {
                exec(&["nft", "-f", data("sidecar.nft").to_str().unwrap()], None);
                if tampered {
                    exec(
                        &[
                            "nft",
                            "insert",
                            "rule",
                            "inet",
                            "istio-proxy-nat",
                            "istio-output",
                            "return",
                        ],
                        None,
                    );
                }
            }
        }
        std::os::unix::fs::symlink(Path::new("/run/netns").join(&name), dir.path().join(&name))
            .expect("symlink");
        pods.push_str("---\n");
        pods.push_str(
            &pod_template
                .replace("7d1c2a4e-5b6f-4a8e-9c0d-1e2f3a4b5c6d", &name)
                .replace("name: web\n", &format!("name: web-{i}\n")),
        );
    }
    let setup = setup.elapsed();
    let pods_file = dir.path().join("../pods-bench.yaml");
    std::fs::write(&pods_file, &pods).expect("write pods");
    let index = PodIndex::new(
        files::load_str("pods.yaml", &pods)
            .expect("pods parse")
            .snapshot
            .workloads,
    );
    // One finding per tampered iptables namespace (IPv4 only), two per tampered nftables one
    // (its inet table serves both families).
    let tampered: usize = (0..NAMESPACES)
        .filter(|i| i % 10 == 0)
        .map(|i| if i % 3 == 2 { 2 } else { 1 })
        .sum();

    println!(
        "setup: {NAMESPACES} namespaces with rules in {:.1} s",
        setup.as_secs_f64()
    );
    println!(
        "tools per namespace: {}",
        tools
            .commands
            .iter()
            .map(|(c, _)| c.label.clone())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!("| what | jobs | median of {RUNS} | per namespace | findings |");
    println!("|---|---|---|---|---|");
    for jobs in [1, 2, 4, 8] {
        let mut times = Vec::new();
        let mut findings = 0;
        for _ in 0..RUNS {
            let opts = NodeOptions {
                proc_root: None,
                netns_dirs: vec![dir.path().to_path_buf()],
                jobs,
                tools: tools.clone(),
                ambient: egress_auditor::capture::AmbientSettings::default(),
            };
            let start = Instant::now();
            let report = run_node(&opts, &index);
            times.push(start.elapsed());
            let judged = report
                .namespaces
                .iter()
                .filter(|n| matches!(n.status, NamespaceStatus::Judged { .. }))
                .count();
            assert_eq!(judged, NAMESPACES, "every namespace judged");
            findings = report.findings.len();
            assert_eq!(findings, tampered, "findings of the tampered namespaces");
        }
        let m = median(times);
        println!(
            "| agent pass (library) | {jobs} | {:.2} s | {:.1} ms | {findings} |",
            m.as_secs_f64(),
            m.as_secs_f64() * 1000.0 / NAMESPACES as f64
        );
    }

    // The binary, end to end (pod file parsing, discovery, inspection, judging, JSON report).
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_egress-auditor"))
            .args(["node", "--no-proc", "--jobs", "4", "--netns-dir"])
            .arg(dir.path())
            .arg("--pods")
            .arg(&pods_file)
            .output()
            .expect("run egress-auditor");
        times.push(start.elapsed());
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let m = median(times);
    println!(
        "| `egress-auditor node --jobs 4` | 4 | {:.2} s | {:.1} ms | {tampered} |",
        m.as_secs_f64(),
        m.as_secs_f64() * 1000.0 / NAMESPACES as f64
    );

    // The judge alone: parse and judge the same rule text 200 times, no namespaces, no processes.
    let sources = [
        std::fs::read_to_string(data("real/legacy-clean.v4.save")).unwrap()
            + &std::fs::read_to_string(data("real/legacy-clean.v6.save")).unwrap(),
        std::fs::read_to_string(data("real/native-clean.json")).unwrap(),
        std::fs::read_to_string(data("real/native-clean.nft")).unwrap(),
    ];
    let pod = &index.pods()[0];
    let cfg = egress_auditor::capture::CaptureConfig::from_pod(&pod.spec, &pod.meta)
        .expect("settings")
        .expect("injected");
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut n = 0;
        for i in 0..NAMESPACES {
            let (_, rs): (_, Ruleset) = dump::parse(&sources[i % 3], "bench", None).expect("parse");
            let f = judge(
                &cfg,
                &rs,
                &families_in(&rs),
                Subject {
                    namespace: "shop",
                    name: "web",
                },
                &JudgeContext::default(),
            );
            n += f.len();
        }
        assert_eq!(n, 0);
        times.push(start.elapsed());
    }
    let m = median(times);
    println!(
        "| judge only (parse + probe, in memory) | 1 | {:.3} s | {:.2} ms | 0 |",
        m.as_secs_f64(),
        m.as_secs_f64() * 1000.0 / NAMESPACES as f64
    );
    let _ = std::fs::remove_file(&pods_file);
}
