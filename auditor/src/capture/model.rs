//! The capture model: what a pod's netfilter rules do with its traffic, as Istio's injection
//! decided it (proxy UID/GID, interception mode, ranges, ports, interfaces, owner groups), and the
//! value syntax the annotations and the `istio-iptables` flags share.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::Serialize;

use crate::istio::ProxyRole;

/// The UID (and GID) `istio-iptables` and istio-cni fall back to when nothing names another.
pub const DEFAULT_PROXY_UID: i64 = 1337;
/// Outbound traffic is redirected to this Envoy port unless `-p` says otherwise.
pub const DEFAULT_OUTBOUND_REDIRECT_PORT: u16 = 15001;
/// Inbound traffic is redirected to this Envoy port unless `-z` says otherwise.
pub const DEFAULT_INBOUND_REDIRECT_PORT: u16 = 15006;
/// The HBONE tunnel port inbound rules always let through.
pub const DEFAULT_INBOUND_TUNNEL_PORT: u16 = 15008;
/// The proxy's status port. istio-cni excludes it from outbound capture by default.
pub const PROXY_STATUS_PORT: u16 = 15020;
/// TPROXY mark and policy-routing table defaults.
pub const DEFAULT_TPROXY_MARK: u32 = 1337;
pub const DEFAULT_TPROXY_ROUTE_TABLE: u32 = 133;

/// How inbound (and, for NONE, all) traffic reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InterceptionMode {
    Redirect,
    Tproxy,
    /// No netfilter rules at all: nothing is captured.
    None,
}

impl InterceptionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            InterceptionMode::Redirect => "REDIRECT",
            InterceptionMode::Tproxy => "TPROXY",
            InterceptionMode::None => "NONE",
        }
    }
}

impl FromStr for InterceptionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "REDIRECT" => Ok(InterceptionMode::Redirect),
            "TPROXY" => Ok(InterceptionMode::Tproxy),
            "NONE" => Ok(InterceptionMode::None),
            other => Err(format!(
                "unknown interception mode {other:?} (expected REDIRECT, TPROXY or NONE)"
            )),
        }
    }
}

/// Where the capture settings were read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "type"
)]
pub enum CaptureSource {
    /// `istio-iptables` args (and environment) of this init container.
    InitContainer { container: String },
    /// istio-cni: `traffic.sidecar.istio.io/*` annotations and the proxy's security context.
    CniAnnotations,
    /// `sidecar.istio.io/interceptionMode: NONE`: Istio programs no capture.
    InterceptionDisabled,
    /// A gateway pod (`proxy router`): the pod is the proxy, there is nothing to capture.
    Gateway,
    /// Not injected yet: what Istio's injection template will write, read from the pod's
    /// annotations and from any `istio-init`/`istio-proxy` fields the pod sets itself (the
    /// injector merges those over its own), assuming the default install (istio-init, no CNI).
    /// `init_container` names the pod's own `istio-init` when its args were used.
    Predicted { init_container: Option<String> },
}

/// An IPv4 or IPv6 network, stored masked (as iptables prints it: `10.96.0.2/24` is `10.96.0.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return None;
        }
        Some(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// `0.0.0.0/0` or `::/0`.
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }

    /// Whether every address of `other` is in `self`.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    /// Whether the whole range lies in private, loopback, link-local, CGNAT or unique-local space,
    /// i.e. it cannot reach a public internet destination.
    pub fn is_non_public(&self) -> bool {
        const V4: [(Ipv4Addr, u8); 6] = [
            (Ipv4Addr::new(10, 0, 0, 0), 8),
            (Ipv4Addr::new(172, 16, 0, 0), 12),
            (Ipv4Addr::new(192, 168, 0, 0), 16),
            (Ipv4Addr::new(127, 0, 0, 0), 8),
            (Ipv4Addr::new(169, 254, 0, 0), 16),
            (Ipv4Addr::new(100, 64, 0, 0), 10),
        ];
        const V6: [(Ipv6Addr, u8); 3] = [
            (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
            (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
            (Ipv6Addr::LOCALHOST, 128),
        ];
        let ranges: Vec<Cidr> = V4
            .iter()
            .filter_map(|(a, p)| Cidr::new(IpAddr::V4(*a), *p))
            .chain(V6.iter().filter_map(|(a, p)| Cidr::new(IpAddr::V6(*a), *p)))
            .collect();
        ranges.iter().any(|r| r.covers(self))
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (missing /prefix)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR (bad address)"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR (bad prefix length)"))?;
        Cidr::new(addr, prefix).ok_or_else(|| format!("{s:?} is not a CIDR (prefix too long)"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which outbound destinations are sent to the proxy (`-i`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum IpRanges {
    /// `*`: every destination (after exclusions).
    All,
    /// Only these; an empty list captures no outbound traffic by address.
    Only(Vec<Cidr>),
}

/// Which inbound ports are sent to the proxy (`-b`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PortSelection {
    All,
    Only(Vec<u16>),
}

/// Which process groups' traffic is captured (`ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum OwnerGroups {
    /// All groups except these (names or numeric GIDs).
    AllExcept(Vec<String>),
    /// Only these groups.
    Only(Vec<String>),
}

/// Everything about a pod's capture that Istio's injection decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureConfig {
    /// Where these settings were read from.
    pub source: CaptureSource,
    /// True when the CNI plugin, not `istio-init`, programs the rules.
    pub cni: bool,
    /// Sidecar or gateway, from the proxy args.
    pub proxy_role: ProxyRole,
    /// UIDs whose traffic is never redirected (the proxy's own); `-u`, a comma list.
    pub proxy_uids: Vec<i64>,
    /// GIDs whose traffic is never redirected; `-g`, defaults to the UIDs with `istio-init`.
    pub proxy_gids: Vec<i64>,
    pub interception_mode: InterceptionMode,
    /// Envoy's outbound capture port (`-p`, 15001).
    pub outbound_redirect_port: u16,
    /// Envoy's inbound capture port (`-z`, 15006).
    pub inbound_redirect_port: u16,
    /// Inbound port always let through (`-e`, 15008).
    pub inbound_tunnel_port: u16,
    /// `-i`.
    pub include_outbound_ip_ranges: IpRanges,
    /// `-x`.
    pub exclude_outbound_ip_ranges: Vec<Cidr>,
    /// `-q`: these destination ports are redirected even when their address is not included.
    pub include_outbound_ports: Vec<u16>,
    /// `-o`: these destination ports are never redirected.
    pub exclude_outbound_ports: Vec<u16>,
    /// `-b`.
    pub include_inbound_ports: PortSelection,
    /// `-d`.
    pub exclude_inbound_ports: Vec<u16>,
    /// `-c`: neither inbound nor outbound traffic on these interfaces is captured.
    pub exclude_interfaces: Vec<String>,
    /// `-k`: traffic arriving on these interfaces is treated as outbound.
    pub reroute_virtual_interfaces: Vec<String>,
    /// `ISTIO_OUTBOUND_OWNER_GROUPS` / `_EXCLUDE` on `istio-init`.
    pub owner_groups: OwnerGroups,
    /// DNS (port 53) is redirected to the agent on 15053.
    pub dns_capture: bool,
    pub capture_all_dns: bool,
    pub drop_invalid: bool,
    pub dual_stack: bool,
    /// Rules are written with nft instead of iptables.
    pub native_nftables: bool,
    pub tproxy_mark: u32,
    pub tproxy_route_table: u32,
    /// False when `istio-init` runs with `--dry-run` or `--skip-rule-apply` outside CNI mode:
    /// nothing programs the rules.
    pub rules_applied: bool,
    /// The flags that stop `istio-init` from writing rules, when `rules_applied` is false.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules_skipped_by: Vec<String>,
    /// `--run-validation` (the `istio-validation` container's job).
    pub run_validation: bool,
}

/// Why capture settings could not be derived. The pod checks report these as capture they cannot
/// vouch for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("{container}: argument {arg:?} is not an istio-iptables flag")]
    UnknownArg { container: String, arg: String },
    #[error("{container}: flag {flag} needs a value")]
    MissingValue { container: String, flag: String },
    #[error("{container}: {flag} {value:?}: {reason}")]
    BadValue {
        container: String,
        flag: String,
        value: String,
        reason: String,
    },
    #[error("{container}: environment variable {name} comes from {from}, its value is not in the pod spec")]
    UnresolvableEnv {
        container: String,
        name: String,
        from: String,
    },
    #[error("annotation {key}={value:?}: {reason}")]
    BadAnnotation {
        key: String,
        value: String,
        reason: String,
    },
    #[error("sidecar.istio.io/status lists {container} but the pod has no such init container")]
    MissingInitContainer { container: String },
}

impl CaptureError {
    /// The container the error is about, if any.
    pub fn container(&self) -> Option<&str> {
        match self {
            CaptureError::UnknownArg { container, .. }
            | CaptureError::MissingValue { container, .. }
            | CaptureError::BadValue { container, .. }
            | CaptureError::UnresolvableEnv { container, .. }
            | CaptureError::MissingInitContainer { container } => Some(container),
            CaptureError::BadAnnotation { .. } => None,
        }
    }
}

/// One way outbound capture is narrower than "every TCP connection of every non-proxy process",
/// beyond what Istio itself always leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "kind"
)]
pub enum Narrowing {
    /// Interception mode NONE: nothing is captured.
    NoInterception,
    /// `istio-init` will not write the rules (`--dry-run` / `--skip-rule-apply` without CNI).
    RulesNotApplied { flags: Vec<String> },
    /// `-i` is not `*`: destinations outside these ranges go out directly, except to `ports`.
    IncludedRangesOnly {
        ranges: Vec<Cidr>,
        still_captured_ports: Vec<u16>,
    },
    /// `-x`: these destinations go out directly.
    ExcludedRanges { ranges: Vec<Cidr> },
    /// `-o`: these destination ports go out directly.
    ExcludedPorts { ports: Vec<u16> },
    /// `-c`: traffic leaving through these interfaces is not captured.
    ExcludedInterfaces { interfaces: Vec<String> },
    /// Traffic of processes in these groups is not captured.
    ExcludedOwnerGroups { groups: Vec<String> },
    /// Only processes in these groups are captured.
    IncludedOwnerGroupsOnly { groups: Vec<String> },
}

impl CaptureConfig {
    pub(super) fn defaults(source: CaptureSource, cni: bool, role: ProxyRole) -> CaptureConfig {
        CaptureConfig {
            source,
            cni,
            proxy_role: role,
            proxy_uids: vec![DEFAULT_PROXY_UID],
            proxy_gids: vec![DEFAULT_PROXY_UID],
            interception_mode: InterceptionMode::Redirect,
            outbound_redirect_port: DEFAULT_OUTBOUND_REDIRECT_PORT,
            inbound_redirect_port: DEFAULT_INBOUND_REDIRECT_PORT,
            inbound_tunnel_port: DEFAULT_INBOUND_TUNNEL_PORT,
            include_outbound_ip_ranges: IpRanges::All,
            exclude_outbound_ip_ranges: Vec::new(),
            include_outbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            include_inbound_ports: PortSelection::All,
            exclude_inbound_ports: Vec::new(),
            exclude_interfaces: Vec::new(),
            reroute_virtual_interfaces: Vec::new(),
            owner_groups: OwnerGroups::AllExcept(Vec::new()),
            dns_capture: false,
            capture_all_dns: false,
            drop_invalid: false,
            dual_stack: false,
            native_nftables: false,
            tproxy_mark: DEFAULT_TPROXY_MARK,
            tproxy_route_table: DEFAULT_TPROXY_ROUTE_TABLE,
            rules_applied: true,
            rules_skipped_by: Vec::new(),
            run_validation: false,
        }
    }

    /// Whether the pod's outbound traffic is captured at all (a sidecar whose rules are written).
    pub fn captures_outbound(&self) -> bool {
        self.proxy_role == ProxyRole::Sidecar
            && self.interception_mode != InterceptionMode::None
            && self.rules_applied
    }

    /// Every way outbound capture is narrower than Istio's default, in a fixed order. Istio's own
    /// built-in exceptions (the proxy's UID/GID, loopback, and istio-cni's default exclusion of
    /// the status port 15020) are not narrowings. Gateways capture nothing and narrow nothing.
    pub fn outbound_narrowings(&self) -> Vec<Narrowing> {
        if self.proxy_role == ProxyRole::Gateway {
            return Vec::new();
        }
        if self.interception_mode == InterceptionMode::None {
            return vec![Narrowing::NoInterception];
        }
        let mut out = Vec::new();
        if !self.rules_applied {
            out.push(Narrowing::RulesNotApplied {
                flags: self.rules_skipped_by.clone(),
            });
        }
        if let IpRanges::Only(ranges) = &self.include_outbound_ip_ranges {
            // Listing 0.0.0.0/0 and ::/0 is the same as `*`.
            let v4_all = ranges.iter().any(|c| c.is_everything() && c.is_ipv4());
            let v6_all = ranges.iter().any(|c| c.is_everything() && !c.is_ipv4());
            if !(v4_all && v6_all) {
                out.push(Narrowing::IncludedRangesOnly {
                    ranges: ranges.clone(),
                    still_captured_ports: self.include_outbound_ports.clone(),
                });
            }
        }
        if !self.exclude_outbound_ip_ranges.is_empty() {
            out.push(Narrowing::ExcludedRanges {
                ranges: self.exclude_outbound_ip_ranges.clone(),
            });
        }
        let ports: Vec<u16> = self
            .exclude_outbound_ports
            .iter()
            .copied()
            .filter(|p| !(self.cni && *p == PROXY_STATUS_PORT))
            .collect();
        if !ports.is_empty() {
            out.push(Narrowing::ExcludedPorts { ports });
        }
        if !self.exclude_interfaces.is_empty() {
            out.push(Narrowing::ExcludedInterfaces {
                interfaces: self.exclude_interfaces.clone(),
            });
        }
        match &self.owner_groups {
            OwnerGroups::AllExcept(groups) if !groups.is_empty() => {
                out.push(Narrowing::ExcludedOwnerGroups {
                    groups: groups.clone(),
                })
            }
            OwnerGroups::Only(groups) => out.push(Narrowing::IncludedOwnerGroupsOnly {
                groups: groups.clone(),
            }),
            _ => {}
        }
        out
    }
}

// Value syntax shared by the annotations and the `istio-iptables` flags.

/// Go's `strconv.ParseBool`.
pub(super) fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

pub(super) fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub(super) fn parse_ip_ranges(v: &str) -> Result<IpRanges, String> {
    if v.trim() == "*" {
        return Ok(IpRanges::All);
    }
    parse_cidrs(v).map(IpRanges::Only)
}

pub(super) fn parse_cidrs(v: &str) -> Result<Vec<Cidr>, String> {
    split_list(v).iter().map(|s| s.parse()).collect()
}

pub(super) fn parse_port(s: &str) -> Result<u16, String> {
    s.trim()
        .parse::<u16>()
        .map_err(|_| format!("{s:?} is not a port number"))
}

/// A port list. A wildcard is refused: `istio-iptables` would pass `*` to `--dport` and fail.
pub(super) fn parse_ports_or_wildcard(v: &str) -> Result<Vec<u16>, String> {
    if v.trim() == "*" {
        return Err("a wildcard is not a port list here".to_string());
    }
    split_list(v).iter().map(|s| parse_port(s)).collect()
}

pub(super) fn parse_port_selection(v: &str) -> Result<PortSelection, String> {
    if v.trim() == "*" {
        return Ok(PortSelection::All);
    }
    split_list(v)
        .iter()
        .map(|s| parse_port(s))
        .collect::<Result<Vec<_>, _>>()
        .map(PortSelection::Only)
}

pub(super) fn parse_ids(v: &str) -> Result<Vec<i64>, String> {
    split_list(v)
        .iter()
        .map(|s| {
            s.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("{s:?} is not a numeric id"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_masks_and_classifies() {
        let c: Cidr = "10.96.0.2/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.96.0.0/24");
        assert!(c.is_non_public());
        assert!(!"8.8.8.0/24".parse::<Cidr>().unwrap().is_non_public());
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().is_everything());
        assert!("::/0".parse::<Cidr>().unwrap().is_everything());
        assert!("fd00::/8".parse::<Cidr>().unwrap().is_non_public());
        assert!("10.0.0.1".parse::<Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        let wide: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(wide.covers(&c));
        assert!(!c.covers(&wide));
    }
}
