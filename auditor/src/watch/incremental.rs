//! Watch mode's judgement, re-judging only what a change affects.
//!
//! [`Incremental`] keeps, per pod (by namespace and name), the `resourceVersion` and uid it was
//! judged at and what was judged from it: the findings of the workload-only rules, its
//! [`WorkloadFacts`], the findings of the namespace-dependent rules and its
//! `sidecar-not-running` answer. At each judgement a pod whose version is unchanged reuses its
//! entry (nothing is copied out of the store); a new or changed pod is converted and judged;
//! entries of pods that are gone are dropped.
//!
//! The namespace-dependent rules ([`checks::check_workload_in_context`]) read the pod's facts
//! and its namespace object (labels, and whether it exists). They run again for an unchanged
//! pod when its namespace's version changed, and for every pod when a cluster-wide input changed
//! (any Istio or Gateway API object, the mesh ConfigMap). Those rules do not read the
//! cluster-wide inputs today; re-running them then keeps the cache right should they start to.
//!
//! The cluster-wide rules ([`checks::check_cluster_wide`], `egress-filter-missing`) run over the
//! cached facts every time: they are cheap. Only egress gateway pods are kept whole, for
//! `egress-filter-missing`, and pods whose `sidecar-not-running` answer depends on the time (a
//! proxy that runs but is not ready may still be in its start-up grace), which is judged again
//! each time.
//!
//! The result is the same, finding for finding and in the same order, as
//! [`pipeline::judge`] over a full snapshot of the same objects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::checks::live::{self, LiveCheckOptions};
use crate::checks::{self, CheckOptions, WorkloadFacts};
use crate::cli::pipeline::{self, ClusterScan};
use crate::finding::Finding;
use crate::istio;
use crate::snapshot::{
    MeshConfig, ScanScope, Snapshot, Workload, DEFAULT_NAMESPACE, MESH_CONFIG_NAME,
    MESH_CONFIG_NAMESPACE,
};
use crate::sources::cluster::{pod_workload, Unreadable};

/// What the stores hold at one moment, shared with them (no object is copied).
#[derive(Debug, Clone, Default)]
pub(crate) struct Objects {
    pub namespaces: Vec<Arc<Namespace>>,
    pub network_policies: Vec<Arc<NetworkPolicy>>,
    pub pods: Vec<Arc<Pod>>,
    /// The mesh ConfigMap, when it exists.
    pub mesh: Option<Arc<ConfigMap>>,
    /// The Istio and Gateway API objects, as [`Snapshot::extra`] holds them.
    pub extra: Vec<Value>,
}

impl Objects {
    /// A snapshot of everything but the pods, and what could not be read (a mesh config that
    /// does not parse).
    pub fn cluster_snapshot(&self) -> (Snapshot, Vec<Unreadable>) {
        let mut snapshot = Snapshot::new();
        let mut unreadable = Vec::new();
        for ns in &self.namespaces {
            snapshot.add_namespace((**ns).clone());
        }
        for np in &self.network_policies {
            snapshot.add_network_policy((**np).clone());
        }
        snapshot.extra = self.extra.clone();
        if let Some(cm) = &self.mesh {
            match MeshConfig::from_config_map(cm) {
                Ok(mesh) => snapshot.mesh = Some(mesh),
                Err(e) => unreadable.push(Unreadable {
                    resource: "configmaps".into(),
                    namespace: Some(MESH_CONFIG_NAMESPACE.into()),
                    code: None,
                    message: format!("mesh config {MESH_CONFIG_NAMESPACE}/{MESH_CONFIG_NAME}: {e}"),
                }),
            }
        }
        (snapshot, unreadable)
    }

    /// The full snapshot a one-shot judgement reads: [`Objects::cluster_snapshot`] plus every
    /// pod, in namespace and name order.
    #[cfg(test)]
    pub fn snapshot(&self) -> (Snapshot, Vec<Unreadable>) {
        let (mut snapshot, unreadable) = self.cluster_snapshot();
        snapshot.workloads = self
            .pods
            .iter()
            .filter_map(|p| pod_workload((**p).clone()))
            .collect();
        snapshot
            .workloads
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        (snapshot, unreadable)
    }
}

/// What one judgement judged again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Pods converted and judged (every rule) because they were new or had changed.
    pub rejudged: usize,
    /// Unchanged pods whose namespace-dependent rules ran again.
    pub context_rejudged: usize,
    /// Entries dropped because their pod is gone.
    pub dropped: usize,
}

/// Which version of an object was judged. Without a `resourceVersion` (not read from an API
/// server) an object never counts as unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    uid: Option<String>,
    resource_version: Option<String>,
}

impl Version {
    fn of(meta: &ObjectMeta) -> Version {
        Version {
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        }
    }

    fn matches(&self, meta: &ObjectMeta) -> bool {
        self.resource_version.is_some()
            && self.resource_version == meta.resource_version
            && self.uid == meta.uid
    }
}

/// `sidecar-not-running` for one pod.
#[derive(Debug, Clone)]
enum SidecarAnswer {
    /// The answer does not depend on the time.
    Judged(Option<Finding>),
    /// It may (see [`answer_depends_on_time`]): judged again each time from the kept workload.
    EachTime,
}

/// What was judged from one pod.
#[derive(Debug)]
struct Entry {
    version: Version,
    /// The judgement that last saw the pod.
    pass: u64,
    /// Index of its facts in [`Incremental::facts`].
    slot: usize,
    local: Vec<Finding>,
    in_context: Vec<Finding>,
    sidecar: SidecarAnswer,
    /// Matches the egress gateway selector (`egress-filter-missing` reads the workload).
    gateway: bool,
    /// Kept for gateway pods and for [`SidecarAnswer::EachTime`]; `None` for the others. Boxed:
    /// a `Workload` is over 2 KiB inline, which every entry would otherwise carry.
    workload: Option<Box<Workload>>,
}

/// The cache across judgements.
#[derive(Debug, Default)]
pub(crate) struct Incremental {
    /// The options the entries were judged with; different options start afresh.
    checks: Option<CheckOptions>,
    /// The live options, with `now` left out.
    live: Option<LiveCheckOptions>,
    /// Entries by namespace, then name (the order of a snapshot's workloads).
    pods: BTreeMap<String, BTreeMap<String, Entry>>,
    entries: usize,
    /// Every entry's facts, in no particular order (the cluster-wide rules take a slice), and
    /// whose they are.
    facts: Vec<WorkloadFacts>,
    owners: Vec<(String, String)>,
    /// The version of each namespace at the last judgement.
    namespaces: BTreeMap<String, Version>,
    /// The cluster-wide inputs at the last judgement (see [`cluster_inputs`]).
    cluster: Option<Vec<String>>,
    pass: u64,
}

fn namespace_str(meta: &ObjectMeta) -> &str {
    meta.namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// The identity and version of every cluster-wide input, sorted (store order does not matter).
/// An object without a `resourceVersion` is described by its whole content.
fn cluster_inputs(objects: &Objects) -> Vec<String> {
    let mut out: Vec<String> = objects
        .extra
        .iter()
        .map(|o| {
            let meta = &o["metadata"];
            match meta["resourceVersion"].as_str() {
                Some(rv) => format!(
                    "{} {} {}/{} {} {rv}",
                    o["apiVersion"].as_str().unwrap_or(""),
                    o["kind"].as_str().unwrap_or(""),
                    meta["namespace"].as_str().unwrap_or(""),
                    meta["name"].as_str().unwrap_or(""),
                    meta["uid"].as_str().unwrap_or(""),
                ),
                None => o.to_string(),
            }
        })
        .collect();
    out.sort();
    out.push(match &objects.mesh {
        None => "no mesh config".to_string(),
        Some(cm) => match &cm.metadata.resource_version {
            Some(rv) => format!(
                "mesh config {} {rv}",
                cm.metadata.uid.as_deref().unwrap_or("")
            ),
            None => format!("mesh config {:?}", cm.data),
        },
    });
    out
}

/// Whether `sidecar-not-running` may answer differently later for the same pod: only for an
/// `istio-proxy` that runs, is not ready and has a start time (it may be warming up). Wider
/// than the rule itself (either status list), never narrower.
fn answer_depends_on_time(w: &Workload) -> bool {
    let Some(status) = &w.status else {
        return false;
    };
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .filter(|s| s.name == istio::PROXY_CONTAINER)
        .any(|s| {
            !s.ready
                && s.state
                    .as_ref()
                    .and_then(|st| st.running.as_ref())
                    .is_some_and(|r| r.started_at.is_some())
        })
}

fn is_gateway(w: &Workload, live: &LiveCheckOptions) -> bool {
    let labels = w.labels();
    live.egress_gateway_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

impl Incremental {
    pub fn new() -> Incremental {
        Incremental::default()
    }

    /// Judges the objects, re-judging what changed since the last call. `unreadable`: what the
    /// watches could not read; `scope`: the watched namespaces (all of them when
    /// `all_namespaces`, filled in from the namespaces present).
    pub fn judge(
        &mut self,
        objects: &Objects,
        unreadable: &[Unreadable],
        scope: &ScanScope,
        checks_opts: &CheckOptions,
        live_opts: &LiveCheckOptions,
    ) -> (ClusterScan, Stats) {
        let (mut cluster, mut all_unreadable) = objects.cluster_snapshot();
        all_unreadable.extend(unreadable.iter().cloned());
        let mut scope = scope.clone();
        if scope.all_namespaces {
            scope.namespaces = cluster.namespaces.keys().cloned().collect();
        }

        let live_key = LiveCheckOptions {
            now: jiff::Timestamp::UNIX_EPOCH,
            ..live_opts.clone()
        };
        if self.checks.as_ref() != Some(checks_opts) || self.live.as_ref() != Some(&live_key) {
            *self = Incremental {
                checks: Some(checks_opts.clone()),
                live: Some(live_key),
                pass: self.pass,
                ..Incremental::default()
            };
        }

        // What the namespace-dependent rules read besides the pod.
        let namespaces: BTreeMap<String, Version> = objects
            .namespaces
            .iter()
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    Version::of(&n.metadata),
                )
            })
            .collect();
        let changed_namespaces: BTreeSet<&str> = namespaces
            .iter()
            .filter(|(name, v)| {
                let before = self.namespaces.get(*name);
                !(v.resource_version.is_some() && before == Some(*v))
            })
            .map(|(name, _)| name.as_str())
            .chain(
                self.namespaces
                    .keys()
                    .filter(|name| !namespaces.contains_key(*name))
                    .map(String::as_str),
            )
            .collect();
        let cluster_inputs = cluster_inputs(objects);
        let rerun_all = self.cluster.as_ref() != Some(&cluster_inputs);

        self.pass += 1;
        let pass = self.pass;
        let mut stats = Stats::default();
        let mut seen = 0usize;
        let Incremental {
            pods,
            entries,
            facts,
            owners,
            ..
        } = self;
        for pod in &objects.pods {
            if pod.spec.is_none() {
                // Not a workload (pod_workload gives none).
                continue;
            }
            let ns = namespace_str(&pod.metadata);
            let name = pod.metadata.name.as_deref().unwrap_or("");
            if let Some(e) = pods.get_mut(ns).and_then(|m| m.get_mut(name)) {
                if e.pass == pass {
                    // The same pod twice (overlapping watches): judged once.
                    continue;
                }
                if e.version.matches(&pod.metadata) {
                    e.pass = pass;
                    seen += 1;
                    if rerun_all || changed_namespaces.contains(ns) {
                        e.in_context = checks::check_workload_in_context(
                            &cluster,
                            checks_opts,
                            &facts[e.slot],
                        );
                        e.in_context.shrink_to_fit();
                        stats.context_rejudged += 1;
                    }
                    continue;
                }
            }
            let Some(w) = pod_workload((**pod).clone()) else {
                continue;
            };
            stats.rejudged += 1;
            seen += 1;
            // Kept in the cache: without room for more (see pipeline::scan_cluster).
            let mut local = checks::check_workload_local(checks_opts, &w);
            local.shrink_to_fit();
            let f = WorkloadFacts::of(&w);
            let mut in_context = checks::check_workload_in_context(&cluster, checks_opts, &f);
            in_context.shrink_to_fit();
            let sidecar = if answer_depends_on_time(&w) {
                SidecarAnswer::EachTime
            } else {
                SidecarAnswer::Judged(live::sidecar_not_running(&w, live_opts))
            };
            let gateway = is_gateway(&w, live_opts);
            let keep = gateway || matches!(sidecar, SidecarAnswer::EachTime);
            let version = Version::of(&w.meta);
            let by_name = pods.entry(w.namespace.clone()).or_default();
            let slot = match by_name.get(&w.name) {
                Some(old) => {
                    facts[old.slot] = f;
                    old.slot
                }
                None => {
                    facts.push(f);
                    owners.push((w.namespace.clone(), w.name.clone()));
                    *entries += 1;
                    facts.len() - 1
                }
            };
            let name = w.name.clone();
            by_name.insert(
                name,
                Entry {
                    version,
                    pass,
                    slot,
                    local,
                    in_context,
                    sidecar,
                    gateway,
                    workload: keep.then(|| Box::new(w)),
                },
            );
        }
        if seen < *entries {
            stats.dropped = self.drop_unseen(pass);
        }
        self.namespaces = namespaces;
        self.cluster = Some(cluster_inputs);

        // Assembled in the order of pipeline::judge over a full snapshot, so that findings the
        // sort leaves tied come out the same.
        let mut findings = Vec::new();
        for e in self.pods.values().flat_map(BTreeMap::values) {
            findings.extend(e.local.iter().cloned());
            findings.extend(e.in_context.iter().cloned());
        }
        findings.extend(checks::check_cluster_wide(
            &cluster,
            checks_opts,
            &self.facts,
        ));
        let mut live_opts = live_opts.clone();
        if !scope.all_namespaces && !scope.namespaces.contains(&live_opts.root_namespace) {
            live_opts.report_absent_gateway = false;
        }
        for e in self.pods.values().flat_map(BTreeMap::values) {
            match &e.sidecar {
                SidecarAnswer::Judged(f) => findings.extend(f.iter().cloned()),
                SidecarAnswer::EachTime => findings.extend(
                    e.workload
                        .as_ref()
                        .and_then(|w| live::sidecar_not_running(w, &live_opts)),
                ),
            }
        }
        cluster.workloads = self
            .pods
            .values()
            .flat_map(BTreeMap::values)
            .filter(|e| e.gateway)
            .filter_map(|e| e.workload.as_deref().cloned())
            .collect();
        findings.extend(live::egress_filter_missing(&cluster, &live_opts));
        findings.extend(all_unreadable.iter().map(pipeline::scan_incomplete));
        checks::sort_findings(&mut findings);
        let scan = ClusterScan {
            findings,
            unreadable: all_unreadable,
            scope,
            workloads: self.entries,
        };
        (scan, stats)
    }

    /// Drops the entries the judgement `pass` did not see; returns how many.
    fn drop_unseen(&mut self, pass: u64) -> usize {
        let gone: Vec<(String, String)> = self
            .pods
            .iter()
            .flat_map(|(ns, m)| {
                m.iter()
                    .filter(|(_, e)| e.pass != pass)
                    .map(move |(name, _)| (ns.clone(), name.clone()))
            })
            .collect();
        for (ns, name) in &gone {
            let Some(by_name) = self.pods.get_mut(ns) else {
                continue;
            };
            let Some(entry) = by_name.remove(name) else {
                continue;
            };
            if by_name.is_empty() {
                self.pods.remove(ns);
            }
            self.entries -= 1;
            let slot = entry.slot;
            self.facts.swap_remove(slot);
            self.owners.swap_remove(slot);
            if let Some((moved_ns, moved_name)) = self.owners.get(slot) {
                if let Some(moved) = self
                    .pods
                    .get_mut(moved_ns)
                    .and_then(|m| m.get_mut(moved_name))
                {
                    moved.slot = slot;
                }
            }
        }
        gone.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{
        EGRESS_FILTER_MISSING, EGRESS_WAYPOINT_MISSING, OUTBOUND_ALLOW_ANY, SIDECAR_MISSING,
        SIDECAR_NOT_RUNNING, SIDECAR_OPT_OUT,
    };
    use serde_json::json;

    /// An API server double in memory: objects with a uid and a resourceVersion that moves on
    /// with every write, as the watches deliver them.
    struct Cluster {
        rv: u64,
        namespaces: BTreeMap<String, Namespace>,
        network_policies: Vec<NetworkPolicy>,
        pods: BTreeMap<(String, String), Pod>,
        mesh: Option<ConfigMap>,
        extra: BTreeMap<(String, String, String), Value>,
    }

    impl Cluster {
        fn empty() -> Cluster {
            Cluster {
                rv: 100,
                namespaces: BTreeMap::new(),
                network_policies: Vec::new(),
                pods: BTreeMap::new(),
                mesh: None,
                extra: BTreeMap::new(),
            }
        }

        /// The objects of `tests/data/cluster/objects.json` (shop and payments injected, legacy
        /// unlabelled, an egress gateway and its WasmPlugin), plus an ambient namespace.
        fn repo() -> Cluster {
            let text = include_str!("../../tests/data/cluster/objects.json");
            let list: Value = serde_json::from_str(text).expect("objects.json");
            let mut c = Cluster::empty();
            for o in list["items"].as_array().expect("items") {
                c.apply(o.clone());
            }
            c.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mesh-ambient", "labels": {"istio.io/dataplane-mode": "ambient"}}}));
            for (name, labels) in [
                ("app-a", json!({"app": "a"})),
                (
                    "app-b",
                    json!({"app": "b", "istio.io/dataplane-mode": "none"}),
                ),
            ] {
                c.apply(json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": "mesh-ambient", "labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "img"}]},
                    "status": {"phase": "Running"}}));
            }
            c
        }

        fn stamp(&mut self, meta: &mut ObjectMeta) {
            self.rv += 1;
            meta.resource_version = Some(self.rv.to_string());
            if meta.uid.is_none() {
                meta.uid = Some(format!("uid-{}", self.rv));
            }
        }

        /// Creates or replaces an object (keeping its uid).
        fn apply(&mut self, mut o: Value) {
            let kind = o["kind"].as_str().unwrap_or("").to_string();
            let ns = o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
            match kind.as_str() {
                "Namespace" => {
                    let mut n: Namespace = serde_json::from_value(o).expect("namespace");
                    n.metadata.uid = self
                        .namespaces
                        .get(&name)
                        .and_then(|p| p.metadata.uid.clone());
                    self.stamp(&mut n.metadata);
                    self.namespaces.insert(name, n);
                }
                "Pod" => {
                    let mut p: Pod = serde_json::from_value(o).expect("pod");
                    let key = (ns, name);
                    p.metadata.uid = self.pods.get(&key).and_then(|p| p.metadata.uid.clone());
                    self.stamp(&mut p.metadata);
                    self.pods.insert(key, p);
                }
                "NetworkPolicy" => {
                    let mut np: NetworkPolicy = serde_json::from_value(o).expect("policy");
                    self.stamp(&mut np.metadata);
                    self.network_policies.push(np);
                }
                "ConfigMap" => {
                    let mut cm: ConfigMap = serde_json::from_value(o).expect("config map");
                    cm.metadata.uid = self.mesh.as_ref().and_then(|m| m.metadata.uid.clone());
                    self.stamp(&mut cm.metadata);
                    self.mesh = Some(cm);
                }
                _ => {
                    self.rv += 1;
                    let key = (kind, ns, name);
                    let uid = self
                        .extra
                        .get(&key)
                        .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_string))
                        .unwrap_or_else(|| format!("uid-{}", self.rv));
                    o["metadata"]["uid"] = json!(uid);
                    o["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                    self.extra.insert(key, o);
                }
            }
        }

        fn pod(&self, ns: &str, name: &str) -> Value {
            serde_json::to_value(&self.pods[&(ns.to_string(), name.to_string())]).expect("pod")
        }

        fn namespace(&self, name: &str) -> Value {
            serde_json::to_value(&self.namespaces[name]).expect("namespace")
        }

        fn delete_pod(&mut self, ns: &str, name: &str) {
            self.pods.remove(&(ns.to_string(), name.to_string()));
        }

        /// What the stores would hold: pods in no particular order (a store's is arbitrary).
        fn objects(&self) -> Objects {
            let mut pods: Vec<Arc<Pod>> = self.pods.values().cloned().map(Arc::new).collect();
            pods.reverse();
            Objects {
                namespaces: self.namespaces.values().cloned().map(Arc::new).collect(),
                network_policies: self
                    .network_policies
                    .iter()
                    .cloned()
                    .map(Arc::new)
                    .collect(),
                pods,
                mesh: self.mesh.clone().map(Arc::new),
                extra: self.extra.values().cloned().collect(),
            }
        }

        fn pods_in(&self, ns: &str) -> usize {
            self.pods.keys().filter(|(n, _)| n == ns).count()
        }
    }

    fn now(at: &str) -> LiveCheckOptions {
        LiveCheckOptions {
            now: at.parse().expect("timestamp"),
            ..LiveCheckOptions::default()
        }
    }

    fn all() -> ScanScope {
        ScanScope {
            all_namespaces: true,
            namespaces: BTreeSet::new(),
        }
    }

    /// Judges incrementally and asserts the result is the full judgement's.
    fn judge_both(
        inc: &mut Incremental,
        cluster: &Cluster,
        scope: &ScanScope,
        live: &LiveCheckOptions,
    ) -> (ClusterScan, Stats) {
        let objects = cluster.objects();
        let watch_errors = [Unreadable {
            resource: "wasmplugins".into(),
            namespace: Some("legacy".into()),
            code: Some(403),
            message: "forbidden".into(),
        }];
        let checks = CheckOptions::default();
        let (scan, stats) = inc.judge(&objects, &watch_errors, scope, &checks, live);
        let (snapshot, mut unreadable) = objects.snapshot();
        unreadable.extend(watch_errors);
        let full = pipeline::judge(&snapshot, &unreadable, scan.scope.clone(), &checks, live);
        assert_eq!(scan.findings, full.findings);
        assert_eq!(scan.workloads, full.workloads);
        assert_eq!(scan.unreadable, full.unreadable);
        assert_eq!(scan.scope, full.scope);
        (scan, stats)
    }

    fn has(scan: &ClusterScan, rule: &str, name: &str) -> bool {
        scan.findings
            .iter()
            .any(|f| f.rule == rule && f.name == name)
    }

    const T0: &str = "2025-06-01T12:00:00Z";

    #[test]
    fn first_judgement_judges_every_pod_and_then_none() {
        let cluster = Cluster::repo();
        let mut inc = Incremental::new();
        let (scan, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(stats.rejudged, cluster.pods.len());
        assert_eq!(scan.workloads, cluster.pods.len());
        assert!(has(&scan, SIDECAR_MISSING, "web-2"));
        assert!(scan.findings.iter().any(|f| f.rule == "scan-incomplete"));
        let (_, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(stats, Stats::default());
    }

    #[test]
    fn a_changed_pod_is_the_only_one_judged_again() {
        let mut cluster = Cluster::repo();
        let mut inc = Incremental::new();
        judge_both(&mut inc, &cluster, &all(), &now(T0));
        let mut web2 = cluster.pod("shop", "web-2");
        web2["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"});
        cluster.apply(web2);
        let (scan, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(
            stats,
            Stats {
                rejudged: 1,
                ..Stats::default()
            }
        );
        assert!(has(&scan, SIDECAR_OPT_OUT, "web-2"));
        assert!(!has(&scan, SIDECAR_MISSING, "web-2"));
        // A new pod in a namespace with an egress policy: judged, and counted by the policy rule.
        let mut pod = cluster.pod("shop", "web-2");
        pod["metadata"] = json!({"name": "web-3", "namespace": "shop", "labels": {"app": "other"}});
        cluster.apply(pod);
        let (_, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(stats.rejudged, 1);
    }

    #[test]
    fn a_namespace_label_reruns_only_that_namespaces_rules() {
        let mut cluster = Cluster::repo();
        let mut inc = Incremental::new();
        let (before, _) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert!(has(&before, SIDECAR_MISSING, "web-2"));
        let mut shop = cluster.namespace("shop");
        shop["metadata"]["labels"]
            .as_object_mut()
            .expect("labels")
            .remove("istio-injection");
        cluster.apply(shop);
        let (scan, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(
            stats,
            Stats {
                context_rejudged: cluster.pods_in("shop"),
                ..Stats::default()
            }
        );
        assert!(!has(&scan, SIDECAR_MISSING, "web-2"));
        // Into ambient mode: the ambient rules judge shop's pods now.
        let mut shop = cluster.namespace("shop");
        shop["metadata"]["labels"]["istio.io/dataplane-mode"] = json!("ambient");
        cluster.apply(shop);
        let (_, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(stats.context_rejudged, cluster.pods_in("shop"));
        // A namespace that goes away, then comes back.
        let legacy = cluster.namespace("legacy");
        cluster.namespaces.remove("legacy");
        let (_, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(stats.context_rejudged, cluster.pods_in("legacy"));
        cluster.apply(legacy);
        let (_, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(stats.context_rejudged, cluster.pods_in("legacy"));
    }

    #[test]
    fn a_deleted_pods_findings_vanish() {
        let mut cluster = Cluster::repo();
        let mut inc = Incremental::new();
        let (before, _) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert!(before.findings.iter().any(|f| f.name == "crashy"));
        cluster.delete_pod("shop", "crashy");
        cluster.delete_pod("shop", "web-1");
        let (scan, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(
            stats,
            Stats {
                dropped: 2,
                ..Stats::default()
            }
        );
        assert!(!scan.findings.iter().any(|f| f.name == "crashy"));
        assert_eq!(scan.workloads, before.workloads - 2);
        // The entries left still hold their own facts: a namespace change re-runs the namespace
        // rules from them, and changed pods replace them.
        let mut payments = cluster.namespace("payments");
        payments["metadata"]["labels"] = json!({"istio.io/dataplane-mode": "ambient"});
        cluster.apply(payments);
        let mut shop = cluster.namespace("shop");
        shop["metadata"]["labels"] = json!({"istio.io/dataplane-mode": "ambient"});
        cluster.apply(shop);
        for (ns, name) in [("shop", "web-2"), ("payments", "debug")] {
            let mut pod = cluster.pod(ns, name);
            pod["metadata"]["labels"]["changed"] = json!("yes");
            cluster.apply(pod);
        }
        let (_, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(stats.rejudged, 2);
        assert_eq!(
            stats.context_rejudged,
            cluster.pods_in("shop") + cluster.pods_in("payments") - 2
        );
        // The egress gateway goes: egress-filter-missing reports that none is left.
        cluster.delete_pod("istio-system", "istio-egressgateway-7d9f6c");
        let (scan, _) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert!(has(&scan, EGRESS_FILTER_MISSING, "cluster"));
        // Every pod gone.
        cluster.pods.clear();
        let (scan, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(scan.workloads, 0);
        assert_eq!(stats.dropped, before.workloads - 3);
    }

    #[test]
    fn a_cluster_wide_input_reruns_every_pods_namespace_rules() {
        let mut cluster = Cluster::repo();
        let mut inc = Incremental::new();
        let (before, _) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert!(!has(&before, OUTBOUND_ALLOW_ANY, MESH_CONFIG_NAME));
        let mut mesh = serde_json::to_value(cluster.mesh.as_ref().expect("mesh")).expect("cm");
        mesh["data"]["mesh"] = json!("outboundTrafficPolicy:\n  mode: ALLOW_ANY\n");
        cluster.apply(mesh.clone());
        let (scan, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(
            stats,
            Stats {
                context_rejudged: cluster.pods.len(),
                ..Stats::default()
            }
        );
        assert!(has(&scan, OUTBOUND_ALLOW_ANY, MESH_CONFIG_NAME));

        // A waypoint, and an external ServiceEntry bound to it without the egress filter.
        cluster.apply(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "waypoint", "namespace": "mesh-ambient", "labels": {"istio.io/waypoint-for": "service"}},
            "spec": {"gatewayClassName": "istio-waypoint"}}));
        cluster.apply(json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": "api", "namespace": "mesh-ambient", "labels": {"istio.io/use-waypoint": "waypoint"}},
            "spec": {"hosts": ["api.example.com"], "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}]}}));
        let (scan, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(stats.context_rejudged, cluster.pods.len());
        assert_eq!(stats.rejudged, 0);
        assert!(has(&scan, EGRESS_WAYPOINT_MISSING, "waypoint"));

        // The WasmPlugin fails open: egress-filter-missing changes, from the kept gateway pod.
        let key = (
            "WasmPlugin".to_string(),
            "istio-system".to_string(),
            "egress-filter".to_string(),
        );
        let mut plugin = cluster.extra[&key].clone();
        plugin["spec"]["failStrategy"] = json!("FAIL_OPEN");
        cluster.apply(plugin);
        let (scan, _) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert!(has(
            &scan,
            EGRESS_FILTER_MISSING,
            "istio-egressgateway-7d9f6c"
        ));

        // A mesh config that does not parse is reported, then fixed.
        let mut broken = mesh.clone();
        broken["data"]["mesh"] = json!("outboundTrafficPolicy: [");
        cluster.apply(broken);
        let (scan, _) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert!(scan.unreadable.iter().any(|u| u.resource == "configmaps"));
        cluster.mesh = None;
        let (scan, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert!(!has(&scan, OUTBOUND_ALLOW_ANY, MESH_CONFIG_NAME));
        assert_eq!(stats.context_rejudged, cluster.pods.len());
    }

    #[test]
    fn sidecar_not_running_follows_the_clock_without_a_change() {
        let mut cluster = Cluster::repo();
        let mut pod = cluster.pod("shop", "web-1");
        pod["metadata"]["name"] = json!("warming");
        pod["status"] = json!({"phase": "Running", "containerStatuses": [
            {"name": "app", "ready": true, "restartCount": 0, "image": "img", "imageID": "",
             "state": {"running": {"startedAt": "2025-06-01T11:59:50Z"}}},
            {"name": "istio-proxy", "ready": false, "restartCount": 0, "image": "img", "imageID": "",
             "state": {"running": {"startedAt": "2025-06-01T11:59:50Z"}}}]});
        cluster.apply(pod);
        let mut inc = Incremental::new();
        let (scan, _) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert!(!has(&scan, SIDECAR_NOT_RUNNING, "warming"));
        assert!(has(&scan, SIDECAR_NOT_RUNNING, "crashy"));
        // Past the start-up grace: reported, with nothing re-judged.
        let (scan, stats) = judge_both(&mut inc, &cluster, &all(), &now("2025-06-01T12:05:00Z"));
        assert!(has(&scan, SIDECAR_NOT_RUNNING, "warming"));
        assert_eq!(stats, Stats::default());
    }

    #[test]
    fn a_restricted_scope_and_changed_options_are_judged_as_in_full() {
        let mut cluster = Cluster::repo();
        cluster.delete_pod("istio-system", "istio-egressgateway-7d9f6c");
        let shop = ScanScope {
            all_namespaces: false,
            namespaces: ["shop".to_string()].into_iter().collect(),
        };
        let mut inc = Incremental::new();
        let (scan, _) = judge_both(&mut inc, &cluster, &shop, &now(T0));
        assert!(!has(&scan, EGRESS_FILTER_MISSING, "cluster"));
        // Another gateway selector: the cache starts afresh.
        let mut live = now(T0);
        live.egress_gateway_selector = [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect();
        let (scan, stats) = judge_both(&mut inc, &cluster, &all(), &live);
        assert_eq!(stats.rejudged, cluster.pods.len());
        assert!(has(&scan, EGRESS_FILTER_MISSING, "web-1"));
    }

    #[test]
    fn objects_without_a_resource_version_are_always_judged() {
        let mut cluster = Cluster::repo();
        for p in cluster.pods.values_mut() {
            p.metadata.resource_version = None;
        }
        for n in cluster.namespaces.values_mut() {
            n.metadata.resource_version = None;
        }
        let mut inc = Incremental::new();
        judge_both(&mut inc, &cluster, &all(), &now(T0));
        let (_, stats) = judge_both(&mut inc, &cluster, &all(), &now(T0));
        assert_eq!(stats.rejudged, cluster.pods.len());
    }
}
