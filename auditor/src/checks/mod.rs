//! The checks: pure functions from a [`Snapshot`] to [`Finding`]s.
//!
//! Each rule lives in one module; [`check_all`] runs every rule over the snapshot and returns the
//! findings in a fixed order (see [`sort_findings`]). Checks never know where objects came from or
//! where findings go.
//!
//! Rules split in two: those that need only the workload itself ([`check_workload_local`]), and
//! those that need the namespace or other objects ([`check_workload_in_context`],
//! [`check_cluster_wide`]), which read a small [`WorkloadFacts`] instead of the whole pod. A
//! source that cannot hold every pod (100,000 manifests) judges each pod as it reads it and keeps
//! only its facts; [`check_all`] does the same over a snapshot that holds them all.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::finding::{Finding, Severity};
use crate::istio;
use crate::rules::group_namespace;
use crate::snapshot::{Snapshot, Workload, WorkloadKind};

pub mod ambient;
mod capture_exclusion;
pub mod extensions;
mod identity;
pub mod injection;
pub mod live;
mod mesh;
mod netpol;
mod privileges;
pub mod selector;
mod sidecar;
mod waypoint;

/// Settings that change what the checks report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// Namespaces where `hostNetwork: true` is expected (node agents, CNI): no `host-network` finding.
    pub host_network_exempt_namespaces: BTreeSet<String>,
    /// istio-cni's `excludeNamespaces`: it never enrols their pods in ambient mode, whatever
    /// their labels say, so they are not expected to be captured.
    pub cni_excluded_namespaces: BTreeSet<String>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            host_network_exempt_namespaces: ["kube-system".to_string()].into_iter().collect(),
            cni_excluded_namespaces: istio::ambient::DEFAULT_CNI_EXCLUDED_NAMESPACES
                .iter()
                .map(|n| n.to_string())
                .collect(),
        }
    }
}

/// What the namespace-dependent rules need to know about a workload; small enough to keep for
/// every pod of a large scan.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadFacts {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    /// The pod's (template's) labels.
    pub labels: selector::Labels,
    /// The deprecated `sidecar.istio.io/inject` annotation, if set.
    pub inject_annotation: Option<String>,
    pub host_network: bool,
    /// What a working Istio sidecar needs and the pod lacks; empty when it has one.
    pub sidecar_gaps: Vec<String>,
    /// The pod has not met the injector yet (not an admitted Pod, no `sidecar.istio.io/status`):
    /// if its namespace asks for injection, Istio will add the sidecar at admission.
    pub injection_pending: bool,
    /// For a pending pod: what the injected pod will still lack (the pod's own `istio-proxy`
    /// overriding Istio's command).
    pub pending_gaps: Vec<String>,
    /// For a pending pod: capture-exclusion and proxy-uid findings on the pod Istio will make,
    /// reported when its namespace asks for injection.
    pub pending_findings: Vec<Finding>,
    pub containers: Vec<String>,
    pub init_containers: Vec<String>,
    /// An admitted Pod (see [`Workload::is_admitted_pod`]).
    pub admitted: bool,
    /// The pod carries `sidecar.istio.io/status` (any value): istio-cni leaves it to a sidecar.
    pub has_status_annotation: bool,
    /// `ambient.istio.io/redirection`, as written.
    pub redirection: Option<String>,
    /// The pod is an Istio proxy itself (gateway or waypoint): nothing to capture.
    pub istio_proxy_pod: bool,
    /// Containers holding CAP_NET_RAW, which lets them set a socket mark ztunnel's rules exempt.
    pub net_raw_holders: Vec<String>,
}

impl WorkloadFacts {
    pub fn of(w: &Workload) -> WorkloadFacts {
        let injection_pending =
            !w.is_admitted_pod() && istio::annotation(&w.meta, istio::STATUS_ANNOTATION).is_none();
        let (pending_gaps, pending_findings) = if injection_pending && !w.host_network() {
            let mut findings: Vec<Finding> = capture_exclusion::predicted_capture_exclusion(w)
                .into_iter()
                .collect();
            findings.extend(identity::predicted_proxy_uid(w));
            (sidecar::pending_gaps(w), findings)
        } else {
            (Vec::new(), Vec::new())
        };
        WorkloadFacts {
            injection_pending,
            pending_gaps,
            pending_findings,
            kind: w.kind,
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            labels: w.labels().into(),
            inject_annotation: istio::annotation(&w.meta, istio::INJECT_KEY).map(str::to_string),
            host_network: w.host_network(),
            sidecar_gaps: sidecar::sidecar_gaps(w),
            containers: w.spec.containers.iter().map(|c| c.name.clone()).collect(),
            init_containers: istio::init_containers(&w.spec)
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            admitted: w.is_admitted_pod(),
            has_status_annotation: istio::annotation(&w.meta, istio::STATUS_ANNOTATION).is_some(),
            redirection: istio::annotation(&w.meta, istio::ambient::REDIRECTION_ANNOTATION)
                .map(str::to_string),
            istio_proxy_pod: istio::find_proxy(&w.spec).and_then(|p| p.role)
                == Some(istio::ProxyRole::Gateway),
            net_raw_holders: privileges::net_raw_holders(w),
        }
    }

    fn finding(&self, rule: &str, severity: Severity, message: String, evidence: Value) -> Finding {
        self.container_finding(rule, severity, None, message, evidence)
    }

    fn container_finding(
        &self,
        rule: &str,
        severity: Severity,
        container: Option<&str>,
        message: String,
        evidence: Value,
    ) -> Finding {
        Finding {
            rule: rule.to_string(),
            severity,
            kind: self.kind.as_str().to_string(),
            namespace: Some(self.namespace.clone()),
            name: self.name.clone(),
            container: container.map(str::to_string),
            message,
            evidence,
        }
    }
}

/// Runs every rule over the snapshot. The result is sorted with [`sort_findings`].
pub fn check_all(snapshot: &Snapshot, opts: &CheckOptions) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut facts = Vec::with_capacity(snapshot.workloads.len());
    for workload in &snapshot.workloads {
        findings.extend(check_workload_local(opts, workload));
        let f = WorkloadFacts::of(workload);
        findings.extend(check_workload_in_context(snapshot, opts, &f));
        facts.push(f);
    }
    findings.extend(check_cluster_wide(snapshot, opts, &facts));
    sort_findings(&mut findings);
    findings
}

/// Every finding about one workload, given the snapshot for its namespace (not sorted).
pub fn check_workload(
    snapshot: &Snapshot,
    opts: &CheckOptions,
    workload: &Workload,
) -> Vec<Finding> {
    let mut out = check_workload_local(opts, workload);
    out.extend(check_workload_in_context(
        snapshot,
        opts,
        &WorkloadFacts::of(workload),
    ));
    out
}

/// The rules that need nothing but the workload: host-network, proxy-uid, net-admin,
/// privileged, capture-exclusion.
pub fn check_workload_local(opts: &CheckOptions, workload: &Workload) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(sidecar::host_network(workload, opts));
    out.extend(identity::proxy_uid(workload));
    out.extend(privileges::net_admin(workload));
    out.extend(privileges::privileged(workload));
    out.extend(capture_exclusion::capture_exclusion(workload));
    out
}

/// The rules that need the workload's namespace: sidecar-missing, sidecar-opt-out, for a pod
/// that has not met the injector yet capture-exclusion and proxy-uid on the pod Istio will make
/// of it (only if its namespace or labels ask for injection), and, for a pod the injector leaves
/// alone, the ambient rules (ambient-opt-out, ambient-not-captured, ambient-net-raw).
pub fn check_workload_in_context(
    snapshot: &Snapshot,
    opts: &CheckOptions,
    facts: &WorkloadFacts,
) -> Vec<Finding> {
    let ctx = injection::InjectionContext::new(snapshot, facts);
    let mut out = Vec::new();
    out.extend(sidecar::sidecar_missing(facts, &ctx));
    out.extend(sidecar::sidecar_opt_out(facts, &ctx));
    if facts.injection_pending && ctx.injection_requested && !facts.host_network {
        out.extend(facts.pending_findings.iter().cloned());
    }
    // The injector decides first: an injected pod is a sidecar pod, and istio-cni skips it.
    if !ctx.injection_requested {
        out.extend(ambient::check(snapshot, opts, facts));
    }
    out
}

/// Mesh- and namespace-wide rules: outbound-allow-any, egress-networkpolicy-missing,
/// egress-waypoint-missing. `facts` are the workloads to judge NetworkPolicy coverage for (those
/// of the snapshot, or gathered while streaming).
pub fn check_cluster_wide(
    snapshot: &Snapshot,
    opts: &CheckOptions,
    facts: &[WorkloadFacts],
) -> Vec<Finding> {
    let mut out = mesh::outbound_allow_any(snapshot);
    out.extend(netpol::egress_networkpolicy_missing(snapshot, opts, facts));
    out.extend(waypoint::egress_waypoint_missing(snapshot, opts));
    out
}

/// Orders findings by namespace (a Namespace finding sorts with its namespace, before the
/// namespace's other findings), then kind, name, rule, container and message, so the output is
/// the same for the same input.
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
}

type SortKey<'a> = (&'a str, u8, &'a str, &'a str, &'a str, &'a str, &'a str);

fn sort_key(f: &Finding) -> SortKey<'_> {
    let level = u8::from(f.kind != "Namespace");
    (
        group_namespace(f),
        level,
        f.kind.as_str(),
        f.name.as_str(),
        f.rule.as_str(),
        f.container.as_deref().unwrap_or(""),
        f.message.as_str(),
    )
}

/// A finding about a workload (and optionally one of its containers).
pub(crate) fn workload_finding(
    rule: &str,
    severity: Severity,
    w: &Workload,
    container: Option<&str>,
    message: String,
    evidence: Value,
) -> Finding {
    Finding {
        rule: rule.to_string(),
        severity,
        kind: w.kind.as_str().to_string(),
        namespace: Some(w.namespace.clone()),
        name: w.name.clone(),
        container: container.map(str::to_string),
        message,
        evidence,
    }
}
