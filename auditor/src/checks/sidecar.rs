//! `sidecar-missing`, `sidecar-opt-out` and `host-network`: pods whose traffic never meets a
//! sidecar.

use serde_json::json;

use super::injection::InjectionContext;
use super::{workload_finding, CheckOptions, WorkloadFacts};
use crate::finding::{Finding, Severity};
use crate::istio::{self, ProxyRole};
use crate::rules::{rule, HOST_NETWORK, SIDECAR_MISSING, SIDECAR_OPT_OUT};
use crate::snapshot::Workload;

fn severity(id: &str) -> Severity {
    rule(id).map(|r| r.severity).unwrap_or(Severity::High)
}

/// What a real, Istio-injected sidecar needs and this pod lacks. Empty when the pod has one.
///
/// A container merely named `istio-proxy` is not a sidecar: the injector also writes the
/// `sidecar.istio.io/status` annotation, runs the proxy with `proxy sidecar` (or `proxy router`
/// for gateways), and adds `istio-init` or, with istio-cni, `istio-validation` (or the pod carries
/// the CNI annotations). With interception mode NONE no init container is added; that pod still has
/// a sidecar, and `capture-exclusion` reports that it captures nothing.
pub fn sidecar_gaps(w: &Workload) -> Vec<String> {
    let mut gaps = Vec::new();
    let proxy = istio::find_proxy(&w.spec);
    match proxy {
        None => {
            let init_named = istio::find_init_container(&w.spec, istio::PROXY_CONTAINER).is_some();
            gaps.push(if init_named {
                "istio-proxy is an init container without restartPolicy: Always, so it is not a native sidecar".to_string()
            } else {
                "no istio-proxy container or native sidecar".to_string()
            });
        }
        Some(p) => {
            if p.role.is_none() {
                let cmd: Vec<&str> = p
                    .container
                    .command
                    .iter()
                    .flatten()
                    .chain(p.container.args.iter().flatten())
                    .map(String::as_str)
                    .collect();
                gaps.push(format!(
                    "istio-proxy runs {:?} instead of Istio's `proxy sidecar`: it is not a proxy istiod configures",
                    cmd.join(" ")
                ));
            }
        }
    }
    if istio::annotation(&w.meta, istio::STATUS_ANNOTATION).is_none() {
        gaps.push(
            "no sidecar.istio.io/status annotation: Istio did not inject this pod".to_string(),
        );
    }
    let gateway = proxy.and_then(|p| p.role) == Some(ProxyRole::Gateway);
    let capture_programmed = istio::find_init_container(&w.spec, istio::INIT_CONTAINER).is_some()
        || istio::uses_cni(&w.spec, &w.meta)
        || istio::annotation(&w.meta, istio::INTERCEPTION_MODE_ANNOTATION) == Some("NONE");
    if proxy.is_some() && !gateway && !capture_programmed {
        gaps.push(
            "no istio-init or istio-validation init container and no istio-cni annotation: nothing sends traffic to the proxy"
                .to_string(),
        );
    }
    gaps
}

/// For a pod the injector has not seen yet: what the injected pod will lack. The injector merges
/// the pod's own `istio-proxy` fields over its template, so an `istio-proxy` that sets its own
/// command, or args other than Istio's `proxy sidecar`, keeps them and is not Istio's proxy.
pub fn pending_gaps(w: &Workload) -> Vec<String> {
    let own = w
        .spec
        .containers
        .iter()
        .chain(istio::init_containers(&w.spec))
        .find(|c| c.name == istio::PROXY_CONTAINER);
    let Some(c) = own else {
        return Vec::new();
    };
    let args = c.args.as_deref().unwrap_or(&[]);
    let args_ok = args.is_empty()
        || (args.first().map(String::as_str) == Some("proxy")
            && matches!(args.get(1).map(String::as_str), Some("sidecar" | "router")));
    if c.command.is_none() && args_ok {
        return Vec::new();
    }
    let cmd: Vec<&str> = c
        .command
        .iter()
        .flatten()
        .chain(args.iter())
        .map(String::as_str)
        .collect();
    vec![format!(
        "the pod's own istio-proxy runs {:?}, which the injector keeps instead of Istio's `proxy sidecar`: it will not be a proxy istiod configures",
        cmd.join(" ")
    )]
}

pub fn sidecar_missing(w: &WorkloadFacts, ctx: &InjectionContext) -> Option<Finding> {
    if !ctx.injection_requested || w.host_network || ctx.ambient {
        return None;
    }
    // A pod not admitted yet gets its sidecar at admission; only what the injection cannot fix counts.
    let gaps = if w.injection_pending {
        &w.pending_gaps
    } else {
        &w.sidecar_gaps
    };
    if gaps.is_empty() {
        return None;
    }
    let requested_by = ctx.requested_by.clone().unwrap_or_default();
    Some(w.finding(
        SIDECAR_MISSING,
        severity(SIDECAR_MISSING),
        format!(
            "expected to be injected ({requested_by}) but has no working Istio sidecar: {}",
            gaps.join("; ")
        ),
        json!({
            "injectionRequestedBy": requested_by,
            "namespace": ctx.namespace_evidence(),
            "admitted": !w.injection_pending,
            "gaps": gaps,
            "containers": w.containers,
            "initContainers": w.init_containers,
        }),
    ))
}

pub fn sidecar_opt_out(w: &WorkloadFacts, ctx: &InjectionContext) -> Option<Finding> {
    // A pod that opts out yet carries a real sidecar (injected by hand) is not bypassing anything.
    if !ctx.opted_out() || w.sidecar_gaps.is_empty() {
        return None;
    }
    let (source, value) = ctx
        .pod_switch_source
        .clone()
        .unwrap_or(("annotation", String::new()));
    Some(w.finding(
        SIDECAR_OPT_OUT,
        severity(SIDECAR_OPT_OUT),
        format!(
            "opts out of sidecar injection with {source} sidecar.istio.io/inject={value:?} in injected namespace {}",
            w.namespace
        ),
        json!({
            "source": source,
            "key": istio::INJECT_KEY,
            "value": value,
            "namespace": ctx.namespace_evidence(),
        }),
    ))
}

pub fn host_network(w: &Workload, opts: &CheckOptions) -> Option<Finding> {
    if !w.host_network() || opts.host_network_exempt_namespaces.contains(&w.namespace) {
        return None;
    }
    Some(workload_finding(
        HOST_NETWORK,
        severity(HOST_NETWORK),
        w,
        None,
        "runs in the node's network namespace (hostNetwork: true): Istio never injects it and NetworkPolicies do not apply".to_string(),
        json!({"hostNetwork": true}),
    ))
}
