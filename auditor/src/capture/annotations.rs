//! The capture settings as istio-cni and the injection template read them from the pod's
//! `traffic.sidecar.istio.io/*` and interception-mode annotations.

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::model::*;
use crate::istio::{self, traffic, ProxyRole};

/// istio-cni's reading of the pod (`NewRedirect`): annotations with CNI defaults, proxy UID/GID
/// from the `istio-proxy` container's own security context (0 or unset means 1337), DNS capture
/// from the proxy's `ISTIO_META_DNS_CAPTURE`.
pub(super) fn from_cni_annotations(
    meta: &ObjectMeta,
    proxy: &Container,
) -> Result<CaptureConfig, CaptureError> {
    let mut cfg = from_annotations(meta, CaptureSource::CniAnnotations, true)?;
    let sc = proxy.security_context.as_ref();
    cfg.proxy_uids = vec![sc
        .and_then(|s| s.run_as_user)
        .filter(|u| *u != 0)
        .unwrap_or(DEFAULT_PROXY_UID)];
    cfg.proxy_gids = vec![sc
        .and_then(|s| s.run_as_group)
        .filter(|g| *g != 0)
        .unwrap_or(DEFAULT_PROXY_UID)];
    let proxy_env = |name: &str| {
        proxy
            .env
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
            .and_then(parse_go_bool)
    };
    cfg.dns_capture = proxy_env("ISTIO_META_DNS_CAPTURE").unwrap_or(false);
    cfg.dual_stack = proxy_env("ISTIO_DUAL_STACK").unwrap_or(false);
    cfg.drop_invalid = proxy_env("INVALID_DROP").unwrap_or(false);
    Ok(cfg)
}

/// The `traffic.sidecar.istio.io/*` and interception-mode annotations over Istio's defaults.
/// `cni` selects istio-cni's defaults (status port 15020 excluded from outbound capture).
pub(super) fn from_annotations(
    meta: &ObjectMeta,
    source: CaptureSource,
    cni: bool,
) -> Result<CaptureConfig, CaptureError> {
    let mut cfg = CaptureConfig::defaults(source, cni, ProxyRole::Sidecar);
    let get = |key: &str| istio::annotation(meta, key);
    let bad = |key: &str, value: &str, reason: String| CaptureError::BadAnnotation {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };

    if let Some(mode) = get(istio::INTERCEPTION_MODE_ANNOTATION) {
        cfg.interception_mode = mode
            .parse()
            .map_err(|e| bad(istio::INTERCEPTION_MODE_ANNOTATION, mode, e))?;
    }
    if let Some(v) = get(traffic::INCLUDE_OUTBOUND_IP_RANGES) {
        cfg.include_outbound_ip_ranges =
            parse_ip_ranges(v).map_err(|e| bad(traffic::INCLUDE_OUTBOUND_IP_RANGES, v, e))?;
    }
    if let Some(v) = get(traffic::EXCLUDE_OUTBOUND_IP_RANGES) {
        cfg.exclude_outbound_ip_ranges =
            parse_cidrs(v).map_err(|e| bad(traffic::EXCLUDE_OUTBOUND_IP_RANGES, v, e))?;
    }
    // istio-cni excludes the status port from outbound capture unless told otherwise.
    cfg.exclude_outbound_ports = match get(traffic::EXCLUDE_OUTBOUND_PORTS) {
        Some(v) => {
            parse_ports_or_wildcard(v).map_err(|e| bad(traffic::EXCLUDE_OUTBOUND_PORTS, v, e))?
        }
        None if cni => vec![PROXY_STATUS_PORT],
        None => Vec::new(),
    };
    if let Some(v) = get(traffic::INCLUDE_OUTBOUND_PORTS) {
        cfg.include_outbound_ports =
            parse_ports_or_wildcard(v).map_err(|e| bad(traffic::INCLUDE_OUTBOUND_PORTS, v, e))?;
    }
    if let Some(v) = get(traffic::INCLUDE_INBOUND_PORTS) {
        cfg.include_inbound_ports =
            parse_port_selection(v).map_err(|e| bad(traffic::INCLUDE_INBOUND_PORTS, v, e))?;
    }
    let mut inbound_excluded = match get(traffic::EXCLUDE_INBOUND_PORTS) {
        Some(v) => {
            parse_ports_or_wildcard(v).map_err(|e| bad(traffic::EXCLUDE_INBOUND_PORTS, v, e))?
        }
        None => vec![PROXY_STATUS_PORT],
    };
    // Both the CNI plugin and the injection template always exclude the proxy's own ports.
    for p in [15020, 15021, 15090] {
        if !inbound_excluded.contains(&p) {
            inbound_excluded.push(p);
        }
    }
    cfg.exclude_inbound_ports = inbound_excluded;
    if let Some(v) = get(traffic::EXCLUDE_INTERFACES) {
        cfg.exclude_interfaces = split_list(v);
    }
    cfg.reroute_virtual_interfaces = match get(traffic::REROUTE_VIRTUAL_INTERFACES) {
        Some(v) => split_list(v),
        None => get(traffic::KUBEVIRT_INTERFACES)
            .map(split_list)
            .unwrap_or_default(),
    };
    Ok(cfg)
}
