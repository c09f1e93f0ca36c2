//! The `egress-controller` binary: `compile` (files in, pluginConfig out) and `run` (in-cluster
//! controller).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use egress_controller::compile::{self, BaseConfig, CompileError};
use egress_controller::input;

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
    }
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
