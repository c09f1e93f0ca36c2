//! Helpers for tests that create real network namespaces: skip checks, a namespace guard that
//! deletes the namespace when dropped, command runners, and the agent's inspection of one
//! namespace for the pod in `tests/data/netfilter/pod-sidecar.yaml` (or `pod-ambient.yaml`).

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use egress_auditor::finding::Finding;
use egress_auditor::node::discover::{netns_inode, Netns, NetnsOrigin};
use egress_auditor::node::inspect::Toolset;
use egress_auditor::node::{judge_namespace, NamespaceReport};
use egress_auditor::snapshot::Workload;
use egress_auditor::sources::files;

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/netfilter")
        .join(name)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Why the test cannot run here (not root, or a tool missing), or `None`.
pub fn skip_reason(tools: &[&str]) -> Option<String> {
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if euid != 0 {
        return Some("needs root (creates network namespaces)".into());
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing {} (apt-get install iptables nftables iproute2)",
            missing.join(", ")
        ));
    }
    None
}

/// Prints the reason and returns true when the test must be skipped.
pub fn skip(test: &str, tools: &[&str]) -> bool {
    match skip_reason(tools) {
        Some(r) => {
            eprintln!("skipping {test}: {r}");
            true
        }
        None => false,
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace, deleted on drop.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(tag: &str) -> TestNetns {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "eg-test-{tag}-{}-{}-{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos & 0xffff
        );
        run(&["ip", "netns", "add", &name]);
        let ns = TestNetns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs a command inside the namespace; panics on failure.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs a command inside the namespace with `file` as standard input.
    pub fn exec_stdin(&self, args: &[&str], file: &Path) -> String {
        let input = std::fs::File::open(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(input)
            .output()
            .expect("spawn");
        assert!(
            out.status.success(),
            "{args:?} < {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The namespace as the node agent discovers it in a netns directory.
    pub fn as_netns(&self) -> Netns {
        Netns {
            path: self.path(),
            inode: netns_inode(&self.path()).expect("netns inode"),
            origin: NetnsOrigin::Named {
                name: self.name.clone(),
            },
        }
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command; panics with its stderr on failure.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pod the in-repo rule files implement.
pub fn pod() -> Workload {
    let loaded = files::load_paths(&[data("pod-sidecar.yaml")]).expect("pod-sidecar.yaml loads");
    loaded
        .snapshot
        .workloads
        .into_iter()
        .next()
        .expect("one pod")
}

/// The ambient pod the in-repo `ambient.*` rule files are for.
pub fn ambient_pod() -> Workload {
    let loaded = files::load_paths(&[data("pod-ambient.yaml")]).expect("pod-ambient.yaml loads");
    loaded
        .snapshot
        .workloads
        .into_iter()
        .next()
        .expect("one pod")
}

/// The node agent's inspection of one namespace, judged against the pod.
pub fn inspect(ns: &TestNetns) -> (NamespaceReport, Vec<Finding>) {
    inspect_pod(ns, &pod())
}

/// The node agent's inspection of one namespace, judged against `pod`.
pub fn inspect_pod(ns: &TestNetns, pod: &Workload) -> (NamespaceReport, Vec<Finding>) {
    judge_namespace(
        &ns.as_netns(),
        pod,
        &Toolset::detect(),
        &egress_auditor::capture::AmbientSettings::default(),
    )
}

/// The iptables backends present, as (iptables program prefix, backend name in evidence).
pub fn iptables_backends() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if on_path("iptables-legacy-restore") && on_path("ip6tables-legacy-restore") {
        out.push(("legacy", "iptables-legacy"));
    }
    if on_path("iptables-nft-restore") && on_path("ip6tables-nft-restore") {
        out.push(("nft", "iptables-nft"));
    }
    out
}

/// Loads the sidecar rules with one iptables backend (`legacy` or `nft`), both families.
pub fn load_iptables(ns: &TestNetns, variant: &str) {
    ns.exec_stdin(
        &[&format!("iptables-{variant}-restore")],
        &data("sidecar.iptables"),
    );
    ns.exec_stdin(
        &[&format!("ip6tables-{variant}-restore")],
        &data("sidecar.ip6tables"),
    );
}

pub fn load_nft(ns: &TestNetns) {
    ns.exec(&["nft", "-f", data("sidecar.nft").to_str().unwrap()]);
}

/// Loads the ambient in-pod rules with one iptables backend, both families.
pub fn load_ambient_iptables(ns: &TestNetns, variant: &str) {
    ns.exec_stdin(
        &[&format!("iptables-{variant}-restore")],
        &data("ambient.iptables"),
    );
    ns.exec_stdin(
        &[&format!("ip6tables-{variant}-restore")],
        &data("ambient.ip6tables"),
    );
}

pub fn load_ambient_nft(ns: &TestNetns) {
    ns.exec(&["nft", "-f", data("ambient.nft").to_str().unwrap()]);
}

/// `rule: message` lines, for assertion messages.
pub fn summary(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .map(|f| format!("{} [{}]: {}", f.rule, f.severity, f.message))
        .collect()
}
