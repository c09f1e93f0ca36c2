//! `egress-sim`: run a proxy-wasm filter the way the egress gateway's Envoy runs it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};

use egress_sim::limits;
use egress_sim::replay::{self, ReplayError};
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
    Replay(ReplayArgs),
    /// Runs Envoy's configuration canary: prints `ok`, or the filter's reason and exits 1.
    CheckConfig(ModuleArgs),
    /// Prints Limitador's limits file (limits.yaml) for the configuration's global rate limits,
    /// from the filter's own description of them, so the service counts what the filter sends.
    Limits(ModuleArgs),
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
    /// Print a readable table (id, kind, decision, status, policy, reason) instead of JSON lines.
    #[arg(long)]
    summary: bool,
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
        Command::Limits(args) => match print_limits(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                report(&error);
                ExitCode::from(2)
            }
        },
        Command::Replay(args) => match replay(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                report(&error);
                ExitCode::from(2)
            }
        },
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

fn check_config(args: &ModuleArgs) -> ExitCode {
    let setup = || -> anyhow::Result<(Host, Vec<PluginConfig>)> {
        let host = load_host(args, cluster_endpoints(args)?)?;
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
    println!("ok");
    ExitCode::SUCCESS
}

fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let mut endpoints = cluster_endpoints(&args.module)?;
    if let Some(rls) = &args.rls {
        let address = resolve(rls).with_context(|| format!("--rls {rls}"))?;
        let probe = load_host(&args.module, BTreeMap::new())?;
        let described = global_limits(&probe, &args.module)?;
        if described.is_empty() {
            eprintln!("warning: --rls: the configuration has no global rate limits");
        }
        for limit in described {
            endpoints.insert(limit.cluster, address);
        }
    }
    let host = load_host(&args.module, endpoints)?;
    let policy = match (args.fail_open, args.failure_policy) {
        (true, _) | (_, Policy::Open) => FailurePolicy::FailOpen,
        (_, Policy::Close) => FailurePolicy::FailClose,
        (_, Policy::Reload) => FailurePolicy::FailReload,
    };
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

    let mut stdout = std::io::stdout().lock();
    let written = if args.summary {
        write!(stdout, "{}", replay::summary(&items, &results))
    } else {
        results.iter().try_for_each(|result| {
            serde_json::to_writer(&mut stdout, result)?;
            writeln!(stdout)
        })
    };
    match written {
        // A reader that stops early (e.g. `| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        other => other?,
    }
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
    let host = load_host(args, cluster_endpoints(args)?)?;
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
        log_level: args.log_level,
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
