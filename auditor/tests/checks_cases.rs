//! Every rule and every exemption, on the in-repo manifests in `tests/data/cases/`. Each case file
//! is scanned with `tests/data/base.yaml` (namespaces, a REGISTRY_ONLY mesh and egress
//! NetworkPolicies) unless it brings its own context; the exact set of findings is asserted.

use std::collections::BTreeSet;
use std::path::PathBuf;

use egress_auditor::checks::{check_all, CheckOptions};
use egress_auditor::cli::pipeline::scan_files;
use egress_auditor::finding::Finding;
use egress_auditor::sources::files::load_paths;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// (rule, severity, kind, name, container)
type Key = (String, String, String, String, Option<String>);

fn key(f: &Finding) -> Key {
    (
        f.rule.clone(),
        f.severity.to_string(),
        f.kind.clone(),
        f.name.clone(),
        f.container.clone(),
    )
}

fn expected(rows: &[(&str, &str, &str, &str, Option<&str>)]) -> BTreeSet<Key> {
    rows.iter()
        .map(|(r, s, k, n, c)| {
            (
                r.to_string(),
                s.to_string(),
                k.to_string(),
                n.to_string(),
                c.map(str::to_string),
            )
        })
        .collect()
}

/// Scans with the in-memory snapshot and with the streaming scan, checks both agree, and returns
/// the findings.
fn scan_with(files: &[PathBuf], opts: &CheckOptions) -> Vec<Finding> {
    let loaded = load_paths(files).unwrap_or_else(|e| panic!("input errors: {e:?}"));
    let all = check_all(&loaded.snapshot, opts);
    let (streamed, _) = scan_files(files, opts).unwrap_or_else(|e| panic!("input errors: {e:?}"));
    assert_eq!(all, streamed, "streaming scan differs from check_all");
    all
}

fn scan_case(case: &str) -> Vec<Finding> {
    scan_with(
        &[data("base.yaml"), data(&format!("cases/{case}"))],
        &CheckOptions::default(),
    )
}

fn assert_findings(findings: &[Finding], rows: &[(&str, &str, &str, &str, Option<&str>)]) {
    let got: BTreeSet<Key> = findings.iter().map(key).collect();
    assert_eq!(
        got.len(),
        findings.len(),
        "duplicate findings: {findings:#?}"
    );
    let want = expected(rows);
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing: {missing:#?}\nunexpected: {extra:#?}"
    );
}

#[test]
fn base_context_alone_is_clean() {
    let findings = scan_with(&[data("base.yaml")], &CheckOptions::default());
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn sidecar_missing_and_opt_out() {
    let findings = scan_case("sidecar.yaml");
    assert_findings(
        &findings,
        &[
            ("sidecar-missing", "high", "Pod", "no-sidecar", None),
            (
                "sidecar-missing",
                "high",
                "Deployment",
                "own-proxy-command",
                None,
            ),
            ("sidecar-missing", "high", "Pod", "no-sidecar-rev", None),
            ("sidecar-missing", "high", "Pod", "fake-proxy", None),
            ("sidecar-missing", "high", "Pod", "init-not-native", None),
            (
                "sidecar-missing",
                "high",
                "Pod",
                "no-capture-container",
                None,
            ),
            ("sidecar-missing", "high", "Pod", "pod-label-inject", None),
            ("sidecar-missing", "high", "Pod", "label-wins", None),
            (
                "sidecar-opt-out",
                "medium",
                "StatefulSet",
                "opt-out-label",
                None,
            ),
            (
                "sidecar-opt-out",
                "medium",
                "CronJob",
                "opt-out-annotation",
                None,
            ),
            ("sidecar-opt-out", "medium", "Pod", "opt-out-no", None),
            ("host-network", "high", "DaemonSet", "node-agent", None),
        ],
    );
    let fake = findings.iter().find(|f| f.name == "fake-proxy").unwrap();
    let gaps = fake.evidence["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 3, "{gaps:?}");
    let opt = findings
        .iter()
        .find(|f| f.name == "opt-out-annotation")
        .unwrap();
    assert_eq!(opt.evidence["source"], "annotation");
    assert_eq!(opt.namespace.as_deref(), Some("mesh-rev"));
}

#[test]
fn host_network_and_its_exemptions() {
    let findings = scan_case("host-network.yaml");
    assert_findings(
        &findings,
        &[("host-network", "high", "DaemonSet", "node-exporter", None)],
    );

    // Naming exempt namespaces replaces the default (kube-system).
    let opts = CheckOptions {
        host_network_exempt_namespaces: ["monitoring".to_string()].into_iter().collect(),
    };
    let findings = scan_with(&[data("base.yaml"), data("cases/host-network.yaml")], &opts);
    assert_findings(
        &findings,
        &[("host-network", "high", "Pod", "kube-proxy-x", None)],
    );
}

#[test]
fn proxy_uid() {
    let findings = scan_case("proxy-uid.yaml");
    assert_findings(
        &findings,
        &[
            ("proxy-uid", "critical", "Pod", "app-uid-1337", Some("app")),
            (
                "proxy-uid",
                "critical",
                "Deployment",
                "pod-level",
                Some("migrate"),
            ),
            (
                "proxy-uid",
                "critical",
                "Deployment",
                "pod-level",
                Some("app"),
            ),
            ("proxy-uid", "critical", "Pod", "app-gid-1337", Some("app")),
            (
                "proxy-uid",
                "critical",
                "Pod",
                "custom-proxy-uid",
                Some("as-group-1234"),
            ),
            ("proxy-uid", "critical", "Pod", "cni-proxy-uid", Some("app")),
            (
                "proxy-uid",
                "critical",
                "Pod",
                "cni-proxy-uid",
                Some("group"),
            ),
            (
                "proxy-uid",
                "critical",
                "Deployment",
                "pending-uid-1337",
                Some("app"),
            ),
            (
                "proxy-uid",
                "critical",
                "Pod",
                "pending-own-proxy-uid",
                Some("app"),
            ),
        ],
    );
    let inherited = findings
        .iter()
        .find(|f| f.name == "pod-level" && f.container.as_deref() == Some("app"))
        .unwrap();
    assert_eq!(inherited.evidence["runAsUserFrom"], "pod");
    assert_eq!(inherited.evidence["runAsGroupFrom"], "pod");
    let cni = findings
        .iter()
        .find(|f| f.name == "cni-proxy-uid" && f.container.as_deref() == Some("group"))
        .unwrap();
    assert_eq!(cni.evidence["excludedGids"], serde_json::json!([3000]));
    assert_eq!(cni.evidence["runAsUser"], 10);
}

#[test]
fn net_admin_and_privileged() {
    let findings = scan_case("privileges.yaml");
    assert_findings(
        &findings,
        &[
            ("net-admin", "high", "Pod", "caps", Some("setup")),
            ("net-admin", "high", "Pod", "caps", Some("vpn")),
            ("net-admin", "high", "Pod", "caps", Some("all-caps")),
            ("net-admin", "high", "Pod", "caps", Some("prefixed")),
            (
                "net-admin",
                "high",
                "Pod",
                "istio-overreach",
                Some("istio-init"),
            ),
            (
                "net-admin",
                "high",
                "Pod",
                "istio-overreach",
                Some("istio-proxy"),
            ),
            (
                "privileged",
                "critical",
                "Pod",
                "istio-overreach",
                Some("istio-init"),
            ),
            ("net-admin", "high", "Pod", "fake-init", Some("istio-init")),
            ("privileged", "critical", "Pod", "priv", Some("init-priv")),
            ("privileged", "critical", "Pod", "priv", Some("app")),
            ("privileged", "critical", "Pod", "priv", Some("debugger")),
        ],
    );
    let overreach = findings
        .iter()
        .find(|f| f.rule == "net-admin" && f.container.as_deref() == Some("istio-init"))
        .unwrap();
    // Only what goes beyond Istio's own NET_ADMIN/NET_RAW is offending.
    assert_eq!(
        overreach.evidence["offending"],
        serde_json::json!(["SYS_ADMIN"])
    );
}

#[test]
fn capture_exclusion_graded_by_breadth() {
    let findings = scan_case("capture.yaml");
    let init = Some("istio-init");
    assert_findings(
        &findings,
        &[
            (
                "capture-exclusion",
                "critical",
                "Pod",
                "exclude-all-v4",
                init,
            ),
            (
                "capture-exclusion",
                "critical",
                "Pod",
                "exclude-all-v6",
                init,
            ),
            ("capture-exclusion", "critical", "Pod", "exclude-443", init),
            ("capture-exclusion", "high", "Pod", "exclude-5432", init),
            ("capture-exclusion", "low", "Pod", "exclude-private", init),
            (
                "capture-exclusion",
                "medium",
                "Pod",
                "exclude-public-host",
                init,
            ),
            (
                "capture-exclusion",
                "high",
                "Pod",
                "exclude-public-wide",
                init,
            ),
            (
                "capture-exclusion",
                "critical",
                "Pod",
                "include-cluster-only",
                init,
            ),
            ("capture-exclusion", "critical", "Pod", "include-none", init),
            (
                "capture-exclusion",
                "medium",
                "Pod",
                "include-v4-only",
                init,
            ),
            ("capture-exclusion", "high", "Pod", "exclude-iface", init),
            ("capture-exclusion", "critical", "Pod", "exclude-eth0", init),
            ("capture-exclusion", "critical", "Pod", "dry-run", init),
            ("capture-exclusion", "high", "Pod", "unparsable", init),
            (
                "capture-exclusion",
                "high",
                "Pod",
                "owner-groups-excluded",
                init,
            ),
            (
                "capture-exclusion",
                "critical",
                "Pod",
                "env-exclude-cidr",
                init,
            ),
            (
                "capture-exclusion",
                "critical",
                "Pod",
                "cni-exclude-all",
                None,
            ),
            (
                "capture-exclusion",
                "critical",
                "Pod",
                "cni-exclude-80",
                None,
            ),
            (
                "capture-exclusion",
                "critical",
                "Deployment",
                "no-interception",
                None,
            ),
            (
                "capture-exclusion",
                "critical",
                "Deployment",
                "pending-exclude-all",
                None,
            ),
            (
                "capture-exclusion",
                "high",
                "Pod",
                "pending-bad-annotation",
                None,
            ),
        ],
    );
    let unparsable = findings.iter().find(|f| f.name == "unparsable").unwrap();
    assert_eq!(unparsable.evidence["unparsable"], true);
    assert!(
        unparsable.message.contains("\"my\""),
        "{}",
        unparsable.message
    );
    let pending = findings
        .iter()
        .find(|f| f.name == "pending-exclude-all")
        .unwrap();
    assert!(
        pending.message.starts_with("once injected"),
        "{}",
        pending.message
    );
    assert_eq!(pending.evidence["source"]["type"], "predicted");
    assert_eq!(
        pending.evidence["source"]["initContainer"],
        serde_json::Value::Null
    );
    let cni80 = findings
        .iter()
        .find(|f| f.name == "cni-exclude-80")
        .unwrap();
    // istio-cni's default 15020 is not reported, 80 is.
    assert_eq!(
        cni80.evidence["narrowings"][0]["ports"],
        serde_json::json!([80])
    );
}

#[test]
fn outbound_allow_any() {
    let opts = CheckOptions::default();
    let unset = scan_with(&[data("cases/mesh-unset.yaml")], &opts);
    assert_findings(
        &unset,
        &[("outbound-allow-any", "high", "ConfigMap", "istio", None)],
    );
    assert_eq!(unset[0].namespace.as_deref(), Some("istio-system"));
    assert_eq!(
        unset[0].evidence["outboundTrafficPolicyMode"],
        serde_json::Value::Null
    );
    assert_eq!(unset[0].evidence["effectiveMode"], "ALLOW_ANY");

    let explicit = scan_with(&[data("cases/mesh-allow-any.yaml")], &opts);
    assert_findings(
        &explicit,
        &[("outbound-allow-any", "high", "ConfigMap", "istio", None)],
    );
    assert_eq!(
        explicit[0].evidence["outboundTrafficPolicyMode"],
        "ALLOW_ANY"
    );

    assert!(scan_with(&[data("cases/mesh-registry-only.yaml")], &opts).is_empty());
}

#[test]
fn egress_networkpolicy_missing_with_selectors() {
    let findings = scan_with(&[data("cases/netpol.yaml")], &CheckOptions::default());
    let netpol: Vec<Finding> = findings
        .into_iter()
        .filter(|f| f.rule == "egress-networkpolicy-missing")
        .collect();
    assert_findings(
        &netpol,
        &[
            (
                "egress-networkpolicy-missing",
                "medium",
                "Namespace",
                "no-policy",
                None,
            ),
            (
                "egress-networkpolicy-missing",
                "medium",
                "Namespace",
                "ingress-only",
                None,
            ),
            (
                "egress-networkpolicy-missing",
                "medium",
                "Namespace",
                "partial",
                None,
            ),
        ],
    );
    let partial = netpol.iter().find(|f| f.name == "partial").unwrap();
    assert_eq!(partial.namespace, None);
    assert_eq!(
        partial.evidence["unselectedWorkloads"],
        serde_json::json!(["Deployment/web-canary", "Job/cleanup"])
    );
}

#[test]
fn findings_are_sorted_by_namespace_then_object() {
    let findings = scan_with(
        &[
            data("base.yaml"),
            data("cases/sidecar.yaml"),
            data("cases/netpol.yaml"),
        ],
        &CheckOptions::default(),
    );
    let groups: Vec<&str> = findings
        .iter()
        .map(egress_auditor::rules::group_namespace)
        .collect();
    let mut sorted = groups.clone();
    sorted.sort();
    assert_eq!(groups, sorted);
    // The Namespace finding comes first within its namespace.
    let partial: Vec<&Finding> = findings
        .iter()
        .filter(|f| egress_auditor::rules::group_namespace(f) == "partial")
        .collect();
    assert_eq!(partial[0].kind, "Namespace");
}

#[test]
fn one_large_list_document_is_read() {
    // `kubectl get pods -A -o yaml` is a single document; 3,000 pods exceed the parser's default
    // budget of 250,000 nodes.
    let mut text = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in 0..3000 {
        text.push_str(&format!(
            "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: p{i}\n    namespace: mesh\n    labels: {{app: a{i}, tier: web, track: stable, team: t{i}}}\n    annotations: {{a: b, c: d, e: f}}\n  spec:\n    containers:\n{}",
            (0..6)
                .map(|c| format!("    - name: c{c}\n      image: img\n      args: [a, b, c, d, e, f, g, h]\n      env: [{{name: A, value: x}}, {{name: B, value: y}}, {{name: C, value: z}}]\n"))
                .collect::<String>()
        ));
    }
    let loaded = egress_auditor::sources::files::load_str("big.yaml", &text)
        .unwrap_or_else(|e| panic!("{}", e[0]));
    assert_eq!(loaded.snapshot.workloads.len(), 3000);
}
