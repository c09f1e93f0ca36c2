//! Istio's own capture goldens (`../shared/fixtures/istio/{iptables,nftables}`), judged against
//! pods with the flags each golden was generated with, give no finding; tampered variants of each
//! give the finding the tampering implies.
//!
//! The fixtures are found through `EGRESS_GUARD_FIXTURES` (default `<repo>/../shared/fixtures`);
//! without them the tests print why and return.

use std::path::PathBuf;

use egress_auditor::capture::{CaptureConfig, IpRanges, OwnerGroups};
use egress_auditor::finding::Finding;
use egress_auditor::netfilter::judge::{families_in, judge, JudgeContext, Subject};
use egress_auditor::netfilter::model::{
    BaseChain, Chain, ChainKind, Hook, Policy, Table, TableFamily, Verdict,
};
use egress_auditor::netfilter::{dump, parse_rule, Backend, IpFamily, Ruleset};
use egress_auditor::rules::{CAPTURE_INACTIVE, IPTABLES_TAMPERED};

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("EGRESS_GUARD_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    if dir.join("istio/iptables").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: Istio capture goldens not found at {} (set EGRESS_GUARD_FIXTURES)",
            dir.display()
        );
        None
    }
}

/// Each golden and the istio-iptables flags it was generated with (Istio's run_test.go; owner
/// groups have no flag and are set separately).
const GOLDENS: &[(&str, &str, Groups)] = &[
    ("ipv6-empty-inbound-ports", "", Groups::None),
    ("ip-range", "-x 1.1.0.0/16 -i 9.9.0.0/16 --redirect-dns -g 1,2 -u 3,4", Groups::None),
    (
        "tproxy",
        "-m TPROXY -b * -x 1.1.0.0/16 -i 9.9.0.0/16 --redirect-dns -g 1337 -u 1337 -c not-istio-nic",
        Groups::None,
    ),
    ("ipv6-inbound-ports", "-b 4000,5000", Groups::None),
    ("ipv6-virt-interfaces", "-b 4000,5000 -k eth0,eth1", Groups::None),
    (
        "ipv6-ipnets",
        "-b 4000,5000 -d 6000,7000 -k eth0,eth1 -x 2001:db8::/32 -i 2001:db8::/32",
        Groups::None,
    ),
    (
        "ipv6-uid-gid",
        "-b 4000,5000 -d 6000,7000 -k eth0,eth1 -g 1,2 -u 3,4 -x 2001:db8::/32 -i 2001:db8::/32",
        Groups::None,
    ),
    ("ipv6-outbound-ports", "-q 32000,31000", Groups::None),
    ("empty", "", Groups::None),
    ("kube-virt-interfaces", "-k eth1,eth2 -i *", Groups::None),
    ("ipnets", "-i 10.0.0.0/8", Groups::None),
    ("ipnets-with-kube-virt-interfaces", "-k eth1,eth2 -i 10.0.0.0/8", Groups::None),
    ("inbound-ports-include", "-b 32000,31000", Groups::None),
    ("inbound-ports-wildcard", "-b *", Groups::None),
    ("inbound-ports-tproxy", "-b 32000,31000 -m TPROXY", Groups::None),
    ("inbound-ports-wildcard-tproxy", "-b * -m TPROXY", Groups::None),
    ("inbound-ports-empty-tproxy", "-m TPROXY", Groups::None),
    ("dns-uid-gid", "--redirect-dns -g 1,2 -u 3,4", Groups::None),
    ("ipv6-dns-uid-gid", "--redirect-dns -g 1,2 -u 3,4", Groups::None),
    ("outbound-owner-groups", "", Groups::Only(&["java", "202"])),
    ("outbound-owner-groups-exclude", "", Groups::Except(&["888", "ftp"])),
    ("ipv6-dns-outbound-owner-groups", "--redirect-dns", Groups::Only(&["java", "202"])),
    (
        "ipv6-dns-outbound-owner-groups-exclude",
        "--redirect-dns",
        Groups::Except(&["888", "ftp"]),
    ),
    ("outbound-ports-include", "-q 32000,31000", Groups::None),
    (
        "loopback-outbound-iprange",
        "-i 127.1.2.3/32 --redirect-dns -g 1,2 -u 3,4",
        Groups::None,
    ),
    ("basic-exclude-nic", "-c not-istio-nic", Groups::None),
    ("drop-invalid", "--drop-invalid", Groups::None),
    ("host-ipv4-loopback-cidr", "", Groups::None),
];

/// Goldens whose settings send some outbound (non-loopback) TCP to the proxy: tampering with
/// them lets traffic out. The others capture no outbound traffic by design (no `-i`, no `-q`),
/// so only structural damage (capture-inactive) is a finding for them.
const CAPTURES_OUTBOUND: &[&str] = &[
    "ip-range",
    "tproxy",
    "kube-virt-interfaces",
    "ipnets",
    "ipnets-with-kube-virt-interfaces",
    "outbound-ports-include",
    "ipv6-outbound-ports",
];

#[derive(Clone, Copy)]
enum Groups {
    None,
    Only(&'static [&'static str]),
    Except(&'static [&'static str]),
}

fn config(args: &str, groups: Groups) -> CaptureConfig {
    let args: Vec<String> = args.split_whitespace().map(str::to_string).collect();
    let mut cfg = CaptureConfig::from_istio_iptables_args("istio-init", &args)
        .unwrap_or_else(|e| panic!("flags {args:?}: {e}"));
    match groups {
        Groups::None => {}
        Groups::Only(g) => {
            cfg.owner_groups = OwnerGroups::Only(g.iter().map(|s| s.to_string()).collect())
        }
        Groups::Except(g) => {
            cfg.owner_groups = OwnerGroups::AllExcept(g.iter().map(|s| s.to_string()).collect())
        }
    }
    cfg
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Iptables,
    Nftables,
}

/// Every golden of one kind present in the fixtures, parsed.
fn goldens(kind: Kind) -> Option<Vec<(&'static str, CaptureConfig, Ruleset)>> {
    let dir = fixtures()?.join(match kind {
        Kind::Iptables => "istio/iptables",
        Kind::Nftables => "istio/nftables",
    });
    let mut out = Vec::new();
    for (name, args, groups) in GOLDENS {
        let path = dir.join(format!("{name}.golden"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let (_, rs) =
            dump::parse(&text, &path.display().to_string(), None).unwrap_or_else(|e| panic!("{e}"));
        out.push((*name, config(args, *groups), rs));
    }
    let on_disk = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "golden"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(
        out.len(),
        on_disk,
        "every golden in {} has flags in GOLDENS",
        dir.display()
    );
    Some(out)
}

const SUBJECT: Subject<'static> = Subject {
    namespace: "shop",
    name: "web",
};

fn run(cfg: &CaptureConfig, rs: &Ruleset, families: &[IpFamily]) -> Vec<Finding> {
    judge(cfg, rs, families, SUBJECT, &JudgeContext::default())
}

fn summary(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .map(|f| format!("{}: {}", f.rule, f.message))
        .collect()
}

fn for_each_kind(test: impl Fn(Kind, &str, &CaptureConfig, &Ruleset)) {
    for kind in [Kind::Iptables, Kind::Nftables] {
        let Some(goldens) = goldens(kind) else { return };
        for (name, cfg, rs) in &goldens {
            test(kind, name, cfg, rs);
        }
    }
}

#[test]
fn goldens_with_their_own_flags_pass() {
    for_each_kind(|kind, name, cfg, rs| {
        let families = families_in(rs);
        let f = run(cfg, rs, &families);
        assert!(f.is_empty(), "{kind:?} {name}: {:#?}", summary(&f));
    });
}

#[test]
fn goldens_hold_both_families_where_istio_wrote_both() {
    let Some(goldens) = goldens(Kind::Iptables) else {
        return;
    };
    for (name, _, rs) in &goldens {
        let families = families_in(rs);
        // Istio writes ip6tables rules only with IPv6 enabled: the ipv6-*, dns-uid-gid and
        // tproxy goldens.
        let v6 = name.starts_with("ipv6-") || *name == "dns-uid-gid" || *name == "tproxy";
        let expected = if v6 {
            vec![IpFamily::V4, IpFamily::V6]
        } else {
            vec![IpFamily::V4]
        };
        assert_eq!(families, expected, "{name}");
    }
}

fn is_iptables(t: &Table) -> bool {
    t.backend.is_iptables()
}

fn istio_output_chain(t: &Table) -> Option<&'static str> {
    if t.chain("ISTIO_OUTPUT").is_some() {
        Some("ISTIO_OUTPUT")
    } else if t.chain("istio-output").is_some() {
        Some("istio-output")
    } else {
        None
    }
}

/// Inserts a rule (written in both dialects) at the top of every Istio outbound chain.
fn insert_first(rs: &Ruleset, iptables_rule: &str, nft_rule: &str) -> Ruleset {
    let mut rs = rs.clone();
    for t in &mut rs.tables {
        if let Some(name) = istio_output_chain(t) {
            let rule = if is_iptables(t) {
                parse_rule(true, iptables_rule)
            } else {
                parse_rule(false, nft_rule)
            }
            .expect("tamper rule parses");
            t.chain_mut(name).unwrap().rules.insert(0, rule);
        }
    }
    rs
}

fn delete_output_jump(rs: &Ruleset) -> Ruleset {
    let mut rs = rs.clone();
    for t in &mut rs.tables {
        for c in &mut t.chains {
            if c.base
                .is_some_and(|b| b.hook == Hook::Output && b.kind == ChainKind::Nat)
            {
                c.rules.retain(|r| {
                    !matches!(&r.verdict, Some(Verdict::Jump(x)) if x == "ISTIO_OUTPUT" || x == "istio-output")
                });
            }
        }
    }
    rs
}

/// `iptables -t nat -F; iptables -t nat -X` in every table, or `nft delete table` for Istio's.
fn flush_everything(rs: &Ruleset) -> Ruleset {
    let mut rs = rs.clone();
    rs.tables.retain(|t| !t.name.starts_with("istio-proxy-"));
    for t in &mut rs.tables {
        t.chains.retain(|c| c.base.is_some());
        t.chains.iter_mut().for_each(|c| c.rules.clear());
    }
    rs
}

fn change_redirect_port(rs: &Ruleset, to: u16) -> Ruleset {
    let mut rs = rs.clone();
    for t in &mut rs.tables {
        for c in &mut t.chains {
            if c.name == "ISTIO_REDIRECT" || c.name == "istio-redirect" {
                for r in &mut c.rules {
                    if let Some(Verdict::Redirect { ports }) = &mut r.verdict {
                        *ports = Some((to, to));
                        r.text = r.text.replace("15001", &to.to_string());
                    }
                }
            }
        }
    }
    rs
}

/// A native nftables table with one base chain on the output hook.
fn extra_chain(rs: &Ruleset, kind: ChainKind, priority: i32, rule: &str) -> Ruleset {
    let mut rs = rs.clone();
    let mut t = Table::new(TableFamily::Inet, "intruder", Backend::Nftables);
    let mut c = Chain::new("out");
    c.base = Some(BaseChain {
        hook: Hook::Output,
        kind,
        priority,
        policy: Policy::Accept,
    });
    c.rules.push(parse_rule(false, rule).unwrap());
    t.chains.push(c);
    rs.tables.push(t);
    rs
}

fn assert_tampered(kind: Kind, name: &str, what: &str, findings: &[Finding], must_mention: &str) {
    if CAPTURES_OUTBOUND.contains(&name) {
        assert!(!findings.is_empty(), "{kind:?} {name} {what}: no finding");
        for f in findings {
            assert_eq!(
                f.rule, IPTABLES_TAMPERED,
                "{kind:?} {name} {what}: {}",
                f.message
            );
        }
        assert!(
            findings.iter().any(|f| f.message.contains(must_mention)
                || f.evidence.to_string().contains(must_mention)),
            "{kind:?} {name} {what}: no finding mentions {must_mention:?}: {:#?}",
            summary(findings)
        );
    } else {
        assert!(
            findings.is_empty(),
            "{kind:?} {name} {what}: settings capture no outbound traffic, yet {:#?}",
            summary(findings)
        );
    }
}

#[test]
fn early_return_lets_traffic_out() {
    for_each_kind(|kind, name, cfg, rs| {
        let families = families_in(rs);
        let t = insert_first(rs, "-j RETURN", "counter return");
        // The cause is the inserted rule: first in Istio's outbound chain.
        assert_tampered(
            kind,
            name,
            "RETURN first",
            &run(cfg, &t, &families),
            "\"position\":1,",
        );
    });
}

#[test]
fn redirect_port_change_is_reported() {
    for_each_kind(|kind, name, cfg, rs| {
        let families = families_in(rs);
        let t = change_redirect_port(rs, 15002);
        assert_tampered(
            kind,
            name,
            "redirect to 15002",
            &run(cfg, &t, &families),
            "local port 15002 instead of the proxy's 15001",
        );
    });
}

#[test]
fn extra_owner_exemption_is_reported() {
    for_each_kind(|kind, name, cfg, rs| {
        let families = families_in(rs);
        let t = insert_first(
            rs,
            "-m owner --uid-owner 0 -j RETURN",
            "meta skuid 0 counter return",
        );
        assert_tampered(
            kind,
            name,
            "uid 0 exempt",
            &run(cfg, &t, &families),
            "uid 0 ",
        );
    });
}

#[test]
fn extra_destination_exemption_is_reported() {
    for_each_kind(|kind, name, cfg, rs| {
        let families = families_in(rs);
        // Every capturing golden captures 9.9.0.0/16, 10.0.0.0/8, all (*), or ports 31000/32000.
        let t = insert_first(
            rs,
            "-p tcp -m multiport --dports 443,32000 -j RETURN",
            "tcp dport { 443, 32000 } return",
        );
        let t = insert_first(&t, "-d 9.9.0.0/16 -j RETURN", "ip daddr 9.9.0.0/16 return");
        let t = insert_first(&t, "-d 10.0.0.0/8 -j RETURN", "ip daddr 10.0.0.0/8 return");
        assert_tampered(
            kind,
            name,
            "destination exemptions",
            &run(cfg, &t, &families),
            "escapes the sidecar through rule",
        );
    });
}

#[test]
fn notrack_before_conntrack_is_reported() {
    for_each_kind(|kind, name, cfg, rs| {
        let families = families_in(rs);
        let t = extra_chain(rs, ChainKind::Filter, -300, "meta l4proto tcp notrack");
        assert_tampered(
            kind,
            name,
            "notrack chain",
            &run(cfg, &t, &families),
            "connection tracking",
        );
    });
}

#[test]
fn earlier_nat_chain_that_rewrites_is_reported() {
    for_each_kind(|kind, name, cfg, rs| {
        let families = families_in(rs);
        let t = extra_chain(
            rs,
            ChainKind::Nat,
            -150,
            "meta l4proto tcp redirect to :8888",
        );
        assert_tampered(
            kind,
            name,
            "earlier nat chain",
            &run(cfg, &t, &families),
            "local port 8888",
        );
    });
}

#[test]
fn accept_in_an_earlier_chain_is_not_a_bypass() {
    // The kernel runs every base chain of a hook; `accept` ends only its own chain, and a NAT
    // chain that maps nothing hands the connection to the next NAT chain (Istio's).
    for_each_kind(|kind, name, cfg, rs| {
        let families = families_in(rs);
        let t = extra_chain(rs, ChainKind::Filter, -250, "counter accept");
        let t = extra_chain(&t, ChainKind::Nat, -150, "meta l4proto tcp accept");
        let f = run(cfg, &t, &families);
        assert!(f.is_empty(), "{kind:?} {name}: {:#?}", summary(&f));
    });
}

#[test]
fn deleting_the_output_jump_is_capture_inactive() {
    for_each_kind(|kind, name, cfg, rs| {
        let families = families_in(rs);
        let f = run(cfg, &delete_output_jump(rs), &families);
        assert_eq!(
            f.len(),
            families.len(),
            "{kind:?} {name}: {:#?}",
            summary(&f)
        );
        for x in &f {
            assert_eq!(x.rule, CAPTURE_INACTIVE, "{kind:?} {name}");
            assert_eq!(x.evidence["reason"], "output-does-not-reach-istio");
        }
    });
}

#[test]
fn flushing_everything_is_capture_inactive() {
    for_each_kind(|kind, name, cfg, rs| {
        let families = families_in(rs);
        let f = run(cfg, &flush_everything(rs), &families);
        assert_eq!(
            f.len(),
            families.len(),
            "{kind:?} {name}: {:#?}",
            summary(&f)
        );
        for x in &f {
            assert_eq!(x.rule, CAPTURE_INACTIVE);
            assert_eq!(x.evidence["reason"], "no-istio-chains");
        }
    });
}

#[test]
fn wider_settings_than_the_rules_are_reported() {
    // The rules of a golden that captures less than "everything" do not satisfy a pod whose
    // settings capture everything.
    for_each_kind(|kind, name, cfg, rs| {
        let families = families_in(rs);
        let mut wide = cfg.clone();
        wide.include_outbound_ip_ranges = IpRanges::All;
        let f = run(&wide, rs, &families);
        if cfg.include_outbound_ip_ranges == IpRanges::All {
            assert!(f.is_empty(), "{kind:?} {name}: {:#?}", summary(&f));
        } else {
            assert!(
                f.iter().any(|x| x.rule == IPTABLES_TAMPERED),
                "{kind:?} {name}: rules capture less than -i * yet no finding"
            );
        }
    });
}
