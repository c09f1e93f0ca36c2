//! The WasmPlugin the controller writes: only `spec.pluginConfig` and the label and annotation it
//! owns, applied server-side with its own field manager, so the rest of the WasmPlugin (url,
//! sha256, selector, phase...) stays with whoever installed it.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::compile::Compiled;

/// The field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "egress-controller";
pub const API_VERSION: &str = "extensions.istio.io/v1alpha1";
pub const KIND: &str = "WasmPlugin";
pub const PLURAL: &str = "wasmplugins";
pub const GROUP: &str = "extensions.istio.io";
/// SHA-256 of the pluginConfig in effect, so anyone can tell which compilation a gateway runs.
pub const CONFIG_HASH_ANNOTATION: &str = "policy.egress-guard.dev/config-sha256";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// SHA-256 (hex) of the compiled JSON.
pub fn config_hash(compiled: &Compiled) -> String {
    hex::encode(Sha256::digest(compiled.to_json().as_bytes()))
}

/// The apply configuration: the fields the controller owns and nothing else.
pub fn apply_object(name: &str, namespace: &str, compiled: &Compiled) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { MANAGED_BY_LABEL: FIELD_MANAGER },
            "annotations": { CONFIG_HASH_ANNOTATION: config_hash(compiled) },
        },
        "spec": { "pluginConfig": compiled.plugin_config },
    })
}

/// [`apply_object`] as printed by `compile --wasmplugin`: pretty JSON (which is also YAML), ready
/// for `kubectl apply --server-side --field-manager egress-controller -f -`.
pub fn apply_document(name: &str, namespace: &str, compiled: &Compiled) -> String {
    let mut text = serde_json::to_string_pretty(&apply_object(name, namespace, compiled))
        .unwrap_or_else(|_| String::from("{}"));
    text.push('\n');
    text
}
