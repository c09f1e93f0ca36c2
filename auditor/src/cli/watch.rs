//! `egress-auditor watch`: run as a controller in the cluster.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::args::{check_options, parse_duration, ConnectArgs, SinkArgs};
use super::pipeline::{init_tracing, EXIT_BAD_INPUT, EXIT_OK};
use crate::finding::Severity;
use crate::watch::{self, WatchOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,

    #[command(flatten)]
    pub sinks: SinkArgs,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Quiet time after a change before judging, so a rollout is judged once.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub debounce: Duration,

    /// Judge and deliver to the sinks at least this often, even without changes. Must be shorter
    /// than --alert-ttl so alerts keep firing.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub resync: Duration,

    /// Namespace where hostNetwork pods are expected (repeatable). Giving any replaces the
    /// default, kube-system.
    #[arg(long = "exempt-namespace", value_name = "NAMESPACE")]
    pub exempt_namespaces: Vec<String>,

    /// Severity the webhook document's summary counts as failing.
    #[arg(long, default_value = "low", value_parser = |s: &str| s.parse::<Severity>())]
    pub fail_on: Severity,
}

impl WatchArgs {
    pub fn options(&self) -> Result<WatchOptions, String> {
        if self.resync >= self.sinks.alert_ttl {
            return Err(format!(
                "--resync ({:?}) must be shorter than --alert-ttl ({:?}), or alerts would end between deliveries",
                self.resync, self.sinks.alert_ttl
            ));
        }
        let checks = check_options(&self.exempt_namespaces);
        Ok(WatchOptions {
            connect: self.connect.connect_options(),
            namespaces: self.connect.namespaces.clone(),
            checks,
            live: self.connect.live_options()?,
            sinks: self.sinks.sinks.clone(),
            sink_settings: self.sinks.settings(),
            listen: self.listen,
            debounce: self.debounce,
            resync: self.resync,
            retry: self.connect.retry(),
            page_size: self.connect.page_size,
            fail_on: self.fail_on,
        })
    }
}

/// Runs until SIGINT or SIGTERM.
pub fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    init_tracing("info");
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let handle = match watch::start(opts).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        };
        tracing::info!(addr = %handle.addr, "watching; serving /healthz, /readyz, /metrics");
        wait_for_signal().await;
        tracing::info!("stopping");
        handle.stop().await;
        Ok(ExitCode::from(EXIT_OK))
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
