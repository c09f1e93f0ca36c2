//! The pods a node agent judges: from a file (`kubectl get pods -o yaml`), or from the API server
//! (this node's pods, listed with `fieldSelector=spec.nodeName=NODE`).

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::discover::{Netns, NetnsOrigin};
use crate::kube_client::{connect, ApiContext, ConnectOptions, RetryPolicy};
use crate::metrics::Metrics;
use crate::snapshot::{Workload, WorkloadKind};
use crate::sources::files;

/// Pods by UID and by name, for matching namespaces to pods.
#[derive(Debug, Default)]
pub struct PodIndex {
    pods: Vec<Workload>,
    by_uid: BTreeMap<String, usize>,
}

impl PodIndex {
    /// Indexes the Pods among `workloads` (other kinds have no namespace of their own).
    pub fn new(workloads: Vec<Workload>) -> PodIndex {
        let pods: Vec<Workload> = workloads
            .into_iter()
            .filter(|w| w.kind == WorkloadKind::Pod)
            .collect();
        let by_uid = pods
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.meta.uid.as_ref().map(|u| (u.to_ascii_lowercase(), i)))
            .collect();
        PodIndex { pods, by_uid }
    }

    pub fn pods(&self) -> &[Workload] {
        &self.pods
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// The pod a namespace belongs to: by the cgroup pod UID; for a named namespace, by a name
    /// equal to the pod's UID, `NAMESPACE_NAME`, or the pod's name when that is unique.
    pub fn for_netns(&self, ns: &Netns) -> Option<&Workload> {
        match &ns.origin {
            NetnsOrigin::Pod { uid, .. } => self.by_uid.get(uid).map(|&i| &self.pods[i]),
            NetnsOrigin::Named { name } => {
                if let Some(&i) = self.by_uid.get(&name.to_ascii_lowercase()) {
                    return Some(&self.pods[i]);
                }
                if let Some(p) = self
                    .pods
                    .iter()
                    .find(|p| format!("{}_{}", p.namespace, p.name) == *name)
                {
                    return Some(p);
                }
                let mut by_name = self.pods.iter().filter(|p| p.name == *name);
                match (by_name.next(), by_name.next()) {
                    (Some(p), None) => Some(p),
                    _ => None,
                }
            }
        }
    }
}

/// Reads pods from a file (any form `scan` reads).
pub fn from_file(path: &Path) -> Result<PodIndex, Vec<String>> {
    files::load_paths(&[path.to_path_buf()])
        .map(|loaded| PodIndex::new(loaded.snapshot.workloads))
        .map_err(|errors| errors.iter().map(|e| e.to_string()).collect())
}

/// Lists this node's pods from the API server (kubeconfig, or the in-cluster ServiceAccount).
pub fn from_api(node_name: &str, connect_opts: &ConnectOptions) -> anyhow::Result<PodIndex> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = connect(connect_opts).await?;
        let ctx = ApiContext::new(client, RetryPolicy::default(), Metrics::new());
        let api: Api<Pod> = Api::all(ctx.client.clone());
        let params = ListParams::default().fields(&format!("spec.nodeName={node_name}"));
        let pods = ctx
            .list_all(
                &api,
                &params,
                500,
                "list the pods on this node",
                "pods",
                |p| Workload::from_pod(&p),
            )
            .await?;
        Ok(PodIndex::new(pods))
    })
}
