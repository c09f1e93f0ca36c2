//! Istio's ambient in-pod rule goldens (`../shared/fixtures/istio/ambient-{iptables,nftables}`,
//! from istio-cni's own tests) judged as the rules of an enrolled pod give no finding; tampered
//! variants give the finding the tampering implies. The goldens of the host's probe SNAT rules are
//! the node's rules, not a pod's, and are shown to be so. A correctly enrolled ambient namespace
//! (`tests/data/ambient/enrolled.yaml`) gives no finding, from the pod checks or from the judge
//! of each pod's rules.
//!
//! The fixtures are found through `EGRESS_GUARD_FIXTURES` (default `<repo>/../shared/fixtures`);
//! without them the golden tests print why and return.

use std::net::IpAddr;
use std::path::PathBuf;

use egress_auditor::capture::{AmbientCapture, AmbientSettings};
use egress_auditor::checks::{check_all, CheckOptions};
use egress_auditor::finding::{Finding, Severity};
use egress_auditor::netfilter::judge::{ambient_families, judge_ambient, JudgeContext, Subject};
use egress_auditor::netfilter::model::{ChainKind, Hook, Match, Rule, Table, Verdict, PROTO_UDP};
use egress_auditor::netfilter::{dump, parse_rule, IpFamily, Ruleset};
use egress_auditor::rules::{CAPTURE_INACTIVE, IPTABLES_TAMPERED};
use egress_auditor::snapshot::Workload;
use egress_auditor::sources::files::load_paths;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("EGRESS_GUARD_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    if dir.join("istio/ambient-iptables").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: Istio ambient goldens not found at {} (set EGRESS_GUARD_FIXTURES)",
            dir.display()
        );
        None
    }
}

/// Each pod golden and the pod it was written for: whether DNS capture is on for it (the
/// install's setting and the pod's `ambient.istio.io/dns-capture`, as in istio-cni's test cases),
/// and whether it is an IPv6 pod.
const GOLDENS: &[(&str, bool, bool)] = &[
    ("default", true, false),
    ("default_ipv6", true, true),
    ("dns_pod_disabled_and_on_globally", false, false),
    ("dns_pod_disabled_and_on_globally_ipv6", false, true),
    ("dns_pod_enabled_and_off_globally", true, false),
    ("dns_pod_enabled_and_off_globally_ipv6", true, true),
    ("ingress", false, false),
    ("ingress_ipv6", false, true),
    ("ingress_and_virtual_interfaces", false, false),
    ("ingress_and_virtual_interfaces_ipv6", false, true),
    ("virtual_interfaces", false, false),
    ("virtual_interfaces_ipv6", false, true),
];

/// The host netns rules (SNAT of kubelet's probes), not a pod's.
const HOST_GOLDENS: &[&str] = &["hostprobe", "hostprobe_ipv6"];

/// The IPv6 host probe address istio-cni's tests use (the default is
/// fd16:9254:7127:1337:ffff:ffff:ffff:ffff).
const TEST_PROBE_IPV6: &str = "e9ac:1e77:90ca:399f:4d6d:ece2:2f9b:3164";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Iptables,
    Nftables,
}

struct Golden {
    kind: Kind,
    name: &'static str,
    ipv6: bool,
    capture: AmbientCapture,
    rules: Ruleset,
}

fn settings(dns_capture: bool) -> AmbientSettings {
    AmbientSettings {
        dns_capture,
        host_probe_snat_ips: vec![
            "169.254.7.127".parse().unwrap(),
            TEST_PROBE_IPV6.parse().unwrap(),
        ],
    }
}

fn enrolled_meta() -> ObjectMeta {
    ObjectMeta {
        annotations: Some(
            [(
                "ambient.istio.io/redirection".to_string(),
                "enabled".to_string(),
            )]
            .into_iter()
            .collect(),
        ),
        ..ObjectMeta::default()
    }
}

fn dir_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Iptables => "istio/ambient-iptables",
        Kind::Nftables => "istio/ambient-nftables",
    }
}

fn parse(path: &std::path::Path) -> Ruleset {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    dump::parse(&text, &path.display().to_string(), None)
        .unwrap_or_else(|e| panic!("{e}"))
        .1
}

/// Every pod golden of both kinds, parsed; every golden on disk must be listed above.
fn goldens() -> Option<Vec<Golden>> {
    let root = fixtures()?;
    let mut out = Vec::new();
    for kind in [Kind::Iptables, Kind::Nftables] {
        let dir = root.join(dir_of(kind));
        let on_disk = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "golden"))
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(
            on_disk,
            GOLDENS.len() + HOST_GOLDENS.len(),
            "every golden in {} is listed",
            dir.display()
        );
        for (name, dns, ipv6) in GOLDENS {
            let rules = parse(&dir.join(format!("{name}.golden")));
            let capture = AmbientCapture::from_pod(&enrolled_meta(), &settings(*dns))
                .expect("an enrolled pod");
            out.push(Golden {
                kind,
                name,
                ipv6: *ipv6,
                capture,
                rules,
            });
        }
    }
    Some(out)
}

const SUBJECT: Subject<'static> = Subject {
    namespace: "orders",
    name: "orders-v4",
};

fn run(g: &Golden, rules: &Ruleset) -> Vec<Finding> {
    let families = ambient_families(rules, g.ipv6);
    judge_ambient(
        &g.capture,
        rules,
        &families,
        SUBJECT,
        &JudgeContext::default(),
    )
}

fn summary(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .map(|f| format!("{}: {}", f.rule, f.message))
        .collect()
}

fn for_each(test: impl Fn(&Golden)) {
    let Some(goldens) = goldens() else { return };
    for g in &goldens {
        test(g);
    }
}

/// Istio's outbound chain of the nat table: `ISTIO_OUTPUT` (iptables) or `istio-output` in
/// `istio-ambient-nat` (nftables).
fn nat_output(t: &Table) -> Option<&'static str> {
    if t.backend.is_iptables() && t.name == "nat" && t.chain("ISTIO_OUTPUT").is_some() {
        Some("ISTIO_OUTPUT")
    } else if t.name == "istio-ambient-nat" && t.chain("istio-output").is_some() {
        Some("istio-output")
    } else {
        None
    }
}

fn redirects_to(r: &Rule, port: u16) -> bool {
    matches!(r.verdict, Some(Verdict::Redirect { ports: Some((p, _)) }) if p == port)
}

/// Applies `edit` to the rules of Istio's nat outbound chain in every table.
fn edit_nat_output(rs: &Ruleset, edit: impl Fn(&Table, &mut Vec<Rule>)) -> Ruleset {
    let mut rs = rs.clone();
    for t in &mut rs.tables {
        if let Some(name) = nat_output(t) {
            let snapshot = t.clone();
            let chain = t.chain_mut(name).unwrap();
            edit(&snapshot, &mut chain.rules);
        }
    }
    rs
}

/// A rule inserted just before the outbound capture (the first 15001 redirect).
fn insert_before_capture(rs: &Ruleset, iptables_rule: &str, nft_rule: &str) -> Ruleset {
    edit_nat_output(rs, |t, rules| {
        let at = rules
            .iter()
            .position(|r| redirects_to(r, 15001))
            .expect("the golden has the 15001 redirect");
        let rule = parse_rule(
            t.backend.is_iptables(),
            if t.backend.is_iptables() {
                iptables_rule
            } else {
                nft_rule
            },
        )
        .expect("tamper rule parses");
        rules.insert(at, rule);
    })
}

fn assert_tampered(g: &Golden, what: &str, findings: &[Finding], must_mention: &str) {
    let families = ambient_families(&g.rules, g.ipv6);
    assert!(
        !findings.is_empty(),
        "{:?} {} {what}: no finding",
        g.kind,
        g.name
    );
    for f in findings {
        assert_eq!(
            f.rule, IPTABLES_TAMPERED,
            "{:?} {} {what}: {}",
            g.kind, g.name, f.message
        );
        assert_eq!(f.evidence["dataplane"], "ambient");
    }
    for fam in &families {
        assert!(
            findings
                .iter()
                .any(|f| f.evidence["family"] == serde_json::json!(fam)),
            "{:?} {} {what}: no finding for {fam:?}: {:#?}",
            g.kind,
            g.name,
            summary(findings)
        );
    }
    assert!(
        findings
            .iter()
            .any(|f| f.message.contains(must_mention)
                || f.evidence.to_string().contains(must_mention)),
        "{:?} {} {what}: nothing mentions {must_mention:?}: {:#?}",
        g.kind,
        g.name,
        summary(findings)
    );
}

#[test]
fn ambient_goldens_pass() {
    for_each(|g| {
        let f = run(g, &g.rules);
        assert!(f.is_empty(), "{:?} {}: {:#?}", g.kind, g.name, summary(&f));
    });
}

#[test]
fn ambient_goldens_are_judged_for_the_families_istio_wrote() {
    // An IPv4-only pod's nftables rules sit in inet tables but name IPv4 addresses only.
    for_each(|g| {
        let want = if g.ipv6 {
            vec![IpFamily::V4, IpFamily::V6]
        } else {
            vec![IpFamily::V4]
        };
        assert_eq!(
            ambient_families(&g.rules, false),
            want,
            "{:?} {}",
            g.kind,
            g.name
        );
    });
}

#[test]
fn the_outbound_capture_removed_lets_everything_out() {
    for_each(|g| {
        let t = edit_nat_output(&g.rules, |_, rules| {
            rules.retain(|r| !redirects_to(r, 15001))
        });
        let f = run(g, &t);
        assert_tampered(g, "15001 redirect removed", &f, "chainEnd");
        assert!(
            f.iter().all(|x| x.severity == Severity::Critical),
            "{:#?}",
            summary(&f)
        );
    });
}

#[test]
fn a_changed_capture_port_is_reported() {
    for_each(|g| {
        let t = edit_nat_output(&g.rules, |_, rules| {
            for r in rules.iter_mut().filter(|r| redirects_to(r, 15001)) {
                r.verdict = Some(Verdict::Redirect {
                    ports: Some((15002, 15002)),
                });
                r.text = r.text.replace("15001", "15002");
            }
        });
        assert_tampered(
            g,
            "redirect to 15002",
            &run(g, &t),
            "local port 15002 instead of ztunnel's 15001",
        );
    });
}

#[test]
fn return_or_accept_before_the_capture_is_reported() {
    for_each(|g| {
        let t = insert_before_capture(&g.rules, "-j RETURN", "counter return");
        assert_tampered(g, "RETURN", &run(g, &t), "escapes ztunnel through rule");
        let t = insert_before_capture(
            &g.rules,
            "-p tcp --dport 443 -j ACCEPT",
            "tcp dport 443 accept",
        );
        let f = run(g, &t);
        assert_tampered(g, "ACCEPT 443", &f, ":443 via eth0");
        assert!(f.iter().all(|x| x.severity == Severity::Critical));
    });
}

#[test]
fn removing_the_jump_from_nat_output_is_capture_inactive() {
    for_each(|g| {
        let mut t = g.rules.clone();
        for table in &mut t.tables {
            for c in &mut table.chains {
                if c.base
                    .is_some_and(|b| b.hook == Hook::Output && b.kind == ChainKind::Nat)
                {
                    c.rules.retain(|r| {
                        !matches!(&r.verdict, Some(Verdict::Jump(x)) if x == "ISTIO_OUTPUT" || x == "istio-output")
                    });
                }
            }
        }
        let f = run(g, &t);
        let families = ambient_families(&g.rules, g.ipv6);
        assert_eq!(
            f.len(),
            families.len(),
            "{:?} {}: {:#?}",
            g.kind,
            g.name,
            summary(&f)
        );
        for x in &f {
            assert_eq!(x.rule, CAPTURE_INACTIVE);
            assert_eq!(x.evidence["reason"], "output-does-not-reach-istio");
        }
    });
}

#[test]
fn flushing_the_rules_is_capture_inactive() {
    for_each(|g| {
        let mut t = g.rules.clone();
        t.tables.retain(|x| !x.name.starts_with("istio-ambient-"));
        for table in &mut t.tables {
            table.chains.retain(|c| c.base.is_some());
            table.chains.iter_mut().for_each(|c| c.rules.clear());
        }
        let f = run(g, &t);
        assert!(!f.is_empty(), "{:?} {}", g.kind, g.name);
        for x in &f {
            assert_eq!(x.rule, CAPTURE_INACTIVE, "{:?} {}", g.kind, g.name);
            assert_eq!(x.evidence["reason"], "no-istio-chains");
        }
    });
}

#[test]
fn a_widened_mark_exemption_is_reported() {
    // The accept of ztunnel's accepted connections (mark 0x111/0xfff) made to match more marks.
    for_each(|g| {
        let widen = |value: u32, mask: u32| {
            edit_nat_output(&g.rules, |_, rules| {
                for r in rules.iter_mut() {
                    if matches!(r.verdict, Some(Verdict::Accept)) {
                        for m in r.matches.iter_mut() {
                            if let Match::Mark {
                                ct: false,
                                negated: false,
                                value: v,
                                mask: k,
                            } = m
                            {
                                if *v == 0x111 {
                                    *v = value;
                                    *k = mask;
                                    r.text = format!("{} (mark {value:#x}/{mask:#x})", r.text);
                                }
                            }
                        }
                    }
                }
            })
        };
        // Every mark, 0 included: every application connection.
        let f = run(g, &widen(0, 0));
        assert_tampered(g, "mark 0/0", &f, "(mark 0x0/0x0)");
        assert!(f.iter().any(|x| x.severity == Severity::Critical));
        // Only marks with bit 0x100: a socket marked so (NET_RAW or NET_ADMIN) goes out.
        let f = run(g, &widen(0x100, 0x100));
        assert_tampered(g, "mark 0x100/0x100", &f, "mark 0x100");
        assert!(f.iter().all(|x| x.severity == Severity::High));
    });
}

#[test]
fn marking_application_packets_as_ztunnels_is_reported() {
    for_each(|g| {
        let mut t = g.rules.clone();
        for table in &mut t.tables {
            let (chain, rule) = if table.backend.is_iptables() && table.name == "mangle" {
                (
                    "ISTIO_OUTPUT",
                    parse_rule(true, "-p tcp -j MARK --set-xmark 0x539/0xfff"),
                )
            } else if table.name == "istio-ambient-mangle" {
                (
                    "istio-output",
                    parse_rule(false, "meta l4proto tcp meta mark set 0x539"),
                )
            } else {
                continue;
            };
            if let Some(c) = table.chain_mut(chain) {
                c.rules.insert(0, rule.expect("mark rule parses"));
            }
        }
        let f = run(g, &t);
        assert_tampered(g, "mangle mark 0x539", &f, "marked it");
        assert!(
            f.iter().all(|x| !x.evidence["markSetBy"].is_null()),
            "{:#?}",
            f
        );
    });
}

#[test]
fn dns_capture_removed_is_reported_where_it_is_expected() {
    for_each(|g| {
        let t = edit_nat_output(&g.rules, |_, rules| {
            rules.retain(|r| {
                !(redirects_to(r, 15053)
                    && r.matches.iter().any(|m| {
                        matches!(m, Match::Protocol { negated: false, protocols } if protocols.contains(&PROTO_UDP))
                    }))
            })
        });
        let f = run(g, &t);
        if g.capture.dns_capture {
            assert_tampered(g, "DNS/UDP redirect removed", &f, "DNS (UDP)");
            assert!(f.iter().all(|x| x.severity == Severity::High));
        } else {
            assert!(f.is_empty(), "{:?} {}: {:#?}", g.kind, g.name, summary(&f));
        }
    });
}

#[test]
fn host_probe_goldens_are_the_nodes_rules_not_a_pods() {
    // istio-cni writes these in the host network namespace (SNAT of kubelet's probes on
    // POSTROUTING); a pod's namespace never holds them. They hold no output-hook chain, so judged
    // as a pod's rules they would read as capture that is not there: the node agent judges pod
    // namespaces only and never sees them.
    let Some(root) = fixtures() else { return };
    for kind in [Kind::Iptables, Kind::Nftables] {
        for name in HOST_GOLDENS {
            let rs = parse(&root.join(dir_of(kind)).join(format!("{name}.golden")));
            let output_chains = rs
                .tables
                .iter()
                .flat_map(|t| t.chains.iter())
                .filter(|c| c.base.is_some_and(|b| b.hook == Hook::Output))
                .count();
            let postrouting_snat = rs
                .tables
                .iter()
                .flat_map(|t| t.chains.iter())
                .flat_map(|c| c.rules.iter())
                .any(|r| matches!(r.verdict, Some(Verdict::SourceNat)));
            assert!(
                postrouting_snat && output_chains == 0,
                "{kind:?} {name}: {output_chains} output chains"
            );
        }
    }
}

fn enrolled() -> Vec<Workload> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/ambient/enrolled.yaml");
    load_paths(&[path])
        .expect("enrolled.yaml loads")
        .snapshot
        .workloads
}

#[test]
fn a_correctly_enrolled_ambient_namespace_has_no_finding() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/ambient/enrolled.yaml");
    let loaded = load_paths(&[path]).expect("enrolled.yaml loads");
    let f = check_all(&loaded.snapshot, &CheckOptions::default());
    assert!(f.is_empty(), "{:#?}", summary(&f));

    // Each pod's network namespace, as istio-cni writes it for that pod.
    let Some(root) = fixtures() else { return };
    let golden_for = |pod: &str| match pod {
        "orders-v4" => Some("default"),
        "orders-dual" => Some("default_ipv6"),
        "orders-resolver" => Some("dns_pod_disabled_and_on_globally"),
        _ => None,
    };
    let mut judged = 0;
    for pod in enrolled() {
        let Some(golden) = golden_for(&pod.name) else {
            continue;
        };
        // istio-cni's tests run with DNS capture on in the install, and the IPv6 probe address
        // of TEST_PROBE_IPV6.
        let capture = AmbientCapture::from_pod(&pod.meta, &settings(true)).expect("enrolled");
        let addrs: Vec<IpAddr> = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().filter_map(|i| i.ip.parse().ok()).collect())
            .unwrap_or_default();
        for kind in [Kind::Iptables, Kind::Nftables] {
            let rs = parse(&root.join(dir_of(kind)).join(format!("{golden}.golden")));
            let families = ambient_families(&rs, addrs.iter().any(IpAddr::is_ipv6));
            let ctx = JudgeContext {
                pod_addrs: addrs.clone(),
                ..JudgeContext::default()
            };
            let subject = Subject {
                namespace: &pod.namespace,
                name: &pod.name,
            };
            let f = judge_ambient(&capture, &rs, &families, subject, &ctx);
            assert!(f.is_empty(), "{kind:?} {}: {:#?}", pod.name, summary(&f));
            judged += 1;
        }
    }
    assert_eq!(judged, 6);
}

/// Rules are judged by what they do, not where they stand: the outbound capture moved to the
/// head of Istio's chain (before the probe-reply, mark and loopback exemptions and the DNS/TCP
/// redirect) still sends every application connection to ztunnel, DNS over TCP included, so it is
/// no bypass. (A rule moved or inserted before the capture that lets traffic out is:
/// `return_or_accept_before_the_capture_is_reported`.)
#[test]
fn a_reordered_capture_that_still_captures_is_not_reported() {
    for_each(|g| {
        let t = edit_nat_output(&g.rules, |_, rules| {
            let at = rules
                .iter()
                .position(|r| redirects_to(r, 15001))
                .expect("the golden has the 15001 redirect");
            let capture = rules.remove(at);
            rules.insert(0, capture);
        });
        let order = |rs: &Ruleset| -> Vec<String> {
            rs.tables
                .iter()
                .filter_map(|t| {
                    Some(
                        t.chain(nat_output(t)?)?
                            .rules
                            .iter()
                            .map(|r| r.text.clone()),
                    )
                })
                .flatten()
                .collect()
        };
        assert_ne!(
            order(&t),
            order(&g.rules),
            "{:?} {}: the order changed",
            g.kind,
            g.name
        );
        let f = run(g, &t);
        assert!(f.is_empty(), "{:?} {}: {:#?}", g.kind, g.name, summary(&f));
    });
}
