//! `egress-auditor scan`: audit Kubernetes manifests, or a live cluster with `--cluster`, for
//! ways around the Istio sidecar.

use std::process::ExitCode;

use super::args::ScanArgs;
use super::pipeline::{run_cluster_scan, run_file_scan};

/// Runs the scan and writes the report to standard output.
pub fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    if args.cluster.cluster {
        run_cluster_scan(&args)
    } else {
        run_file_scan(&args)
    }
}
