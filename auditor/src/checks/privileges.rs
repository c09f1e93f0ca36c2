//! `net-admin` and `privileged`: containers that can rewrite or remove the capture rules.
//!
//! Istio's own containers are judged against what Istio injects: `istio-init` adds NET_ADMIN and
//! NET_RAW to write the rules, and in TPROXY mode `istio-proxy` adds NET_ADMIN (and runs as root).
//! Anything beyond that is reported like any other container.

use k8s_openapi::api::core::v1::SecurityContext;
use serde_json::json;

use super::identity::all_containers;
use super::workload_finding;
use crate::capture::{CaptureConfig, InterceptionMode};
use crate::finding::{Finding, Severity};
use crate::istio;
use crate::rules::{rule, NET_ADMIN, PRIVILEGED};
use crate::snapshot::Workload;

/// Capabilities that let a process change netfilter rules (or everything).
const NETWORK_CONTROL_CAPS: [&str; 3] = ["NET_ADMIN", "SYS_ADMIN", "ALL"];

fn normalise_cap(cap: &str) -> String {
    let upper = cap.trim().to_ascii_uppercase();
    upper
        .strip_prefix("CAP_")
        .map(str::to_string)
        .unwrap_or(upper)
}

fn added_caps(sc: Option<&SecurityContext>) -> Vec<String> {
    sc.and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.as_ref())
        .map(|add| add.iter().map(|c| normalise_cap(c)).collect())
        .unwrap_or_default()
}

/// The capabilities Istio's injection template gives its own container in this pod.
fn istio_allowed_caps(w: &Workload, container: &str) -> &'static [&'static str] {
    match container {
        istio::INIT_CONTAINER => &["NET_ADMIN", "NET_RAW"],
        istio::PROXY_CONTAINER => {
            if proxy_is_tproxy(w) {
                &["NET_ADMIN", "NET_RAW"]
            } else {
                &[]
            }
        }
        _ => &[],
    }
}

fn proxy_is_tproxy(w: &Workload) -> bool {
    if let Ok(Some(cfg)) = CaptureConfig::from_pod(&w.spec, &w.meta) {
        return cfg.interception_mode == InterceptionMode::Tproxy;
    }
    // Capture settings unreadable: the proxy's own view of its mode.
    istio::find_proxy(&w.spec)
        .and_then(|p| p.container.env.as_ref())
        .and_then(|env| {
            env.iter()
                .find(|e| e.name == "ISTIO_META_INTERCEPTION_MODE")
        })
        .and_then(|e| e.value.as_deref())
        == Some("TPROXY")
}

pub fn net_admin(w: &Workload) -> Vec<Finding> {
    let severity = rule(NET_ADMIN)
        .map(|r| r.severity)
        .unwrap_or(Severity::High);
    let mut out = Vec::new();
    for c in all_containers(&w.spec) {
        let caps = added_caps(c.security_context);
        let istio_own = istio::is_istio_container(&w.meta, c.name);
        let allowed: &[&str] = if istio_own {
            istio_allowed_caps(w, c.name)
        } else {
            &[]
        };
        let offending: Vec<&String> = caps
            .iter()
            .filter(|cap| {
                NETWORK_CONTROL_CAPS.contains(&cap.as_str()) && !allowed.contains(&cap.as_str())
            })
            .collect();
        if offending.is_empty() {
            continue;
        }
        let list = offending
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let message = if istio_own {
            format!(
                "Istio container {} adds {list}, more than Istio's injection gives it: it can rewrite the pod's capture rules",
                c.name
            )
        } else {
            format!(
                "{} {} adds {list}: it can rewrite or flush the pod's capture rules",
                c.list, c.name
            )
        };
        out.push(workload_finding(
            NET_ADMIN,
            severity,
            w,
            Some(c.name),
            message,
            json!({
                "containerList": c.list,
                "capabilitiesAdded": caps,
                "offending": offending,
                "istioContainer": istio_own,
                "allowedForIstioContainer": allowed,
            }),
        ));
    }
    out
}

pub fn privileged(w: &Workload) -> Vec<Finding> {
    let severity = rule(PRIVILEGED)
        .map(|r| r.severity)
        .unwrap_or(Severity::Critical);
    let mut out = Vec::new();
    for c in all_containers(&w.spec) {
        if c.security_context.and_then(|s| s.privileged) != Some(true) {
            continue;
        }
        // Istio injects privileged containers only when values.global.proxy.privileged is set,
        // which is not needed for capture: report it for Istio's containers too.
        let istio_own = istio::is_istio_container(&w.meta, c.name);
        out.push(workload_finding(
            PRIVILEGED,
            severity,
            w,
            Some(c.name),
            format!(
                "{} {} is privileged: it holds every capability and can rewrite or remove the capture rules",
                c.list, c.name
            ),
            json!({"containerList": c.list, "privileged": true, "istioContainer": istio_own}),
        ));
    }
    out
}
