//! The argument groups the subcommands share: report format and colour, `scan`'s arguments,
//! how to reach the cluster (`--cluster`, `--kubeconfig`, ...), the `--sink` flags, and the
//! parsers of durations and severities.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use crate::checks::live::{parse_selector, LiveCheckOptions};
use crate::checks::CheckOptions;
use crate::finding::Severity;
use crate::kube_client::{ConnectOptions, RetryPolicy};
use crate::sinks::delivery::SinkSpec;
use crate::sinks::settings::SinkSettings;

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `{"findings":[...],"summary":{...}}`.
    Json,
    /// One line per finding, grouped by namespace.
    Table,
    /// SARIF 2.1.0 for CI code-scanning views.
    Sarif,
}

/// When to colour terminal output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when standard output is a terminal and NO_COLOR is unset.
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    pub fn enabled(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

/// `scan`'s arguments; its pipeline ([`super::pipeline::run_file_scan`],
/// [`super::pipeline::run_cluster_scan`]) takes them whole.
#[derive(Debug, Clone, clap::Args)]
pub struct ScanArgs {
    /// Manifest files or directories (searched recursively for .yaml, .yml, .json); `-` reads
    /// standard input.
    #[arg(long, short = 'i', num_args = 1.., required_unless_present = "cluster", value_name = "PATH")]
    pub input: Vec<PathBuf>,

    /// Report format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Json)]
    pub format: Format,

    /// Exit 1 when any finding is at or above this severity (info, low, medium, high, critical).
    #[arg(long, default_value = "low", value_parser = parse_severity)]
    pub fail_on: Severity,

    /// Namespace where hostNetwork pods are expected (repeatable). Giving any replaces the
    /// default, kube-system.
    #[arg(long = "exempt-namespace", value_name = "NAMESPACE")]
    pub exempt_namespaces: Vec<String>,

    /// Colour the table output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// `--cluster` and how to reach it.
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// `--sink` (any mode).
    #[command(flatten)]
    pub sinks: SinkArgs,
}

/// The check settings from `--exempt-namespace` (any given replaces the default, kube-system).
pub fn check_options(exempt_namespaces: &[String]) -> CheckOptions {
    let mut opts = CheckOptions::default();
    if !exempt_namespaces.is_empty() {
        opts.host_network_exempt_namespaces =
            exempt_namespaces.iter().cloned().collect::<BTreeSet<_>>();
    }
    opts
}

/// `--fail-on` values: info, low, medium, high, critical.
pub fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse()
}

impl ScanArgs {
    pub fn check_options(&self) -> CheckOptions {
        check_options(&self.exempt_namespaces)
    }
}

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
