//! egress-auditor: finds every way a pod can go around the Istio sidecar.
//!
//! Sources (files, cluster, node network namespaces) build a snapshot of objects; checks are pure
//! functions from objects to [`finding::Finding`]s; sinks render findings.

pub mod finding;
