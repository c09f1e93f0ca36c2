//! `egress-auditor node`: passes over this node's pod network namespaces, each printed and
//! delivered to the `--sink`s (the same sinks and delivery code as `scan`).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::args::{parse_severity, ColorChoice, Format, SinkArgs};
use super::pipeline::{document, exit_code, init_tracing, render, EXIT_BAD_INPUT};
use crate::finding::Severity;
use crate::kube_client::{connect, ApiContext, ConnectOptions, RetryPolicy};
use crate::metrics::Metrics;
use crate::node::inspect::Toolset;
use crate::node::{pods, run_node, NamespaceStatus, NodeOptions, NodeReport};
use crate::sinks::delivery::{Delivery, SinkFailure, Sinks};
use crate::sinks::settings::SinkSettings;
use crate::sinks::{self, Summary};
use crate::snapshot::{Origin, ScanScope};

#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Read the node's pods from this file (`kubectl get pods -o yaml`) instead of the API server.
    #[arg(long, value_name = "FILE")]
    pub pods: Option<PathBuf>,

    /// This node's name: its pods are listed from the API server with
    /// `fieldSelector=spec.nodeName=NODE` (set NODE_NAME from the downward API in the DaemonSet).
    #[arg(long, env = "NODE_NAME", value_name = "NODE")]
    pub node_name: Option<String>,

    /// kubeconfig for the API server (default: KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Also inspect the named network namespaces in this directory (e.g. /var/run/netns),
    /// matched to pods by UID, `NAMESPACE_NAME` or pod name. Repeatable.
    #[arg(long = "netns-dir", value_name = "DIR")]
    pub netns_dirs: Vec<PathBuf>,

    /// Where pod processes are found (the node's /proc: the agent runs with hostPID).
    #[arg(long, default_value = "/proc", value_name = "DIR")]
    pub proc_root: PathBuf,

    /// Do not scan processes; inspect only --netns-dir namespaces.
    #[arg(long)]
    pub no_proc: bool,

    /// Namespaces inspected at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,

    /// Repeat every this many seconds, writing one report per pass (JSON on one line), and never
    /// exit: the DaemonSet form. 0 runs one pass and exits with the report's exit code.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub interval: u64,

    /// Report format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Json)]
    pub format: Format,

    /// Exit 1 when any finding is at or above this severity (info, low, medium, high, critical).
    #[arg(long, default_value = "low", value_parser = parse_severity)]
    pub fail_on: Severity,

    /// Colour the table output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// `--sink`, as in `scan`. policyreport and events write through the API server (the
    /// --kubeconfig, or in-cluster); the node's PolicyReports are named
    /// `egress-guard-node-<NODE>` and its alerts carry `source="node"` and `node`. Needs
    /// --node-name.
    #[command(flatten)]
    pub sinks: SinkArgs,
}

/// Where the pods come from: read again before every pass, so pods that started or left since
/// the last pass are judged (or dropped).
fn load_pods(args: &NodeArgs) -> anyhow::Result<Result<pods::PodIndex, Vec<String>>> {
    match (&args.pods, &args.node_name) {
        (Some(file), _) => Ok(pods::from_file(file)),
        (None, Some(node)) => {
            let connect = ConnectOptions {
                kubeconfig: args.kubeconfig.clone(),
                context: None,
            };
            pods::from_api(node, &connect)
                .with_context(|| format!("listing the pods of node {node}"))
                .map(Ok)
        }
        (None, None) => Ok(Err(vec!["give --pods FILE, or --node-name NODE (or NODE_NAME) to read this node's pods from the API server".to_string()])),
    }
}

fn print_errors(errors: &[String]) {
    let mut stderr = std::io::stderr().lock();
    for e in errors {
        let _ = writeln!(stderr, "error: {e}");
    }
}

/// The sinks of the node agent, with the runtime they run on.
struct NodeSinks {
    sinks: Sinks,
    metrics: Metrics,
    runtime: tokio::runtime::Runtime,
}

impl NodeSinks {
    /// `None` when no `--sink` was given; an error message for a bad combination.
    fn new(args: &NodeArgs) -> anyhow::Result<Result<Option<NodeSinks>, String>> {
        if args.sinks.sinks.is_empty() {
            return Ok(Ok(None));
        }
        let Some(node) = args.node_name.clone().filter(|n| !n.is_empty()) else {
            return Ok(Err("--sink needs --node-name NODE (or NODE_NAME): the node's reports and alerts are named after it".to_string()));
        };
        init_tracing("warn");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let metrics = Metrics::new();
        let api = if args.sinks.sinks.iter().any(|s| s.needs_cluster()) {
            let opts = ConnectOptions {
                kubeconfig: args.kubeconfig.clone(),
                context: None,
            };
            match runtime.block_on(connect(&opts)) {
                Ok(client) => Some(ApiContext::new(
                    client,
                    RetryPolicy::default(),
                    metrics.clone(),
                )),
                Err(e) => return Ok(Err(e.to_string())),
            }
        } else {
            None
        };
        let settings = SinkSettings {
            origin: Origin::Node { node },
            ..args.sinks.settings()
        };
        match Sinks::new(args.sinks.sinks.clone(), api, settings, metrics.clone()) {
            Ok(sinks) => Ok(Ok(Some(NodeSinks {
                sinks,
                metrics,
                runtime,
            }))),
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    /// Delivers one pass; failures are logged on standard error and returned.
    fn deliver(
        &self,
        report: &NodeReport,
        summary: &Summary,
        elapsed: Duration,
    ) -> Vec<SinkFailure> {
        let judged = report
            .namespaces
            .iter()
            .filter(|n| matches!(n.status, NamespaceStatus::Judged { .. }))
            .count();
        self.metrics.judged(&report.findings, true, judged, elapsed);
        let failures = self.runtime.block_on(self.sinks.deliver(Delivery {
            findings: &report.findings,
            document: &document(&report.findings, summary),
            scope: &pass_scope(report),
        }));
        print_errors(&failures.iter().map(ToString::to_string).collect::<Vec<_>>());
        failures
    }
}

/// The namespaces of the pods a pass judged (Events are listed there).
fn pass_scope(report: &NodeReport) -> ScanScope {
    let namespaces: BTreeSet<String> = report
        .namespaces
        .iter()
        .filter_map(|n| n.pod.as_deref())
        .filter_map(|p| p.split_once('/').map(|(ns, _)| ns.to_string()))
        .chain(report.findings.iter().filter_map(|f| f.namespace.clone()))
        .collect();
    ScanScope {
        all_namespaces: false,
        namespaces,
    }
}

pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let index = match load_pods(&args)? {
        Ok(i) => i,
        Err(errors) => {
            print_errors(&errors);
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let tools = Toolset::detect();
    if tools.is_empty() {
        eprintln!("error: none of iptables-legacy-save, iptables-nft-save, iptables-save or nft is on PATH");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let sinks = match NodeSinks::new(&args)? {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let opts = NodeOptions {
        proc_root: (!args.no_proc).then(|| args.proc_root.clone()),
        netns_dirs: args.netns_dirs.clone(),
        jobs: args.jobs,
        tools,
    };
    if args.interval == 0 {
        return one_pass(&args, &opts, &index, sinks.as_ref());
    }
    let mut index = index;
    loop {
        // A failed pass (stdout closed) is fatal; findings and sink failures are not: the next
        // pass reports and delivers again.
        one_pass(&args, &opts, &index, sinks.as_ref())?;
        std::thread::sleep(Duration::from_secs(args.interval));
        match load_pods(&args) {
            Ok(Ok(i)) => index = i,
            // Judging against a stale list beats skipping passes: pods that left only show as
            // namespaces without a pod.
            Ok(Err(errors)) => print_errors(&errors),
            Err(e) => eprintln!("error: {e:#}; judging against the previous pod list"),
        }
    }
}

/// One pass over the node's namespaces: writes the report, delivers it, and returns the exit
/// code (3 when a sink failed, else by `--fail-on`).
fn one_pass(
    args: &NodeArgs,
    opts: &NodeOptions,
    index: &pods::PodIndex,
    sinks: Option<&NodeSinks>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let report = run_node(opts, index);
    let elapsed = started.elapsed();
    for e in &report.discovery_errors {
        eprintln!("warning: {e}");
    }
    let mut input = report.counts();
    if let serde_json::Value::Object(m) = &mut input {
        m.insert("pods".into(), serde_json::json!(index.len()));
        m.insert(
            "details".into(),
            serde_json::to_value(&report.namespaces).unwrap_or_default(),
        );
    }
    let summary = Summary::new(&report.findings, args.fail_on, Some(input));
    let out = match args.format {
        Format::Json if args.interval > 0 => {
            // One line per pass, for log collectors.
            let pretty = sinks::json::render(&report.findings, &summary);
            match serde_json::from_str::<serde_json::Value>(&pretty) {
                Ok(v) => format!("{v}\n"),
                Err(_) => pretty,
            }
        }
        format => render(&report.findings, &summary, format, args.color.enabled()),
    };
    {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(out.as_bytes())
            .and_then(|_| stdout.flush())
            .context("writing the report")?;
    }
    let sink_failed = sinks.is_some_and(|s| !s.deliver(&report, &summary, elapsed).is_empty());
    Ok(exit_code(&summary, sink_failed))
}
