//! The Kubernetes client every mode shares (sources read through it, the PolicyReport and Event
//! sinks write through it): connection set-up and the TLS provider, retries with backoff and a
//! deadline, paginated lists that restart when their continue token expires, and the list of
//! every API call the auditor makes ([`API_CALLS`], which the deploy RBAC is checked against).

mod rbac;

use std::fmt::Debug;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::de::DeserializeOwned;

use crate::metrics::Metrics;

pub use rbac::{ApiCall, API_CALLS};

/// Why talking to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot load the cluster configuration: {0}")]
    Config(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
    #[error("{what}: {message} (HTTP {code}, after {attempts} attempt(s))")]
    Api {
        what: String,
        code: u16,
        reason: String,
        message: String,
        attempts: u32,
    },
    #[error("{what}: {message} (after {attempts} attempt(s))")]
    Transport {
        what: String,
        message: String,
        attempts: u32,
    },
    #[error("{what}: no complete list after {restarts} restarts on expired continue tokens")]
    ListRestarts { what: String, restarts: u32 },
}

impl ClusterError {
    /// The HTTP status the API server answered with, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClusterError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_forbidden(&self) -> bool {
        self.code() == Some(403)
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }
}

/// How hard to try before giving up on one API call.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// No answer within this time counts as a failed attempt (and is retried).
    pub request_timeout: Duration,
    /// Total time one call may take, retries included.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(120),
        }
    }
}

/// Counts of what the client did, for figures and `/metrics`.
#[derive(Debug, Default)]
pub struct ApiStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub list_restarts: AtomicU64,
}

impl ApiStats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
    pub fn list_restarts(&self) -> u64 {
        self.list_restarts.load(Ordering::Relaxed)
    }
}

/// The API client plus what every call needs: retry policy, counters and metrics.
#[derive(Clone)]
pub struct ApiContext {
    pub client: Client,
    pub retry: RetryPolicy,
    pub stats: std::sync::Arc<ApiStats>,
    pub metrics: Metrics,
}

impl ApiContext {
    pub fn new(client: Client, retry: RetryPolicy, metrics: Metrics) -> ApiContext {
        ApiContext {
            client,
            retry,
            stats: Default::default(),
            metrics,
        }
    }

    /// Runs one API call, retrying throttling (429), server errors (5xx), transport errors and
    /// timeouts with exponential backoff until the policy's deadline. Other answers (403, 404,
    /// 409, 410, ...) are returned at once: retrying cannot change them.
    pub async fn call<T, F, Fut>(
        &self,
        what: &str,
        resource: &str,
        mut f: F,
    ) -> Result<T, ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let started = Instant::now();
        let mut backoff = self.retry.initial_backoff;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let failure = match tokio::time::timeout(self.retry.request_timeout, f()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => Failure::from_kube(e),
                Err(_) => Failure::Timeout(self.retry.request_timeout),
            };
            self.metrics.api_error(resource, &failure.code_label());
            let retryable = failure.retryable();
            let wait = jittered(backoff);
            if !retryable || started.elapsed() + wait > self.retry.deadline {
                tracing::warn!(what, attempts, error = %failure, "API call failed");
                return Err(failure.into_error(what, attempts));
            }
            tracing::debug!(what, attempts, error = %failure, ?wait, "API call failed, retrying");
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
    }

    /// Lists every object of `api` matching `params`, `page_size` at a time, converting each as it
    /// arrives so only the converted form is kept. A 410 Gone on a continue token (the list
    /// snapshot expired on the server) discards what was gathered and lists again from the start,
    /// so the result is always one consistent list.
    pub async fn list_all<K, T>(
        &self,
        api: &Api<K>,
        params: &ListParams,
        page_size: u32,
        what: &str,
        resource: &str,
        mut convert: impl FnMut(K) -> Option<T>,
    ) -> Result<Vec<T>, ClusterError>
    where
        K: Clone + DeserializeOwned + Debug,
    {
        const MAX_RESTARTS: u32 = 5;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut restarts = 0u32;
        loop {
            let mut page_params = params.clone().limit(page_size);
            if let Some(t) = &token {
                page_params = page_params.continue_token(t);
            }
            match self.call(what, resource, || api.list(&page_params)).await {
                Ok(list) => {
                    out.extend(list.items.into_iter().filter_map(&mut convert));
                    match list.metadata.continue_ {
                        Some(t) if !t.is_empty() => token = Some(t),
                        _ => return Ok(out),
                    }
                }
                Err(e) if e.code() == Some(410) && token.is_some() => {
                    restarts += 1;
                    self.stats.list_restarts.fetch_add(1, Ordering::Relaxed);
                    if restarts > MAX_RESTARTS {
                        return Err(ClusterError::ListRestarts {
                            what: what.to_string(),
                            restarts: MAX_RESTARTS,
                        });
                    }
                    tracing::info!(
                        what,
                        restarts,
                        "continue token expired, listing again from the start"
                    );
                    out.clear();
                    token = None;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One failed attempt.
enum Failure {
    Api(Box<kube::core::Status>),
    Transport(String),
    Other(String),
    Timeout(Duration),
}

impl Failure {
    fn from_kube(e: kube::Error) -> Failure {
        match e {
            kube::Error::Api(status) => Failure::Api(status),
            kube::Error::HyperError(e) => Failure::Transport(e.to_string()),
            kube::Error::Service(e) => Failure::Transport(e.to_string()),
            kube::Error::ReadEvents(e) => Failure::Transport(e.to_string()),
            other => Failure::Other(other.to_string()),
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Failure::Api(s) => s.code == 429 || s.code >= 500,
            Failure::Transport(_) | Failure::Timeout(_) => true,
            Failure::Other(_) => false,
        }
    }

    fn code_label(&self) -> String {
        match self {
            Failure::Api(s) => s.code.to_string(),
            Failure::Transport(_) => "transport".into(),
            Failure::Timeout(_) => "timeout".into(),
            Failure::Other(_) => "other".into(),
        }
    }

    fn into_error(self, what: &str, attempts: u32) -> ClusterError {
        match self {
            Failure::Api(s) => ClusterError::Api {
                what: what.to_string(),
                code: s.code,
                reason: s.reason.clone(),
                message: if s.message.is_empty() {
                    s.reason.clone()
                } else {
                    s.message.clone()
                },
                attempts,
            },
            Failure::Transport(m) | Failure::Other(m) => ClusterError::Transport {
                what: what.to_string(),
                message: m,
                attempts,
            },
            Failure::Timeout(d) => ClusterError::Transport {
                what: what.to_string(),
                message: format!("no answer within {:.1}s", d.as_secs_f64()),
                attempts,
            },
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Api(s) => write!(f, "HTTP {} {}: {}", s.code, s.reason, s.message),
            Failure::Transport(m) | Failure::Other(m) => f.write_str(m),
            Failure::Timeout(d) => write!(f, "no answer within {:.1}s", d.as_secs_f64()),
        }
    }
}

/// Backoff plus up to 25% jitter so many auditors do not retry in step.
fn jittered(backoff: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let quarter = backoff.as_millis() as u64 / 4;
    let extra = if quarter == 0 {
        0
    } else {
        u64::from(nanos) % quarter
    };
    backoff + Duration::from_millis(extra)
}

/// Installs the TLS crypto provider once per process (rustls needs one chosen explicitly when
/// more than one could be linked).
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where the client configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// A kubeconfig file; without it `KUBECONFIG`, `~/.kube/config`, then the in-cluster
    /// ServiceAccount are tried, as kubectl does.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// A kubeconfig context other than the current one.
    pub context: Option<String>,
}

/// Builds a client from a kubeconfig or the in-cluster ServiceAccount.
pub async fn connect(opts: &ConnectOptions) -> Result<Client, ClusterError> {
    ensure_crypto_provider();
    let config = load_config(opts.kubeconfig.as_deref(), opts.context.as_deref()).await?;
    Client::try_from(config).map_err(|e| ClusterError::Client(e.to_string()))
}

async fn load_config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Config, ClusterError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?
        }
        // A named context only makes sense with a kubeconfig: do not fall back to in-cluster.
        None if context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| ClusterError::Config(e.to_string()))?,
        None => Config::infer()
            .await
            .map_err(|e| ClusterError::Config(e.to_string()))?,
    };
    config.connect_timeout = Some(Duration::from_secs(10));
    // Retries happen in one place, [`ApiContext::call`], where they are bounded by the deadline
    // and counted in the metrics; kube's own retry layer would hide them.
    config.default_retry = false;
    Ok(config)
}
