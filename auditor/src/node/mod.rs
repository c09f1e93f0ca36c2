//! Node agent: finds the network namespace of every pod on this node, reads the iptables and
//! nftables rules inside it and judges them against the pod's capture settings
//! ([`crate::netfilter::judge`]). Runs as a privileged DaemonSet with `hostPID`.
//!
//! [`discover`] finds namespaces, [`netns`] enters them, [`inspect`] reads and merges the rules,
//! [`pods`] supplies the pods (a file, or the API server); the CLI is `cli::node`.

pub mod discover;
pub mod inspect;
pub mod netns;
pub mod pods;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::json;

use crate::capture::CaptureConfig;
use crate::finding::Finding;
use crate::netfilter::judge::{has_istio_chains, judge, JudgeContext, Subject};
use crate::netfilter::IpFamily;
use crate::snapshot::Workload;
use discover::Netns;
use inspect::{Inspection, ToolReport, Toolset};
use pods::PodIndex;

/// Where to look for namespaces and how to read them.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// `/proc` (with `hostPID`, the node's processes); `None` skips the process scan.
    pub proc_root: Option<PathBuf>,
    /// Directories of named namespaces (`/var/run/netns`).
    pub netns_dirs: Vec<PathBuf>,
    /// Namespaces inspected at once.
    pub jobs: usize,
    pub tools: Toolset,
}

/// What happened to one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum NamespaceStatus {
    /// Rules read and judged.
    Judged { findings: usize },
    /// No pod on this node owns it.
    NoPod,
    /// The pod has no Istio sidecar.
    NotInjected,
    /// The pod's settings capture no outbound traffic (interception NONE, gateway, dry run).
    NoCapture,
    /// The pod's capture settings could not be read (the pod checks report this).
    SettingsUnreadable { error: String },
    /// The namespace could not be entered or no tool could read it.
    Failed { error: String },
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceReport {
    pub netns: String,
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(flatten)]
    pub status: NamespaceStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<IpFamily>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolReport>,
}

/// The result of one pass over the node.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    #[serde(skip)]
    pub findings: Vec<Finding>,
    pub namespaces: Vec<NamespaceReport>,
    /// Problems that stopped part of the discovery (an unreadable netns directory).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub discovery_errors: Vec<String>,
}

impl NodeReport {
    /// Counts per status, for the report summary.
    pub fn counts(&self) -> serde_json::Value {
        let mut judged = 0;
        let mut no_pod = 0;
        let mut not_injected = 0;
        let mut no_capture = 0;
        let mut unreadable = 0;
        let mut failed = 0;
        for n in &self.namespaces {
            match n.status {
                NamespaceStatus::Judged { .. } => judged += 1,
                NamespaceStatus::NoPod => no_pod += 1,
                NamespaceStatus::NotInjected => not_injected += 1,
                NamespaceStatus::NoCapture => no_capture += 1,
                NamespaceStatus::SettingsUnreadable { .. } => unreadable += 1,
                NamespaceStatus::Failed { .. } => failed += 1,
            }
        }
        json!({
            "namespaces": self.namespaces.len(),
            "judged": judged,
            "withoutPod": no_pod,
            "notInjected": not_injected,
            "noOutboundCapture": no_capture,
            "settingsUnreadable": unreadable,
            "failed": failed,
        })
    }
}

/// Finds the namespaces to inspect: pod processes under `proc_root`, then named namespaces (a
/// named namespace that is also a pod's is listed once).
pub fn discover_namespaces(opts: &NodeOptions) -> (Vec<Netns>, Vec<String>) {
    let mut found: Vec<Netns> = Vec::new();
    let mut errors = Vec::new();
    if let Some(root) = &opts.proc_root {
        match discover::scan_proc(root) {
            Ok(v) => found.extend(v),
            Err(e) => errors.push(format!("{}: {e}", root.display())),
        }
    }
    for dir in &opts.netns_dirs {
        match discover::scan_named(dir) {
            Ok(v) => {
                for n in v {
                    if !found.iter().any(|f| f.inode == n.inode) {
                        found.push(n);
                    }
                }
            }
            Err(e) => errors.push(format!("{}: {e}", dir.display())),
        }
    }
    (found, errors)
}

/// Judges one namespace that belongs to `pod`.
pub fn judge_namespace(
    ns: &Netns,
    pod: &Workload,
    tools: &Toolset,
) -> (NamespaceReport, Vec<Finding>) {
    let mut report = NamespaceReport {
        netns: ns.label(),
        path: ns.path.clone(),
        pod: Some(format!("{}/{}", pod.namespace, pod.name)),
        status: NamespaceStatus::NoPod,
        families: Vec::new(),
        tools: Vec::new(),
    };
    let cfg = match CaptureConfig::from_pod(&pod.spec, &pod.meta) {
        Ok(Some(c)) => c,
        Ok(None) => {
            report.status = NamespaceStatus::NotInjected;
            return (report, Vec::new());
        }
        Err(e) => {
            report.status = NamespaceStatus::SettingsUnreadable {
                error: e.to_string(),
            };
            return (report, Vec::new());
        }
    };
    if !cfg.captures_outbound() {
        report.status = NamespaceStatus::NoCapture;
        return (report, Vec::new());
    }
    let inspection = match inspect::inspect(&ns.path, tools) {
        Ok(i) => i,
        Err(e) => {
            report.status = NamespaceStatus::Failed {
                error: e.to_string(),
            };
            return (report, Vec::new());
        }
    };
    report.tools = inspection.tools.clone();
    if !inspection.any_tool_ok() {
        report.status = NamespaceStatus::Failed {
            error: format!(
                "no tool could read the rules: {}",
                inspection.errors().join("; ")
            ),
        };
        return (report, Vec::new());
    }
    let families = families_for(&inspection, &pod_addrs(pod));
    let findings = judge_inspection(&cfg, &inspection, &families, ns, pod);
    report.families = families;
    report.status = NamespaceStatus::Judged {
        findings: findings.len(),
    };
    (report, findings)
}

/// IPv4 always; IPv6 when the pod has an IPv6 address (in its status or in the namespace) or
/// IPv6 Istio rules. A pod without IPv6 cannot send IPv6 anywhere, so missing IPv6 rules are
/// then no bypass.
pub fn families_for(inspection: &Inspection, pod_addrs: &[IpAddr]) -> Vec<IpFamily> {
    let mut f = vec![IpFamily::V4];
    if inspection.ipv6
        || pod_addrs.iter().any(IpAddr::is_ipv6)
        || has_istio_chains(&inspection.ruleset, IpFamily::V6)
    {
        f.push(IpFamily::V6);
    }
    f
}

/// The pod's addresses from its status.
fn pod_addrs(pod: &Workload) -> Vec<IpAddr> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().filter_map(|ip| ip.ip.parse().ok()).collect())
        .unwrap_or_default()
}

fn judge_inspection(
    cfg: &CaptureConfig,
    inspection: &Inspection,
    families: &[IpFamily],
    ns: &Netns,
    pod: &Workload,
) -> Vec<Finding> {
    let mut ctx = JudgeContext {
        pod_addrs: pod_addrs(pod),
        ..JudgeContext::default()
    };
    ctx.evidence.insert("netns".into(), json!(ns.label()));
    ctx.evidence.insert(
        "tools".into(),
        json!(inspection
            .tools
            .iter()
            .filter(|t| t.ok)
            .map(|t| t.tool.clone())
            .collect::<Vec<_>>()),
    );
    judge(
        cfg,
        &inspection.ruleset,
        families,
        Subject {
            namespace: &pod.namespace,
            name: &pod.name,
        },
        &ctx,
    )
}

/// One namespace's report and findings.
type Judged = (NamespaceReport, Vec<Finding>);

/// Inspects every namespace, `opts.jobs` at a time, and judges those that belong to a pod.
pub fn run_node(opts: &NodeOptions, pods: &PodIndex) -> NodeReport {
    let (namespaces, discovery_errors) = discover_namespaces(opts);
    let results: Mutex<Vec<Option<Judged>>> = Mutex::new(vec![None; namespaces.len()]);
    let next = AtomicUsize::new(0);
    let workers = opts.jobs.clamp(1, 64).min(namespaces.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(ns) = namespaces.get(i) else { break };
                let result = match pods.for_netns(ns) {
                    Some(pod) => judge_namespace(ns, pod, &opts.tools),
                    None => (
                        NamespaceReport {
                            netns: ns.label(),
                            path: ns.path.clone(),
                            pod: None,
                            status: NamespaceStatus::NoPod,
                            families: Vec::new(),
                            tools: Vec::new(),
                        },
                        Vec::new(),
                    ),
                };
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(result);
                }
            });
        }
    });
    let mut report = NodeReport {
        discovery_errors,
        ..NodeReport::default()
    };
    for (ns_report, findings) in results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
    {
        report.namespaces.push(ns_report);
        report.findings.extend(findings);
    }
    crate::checks::sort_findings(&mut report.findings);
    report
}
