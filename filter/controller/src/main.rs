//! The `egress-controller` binary: `compile` (files in, pluginConfig out) and `run` (in-cluster
//! controller).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use egress_controller::compile::{self, BaseConfig, CompileError};
use egress_controller::controller::{self, RunOptions, Target};
use egress_controller::input;
use egress_controller::lease::LeaseSettings;

/// Invalid input (a policy, a Namespace, the base configuration, the command line).
const EXIT_INVALID: u8 = 2;

#[derive(Parser)]
#[command(
    name = "egress-controller",
    version,
    about = "Compiles ClusterEgressPolicy and EgressPolicy objects into the egress filter's WasmPlugin configuration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile policy and Namespace objects from files; print the pluginConfig (or a WasmPlugin).
    Compile(CompileArgs),
    /// Run in the cluster: watch the policies and Namespaces, write the WasmPlugins, report
    /// status; serves /healthz, /readyz and /metrics.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// A kubeconfig file; without it KUBECONFIG, ~/.kube/config, then the in-cluster
    /// ServiceAccount.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// A WasmPlugin to write, as NAMESPACE/NAME, optionally =BASE_CONFIG_FILE (its global
    /// rateLimits, protocol and tiers.default). Repeatable.
    #[arg(long = "wasmplugin", value_name = "NAMESPACE/NAME[=FILE]", default_values_t = [
        "istio-system/egress-filter-http".to_string(),
        "istio-system/egress-filter-network".to_string(),
    ])]
    wasmplugins: Vec<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Elect a leader through a Lease, so several replicas can run and only one writes.
    #[arg(long)]
    leader_elect: bool,
    #[arg(long, env = "POD_NAMESPACE", default_value = "egress-guard")]
    lease_namespace: String,
    #[arg(long, default_value = "egress-controller")]
    lease_name: String,
    /// This replica's name in the Lease (default: the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[arg(long, default_value = "15s", value_parser = duration)]
    lease_duration: Duration,
    #[arg(long, default_value = "10s", value_parser = duration)]
    renew_deadline: Duration,
    #[arg(long, default_value = "2s", value_parser = duration)]
    retry_period: Duration,
    /// Quiet time after a change before compiling.
    #[arg(long, default_value = "500ms", value_parser = duration)]
    debounce: Duration,
    /// Check the WasmPlugins at least this often, even without changes.
    #[arg(long, default_value = "5m", value_parser = duration)]
    resync: Duration,
}

fn duration(text: &str) -> Result<Duration, String> {
    egress_filter::ratelimit::parse_duration(text).map(Duration::from_nanos)
}

#[derive(Args)]
struct CompileArgs {
    /// A file or directory of YAML/JSON objects: ClusterEgressPolicies, EgressPolicies and the
    /// Namespaces their selectors are resolved against (other kinds are skipped).
    #[arg(long)]
    input: PathBuf,
    /// Global settings merged in: a pluginConfig with only rateLimits, protocol and
    /// tiers.default.
    #[arg(long)]
    base_config: Option<PathBuf>,
    /// Print a WasmPlugin of this name holding the configuration, instead of the bare JSON.
    #[arg(long, requires = "namespace")]
    wasmplugin: Option<String>,
    /// Namespace of the WasmPlugin.
    #[arg(long, requires = "wasmplugin")]
    namespace: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Compile(args) => run_compile(args),
        Command::Run(args) => run_controller(args),
    }
}

fn run_controller(args: RunArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let mut targets = Vec::new();
    for spec in &args.wasmplugins {
        match target(spec) {
            Ok(t) => targets.push(t),
            Err(message) => return invalid(&format!("--wasmplugin {spec}: {message}")),
        }
    }
    let mut options = RunOptions::new(targets, args.listen);
    options.kubeconfig = args.kubeconfig;
    options.debounce = args.debounce;
    options.resync = args.resync;
    if args.leader_elect {
        let identity = args.identity.unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| format!("egress-controller-{}", std::process::id()))
        });
        let mut lease = LeaseSettings::new(&args.lease_namespace, &identity);
        lease.name = args.lease_name;
        lease.lease_duration = args.lease_duration;
        lease.renew_deadline = args.renew_deadline;
        lease.retry_period = args.retry_period;
        if lease.renew_deadline >= lease.lease_duration
            || lease.retry_period >= lease.renew_deadline
        {
            return invalid("leader election needs retry-period < renew-deadline < lease-duration");
        }
        options.lease = Some(lease);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return failed(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let handle = match controller::start(options).await {
            Ok(h) => h,
            Err(e) => return failed(&e.to_string()),
        };
        tracing::info!(addr = %handle.addr, "serving /healthz, /readyz and /metrics");
        wait_for_signal().await;
        tracing::info!("shutting down");
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// SIGTERM (what the kubelet sends) or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `NAMESPACE/NAME[=FILE]`.
fn target(spec: &str) -> Result<Target, String> {
    let (place, file) = match spec.split_once('=') {
        Some((place, file)) => (place, Some(file)),
        None => (spec, None),
    };
    let (namespace, name) = place
        .split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
        .ok_or("expected NAMESPACE/NAME")?;
    let base = match file {
        None => BaseConfig::default(),
        Some(file) => {
            let text = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
            BaseConfig::from_json(&text).map_err(|e| format!("{file}: {e}"))?
        }
    };
    Ok(Target {
        namespace: namespace.to_string(),
        name: name.to_string(),
        base,
    })
}

fn failed(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn run_compile(args: CompileArgs) -> ExitCode {
    let base = match &args.base_config {
        None => BaseConfig::default(),
        Some(path) => match std::fs::read(path) {
            Err(e) => return invalid(&format!("{}: {e}", path.display())),
            Ok(text) => match BaseConfig::from_json(&text) {
                Ok(base) => base,
                Err(CompileError::Base { field, message }) => {
                    return invalid(&format!("{}: {field}: {message}", path.display()))
                }
                Err(e) => return invalid(&e.to_string()),
            },
        },
    };
    let loaded = match input::load(&args.input) {
        Ok(loaded) => loaded,
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return invalid(&lines.join("\n"));
        }
    };
    for skipped in &loaded.skipped {
        eprintln!("skipped {skipped}");
    }
    match compile::compile(&loaded.set, &base) {
        Ok(compiled) => {
            let text = match (&args.wasmplugin, &args.namespace) {
                (Some(name), Some(namespace)) => {
                    egress_controller::wasmplugin::apply_document(name, namespace, &compiled)
                }
                _ => compiled.to_json(),
            };
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(CompileError::Policies(errors)) => {
            let lines: Vec<String> = errors.iter().map(|e| loaded.locate(e)).collect();
            invalid(&lines.join("\n"))
        }
        Err(CompileError::Base { field, message }) => invalid(&format!(
            "{}: {field}: {message}",
            args.base_config
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "base configuration".into())
        )),
    }
}

fn invalid(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(EXIT_INVALID)
}
