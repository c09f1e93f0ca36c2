//! The `egress-auditor` binary: parses the command line and hands each subcommand to its handler
//! in `egress_auditor::cli`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use egress_auditor::cli;

mod allocator;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sets the allocator's options before its first allocation: the Rust runtime allocates before
/// `main`, and the first arena takes the options in force then. The loader runs `.init_array`
/// before the runtime starts (ELF; elsewhere `main` sets them, later).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static SET_ALLOCATOR_OPTIONS: extern "C" fn() = {
    extern "C" fn set() {
        allocator::return_freed_memory_at_once();
    }
    set
};

#[derive(Parser)]
#[command(
    name = "egress-auditor",
    version,
    about = "Finds every way a pod can go around the Istio sidecar"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Audit Kubernetes manifests (files or directories) for sidecar bypasses.
    Scan(cli::args::ScanArgs),
    /// Judge saved iptables/nftables dumps against one pod's capture settings.
    Rules(cli::rules::RulesArgs),
    /// Inspect the rules in every pod network namespace on this node (privileged, hostPID).
    Node(cli::node::NodeArgs),
    /// Watch the cluster and re-judge on every change; serves /healthz, /readyz and /metrics.
    Watch(cli::watch::WatchArgs),
}

fn main() -> ExitCode {
    #[cfg(not(target_os = "linux"))]
    allocator::return_freed_memory_at_once();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scan(args) => cli::scan::run(args),
        Command::Rules(args) => cli::rules::run(args),
        Command::Node(args) => cli::node::run(args),
        Command::Watch(args) => cli::watch::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cli::pipeline::EXIT_BAD_INPUT)
        }
    }
}
