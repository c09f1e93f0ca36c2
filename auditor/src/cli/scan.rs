//! `egress-auditor scan`: audit Kubernetes manifests for ways around the Istio sidecar.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::{ColorChoice, EXIT_BAD_INPUT, EXIT_FINDINGS, EXIT_OK};
use crate::checks::{
    check_cluster_wide, check_workload_in_context, check_workload_local, sort_findings,
    CheckOptions, WorkloadFacts,
};
use crate::finding::{Finding, Severity};
use crate::sinks::{self, SourceLocation, Summary};
use crate::sources::files::{self, InputError, LoadedInput};

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
    pub cluster: super::cluster::ClusterArgs,

    /// `--sink` (any mode).
    #[command(flatten)]
    pub sinks: super::cluster::SinkArgs,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse()
}

impl ScanArgs {
    pub fn check_options(&self) -> CheckOptions {
        let mut opts = CheckOptions::default();
        if !self.exempt_namespaces.is_empty() {
            opts.host_network_exempt_namespaces = self
                .exempt_namespaces
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>();
        }
        opts
    }
}

/// Runs the scan and writes the report to standard output. Bad input is reported on standard
/// error, one line per problem, and gives exit code 2.
pub fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    if args.cluster.cluster {
        return super::cluster::run_scan(&args);
    }
    if let Some(e) = super::cluster::file_sinks_error(&args) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let (findings, loaded) = match scan_files(&args.input, &args.check_options()) {
        Ok(l) => l,
        Err(errors) => {
            let mut stderr = std::io::stderr().lock();
            for e in &errors {
                let _ = writeln!(stderr, "error: {e}");
            }
            let files: BTreeSet<_> = errors
                .iter()
                .map(|e| e.path().display().to_string())
                .collect();
            let _ = writeln!(
                stderr,
                "error: {} problem{} in {} file{}; nothing was scanned",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" },
                files.len(),
                if files.len() == 1 { "" } else { "s" },
            );
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let input = serde_json::to_value(&loaded.summary).ok();
    let summary = Summary::new(&findings, args.fail_on, input);
    let report = render(&findings, &summary, &loaded, &args);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(report.as_bytes())
        .and_then(|_| stdout.flush())
        .context("writing the report")?;
    let sink_failed = super::cluster::deliver_file_sinks(&args, &findings, &summary, &loaded)?;
    if sink_failed {
        return Ok(ExitCode::from(super::EXIT_SINK_FAILED));
    }
    Ok(ExitCode::from(if summary.failed {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }))
}

/// Reads the manifests and judges them: the same findings, in the same order, as
/// [`crate::checks::check_all`] over [`files::load_paths`], but each pod is judged as it is read
/// and only its [`WorkloadFacts`] are kept, so memory does not grow with pod specs. The returned
/// input's snapshot holds no workloads.
pub fn scan_files(
    paths: &[PathBuf],
    opts: &CheckOptions,
) -> Result<(Vec<Finding>, LoadedInput), Vec<InputError>> {
    type FileState = (Vec<Finding>, Vec<WorkloadFacts>);
    let (loaded, per_file) = files::read_paths_with(
        paths,
        FileState::default,
        |(findings, facts): &mut FileState, w| {
            findings.extend(check_workload_local(opts, &w));
            facts.push(WorkloadFacts::of(&w));
        },
    )?;
    let mut findings = Vec::new();
    let mut facts = Vec::new();
    for (f, w) in per_file {
        findings.extend(f);
        facts.extend(w);
    }
    for f in &facts {
        findings.extend(check_workload_in_context(&loaded.snapshot, f));
    }
    findings.extend(check_cluster_wide(&loaded.snapshot, &facts));
    sort_findings(&mut findings);
    Ok((findings, loaded))
}

/// Renders findings read from files in the requested format.
pub fn render(
    findings: &[Finding],
    summary: &Summary,
    loaded: &LoadedInput,
    args: &ScanArgs,
) -> String {
    match args.format {
        Format::Json => sinks::json::render(findings, summary),
        Format::Table => sinks::table::render(findings, summary, args.color.enabled()),
        Format::Sarif => {
            let locate = |f: &Finding| {
                loaded.origin_of(f).map(|at| SourceLocation {
                    uri: at.path.display().to_string(),
                    line: at.line,
                })
            };
            sinks::sarif::render(findings, summary, &locate)
        }
    }
}
