//! The node agent's inspection of real network namespaces: Istio's sidecar rules are loaded with
//! `iptables-restore` (legacy and nf_tables backends) and `nft -f`, tampered with real commands,
//! and each namespace is entered, dumped and judged as the agent does on a node.
//!
//! Needs root, iproute2, iptables and nftables; skips with a printed reason otherwise.

mod netns_support;

use egress_auditor::finding::{Finding, Severity};
use egress_auditor::node::NamespaceStatus;
use netns_support::{
    inspect, iptables_backends, load_iptables, load_nft, skip, summary, TestNetns,
};
use serde_json::Value;

const TOOLS: &[&str] = &["ip", "nft", "iptables-legacy-save", "iptables-nft-save"];

/// Loads the rules, applies `tamper` (commands run inside the namespace) and judges it.
fn judge_after(load: impl Fn(&TestNetns), tamper: &[&[&str]]) -> Vec<Finding> {
    let ns = TestNetns::new("insp");
    load(&ns);
    for cmd in tamper {
        ns.exec(cmd);
    }
    let (report, findings) = inspect(&ns);
    assert!(
        matches!(report.status, NamespaceStatus::Judged { .. }),
        "{:?}",
        report
    );
    findings
}

fn families(f: &[Finding]) -> Vec<String> {
    f.iter()
        .map(|x| x.evidence["family"].as_str().unwrap_or("").to_string())
        .collect()
}

fn only(f: &[Finding], rule: &str, family: &str) -> Value {
    assert_eq!(f.len(), 1, "{:#?}", summary(f));
    assert_eq!(f[0].rule, rule, "{:#?}", summary(f));
    assert_eq!(f[0].evidence["family"], family, "{:#?}", summary(f));
    f[0].evidence.clone()
}

#[test]
fn iptables_tampering_is_seen_with_both_backends() {
    if skip("iptables_tampering_is_seen_with_both_backends", TOOLS) {
        return;
    }
    for (variant, backend) in iptables_backends() {
        let ipt = format!("iptables-{variant}");
        let ip6t = format!("ip6tables-{variant}");
        let load = |ns: &TestNetns| load_iptables(ns, variant);
        let ctx = |what: &str| format!("{backend}: {what}");

        let f = judge_after(load, &[]);
        assert!(f.is_empty(), "{}: {:#?}", ctx("clean"), summary(&f));

        // A RETURN before the redirect: everything escapes.
        let f = judge_after(
            load,
            &[&[&ipt, "-t", "nat", "-I", "ISTIO_OUTPUT", "1", "-j", "RETURN"]],
        );
        let ev = only(&f, "iptables-tampered", "ipv4");
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(ev["cause"]["chain"], "ISTIO_OUTPUT", "{}", ctx("return"));
        assert_eq!(ev["cause"]["position"], 1);
        assert_eq!(ev["cause"]["backend"], backend);
        assert_eq!(
            ev["netns"].as_str().map(|s| s.starts_with("net:[")),
            Some(true)
        );

        // The same on IPv6, narrowed to one port.
        let f = judge_after(
            load,
            &[&[
                &ip6t,
                "-t",
                "nat",
                "-I",
                "ISTIO_OUTPUT",
                "1",
                "-p",
                "tcp",
                "--dport",
                "443",
                "-j",
                "RETURN",
            ]],
        );
        let ev = only(&f, "iptables-tampered", "ipv6");
        assert!(
            ev["rule"].as_str().unwrap().contains("--dport 443"),
            "{}",
            ctx("v6 port")
        );

        // Flushing Istio's outbound chain: nothing redirects any more.
        let f = judge_after(load, &[&[&ipt, "-t", "nat", "-F", "ISTIO_OUTPUT"]]);
        let ev = only(&f, "iptables-tampered", "ipv4");
        assert_eq!(
            ev["cause"],
            serde_json::json!({"kind": "chainEnd", "table": "ip nat", "chain": "ISTIO_OUTPUT"})
        );

        // Flushing the whole nat table removes the OUTPUT jump too.
        let f = judge_after(load, &[&[&ipt, "-t", "nat", "-F"]]);
        let ev = only(&f, "capture-inactive", "ipv4");
        assert_eq!(
            ev["reason"],
            "output-does-not-reach-istio",
            "{}",
            ctx("flush")
        );

        // ... and deleting the chains leaves no Istio rules at all.
        let f = judge_after(
            load,
            &[&[&ipt, "-t", "nat", "-F"], &[&ipt, "-t", "nat", "-X"]],
        );
        let ev = only(&f, "capture-inactive", "ipv4");
        assert_eq!(ev["reason"], "no-istio-chains", "{}", ctx("flush+delete"));

        // Only the jump deleted.
        let f = judge_after(
            load,
            &[&[&ipt, "-t", "nat", "-D", "OUTPUT", "-j", "ISTIO_OUTPUT"]],
        );
        let ev = only(&f, "capture-inactive", "ipv4");
        assert_eq!(ev["reason"], "output-does-not-reach-istio");

        // The redirect port changed.
        let f = judge_after(
            load,
            &[&[
                &ipt,
                "-t",
                "nat",
                "-R",
                "ISTIO_REDIRECT",
                "1",
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                "15002",
            ]],
        );
        let ev = only(&f, "iptables-tampered", "ipv4");
        assert_eq!(
            ev["fate"],
            serde_json::json!({"kind": "redirected", "port": 15002}),
            "{}",
            ctx("port")
        );

        // Connection tracking switched off before NAT.
        let f = judge_after(
            load,
            &[&[
                &ipt,
                "-t",
                "raw",
                "-I",
                "OUTPUT",
                "-p",
                "tcp",
                "-j",
                "CT",
                "--notrack",
            ]],
        );
        let ev = only(&f, "iptables-tampered", "ipv4");
        assert_eq!(ev["fate"]["kind"], "untracked", "{}", ctx("notrack"));
        assert_eq!(ev["cause"]["table"], "ip raw");

        // Root's traffic exempted: narrower, so high rather than critical.
        let f = judge_after(
            load,
            &[&[
                &ipt,
                "-t",
                "nat",
                "-I",
                "ISTIO_OUTPUT",
                "1",
                "-m",
                "owner",
                "--uid-owner",
                "0",
                "-j",
                "RETURN",
            ]],
        );
        let ev = only(&f, "iptables-tampered", "ipv4");
        assert_eq!(f[0].severity, Severity::High, "{}", ctx("uid 0"));
        for flow in ev["escapingFlows"].as_array().unwrap() {
            assert!(flow.as_str().unwrap().contains("uid 0 "), "{flow}");
        }

        // An interface exemption in OUTPUT itself.
        let f = judge_after(
            load,
            &[&[
                &ipt, "-t", "nat", "-I", "OUTPUT", "1", "-o", "eth0", "-j", "RETURN",
            ]],
        );
        let ev = only(&f, "iptables-tampered", "ipv4");
        assert_eq!(ev["cause"]["chain"], "OUTPUT", "{}", ctx("oif"));
    }
}

#[test]
fn native_nftables_tampering_is_seen() {
    if skip("native_nftables_tampering_is_seen", TOOLS) {
        return;
    }
    let load = |ns: &TestNetns| load_nft(ns);
    let t = "istio-proxy-nat";

    let f = judge_after(load, &[]);
    assert!(f.is_empty(), "{:#?}", summary(&f));

    // No legacy tables in the namespace: iptables-legacy-save is not even run.
    let ns = TestNetns::new("insp");
    load(&ns);
    let (report, _) = inspect(&ns);
    let legacy: Vec<_> = report
        .tools
        .iter()
        .filter(|t| t.tool.contains("legacy"))
        .collect();
    assert!(
        !legacy.is_empty() && legacy.iter().all(|t| t.ok && t.skipped),
        "{:?}",
        report.tools
    );
    drop(ns);

    // An inet table: one rule lets both families out.
    let f = judge_after(
        load,
        &[&["nft", "insert", "rule", "inet", t, "istio-output", "return"]],
    );
    assert_eq!(families(&f), vec!["ipv4", "ipv6"], "{:#?}", summary(&f));
    for x in &f {
        assert_eq!(x.rule, "iptables-tampered");
        assert_eq!(x.evidence["cause"]["position"], 1);
        assert_eq!(x.evidence["cause"]["backend"], "nftables");
    }

    let f = judge_after(load, &[&["nft", "flush", "chain", "inet", t, "output"]]);
    assert_eq!(families(&f), vec!["ipv4", "ipv6"]);
    assert!(
        f.iter().all(|x| x.rule == "capture-inactive"),
        "{:#?}",
        summary(&f)
    );

    let f = judge_after(load, &[&["nft", "delete", "table", "inet", t]]);
    assert_eq!(families(&f), vec!["ipv4", "ipv6"]);
    assert!(f
        .iter()
        .all(|x| x.rule == "capture-inactive" && x.evidence["reason"] == "no-istio-chains"));

    let f = judge_after(
        load,
        &[
            &["nft", "flush", "chain", "inet", t, "istio-redirect"],
            &[
                "nft",
                "add",
                "rule",
                "inet",
                t,
                "istio-redirect",
                "meta",
                "l4proto",
                "tcp",
                "redirect",
                "to",
                ":15002",
            ],
        ],
    );
    assert_eq!(families(&f), vec!["ipv4", "ipv6"]);
    for x in &f {
        assert_eq!(
            x.evidence["fate"],
            serde_json::json!({"kind": "redirected", "port": 15002})
        );
    }

    // Another table's NAT chain hooked before Istio's maps port 443 elsewhere.
    let f = judge_after(
        load,
        &[
            &["nft", "add", "table", "inet", "intruder"],
            &[
                "nft",
                "add",
                "chain",
                "inet",
                "intruder",
                "out",
                "{ type nat hook output priority -150; policy accept; }",
            ],
            &[
                "nft", "add", "rule", "inet", "intruder", "out", "tcp", "dport", "443", "redirect",
                "to", ":8443",
            ],
        ],
    );
    assert_eq!(families(&f), vec!["ipv4", "ipv6"], "{:#?}", summary(&f));
    for x in &f {
        assert_eq!(x.evidence["table"], "inet intruder");
        assert_eq!(
            x.evidence["fate"],
            serde_json::json!({"kind": "redirected", "port": 8443})
        );
        assert_eq!(x.severity, Severity::Critical);
    }

    // A rule with a condition the auditor cannot evaluate (a named set): may escape, IPv4 only.
    let f = judge_after(
        load,
        &[
            &[
                "nft",
                "add",
                "set",
                "inet",
                t,
                "allowed",
                "{ type ipv4_addr; }",
            ],
            &[
                "nft",
                "insert",
                "rule",
                "inet",
                t,
                "istio-output",
                "ip",
                "daddr",
                "@allowed",
                "return",
            ],
        ],
    );
    let ev = only(&f, "iptables-tampered", "ipv4");
    assert_eq!(f[0].severity, Severity::High);
    assert!(
        ev["assumptions"][0].as_str().unwrap().contains("@allowed"),
        "{ev}"
    );
    assert!(f[0].message.contains("may escape"), "{}", f[0].message);
}

#[test]
fn chains_of_other_tables_are_judged_by_what_the_kernel_does() {
    if skip(
        "chains_of_other_tables_are_judged_by_what_the_kernel_does",
        TOOLS,
    ) {
        return;
    }
    let Some((variant, _)) = iptables_backends().into_iter().next() else {
        eprintln!("skipping: no iptables backend");
        return;
    };
    let load = |ns: &TestNetns| load_iptables(ns, variant);

    // `accept` in an earlier filter chain or an earlier NAT chain ends only that chain: the
    // kernel still runs Istio's NAT chain.
    let f = judge_after(
        load,
        &[
            &["nft", "add", "table", "inet", "intruder"],
            &[
                "nft",
                "add",
                "chain",
                "inet",
                "intruder",
                "early",
                "{ type filter hook output priority -250; policy accept; }",
            ],
            &["nft", "add", "rule", "inet", "intruder", "early", "accept"],
            &[
                "nft",
                "add",
                "chain",
                "inet",
                "intruder",
                "natearly",
                "{ type nat hook output priority -150; policy accept; }",
            ],
            &[
                "nft", "add", "rule", "inet", "intruder", "natearly", "meta", "l4proto", "tcp",
                "accept",
            ],
        ],
    );
    assert!(f.is_empty(), "{:#?}", summary(&f));

    // `notrack` at raw priority takes connections out of NAT, whichever tool wrote Istio's rules.
    let f = judge_after(
        load,
        &[
            &["nft", "add", "table", "inet", "intruder"],
            &[
                "nft",
                "add",
                "chain",
                "inet",
                "intruder",
                "raw",
                "{ type filter hook output priority raw; policy accept; }",
            ],
            &[
                "nft", "add", "rule", "inet", "intruder", "raw", "tcp", "dport", "443", "notrack",
            ],
        ],
    );
    assert_eq!(families(&f), vec!["ipv4", "ipv6"], "{:#?}", summary(&f));
    for x in &f {
        assert_eq!(x.evidence["fate"]["kind"], "untracked");
        assert_eq!(x.evidence["backend"], "nftables");
    }
}

#[test]
fn ipv6_is_judged_when_the_namespace_has_an_ipv6_address() {
    if skip(
        "ipv6_is_judged_when_the_namespace_has_an_ipv6_address",
        TOOLS,
    ) {
        return;
    }
    let Some((variant, _)) = iptables_backends().into_iter().next() else {
        eprintln!("skipping: no iptables backend");
        return;
    };
    // A pod whose status lists no IPv6 address, with IPv4 rules only.
    let text = std::fs::read_to_string(netns_support::data("pod-sidecar.yaml"))
        .unwrap()
        .replace("  - ip: fd00:10:244:1::7\n", "");
    let pod = egress_auditor::sources::files::load_str("pod.yaml", &text)
        .unwrap()
        .snapshot
        .workloads
        .remove(0);
    let tools = egress_auditor::node::inspect::Toolset::detect();
    let ns = TestNetns::new("v6");
    ns.exec_stdin(
        &[&format!("iptables-{variant}-restore")],
        &netns_support::data("sidecar.iptables"),
    );
    let (report, f) = egress_auditor::node::judge_namespace(
        &ns.as_netns(),
        &pod,
        &tools,
        &egress_auditor::capture::AmbientSettings::default(),
    );
    assert_eq!(report.families.len(), 1, "IPv4 only: {report:?}");
    assert!(f.is_empty(), "{:#?}", summary(&f));

    // Give the namespace a global IPv6 address: IPv6 now leaves the pod uncaptured.
    ns.exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    ns.exec(&["ip", "link", "set", "eth0", "up"]);
    ns.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:7::5/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    let (report, f) = egress_auditor::node::judge_namespace(
        &ns.as_netns(),
        &pod,
        &tools,
        &egress_auditor::capture::AmbientSettings::default(),
    );
    assert_eq!(report.families.len(), 2, "{report:?}");
    let ev = only(&f, "capture-inactive", "ipv6");
    assert_eq!(ev["reason"], "no-istio-chains");
}

#[test]
fn node_command_judges_named_namespaces() {
    if skip("node_command_judges_named_namespaces", TOOLS) {
        return;
    }
    let Some((variant, _)) = iptables_backends().into_iter().next() else {
        eprintln!("skipping: no iptables backend");
        return;
    };
    let clean = TestNetns::new("node");
    load_iptables(&clean, variant);
    let tampered = TestNetns::new("node");
    load_iptables(&tampered, variant);
    tampered.exec(&[
        &format!("iptables-{variant}"),
        "-t",
        "nat",
        "-I",
        "ISTIO_OUTPUT",
        "1",
        "-j",
        "RETURN",
    ]);

    // Two pods named after the namespaces (named namespaces match pods by UID).
    let pod = std::fs::read_to_string(netns_support::data("pod-sidecar.yaml")).unwrap();
    let mut pods = String::new();
    for (ns, name) in [(&clean, "web-clean"), (&tampered, "web-tampered")] {
        pods.push_str("---\n");
        pods.push_str(
            &pod.replace("7d1c2a4e-5b6f-4a8e-9c0d-1e2f3a4b5c6d", &ns.name)
                .replace("name: web\n", &format!("name: {name}\n")),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let pods_file = dir.path().join("pods.yaml");
    std::fs::write(&pods_file, pods).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_egress-auditor"))
        .args(["node", "--no-proc", "--netns-dir", "/run/netns", "--pods"])
        .arg(&pods_file)
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "{doc:#}");
    let mine: Vec<&Value> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["name"] == "web-tampered" || f["name"] == "web-clean")
        .collect();
    assert_eq!(mine.len(), 1, "{doc:#}");
    assert_eq!(mine[0]["name"], "web-tampered");
    assert_eq!(mine[0]["rule"], "iptables-tampered");
    let details = doc["summary"]["input"]["details"].as_array().unwrap();
    for (ns, name) in [(&clean, "web-clean"), (&tampered, "web-tampered")] {
        let d = details
            .iter()
            .find(|d| d["path"] == ns.path().display().to_string())
            .unwrap_or_else(|| panic!("{} not inspected: {doc:#}", ns.name));
        assert_eq!(d["pod"], format!("shop/{name}"));
        assert_eq!(d["status"], "judged");
    }
}
