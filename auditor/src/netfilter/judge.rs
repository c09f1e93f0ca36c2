//! The judge: what the rules in a pod's network namespace do to its outbound TCP, compared with
//! what its [`CaptureConfig`] allows.
//!
//! Probe packets are built from the settings and from every address, port, interface and owner the
//! rules mention (so any exemption a rule could grant is probed on both of its sides). Each probe
//! the settings say must reach the proxy is run through the output hook ([`Simulator`]); every one
//! that does not is an escape. Escapes are grouped by the rule (or chain end) that let them out,
//! one `iptables-tampered` finding per cause and family. A family whose output NAT path no longer
//! reaches Istio's outbound chain, or that has no Istio chains at all, gets `capture-inactive`
//! instead.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{json, Map, Value};

use super::addr::{IpFamily, IpNet};
use super::model::{
    ChainKind, Direction, Effect, Hook, Identity, IfaceDirection, Match, OwnerId, OwnerKind, Rule,
    Ruleset, Table, Verdict, PROTO_TCP,
};
use super::sim::{Cause, Fate, Outcome, Probe, Simulator, EPHEMERAL_PORT};
use crate::capture::{CaptureConfig, IpRanges, OwnerGroups};
use crate::finding::{Finding, Severity};
use crate::rules::{CAPTURE_INACTIVE, IPTABLES_TAMPERED};

/// The DNS agent port Istio redirects port-53 traffic to when DNS capture is on.
pub const DNS_AGENT_PORT: u16 = 15053;

/// Ports every probe set includes: common service ports and the proxy's own.
const BASE_PORTS: [u16; 12] = [
    22, 53, 80, 443, 3306, 5432, 8080, 15001, 15006, 15008, 15020, 15090,
];
/// The application identity probes use by default (any non-proxy UID/GID).
const APP_ID: u32 = 1000;
const DEFAULT_OIF: &str = "eth0";
/// Destinations that stand for "the internet" in each family.
const EXTERNAL_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 10),
    Ipv4Addr::new(198, 51, 100, 20),
];
const EXTERNAL_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0x10),
    Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x10),
];
/// Caps that keep the probe set bounded whatever the rules mention.
const MAX_ADDRS: usize = 192;
const MAX_PORTS: usize = 160;
const MAX_IFACES: usize = 24;
const MAX_OWNERS: usize = 48;
const MAX_SPORTS: usize = 16;
const MAX_MARKS: usize = 16;
/// Probes x rules walked per family, at most (a few seconds of work at worst).
const RULE_EVAL_BUDGET: usize = 20_000_000;
/// Probe counts the budget allows: every combination of the probe values when it fits, else
/// probes built rule by rule.
const MAX_PROBES: usize = 200_000;
const MIN_PROBES: usize = 2_000;
const MAX_EXAMPLES: usize = 5;

/// The pod a verdict is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

/// What else the caller knows about the namespace judged (added to every finding's evidence).
#[derive(Debug, Clone, Default)]
pub struct JudgeContext {
    /// The pod's own addresses (probe sources). Placeholders are used when empty.
    pub pod_addrs: Vec<IpAddr>,
    /// Extra evidence (the dump file, the network namespace, the tools that produced the dump).
    pub evidence: Map<String, Value>,
}

/// Whether capture of this flow is required by the settings, or allowed to be skipped (and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    Capture,
    Exempt(&'static str),
}

/// What the settings say about one outbound flow. Mirrors the order `istio-iptables` writes its
/// RETURN rules (`tools/istio-iptables/pkg/capture/run.go`): excluded interfaces, excluded ports,
/// the proxy's UIDs/GIDs, owner groups, excluded ranges, then included ports and ranges.
pub fn expectation(cfg: &CaptureConfig, p: &Probe) -> Expectation {
    if !cfg.captures_outbound() {
        return Expectation::Exempt("the pod's settings capture no outbound traffic");
    }
    if p.protocol != PROTO_TCP {
        return Expectation::Exempt("only TCP is captured");
    }
    if p.oif == "lo" || p.dst.is_loopback() {
        return Expectation::Exempt("loopback traffic stays in the pod");
    }
    if cfg.exclude_interfaces.iter().any(|i| i == &p.oif) {
        return Expectation::Exempt("excluded interface");
    }
    if cfg.exclude_outbound_ports.contains(&p.dport) {
        return Expectation::Exempt("excluded outbound port");
    }
    let is_proxy = |ids: &[i64], who: &Identity| matches!(who, Identity::Id(n) if ids.iter().any(|i| *i == i64::from(*n)));
    if is_proxy(&cfg.proxy_uids, &p.uid) || is_proxy(&cfg.proxy_gids, &p.gid) {
        return Expectation::Exempt("the proxy's own identity");
    }
    let in_groups = |groups: &[String]| groups.iter().any(|g| Identity::parse(g) == p.gid);
    match &cfg.owner_groups {
        OwnerGroups::Only(groups) if !in_groups(groups) => {
            return Expectation::Exempt("group outside the captured owner groups")
        }
        OwnerGroups::AllExcept(groups) if in_groups(groups) => {
            return Expectation::Exempt("excluded owner group")
        }
        _ => {}
    }
    if cfg
        .exclude_outbound_ip_ranges
        .iter()
        .any(|c| c.contains(p.dst))
    {
        return Expectation::Exempt("excluded destination range");
    }
    if cfg.include_outbound_ports.contains(&p.dport) {
        return Expectation::Capture;
    }
    match &cfg.include_outbound_ip_ranges {
        IpRanges::All => Expectation::Capture,
        IpRanges::Only(ranges) if ranges.iter().any(|c| c.contains(p.dst)) => Expectation::Capture,
        IpRanges::Only(_) => Expectation::Exempt("destination outside the included ranges"),
    }
}

/// Whether an outcome keeps a flow that must be captured inside the mesh.
fn captured(cfg: &CaptureConfig, p: &Probe, fate: &Fate) -> bool {
    match fate {
        Fate::Redirected { port } => {
            *port == cfg.outbound_redirect_port
                || (cfg.dns_capture && p.dport == 53 && *port == DNS_AGENT_PORT)
        }
        // Blocked traffic does not leave the pod: not a way around the proxy.
        Fate::Dropped => true,
        Fate::Translated { .. } | Fate::Untracked | Fate::Queued | Fate::Unchanged => false,
    }
}

/// Istio's outbound capture chain in each dialect.
fn is_istio_output_chain(name: &str) -> bool {
    name == "ISTIO_OUTPUT" || name == "istio-output"
}

/// Chains Istio (sidecar mode) creates, in iptables and nftables spelling.
fn is_istio_chain(table: &Table, name: &str) -> bool {
    name.starts_with("ISTIO_")
        || name.starts_with("istio-")
        || table.name.starts_with("istio-proxy-")
}

/// Whether the ruleset holds any Istio chain that sees packets of `family`.
pub fn has_istio_chains(ruleset: &Ruleset, family: IpFamily) -> bool {
    ruleset
        .tables_for(family)
        .any(|t| t.chains.iter().any(|c| is_istio_chain(t, &c.name)))
}

/// Whether any NAT chain on the output hook reaches Istio's outbound chain (through jumps and
/// gotos, whatever their conditions).
fn output_reaches_istio(ruleset: &Ruleset, family: IpFamily) -> bool {
    for table in ruleset.tables_for(family) {
        let mut queue: VecDeque<&str> = table
            .chains
            .iter()
            .filter(|c| {
                c.base
                    .is_some_and(|b| b.hook == Hook::Output && b.kind == ChainKind::Nat)
            })
            .map(|c| c.name.as_str())
            .collect();
        let mut seen: BTreeSet<&str> = queue.iter().copied().collect();
        while let Some(name) = queue.pop_front() {
            if is_istio_output_chain(name) {
                return true;
            }
            let Some(chain) = table.chain(name) else {
                continue;
            };
            for rule in &chain.rules {
                if let Some(Verdict::Jump(t) | Verdict::Goto(t)) = &rule.verdict {
                    if seen.insert(t.as_str()) {
                        queue.push_back(t.as_str());
                    }
                }
            }
        }
    }
    false
}

/// The families a dump speaks about: those some table sees; IPv4 when the dump is empty.
pub fn families_in(ruleset: &Ruleset) -> Vec<IpFamily> {
    let fams: Vec<IpFamily> = IpFamily::BOTH
        .into_iter()
        .filter(|f| ruleset.tables_for(*f).next().is_some())
        .collect();
    if fams.is_empty() {
        vec![IpFamily::V4]
    } else {
        fams
    }
}

/// Judges one namespace's rules against one pod's settings, for each family in `families`.
pub fn judge(
    cfg: &CaptureConfig,
    ruleset: &Ruleset,
    families: &[IpFamily],
    subject: Subject<'_>,
    ctx: &JudgeContext,
) -> Vec<Finding> {
    if !cfg.captures_outbound() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for &family in families {
        if let Some(f) = capture_inactive(cfg, ruleset, family, subject, ctx) {
            out.push(f);
            continue;
        }
        out.extend(tampered(cfg, ruleset, family, subject, ctx));
    }
    out
}

fn finding(
    rule: &str,
    severity: Severity,
    subject: Subject<'_>,
    message: String,
    evidence: Value,
    ctx: &JudgeContext,
) -> Finding {
    let mut evidence = match evidence {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("detail".into(), other);
            m
        }
    };
    for (k, v) in &ctx.evidence {
        evidence.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Finding {
        rule: rule.to_string(),
        severity,
        kind: "Pod".to_string(),
        namespace: Some(subject.namespace.to_string()),
        name: subject.name.to_string(),
        container: None,
        message,
        evidence: Value::Object(evidence),
    }
}

fn family_label(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

fn capture_inactive(
    cfg: &CaptureConfig,
    ruleset: &Ruleset,
    family: IpFamily,
    subject: Subject<'_>,
    ctx: &JudgeContext,
) -> Option<Finding> {
    let tables: Vec<String> = ruleset.tables_for(family).map(Table::label).collect();
    if !has_istio_chains(ruleset, family) {
        return Some(finding(
            CAPTURE_INACTIVE,
            Severity::Critical,
            subject,
            format!(
                "{} rules of this injected pod's network namespace hold no Istio capture chain: nothing sends its traffic to the sidecar",
                family_label(family)
            ),
            json!({
                "family": family,
                "reason": "no-istio-chains",
                "tables": tables,
                "expectedRedirectPort": cfg.outbound_redirect_port,
            }),
            ctx,
        ));
    }
    if !output_reaches_istio(ruleset, family) {
        let output_chains: Vec<String> = ruleset
            .tables_for(family)
            .flat_map(|t| {
                t.chains
                    .iter()
                    .filter(|c| {
                        c.base
                            .is_some_and(|b| b.hook == Hook::Output && b.kind == ChainKind::Nat)
                    })
                    .map(move |c| format!("{} {}", t.label(), c.name))
            })
            .collect();
        return Some(finding(
            CAPTURE_INACTIVE,
            Severity::Critical,
            subject,
            format!(
                "{} output NAT rules no longer lead to Istio's outbound chain (ISTIO_OUTPUT / istio-output): the capture chains exist but no outbound connection reaches them",
                family_label(family)
            ),
            json!({
                "family": family,
                "reason": "output-does-not-reach-istio",
                "outputNatChains": output_chains,
                "tables": tables,
                "expectedRedirectPort": cfg.outbound_redirect_port,
            }),
            ctx,
        ));
    }
    None
}

/// The values probes take, per dimension.
#[derive(Debug, Default)]
pub struct ProbeSpace {
    pub dsts: Vec<IpAddr>,
    pub ports: Vec<u16>,
    pub oifs: Vec<String>,
    pub owners: Vec<(Identity, Identity)>,
    /// Source ports: the ephemeral default, plus the bounds of every source-port match.
    pub sports: Vec<u16>,
    /// Socket marks: 0, plus every packet-mark value a rule tests.
    pub marks: Vec<u32>,
}

impl ProbeSpace {
    pub fn size(&self) -> usize {
        self.dsts.len()
            * self.ports.len()
            * self.oifs.len()
            * self.owners.len()
            * self.sports.len()
            * self.marks.len()
    }
}

fn usable_dst(a: &IpAddr) -> bool {
    let broadcast = matches!(a, IpAddr::V4(v4) if v4.is_broadcast());
    !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || broadcast)
}

/// Builds the probe dimensions for one family from the settings and the rules.
pub fn probe_space(cfg: &CaptureConfig, ruleset: &Ruleset, family: IpFamily) -> ProbeSpace {
    let mut dsts: BTreeSet<IpAddr> = match family {
        IpFamily::V4 => EXTERNAL_V4.iter().map(|a| IpAddr::V4(*a)).collect(),
        IpFamily::V6 => EXTERNAL_V6.iter().map(|a| IpAddr::V6(*a)).collect(),
    };
    let mut nets: Vec<IpNet> = Vec::new();
    let mut ports: BTreeSet<u16> = BASE_PORTS.into_iter().collect();
    let mut oifs: BTreeSet<String> = [DEFAULT_OIF.to_string()].into_iter().collect();
    let mut uids: BTreeSet<Identity> = [Identity::Id(0), Identity::Id(APP_ID)]
        .into_iter()
        .collect();
    let mut gids: BTreeSet<Identity> = [Identity::Id(0), Identity::Id(APP_ID)]
        .into_iter()
        .collect();
    let mut sports: BTreeSet<u16> = [EPHEMERAL_PORT].into_iter().collect();
    let mut marks: BTreeSet<u32> = [0].into_iter().collect();

    let add_cidr = |c: &crate::capture::Cidr, nets: &mut Vec<IpNet>| {
        if let Some(n) = IpNet::new(c.addr(), c.prefix()) {
            nets.push(n);
        }
    };
    if let IpRanges::Only(r) = &cfg.include_outbound_ip_ranges {
        r.iter().for_each(|c| add_cidr(c, &mut nets));
    }
    cfg.exclude_outbound_ip_ranges
        .iter()
        .for_each(|c| add_cidr(c, &mut nets));
    ports.extend(cfg.include_outbound_ports.iter().copied());
    ports.extend(cfg.exclude_outbound_ports.iter().copied());
    ports.insert(cfg.outbound_redirect_port);
    oifs.extend(cfg.exclude_interfaces.iter().cloned());
    uids.extend(
        cfg.proxy_uids
            .iter()
            .filter_map(|u| u32::try_from(*u).ok())
            .map(Identity::Id),
    );
    gids.extend(
        cfg.proxy_gids
            .iter()
            .filter_map(|g| u32::try_from(*g).ok())
            .map(Identity::Id),
    );
    match &cfg.owner_groups {
        OwnerGroups::Only(g) | OwnerGroups::AllExcept(g) => {
            gids.extend(g.iter().map(|g| Identity::parse(g)))
        }
    }

    for rule in ruleset
        .tables_for(family)
        .flat_map(|t| t.chains.iter())
        .flat_map(|c| c.rules.iter())
    {
        let v = rule_values(rule, family);
        nets.extend(v.nets);
        ports.extend(v.ports);
        sports.extend(v.sports);
        marks.extend(v.marks);
        oifs.extend(v.oifs);
        uids.extend(v.uids);
        gids.extend(v.gids);
    }
    for n in nets.iter().filter(|n| n.family() == family) {
        dsts.insert(n.first_host());
        dsts.insert(n.last());
        if let Some(a) = n.before() {
            dsts.insert(a);
        }
        if let Some(a) = n.after() {
            dsts.insert(a);
        }
    }
    oifs.remove("lo");
    ports.remove(&0);

    // Owners: each UID with the application's group, and each GID with the application's user,
    // plus root; rules test one or the other.
    let app = Identity::Id(APP_ID);
    let mut owners: Vec<(Identity, Identity)> = Vec::new();
    for u in &uids {
        owners.push((u.clone(), app.clone()));
    }
    for g in &gids {
        if *g != app {
            owners.push((app.clone(), g.clone()));
        }
    }
    owners.push((Identity::Id(0), Identity::Id(0)));
    owners.dedup();

    let mut space = ProbeSpace {
        dsts: dsts
            .into_iter()
            .filter(usable_dst)
            .take(MAX_ADDRS)
            .collect(),
        ports: ports.into_iter().take(MAX_PORTS).collect(),
        oifs: oifs.into_iter().take(MAX_IFACES).collect(),
        owners: owners.into_iter().take(MAX_OWNERS).collect(),
        sports: sports
            .into_iter()
            .filter(|p| *p != 0)
            .take(MAX_SPORTS)
            .collect(),
        marks: marks.into_iter().take(MAX_MARKS).collect(),
    };
    // The default flow first: it decides the severity and is the first example.
    let ext = match family {
        IpFamily::V4 => IpAddr::V4(EXTERNAL_V4[0]),
        IpFamily::V6 => IpAddr::V6(EXTERNAL_V6[0]),
    };
    move_first(&mut space.dsts, &ext);
    move_first(&mut space.ports, &443);
    move_first(&mut space.oifs, &DEFAULT_OIF.to_string());
    move_first(&mut space.owners, &(app.clone(), app));
    move_first(&mut space.sports, &EPHEMERAL_PORT);
    space
}

/// The probe values one rule calls for: what it matches, and the values just outside.
#[derive(Debug, Default)]
struct RuleValues {
    nets: Vec<IpNet>,
    ports: Vec<u16>,
    sports: Vec<u16>,
    marks: Vec<u32>,
    oifs: Vec<String>,
    uids: Vec<Identity>,
    gids: Vec<Identity>,
}

fn port_bounds(ranges: &[(u16, u16)], out: &mut Vec<u16>) {
    for (a, b) in ranges {
        out.extend([*a, *b]);
        out.extend(a.checked_sub(1));
        out.extend(b.checked_add(1));
    }
    out.retain(|p| *p != 0);
}

fn rule_values(rule: &Rule, family: IpFamily) -> RuleValues {
    let mut v = RuleValues::default();
    for m in &rule.matches {
        match m {
            Match::Address {
                direction: Direction::Destination,
                nets,
                ..
            } => v.nets.extend(nets.iter().filter(|n| n.family() == family)),
            Match::Port {
                direction: Direction::Destination,
                ranges,
                ..
            } => port_bounds(ranges, &mut v.ports),
            Match::Port {
                direction: Direction::Source,
                ranges,
                ..
            } => port_bounds(ranges, &mut v.sports),
            Match::Mark {
                ct: false,
                value,
                mask,
                ..
            } => v.marks.push(value & mask),
            Match::Interface {
                direction: IfaceDirection::Out,
                names,
                ..
            } => v
                .oifs
                .extend(names.iter().map(|n| n.example()).filter(|n| n != "lo")),
            Match::Owner { kind, ids, .. } => {
                let set = match kind {
                    OwnerKind::Uid => &mut v.uids,
                    OwnerKind::Gid => &mut v.gids,
                };
                for id in ids {
                    match id {
                        OwnerId::Range(a, b) => {
                            set.push(Identity::Id(*a));
                            set.push(Identity::Id(*b));
                        }
                        OwnerId::Name(n) => set.push(Identity::Name(n.clone())),
                    }
                }
            }
            _ => {}
        }
    }
    v
}

/// Probes for rule sets too large to probe exhaustively: each dimension varied alone around the
/// default flow, then, rule by rule, the combination of values that rule matches (its own
/// addresses, ports, interface, owner, source port and mark together). Linear in the number of
/// rules instead of a product of every value; stops at `budget` probes.
fn rule_by_rule_probes(
    cfg: &CaptureConfig,
    space: &ProbeSpace,
    ruleset: &Ruleset,
    family: IpFamily,
    src: IpAddr,
    budget: usize,
) -> (Vec<Probe>, usize) {
    let mut seen: HashSet<Probe> = HashSet::new();
    let mut out: Vec<Probe> = Vec::new();
    let (Some(d_dst), Some(d_port), Some(d_oif), Some(d_owner), Some(d_sport), Some(d_mark)) = (
        space.dsts.first(),
        space.ports.first(),
        space.oifs.first(),
        space.owners.first(),
        space.sports.first(),
        space.marks.first(),
    ) else {
        return (out, 0);
    };
    let mut push = |dst: IpAddr,
                    dport: u16,
                    oif: &str,
                    owner: &(Identity, Identity),
                    sport: u16,
                    mark: u32|
     -> bool {
        if out.len() >= budget {
            return false;
        }
        let p = Probe {
            family,
            protocol: PROTO_TCP,
            src,
            dst,
            sport,
            dport,
            oif: oif.to_string(),
            uid: owner.0.clone(),
            gid: owner.1.clone(),
            mark,
        };
        if expectation(cfg, &p) == Expectation::Capture && seen.insert(p.clone()) {
            out.push(p);
        }
        true
    };
    for d in &space.dsts {
        push(*d, *d_port, d_oif, d_owner, *d_sport, *d_mark);
    }
    for p in &space.ports {
        push(*d_dst, *p, d_oif, d_owner, *d_sport, *d_mark);
    }
    for o in &space.oifs {
        push(*d_dst, *d_port, o, d_owner, *d_sport, *d_mark);
    }
    for w in &space.owners {
        push(*d_dst, *d_port, d_oif, w, *d_sport, *d_mark);
    }
    for s in &space.sports {
        push(*d_dst, *d_port, d_oif, d_owner, *s, *d_mark);
    }
    for m in &space.marks {
        push(*d_dst, *d_port, d_oif, d_owner, *d_sport, *m);
    }
    // Rules that can end capture (an exit, a NAT elsewhere, notrack, a mark) first: they are the
    // ones an escape goes through; plain jumps last.
    let mut rules: Vec<&Rule> = ruleset
        .tables_for(family)
        .flat_map(|t| t.chains.iter())
        .flat_map(|c| c.rules.iter())
        .collect();
    rules.sort_by_key(|r| {
        let exit = matches!(
            r.verdict,
            Some(
                Verdict::Return
                    | Verdict::Accept
                    | Verdict::Dnat { .. }
                    | Verdict::Redirect { .. }
                    | Verdict::Queue
                    | Verdict::Unknown(_)
            )
        ) || r
            .effects
            .iter()
            .any(|e| matches!(e, Effect::NoTrack | Effect::SetMark { .. }));
        u8::from(!exit)
    });
    let total = rules.len();
    let mut probed_rules = 0;
    for rule in rules {
        let v = rule_values(rule, family);
        let mut dsts: Vec<IpAddr> = Vec::new();
        for n in &v.nets {
            dsts.push(n.first_host());
            dsts.extend(n.after());
        }
        dsts.retain(usable_dst);
        let or_default = |mut x: Vec<IpAddr>| {
            if x.is_empty() {
                x.push(*d_dst)
            }
            x
        };
        let dsts = or_default(dsts);
        let ports = if v.ports.is_empty() {
            vec![*d_port]
        } else {
            v.ports
        };
        let sports = if v.sports.is_empty() {
            vec![*d_sport]
        } else {
            v.sports
        };
        let marks = if v.marks.is_empty() {
            vec![*d_mark]
        } else {
            v.marks
        };
        let oifs = if v.oifs.is_empty() {
            vec![d_oif.clone()]
        } else {
            v.oifs
        };
        let uids = if v.uids.is_empty() {
            vec![d_owner.0.clone()]
        } else {
            v.uids
        };
        let gids = if v.gids.is_empty() {
            vec![d_owner.1.clone()]
        } else {
            v.gids
        };
        for dst in &dsts {
            for port in &ports {
                for oif in &oifs {
                    for uid in &uids {
                        for gid in &gids {
                            for sport in &sports {
                                for mark in &marks {
                                    push(
                                        *dst,
                                        *port,
                                        oif,
                                        &(uid.clone(), gid.clone()),
                                        *sport,
                                        *mark,
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        if !push(*d_dst, *d_port, d_oif, d_owner, *d_sport, *d_mark) {
            break;
        }
        probed_rules += 1;
    }
    (out, total - probed_rules)
}

fn move_first<T: PartialEq + Clone>(v: &mut Vec<T>, x: &T) {
    if let Some(i) = v.iter().position(|y| y == x) {
        let item = v.remove(i);
        v.insert(0, item);
    }
}

fn source_addr(ctx: &JudgeContext, family: IpFamily) -> IpAddr {
    ctx.pod_addrs
        .iter()
        .find(|a| IpFamily::of(a) == family)
        .copied()
        .unwrap_or(match family {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::new(10, 244, 0, 5)),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5)),
        })
}

/// Every probe of the space that the settings say must be captured.
pub fn required_probes(
    cfg: &CaptureConfig,
    space: &ProbeSpace,
    family: IpFamily,
    src: IpAddr,
) -> Vec<Probe> {
    let mut out = Vec::new();
    for (sport, mark) in space
        .sports
        .iter()
        .flat_map(|s| space.marks.iter().map(move |m| (*s, *m)))
    {
        for oif in &space.oifs {
            for (uid, gid) in &space.owners {
                for dst in &space.dsts {
                    for dport in &space.ports {
                        let p = Probe {
                            family,
                            protocol: PROTO_TCP,
                            src,
                            dst: *dst,
                            sport,
                            dport: *dport,
                            oif: oif.clone(),
                            uid: uid.clone(),
                            gid: gid.clone(),
                            mark,
                        };
                        if expectation(cfg, &p) == Expectation::Capture {
                            out.push(p);
                        }
                    }
                }
            }
        }
    }
    out
}

/// One way out, and the flows that take it.
struct Escape {
    outcome: Outcome,
    examples: Vec<Probe>,
    count: usize,
    includes_default_flow: bool,
}

fn cause_key(o: &Outcome) -> String {
    let fate = match &o.fate {
        Fate::Redirected { port } => format!("redirected:{port}"),
        Fate::Translated { addr, port } => format!("translated:{addr:?}:{port:?}"),
        Fate::Untracked => "untracked".into(),
        Fate::Dropped => "dropped".into(),
        Fate::Queued => "queued".into(),
        Fate::Unchanged => "unchanged".into(),
    };
    format!(
        "{}|{fate}",
        serde_json::to_string(&o.cause).unwrap_or_default()
    )
}

fn tampered(
    cfg: &CaptureConfig,
    ruleset: &Ruleset,
    family: IpFamily,
    subject: Subject<'_>,
    ctx: &JudgeContext,
) -> Vec<Finding> {
    let space = probe_space(cfg, ruleset, family);
    let src = source_addr(ctx, family);
    // Work is probes x rules walked: keep it bounded whatever the namespace holds.
    let rules: usize = ruleset
        .tables_for(family)
        .flat_map(|t| t.chains.iter())
        .map(|c| c.rules.len())
        .sum();
    let budget = (RULE_EVAL_BUDGET / rules.max(1)).clamp(MIN_PROBES, MAX_PROBES);
    let exhaustive = space.size() <= budget;
    let (probes, unprobed_rules) = if exhaustive {
        (required_probes(cfg, &space, family, src), 0)
    } else {
        rule_by_rule_probes(cfg, &space, ruleset, family, src, budget)
    };
    let sim = Simulator::new(ruleset);
    let mut escapes: BTreeMap<String, Escape> = BTreeMap::new();
    for p in &probes {
        for outcome in sim.run(p) {
            if captured(cfg, p, &outcome.fate) {
                continue;
            }
            let key = cause_key(&outcome);
            let e = escapes.entry(key).or_insert_with(|| Escape {
                outcome: outcome.clone(),
                examples: Vec::new(),
                count: 0,
                includes_default_flow: false,
            });
            e.count += 1;
            if e.examples.len() < MAX_EXAMPLES && !e.examples.contains(p) {
                e.examples.push(p.clone());
            }
            if is_default_flow(p, family) {
                e.includes_default_flow = true;
            }
        }
    }
    let mut out: Vec<Finding> = escapes
        .into_values()
        .map(|e| escape_finding(cfg, family, subject, ctx, e, probes.len(), exhaustive))
        .collect();
    if unprobed_rules > 0 {
        // Istio writes a few dozen rules; thousands on the output path are not Istio's, and what
        // they do could not all be checked.
        out.push(finding(
            IPTABLES_TAMPERED,
            Severity::High,
            subject,
            format!(
                "{} output path holds {rules} rules, far more than Istio writes: {unprobed_rules} of them could not be probed within the auditor's work limit, so traffic may escape through them",
                family_label(family)
            ),
            json!({
                "family": family,
                "reason": "too-many-rules",
                "rules": rules,
                "unprobedRules": unprobed_rules,
                "requiredFlowCount": probes.len(),
                "probing": "rule-by-rule",
            }),
            ctx,
        ));
    }
    out
}

fn is_default_flow(p: &Probe, family: IpFamily) -> bool {
    let ext = match family {
        IpFamily::V4 => IpAddr::V4(EXTERNAL_V4[0]),
        IpFamily::V6 => IpAddr::V6(EXTERNAL_V6[0]),
    };
    p.dst == ext
        && p.sport == EPHEMERAL_PORT
        && p.mark == 0
        && p.dport == 443
        && p.oif == DEFAULT_OIF
        && p.uid == Identity::Id(APP_ID)
        && p.gid == Identity::Id(APP_ID)
}

fn escape_finding(
    cfg: &CaptureConfig,
    family: IpFamily,
    subject: Subject<'_>,
    ctx: &JudgeContext,
    e: Escape,
    required: usize,
    exhaustive: bool,
) -> Finding {
    let example = e.examples.first().map(Probe::describe).unwrap_or_default();
    let expected = cfg.outbound_redirect_port;
    let (what, rule_ref) = match &e.outcome.cause {
        Cause::Rule(r) => (
            format!(
                "rule `{}` ({} {} #{})",
                r.rule, r.table, r.chain, r.position
            ),
            Some(r),
        ),
        Cause::ChainEnd { table, chain } => (
            format!("the end of chain {chain} ({table}) without a catch-all redirect"),
            None,
        ),
        Cause::NoNatChain => (
            "the absence of any NAT rule for these flows".to_string(),
            None,
        ),
    };
    let effect = match &e.outcome.fate {
        Fate::Unchanged => "goes out directly, skipping the sidecar".to_string(),
        Fate::Redirected { port } => {
            format!("is redirected to local port {port} instead of the proxy's {expected}")
        }
        Fate::Translated { addr, port } => format!(
            "is rewritten to {}{} instead of reaching the proxy",
            addr.map_or("the same address".to_string(), |a| a.to_string()),
            port.map_or(String::new(), |p| format!(":{p}"))
        ),
        Fate::Untracked => {
            "skips connection tracking, so no NAT rule (and no capture) applies".to_string()
        }
        Fate::Queued => "is handed to a user-space queue instead of the proxy".to_string(),
        Fate::Dropped => "is dropped".to_string(),
    };
    let verb = if e.outcome.assumptions.is_empty() {
        "escapes"
    } else {
        "may escape"
    };
    let mut message = format!(
        "{} outbound TCP {verb} the sidecar through {what}: e.g. {example} {effect} ({} of {} flows that must be captured)",
        family_label(family),
        e.count,
        required
    );
    if e.outcome.assumptions.iter().any(|a| a.contains("xt ")) {
        message.push_str(
            "; nft cannot show what iptables-nft `xt` expressions do: read those tables with iptables-nft-save",
        );
    } else if !e.outcome.assumptions.is_empty() {
        message.push_str(
            "; it depends on a condition the auditor cannot evaluate (see evidence.assumptions)",
        );
    }
    let severity = if e.includes_default_flow && e.outcome.assumptions.is_empty() {
        Severity::Critical
    } else {
        Severity::High
    };
    let mut evidence = json!({
        "family": family,
        "cause": e.outcome.cause,
        "fate": e.outcome.fate,
        "expectedRedirectPort": expected,
        "escapingFlows": e.examples.iter().map(Probe::describe).collect::<Vec<_>>(),
        "escapingFlowCount": e.count,
        "requiredFlowCount": required,
        // Every combination of the probe values, or (for very large rule sets) rule by rule.
        "probing": if exhaustive { "exhaustive" } else { "rule-by-rule" },
    });
    if let (Some(r), Value::Object(m)) = (rule_ref, &mut evidence) {
        m.insert("rule".into(), json!(r.rule));
        m.insert("chain".into(), json!(r.chain));
        m.insert("table".into(), json!(r.table));
        m.insert("backend".into(), json!(r.backend));
    }
    if !e.outcome.assumptions.is_empty() {
        if let Value::Object(m) = &mut evidence {
            m.insert("assumptions".into(), json!(e.outcome.assumptions));
        }
    }
    finding(IPTABLES_TAMPERED, severity, subject, message, evidence, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::dump;

    fn cfg(args: &str) -> CaptureConfig {
        let args: Vec<String> = args.split_whitespace().map(str::to_string).collect();
        CaptureConfig::from_istio_iptables_args("istio-init", &args).unwrap()
    }

    const SUBJECT: Subject<'static> = Subject {
        namespace: "shop",
        name: "web-1",
    };

    const RULES: &str =
        "*nat\n:OUTPUT ACCEPT [0:0]\n:ISTIO_OUTPUT - [0:0]\n:ISTIO_REDIRECT - [0:0]\n\
        -A OUTPUT -j ISTIO_OUTPUT\n\
        -A ISTIO_OUTPUT -o lo -j RETURN\n\
        -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN\n\
        -A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN\n\
        -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n\
        -A ISTIO_OUTPUT -j ISTIO_REDIRECT\n\
        -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n";

    fn run(dump_text: &str, args: &str) -> Vec<Finding> {
        let (_, rs) = dump::parse(dump_text, "d", Some(IpFamily::V4)).unwrap();
        judge(
            &cfg(args),
            &rs,
            &[IpFamily::V4],
            SUBJECT,
            &JudgeContext::default(),
        )
    }

    #[test]
    fn intact_rules_pass() {
        assert_eq!(run(RULES, "-p 15001 -u 1337 -i *"), vec![]);
    }

    #[test]
    fn early_return_is_tampering() {
        let t = RULES.replace(
            "-A ISTIO_OUTPUT -o lo",
            "-A ISTIO_OUTPUT -p tcp --dport 443 -j RETURN\n-A ISTIO_OUTPUT -o lo",
        );
        let f = run(&t, "-p 15001 -u 1337 -i *");
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].rule, IPTABLES_TAMPERED);
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(
            f[0].evidence["rule"],
            "-A ISTIO_OUTPUT -p tcp --dport 443 -j RETURN"
        );
        assert!(
            f[0].message.contains("203.0.113.10:443"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn settings_allow_what_they_exclude() {
        let t = RULES.replace(
            "-A ISTIO_OUTPUT -o lo",
            "-A ISTIO_OUTPUT -p tcp --dport 443 -j RETURN\n-A ISTIO_OUTPUT -o lo",
        );
        assert_eq!(run(&t, "-p 15001 -u 1337 -i * -o 443"), vec![]);
    }

    #[test]
    fn missing_jump_is_inactive() {
        let t = RULES.replace("-A OUTPUT -j ISTIO_OUTPUT\n", "");
        let f = run(&t, "-i *");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, CAPTURE_INACTIVE);
        assert_eq!(f[0].evidence["reason"], "output-does-not-reach-istio");
        let f = run("", "-i *");
        assert_eq!(f[0].evidence["reason"], "no-istio-chains");
    }

    #[test]
    fn redirect_port_change() {
        let t = RULES.replace("--to-ports 15001", "--to-ports 15006");
        let f = run(&t, "-i *");
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message
                .contains("local port 15006 instead of the proxy's 15001"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn narrow_exemption_is_high() {
        let t = RULES.replace(
            "-A ISTIO_OUTPUT -o lo",
            "-A ISTIO_OUTPUT -d 192.0.2.0/24 -j RETURN\n-A ISTIO_OUTPUT -o lo",
        );
        let f = run(&t, "-i *");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::High);
        assert!(f[0].evidence["escapingFlows"][0]
            .as_str()
            .unwrap()
            .contains("192.0.2."));
    }

    #[test]
    fn source_port_and_mark_exemptions_are_probed() {
        let t = RULES.replace(
            "-A ISTIO_OUTPUT -o lo",
            "-A ISTIO_OUTPUT -p tcp --sport 1:1023 -j RETURN\n-A ISTIO_OUTPUT -m mark --mark 0x40/0xff -j RETURN\n-A ISTIO_OUTPUT -o lo",
        );
        let f = run(&t, "-i *");
        assert_eq!(f.len(), 2, "{f:#?}");
        let flows: Vec<String> = f
            .iter()
            .map(|x| x.evidence["escapingFlows"][0].as_str().unwrap().to_string())
            .collect();
        assert!(
            flows
                .iter()
                .any(|x| x.contains(" port 1 ") || x.contains(" port 1023 ")),
            "{flows:?}"
        );
        assert!(flows.iter().any(|x| x.contains("mark 0x40")), "{flows:?}");
        assert!(f.iter().all(|x| x.severity == Severity::High));
    }

    #[test]
    fn huge_rule_sets_are_probed_rule_by_rule() {
        // 3,000 rules mentioning distinct addresses, ports and owners: far too many combinations
        // to try; the one exemption hidden among them is still found.
        let mut extra = String::new();
        for i in 0..3000u32 {
            extra.push_str(&format!(
                "-A ISTIO_OUTPUT -d 198.18.{}.{}/32 -p tcp --dport {} -m owner --uid-owner {} -j ISTIO_REDIRECT\n",
                i / 250,
                i % 250 + 1,
                20000 + i,
                5000 + i
            ));
        }
        extra.push_str("-A ISTIO_OUTPUT -d 198.19.7.7/32 -p tcp --dport 8443 -m owner --uid-owner 4242 -j RETURN\n");
        let t = RULES.replace(
            "-A ISTIO_OUTPUT -o lo",
            &format!("{extra}-A ISTIO_OUTPUT -o lo"),
        );
        let started = std::time::Instant::now();
        let f = run(&t, "-i *");
        let escape: Vec<&Finding> = f
            .iter()
            .filter(|x| !x.evidence["cause"].is_null())
            .collect();
        assert_eq!(escape.len(), 1, "{f:#?}");
        assert_eq!(escape[0].evidence["probing"], "rule-by-rule");
        assert!(escape[0].evidence["escapingFlows"][0]
            .as_str()
            .unwrap()
            .contains("uid 4242 gid 1000 to 198.19.7.7:8443"));
        // Whatever could not be probed is reported, never silently passed.
        assert!(
            f.iter().any(|x| x.evidence["reason"] == "too-many-rules"),
            "{f:#?}"
        );
        for x in f.iter().filter(|x| x.evidence["cause"].is_null()) {
            assert_eq!(x.evidence["reason"], "too-many-rules");
            assert!(x.evidence["unprobedRules"].as_u64().unwrap() > 0);
        }
        // Not a timing assertion on speed, only a guard against the product of every value.
        assert!(started.elapsed() < std::time::Duration::from_secs(300));
    }

    #[test]
    fn nothing_judged_without_capture() {
        let f = run("", "-i * -n");
        assert_eq!(f, vec![]);
    }
}
