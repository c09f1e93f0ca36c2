//! The bundled cluster snapshot (`examples/cluster/`) reports exactly the bypasses planted in it
//! (its README lists them) and nothing on the workloads it keeps clean.

use std::collections::BTreeSet;
use std::path::PathBuf;

use egress_auditor::checks::CheckOptions;
use egress_auditor::cli::pipeline::scan_files;

#[test]
fn example_cluster_reports_the_planted_bypasses() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster");
    let (findings, loaded) =
        scan_files(&[dir], &CheckOptions::default()).unwrap_or_else(|e| panic!("{e:?}"));
    let got: BTreeSet<(String, String, String, String)> = findings
        .iter()
        .map(|f| {
            (
                f.rule.clone(),
                f.severity.to_string(),
                egress_auditor::rules::group_namespace(f).to_string(),
                f.name.clone(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String, String, String)> = [
        ("outbound-allow-any", "high", "istio-system", "istio"),
        (
            "capture-exclusion",
            "medium",
            "shop",
            "checkout-5d7f9b6c4-r8mzt",
        ),
        (
            "sidecar-missing",
            "high",
            "shop",
            "legacy-worker-84c6d9f7b-jz5nw",
        ),
        ("proxy-uid", "critical", "payments", "api-6c5b8d7f9-k3vxn"),
        (
            "net-admin",
            "high",
            "payments",
            "bank-tunnel-75f8c9d6b-p9hrs",
        ),
        ("sidecar-opt-out", "medium", "payments", "ledger-migrate"),
        (
            "egress-networkpolicy-missing",
            "medium",
            "payments",
            "payments",
        ),
        ("capture-exclusion", "critical", "batch", "exporter"),
        ("egress-networkpolicy-missing", "medium", "batch", "batch"),
        ("host-network", "high", "monitoring", "node-exporter"),
    ]
    .into_iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(findings.len(), want.len());
    assert!(loaded.summary.mesh_config);
    assert_eq!(loaded.summary.skipped_kinds.get("ConfigMap"), Some(&1));
}
