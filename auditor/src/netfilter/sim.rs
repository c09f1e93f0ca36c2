//! What the rules do to one locally generated packet: a walk of the output hook as the kernel runs
//! it. Base chains of every table run in priority order; `accept` ends only its own base chain; the
//! first NAT-type chain that maps the connection (REDIRECT, DNAT) decides its destination and later
//! NAT chains are skipped; `notrack` before conntrack (priority < -200) takes the packet out of NAT
//! altogether; `drop` ends everything.
//!
//! A rule whose condition cannot be evaluated (an unknown module, a named set) forks the walk: one
//! branch where it matches and one where it does not, so every outcome the rules allow is seen.

use std::cell::Cell;
use std::net::IpAddr;

use serde::Serialize;

use super::addr::IpFamily;
use super::model::{
    Backend, ChainKind, Direction, Effect, Hook, Identity, IfaceDirection, Match, OwnerKind,
    Policy, Rule, Ruleset, Table, Verdict,
};

/// Conntrack runs at this priority; NAT needs it, so `notrack` only matters before it.
const CONNTRACK_PRIORITY: i32 = -200;
/// Forks allowed per probe before unknown conditions are simply assumed to match.
const FORK_BUDGET: usize = 64;
/// Jumps deeper than this are not followed (the kernel refuses loops; this guards bad dumps).
const MAX_DEPTH: usize = 32;

/// The source port probes use unless the rules test source ports.
pub const EPHEMERAL_PORT: u16 = 43210;

/// A locally generated first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub family: IpFamily,
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub oif: String,
    pub uid: Identity,
    pub gid: Identity,
    /// The packet mark the socket sets (`SO_MARK`); 0 for ordinary applications.
    pub mark: u32,
}

impl Probe {
    /// `tcp 1000:1000 -> 203.0.113.10:443 via eth0`
    pub fn describe(&self) -> String {
        let proto = match self.protocol {
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            p => format!("proto {p}"),
        };
        let dst = match self.dst {
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        };
        let mut s = format!("{proto} from uid {} gid {}", self.uid, self.gid);
        if self.sport != EPHEMERAL_PORT {
            s.push_str(&format!(" port {}", self.sport));
        }
        if self.mark != 0 {
            s.push_str(&format!(" mark {:#x}", self.mark));
        }
        s.push_str(&format!(" to {dst}:{} via {}", self.dport, self.oif));
        s
    }
}

/// A rule, located.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleRef {
    /// `ip nat`, `ip6 nat`, `inet istio-proxy-nat`.
    pub table: String,
    pub backend: Backend,
    pub chain: String,
    /// 1-based position in the chain.
    pub position: usize,
    pub rule: String,
    /// Line in the dump, when the dump has lines.
    #[serde(skip_serializing_if = "is_zero")]
    pub line: usize,
    /// The dump (file or tool) the rule was read from.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Why the packet ended where it did.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Cause {
    /// A rule decided (a RETURN/ACCEPT that left the capture chains, a NAT, a notrack, a drop).
    Rule(RuleRef),
    /// The packet reached the end of this chain without being redirected.
    ChainEnd { table: String, chain: String },
    /// No NAT chain sees packets of this family on the output hook.
    NoNatChain,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Fate {
    /// NAT to a local port (REDIRECT, or DNAT to a loopback address).
    Redirected {
        port: u16,
    },
    /// NAT to another destination.
    Translated {
        addr: Option<IpAddr>,
        port: Option<u16>,
    },
    /// Conntrack skipped: no NAT rule ever sees the connection.
    Untracked,
    Dropped,
    /// Handed to a user-space queue.
    Queued,
    /// Leaves as it was sent.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub fate: Fate,
    pub cause: Cause,
    /// Conditions and targets the outcome assumed (only when the rules have some the auditor
    /// cannot evaluate).
    pub assumptions: Vec<String>,
    /// The last rule that changed the packet's mark on the way, when one did (a mark can exempt
    /// the packet from a later rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark_set_by: Option<RuleRef>,
}

#[derive(Debug, Clone)]
enum End {
    Fallthrough,
    Accept,
    Drop,
    Nat(Fate),
    Queue,
}

#[derive(Debug, Clone)]
struct Branch {
    mark: u32,
    mark_set_by: Option<RuleRef>,
    notrack: Option<RuleRef>,
    assumptions: Vec<String>,
    /// The latest way the packet left the chains a base chain called: a RETURN to the base
    /// chain, an ACCEPT, or the end of a chain the base chain jumped to. Returns from deeper
    /// chains are not exits: their caller carries on.
    exit: Option<Cause>,
    decided_by: Option<RuleRef>,
    end: End,
}

#[derive(Debug, Clone)]
struct Pipeline {
    mark: u32,
    mark_set_by: Option<RuleRef>,
    untracked: Option<RuleRef>,
    nat: Option<(Fate, RuleRef)>,
    nat_exit: Option<Cause>,
    saw_nat_chain: bool,
    assumptions: Vec<String>,
}

/// Runs probes through a ruleset.
pub struct Simulator<'r> {
    ruleset: &'r Ruleset,
    forks: Cell<usize>,
}

enum Tri {
    Yes,
    No,
    Unknown(String),
}

impl<'r> Simulator<'r> {
    pub fn new(ruleset: &'r Ruleset) -> Simulator<'r> {
        Simulator {
            ruleset,
            forks: Cell::new(0),
        }
    }

    /// Every outcome the rules allow for this packet (one unless a condition is unknown).
    pub fn run(&self, probe: &Probe) -> Vec<Outcome> {
        self.forks.set(0);
        let mut bases: Vec<(&Table, &str, i32, ChainKind, Policy)> = Vec::new();
        for table in self.ruleset.tables_for(probe.family) {
            for chain in &table.chains {
                if let Some(base) = chain.base {
                    if base.hook == Hook::Output {
                        bases.push((table, &chain.name, base.priority, base.kind, base.policy));
                    }
                }
            }
        }
        // Stable: equal priorities keep dump order.
        bases.sort_by_key(|b| b.2);
        let start = Pipeline {
            mark: probe.mark,
            mark_set_by: None,
            untracked: None,
            nat: None,
            nat_exit: None,
            saw_nat_chain: false,
            assumptions: Vec::new(),
        };
        let mut out = Vec::new();
        self.pipeline(probe, &bases, 0, start, &mut out);
        out
    }

    fn pipeline(
        &self,
        probe: &Probe,
        bases: &[(&Table, &str, i32, ChainKind, Policy)],
        k: usize,
        st: Pipeline,
        out: &mut Vec<Outcome>,
    ) {
        let Some(&(table, chain, priority, kind, policy)) = bases.get(k) else {
            out.push(finish(st));
            return;
        };
        if kind == ChainKind::Nat && (st.untracked.is_some() || st.nat.is_some()) {
            self.pipeline(probe, bases, k + 1, st, out);
            return;
        }
        let branch = Branch {
            mark: st.mark,
            mark_set_by: st.mark_set_by.clone(),
            notrack: None,
            assumptions: st.assumptions.clone(),
            exit: None,
            decided_by: None,
            end: End::Fallthrough,
        };
        for b in self.run_chain(probe, table, chain, 0, branch, 0) {
            let mut next = st.clone();
            next.mark = b.mark;
            next.mark_set_by = b.mark_set_by.clone();
            next.assumptions = b.assumptions.clone();
            if priority < CONNTRACK_PRIORITY {
                if let Some(r) = b.notrack.clone() {
                    next.untracked.get_or_insert(r);
                }
            }
            let exit_cause = || {
                Some(b.exit.clone().unwrap_or_else(|| Cause::ChainEnd {
                    table: table.label(),
                    chain: chain.to_string(),
                }))
            };
            match &b.end {
                End::Drop => {
                    out.push(Outcome {
                        fate: Fate::Dropped,
                        cause: b.decided_by.clone().map_or(
                            Cause::ChainEnd {
                                table: table.label(),
                                chain: chain.to_string(),
                            },
                            Cause::Rule,
                        ),
                        assumptions: b.assumptions.clone(),
                        mark_set_by: b.mark_set_by.clone(),
                    });
                    continue;
                }
                End::Queue => {
                    out.push(Outcome {
                        fate: Fate::Queued,
                        cause: b.decided_by.clone().map_or(Cause::NoNatChain, Cause::Rule),
                        assumptions: b.assumptions.clone(),
                        mark_set_by: b.mark_set_by.clone(),
                    });
                    continue;
                }
                End::Nat(f) if kind == ChainKind::Nat => {
                    next.saw_nat_chain = true;
                    if let Some(r) = b.decided_by.clone() {
                        next.nat = Some((f.clone(), r));
                    }
                }
                End::Fallthrough if policy == Policy::Drop => {
                    out.push(Outcome {
                        fate: Fate::Dropped,
                        cause: Cause::ChainEnd {
                            table: table.label(),
                            chain: chain.to_string(),
                        },
                        assumptions: b.assumptions.clone(),
                        mark_set_by: b.mark_set_by.clone(),
                    });
                    continue;
                }
                _ => {
                    if kind == ChainKind::Nat {
                        next.saw_nat_chain = true;
                        if next.nat_exit.is_none() {
                            next.nat_exit = exit_cause();
                        }
                    }
                }
            }
            self.pipeline(probe, bases, k + 1, next, out);
        }
    }

    fn run_chain(
        &self,
        probe: &Probe,
        table: &Table,
        chain: &str,
        start: usize,
        br: Branch,
        depth: usize,
    ) -> Vec<Branch> {
        let Some(c) = table.chain(chain) else {
            return vec![br];
        };
        let mut i = start;
        let mut br = br;
        while let Some(rule) = c.rules.get(i) {
            match eval_rule(rule, probe, br.mark) {
                Tri::No => i += 1,
                Tri::Yes => return self.apply(probe, table, chain, i, br, depth),
                Tri::Unknown(text) => {
                    if self.forks.get() >= FORK_BUDGET {
                        br.assumptions.push(format!("assumed to match: {text}"));
                        return self.apply(probe, table, chain, i, br, depth);
                    }
                    self.forks.set(self.forks.get() + 1);
                    let mut yes = br.clone();
                    yes.assumptions.push(format!("if this matches: {text}"));
                    let mut no = br;
                    no.assumptions
                        .push(format!("if this does not match: {text}"));
                    let mut out = self.apply(probe, table, chain, i, yes, depth);
                    out.extend(self.run_chain(probe, table, chain, i + 1, no, depth));
                    return out;
                }
            }
        }
        if depth == 1 {
            br.exit = Some(Cause::ChainEnd {
                table: table.label(),
                chain: chain.to_string(),
            });
        }
        br.end = End::Fallthrough;
        vec![br]
    }

    fn apply(
        &self,
        probe: &Probe,
        table: &Table,
        chain: &str,
        i: usize,
        mut br: Branch,
        depth: usize,
    ) -> Vec<Branch> {
        let Some(rule) = table.chain(chain).and_then(|c| c.rules.get(i)) else {
            return vec![br];
        };
        let here = RuleRef {
            table: table.label(),
            backend: table.backend,
            chain: chain.to_string(),
            position: i + 1,
            rule: rule.text.clone(),
            line: rule.line,
            source: table.source.clone(),
        };
        for effect in &rule.effects {
            match effect {
                Effect::SetMark { value, mask } => {
                    let marked = (br.mark & !mask) ^ value;
                    if marked != br.mark {
                        br.mark_set_by = Some(here.clone());
                    }
                    br.mark = marked;
                }
                Effect::NoTrack => {
                    br.notrack.get_or_insert(here.clone());
                }
                Effect::Other => {}
            }
        }
        let Some(verdict) = &rule.verdict else {
            return self.run_chain(probe, table, chain, i + 1, br, depth);
        };
        match verdict {
            Verdict::Return => {
                if depth <= 1 {
                    br.exit = Some(Cause::Rule(here));
                }
                br.end = End::Fallthrough;
                vec![br]
            }
            Verdict::Jump(target) | Verdict::Goto(target) => {
                if depth >= MAX_DEPTH {
                    br.assumptions
                        .push(format!("jump nesting too deep at {}", rule.text));
                    br.end = End::Fallthrough;
                    return vec![br];
                }
                let subs = self.run_chain(probe, table, target, 0, br, depth + 1);
                if matches!(verdict, Verdict::Goto(_)) {
                    return subs;
                }
                let mut out = Vec::new();
                for s in subs {
                    if matches!(s.end, End::Fallthrough) {
                        out.extend(self.run_chain(probe, table, chain, i + 1, s, depth));
                    } else {
                        out.push(s);
                    }
                }
                out
            }
            Verdict::Accept | Verdict::SourceNat => {
                br.exit = Some(Cause::Rule(here));
                br.end = End::Accept;
                vec![br]
            }
            Verdict::Drop => {
                br.decided_by = Some(here);
                br.end = End::Drop;
                vec![br]
            }
            Verdict::Queue => {
                br.decided_by = Some(here);
                br.end = End::Queue;
                vec![br]
            }
            Verdict::Redirect { ports } => {
                let port = ports.map_or(probe.dport, |p| p.0);
                br.decided_by = Some(here);
                br.end = End::Nat(Fate::Redirected { port });
                vec![br]
            }
            Verdict::Dnat { addr, port } => {
                br.decided_by = Some(here);
                br.end = End::Nat(match addr {
                    Some(a) if a.is_loopback() => Fate::Redirected {
                        port: port.unwrap_or(probe.dport),
                    },
                    _ => Fate::Translated {
                        addr: *addr,
                        port: *port,
                    },
                });
                vec![br]
            }
            Verdict::Unknown(target) => {
                // An unknown target may end the chain: assume it does (the capture rules after it
                // are then skipped), and say so.
                br.assumptions.push(format!(
                    "unknown target {target:?} assumed to end chain {chain}"
                ));
                br.exit = Some(Cause::Rule(here));
                br.end = End::Accept;
                vec![br]
            }
        }
    }
}

fn finish(st: Pipeline) -> Outcome {
    let mark_set_by = st.mark_set_by;
    if let Some((fate, r)) = st.nat {
        return Outcome {
            fate,
            cause: Cause::Rule(r),
            assumptions: st.assumptions,
            mark_set_by,
        };
    }
    if let Some(r) = st.untracked {
        return Outcome {
            fate: Fate::Untracked,
            cause: Cause::Rule(r),
            assumptions: st.assumptions,
            mark_set_by,
        };
    }
    Outcome {
        fate: Fate::Unchanged,
        cause: if st.saw_nat_chain {
            st.nat_exit.unwrap_or(Cause::NoNatChain)
        } else {
            Cause::NoNatChain
        },
        assumptions: st.assumptions,
        mark_set_by,
    }
}

fn eval_rule(rule: &Rule, probe: &Probe, mark: u32) -> Tri {
    let mut unknown: Option<String> = None;
    for m in &rule.matches {
        match eval_match(m, probe, mark) {
            Tri::No => return Tri::No,
            Tri::Yes => {}
            Tri::Unknown(t) => {
                unknown.get_or_insert(t);
            }
        }
    }
    match unknown {
        Some(t) => Tri::Unknown(format!("{t} (in `{}`)", rule.text)),
        None => Tri::Yes,
    }
}

fn yes_if(hit: bool, negated: bool) -> Tri {
    if hit != negated {
        Tri::Yes
    } else {
        Tri::No
    }
}

fn eval_match(m: &Match, p: &Probe, mark: u32) -> Tri {
    match m {
        Match::Family(f) => yes_if(*f == p.family, false),
        Match::Protocol { negated, protocols } => yes_if(protocols.contains(&p.protocol), *negated),
        Match::Address {
            direction,
            negated,
            nets,
        } => {
            let addr = match direction {
                Direction::Source => &p.src,
                Direction::Destination => &p.dst,
            };
            yes_if(nets.iter().any(|n| n.contains(addr)), *negated)
        }
        Match::Port {
            direction,
            negated,
            ranges,
            protocols,
        } => {
            let has_ports = if protocols.is_empty() {
                matches!(p.protocol, 6 | 17 | 132 | 136 | 33)
            } else {
                protocols.contains(&p.protocol)
            };
            if !has_ports {
                return Tri::No;
            }
            let port = match direction {
                Direction::Source => p.sport,
                Direction::Destination => p.dport,
            };
            yes_if(
                ranges.iter().any(|(a, b)| *a <= port && port <= *b),
                *negated,
            )
        }
        Match::Interface {
            direction,
            negated,
            names,
        } => {
            // Locally generated packets have no input interface.
            let hit = match direction {
                IfaceDirection::Out => names.iter().any(|n| n.matches(&p.oif)),
                IfaceDirection::In => false,
            };
            yes_if(hit, *negated)
        }
        Match::Owner { kind, negated, ids } => {
            let who = match kind {
                OwnerKind::Uid => &p.uid,
                OwnerKind::Gid => &p.gid,
            };
            yes_if(ids.iter().any(|i| i.matches(who)), *negated)
        }
        Match::Mark {
            ct,
            negated,
            value,
            mask,
        } => {
            // A new connection has connmark 0.
            let current = if *ct { 0 } else { mark };
            yes_if(current & mask == *value, *negated)
        }
        Match::CtState { negated, states } => yes_if(states.iter().any(|s| s == "new"), *negated),
        Match::Syn { negated } => yes_if(true, *negated),
        Match::Unknown { text } => Tri::Unknown(text.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::{iptables, nft_text};

    fn probe(dst: &str, dport: u16, uid: u32) -> Probe {
        let dst: IpAddr = dst.parse().unwrap();
        Probe {
            family: IpFamily::of(&dst),
            protocol: 6,
            src: if dst.is_ipv4() {
                "10.244.0.5".parse().unwrap()
            } else {
                "fd00::5".parse().unwrap()
            },
            dst,
            sport: 40000,
            dport,
            oif: "eth0".into(),
            uid: Identity::Id(uid),
            gid: Identity::Id(uid),
            mark: 0,
        }
    }

    const ISTIO: &str = "*nat\n-N ISTIO_REDIRECT\n-N ISTIO_OUTPUT\n\
        -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n\
        -A OUTPUT -j ISTIO_OUTPUT\n\
        -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN\n\
        -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n\
        -A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN\n\
        -A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT\n";

    fn one(rs: &Ruleset, p: &Probe) -> Outcome {
        let out = Simulator::new(rs).run(p);
        assert_eq!(out.len(), 1, "{out:?}");
        out.into_iter().next().unwrap()
    }

    #[test]
    fn redirect_and_exemptions() {
        let rs = iptables::parse(ISTIO, "d", Some(IpFamily::V4)).unwrap();
        assert_eq!(
            one(&rs, &probe("203.0.113.10", 443, 1000)).fate,
            Fate::Redirected { port: 15001 }
        );
        let proxy = one(&rs, &probe("203.0.113.10", 443, 1337));
        assert_eq!(proxy.fate, Fate::Unchanged);
        assert!(
            matches!(proxy.cause, Cause::Rule(ref r) if r.position == 1 && r.chain == "ISTIO_OUTPUT")
        );
        assert_eq!(
            one(&rs, &probe("10.100.0.1", 443, 1000)).fate,
            Fate::Unchanged
        );
        // No IPv6 table at all: nothing handles IPv6.
        let v6 = one(&rs, &probe("2001:db8::1", 443, 1000));
        assert_eq!((v6.fate, v6.cause), (Fate::Unchanged, Cause::NoNatChain));
    }

    #[test]
    fn accept_in_an_earlier_chain_does_not_skip_a_later_nat_chain() {
        let mut rs = nft_text::parse(
            "table inet evil {\n chain out {\n  type filter hook output priority -250; policy accept;\n  accept\n }\n chain nat_out {\n  type nat hook output priority -150; policy accept;\n  accept\n }\n}\n",
            "evil",
        )
        .unwrap();
        rs.extend(iptables::parse(ISTIO, "d", Some(IpFamily::V4)).unwrap());
        assert_eq!(
            one(&rs, &probe("203.0.113.10", 443, 1000)).fate,
            Fate::Redirected { port: 15001 }
        );
    }

    #[test]
    fn earlier_nat_or_notrack_wins() {
        let mut rs = nft_text::parse(
            "table ip evil {\n chain nat_out {\n  type nat hook output priority -150; policy accept;\n  tcp dport 443 dnat to 192.0.2.1:443\n }\n chain raw_out {\n  type filter hook output priority raw; policy accept;\n  tcp dport 80 notrack\n }\n}\n",
            "evil",
        )
        .unwrap();
        rs.extend(iptables::parse(ISTIO, "d", Some(IpFamily::V4)).unwrap());
        let dnat = one(&rs, &probe("203.0.113.10", 443, 1000));
        assert!(matches!(dnat.fate, Fate::Translated { .. }));
        let untracked = one(&rs, &probe("203.0.113.10", 80, 1000));
        assert_eq!(untracked.fate, Fate::Untracked);
        assert_eq!(
            one(&rs, &probe("203.0.113.10", 8080, 1000)).fate,
            Fate::Redirected { port: 15001 }
        );
    }

    #[test]
    fn chain_end_is_the_cause_when_the_catch_all_is_gone() {
        let dump = ISTIO.replace("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n", "");
        let rs = iptables::parse(&dump, "d", Some(IpFamily::V4)).unwrap();
        let o = one(&rs, &probe("203.0.113.10", 443, 1000));
        assert_eq!(o.fate, Fate::Unchanged);
        assert_eq!(
            o.cause,
            Cause::ChainEnd {
                table: "ip nat".into(),
                chain: "ISTIO_OUTPUT".into()
            }
        );
    }

    #[test]
    fn unknown_conditions_fork() {
        let dump = ISTIO.replace(
            "-A OUTPUT -j ISTIO_OUTPUT\n",
            "-A OUTPUT -m statistic --mode random --probability 0.5 -j ACCEPT\n-A OUTPUT -j ISTIO_OUTPUT\n",
        );
        let rs = iptables::parse(&dump, "d", Some(IpFamily::V4)).unwrap();
        let out = Simulator::new(&rs).run(&probe("203.0.113.10", 443, 1000));
        let fates: Vec<_> = out.iter().map(|o| o.fate.clone()).collect();
        assert!(fates.contains(&Fate::Unchanged));
        assert!(fates.contains(&Fate::Redirected { port: 15001 }));
        assert!(out.iter().all(|o| !o.assumptions.is_empty()));
    }

    #[test]
    fn marks_flow_between_chains() {
        let rs = nft_text::parse(
            "table inet t {\n chain m {\n  type route hook output priority mangle;\n  tcp dport 443 meta mark set 0x10\n }\n chain n {\n  type nat hook output priority -100;\n  meta mark 0x10 return\n  meta l4proto tcp redirect to :15001\n }\n}\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            one(&rs, &probe("203.0.113.10", 443, 1000)).fate,
            Fate::Unchanged
        );
        assert_eq!(
            one(&rs, &probe("203.0.113.10", 80, 1000)).fate,
            Fate::Redirected { port: 15001 }
        );
    }
}
