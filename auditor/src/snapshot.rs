//! The objects the checks judge, however they were gathered (files, a live cluster).
//!
//! Sources fill a [`Snapshot`]; [`crate::checks::check_all`] reads it. A snapshot holds
//! namespaces by name, the mesh config, NetworkPolicies by namespace, and every pod or pod
//! template as a [`Workload`]. Istio objects a source may add later (WasmPlugin, EnvoyFilter) are
//! kept as JSON in [`Snapshot::extra`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodSpec, PodStatus};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

/// Namespace a namespaced object without `metadata.namespace` lands in (what `kubectl apply`
/// does with the default context).
pub const DEFAULT_NAMESPACE: &str = "default";
/// Istio's root namespace, where the mesh ConfigMap lives.
pub const MESH_CONFIG_NAMESPACE: &str = "istio-system";
/// Name of the mesh ConfigMap and its key.
pub const MESH_CONFIG_NAME: &str = "istio";
pub const MESH_CONFIG_KEY: &str = "mesh";

/// The kinds whose pods (or pod templates) are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum WorkloadKind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    ReplicationController,
    Job,
    CronJob,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 8] = [
        WorkloadKind::Pod,
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::ReplicaSet,
        WorkloadKind::ReplicationController,
        WorkloadKind::Job,
        WorkloadKind::CronJob,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "Pod",
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::ReplicationController => "ReplicationController",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
        }
    }

    /// The kind for a manifest's `kind:` field, if it is one that carries a pod.
    pub fn from_kind(kind: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pod, or the pod template of a controller, as the checks see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub kind: WorkloadKind,
    /// The object's namespace ([`DEFAULT_NAMESPACE`] when the manifest has none).
    pub namespace: String,
    /// The object's name (the Deployment's, not the template's).
    pub name: String,
    /// The pod's metadata, or the pod template's: labels and annotations that Istio reads.
    pub meta: ObjectMeta,
    pub spec: PodSpec,
    /// Only for Pods read from a cluster or `kubectl get -o yaml`.
    pub status: Option<PodStatus>,
}

impl Workload {
    /// `None` when the pod has no spec.
    pub fn from_pod(pod: &Pod) -> Option<Workload> {
        Some(Workload {
            kind: WorkloadKind::Pod,
            namespace: namespace_of(&pod.metadata),
            name: pod.metadata.name.clone().unwrap_or_default(),
            meta: pod.metadata.clone(),
            spec: pod.spec.clone()?,
            status: pod.status.clone(),
        })
    }

    /// The pod's (template's) labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        crate::istio::labels(&self.meta)
    }

    pub fn host_network(&self) -> bool {
        self.spec.host_network.unwrap_or(false)
    }

    /// A Pod the API server has admitted (it carries a uid, creation time, resource version or
    /// status, as `kubectl get` output does). Admission is when Istio injects; anything else (a Pod
    /// manifest, any controller's pod template) has not met the injector yet.
    pub fn is_admitted_pod(&self) -> bool {
        self.kind == WorkloadKind::Pod
            && (self.status.is_some()
                || self.meta.uid.is_some()
                || self.meta.creation_timestamp.is_some()
                || self.meta.resource_version.is_some())
    }
}

/// The object's namespace; `default` when it has none (as the API server defaults it).
pub(crate) fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// `outboundTrafficPolicy.mode` of the mesh config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OutboundTrafficMode {
    AllowAny,
    RegistryOnly,
    AllowAnyDynamicDns,
    /// A value Istio does not define; kept verbatim.
    Other(String),
}

impl OutboundTrafficMode {
    pub fn parse(s: &str) -> OutboundTrafficMode {
        match s {
            "ALLOW_ANY" => OutboundTrafficMode::AllowAny,
            "REGISTRY_ONLY" => OutboundTrafficMode::RegistryOnly,
            "ALLOW_ANY_DYNAMIC_DNS" => OutboundTrafficMode::AllowAnyDynamicDns,
            other => OutboundTrafficMode::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            OutboundTrafficMode::AllowAny => "ALLOW_ANY",
            OutboundTrafficMode::RegistryOnly => "REGISTRY_ONLY",
            OutboundTrafficMode::AllowAnyDynamicDns => "ALLOW_ANY_DYNAMIC_DNS",
            OutboundTrafficMode::Other(s) => s,
        }
    }
}

/// The parts of Istio's MeshConfig the checks read, plus the whole document as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshConfig {
    /// Where it came from, e.g. `ConfigMap istio-system/istio`.
    pub origin: String,
    /// `outboundTrafficPolicy.mode` as written; `None` when unset (Istio then uses ALLOW_ANY).
    pub outbound_traffic_mode: Option<OutboundTrafficMode>,
    /// The full mesh config.
    pub raw: serde_json::Value,
}

/// Why a mesh config could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshConfigError {
    #[error("ConfigMap {namespace}/{name} has no data key {key:?}")]
    MissingKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("mesh config is not valid YAML: {0}")]
    Yaml(String),
    #[error("mesh config is not a mapping")]
    NotAMapping,
    #[error("mesh config field {field}: {reason}")]
    Field { field: String, reason: String },
}

impl MeshConfig {
    /// Parses the mesh config YAML (the `mesh` key of the `istio` ConfigMap).
    pub fn from_yaml(origin: &str, text: &str) -> Result<MeshConfig, MeshConfigError> {
        let raw: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_saphyr::from_str(text).map_err(|e| MeshConfigError::Yaml(e.to_string()))?
        };
        Self::from_value(origin, raw)
    }

    /// Reads an already-parsed mesh config.
    pub fn from_value(origin: &str, raw: serde_json::Value) -> Result<MeshConfig, MeshConfigError> {
        let obj = match &raw {
            serde_json::Value::Object(o) => o,
            serde_json::Value::Null => {
                return Ok(MeshConfig {
                    origin: origin.to_string(),
                    outbound_traffic_mode: None,
                    raw: serde_json::Value::Object(Default::default()),
                })
            }
            _ => return Err(MeshConfigError::NotAMapping),
        };
        let outbound_traffic_mode = match obj.get("outboundTrafficPolicy") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Object(policy)) => match policy.get("mode") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(m)) => Some(OutboundTrafficMode::parse(m)),
                Some(other) => {
                    return Err(MeshConfigError::Field {
                        field: "outboundTrafficPolicy.mode".into(),
                        reason: format!("expected a string, found {}", json_type(other)),
                    })
                }
            },
            Some(other) => {
                return Err(MeshConfigError::Field {
                    field: "outboundTrafficPolicy".into(),
                    reason: format!("expected a mapping, found {}", json_type(other)),
                })
            }
        };
        Ok(MeshConfig {
            origin: origin.to_string(),
            outbound_traffic_mode,
            raw,
        })
    }

    /// Reads the mesh config out of the `istio` ConfigMap.
    pub fn from_config_map(cm: &ConfigMap) -> Result<MeshConfig, MeshConfigError> {
        let namespace = cm.metadata.namespace.clone().unwrap_or_default();
        let name = cm.metadata.name.clone().unwrap_or_default();
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(MESH_CONFIG_KEY))
            .ok_or_else(|| MeshConfigError::MissingKey {
                namespace: namespace.clone(),
                name: name.clone(),
                key: MESH_CONFIG_KEY.into(),
            })?;
        Self::from_yaml(&format!("ConfigMap {namespace}/{name}"), text)
    }

    /// The mode Istio applies: unset means ALLOW_ANY.
    pub fn effective_outbound_mode(&self) -> OutboundTrafficMode {
        self.outbound_traffic_mode
            .clone()
            .unwrap_or(OutboundTrafficMode::AllowAny)
    }
}

/// Whether a ConfigMap is the mesh config (`istio` in `istio-system`).
pub fn is_mesh_config_map(namespace: Option<&str>, name: Option<&str>) -> bool {
    namespace == Some(MESH_CONFIG_NAMESPACE) && name == Some(MESH_CONFIG_NAME)
}

pub(crate) fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// Everything a scan judges.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Namespaces by name. Workloads may sit in namespaces that are not here; the checks then
    /// know only the workload's own labels.
    pub namespaces: BTreeMap<String, Namespace>,
    /// The mesh config, when the input had the `istio` ConfigMap.
    pub mesh: Option<MeshConfig>,
    /// NetworkPolicies by namespace.
    pub network_policies: BTreeMap<String, Vec<NetworkPolicy>>,
    /// Pods and pod templates, in input order.
    pub workloads: Vec<Workload>,
    /// Istio objects (WasmPlugin, EnvoyFilter, ...) as JSON, for checks that need them.
    pub extra: Vec<serde_json::Value>,
}

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// Adds (or replaces, by name) a namespace.
    pub fn add_namespace(&mut self, ns: Namespace) {
        let name = ns.metadata.name.clone().unwrap_or_default();
        self.namespaces.insert(name, ns);
    }

    /// Adds a NetworkPolicy, replacing one of the same name in the same namespace.
    pub fn add_network_policy(&mut self, np: NetworkPolicy) {
        let ns = namespace_of(&np.metadata);
        let list = self.network_policies.entry(ns).or_default();
        match list
            .iter_mut()
            .find(|p| p.metadata.name == np.metadata.name)
        {
            Some(existing) => *existing = np,
            None => list.push(np),
        }
    }

    pub fn add_workload(&mut self, w: Workload) {
        self.workloads.push(w);
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    /// Labels of a namespace, empty when the namespace is unknown.
    pub fn namespace_labels(&self, name: &str) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.namespaces
            .get(name)
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&EMPTY)
    }

    pub fn network_policies_in(&self, namespace: &str) -> &[NetworkPolicy] {
        self.network_policies
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Every namespace name the snapshot mentions: declared ones and those workloads sit in.
    pub fn namespace_names(&self) -> std::collections::BTreeSet<&str> {
        self.namespaces
            .keys()
            .map(String::as_str)
            .chain(self.workloads.iter().map(|w| w.namespace.as_str()))
            .collect()
    }
}

/// Which objects a run judged: sinks replace or resolve only what lies inside it, so a scan of
/// one namespace never clears another namespace's report or alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanScope {
    /// The whole cluster (or everything in the input) was judged.
    pub all_namespaces: bool,
    /// The namespaces judged.
    pub namespaces: BTreeSet<String>,
}

impl ScanScope {
    pub fn covers_namespace(&self, namespace: &str) -> bool {
        self.all_namespaces || self.namespaces.contains(namespace)
    }

    /// Cluster-scoped findings (a Namespace, the cluster itself) are only fully known when the
    /// whole cluster was judged.
    pub fn covers_cluster(&self) -> bool {
        self.all_namespaces
    }
}

/// Which mode produced the findings. Modes share the sinks but never replace or resolve each
/// other's records: a cluster scan cannot see the rules inside network namespaces, so its silence
/// about them must not clear what a node agent reported, and the other way round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origin {
    /// `scan` (files or `--cluster`) and `watch`: judge objects read from the API or files.
    #[default]
    Scan,
    /// `node`: judges the rules inside the network namespaces of one node's pods.
    Node { node: String },
}

impl Origin {
    /// The value of the `egress-guard.io/source` label on what this mode writes.
    pub fn source(&self) -> &'static str {
        match self {
            Origin::Scan => "scan",
            Origin::Node { .. } => "node",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_coverage() {
        let s = ScanScope {
            all_namespaces: false,
            namespaces: ["a".to_string()].into_iter().collect(),
        };
        assert!(s.covers_namespace("a"));
        assert!(!s.covers_namespace("b"));
        assert!(!s.covers_cluster());
    }
}
