//! `egress-auditor watch`: a controller that keeps the cluster judged.
//!
//! Watchers (kube-runtime reflectors) mirror Namespaces, Pods, NetworkPolicies, the mesh
//! ConfigMap and the Istio and Gateway API objects (WasmPlugins, EnvoyFilters, ServiceEntries,
//! Gateways) into local stores. Any change wakes the
//! judge, which (after a short debounce, so a rollout is one judgement, not hundreds) runs the
//! same checks as `scan --cluster` over the stores, updates `/metrics` and delivers to the sinks
//! when the findings changed or the resync interval passed. The judgement is incremental
//! (`incremental`): only new or changed pods are judged again, and the namespace-dependent rules
//! re-run only where their inputs changed; the findings are those of a full judgement.

mod incremental;
mod server;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::{watch as signal, Notify};

use crate::checks::live::LiveCheckOptions;
use crate::checks::CheckOptions;
use crate::cli::pipeline;
use crate::finding::{Finding, Severity};
use crate::kube_client::{self, ApiContext, ClusterError, ConnectOptions, RetryPolicy};
use crate::metrics::Metrics;
use crate::sinks::delivery::{Delivery, SinkSpec, Sinks};
use crate::sinks::settings::SinkSettings;
use crate::sinks::Summary;
use crate::snapshot::{ScanScope, MESH_CONFIG_NAME, MESH_CONFIG_NAMESPACE};
use crate::sources::cluster::{dynamic_json, Unreadable, EXTRA_KINDS};
use incremental::{Incremental, Objects};

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Sinks(#[from] crate::sinks::delivery::SinkError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Everything the controller needs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub connect: ConnectOptions,
    /// Only these namespaces; empty means all.
    pub namespaces: Vec<String>,
    pub checks: CheckOptions,
    pub live: LiveCheckOptions,
    pub sinks: Vec<SinkSpec>,
    pub sink_settings: SinkSettings,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
    /// Quiet time after a change before judging, so bursts of changes make one judgement.
    pub debounce: Duration,
    /// Judge and deliver at least this often even without changes (alerts are re-sent, so this
    /// must stay below the alert TTL).
    pub resync: Duration,
    pub retry: RetryPolicy,
    pub page_size: u32,
    /// Severity the findings document's summary reports as failing.
    pub fail_on: Severity,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            connect: ConnectOptions::default(),
            namespaces: Vec::new(),
            checks: CheckOptions::default(),
            live: LiveCheckOptions::default(),
            sinks: Vec::new(),
            sink_settings: SinkSettings::default(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            debounce: Duration::from_secs(2),
            resync: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            page_size: 500,
            fail_on: Severity::Low,
        }
    }
}

/// State shared by the watchers, the judge and the HTTP server.
pub(crate) struct Shared {
    changed: Notify,
    /// Watch streams that have not finished their first list.
    pending_streams: AtomicUsize,
    /// True once the first judgement is done.
    ready: AtomicBool,
    unreadable: Mutex<BTreeMap<(String, Option<String>), Unreadable>>,
    pub(crate) metrics: Metrics,
    /// Shared with the judge's last result, not copied from it.
    findings: Mutex<Arc<Vec<Finding>>>,
}

/// A running controller.
pub struct WatchHandle {
    /// Where the HTTP server listens (useful with port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: signal::Sender<bool>,
    judge: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WatchHandle {
    /// The findings of the last judgement.
    pub fn findings(&self) -> Vec<Finding> {
        Vec::clone(
            &self
                .shared
                .findings
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst)
    }

    /// Stops the watchers, the judge and the server.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.judge.await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Starts watching, judging and serving. Returns once the HTTP server listens.
pub async fn start(opts: WatchOptions) -> Result<WatchHandle, WatchError> {
    let client = kube_client::connect(&opts.connect).await?;
    let metrics = Metrics::for_watch();
    let api = ApiContext::new(client.clone(), opts.retry.clone(), metrics.clone());
    let sinks = Sinks::new(
        opts.sinks.clone(),
        Some(api.clone()),
        opts.sink_settings.clone(),
        metrics.clone(),
    )?;
    let shared = Arc::new(Shared {
        changed: Notify::new(),
        pending_streams: AtomicUsize::new(0),
        ready: AtomicBool::new(false),
        unreadable: Mutex::new(BTreeMap::new()),
        metrics: metrics.clone(),
        findings: Mutex::new(Arc::new(Vec::new())),
    });
    let (stop_tx, stop_rx) = signal::channel(false);

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| WatchError::Listen {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| WatchError::Listen {
        addr: opts.listen,
        source,
    })?;
    let mut tasks = vec![server::spawn(listener, shared.clone(), stop_rx.clone())];

    let stores = Stores::spawn(&client, &opts, &shared, &mut tasks);
    let judge = tokio::spawn(judge_loop(opts, stores, shared.clone(), sinks, stop_rx));
    Ok(WatchHandle {
        addr,
        shared,
        stop: stop_tx,
        judge,
        tasks,
    })
}

/// The mirrored objects.
struct Stores {
    namespaces: Vec<Store<Namespace>>,
    pods: Vec<Store<Pod>>,
    network_policies: Vec<Store<NetworkPolicy>>,
    mesh: Store<ConfigMap>,
    istio: Vec<(ApiResource, Store<DynamicObject>)>,
}

impl Stores {
    fn spawn(
        client: &kube::Client,
        opts: &WatchOptions,
        shared: &Arc<Shared>,
        tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> Stores {
        let config = || watcher::Config::default().page_size(opts.page_size.max(1));
        // `None`: one cluster-wide watch; otherwise one per namespace (a namespace given twice
        // is watched once, so its pods are not judged twice).
        let scopes: Vec<Option<String>> = if opts.namespaces.is_empty() {
            vec![None]
        } else {
            let mut seen = std::collections::BTreeSet::new();
            opts.namespaces
                .iter()
                .filter(|ns| seen.insert(ns.as_str()))
                .cloned()
                .map(Some)
                .collect()
        };
        let mut w = Spawner { shared, tasks };
        let namespaces = scopes
            .iter()
            .map(|ns| {
                let cfg = match ns {
                    Some(ns) => config().fields(&format!("metadata.name={ns}")),
                    None => config(),
                };
                w.watch(
                    Api::<Namespace>::all(client.clone()),
                    cfg,
                    "namespaces",
                    ns.clone(),
                    false,
                    (),
                )
            })
            .collect();
        let pods = scopes
            .iter()
            .map(|ns| {
                let api = match ns {
                    Some(ns) => Api::<Pod>::namespaced(client.clone(), ns),
                    None => Api::<Pod>::all(client.clone()),
                };
                w.watch(api, config(), "pods", ns.clone(), false, ())
            })
            .collect();
        let network_policies = scopes
            .iter()
            .map(|ns| {
                let api = match ns {
                    Some(ns) => Api::<NetworkPolicy>::namespaced(client.clone(), ns),
                    None => Api::<NetworkPolicy>::all(client.clone()),
                };
                w.watch(api, config(), "networkpolicies", ns.clone(), false, ())
            })
            .collect();
        let mesh = w.watch(
            Api::<ConfigMap>::namespaced(client.clone(), MESH_CONFIG_NAMESPACE),
            config().fields(&format!("metadata.name={MESH_CONFIG_NAME}")),
            "configmaps",
            Some(MESH_CONFIG_NAMESPACE.to_string()),
            false,
            (),
        );
        let mut istio = Vec::new();
        for kind in EXTRA_KINDS {
            let ar = kind.resource();
            for ns in &scopes {
                let api = match ns {
                    Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
                    None => Api::<DynamicObject>::all_with(client.clone(), &ar),
                };
                let store = w.watch(api, config(), kind.plural, ns.clone(), true, ar.clone());
                istio.push((ar.clone(), store));
            }
        }
        Stores {
            namespaces,
            pods,
            network_policies,
            mesh,
            istio,
        }
    }

    /// What the stores hold now: their objects shared, not copied (the Istio and Gateway API
    /// objects, a handful, as the JSON the checks read).
    fn objects(&self) -> Objects {
        Objects {
            namespaces: self.namespaces.iter().flat_map(Store::state).collect(),
            network_policies: self
                .network_policies
                .iter()
                .flat_map(Store::state)
                .collect(),
            pods: self.pods.iter().flat_map(Store::state).collect(),
            mesh: self.mesh.state().first().cloned(),
            extra: self
                .istio
                .iter()
                .flat_map(|(ar, store)| {
                    store
                        .state()
                        .iter()
                        .map(|o| dynamic_json((**o).clone(), ar))
                        .collect::<Vec<_>>()
                })
                .collect(),
        }
    }
}

struct Spawner<'a> {
    shared: &'a Arc<Shared>,
    tasks: &'a mut Vec<tokio::task::JoinHandle<()>>,
}

fn error_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

impl Spawner<'_> {
    /// Starts one reflector and returns its store. `optional`: a CRD that may be absent (404
    /// counts as "no objects", not as an error that blocks readiness).
    fn watch<K>(
        &mut self,
        api: Api<K>,
        config: watcher::Config,
        resource: &'static str,
        namespace: Option<String>,
        optional: bool,
        dyntype: K::DynamicType,
    ) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
    {
        let writer = Writer::new(dyntype);
        let store = writer.as_reader();
        let shared = self.shared.clone();
        shared.pending_streams.fetch_add(1, Ordering::SeqCst);
        let key = (resource.to_string(), namespace.clone());
        let stream = reflector::reflector(
            writer,
            watcher::watcher(api, config)
                .default_backoff()
                .modify(|o: &mut K| o.meta_mut().managed_fields = None),
        );
        self.tasks.push(tokio::spawn(async move {
            let mut initialised = false;
            let mut mark_initialised = |shared: &Shared| {
                if !initialised {
                    initialised = true;
                    shared.pending_streams.fetch_sub(1, Ordering::SeqCst);
                }
            };
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::Init | Event::InitApply(_)) => continue,
                    Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => {
                        mark_initialised(&shared);
                        shared.lock_unreadable().remove(&key);
                    }
                    Err(e) => {
                        let code = error_code(&e);
                        shared
                            .metrics
                            .api_error(resource, &code.map(|c| c.to_string()).unwrap_or_else(|| "transport".into()));
                        tracing::warn!(resource, namespace = ?key.1, error = %e, "watch failed, retrying with backoff");
                        match code {
                            Some(404) if optional => mark_initialised(&shared),
                            Some(403 | 404) => {
                                shared.lock_unreadable().insert(
                                    key.clone(),
                                    Unreadable {
                                        resource: resource.to_string(),
                                        namespace: key.1.clone(),
                                        code,
                                        message: e.to_string(),
                                    },
                                );
                                // What cannot be read is reported, not waited for.
                                mark_initialised(&shared);
                            }
                            _ => continue,
                        }
                    }
                }
                shared.changed.notify_one();
            }
        }));
        store
    }
}

impl Shared {
    fn lock_unreadable(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<(String, Option<String>), Unreadable>> {
        self.unreadable.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Waits for changes and judges.
async fn judge_loop(
    opts: WatchOptions,
    stores: Stores,
    shared: Arc<Shared>,
    sinks: Sinks,
    mut stop: signal::Receiver<bool>,
) {
    let scope = ScanScope {
        all_namespaces: opts.namespaces.is_empty(),
        namespaces: opts.namespaces.iter().cloned().collect(),
    };
    let mut judged = Incremental::new();
    let mut delivered: Option<Arc<Vec<Finding>>> = None;
    let mut last_delivery = Instant::now();
    loop {
        let woke_by_change = tokio::select! {
            _ = shared.changed.notified() => true,
            _ = tokio::time::sleep(opts.resync) => false,
            _ = stop.changed() => return,
        };
        if shared.pending_streams.load(Ordering::SeqCst) > 0 {
            continue;
        }
        if woke_by_change {
            // Let a burst of changes settle into one judgement.
            tokio::select! {
                _ = tokio::time::sleep(opts.debounce) => {},
                _ = stop.changed() => return,
            }
        }
        let started = Instant::now();
        let unreadable: Vec<Unreadable> = shared.lock_unreadable().values().cloned().collect();
        let live = LiveCheckOptions {
            now: jiff::Timestamp::now(),
            ..opts.live.clone()
        };
        let (result, stats) =
            judged.judge(&stores.objects(), &unreadable, &scope, &opts.checks, &live);
        let scan_scope = &result.scope;
        let findings = Arc::new(result.findings);
        *shared.findings.lock().unwrap_or_else(|e| e.into_inner()) = findings.clone();

        let changed = delivered.as_ref() != Some(&findings);
        let resync_due = last_delivery.elapsed() >= opts.resync;
        let mut ok = true;
        if !sinks.is_empty() && (changed || resync_due) {
            let summary = Summary::new(
                &findings,
                opts.fail_on,
                Some(serde_json::json!({"source": "cluster-watch", "workloads": result.workloads})),
            );
            let document = pipeline::document(&findings, &summary);
            let failures = sinks
                .deliver(Delivery {
                    findings: &findings,
                    document: &document,
                    scope: scan_scope,
                })
                .await;
            ok = failures.is_empty();
            // A failed delivery is retried at the next judgement.
            delivered = ok.then(|| findings.clone());
            last_delivery = Instant::now();
        }
        // Findings and the scan count appear together, once the judgement has been delivered.
        shared
            .metrics
            .pods_rejudged(stats.rejudged, stats.context_rejudged);
        shared
            .metrics
            .judged(&findings, ok, result.workloads, started.elapsed());
        shared.ready.store(true, Ordering::SeqCst);
        tracing::info!(
            findings = findings.len(),
            workloads = result.workloads,
            rejudged = stats.rejudged,
            context_rejudged = stats.context_rejudged,
            dropped = stats.dropped,
            elapsed = ?started.elapsed(),
            "judged"
        );
    }
}
