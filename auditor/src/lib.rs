//! egress-auditor: finds every way a pod can go around the Istio sidecar.
//!
//! Sources (files, cluster, node network namespaces) build a [`snapshot::Snapshot`]; checks are
//! pure functions from the snapshot to [`finding::Finding`]s ([`checks::check_all`]); sinks render
//! findings. [`cli::pipeline`] is where the three meet (read → judge → deliver).
//! [`capture::CaptureConfig`] is the one model of what Istio's injection implies for a pod's
//! traffic capture, shared by the pod checks and the netfilter judge; [`rules`] is the one rule
//! catalogue. Which module may name which is written down, and checked, in
//! `docs/architecture.md`.

#![forbid(unsafe_code)]

pub mod capture;
pub mod checks;
pub mod cli;
pub mod finding;
pub mod istio;
pub mod kube_client;
pub mod metrics;
pub mod netfilter;
pub mod node;
pub mod rules;
pub mod sinks;
pub mod snapshot;
pub mod sources;
pub mod watch;
