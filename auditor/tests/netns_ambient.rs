//! The node agent on ambient pods, in real network namespaces: istio-cni's in-pod rules
//! (`tests/data/netfilter/ambient.*`) are loaded with `iptables-restore` (legacy and nf_tables
//! backends) and `nft -f`, tampered with real commands, and each namespace is entered, dumped
//! and judged for the ambient pod of `pod-ambient.yaml` as the agent does on a node.
//!
//! Needs root, iproute2, iptables and nftables; skips with a printed reason otherwise.

mod netns_support;

use egress_auditor::finding::{Finding, Severity};
use egress_auditor::node::NamespaceStatus;
use netns_support::{
    ambient_pod, inspect_pod, iptables_backends, load_ambient_iptables, load_ambient_nft, skip,
    summary, TestNetns,
};

const TOOLS: &[&str] = &["ip", "nft", "iptables-legacy-save", "iptables-nft-save"];

/// Loads the rules, applies `tamper` (commands run inside the namespace) and judges the namespace
/// for the ambient pod.
fn judge_after(load: impl Fn(&TestNetns), tamper: &[&[&str]]) -> Vec<Finding> {
    let ns = TestNetns::new("amb");
    load(&ns);
    for cmd in tamper {
        ns.exec(cmd);
    }
    let (report, findings) = inspect_pod(&ns, &ambient_pod());
    assert!(
        matches!(report.status, NamespaceStatus::Judged { .. }),
        "{report:?}"
    );
    findings
}

fn rules_of(f: &[Finding]) -> Vec<(&str, &str)> {
    f.iter()
        .map(|x| (x.rule.as_str(), x.evidence["family"].as_str().unwrap_or("")))
        .collect()
}

#[test]
fn ambient_iptables_rules_and_their_tampering() {
    if skip("ambient_iptables_rules_and_their_tampering", TOOLS) {
        return;
    }
    for (variant, backend) in iptables_backends() {
        let ipt = format!("iptables-{variant}");
        let load = |ns: &TestNetns| load_ambient_iptables(ns, variant);
        let ctx = |what: &str| format!("{backend}: {what}");

        let f = judge_after(load, &[]);
        assert!(f.is_empty(), "{}: {:#?}", ctx("intact"), summary(&f));
        for x in &f {
            assert_eq!(x.evidence["dataplane"], "ambient");
        }

        // The outbound capture itself (the 15001 REDIRECT, 6th rule of nat ISTIO_OUTPUT) deleted.
        let f = judge_after(load, &[&[&ipt, "-t", "nat", "-D", "ISTIO_OUTPUT", "6"]]);
        assert_eq!(
            rules_of(&f),
            vec![("iptables-tampered", "ipv4")],
            "{}",
            ctx("O7 gone")
        );
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(f[0].evidence["cause"]["kind"], "chainEnd", "{:#?}", f[0]);
        assert!(
            f[0].message.contains("skipping ztunnel"),
            "{}",
            f[0].message
        );

        // A RETURN for 443 slipped in before it.
        let f = judge_after(
            load,
            &[&[
                &ipt,
                "-t",
                "nat",
                "-I",
                "ISTIO_OUTPUT",
                "6",
                "-p",
                "tcp",
                "--dport",
                "443",
                "-j",
                "RETURN",
            ]],
        );
        assert_eq!(
            rules_of(&f),
            vec![("iptables-tampered", "ipv4")],
            "{}",
            ctx("RETURN")
        );
        assert_eq!(f[0].evidence["cause"]["position"], 6);
        assert!(
            f[0].evidence["escapingFlows"][0]
                .as_str()
                .unwrap()
                .contains(":443 via eth0"),
            "{:#?}",
            f[0]
        );

        // Every application packet marked as ztunnel's in mangle: O7 skips them all.
        let f = judge_after(
            load,
            &[&[
                &ipt,
                "-t",
                "mangle",
                "-I",
                "OUTPUT",
                "1",
                "-p",
                "tcp",
                "-j",
                "MARK",
                "--set-xmark",
                "0x539/0xfff",
            ]],
        );
        assert_eq!(
            rules_of(&f),
            vec![("iptables-tampered", "ipv4")],
            "{}",
            ctx("mark")
        );
        assert_eq!(
            f[0].evidence["markSetBy"]["table"], "ip mangle",
            "{:#?}",
            f[0]
        );
        assert!(f[0].message.contains("marked it"), "{}", f[0].message);

        // DNS capture removed: DNS over UDP goes to the resolver directly.
        let f = judge_after(load, &[&[&ipt, "-t", "nat", "-D", "ISTIO_OUTPUT", "2"]]);
        assert_eq!(
            rules_of(&f),
            vec![("iptables-tampered", "ipv4")],
            "{}",
            ctx("DNS")
        );
        assert_eq!(f[0].severity, Severity::High);
        assert!(f[0].message.contains("DNS (UDP)"), "{}", f[0].message);

        // The jump from nat OUTPUT removed: the chains exist, nothing reaches them.
        let f = judge_after(
            load,
            &[&[&ipt, "-t", "nat", "-D", "OUTPUT", "-j", "ISTIO_OUTPUT"]],
        );
        assert_eq!(
            rules_of(&f),
            vec![("capture-inactive", "ipv4")],
            "{}",
            ctx("O1")
        );
        assert_eq!(f[0].evidence["reason"], "output-does-not-reach-istio");
        assert_eq!(f[0].evidence["dataplane"], "ambient");
    }
}

#[test]
fn ambient_nftables_rules_and_their_tampering() {
    if skip("ambient_nftables_rules_and_their_tampering", TOOLS) {
        return;
    }
    let f = judge_after(load_ambient_nft, &[]);
    assert!(f.is_empty(), "{:#?}", summary(&f));

    // An accept for 443 at the top of istio-output: both families escape.
    let f = judge_after(
        load_ambient_nft,
        &[&[
            "nft",
            "insert",
            "rule",
            "inet",
            "istio-ambient-nat",
            "istio-output",
            "tcp",
            "dport",
            "443",
            "accept",
        ]],
    );
    assert_eq!(
        rules_of(&f),
        vec![("iptables-tampered", "ipv4"), ("iptables-tampered", "ipv6")],
        "{:#?}",
        summary(&f)
    );

    // The output base chain's jump to istio-output removed.
    let f = judge_after(
        load_ambient_nft,
        &[&[
            "nft",
            "flush",
            "chain",
            "inet",
            "istio-ambient-nat",
            "output",
        ]],
    );
    assert_eq!(
        rules_of(&f),
        vec![("capture-inactive", "ipv4"), ("capture-inactive", "ipv6")],
        "{:#?}",
        summary(&f)
    );

    // The whole table deleted.
    let f = judge_after(
        load_ambient_nft,
        &[
            &["nft", "delete", "table", "inet", "istio-ambient-nat"],
            &["nft", "delete", "table", "inet", "istio-ambient-mangle"],
            &["nft", "delete", "table", "inet", "istio-ambient-raw"],
        ],
    );
    assert_eq!(
        rules_of(&f),
        vec![("capture-inactive", "ipv4")],
        "{:#?}",
        summary(&f)
    );
    assert_eq!(f[0].evidence["reason"], "no-istio-chains");
}

#[test]
fn a_pod_without_the_redirection_annotation_is_not_judged_as_ambient() {
    if skip(
        "a_pod_without_the_redirection_annotation_is_not_judged_as_ambient",
        TOOLS,
    ) {
        return;
    }
    let ns = TestNetns::new("amb-none");
    let mut pod = ambient_pod();
    pod.meta.annotations = None;
    let (report, f) = inspect_pod(&ns, &pod);
    assert_eq!(report.status, NamespaceStatus::NotInjected);
    assert!(f.is_empty());
    // `pending` is judged like `enabled`: the rules are in place.
    let mut pod = ambient_pod();
    pod.meta.annotations = Some(
        [(
            "ambient.istio.io/redirection".to_string(),
            "pending".to_string(),
        )]
        .into_iter()
        .collect(),
    );
    let (report, f) = inspect_pod(&ns, &pod);
    assert!(matches!(report.status, NamespaceStatus::Judged { .. }));
    assert_eq!(
        rules_of(&f),
        vec![("capture-inactive", "ipv4")],
        "{:#?}",
        summary(&f)
    );
}
