//! One model for every rule dump: `iptables-save` (legacy or nf_tables backend), `nft list
//! ruleset` and `nft -j list ruleset` all parse into a [`Ruleset`] of tables, chains and rules whose
//! matches and verdicts say what they do to a packet, not how they were spelled.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use super::addr::{IpFamily, IpNet};

/// Which packets a table sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableFamily {
    /// `iptables` tables and nftables `ip` tables.
    Ip,
    /// `ip6tables` tables and nftables `ip6` tables.
    Ip6,
    /// nftables `inet` tables: both families.
    Inet,
    /// `arp`, `bridge`, `netdev`: never on a locally generated IP packet's output path.
    Other(String),
}

impl TableFamily {
    pub fn parse(text: &str) -> TableFamily {
        match text {
            "ip" => TableFamily::Ip,
            "ip6" => TableFamily::Ip6,
            "inet" => TableFamily::Inet,
            other => TableFamily::Other(other.to_string()),
        }
    }

    pub fn of(family: IpFamily) -> TableFamily {
        match family {
            IpFamily::V4 => TableFamily::Ip,
            IpFamily::V6 => TableFamily::Ip6,
        }
    }

    pub fn covers(&self, family: IpFamily) -> bool {
        matches!(
            (self, family),
            (TableFamily::Inet, _)
                | (TableFamily::Ip, IpFamily::V4)
                | (TableFamily::Ip6, IpFamily::V6)
        )
    }

    pub fn as_str(&self) -> &str {
        match self {
            TableFamily::Ip => "ip",
            TableFamily::Ip6 => "ip6",
            TableFamily::Inet => "inet",
            TableFamily::Other(s) => s,
        }
    }
}

impl fmt::Display for TableFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which tool wrote the table: the same rules read differently in each (see `docs/rules.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// x_tables through `iptables-legacy`: invisible to `nft`.
    IptablesLegacy,
    /// nf_tables through `iptables-nft`: also listed by `nft`, with `xt` expressions.
    IptablesNft,
    /// `iptables-save` output whose header does not say which backend wrote it.
    Iptables,
    /// Native nftables.
    Nftables,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::IptablesLegacy => "iptables-legacy",
            Backend::IptablesNft => "iptables-nft",
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }

    pub fn is_iptables(self) -> bool {
        !matches!(self, Backend::Nftables)
    }
}

/// Everything read from one network namespace (or one dump file).
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    pub tables: Vec<Table>,
}

impl Ruleset {
    /// Adds another dump's tables (e.g. `ip6tables-save` after `iptables-save`).
    pub fn extend(&mut self, other: Ruleset) {
        self.tables.extend(other.tables);
    }

    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(|t| t.chains.is_empty())
    }

    /// Tables that see packets of this family.
    pub fn tables_for(&self, family: IpFamily) -> impl Iterator<Item = &Table> {
        self.tables.iter().filter(move |t| t.family.covers(family))
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    pub family: TableFamily,
    pub name: String,
    pub backend: Backend,
    /// The dump (file or tool) the table was read from.
    pub source: String,
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn new(family: TableFamily, name: impl Into<String>, backend: Backend) -> Table {
        Table {
            family,
            name: name.into(),
            backend,
            source: String::new(),
            chains: Vec::new(),
        }
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn chain_mut(&mut self, name: &str) -> Option<&mut Chain> {
        self.chains.iter_mut().find(|c| c.name == name)
    }

    /// The chain, created (as a regular chain) when missing.
    pub fn chain_or_insert(&mut self, name: &str) -> &mut Chain {
        if let Some(i) = self.chains.iter().position(|c| c.name == name) {
            &mut self.chains[i]
        } else {
            self.chains.push(Chain::new(name));
            let last = self.chains.len() - 1;
            &mut self.chains[last]
        }
    }

    /// `family/name` as people write it (`ip/nat`, `inet/istio-proxy-nat`).
    pub fn label(&self) -> String {
        format!("{} {}", self.family, self.name)
    }
}

#[derive(Debug, Clone)]
pub struct Chain {
    pub name: String,
    /// Set for chains the kernel calls from a hook (`OUTPUT` of an iptables table, or an nft chain
    /// declared with `type ... hook ... priority ...`).
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

impl Chain {
    pub fn new(name: impl Into<String>) -> Chain {
        Chain {
            name: name.into(),
            base: None,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub hook: Hook,
    pub kind: ChainKind,
    /// Lower runs first. iptables tables sit at fixed priorities (raw -300, mangle -150,
    /// nat -100, filter 0, security 50).
    pub priority: i32,
    pub policy: Policy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Ingress,
    Egress,
}

impl Hook {
    pub fn parse(text: &str) -> Option<Hook> {
        Some(match text.to_ascii_lowercase().as_str() {
            "prerouting" => Hook::Prerouting,
            "input" => Hook::Input,
            "forward" => Hook::Forward,
            "output" => Hook::Output,
            "postrouting" => Hook::Postrouting,
            "ingress" => Hook::Ingress,
            "egress" => Hook::Egress,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    Filter,
    Nat,
    /// `type route` (iptables `mangle` OUTPUT): may re-route after changing marks.
    Route,
}

impl ChainKind {
    pub fn parse(text: &str) -> Option<ChainKind> {
        Some(match text {
            "filter" => ChainKind::Filter,
            "nat" => ChainKind::Nat,
            "route" => ChainKind::Route,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Accept,
    Drop,
}

/// Priority of a named nftables priority (`nft` prints these names in listings).
pub fn named_priority(name: &str) -> Option<i32> {
    Some(match name {
        "raw" => -300,
        "mangle" => -150,
        "dstnat" => -100,
        "filter" => 0,
        "security" => 50,
        "srcnat" => 100,
        _ => return None,
    })
}

/// The base chains of an iptables table, as the kernel registers them.
pub fn iptables_base_chain(table: &str, chain: &str) -> Option<BaseChain> {
    let hook = Hook::parse(chain)?;
    if chain != chain.to_ascii_uppercase() {
        return None;
    }
    let (kind, priority) = match table {
        "raw" => (ChainKind::Filter, -300),
        "mangle" => (
            if hook == Hook::Output {
                ChainKind::Route
            } else {
                ChainKind::Filter
            },
            -150,
        ),
        "nat" => (
            ChainKind::Nat,
            if matches!(hook, Hook::Postrouting | Hook::Input) {
                100
            } else {
                -100
            },
        ),
        "filter" => (ChainKind::Filter, 0),
        "security" => (ChainKind::Filter, 50),
        _ => return None,
    };
    Some(BaseChain {
        hook,
        kind,
        priority,
        policy: Policy::Accept,
    })
}

/// One rule: all its matches must hold; then its effects apply in order, then its verdict.
#[derive(Debug, Clone)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub effects: Vec<Effect>,
    /// `None`: the packet continues with the next rule.
    pub verdict: Option<Verdict>,
    /// The rule as written in the dump (counters removed), for evidence.
    pub text: String,
    /// 1-based line in the dump (0 when the dump has no lines, e.g. JSON).
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Source,
    Destination,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IfaceDirection {
    In,
    Out,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerKind {
    Uid,
    Gid,
}

/// An interface name; `prefix` when written with a wildcard (`eth+`, `"eth*"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IfaceName {
    pub name: String,
    pub prefix: bool,
}

impl IfaceName {
    /// Reads iptables (`eth+`) and nftables (`eth*`) spellings.
    pub fn parse(text: &str) -> IfaceName {
        let text = text.trim_matches('"');
        if let Some(p) = text.strip_suffix('+').or_else(|| text.strip_suffix('*')) {
            IfaceName {
                name: p.to_string(),
                prefix: true,
            }
        } else {
            IfaceName {
                name: text.to_string(),
                prefix: false,
            }
        }
    }

    pub fn matches(&self, iface: &str) -> bool {
        if self.prefix {
            iface.starts_with(&self.name)
        } else {
            iface == self.name
        }
    }

    /// A concrete interface name this pattern matches (for probes).
    pub fn example(&self) -> String {
        if self.prefix {
            format!("{}0", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// A user or group as a rule names it: numbers (or a range), or a name the dump did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnerId {
    Range(u32, u32),
    Name(String),
}

impl OwnerId {
    /// Reads `1337`, `1000-2000` or a name.
    pub fn parse(text: &str) -> OwnerId {
        let text = text.trim_matches('"');
        if let Ok(n) = text.parse::<u32>() {
            return OwnerId::Range(n, n);
        }
        if let Some((a, b)) = text.split_once('-') {
            if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                return OwnerId::Range(a.min(b), a.max(b));
            }
        }
        OwnerId::Name(text.to_string())
    }

    /// Whether a socket owned by `who` matches. A name only matches the same name: a dump that
    /// kept names (Istio's goldens do) is compared with settings that use the same names.
    pub fn matches(&self, who: &Identity) -> bool {
        match (self, who) {
            (OwnerId::Range(a, b), Identity::Id(n)) => a <= n && n <= b,
            (OwnerId::Name(a), Identity::Name(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OwnerId::Range(a, b) if a == b => write!(f, "{a}"),
            OwnerId::Range(a, b) => write!(f, "{a}-{b}"),
            OwnerId::Name(n) => f.write_str(n),
        }
    }
}

/// The owner of the socket a probe packet comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    Id(u32),
    Name(String),
}

impl Identity {
    /// Reads a UID/GID from settings: a number, or a name.
    pub fn parse(text: &str) -> Identity {
        match text.trim().parse::<u32>() {
            Ok(n) => Identity::Id(n),
            Err(_) => Identity::Name(text.trim().to_string()),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Id(n) => write!(f, "{n}"),
            Identity::Name(n) => f.write_str(n),
        }
    }
}

impl Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Identity::Id(n) => s.serialize_u32(*n),
            Identity::Name(n) => s.serialize_str(n),
        }
    }
}

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Protocol number of a name (`tcp`, `udp`, ...) or a number.
pub fn protocol_number(text: &str) -> Option<u8> {
    Some(match text.to_ascii_lowercase().as_str() {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "udplite" => 136,
        "dccp" => 33,
        "esp" => 50,
        "ah" => 51,
        "gre" => 47,
        other => return other.parse().ok(),
    })
}

/// One condition on a packet. Every variant can be evaluated against a probe, except `Unknown`.
#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    /// nftables `ip ...`/`ip6 ...` expressions only apply to their family.
    Family(IpFamily),
    Protocol {
        negated: bool,
        protocols: Vec<u8>,
    },
    Address {
        direction: Direction,
        negated: bool,
        nets: Vec<IpNet>,
    },
    /// A transport port; `protocols` empty means any protocol that has ports.
    Port {
        direction: Direction,
        negated: bool,
        ranges: Vec<(u16, u16)>,
        protocols: Vec<u8>,
    },
    Interface {
        direction: IfaceDirection,
        negated: bool,
        names: Vec<IfaceName>,
    },
    Owner {
        kind: OwnerKind,
        negated: bool,
        ids: Vec<OwnerId>,
    },
    /// Packet mark (`ct == false`) or connection mark, compared under a mask.
    Mark {
        ct: bool,
        negated: bool,
        value: u32,
        mask: u32,
    },
    /// Conntrack state names (`new`, `established`, `related`, `invalid`, `untracked`).
    CtState {
        negated: bool,
        states: Vec<String>,
    },
    /// A first packet of an outbound TCP connection (`--syn`).
    Syn {
        negated: bool,
    },
    /// Something this auditor does not evaluate: the packet may or may not match.
    Unknown {
        text: String,
    },
}

/// A side effect that does not end the rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// `MARK --set-xmark value/mask`, `meta mark set value`.
    SetMark { value: u32, mask: u32 },
    /// `-j CT --notrack`, `NOTRACK`, `notrack`: the packet skips conntrack, and so every NAT rule.
    NoTrack,
    /// Counters, logging, conntrack zones, connmark copies: no bearing on where the packet goes.
    Other,
}

/// What a matching rule does with the packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accept,
    /// DROP and REJECT.
    Drop,
    Return,
    Jump(String),
    Goto(String),
    /// NAT to a local port; `None` keeps the destination port.
    Redirect {
        ports: Option<(u16, u16)>,
    },
    /// NAT to another destination.
    Dnat {
        addr: Option<IpAddr>,
        port: Option<u16>,
    },
    /// SNAT/MASQUERADE: never on the output hook's path for outbound probes.
    SourceNat,
    /// Hands the packet to user space (NFQUEUE): whatever that program decides.
    Queue,
    /// A target this auditor does not know: it may end the chain.
    Unknown(String),
}

impl Verdict {
    /// Whether the verdict ends the evaluation of the base chain.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Verdict::Jump(_) | Verdict::Goto(_) | Verdict::Return)
    }
}
