//! `outbound-allow-any`: the mesh passes traffic to unknown destinations straight out of the
//! sidecar (PassthroughCluster) instead of refusing it, so it never reaches the egress gateway.

use serde_json::json;

use crate::finding::{Finding, Severity};
use crate::rules::{rule, OUTBOUND_ALLOW_ANY};
use crate::snapshot::{OutboundTrafficMode, Snapshot, MESH_CONFIG_NAME, MESH_CONFIG_NAMESPACE};

pub fn outbound_allow_any(snapshot: &Snapshot) -> Vec<Finding> {
    let Some(mesh) = &snapshot.mesh else {
        return Vec::new();
    };
    let effective = mesh.effective_outbound_mode();
    if effective == OutboundTrafficMode::RegistryOnly {
        return Vec::new();
    }
    let written = mesh
        .outbound_traffic_mode
        .as_ref()
        .map(|m| m.as_str().to_string());
    let how = match &written {
        None => "is not set, so Istio uses ALLOW_ANY".to_string(),
        Some(m) => format!("is {m}"),
    };
    vec![Finding {
        rule: OUTBOUND_ALLOW_ANY.to_string(),
        severity: rule(OUTBOUND_ALLOW_ANY).map(|r| r.severity).unwrap_or(Severity::High),
        kind: "ConfigMap".to_string(),
        namespace: Some(MESH_CONFIG_NAMESPACE.to_string()),
        name: MESH_CONFIG_NAME.to_string(),
        container: None,
        message: format!(
            "meshConfig outboundTrafficPolicy.mode {how}: sidecars forward traffic for unknown destinations directly instead of refusing it"
        ),
        evidence: json!({
            "origin": mesh.origin,
            "outboundTrafficPolicyMode": written,
            "effectiveMode": effective.as_str(),
        }),
    }]
}
