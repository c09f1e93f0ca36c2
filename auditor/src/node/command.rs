//! `egress-auditor node`: one pass over this node's pod network namespaces.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::inspect::Toolset;
use super::{pods, run_node, NodeOptions};
use crate::cli::scan::Format;
use crate::cli::{ColorChoice, EXIT_BAD_INPUT, EXIT_FINDINGS, EXIT_OK};
use crate::finding::Severity;
use crate::sinks::{self, Summary};
use crate::sources::cluster::ConnectOptions;

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
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse()
}

pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let index = match (&args.pods, &args.node_name) {
        (Some(file), _) => match pods::from_file(file) {
            Ok(i) => i,
            Err(errors) => {
                let mut stderr = std::io::stderr().lock();
                for e in errors {
                    let _ = writeln!(stderr, "error: {e}");
                }
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        },
        (None, Some(node)) => {
            let connect = ConnectOptions {
                kubeconfig: args.kubeconfig.clone(),
                context: None,
            };
            pods::from_api(node, &connect)
                .with_context(|| format!("listing the pods of node {node}"))?
        }
        (None, None) => {
            eprintln!("error: give --pods FILE, or --node-name NODE (or NODE_NAME) to read this node's pods from the API server");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let tools = Toolset::detect();
    if tools.is_empty() {
        eprintln!("error: none of iptables-legacy-save, iptables-nft-save, iptables-save or nft is on PATH");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let opts = NodeOptions {
        proc_root: (!args.no_proc).then(|| args.proc_root.clone()),
        netns_dirs: args.netns_dirs.clone(),
        jobs: args.jobs,
        tools,
    };
    if args.interval == 0 {
        return one_pass(&args, &opts, &index);
    }
    loop {
        // A failed pass (stdout closed) is fatal; findings are not: the next pass reports again.
        one_pass(&args, &opts, &index)?;
        std::thread::sleep(std::time::Duration::from_secs(args.interval));
    }
}

/// One pass over the node's namespaces; writes the report and returns its exit code.
fn one_pass(
    args: &NodeArgs,
    opts: &NodeOptions,
    index: &pods::PodIndex,
) -> anyhow::Result<ExitCode> {
    let report = run_node(opts, index);
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
        Format::Json => sinks::json::render(&report.findings, &summary),
        Format::Table => sinks::table::render(&report.findings, &summary, args.color.enabled()),
        Format::Sarif => sinks::sarif::render(&report.findings, &summary, &|_| None),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
        .context("writing the report")?;
    Ok(ExitCode::from(if summary.failed {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }))
}
