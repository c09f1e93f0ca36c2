//! `proxy-uid`: a container whose traffic the capture rules wave through because it runs as the
//! proxy's UID or GID (`-m owner --uid-owner/--gid-owner ... -j RETURN`).

use k8s_openapi::api::core::v1::{PodSpec, SecurityContext};
use serde_json::json;

use super::workload_finding;
use crate::capture::{fallback_proxy_identity, CaptureConfig, CaptureSource};
use crate::finding::{Finding, Severity};
use crate::istio;
use crate::rules::{rule, PROXY_UID};
use crate::snapshot::Workload;

/// One container of any of the three lists, with the fields the checks read.
pub(crate) struct ContainerRef<'a> {
    pub name: &'a str,
    /// `container`, `initContainer` or `ephemeralContainer`.
    pub list: &'static str,
    pub security_context: Option<&'a SecurityContext>,
}

pub(crate) fn all_containers(spec: &PodSpec) -> Vec<ContainerRef<'_>> {
    let mut out: Vec<ContainerRef<'_>> = istio::init_containers(spec)
        .iter()
        .map(|c| ContainerRef {
            name: &c.name,
            list: "initContainer",
            security_context: c.security_context.as_ref(),
        })
        .collect();
    out.extend(spec.containers.iter().map(|c| ContainerRef {
        name: &c.name,
        list: "container",
        security_context: c.security_context.as_ref(),
    }));
    out.extend(
        spec.ephemeral_containers
            .iter()
            .flatten()
            .map(|c| ContainerRef {
                name: &c.name,
                list: "ephemeralContainer",
                security_context: c.security_context.as_ref(),
            }),
    );
    out
}

pub fn proxy_uid(w: &Workload) -> Vec<Finding> {
    let (uids, gids, derived_from) = match CaptureConfig::from_pod(&w.spec, &w.meta) {
        Ok(None) => return Vec::new(),
        Ok(Some(cfg)) => {
            if !cfg.captures_outbound() {
                // Nothing is captured, so nothing is excluded by identity either.
                return Vec::new();
            }
            let from = match &cfg.source {
                CaptureSource::InitContainer { container } => {
                    format!("{container} args (-u/-g, -g defaulting to -u)")
                }
                CaptureSource::CniAnnotations => {
                    "istio-proxy runAsUser/runAsGroup as istio-cni reads them (1337 when unset)"
                        .to_string()
                }
                _ => "defaults".to_string(),
            };
            (cfg.proxy_uids, cfg.proxy_gids, from)
        }
        Err(_) => {
            let (uid, gid) = fallback_proxy_identity(&w.spec);
            (
                vec![uid],
                vec![gid],
                "istio-proxy runAsUser/runAsGroup (capture settings unreadable)".to_string(),
            )
        }
    };
    proxy_uid_with(w, &uids, &gids, &derived_from, false)
}

/// proxy-uid on the pod Istio will make of a pod it has not injected yet.
pub fn predicted_proxy_uid(w: &Workload) -> Vec<Finding> {
    match CaptureConfig::predict(&w.spec, &w.meta) {
        Ok(cfg) if cfg.captures_outbound() => proxy_uid_with(
            w,
            &cfg.proxy_uids,
            &cfg.proxy_gids,
            "the injection template (-u from the pod's own istio-proxy runAsUser, else 1337; -g defaulting to -u)",
            true,
        ),
        _ => Vec::new(),
    }
}

fn proxy_uid_with(
    w: &Workload,
    uids: &[i64],
    gids: &[i64],
    derived_from: &str,
    predicted: bool,
) -> Vec<Finding> {
    let pod_sc = w.spec.security_context.as_ref();
    let severity = rule(PROXY_UID)
        .map(|r| r.severity)
        .unwrap_or(Severity::Critical);
    let mut out = Vec::new();
    for c in all_containers(&w.spec) {
        // Istio's own containers run as the proxy by design; before injection, the injector
        // replaces or merges containers with Istio's names.
        let istio_own = if predicted {
            matches!(
                c.name,
                istio::PROXY_CONTAINER | istio::INIT_CONTAINER | istio::VALIDATION_CONTAINER
            )
        } else {
            istio::is_istio_container(&w.meta, c.name)
        };
        if istio_own {
            continue;
        }
        let (uid, uid_from) = match c.security_context.and_then(|s| s.run_as_user) {
            Some(u) => (Some(u), "container"),
            None => (pod_sc.and_then(|s| s.run_as_user), "pod"),
        };
        let (gid, gid_from) = match c.security_context.and_then(|s| s.run_as_group) {
            Some(g) => (Some(g), "container"),
            None => (pod_sc.and_then(|s| s.run_as_group), "pod"),
        };
        let uid_hit = uid.filter(|u| uids.contains(u));
        let gid_hit = gid.filter(|g| gids.contains(g));
        if uid_hit.is_none() && gid_hit.is_none() {
            continue;
        }
        let mut what = Vec::new();
        if let Some(u) = uid_hit {
            what.push(format!(
                "runAsUser {u} (from the {uid_from} securityContext)"
            ));
        }
        if let Some(g) = gid_hit {
            what.push(format!(
                "runAsGroup {g} (from the {gid_from} securityContext)"
            ));
        }
        out.push(workload_finding(
            PROXY_UID,
            severity,
            w,
            Some(c.name),
            format!(
                "{} {} runs with {}, which the capture rules exempt as the proxy's own: its traffic skips the sidecar",
                c.list,
                c.name,
                what.join(" and ")
            ),
            json!({
                "containerList": c.list,
                "runAsUser": uid,
                "runAsUserFrom": uid.map(|_| uid_from),
                "runAsGroup": gid,
                "runAsGroupFrom": gid.map(|_| gid_from),
                "excludedUids": uids,
                "excludedGids": gids,
                "excludedIdentityFrom": derived_from,
                "predicted": predicted,
            }),
        ));
    }
    out
}
