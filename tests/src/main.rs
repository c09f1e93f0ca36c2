//! `egress-sim`: run a proxy-wasm filter the way the egress gateway's Envoy runs it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};

use egress_sim::accesslog::text::TextFormat;
use egress_sim::accesslog::{Encoding, LogClock, LogOptions, LogReader, Unusable};
use egress_sim::insights::html::{self, ReportMeta};
use egress_sim::insights::recommend::{self, GroupBy, Observed};
use egress_sim::insights::{
    render, InputStats, RequestFacts, Summary, DEFAULT_MAX_GROUPS, UNUSABLE_EXAMPLES,
};
use egress_sim::limits;
use egress_sim::replay::{self, ReplayError, ReplayItem};
use egress_sim::{explain, plaintext};
use egress_sim::{
    FailurePolicy, Host, HostError, HostOptions, LogLevel, LogRecord, PluginConfig, VmConfig,
};

#[derive(Parser)]
#[command(
    name = "egress-sim",
    version,
    about = "Runs a proxy-wasm filter as Envoy does: replay traffic through it, or check a configuration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replays requests (JSON lines) through the filter and prints one JSON line per request.
    ///
    /// Input, one object per line (all fields but "id" optional; "http" makes an HTTP request,
    /// otherwise a TCP connection):
    /// {"id":"r1","at_ms":0,"worker":0,"source":{"principal":"cluster.local/ns/dev/sa/app",
    /// "ip":"10.1.2.3","port":51000},"destination":{"ip":"93.184.216.34","port":443},
    /// "sni":"api.example.com","http":{"method":"GET","authority":"api.example.com",
    /// "path":"/v1","scheme":"https","protocol":"HTTP/1.1","headers":{"user-agent":"curl/8"},
    /// "body_base64":"..."},"tcp":{"data_base64":"..."}}
    ///
    /// Output: {"id","decision":"allow|deny|ratelimited|error","status","headers","logs"}, with
    /// "body", "details" and "error" when they apply.
    ///
    /// With --envoy-access-log, the egress gateway's access log (Istio's JSON or text format) is
    /// streamed instead: each line becomes an HTTP request or a TLS passthrough connection;
    /// lines that cannot be used are counted, the first few shown, and the run goes on.
    Replay(ReplayArgs),
    /// Runs Envoy's configuration canary: prints `ok`, or the filter's reason and exits 1.
    ///
    /// With `--downstream plaintext`, also prints a `warning:` line for everything that can never
    /// match because requests carry no principal (exit code 0 all the same).
    CheckConfig(CheckConfigArgs),
    /// Runs one request through the filter at debug log level and prints, from the filter's own
    /// log, each tier, each policy and rule looked at and why it matched or not, then the
    /// decision and the decision line.
    ///
    /// The request is one object in the replay input format (see `replay --help`); "id" may be
    /// left out.
    Explain(ExplainArgs),
    /// Prints Limitador's limits file (limits.yaml) for the configuration's global rate limits,
    /// from the filter's own description of them, so the service counts what the filter sends.
    Limits(ModuleArgs),
    /// Recommends the smallest allow-list that admits the traffic of an access log.
    ///
    /// Per source namespace (or principal): exact hosts with their ports and HTTP methods, TLS
    /// passthrough by server name; `*.<registrable domain>` only where --collapse-min names
    /// below one registrable domain were seen (never a public suffix). Prints EgressPolicy YAML
    /// or a pluginConfig; says on stderr what it admits and what it left out.
    Recommend(RecommendArgs),
    /// Writes a synthetic egress gateway access log (Istio JSON format), the same for the same
    /// seed; `examples/access-log.json` is made with the defaults.
    #[command(hide = true)]
    GenerateAccessLog(GenerateArgs),
}

/// How to read an Envoy access log.
#[derive(Args)]
struct LogFormatArgs {
    /// The log's encoding (Istio meshConfig.accessLogEncoding); auto: JSON when the first line
    /// starts with "{".
    #[arg(long, value_enum, default_value = "auto")]
    access_log_encoding: EncodingArg,
    /// The text format the mesh uses (meshConfig.accessLogFormat); default: Istio's default.
    #[arg(long, value_name = "FORMAT")]
    text_format: Option<String>,
    /// Where the source's SPIFFE principal is: a JSON key (e.g. downstream_peer_uri_san, for
    /// "%DOWNSTREAM_PEER_URI_SAN%" added to the format), or for the text format the operator
    /// (e.g. %DOWNSTREAM_PEER_URI_SAN%). Without it sources have no principal.
    #[arg(long, value_name = "FIELD")]
    principal_field: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum EncodingArg {
    Auto,
    Json,
    Text,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    Table,
    Json,
    Csv,
    /// One self-contained page (no network fetches): summary and decisions over time.
    Html,
}

#[derive(Clone, Copy, ValueEnum)]
enum GroupByArg {
    Namespace,
    Principal,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RecommendOutput {
    /// EgressPolicy objects (policy.egress-guard.dev/v1alpha1), one per namespace.
    EgressPolicy,
    /// A pluginConfig with one ALLOW policy per namespace or principal.
    PluginConfig,
}

#[derive(Args)]
struct RecommendArgs {
    /// The egress gateway's Envoy access log ("-" reads standard input).
    #[arg(long, value_name = "FILE")]
    envoy_access_log: String,
    #[command(flatten)]
    log_format: LogFormatArgs,
    /// Leave out source and host pairs seen fewer times (they are listed on stderr).
    #[arg(long, default_value_t = 1, value_name = "N")]
    min_requests: u64,
    /// Names below one registrable domain that make a `*.domain` wildcard.
    #[arg(long, default_value_t = recommend::DEFAULT_COLLAPSE_MIN, value_parser = clap::value_parser!(u32).range(2..), value_name = "K")]
    collapse_min: u32,
    /// One policy per source namespace, or per principal.
    #[arg(long, value_enum, default_value = "namespace")]
    group_by: GroupByArg,
    #[arg(long, value_enum, default_value = "egress-policy")]
    output: RecommendOutput,
    /// Mark the policies dry-run (istio.io/dry-run, "dryRun"): logged, not enforced.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(long, default_value_t = egress_sim::synthetic::EXAMPLE_SEED)]
    seed: u64,
    #[arg(long, default_value_t = egress_sim::synthetic::EXAMPLE_LINES)]
    lines: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Downstream {
    /// Clients reach the gateway with Istio mTLS: requests carry the client's principal.
    Mtls,
    /// Clients reach the gateway in plaintext: no principal, no namespace.
    Plaintext,
}

#[derive(Args)]
struct CheckConfigArgs {
    #[command(flatten)]
    module: ModuleArgs,
    /// How clients reach the gateway; with `plaintext`, what needs a principal is reported.
    #[arg(long, value_enum, default_value = "mtls")]
    downstream: Downstream,
}

#[derive(Args)]
struct ExplainArgs {
    #[command(flatten)]
    module: ModuleArgs,
    /// The request, as one JSON object of the replay format.
    #[arg(
        long,
        required_unless_present = "request_file",
        conflicts_with = "request_file"
    )]
    request: Option<String>,
    /// A file holding the request (one JSON object).
    #[arg(long)]
    request_file: Option<PathBuf>,
}

#[derive(Args)]
struct ModuleArgs {
    /// The filter module (.wasm).
    #[arg(long)]
    wasm: PathBuf,
    /// The plugin configuration (the WasmPlugin's pluginConfig as JSON).
    #[arg(long)]
    config: PathBuf,
    /// The VM configuration handed to proxy_on_vm_start (raw bytes).
    #[arg(long)]
    vm_config: Option<PathBuf>,
    /// Root id of the HTTP plugin (WasmPlugin pluginName); the network plugin gets "<id>-tcp".
    #[arg(long, default_value = "egress-guard")]
    root_id: String,
    /// VM id: shared data and queues are scoped by it (Istio leaves it empty).
    #[arg(long, default_value = "")]
    vm_id: String,
    /// Environment variable the module sees (NAME=VALUE; repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Envoy's log level for the module: lower messages are dropped.
    #[arg(long, default_value = "info")]
    log_level: LogLevel,
    /// An upstream cluster the module may call out to (repeatable). NAME alone: the callouts
    /// stay unanswered; NAME=HOST:PORT: unary gRPC calls to it go to that address over HTTP/2
    /// (plaintext), as Envoy would send them to the cluster.
    #[arg(long = "cluster", value_name = "NAME[=HOST:PORT]")]
    clusters: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Policy {
    /// Istio FAIL_CLOSE: a failed filter fails requests (HTTP 503, connection closed).
    Close,
    /// Istio FAIL_OPEN: a failed filter is skipped.
    Open,
    /// Istio FAIL_RELOAD: a new VM replaces one that trapped.
    Reload,
}

#[derive(Args)]
struct ReplayArgs {
    #[command(flatten)]
    module: ModuleArgs,
    /// Number of worker VMs (Envoy worker threads).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Requests, one JSON object per line ("-" reads standard input).
    #[arg(long, default_value = "-")]
    requests: String,
    /// The egress gateway's Envoy access log instead of --requests ("-" reads standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "requests")]
    envoy_access_log: Option<String>,
    #[command(flatten)]
    log_format: LogFormatArgs,
    /// Print a readable table instead of JSON lines: per request (id, kind, decision, status,
    /// policy, reason) for --requests; per source namespace and destination host for
    /// --envoy-access-log.
    #[arg(long)]
    summary: bool,
    /// Print the summary per source namespace and destination host (requests, would-allow,
    /// would-deny, by policy and rule) in this format.
    #[arg(long, value_enum)]
    format: Option<ReportFormat>,
    /// Most source namespace and destination host rows; the rest are counted together.
    #[arg(long, default_value_t = DEFAULT_MAX_GROUPS, value_name = "N")]
    max_groups: usize,
    /// Same as --failure-policy open.
    #[arg(long, conflicts_with = "failure_policy")]
    fail_open: bool,
    /// What happens to traffic when the filter fails.
    #[arg(long, value_enum, default_value = "close")]
    failure_policy: Policy,
    /// Also print the filter's log lines from outside requests (configuration, ticks) to stderr.
    #[arg(long)]
    verbose: bool,
    /// A rate limit service (Limitador, envoyproxy/ratelimit) at HOST:PORT answers the global
    /// rate limits: every cluster they name goes there (HTTP/2 gRPC, plaintext).
    #[arg(long, value_name = "HOST:PORT")]
    rls: Option<String>,
    /// Run each worker on a thread of its own, concurrently (at_ms is refused then).
    #[arg(long)]
    parallel: bool,
}

/// Exit codes: 0 done, 1 configuration rejected (check-config), 2 usage errors and a rejected
/// configuration in replay.
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(args) => check_config(&args),
        Command::Limits(args) => done(print_limits(&args)),
        Command::Explain(args) => explain(&args),
        Command::Replay(args) => done(replay(&args)),
        Command::Recommend(args) => done(recommend_allow_list(&args)),
        Command::GenerateAccessLog(args) => done(generate_access_log(&args)),
    }
}

fn done(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report(&error);
            ExitCode::from(2)
        }
    }
}

fn report(error: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {error:#}");
    if let Some(host_error) = error.downcast_ref::<HostError>() {
        for line in rejection_reason(host_error.logs()) {
            let _ = writeln!(stderr, "  {line}");
        }
    }
}

/// The filter's own words for a rejection: its warnings and errors, or everything it logged.
fn rejection_reason(logs: &[LogRecord]) -> Vec<String> {
    let serious: Vec<String> = logs
        .iter()
        .filter(|l| l.level >= LogLevel::Warn)
        .map(|l| l.message.clone())
        .collect();
    if serious.is_empty() {
        logs.iter().map(|l| l.message.clone()).collect()
    } else {
        serious
    }
}

fn check_config(check: &CheckConfigArgs) -> ExitCode {
    let args = &check.module;
    let setup = || -> anyhow::Result<(Host, Vec<PluginConfig>)> {
        let host = load_host(args, args.log_level, cluster_endpoints(args)?)?;
        Ok((host, plugins(args, FailurePolicy::FailClose)?))
    };
    let (host, plugins) = match setup() {
        Ok(s) => s,
        Err(error) => {
            report(&error);
            return ExitCode::from(2);
        }
    };
    for plugin in &plugins {
        match host.canary(plugin) {
            Ok(_) => {}
            Err(
                error @ (HostError::ConfigRejected { .. }
                | HostError::VmStartFailed { .. }
                | HostError::StartTrap { .. }),
            ) => {
                let reason = rejection_reason(error.logs());
                if reason.is_empty() {
                    println!("{error}");
                } else {
                    for line in reason {
                        println!("{line}");
                    }
                }
                if let HostError::StartTrap { trap, .. } = &error {
                    println!("{trap}");
                }
                return ExitCode::from(1);
            }
            Err(error) => {
                report(&anyhow::Error::new(error));
                return ExitCode::from(2);
            }
        }
    }
    if check.downstream == Downstream::Plaintext {
        // The canary accepted the file, so it is JSON.
        let config = read_file(&args.config, "--config")
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        for warning in plaintext::never_matching(&config) {
            println!("{warning}");
        }
    }
    println!("ok");
    ExitCode::SUCCESS
}

/// Exit codes: 0 explained, 1 configuration rejected, 2 usage errors.
fn explain(args: &ExplainArgs) -> ExitCode {
    match run_explain(args) {
        Ok(code) => code,
        Err(error) => {
            report(&error);
            ExitCode::from(2)
        }
    }
}

fn run_explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let text = match (&args.request, &args.request_file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => String::from_utf8(read_file(path, "--request-file")?)
            .context("--request-file: not UTF-8")?,
        (None, None) => bail!("give --request or --request-file"),
    };
    let mut request: serde_json::Value =
        serde_json::from_str(&text).context("--request: not a JSON object")?;
    let Some(object) = request.as_object_mut() else {
        bail!("--request: expected a JSON object");
    };
    object
        .entry("id")
        .or_insert_with(|| serde_json::Value::String("explain".to_string()));
    let items = replay::parse_requests(&request.to_string()).context("--request")?;
    // The filter logs its steps at debug level (trace logs them too).
    let level = args.module.log_level.min(LogLevel::Debug);
    let host = load_host(&args.module, level, cluster_endpoints(&args.module)?)?;
    let mut deployment = match host.start(plugins(&args.module, FailurePolicy::FailClose)?, 1) {
        Ok(deployment) => deployment,
        Err(error @ HostError::ConfigRejected { .. }) => {
            println!("configuration rejected:");
            for line in rejection_reason(error.logs()) {
                println!("  {line}");
            }
            return Ok(ExitCode::from(1));
        }
        Err(error) => return Err(anyhow::Error::new(error).context("starting the filter")),
    };
    let results = replay::run(&mut deployment, &items)?;
    let Some(result) = results.first() else {
        bail!("the request did not run");
    };
    match explain::render(&result.logs) {
        Some(text) => print!("{text}"),
        None => {
            println!("the filter logged no decision; its log:");
            for log in &result.logs {
                println!("  [{}] {}", log.level, log.message);
            }
        }
    }
    let mut outcome = format!("outcome: {}", result.decision);
    if let Some(status) = result.status {
        outcome.push_str(&format!(", status {status}"));
    }
    if let Some(error) = &result.error {
        outcome.push_str(&format!(", error: {error}"));
    }
    println!("{outcome}");
    Ok(ExitCode::SUCCESS)
}

fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let mut endpoints = cluster_endpoints(&args.module)?;
    if let Some(rls) = &args.rls {
        let address = resolve(rls).with_context(|| format!("--rls {rls}"))?;
        let probe = load_host(&args.module, args.module.log_level, BTreeMap::new())?;
        let described = global_limits(&probe, &args.module)?;
        if described.is_empty() {
            eprintln!("warning: --rls: the configuration has no global rate limits");
        }
        for limit in described {
            endpoints.insert(limit.cluster, address);
        }
    }
    let host = load_host(&args.module, args.module.log_level, endpoints)?;
    let policy = match (args.fail_open, args.failure_policy) {
        (true, _) | (_, Policy::Open) => FailurePolicy::FailOpen,
        (_, Policy::Close) => FailurePolicy::FailClose,
        (_, Policy::Reload) => FailurePolicy::FailReload,
    };
    if let Some(path) = &args.envoy_access_log {
        return replay_access_log(args, &host, policy, path);
    }
    let text = read_requests(&args.requests)?;
    let items = replay::parse_requests(&text).map_err(|e| match e {
        ReplayError::Input { .. } => {
            anyhow::Error::new(e).context(format!("reading {}", args.requests))
        }
        other => anyhow::Error::new(other),
    })?;
    let mut deployment = host
        .start(plugins(&args.module, policy)?, usize::from(args.workers))
        .context("starting the filter")?;
    let results = if args.parallel {
        replay::run_parallel(&mut deployment, &items)?
    } else {
        replay::run(&mut deployment, &items)?
    };

    let output = match args.format {
        Some(format) => {
            let mut summary = Summary::new(args.max_groups);
            summary.input.lines = text.lines().count();
            for (item, result) in items.iter().zip(&results) {
                summary.record(item, result);
            }
            render_summary(&summary, format, &report_meta(args, &args.requests))
        }
        None if args.summary => replay::summary(&items, &results),
        None => {
            let mut lines = String::new();
            for result in &results {
                lines.push_str(&serde_json::to_string(result)?);
                lines.push('\n');
            }
            lines
        }
    };
    print_output(&output)?;
    print_verbose_logs(args, &mut deployment)
}

fn report_meta(args: &ReplayArgs, input: &str) -> ReportMeta {
    ReportMeta {
        input: input.to_string(),
        config: args.module.config.display().to_string(),
    }
}

fn render_summary(summary: &Summary, format: ReportFormat, meta: &ReportMeta) -> String {
    match format {
        ReportFormat::Table => render::table(summary),
        ReportFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&render::json(summary)).unwrap_or_default()
        ),
        ReportFormat::Csv => render::csv(summary),
        ReportFormat::Html => html::report(summary, meta),
    }
}

/// Writes to standard output; a reader that stops early (e.g. `| head`) is not an error.
fn print_output(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn print_verbose_logs(
    args: &ReplayArgs,
    deployment: &mut egress_sim::Deployment,
) -> anyhow::Result<()> {
    if args.verbose {
        let mut stderr = std::io::stderr().lock();
        for log in &deployment.canary_logs {
            writeln!(stderr, "[canary] [{}] {}", log.level, log.message)?;
        }
        for worker in deployment.workers() {
            let index = worker.index();
            for log in worker.take_root_logs() {
                writeln!(stderr, "[worker {index}] [{}] {}", log.level, log.message)?;
            }
        }
    }
    Ok(())
}

fn log_options(args: &LogFormatArgs) -> anyhow::Result<LogOptions> {
    let text_format = match &args.text_format {
        Some(format) => {
            TextFormat::parse(format).map_err(|e| anyhow::anyhow!("--text-format: {e}"))?
        }
        None => TextFormat::istio_default(),
    };
    Ok(LogOptions {
        encoding: match args.access_log_encoding {
            EncodingArg::Auto => Encoding::Auto,
            EncodingArg::Json => Encoding::Json,
            EncodingArg::Text => Encoding::Text,
        },
        text_format,
        principal_field: args.principal_field.clone(),
    })
}

/// Reads an access log line by line and hands each usable line to `each` as a request (which
/// returns false to stop); says on stderr which lines could not be used.
fn stream_access_log(
    path: &str,
    args: &LogFormatArgs,
    mut each: impl FnMut(ReplayItem) -> anyhow::Result<bool>,
) -> anyhow::Result<InputStats> {
    let mut stats = InputStats::default();
    let input: Box<dyn BufRead> = if path == "-" {
        Box::new(BufReader::with_capacity(1 << 16, std::io::stdin()))
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("--envoy-access-log {path}: cannot open the file"))?;
        Box::new(BufReader::with_capacity(1 << 16, file))
    };
    let mut reader = LogReader::new(input, log_options(args)?).map_err(anyhow::Error::msg)?;
    let mut clock = LogClock::default();
    let mut used = 0usize;
    let mut stderr = std::io::stderr();
    while let Some((line, entry)) = reader
        .next_entry()
        .map_err(|e| anyhow::anyhow!("--envoy-access-log {path}: {e}"))?
    {
        match entry.and_then(|e| e.into_item(line, &mut clock)) {
            Ok(item) => {
                used += 1;
                if !each(item)? {
                    break;
                }
            }
            Err(reason) => {
                if stats.unusable < UNUSABLE_EXAMPLES {
                    let _ = writeln!(
                        stderr,
                        "{path}:{line}: skipped: {}",
                        render::printable(&reason)
                    );
                }
                stats.unusable(Unusable { line, reason });
            }
        }
    }
    stats.lines = reader.lines();
    stats.start_ms = clock.origin_ms;
    if stats.unusable > 0 {
        let _ = writeln!(
            stderr,
            "{path}: {} of {} lines could not be used",
            stats.unusable, stats.lines
        );
    }
    if used == 0 && stats.unusable > 0 {
        bail!(
            "--envoy-access-log {path}: no line could be used; is it the egress gateway's access \
             log, and do --access-log-encoding and --text-format match the mesh's?"
        );
    }
    Ok(stats)
}

fn replay_access_log(
    args: &ReplayArgs,
    host: &Host,
    policy: FailurePolicy,
    path: &str,
) -> anyhow::Result<()> {
    let mut deployment = host
        .start(plugins(&args.module, policy)?, usize::from(args.workers))
        .context("starting the filter")?;
    let report = args.format.or(args.summary.then_some(ReportFormat::Table));
    let mut summary = Summary::new(args.max_groups);
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    let mut n = 0usize;
    let input = stream_access_log(path, &args.log_format, |item| {
        let result = replay::run_one(&mut deployment, &item, n)?;
        n += 1;
        if report.is_some() {
            summary.record(&item, &result);
            return Ok(true);
        }
        let written = serde_json::to_writer(&mut stdout, &result)
            .map_err(std::io::Error::from)
            .and_then(|()| stdout.write_all(b"\n"));
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            other => Ok(other.map(|()| true)?),
        }
    })?;
    match stdout.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    drop(stdout);
    if let Some(format) = report {
        summary.input = input;
        print_output(&render_summary(&summary, format, &report_meta(args, path)))?;
    }
    print_verbose_logs(args, &mut deployment)
}

fn recommend_allow_list(args: &RecommendArgs) -> anyhow::Result<()> {
    let group_by = match args.group_by {
        GroupByArg::Namespace => GroupBy::Namespace,
        GroupByArg::Principal => GroupBy::Principal,
    };
    let mut observed = Observed::new(group_by);
    stream_access_log(&args.envoy_access_log, &args.log_format, |item| {
        observed
            .add(&RequestFacts::of(&item))
            .map_err(anyhow::Error::msg)?;
        Ok(true)
    })?;
    let recommendation = observed.recommend(recommend::Options {
        min_requests: args.min_requests,
        collapse_min: usize::try_from(args.collapse_min).unwrap_or(usize::MAX),
        dry_run: args.dry_run,
    });
    let statement = format!(
        "recommended from {}: {}",
        args.envoy_access_log,
        recommendation.statement()
    );
    let output = match args.output {
        RecommendOutput::PluginConfig => format!(
            "{}\n",
            serde_json::to_string_pretty(&recommendation.plugin_config())?
        ),
        RecommendOutput::EgressPolicy => {
            let mut out = String::new();
            for line in textwrap(&statement, 96) {
                out.push_str(&format!("# {line}\n"));
            }
            for document in recommendation.egress_policies() {
                out.push_str("---\n");
                out.push_str(&recommend::yaml(&document));
            }
            out
        }
    };
    let mut stderr = std::io::stderr();
    let _ = writeln!(stderr, "{}", render::printable(&statement));
    let _ = write!(stderr, "{}", recommendation.dropped_report(20));
    print_output(&output)
}

/// Splits text at spaces into lines of at most `width` characters (longer words stay whole).
fn textwrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let current = lines.last_mut().map_or(0, |l| l.len());
        if current > 0 && current + 1 + word.len() > width {
            lines.push(String::new());
        }
        if let Some(line) = lines.last_mut() {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&render::printable(word));
        }
    }
    lines
}

fn generate_access_log(args: &GenerateArgs) -> anyhow::Result<()> {
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    match egress_sim::synthetic::generate(args.seed, args.lines, &mut stdout)
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn read_requests(source: &str) -> anyhow::Result<String> {
    if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading requests from standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(source).with_context(|| format!("reading requests from {source}"))
    }
}

/// The global limits the filter describes when configured with `args.config`.
fn global_limits(host: &Host, args: &ModuleArgs) -> anyhow::Result<Vec<limits::GlobalLimit>> {
    let plugin = plugins(args, FailurePolicy::FailClose)?
        .into_iter()
        .next()
        .context("no HTTP plugin")?;
    let report = host.canary(&plugin).context("configuring the filter")?;
    Ok(
        limits::described_limits(report.logs.iter().map(|l| l.message.as_str()))
            .unwrap_or_default(),
    )
}

fn print_limits(args: &ModuleArgs) -> anyhow::Result<()> {
    let host = load_host(args, args.log_level, cluster_endpoints(args)?)?;
    let described = global_limits(&host, args)?;
    let yaml = limits::limitador_limits(&described, &args.config.display().to_string())
        .map_err(anyhow::Error::msg)?;
    print!("{yaml}");
    Ok(())
}

fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    address
        .to_socket_addrs()
        .with_context(|| format!("{address:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("{address:?} resolves to no address"))
}

/// The `--cluster NAME=HOST:PORT` flags.
fn cluster_endpoints(args: &ModuleArgs) -> anyhow::Result<BTreeMap<String, SocketAddr>> {
    let mut endpoints = BTreeMap::new();
    for entry in &args.clusters {
        if let Some((name, address)) = entry.split_once('=') {
            let address = resolve(address).with_context(|| format!("--cluster {entry}"))?;
            endpoints.insert(name.to_string(), address);
        }
    }
    Ok(endpoints)
}

fn load_host(
    args: &ModuleArgs,
    log_level: LogLevel,
    cluster_endpoints: BTreeMap<String, SocketAddr>,
) -> anyhow::Result<Host> {
    let mut environment = Vec::new();
    for entry in &args.env {
        let Some((name, value)) = entry.split_once('=') else {
            bail!("--env {entry:?}: expected NAME=VALUE");
        };
        environment.push((name.to_string(), value.to_string()));
    }
    let vm_config = VmConfig {
        vm_id: args.vm_id.clone(),
        configuration: match &args.vm_config {
            Some(path) => read_file(path, "--vm-config")?,
            None => Vec::new(),
        },
        environment,
    };
    let options = HostOptions {
        log_level,
        clusters: args
            .clusters
            .iter()
            .filter(|c| !c.contains('='))
            .cloned()
            .collect(),
        cluster_endpoints,
        ..HostOptions::default()
    };
    Ok(Host::from_file(&args.wasm, vm_config, options)?)
}

fn read_file(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}: cannot read the file", path.display()))
}

/// The filter as an HTTP plugin and as a network plugin, both with the configuration file.
fn plugins(args: &ModuleArgs, policy: FailurePolicy) -> anyhow::Result<Vec<PluginConfig>> {
    let configuration = read_file(&args.config, "--config")?;
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&configuration) {
        bail!(
            "--config {}: not valid JSON (line {}, column {}): {e}",
            args.config.display(),
            e.line(),
            e.column()
        );
    }
    let http_root = args.root_id.clone();
    let tcp_root = format!("{}-tcp", args.root_id);
    Ok(vec![
        PluginConfig::http(&http_root, &http_root, configuration.clone())
            .with_failure_policy(policy),
        PluginConfig::network(&tcp_root, &tcp_root, configuration).with_failure_policy(policy),
    ])
}
