//! The rule catalogue: stable ids, severities and the one-line help sinks show (SARIF rules,
//! PolicyReport policies). `docs/rules.md` explains each rule in full.
//!
//! It sits beside [`crate::finding`] on the ground floor: the checks and the netfilter judge
//! produce findings of these rules, the sinks describe them, and none of them needs the others.

use crate::finding::{Finding, Severity};

/// A rule's fixed description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo {
    pub id: &'static str,
    /// The severity findings of this rule carry; for `capture-exclusion` the highest it can reach
    /// (its findings are graded by how much traffic escapes).
    pub severity: Severity,
    pub title: &'static str,
    /// How to fix it, in one sentence.
    pub fix: &'static str,
}

pub const SIDECAR_MISSING: &str = "sidecar-missing";
pub const SIDECAR_OPT_OUT: &str = "sidecar-opt-out";
pub const HOST_NETWORK: &str = "host-network";
pub const PROXY_UID: &str = "proxy-uid";
pub const NET_ADMIN: &str = "net-admin";
pub const PRIVILEGED: &str = "privileged";
pub const CAPTURE_EXCLUSION: &str = "capture-exclusion";
pub const OUTBOUND_ALLOW_ANY: &str = "outbound-allow-any";
pub const EGRESS_NETWORKPOLICY_MISSING: &str = "egress-networkpolicy-missing";
// Live-cluster rules (checks/live.rs) and the cluster scan's own report of what it could not read.
pub const SIDECAR_NOT_RUNNING: &str = "sidecar-not-running";
pub const EGRESS_FILTER_MISSING: &str = "egress-filter-missing";
pub const SCAN_INCOMPLETE: &str = "scan-incomplete";
// Node agent and `rules`: what the netfilter rules inside a pod's network namespace do.
pub const CAPTURE_INACTIVE: &str = "capture-inactive";
pub const IPTABLES_TAMPERED: &str = "iptables-tampered";

pub const RULES: &[RuleInfo] = &[
    RuleInfo {
        id: SIDECAR_MISSING,
        severity: Severity::High,
        title: "Pod expected to be injected has no working Istio sidecar",
        fix: "Restart the pod so the injector adds the sidecar, or remove whatever strips it; a container merely named istio-proxy does not count.",
    },
    RuleInfo {
        id: SIDECAR_OPT_OUT,
        severity: Severity::Medium,
        title: "Pod in an injected namespace opts out of the sidecar",
        fix: "Remove sidecar.istio.io/inject: \"false\" or move the workload out of the mesh namespace and restrict its egress with a NetworkPolicy.",
    },
    RuleInfo {
        id: HOST_NETWORK,
        severity: Severity::High,
        title: "Pod uses the node's network namespace",
        fix: "Drop hostNetwork: true, or run the workload in a namespace reserved for node agents and exempt it explicitly.",
    },
    RuleInfo {
        id: PROXY_UID,
        severity: Severity::Critical,
        title: "Container runs as the UID or GID excluded from capture",
        fix: "Run the container with a different runAsUser/runAsGroup than the proxy's (1337 unless istio-init -u/-g says otherwise).",
    },
    RuleInfo {
        id: NET_ADMIN,
        severity: Severity::High,
        title: "Container can rewrite the pod's netfilter rules",
        fix: "Remove NET_ADMIN, SYS_ADMIN and ALL from capabilities.add; use istio-cni if only istio-init needed them.",
    },
    RuleInfo {
        id: PRIVILEGED,
        severity: Severity::Critical,
        title: "Container is privileged",
        fix: "Set privileged: false and grant only the capabilities the container needs.",
    },
    RuleInfo {
        id: CAPTURE_EXCLUSION,
        severity: Severity::Critical,
        title: "Outbound traffic capture is narrowed",
        fix: "Remove the traffic.sidecar.istio.io exclusions (or istio-init -x/-o/-c, a narrow -i, interceptionMode NONE); route the traffic through the egress gateway instead.",
    },
    RuleInfo {
        id: OUTBOUND_ALLOW_ANY,
        severity: Severity::High,
        title: "Mesh lets sidecars pass unknown destinations straight through",
        fix: "Set meshConfig.outboundTrafficPolicy.mode: REGISTRY_ONLY and declare external hosts with ServiceEntries routed via the egress gateway.",
    },
    RuleInfo {
        id: EGRESS_NETWORKPOLICY_MISSING,
        severity: Severity::Medium,
        title: "Injected namespace has no egress NetworkPolicy for its pods",
        fix: "Add a NetworkPolicy with policyTypes: [Egress] selecting every pod, allowing only istio-system (egress gateway, istiod) and DNS.",
    },
    RuleInfo {
        id: SIDECAR_NOT_RUNNING,
        severity: Severity::High,
        title: "Pod's istio-proxy is not running or not ready while its application runs",
        fix: "Find why the proxy fails (kubectl logs -c istio-proxy, istio-cni repair), and hold the application until the proxy is ready (holdApplicationUntilProxyStarts or native sidecars).",
    },
    RuleInfo {
        id: EGRESS_FILTER_MISSING,
        severity: Severity::Critical,
        title: "Egress gateway does not run the egress filter, or runs it FAIL_OPEN",
        fix: "Apply the egress-guard WasmPlugin selecting the egress gateway pods (istio=egressgateway) with failStrategy FAIL_CLOSE.",
    },
    RuleInfo {
        id: SCAN_INCOMPLETE,
        severity: Severity::High,
        title: "Part of the cluster could not be read, so it was not judged",
        fix: "Grant the auditor's ServiceAccount list/watch on the resource in that namespace (see deploy/ RBAC), or exclude the namespace explicitly with --namespace.",
    },
    RuleInfo {
        id: CAPTURE_INACTIVE,
        severity: Severity::Critical,
        title: "Injected pod's network namespace no longer sends traffic to the sidecar",
        fix: "Delete the pod so istio-init or istio-cni programs its rules again, then find and remove whatever flushed them (a NET_ADMIN container, a node-level process).",
    },
    RuleInfo {
        id: IPTABLES_TAMPERED,
        severity: Severity::Critical,
        title: "Pod's capture rules let outbound TCP skip the sidecar beyond what its settings allow",
        fix: "Delete the pod so its rules are rebuilt from its settings, then remove the NET_ADMIN/privileged access that changed them; the evidence names the rule and a flow that escapes.",
    },
];

/// The catalogue entry for a rule id.
pub fn rule(id: &str) -> Option<&'static RuleInfo> {
    RULES.iter().find(|r| r.id == id)
}

/// The namespace a finding belongs to for grouping: its namespace, or its name for a Namespace.
pub fn group_namespace(f: &Finding) -> &str {
    match (&f.namespace, f.kind.as_str()) {
        (Some(ns), _) => ns,
        (None, "Namespace") => &f.name,
        (None, _) => "",
    }
}
