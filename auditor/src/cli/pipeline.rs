//! The pipeline every mode runs: read (a source) → judge (the checks) → deliver (the report on
//! standard output, then the `--sink`s). Sources only read and sinks only render and send; this
//! is where they meet the checks. `scan` runs it over files ([`run_file_scan`]) or a cluster
//! ([`run_cluster_scan`]), `watch` calls [`judge`] on every change, and `node` and `rules` use
//! its report helpers and exit codes.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use super::args::{Format, ScanArgs};
use crate::checks::live::{
    check_live, egress_filter_missing, sidecar_not_running, LiveCheckOptions,
};
use crate::checks::{
    check_all, check_cluster_wide, check_workload_in_context, check_workload_local, sort_findings,
    CheckOptions, WorkloadFacts,
};
use crate::finding::{Finding, Severity};
use crate::kube_client::{self, ApiContext, ClusterError};
use crate::metrics::Metrics;
use crate::rules::{group_namespace, SCAN_INCOMPLETE};
use crate::sinks::delivery::{Delivery, SinkFailure, Sinks};
use crate::sinks::{self, SourceLocation, Summary};
use crate::snapshot::{ScanScope, Snapshot};
use crate::sources::cluster::{self, ClusterScanOptions, Unreadable};
use crate::sources::files::{self, InputError, LoadedInput};

/// Exit code when nothing reaches `--fail-on`.
pub const EXIT_OK: u8 = 0;
/// Exit code when findings reach `--fail-on`.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code for bad input or usage.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code when a sink (`--sink`) failed; the findings were still printed.
pub const EXIT_SINK_FAILED: u8 = 3;

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

/// The result of `scan --cluster`.
#[derive(Debug, Clone)]
pub struct ClusterScan {
    /// File-mode checks, live-only checks and `scan-incomplete` entries, sorted.
    pub findings: Vec<Finding>,
    pub unreadable: Vec<Unreadable>,
    pub scope: ScanScope,
    pub workloads: usize,
}

/// Runs every check (file-mode and live-only) and adds the unreadable entries.
pub fn judge(
    snapshot: &Snapshot,
    unreadable: &[Unreadable],
    scope: ScanScope,
    checks: &CheckOptions,
    live: &LiveCheckOptions,
) -> ClusterScan {
    let mut findings = check_all(snapshot, checks);
    findings.extend(check_live(snapshot, &scoped_live(live, &scope)));
    findings.extend(unreadable.iter().map(scan_incomplete));
    sort_findings(&mut findings);
    ClusterScan {
        findings,
        unreadable: unreadable.to_vec(),
        scope,
        workloads: snapshot.workloads.len(),
    }
}

/// The `scan-incomplete` finding that reports what a read could not see.
pub fn scan_incomplete(u: &Unreadable) -> Finding {
    let (kind, name, place) = match &u.namespace {
        Some(ns) => ("Namespace", ns.clone(), format!("in namespace {ns}")),
        None => ("Cluster", "cluster".to_string(), "cluster-wide".to_string()),
    };
    Finding {
        rule: SCAN_INCOMPLETE.to_string(),
        severity: Severity::High,
        kind: kind.to_string(),
        namespace: None,
        name,
        container: None,
        message: format!(
            "{} {place} could not be read, so they were not judged: {}",
            u.resource, u.message
        ),
        evidence: json!({"resource": u.resource, "namespace": u.namespace, "httpStatus": u.code}),
    }
}

/// What a cluster scan keeps of a pod once its page is judged.
struct JudgedPod {
    /// The rules that need nothing but the pod (and the live `sidecar-not-running`).
    findings: Vec<Finding>,
    facts: WorkloadFacts,
    /// The pod itself, only when it is an egress gateway (`egress-filter-missing` reads it).
    /// Boxed: a `Workload` is over 2 KiB inline, which every kept pod would otherwise carry.
    gateway: Option<Box<crate::snapshot::Workload>>,
}

/// Reads the cluster and judges it: the same findings as [`judge`] over [`cluster::read_snapshot`],
/// but each pod is judged as its page arrives and only its [`WorkloadFacts`] are kept (and the
/// egress gateway pods whole), so memory does not grow with pod specs.
pub async fn scan_cluster(
    ctx: &ApiContext,
    opts: &ClusterScanOptions,
    checks: &CheckOptions,
    live: &LiveCheckOptions,
) -> Result<ClusterScan, ClusterError> {
    let read = cluster::read_cluster(ctx, opts, |w| {
        let mut findings = check_workload_local(checks, &w);
        findings.extend(sidecar_not_running(&w, live));
        // Kept until the end: without room for more (a list grown by one finding has room for
        // four, 550 bytes more than it holds).
        findings.shrink_to_fit();
        let facts = WorkloadFacts::of(&w);
        let labels = w.labels();
        let gateway = live
            .egress_gateway_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            .then(|| Box::new(w));
        Some(JudgedPod {
            findings,
            facts,
            gateway,
        })
    })
    .await?;
    let mut snapshot = read.snapshot;
    let mut findings = Vec::with_capacity(read.pods.iter().map(|p| p.findings.len()).sum());
    let mut facts = Vec::with_capacity(read.pods.len());
    for pod in read.pods {
        findings.extend(pod.findings);
        facts.push(pod.facts);
        snapshot.workloads.extend(pod.gateway.map(|g| *g));
    }
    for f in &facts {
        findings.extend(check_workload_in_context(&snapshot, checks, f));
    }
    findings.extend(check_cluster_wide(&snapshot, checks, &facts));
    findings.extend(egress_filter_missing(
        &snapshot,
        &scoped_live(live, &read.scope),
    ));
    findings.extend(read.unreadable.iter().map(scan_incomplete));
    sort_findings(&mut findings);
    Ok(ClusterScan {
        findings,
        unreadable: read.unreadable,
        scope: read.scope,
        workloads: facts.len(),
    })
}

/// A scan restricted to namespaces that do not include Istio's root namespace cannot tell
/// whether an egress gateway exists.
fn scoped_live(live: &LiveCheckOptions, scope: &ScanScope) -> LiveCheckOptions {
    let mut live = live.clone();
    if !scope.all_namespaces && !scope.namespaces.contains(&live.root_namespace) {
        live.report_absent_gateway = false;
    }
    live
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
    // Sized once: grown by doubling, the list of every pod's facts would hold up to twice its
    // size while the per-file lists are still there.
    let mut findings = Vec::with_capacity(per_file.iter().map(|(f, _)| f.len()).sum());
    let mut facts = Vec::with_capacity(per_file.iter().map(|(_, w)| w.len()).sum());
    for (f, w) in per_file {
        findings.extend(f);
        facts.extend(w);
    }
    for f in &facts {
        findings.extend(check_workload_in_context(&loaded.snapshot, opts, f));
    }
    findings.extend(check_cluster_wide(&loaded.snapshot, opts, &facts));
    sort_findings(&mut findings);
    Ok((findings, loaded))
}

/// `scan` over files: read and judge the manifests, print the report, deliver to the sinks. Bad
/// input is reported on standard error, one line per problem, and gives exit code 2.
pub fn run_file_scan(args: &ScanArgs) -> anyhow::Result<ExitCode> {
    if let Some(e) = file_sinks_error(args) {
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
    if args.format == Format::Json {
        write_json_report(&findings, &summary)?;
    } else {
        print_report(&render_files(&findings, &summary, &loaded, args))?;
    }
    let sink_failed = deliver_file_sinks(args, &findings, &summary, &loaded)?;
    Ok(exit_code(&summary, sink_failed))
}

/// `scan --cluster`: read the cluster, judge, print, deliver.
pub fn run_cluster_scan(args: &ScanArgs) -> anyhow::Result<ExitCode> {
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
        let scan = match scan_cluster(&api, &opts, &args.check_options(), &live).await {
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
        if args.format == Format::Json {
            write_json_report(&scan.findings, &summary)?;
        } else {
            print_report(&render(
                &scan.findings,
                &summary,
                args.format,
                args.color.enabled(),
            ))?;
        }
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
    let mut namespaces: BTreeSet<String> = loaded
        .snapshot
        .namespace_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    namespaces.extend(findings.iter().map(|f| group_namespace(f).to_string()));
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

/// Renders findings read from files in the requested format (SARIF points into the files).
pub fn render_files(
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
        Format::Html => sinks::html::render(findings, summary),
    }
}

/// Renders findings that do not come from files (no file locations for SARIF).
pub fn render(findings: &[Finding], summary: &Summary, format: Format, color: bool) -> String {
    match format {
        Format::Json => sinks::json::render(findings, summary),
        Format::Table => sinks::table::render(findings, summary, color),
        Format::Sarif => sinks::sarif::render(findings, summary, &|_| None),
        Format::Html => sinks::html::render(findings, summary),
    }
}

/// The JSON findings document as a value (what the webhook receives).
pub fn document(findings: &[Finding], summary: &Summary) -> Value {
    serde_json::from_str(&sinks::json::render(findings, summary)).unwrap_or(Value::Null)
}

fn print_report(report: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(report.as_bytes())
        .and_then(|_| stdout.flush())
        .context("writing the report")
}

/// The JSON report straight to standard output.
fn write_json_report(findings: &[Finding], summary: &Summary) -> anyhow::Result<()> {
    let mut stdout = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    sinks::json::write(&mut stdout, findings, summary)
        .and_then(|_| stdout.flush())
        .context("writing the report")
}

fn report_failures(failures: &[SinkFailure]) {
    let mut stderr = std::io::stderr().lock();
    for f in failures {
        let _ = writeln!(stderr, "error: {f}");
    }
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
