//! Ambient mode: pods with no sidecar whose traffic istio-cni's in-pod rules send to ztunnel.
//! `ambient-opt-out`, `ambient-not-captured` and `ambient-net-raw`, for pods the injector leaves
//! alone (an injected pod is a sidecar pod, and istio-cni skips it).
//!
//! Who is meant to be ambient follows istio-cni with its default enablement selectors
//! (`cni/pkg/util/enablement_selector.go`, `podutil.go`; the istio.io page *Add workloads to the
//! mesh*): not `hostNetwork`, no `sidecar.istio.io/status` annotation (its presence alone), not in
//! istio-cni's excluded namespaces, not ztunnel itself, and either the pod label
//! `istio.io/dataplane-mode=ambient` or the namespace label with a pod label other than `none`.
//! Whether it is captured is what istio-cni wrote on it once its rules were in place:
//! `ambient.istio.io/redirection: enabled` (or `pending`: rules written, no ztunnel yet, so the
//! pod sends no captured traffic at all).

use serde_json::json;

use super::{CheckOptions, WorkloadFacts};
use crate::finding::{Finding, Severity};
use crate::istio::{self, ambient};
use crate::rules::{rule, AMBIENT_NET_RAW, AMBIENT_NOT_CAPTURED, AMBIENT_OPT_OUT};
use crate::snapshot::{Snapshot, MESH_CONFIG_NAMESPACE};

fn severity(id: &str) -> Severity {
    rule(id).map(|r| r.severity).unwrap_or(Severity::High)
}

/// What the ambient labels ask for a pod the injector leaves alone, and what istio-cni makes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// No ambient label applies to the pod.
    NotRequested,
    /// The labels ask, but istio-cni never enrols this pod; why.
    Skipped(&'static str),
    /// An ambient namespace, and the pod label `istio.io/dataplane-mode=none`.
    OptedOut,
    /// The labels enrol the pod: which one.
    Enrolled { by: String },
}

/// The pod's ambient intent from its labels and its namespace's.
pub fn intent(snapshot: &Snapshot, opts: &CheckOptions, w: &WorkloadFacts) -> Intent {
    let ns_ambient =
        super::injection::namespace_is_ambient(snapshot.namespace_labels(&w.namespace));
    let pod_mode = w.labels.get(istio::DATAPLANE_MODE_LABEL);
    let requested = match pod_mode {
        Some(ambient::MODE_AMBIENT) => Some(format!(
            "pod label {}={}",
            istio::DATAPLANE_MODE_LABEL,
            ambient::MODE_AMBIENT
        )),
        Some(ambient::MODE_NONE) => None,
        _ if ns_ambient => Some(format!(
            "namespace {} label {}={}",
            w.namespace,
            istio::DATAPLANE_MODE_LABEL,
            ambient::MODE_AMBIENT
        )),
        _ => None,
    };
    let opted_out = ns_ambient && pod_mode == Some(ambient::MODE_NONE);
    if requested.is_none() && !opted_out {
        return Intent::NotRequested;
    }
    if w.istio_proxy_pod {
        // Waypoint and gateway pods are proxies; Istio's waypoint template labels them `none`.
        return Intent::Skipped("the pod is an Istio gateway or waypoint proxy");
    }
    if opts.cni_excluded_namespaces.contains(&w.namespace) {
        return Intent::Skipped("istio-cni excludes the namespace (excludeNamespaces)");
    }
    if w.namespace == MESH_CONFIG_NAMESPACE
        && w.labels.get("app") == Some(ambient::ZTUNNEL_APP_LABEL_VALUE)
    {
        return Intent::Skipped("the pod is ztunnel");
    }
    if w.host_network {
        // host-network reports it: rules cannot be written into the node's namespace.
        return Intent::Skipped("host-network pods are never captured");
    }
    match requested {
        Some(by) => Intent::Enrolled { by },
        None => Intent::OptedOut,
    }
}

/// The ambient findings for one workload the injector leaves alone.
pub fn check(snapshot: &Snapshot, opts: &CheckOptions, w: &WorkloadFacts) -> Vec<Finding> {
    let intent = intent(snapshot, opts, w);
    // A pod carrying a real sidecar (injected by hand, `istioctl kube-inject`) is a sidecar pod:
    // istio-cni leaves it alone and the sidecar rules judge it.
    let real_sidecar = w.has_status_annotation && w.sidecar_gaps.is_empty();
    match intent {
        Intent::NotRequested | Intent::Skipped(_) => Vec::new(),
        Intent::OptedOut if real_sidecar => Vec::new(),
        Intent::OptedOut => vec![w.finding(
            AMBIENT_OPT_OUT,
            severity(AMBIENT_OPT_OUT),
            format!(
                "opts out of ambient mode with pod label {}={} in ambient namespace {}: istio-cni writes no capture rules for it, so its traffic never meets ztunnel or a waypoint",
                istio::DATAPLANE_MODE_LABEL,
                ambient::MODE_NONE,
                w.namespace
            ),
            json!({
                "label": istio::DATAPLANE_MODE_LABEL,
                "value": ambient::MODE_NONE,
                "namespaceLabel": format!("{}={}", istio::DATAPLANE_MODE_LABEL, ambient::MODE_AMBIENT),
            }),
        )],
        Intent::Enrolled { .. } if real_sidecar => Vec::new(),
        Intent::Enrolled { by } => {
            if let Some(f) = not_captured(w, &by) {
                return vec![f];
            }
            net_raw(w, &by)
        }
    }
}

fn not_captured(w: &WorkloadFacts, by: &str) -> Option<Finding> {
    if w.has_status_annotation {
        // Presence alone makes istio-cni skip the pod (`podHasSidecar`); nothing else captures it.
        return Some(w.finding(
            AMBIENT_NOT_CAPTURED,
            severity(AMBIENT_NOT_CAPTURED),
            format!(
                "should be in ambient mode ({by}) but carries {}, which makes istio-cni leave it to a sidecar, and has no working sidecar ({}): nothing captures its traffic",
                istio::STATUS_ANNOTATION,
                w.sidecar_gaps.join("; ")
            ),
            json!({
                "reason": "sidecar-status-without-sidecar",
                "enrolledBy": by,
                "annotation": istio::STATUS_ANNOTATION,
                "gaps": w.sidecar_gaps,
                "admitted": w.admitted,
            }),
        ));
    }
    // Only an admitted pod has met istio-cni; a manifest gets its rules when it starts.
    if !w.admitted {
        return None;
    }
    let redirection = w.redirection.as_deref();
    if matches!(
        redirection,
        Some(ambient::REDIRECTION_ENABLED | ambient::REDIRECTION_PENDING)
    ) {
        // `pending` is not reported: the rules are in place and the pod can send no captured
        // traffic until a ztunnel takes it (constants.go); the node agent judges its rules.
        return None;
    }
    let state = match redirection {
        None => format!("no {} annotation", ambient::REDIRECTION_ANNOTATION),
        Some(v) => format!(
            "{}={v:?}, which is not one of Istio's values ({}, {})",
            ambient::REDIRECTION_ANNOTATION,
            ambient::REDIRECTION_ENABLED,
            ambient::REDIRECTION_PENDING
        ),
    };
    Some(w.finding(
        AMBIENT_NOT_CAPTURED,
        severity(AMBIENT_NOT_CAPTURED),
        format!(
            "should be in ambient mode ({by}) but istio-cni has not redirected it ({state}): its traffic leaves the pod directly, without ztunnel or a waypoint"
        ),
        json!({
            "reason": "not-redirected",
            "enrolledBy": by,
            "annotation": ambient::REDIRECTION_ANNOTATION,
            "value": redirection,
        }),
    ))
}

fn net_raw(w: &WorkloadFacts, by: &str) -> Vec<Finding> {
    w.net_raw_holders
        .iter()
        .map(|c| {
            w.container_finding(
                AMBIENT_NET_RAW,
                severity(AMBIENT_NET_RAW),
                Some(c),
                format!(
                    "container {c} of this ambient pod ({by}) holds NET_RAW (it does not drop it): it can set the socket mark {:#x} that the in-pod rules take for ztunnel's own, and its connections then leave without ztunnel",
                    ambient::INPOD_MARK
                ),
                json!({
                    "capability": "NET_RAW",
                    "exemptMark": format!("{:#x}/{:#x}", ambient::INPOD_MARK, ambient::INPOD_MASK),
                    "enrolledBy": by,
                }),
            )
        })
        .collect()
}
