//! `egress-controller run`: watches ClusterEgressPolicies, EgressPolicies and Namespaces,
//! recompiles (debounced) on every change, writes the WasmPlugins with server-side apply, and
//! reports status on every policy. Only the leader (a Lease) writes; a follower compiles too, so
//! it is ready to take over.
//!
//! Nothing is compiled before every watch has listed once (a partial view could drop a DENY), and
//! nothing the filter would refuse is written: an invalid policy leaves the WasmPlugins as they
//! were, and says so in its status.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};

use crate::compile::{self, BaseConfig, CompileError, Compiled, PolicyError, PolicySet};
use crate::lease::{Elector, LeaseSettings};
use crate::metrics::Metrics;
use crate::resources::{ClusterEgressPolicy, EgressPolicy, PolicyRef, PolicyStatus};
use crate::shadow;
use crate::status::{self, Ready, Verdict, Written};
use crate::wasmplugin;

/// Why the controller could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load the cluster configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One WasmPlugin the controller writes, with the base configuration merged into its policies.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub base: BaseConfig,
}

impl Target {
    pub fn label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// A kubeconfig; without it the usual places (KUBECONFIG, ~/.kube/config, in-cluster).
    pub kubeconfig: Option<PathBuf>,
    pub targets: Vec<Target>,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub listen: SocketAddr,
    /// `None`: no leader election (this replica always writes).
    pub lease: Option<LeaseSettings>,
    /// Quiet time after a change before compiling, so a burst of changes is one compilation.
    pub debounce: Duration,
    /// Compile and check the WasmPlugins at least this often, even without changes (puts back a
    /// pluginConfig someone else overwrote).
    pub resync: Duration,
    /// First wait after a failed reconcile (doubles up to 30 times it).
    pub retry_backoff: Duration,
}

impl RunOptions {
    pub fn new(targets: Vec<Target>, listen: SocketAddr) -> RunOptions {
        RunOptions {
            kubeconfig: None,
            targets,
            listen,
            lease: None,
            debounce: Duration::from_millis(500),
            resync: Duration::from_secs(300),
            retry_backoff: Duration::from_millis(500),
        }
    }
}

/// What the reconcile loop and the HTTP server share (kube-rs controller-rs's `Context`).
pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    changed: Notify,
    pending_streams: AtomicUsize,
    ready: AtomicBool,
}

impl Context {
    /// `/readyz`: every watch has listed once and the first compilation is done.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// A running controller.
pub struct Handle {
    pub addr: SocketAddr,
    pub context: Arc<Context>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    main: tokio::task::JoinHandle<()>,
    elector: Option<tokio::task::JoinHandle<()>>,
    /// Without leader election, the never-changing "leader" signal (a dropped sender would
    /// wake the reconcile loop forever).
    _always_leader: Option<watch::Sender<bool>>,
}

impl Handle {
    /// Stops gracefully: the reconcile loop finishes what it is doing, the leader releases its
    /// Lease, the watches and the HTTP server stop.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.main.await;
        if let Some(elector) = self.elector {
            let _ = elector.await;
        }
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Connects, starts the watches, the elector and the HTTP server, and runs the reconcile loop
/// in the background.
pub async fn start(options: RunOptions) -> Result<Handle> {
    let client = connect(options.kubeconfig.as_deref()).await?;
    let metrics = Metrics::new();
    let context = Arc::new(Context {
        client: client.clone(),
        metrics: metrics.clone(),
        changed: Notify::new(),
        pending_streams: AtomicUsize::new(0),
        ready: AtomicBool::new(false),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: options.listen,
        source,
    })?;
    let mut tasks = vec![crate::server::spawn(
        listener,
        context.clone(),
        stop_rx.clone(),
    )];
    let stores = Stores {
        cluster_policies: spawn_watch(
            Api::all(client.clone()),
            "clusteregresspolicies",
            &context,
            &mut tasks,
        ),
        egress_policies: spawn_watch(
            Api::all(client.clone()),
            "egresspolicies",
            &context,
            &mut tasks,
        ),
        namespaces: spawn_watch(Api::all(client.clone()), "namespaces", &context, &mut tasks),
    };
    let (leader_tx, leader_rx) = watch::channel(options.lease.is_none());
    metrics.set_leader(options.lease.is_none());
    let (elector, always_leader) = match options.lease.clone() {
        Some(settings) => {
            let elector = Elector::new(client.clone(), settings, metrics.clone());
            (
                Some(tokio::spawn(elector.run(leader_tx, stop_rx.clone()))),
                None,
            )
        }
        None => (None, Some(leader_tx)),
    };
    let reconciler = Reconciler {
        options,
        context: context.clone(),
        stores,
        leader: leader_rx,
        applied: BTreeMap::new(),
    };
    let main = tokio::spawn(reconciler.run(stop_rx));
    Ok(Handle {
        addr,
        context,
        stop: stop_tx,
        tasks,
        main,
        elector,
        _always_leader: always_leader,
    })
}

/// Builds a client from a kubeconfig or the in-cluster ServiceAccount.
pub async fn connect(kubeconfig: Option<&std::path::Path>) -> Result<Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Config(e.to_string()))?,
    };
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(330));
    // Retries are the reconcile loop's (counted, bounded, backed off).
    config.default_retry = false;
    Client::try_from(config).map_err(|e| Error::Config(e.to_string()))
}

struct Stores {
    cluster_policies: Store<ClusterEgressPolicy>,
    egress_policies: Store<EgressPolicy>,
    namespaces: Store<Namespace>,
}

impl Stores {
    fn snapshot(&self) -> PolicySet {
        let mut set = PolicySet {
            cluster_policies: self
                .cluster_policies
                .state()
                .iter()
                .map(|o| (**o).clone())
                .collect(),
            egress_policies: self
                .egress_policies
                .state()
                .iter()
                .map(|o| (**o).clone())
                .collect(),
            namespaces: self
                .namespaces
                .state()
                .iter()
                .map(|o| (**o).clone())
                .collect(),
        };
        // Store order is a hash order; the compiler does not depend on it, the status loop
        // reads more easily in name order.
        set.cluster_policies
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        set.egress_policies.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        set
    }
}

/// Starts one reflector; every event wakes the reconcile loop.
fn spawn_watch<K>(
    api: Api<K>,
    resource: &'static str,
    context: &Arc<Context>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let writer = Writer::new(());
    let store = writer.as_reader();
    let context = context.clone();
    context.pending_streams.fetch_add(1, Ordering::SeqCst);
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|o: &mut K| o.meta_mut().managed_fields = None),
    );
    tasks.push(tokio::spawn(async move {
        let mut listed = false;
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init | Event::InitApply(_)) => continue,
                Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => {
                    if !listed {
                        listed = true;
                        context.pending_streams.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                Err(e) => {
                    let code = match &e {
                        watcher::Error::InitialListFailed(kube::Error::Api(s))
                        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code.to_string(),
                        watcher::Error::WatchError(s) => s.code.to_string(),
                        _ => "transport".into(),
                    };
                    context.metrics.api_error(resource, &code);
                    tracing::warn!(resource, error = %e, "watch failed, retrying with backoff");
                    continue;
                }
            }
            context.changed.notify_one();
        }
    }));
    store
}

struct Reconciler {
    options: RunOptions,
    context: Arc<Context>,
    stores: Stores,
    leader: watch::Receiver<bool>,
    /// Config hash last applied (or found current) per WasmPlugin: unchanged ones are not read
    /// again until the next resync.
    applied: BTreeMap<String, String>,
}

/// Invalid policies, each with its first (field, reason).
type InvalidPolicies = BTreeMap<PolicyRef, (String, String)>;
type ShadowedRules = BTreeMap<PolicyRef, Vec<shadow::Shadowed>>;

/// What one reconcile found out about the WasmPlugins.
enum Outcome {
    /// Every policy compiled; per WasmPlugin, whether it holds the configuration.
    Compiled {
        /// Each WasmPlugin's document (the policies with its base configuration).
        documents: Vec<(Target, Compiled)>,
        /// Per WasmPlugin, whether it holds its document now (empty for a follower).
        written: Vec<(String, std::result::Result<(), String>)>,
    },
    /// Some policies are invalid (or the base configuration clashes with them).
    Refused {
        errors: Vec<PolicyError>,
        base: Vec<String>,
    },
}

impl Reconciler {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff: Option<Duration> = None;
        let mut last_full = Instant::now();
        let mut was_leader = *self.leader.borrow();
        // Wait until every watch has listed once.
        while self.context.pending_streams.load(Ordering::SeqCst) > 0 {
            tokio::select! {
                _ = self.context.changed.notified() => {}
                _ = stop.changed() => return,
            }
        }
        loop {
            if *stop.borrow() {
                return;
            }
            let leader = *self.leader.borrow();
            if leader && !was_leader {
                // A new leader trusts nothing it did not check itself.
                self.applied.clear();
            }
            was_leader = leader;
            let resync = last_full.elapsed() >= self.options.resync;
            if resync {
                self.applied.clear();
                last_full = Instant::now();
            }
            let ok = self.reconcile(leader).await;
            self.context.ready.store(true, Ordering::SeqCst);
            backoff = if ok {
                None
            } else {
                let base = self.options.retry_backoff;
                Some(backoff.map_or(base, |b| (b * 2).min(base * 30)))
            };
            // Wait for a change, a leadership change, the resync, or the retry.
            let wait = backoff.unwrap_or(self.options.resync.saturating_sub(last_full.elapsed()));
            tokio::select! {
                _ = self.context.changed.notified() => self.debounce(&mut stop).await,
                changed = self.leader.changed() => {
                    if changed.is_err() {
                        // The elector stopped (only on shutdown): wait for the stop signal.
                        let _ = stop.changed().await;
                        return;
                    }
                }
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Waits until no change arrived for the debounce time (at most ten of them in all).
    async fn debounce(&self, stop: &mut watch::Receiver<bool>) {
        let started = Instant::now();
        let limit = self.options.debounce * 10;
        loop {
            tokio::select! {
                _ = self.context.changed.notified() => {
                    if started.elapsed() >= limit {
                        return;
                    }
                }
                _ = tokio::time::sleep(self.options.debounce) => return,
                _ = stop.changed() => return,
            }
        }
    }

    /// Compiles, writes (when leading) and reports; `false` when something must be retried.
    async fn reconcile(&mut self, leader: bool) -> bool {
        let set = self.stores.snapshot();
        let outcome = self.compile(&set);
        if !leader {
            return true;
        }
        let outcome = match outcome {
            Outcome::Compiled { documents, .. } => {
                let written = self.write_wasmplugins(&documents).await;
                Outcome::Compiled { documents, written }
            }
            refused => refused,
        };
        let mut ok = match &outcome {
            Outcome::Compiled { written, .. } => written.iter().all(|(_, r)| r.is_ok()),
            Outcome::Refused { .. } => true,
        };
        ok &= self.write_statuses(&set, &outcome).await;
        ok
    }

    fn compile(&self, set: &PolicySet) -> Outcome {
        let mut errors: BTreeSet<(PolicyRef, String, String)> = BTreeSet::new();
        let mut base = Vec::new();
        let mut documents = Vec::new();
        for target in &self.options.targets {
            match compile::compile(set, &target.base) {
                Ok(compiled) => documents.push((target.clone(), compiled)),
                Err(CompileError::Policies(list)) => {
                    errors.extend(list.into_iter().map(|e| (e.policy, e.field, e.message)));
                }
                Err(CompileError::Base { field, message }) => {
                    base.push(format!(
                        "{}: base configuration: {field}: {message}",
                        target.label()
                    ));
                }
            }
        }
        let refused = !errors.is_empty() || !base.is_empty();
        let metrics = &self.context.metrics;
        match documents.first().map(|(_, c)| c.plugin_config.clone()) {
            Some(config) if !refused => {
                let tier = |key: &str| config["tiers"][key].as_array().map_or(0, Vec::len);
                let namespaced = config["tiers"]["namespaces"].as_object().map_or(0, |m| {
                    m.values().filter_map(|v| v.as_array()).map(Vec::len).sum()
                });
                metrics.compiled(Some([
                    ("admin", tier("admin")),
                    ("namespace", namespaced),
                    ("baseline", tier("baseline")),
                ]));
                Outcome::Compiled {
                    documents,
                    written: Vec::new(),
                }
            }
            _ => {
                metrics.compiled(None);
                for (policy, field, message) in &errors {
                    tracing::warn!(%policy, field, message, "policy refused");
                }
                for b in &base {
                    tracing::warn!(error = %b, "configuration refused");
                }
                Outcome::Refused {
                    errors: errors
                        .into_iter()
                        .map(|(policy, field, message)| PolicyError {
                            policy,
                            field,
                            message,
                        })
                        .collect(),
                    base,
                }
            }
        }
    }

    async fn write_wasmplugins(
        &mut self,
        documents: &[(Target, Compiled)],
    ) -> Vec<(String, std::result::Result<(), String>)> {
        let mut out = Vec::new();
        for (target, compiled) in documents {
            let result = self.ensure_applied(target, compiled).await;
            if let Err(e) = &result {
                tracing::warn!(wasmplugin = %target.label(), error = %e, "WasmPlugin not written");
            }
            out.push((target.label(), result));
        }
        out
    }

    /// Makes the WasmPlugin hold `compiled`: read it, and apply the configuration unless it is
    /// there already.
    async fn ensure_applied(
        &mut self,
        target: &Target,
        compiled: &Compiled,
    ) -> std::result::Result<(), String> {
        let label = target.label();
        let hash = wasmplugin::config_hash(compiled);
        if self.applied.get(&label) == Some(&hash) {
            return Ok(());
        }
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.context.client.clone(),
            &target.namespace,
            &wasmplugin_resource(),
        );
        let metrics = self.context.metrics.clone();
        let existing = retrying(&metrics, wasmplugin::PLURAL, || api.get_opt(&target.name))
            .await
            .map_err(|e| format!("reading WasmPlugin {label}: {e}"))?;
        let Some(existing) = existing else {
            return Err(format!(
                "WasmPlugin {label} does not exist: install it first (istio/), the controller writes only its pluginConfig"
            ));
        };
        let current = &existing.data["spec"]["pluginConfig"];
        let current_hash = existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(wasmplugin::CONFIG_HASH_ANNOTATION));
        if *current == compiled.plugin_config && current_hash == Some(&hash) {
            self.applied.insert(label, hash);
            return Ok(());
        }
        if !*self.leader.borrow() {
            return Err("no longer the leader".into());
        }
        let object = wasmplugin::apply_object(&target.name, &target.namespace, compiled);
        // Keys someone else put in pluginConfig (the `policies` of a hand-written one) would stay
        // beside `tiers` under server-side apply, and the filter refuses both together: then the
        // whole pluginConfig is replaced in one merge patch (never a moment with both or
        // neither), guarded by the resourceVersion just read.
        let foreign: Vec<String> = current
            .as_object()
            .map(|m| {
                m.keys()
                    .filter(|k| compiled.plugin_config.get(k.as_str()).is_none())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let result = if foreign.is_empty() {
            let params = PatchParams::apply(wasmplugin::FIELD_MANAGER).force();
            let patch = Patch::Apply(&object);
            match retrying(&metrics, wasmplugin::PLURAL, || {
                api.patch(&target.name, &params, &patch)
            })
            .await
            {
                // Server-side apply keeps what another manager (or an earlier update) owns: if
                // anything is left over, the merge patch below makes the content exact.
                Ok(applied) if applied.data["spec"]["pluginConfig"] == compiled.plugin_config => {
                    Ok(())
                }
                Ok(applied) => {
                    replace(
                        &api,
                        &metrics,
                        target,
                        &object,
                        &applied.data["spec"]["pluginConfig"],
                        &applied.metadata.resource_version,
                    )
                    .await
                }
                Err(e) => Err(e),
            }
        } else {
            tracing::info!(wasmplugin = %label, keys = ?foreign, "replacing pluginConfig keys the controller does not write");
            replace(
                &api,
                &metrics,
                target,
                &object,
                current,
                &existing.metadata.resource_version,
            )
            .await
        };
        match result {
            Ok(_) => {
                metrics.wasmplugin_write("applied");
                tracing::info!(wasmplugin = %label, sha256 = %hash, "configuration applied");
                self.applied.insert(label, hash);
                Ok(())
            }
            Err(e) => {
                metrics.wasmplugin_write("error");
                Err(format!("applying WasmPlugin {label}: {e}"))
            }
        }
    }

    /// Writes the status every policy should have; `false` when a write must be retried.
    async fn write_statuses(&self, set: &PolicySet, outcome: &Outcome) -> bool {
        // (invalid policies with their first error, shadowed rules, Ready of the valid ones)
        let (errors, shadowed, ready_all): (InvalidPolicies, Option<ShadowedRules>, Ready) =
            match outcome {
                Outcome::Compiled { documents, written } => {
                    let failures: Vec<&String> = written
                        .iter()
                        .filter_map(|(_, r)| r.as_ref().err())
                        .collect();
                    let ready = if failures.is_empty() {
                        Ready::Applied {
                            wasmplugins: written.iter().map(|(l, _)| l.clone()).collect(),
                        }
                    } else {
                        Ready::NotWritten {
                            message: failures
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join("; "),
                        }
                    };
                    // The subjects do not depend on the base configuration.
                    let shadowed = documents
                        .first()
                        .map(|(_, compiled)| shadow::analyse(set, &compiled.subjects));
                    (BTreeMap::new(), shadowed, ready)
                }
                Outcome::Refused { errors, base } => {
                    let mut by_policy = BTreeMap::new();
                    for e in errors {
                        by_policy
                            .entry(e.policy.clone())
                            .or_insert_with(|| (e.field.clone(), e.message.clone()));
                    }
                    let ready = if base.is_empty() {
                        Ready::Held {
                            blockers: by_policy.keys().cloned().collect(),
                        }
                    } else {
                        Ready::NotWritten {
                            message: base.join("; "),
                        }
                    };
                    (by_policy, None, ready)
                }
            };
        let verdict = |reference: &PolicyRef| {
            let accepted = match errors.get(reference) {
                Some((field, message)) => Err((field.clone(), message.clone())),
                None => Ok(()),
            };
            let ready = if accepted.is_err() {
                Ready::Invalid
            } else {
                ready_all.clone()
            };
            Verdict {
                accepted,
                ready,
                shadowed: shadowed
                    .as_ref()
                    .map(|s| s.get(reference).cloned().unwrap_or_default()),
            }
        };
        let mut ok = true;
        let client = &self.context.client;
        for policy in &set.cluster_policies {
            let api: Api<ClusterEgressPolicy> = Api::all(client.clone());
            ok &= self
                .write_status(&api, policy, &verdict(&policy.reference()), |p| {
                    p.status.clone()
                })
                .await;
        }
        for policy in &set.egress_policies {
            let namespace = policy.metadata.namespace.clone().unwrap_or_default();
            let api: Api<EgressPolicy> = Api::namespaced(client.clone(), &namespace);
            ok &= self
                .write_status(&api, policy, &verdict(&policy.reference()), |p| {
                    p.status.clone()
                })
                .await;
        }
        ok
    }

    async fn write_status<K>(
        &self,
        api: &Api<K>,
        object: &K,
        verdict: &Verdict,
        current_status: fn(&K) -> Option<PolicyStatus>,
    ) -> bool
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        let meta = object.meta();
        let generation = meta.generation;
        let current = current_status(object);
        let wanted = status::desired(verdict, generation, current.as_ref(), "");
        if status::up_to_date(current.as_ref(), &wanted) {
            return true;
        }
        if !*self.leader.borrow() {
            return true;
        }
        let name = meta.name.clone().unwrap_or_default();
        let metrics = &self.context.metrics;
        let rv = meta.resource_version.clone().unwrap_or_default();
        let result = retrying(metrics, "status", || {
            status::write(
                api,
                &name,
                rv.clone(),
                generation,
                verdict,
                current.clone(),
                current_status,
            )
        })
        .await;
        match result {
            Ok(Written::Updated) => {
                metrics.status_write("updated");
                true
            }
            Ok(Written::Stale) => {
                metrics.status_write("stale");
                true
            }
            Err(e) => {
                metrics.status_write("error");
                tracing::warn!(policy = %name, error = %e, "status not written");
                false
            }
        }
    }
}

/// Makes the WasmPlugin's pluginConfig exactly `object`'s in one JSON merge patch (what `current`
/// has and `object` lacks is set to null), guarded by `resource_version`.
async fn replace(
    api: &Api<DynamicObject>,
    metrics: &Metrics,
    target: &Target,
    object: &serde_json::Value,
    current: &serde_json::Value,
    resource_version: &Option<String>,
) -> std::result::Result<(), kube::Error> {
    let mut patch = object.clone();
    patch["spec"]["pluginConfig"] = merge_patch_to(current, &object["spec"]["pluginConfig"]);
    patch["metadata"]["resourceVersion"] = serde_json::json!(resource_version);
    let params = PatchParams {
        field_manager: Some(wasmplugin::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = Patch::Merge(&patch);
    retrying(metrics, wasmplugin::PLURAL, || {
        api.patch(&target.name, &params, &patch)
    })
    .await
    .map(|_| ())
}

/// The JSON merge patch (RFC 7386) that turns `current` into `wanted`.
pub fn merge_patch_to(
    current: &serde_json::Value,
    wanted: &serde_json::Value,
) -> serde_json::Value {
    match (current.as_object(), wanted.as_object()) {
        (Some(have), Some(want)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in want {
                let child = match have.get(key) {
                    Some(old) => merge_patch_to(old, value),
                    None => value.clone(),
                };
                patch.insert(key.clone(), child);
            }
            for key in have.keys().filter(|k| !want.contains_key(*k)) {
                patch.insert(key.clone(), serde_json::Value::Null);
            }
            serde_json::Value::Object(patch)
        }
        _ => wanted.clone(),
    }
}

/// `extensions.istio.io/v1alpha1` WasmPlugin, read and written as a dynamic object (its schema
/// is Istio's).
pub fn wasmplugin_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(wasmplugin::GROUP, "v1alpha1", wasmplugin::KIND),
        wasmplugin::PLURAL,
    )
}

/// Runs one API call, retrying throttling (429), server errors (5xx) and transport errors with
/// backoff (at most 6 attempts); other answers are returned at once.
async fn retrying<T, F, Fut>(
    metrics: &Metrics,
    resource: &str,
    mut call: F,
) -> std::result::Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, kube::Error>>,
{
    const ATTEMPTS: u32 = 6;
    let mut wait = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let error = match tokio::time::timeout(Duration::from_secs(30), call()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => kube::Error::Service("no answer within 30s".into()),
        };
        let (retryable, code) = match &error {
            kube::Error::Api(s) => (s.code == 429 || s.code >= 500, s.code.to_string()),
            kube::Error::HyperError(_) | kube::Error::Service(_) => (true, "transport".into()),
            _ => (false, "other".into()),
        };
        metrics.api_error(resource, &code);
        if !retryable || attempt >= ATTEMPTS {
            return Err(error);
        }
        tracing::debug!(resource, attempt, error = %error, "API call failed, retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
        attempt += 1;
    }
}
