//! Prometheus metrics on `/metrics`: compilations and their errors, policies by tier, the last
//! successful compilation, writes, leadership and API errors.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabels {
    tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiErrorLabels {
    resource: String,
    code: String,
}

struct Inner {
    registry: Registry,
    compiles: Counter,
    compile_errors: Counter,
    policies: Family<TierLabels, Gauge>,
    last_success: Gauge<f64, AtomicU64>,
    wasmplugin_writes: Family<ResultLabels, Counter>,
    status_writes: Family<ResultLabels, Counter>,
    leader: Gauge,
    api_errors: Family<ApiErrorLabels, Counter>,
}

/// Cheap to clone; all clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("egress_controller");
        let compiles = Counter::default();
        registry.register(
            "compiles",
            "Compilations of every policy into the WasmPlugin configuration",
            compiles.clone(),
        );
        let compile_errors = Counter::default();
        registry.register(
            "compile_errors",
            "Compilations refused because a policy (or the base configuration) is invalid",
            compile_errors.clone(),
        );
        let policies = Family::<TierLabels, Gauge>::default();
        registry.register(
            "policies",
            "Policies in the last compilation, by tier (admin, namespace, baseline)",
            policies.clone(),
        );
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_successful_compile_timestamp_seconds",
            "Unix time of the last compilation without errors",
            last_success.clone(),
        );
        let wasmplugin_writes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "wasmplugin_writes",
            "Server-side applies of a WasmPlugin's pluginConfig, by result",
            wasmplugin_writes.clone(),
        );
        let status_writes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "status_writes",
            "Status updates of policy objects, by result",
            status_writes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (only the leader writes)",
            leader.clone(),
        );
        let api_errors = Family::<ApiErrorLabels, Counter>::default();
        registry.register(
            "api_errors",
            "Failed Kubernetes API calls (each attempt), by resource and HTTP code",
            api_errors.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                compiles,
                compile_errors,
                policies,
                last_success,
                wasmplugin_writes,
                status_writes,
                leader,
                api_errors,
            }),
        }
    }

    /// One compilation: `policies` is (tier, count) when it succeeded, `None` when refused.
    pub fn compiled(&self, policies: Option<[(&str, usize); 3]>) {
        self.inner.compiles.inc();
        match policies {
            Some(counts) => {
                for (tier, count) in counts {
                    self.inner
                        .policies
                        .get_or_create(&TierLabels { tier: tier.into() })
                        .set(i64::try_from(count).unwrap_or(i64::MAX));
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                self.inner.last_success.set(now);
            }
            None => {
                self.inner.compile_errors.inc();
            }
        }
    }

    pub fn wasmplugin_write(&self, result: &str) {
        self.inner
            .wasmplugin_writes
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn status_write(&self, result: &str) {
        self.inner
            .status_writes
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.inner.leader.set(i64::from(leader));
    }

    pub fn api_error(&self, resource: &str, code: &str) {
        self.inner
            .api_errors
            .get_or_create(&ApiErrorLabels {
                resource: resource.into(),
                code: code.into(),
            })
            .inc();
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
        }
        out
    }
}
