//! A Rate Limit Service for tests: `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`
//! served over HTTP/2 with tonic, counting with the `limitador` crate (the engine of Kuadrant's
//! Limitador) over its Redis storage, mapped the way `limitador-server` maps RLS requests:
//!
//! - `domain` is the Limitador namespace; an empty domain gets `overall_code: UNKNOWN`;
//! - each descriptor becomes a map of its entries (a repeated key: the last one wins), bound as
//!   the CEL list `descriptors`;
//! - `hits_addend` 0 counts as 1;
//! - a storage error is gRPC `UNAVAILABLE`;
//! - the answer has `OVER_LIMIT` or `OK`, no `statuses`, and Limitador's `X-RateLimit-*`
//!   headers in `response_headers_to_add` (`--rate-limit-headers DRAFT_VERSION_03`).
//!
//! [`AnswerStyle::Statuses`] answers as envoyproxy/ratelimit does instead: one
//! `DescriptorStatus` per descriptor and no headers.
//!
//! [`redis::RedisServer`] runs a real `redis-server` on a loopback port for the tests.

pub mod limits;
pub mod redis;
mod service;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use limitador::limit::Limit;
use tokio::sync::oneshot;

pub use limits::load_limits;

/// How the service fills its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerStyle {
    /// Limitador: headers in `response_headers_to_add`, `statuses` empty.
    #[default]
    Limitador,
    /// envoyproxy/ratelimit: `statuses` (current limit, remaining, time to reset), no headers.
    Statuses,
}

#[derive(Debug, Clone)]
pub struct RlsOptions {
    /// `redis://127.0.0.1:<port>`.
    pub redis_url: String,
    pub limits: Vec<Limit>,
    pub style: AnswerStyle,
    /// Check one request at a time. Limitador's Redis storage reads the counters, then
    /// increments them (its docs: "does not guarantee exact limits"), so concurrent checks can
    /// let a few requests too many through; serialised, the count is exact.
    pub serialize: bool,
}

/// What the service saw, for tests.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub calls: AtomicU64,
    pub over_limit: AtomicU64,
    pub errors: AtomicU64,
    /// Added before every answer, in milliseconds (a slow service).
    pub delay_ms: AtomicU64,
}

/// A running service; stopped when dropped.
pub struct RlsServer {
    addr: SocketAddr,
    stats: Arc<Stats>,
    shutdown: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    served: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl RlsServer {
    /// Starts on an ephemeral loopback port.
    pub fn start(options: RlsOptions) -> anyhow::Result<RlsServer> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), options)
    }

    /// Starts on `addr` (e.g. the address of a stopped server, to restart it).
    pub fn start_on(addr: SocketAddr, options: RlsOptions) -> anyhow::Result<RlsServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rls-server")
            .enable_all()
            .build()
            .context("starting the service's runtime")?;
        let stats = Arc::new(Stats::default());
        let (listener, service) = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let service = service::Rls::new(&options, stats.clone()).await?;
            anyhow::Ok((listener, service))
        })?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let served = runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service.into_server())
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        Ok(RlsServer {
            addr,
            stats,
            shutdown: Some(shutdown),
            runtime: Some(runtime),
            served: Some(served),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delays every answer from now on (a service slower than the filter's timeout).
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.stats.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// `ShouldRateLimit` calls received.
    pub fn calls(&self) -> u64 {
        self.stats.calls.load(Ordering::Relaxed)
    }

    /// Calls answered `OVER_LIMIT`.
    pub fn over_limit(&self) -> u64 {
        self.stats.over_limit.load(Ordering::Relaxed)
    }

    /// Calls answered with an error status (storage unreachable).
    pub fn errors(&self) -> u64 {
        self.stats.errors.load(Ordering::Relaxed)
    }

    /// Stops serving and closes the listener and every connection.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let (Some(runtime), Some(served)) = (self.runtime.take(), self.served.take()) {
            // Open connections keep a graceful shutdown waiting; a bounded wait, then the
            // runtime drops them.
            let _ = runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(2), served).await });
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for RlsServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}
