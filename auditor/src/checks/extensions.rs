//! Which WasmPlugins and EnvoyFilters load the egress filter, whether they fail open, and what a
//! WasmPlugin attaches to (`selector`, or `targetRef(s)` as in istio/api
//! `extensions/v1alpha1/wasm.proto`). Shared by `egress-filter-missing` (gateway pods) and
//! `egress-waypoint-missing` (waypoint Gateways).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::snapshot::Snapshot;

/// Substrings of a WasmPlugin `url`/`pluginName` (or of an EnvoyFilter patch) that identify the
/// egress filter module.
pub const EGRESS_FILTER_MARKERS: [&str; 2] = ["egress-filter", "egress_filter"];

/// One WasmPlugin or EnvoyFilter that loads the egress filter.
pub struct FilterLoader<'a> {
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub fail_open: bool,
    pub object: &'a Value,
}

impl FilterLoader<'_> {
    pub fn reference(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

fn contains_marker(text: &str, markers: &[String]) -> bool {
    markers
        .iter()
        .any(|m| !m.is_empty() && text.contains(m.as_str()))
}

/// Whether any string anywhere in `v` contains a marker.
fn mentions_marker(v: &Value, markers: &[String]) -> bool {
    match v {
        Value::String(s) => contains_marker(s, markers),
        Value::Array(a) => a.iter().any(|x| mentions_marker(x, markers)),
        Value::Object(o) => o
            .iter()
            .any(|(k, x)| contains_marker(k, markers) || mentions_marker(x, markers)),
        _ => false,
    }
}

/// Whether an Envoy Wasm config inside an EnvoyFilter patch lets traffic through when the
/// module fails (`fail_open: true` or `failure_policy: FAIL_OPEN`).
fn envoy_fail_open(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().any(envoy_fail_open),
        Value::Object(o) => o.iter().any(|(k, x)| {
            (matches!(k.as_str(), "fail_open" | "failOpen") && x.as_bool() == Some(true))
                || (matches!(k.as_str(), "failure_policy" | "failurePolicy")
                    && x.as_str() == Some("FAIL_OPEN"))
                || envoy_fail_open(x)
        }),
        _ => false,
    }
}

pub fn labels_subset(want: &Value, labels: &BTreeMap<String, String>) -> bool {
    match want.as_object() {
        None => true,
        Some(m) => m.iter().all(|(k, v)| {
            v.as_str()
                .is_some_and(|v| labels.get(k).map(String::as_str) == Some(v))
        }),
    }
}

/// Every WasmPlugin and EnvoyFilter of the snapshot that loads the egress filter.
pub fn loaders<'a>(snapshot: &'a Snapshot, markers: &[String]) -> Vec<FilterLoader<'a>> {
    let mut out = Vec::new();
    for obj in &snapshot.extra {
        let kind = obj["kind"].as_str().unwrap_or("");
        let namespace = obj["metadata"]["namespace"].as_str().unwrap_or("");
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        let spec = &obj["spec"];
        let (loads, fail_open) = match kind {
            "WasmPlugin" => {
                let url = spec["url"].as_str().unwrap_or("");
                let plugin = spec["pluginName"].as_str().unwrap_or("");
                (
                    contains_marker(url, markers) || contains_marker(plugin, markers),
                    spec["failStrategy"].as_str() == Some("FAIL_OPEN"),
                )
            }
            "EnvoyFilter" => {
                let patches = &spec["configPatches"];
                (mentions_marker(patches, markers), envoy_fail_open(patches))
            }
            _ => continue,
        };
        if loads {
            out.push(FilterLoader {
                kind,
                namespace,
                name,
                fail_open,
                object: obj,
            });
        }
    }
    out
}

impl FilterLoader<'_> {
    /// A WasmPlugin's `targetRefs` (and the deprecated single `targetRef`); empty when it selects
    /// by labels instead.
    pub fn target_refs(&self) -> Vec<&Value> {
        if self.kind != "WasmPlugin" {
            return Vec::new();
        }
        let spec = &self.object["spec"];
        let mut refs: Vec<&Value> = spec["targetRefs"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        if spec["targetRef"].is_object() {
            refs.push(&spec["targetRef"]);
        }
        refs
    }
}
