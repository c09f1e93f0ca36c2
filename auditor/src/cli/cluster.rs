//! `scan --cluster` and the `--sink` flags: reading a live cluster, and delivering findings to
//! PolicyReports, Events, Alertmanager, a webhook or a metrics file.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use super::scan::{Format, ScanArgs};
use super::{EXIT_BAD_INPUT, EXIT_FINDINGS, EXIT_OK, EXIT_SINK_FAILED};
use crate::checks::live::{parse_selector, LiveCheckOptions};
use crate::finding::Finding;
use crate::kube_client::{self, ApiContext, ConnectOptions, RetryPolicy};
use crate::metrics::Metrics;
use crate::sinks::delivery::{Delivery, SinkSpec, Sinks};
use crate::sinks::settings::SinkSettings;
use crate::sinks::{self, Summary};
use crate::snapshot::ScanScope;
use crate::sources::cluster::{self, ClusterScanOptions};
use crate::sources::files::LoadedInput;

/// `scan --cluster` and its connection flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Read the objects from a live cluster (kubeconfig or in-cluster ServiceAccount) instead of
    /// files; adds the live-only rules (sidecar-not-running, egress-filter-missing).
    #[arg(long, conflicts_with = "input")]
    pub cluster: bool,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// How to reach the cluster and what to read (shared by `scan --cluster` and `watch`).
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Kubeconfig file. Without it: KUBECONFIG, ~/.kube/config, then the in-cluster
    /// ServiceAccount.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use instead of the current one.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// Only this namespace (repeatable). Default: all namespaces.
    #[arg(long = "namespace", short = 'n', value_name = "NAMESPACE")]
    pub namespaces: Vec<String>,

    /// Objects per list request.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub page_size: u32,

    /// An API request without an answer this long is retried (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub request_timeout: Duration,

    /// Give up on one API call (all retries of 429, 5xx and timeouts included) after this long.
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    pub api_deadline: Duration,

    /// Labels of the egress gateway pods, for egress-filter-missing (k=v,k2=v2).
    #[arg(long, default_value = "istio=egressgateway", value_name = "SELECTOR")]
    pub egress_gateway_selector: String,

    /// Istio's root namespace (WasmPlugins and EnvoyFilters there apply mesh-wide).
    #[arg(long, default_value = "istio-system", value_name = "NAMESPACE")]
    pub istio_root_namespace: String,
}

impl ConnectArgs {
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }

    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            request_timeout: self.request_timeout,
            deadline: self.api_deadline,
            ..RetryPolicy::default()
        }
    }

    pub fn live_options(&self) -> Result<LiveCheckOptions, String> {
        let selector = parse_selector(&self.egress_gateway_selector)
            .map_err(|e| format!("--egress-gateway-selector: {e}"))?;
        Ok(LiveCheckOptions {
            egress_gateway_selector: selector,
            root_namespace: self.istio_root_namespace.clone(),
            ..LiveCheckOptions::default()
        })
    }

    /// Whether any flag that only makes sense with a cluster was given.
    pub fn any_given(&self) -> bool {
        self.kubeconfig.is_some() || self.context.is_some() || !self.namespaces.is_empty()
    }
}

/// `--sink` and the settings of the sinks.
#[derive(Debug, Clone, clap::Args)]
pub struct SinkArgs {
    /// Where else findings go (repeatable): policyreport, events, alertmanager=URL, webhook=URL,
    /// metrics=PATH. A sink that fails does not stop the others; the findings are still printed
    /// and the exit code is 3.
    #[arg(long = "sink", value_name = "SINK", value_parser = parse_sink)]
    pub sinks: Vec<SinkSpec>,

    /// Alerts end this long after the run that last saw them: keep it longer than the time
    /// between two runs.
    #[arg(long, default_value = "3h", value_parser = parse_duration, value_name = "DURATION")]
    pub alert_ttl: Duration,

    /// An Event already raised for a finding is refreshed (series count) at most this often.
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub event_refresh: Duration,

    /// Give up on delivering to Alertmanager or the webhook (retries of 429, 5xx, timeouts and
    /// refused connections included) after this long.
    #[arg(long, default_value = "45s", value_parser = parse_duration, value_name = "DURATION")]
    pub sink_timeout: Duration,
}

impl SinkArgs {
    pub fn settings(&self) -> SinkSettings {
        let defaults = SinkSettings::default();
        SinkSettings {
            alert_ttl: self.alert_ttl,
            event_refresh: self.event_refresh,
            http_retry: RetryPolicy {
                deadline: self.sink_timeout,
                request_timeout: defaults.http_retry.request_timeout.min(self.sink_timeout),
                ..defaults.http_retry.clone()
            },
            ..defaults
        }
    }
}

fn parse_sink(s: &str) -> Result<SinkSpec, String> {
    s.parse()
}

/// `250ms`, `30s`, `5m`, `3h`, `1d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 5m, 3h)"))?;
    let secs = |k: u64| n.checked_mul(k).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        _ => None,
    }
    .ok_or_else(|| format!("{s:?} is not a duration (e.g. 30s, 5m, 3h)"))
}

/// Logs go to standard error; `RUST_LOG` overrides the default level.
pub fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Renders findings that do not come from files (no file locations for SARIF).
pub fn render(findings: &[Finding], summary: &Summary, format: Format, color: bool) -> String {
    match format {
        Format::Json => sinks::json::render(findings, summary),
        Format::Table => sinks::table::render(findings, summary, color),
        Format::Sarif => sinks::sarif::render(findings, summary, &|_| None),
    }
}

/// The JSON findings document as a value (what the webhook receives).
pub fn document(findings: &[Finding], summary: &Summary) -> Value {
    serde_json::from_str(&sinks::json::render(findings, summary)).unwrap_or(Value::Null)
}

fn report_failures(failures: &[crate::sinks::delivery::SinkFailure]) {
    let mut stderr = std::io::stderr().lock();
    for f in failures {
        let _ = writeln!(stderr, "error: {f}");
    }
}

/// `scan --cluster`: read the cluster, judge, print, deliver.
pub fn run_scan(args: &ScanArgs) -> anyhow::Result<ExitCode> {
    init_tracing("warn");
    let connect = &args.cluster.connect;
    let live = match connect.live_options() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    runtime()?.block_on(async {
        let metrics = Metrics::new();
        let client = match kube_client::connect(&connect.connect_options()).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        };
        let api = ApiContext::new(client, connect.retry(), metrics.clone());
        let sinks = match Sinks::new(
            args.sinks.sinks.clone(),
            Some(api.clone()),
            args.sinks.settings(),
            metrics.clone(),
        ) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        };
        let opts = ClusterScanOptions {
            namespaces: connect.namespaces.clone(),
            page_size: connect.page_size,
        };
        let started = std::time::Instant::now();
        let scan = match cluster::scan(&api, &opts, &args.check_options(), &live).await {
            Ok(s) => s,
            Err(e) => {
                metrics.scan_done(false, 0, started.elapsed());
                eprintln!("error: cluster scan failed: {e}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        };
        metrics.judged(&scan.findings, true, scan.workloads, started.elapsed());
        let input = json!({
            "source": "cluster",
            "namespaces": scan.scope.namespaces.len(),
            "workloads": scan.workloads,
            "apiRequests": api.stats.requests(),
            "apiRetries": api.stats.retries(),
            "listRestarts": api.stats.list_restarts(),
            "unreadable": scan.unreadable,
        });
        let summary = Summary::new(&scan.findings, args.fail_on, Some(input));
        print_report(&render(
            &scan.findings,
            &summary,
            args.format,
            args.color.enabled(),
        ))?;
        if sinks.is_empty() {
            return Ok(exit_code(&summary, false));
        }
        let failures = sinks
            .deliver(Delivery {
                findings: &scan.findings,
                document: &document(&scan.findings, &summary),
                scope: &scan.scope,
            })
            .await;
        report_failures(&failures);
        Ok(exit_code(&summary, !failures.is_empty()))
    })
}

fn print_report(report: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(report.as_bytes())
        .and_then(|_| stdout.flush())
        .context("writing the report")
}

/// 3 when a sink failed (the findings were printed all the same), else 1 or 0 by `--fail-on`.
pub fn exit_code(summary: &Summary, sink_failed: bool) -> ExitCode {
    ExitCode::from(if sink_failed {
        EXIT_SINK_FAILED
    } else if summary.failed {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}

/// Checks the sink flags of a file scan before anything is read: sinks that write to the
/// Kubernetes API need `--cluster`. Returns the usage error, if any.
pub fn file_sinks_error(args: &ScanArgs) -> Option<String> {
    if args.cluster.connect.any_given() {
        return Some("--kubeconfig, --context and --namespace need --cluster".to_string());
    }
    args.sinks
        .sinks
        .iter()
        .find(|s| s.needs_cluster())
        .map(|s| format!("--sink {s} writes to the Kubernetes API and needs --cluster"))
}

/// Delivers the findings of a file scan to the non-cluster sinks (alertmanager, webhook,
/// metrics). Returns whether any failed (failures are reported on standard error).
pub fn deliver_file_sinks(
    args: &ScanArgs,
    findings: &[Finding],
    summary: &Summary,
    loaded: &LoadedInput,
) -> anyhow::Result<bool> {
    if args.sinks.sinks.is_empty() {
        return Ok(false);
    }
    init_tracing("warn");
    let metrics = Metrics::new();
    metrics.judged(findings, true, loaded.summary.workloads, Duration::ZERO);
    let sinks = Sinks::new(
        args.sinks.sinks.clone(),
        None,
        args.sinks.settings(),
        metrics,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Alerts are resolved only in the namespaces this input spoke about.
    let mut namespaces: std::collections::BTreeSet<String> = loaded
        .snapshot
        .namespace_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    namespaces.extend(
        findings
            .iter()
            .map(|f| crate::rules::group_namespace(f).to_string()),
    );
    namespaces.remove("");
    let scope = ScanScope {
        all_namespaces: false,
        namespaces,
    };
    let failures = runtime()?.block_on(sinks.deliver(Delivery {
        findings,
        document: &document(findings, summary),
        scope: &scope,
    }));
    report_failures(&failures);
    Ok(!failures.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("3h"), Ok(Duration::from_secs(10800)));
        assert!(parse_duration("3 hours").is_err());
        assert!(parse_duration("h").is_err());
    }
}
