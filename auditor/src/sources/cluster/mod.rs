//! Reads a live cluster into a [`Snapshot`]: Namespaces, Pods, NetworkPolicies, the mesh
//! ConfigMap, and the Istio and Gateway API kinds of [`EXTRA_KINDS`] (WasmPlugins, EnvoyFilters,
//! ServiceEntries, Gateways; through the dynamic API, so the auditor does not need their types).
//!
//! Nothing is silently skipped: what the ServiceAccount may not read becomes an [`Unreadable`]
//! entry, which the pipeline (`cli::pipeline`) reports as a `scan-incomplete` finding. This module
//! only reads; judging happens there.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::kube_client::{ApiContext, ClusterError};
use crate::snapshot::{
    MeshConfig, ScanScope, Snapshot, Workload, WorkloadKind, MESH_CONFIG_NAME,
    MESH_CONFIG_NAMESPACE,
};

/// An Istio or Gateway API kind, read through the dynamic API so the auditor does not need
/// their types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
}

impl ExtraKind {
    pub fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }
}

/// The kinds that go to [`Snapshot::extra`]. A kind whose CRD is not installed reads as none.
/// ServiceEntry at `v1` (served from Istio 1.22; ambient needs 1.22 or later), Gateway at the
/// Gateway API's `v1` (from v1.0).
pub const EXTRA_KINDS: [ExtraKind; 4] = [
    ExtraKind {
        group: "extensions.istio.io",
        version: "v1alpha1",
        kind: "WasmPlugin",
        plural: "wasmplugins",
    },
    ExtraKind {
        group: "networking.istio.io",
        version: "v1alpha3",
        kind: "EnvoyFilter",
        plural: "envoyfilters",
    },
    ExtraKind {
        group: "networking.istio.io",
        version: "v1",
        kind: "ServiceEntry",
        plural: "serviceentries",
    },
    ExtraKind {
        group: "gateway.networking.k8s.io",
        version: "v1",
        kind: "Gateway",
        plural: "gateways",
    },
];

/// What to read.
#[derive(Debug, Clone)]
pub struct ClusterScanOptions {
    /// Only these namespaces; empty means all.
    pub namespaces: Vec<String>,
    /// Objects per list page.
    pub page_size: u32,
}

impl Default for ClusterScanOptions {
    fn default() -> Self {
        ClusterScanOptions {
            namespaces: Vec::new(),
            page_size: 500,
        }
    }
}

/// Something the scan could not read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreadable {
    /// Plural resource name, e.g. `pods`.
    pub resource: String,
    /// `None` for a cluster-wide read.
    pub namespace: Option<String>,
    /// HTTP status, when the API server answered.
    pub code: Option<u16>,
    pub message: String,
}

impl Unreadable {
    fn from_error(resource: &str, namespace: Option<&str>, e: &ClusterError) -> Unreadable {
        Unreadable {
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// A cluster read into a snapshot.
#[derive(Debug, Clone)]
pub struct ClusterSnapshot {
    pub snapshot: Snapshot,
    pub unreadable: Vec<Unreadable>,
    pub scope: ScanScope,
}

/// A cluster read with each pod handed to the caller as its page arrives: `pods` holds what the
/// caller made of them, and the snapshot holds no workloads.
#[derive(Debug, Clone)]
pub struct ClusterRead<T> {
    pub snapshot: Snapshot,
    pub pods: Vec<T>,
    pub unreadable: Vec<Unreadable>,
    pub scope: ScanScope,
}

/// Managed fields are large and never judged: drop them as objects arrive.
fn strip<K: kube::Resource>(mut obj: K) -> K {
    obj.meta_mut().managed_fields = None;
    obj
}

/// A Pod as a [`Workload`], moving its parts rather than copying them.
pub fn pod_workload(pod: Pod) -> Option<Workload> {
    let mut pod = strip(pod);
    let spec = pod.spec.take()?;
    let namespace = crate::snapshot::namespace_of(&pod.metadata);
    Some(Workload {
        kind: WorkloadKind::Pod,
        namespace,
        name: pod.metadata.name.clone().unwrap_or_default(),
        meta: pod.metadata,
        spec,
        status: pod.status,
    })
}

/// A dynamic object as the JSON the checks read (`apiVersion` and `kind` always set).
pub fn dynamic_json(mut obj: DynamicObject, ar: &ApiResource) -> Value {
    obj.metadata.managed_fields = None;
    if obj.types.is_none() {
        obj.types = Some(kube::api::TypeMeta {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        });
    }
    serde_json::to_value(&obj).unwrap_or(Value::Null)
}

/// Reads everything the checks need, every pod into the snapshot.
pub async fn read_snapshot(
    ctx: &ApiContext,
    opts: &ClusterScanOptions,
) -> Result<ClusterSnapshot, ClusterError> {
    let read = read_cluster(ctx, opts, Some).await?;
    let mut snapshot = read.snapshot;
    snapshot.workloads = read.pods;
    Ok(ClusterSnapshot {
        snapshot,
        unreadable: read.unreadable,
        scope: read.scope,
    })
}

/// Reads everything the checks need; each pod goes through `pod` as soon as its page has been
/// read, so a caller that keeps less than the pod keeps memory flat. Namespaces are read before
/// pods; NetworkPolicies, the Istio objects and the mesh config after them. When a list has to
/// start again (its continue token expired), what `pod` made of the first pages is dropped and
/// every pod comes through again.
pub async fn read_cluster<T>(
    ctx: &ApiContext,
    opts: &ClusterScanOptions,
    mut pod: impl FnMut(Workload) -> Option<T>,
) -> Result<ClusterRead<T>, ClusterError> {
    let mut unreadable = Vec::new();
    let client = ctx.client.clone();
    let page = opts.page_size.max(1);
    let all = opts.namespaces.is_empty();

    let namespaces: Vec<Namespace> = if all {
        let api: Api<Namespace> = Api::all(client.clone());
        match ctx
            .list_all(
                &api,
                &ListParams::default(),
                page,
                "list namespaces",
                "namespaces",
                |n| Some(strip(n)),
            )
            .await
        {
            Ok(v) => v,
            Err(e) if e.is_forbidden() => {
                unreadable.push(Unreadable::from_error("namespaces", None, &e));
                Vec::new()
            }
            Err(e) => return Err(e),
        }
    } else {
        let api: Api<Namespace> = Api::all(client.clone());
        let mut out = Vec::new();
        for ns in &opts.namespaces {
            let params = ListParams::default().fields(&format!("metadata.name={ns}"));
            match ctx
                .list_all(
                    &api,
                    &params,
                    page,
                    &format!("read namespace {ns}"),
                    "namespaces",
                    |n| Some(strip(n)),
                )
                .await
            {
                Ok(v) if v.is_empty() => unreadable.push(Unreadable {
                    resource: "namespaces".into(),
                    namespace: Some(ns.clone()),
                    code: Some(404),
                    message: format!("namespace {ns} does not exist"),
                }),
                Ok(v) => out.extend(v),
                Err(e) if e.is_forbidden() => {
                    unreadable.push(Unreadable::from_error("namespaces", Some(ns), &e))
                }
                Err(e) => return Err(e),
            }
        }
        out
    };
    let scope_namespaces: Vec<String> = if all {
        namespaces
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect()
    } else {
        opts.namespaces.clone()
    };
    let reader = NamespacedReader {
        ctx,
        all,
        namespaces: &scope_namespaces,
        page,
    };

    let pods = reader
        .read(
            "pods",
            false,
            &mut unreadable,
            |ns| match ns {
                Some(ns) => Api::<Pod>::namespaced(client.clone(), ns),
                None => Api::<Pod>::all(client.clone()),
            },
            |p| pod_workload(p).and_then(&mut pod),
        )
        .await?;
    let network_policies = reader
        .read(
            "networkpolicies",
            false,
            &mut unreadable,
            |ns| match ns {
                Some(ns) => Api::<NetworkPolicy>::namespaced(client.clone(), ns),
                None => Api::<NetworkPolicy>::all(client.clone()),
            },
            |np| Some(strip(np)),
        )
        .await?;
    let mut extra = Vec::new();
    for kind in EXTRA_KINDS {
        let ar = kind.resource();
        let objects = reader
            .read(
                kind.plural,
                true,
                &mut unreadable,
                |ns| match ns {
                    Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
                    None => Api::<DynamicObject>::all_with(client.clone(), &ar),
                },
                |o| Some(dynamic_json(o, &ar)),
            )
            .await?;
        extra.extend(objects);
    }

    let mut snapshot = Snapshot::new();
    for ns in namespaces {
        snapshot.add_namespace(ns);
    }
    for np in network_policies {
        snapshot.add_network_policy(np);
    }
    snapshot.extra = extra;
    match read_mesh_config(ctx, page).await {
        Ok(mesh) => snapshot.mesh = mesh,
        Err(u) => unreadable.push(u),
    }

    let scope = ScanScope {
        all_namespaces: all,
        namespaces: scope_namespaces.into_iter().collect::<BTreeSet<_>>(),
    };
    Ok(ClusterRead {
        snapshot,
        pods,
        unreadable,
        scope,
    })
}

/// The mesh ConfigMap (`istio` in `istio-system`), read with a list + field selector so the same
/// `list`/`watch` permission serves scan and watch modes. `Ok(None)` when it does not exist.
async fn read_mesh_config(ctx: &ApiContext, page: u32) -> Result<Option<MeshConfig>, Unreadable> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), MESH_CONFIG_NAMESPACE);
    let params = ListParams::default().fields(&format!("metadata.name={MESH_CONFIG_NAME}"));
    let maps = ctx
        .list_all(
            &api,
            &params,
            page,
            "read the mesh ConfigMap",
            "configmaps",
            Some,
        )
        .await
        .map_err(|e| Unreadable::from_error("configmaps", Some(MESH_CONFIG_NAMESPACE), &e))?;
    match maps.first() {
        None => Ok(None),
        Some(cm) => MeshConfig::from_config_map(cm)
            .map(Some)
            .map_err(|e| Unreadable {
                resource: "configmaps".into(),
                namespace: Some(MESH_CONFIG_NAMESPACE.into()),
                code: None,
                message: format!("mesh config {MESH_CONFIG_NAMESPACE}/{MESH_CONFIG_NAME}: {e}"),
            }),
    }
}

/// Lists a namespaced kind cluster-wide, or per namespace when the scan is restricted or the
/// ServiceAccount may not list cluster-wide.
struct NamespacedReader<'a> {
    ctx: &'a ApiContext,
    all: bool,
    namespaces: &'a [String],
    page: u32,
}

impl NamespacedReader<'_> {
    /// `optional`: the kind is a CRD that may not be installed (404 means "none").
    async fn read<K, T>(
        &self,
        resource: &str,
        optional: bool,
        unreadable: &mut Vec<Unreadable>,
        api: impl Fn(Option<&str>) -> Api<K>,
        mut convert: impl FnMut(K) -> Option<T>,
    ) -> Result<Vec<T>, ClusterError>
    where
        K: Clone + DeserializeOwned + Debug,
    {
        let params = ListParams::default();
        if self.all {
            let what = format!("list {resource} in all namespaces");
            match self
                .ctx
                .list_all(
                    &api(None),
                    &params,
                    self.page,
                    &what,
                    resource,
                    &mut convert,
                )
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) if e.is_not_found() && optional => return Ok(Vec::new()),
                // Permission may exist per namespace (RoleBindings): try each one below, so the
                // namespaces that are readable are still judged and the others are named.
                Err(e) if e.is_forbidden() => {
                    tracing::info!(
                        resource,
                        "cluster-wide list forbidden, listing namespace by namespace"
                    );
                    if self.namespaces.is_empty() {
                        unreadable.push(Unreadable::from_error(resource, None, &e));
                        return Ok(Vec::new());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let mut out = Vec::new();
        for ns in self.namespaces {
            let what = format!("list {resource} in namespace {ns}");
            match self
                .ctx
                .list_all(
                    &api(Some(ns)),
                    &params,
                    self.page,
                    &what,
                    resource,
                    &mut convert,
                )
                .await
            {
                Ok(v) => out.extend(v),
                Err(e) if e.is_not_found() && optional => {}
                Err(e) if e.is_forbidden() || e.is_not_found() => {
                    unreadable.push(Unreadable::from_error(resource, Some(ns), &e));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}
