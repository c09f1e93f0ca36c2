//! What Istio's injection implies for a pod's traffic capture: the one capture model.
//!
//! A sidecar only sees the traffic the pod's netfilter rules send to it. Those rules are written
//! either by the `istio-init` container (`istio-iptables` args, environment as fallback) or, with
//! istio-cni, by the CNI plugin from the pod's `traffic.sidecar.istio.io/*` annotations and the
//! proxy container's `runAsUser`/`runAsGroup`. [`CaptureConfig::from_pod`] reads whichever of the
//! two applies and returns the settings the rules are built from: the pod checks use it to find
//! narrowed capture and excluded identities, and the iptables/nftables judge uses it to know which
//! rules to expect in the pod's network namespace.
//!
//! Sources: `tools/istio-iptables/pkg/cmd/root.go` and `pkg/constants` (flags and their
//! environment variables), `cni/pkg/plugin/sidecar_redirect.go` and `kubernetes.go` (CNI defaults),
//! `tools/istio-iptables/pkg/capture/run.go` (how each setting becomes a rule).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::istio::{self, traffic, ProxyRole};

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
    /// Derives what Istio's injection implies for this pod. `Ok(None)` when the pod was not
    /// injected: no `sidecar.istio.io/status` annotation, or no `istio-proxy` container running
    /// Istio's `proxy sidecar|router` args.
    pub fn from_pod(
        spec: &PodSpec,
        meta: &ObjectMeta,
    ) -> Result<Option<CaptureConfig>, CaptureError> {
        let Some(status) = istio::injection_status(meta) else {
            return Ok(None);
        };
        let Some(proxy) = istio::find_proxy(spec) else {
            return Ok(None);
        };
        let Some(role) = proxy.role else {
            return Ok(None);
        };
        let mode_annotation = istio::annotation(meta, istio::INTERCEPTION_MODE_ANNOTATION);

        if role == ProxyRole::Gateway {
            let mut cfg = CaptureConfig::defaults(CaptureSource::Gateway, false, role);
            cfg.interception_mode = InterceptionMode::None;
            cfg.rules_applied = false;
            cfg.proxy_uids = vec![proxy_run_as_user(spec, proxy.container)];
            cfg.proxy_gids = cfg.proxy_uids.clone();
            return Ok(Some(cfg));
        }

        if let Some(init) = istio::find_init_container(spec, istio::INIT_CONTAINER) {
            return parse_init_container(init).map(Some);
        }

        if istio::uses_cni(spec, meta) {
            let mut cfg = from_cni_annotations(meta, proxy.container)?;
            if let Some(validation) = istio::find_init_container(spec, istio::VALIDATION_CONTAINER)
            {
                cfg.run_validation = validation_runs(validation);
            }
            return Ok(Some(cfg));
        }

        if mode_annotation == Some("NONE") {
            let mut cfg = CaptureConfig::defaults(CaptureSource::InterceptionDisabled, false, role);
            cfg.interception_mode = InterceptionMode::None;
            cfg.rules_applied = false;
            cfg.proxy_uids = vec![proxy_run_as_user(spec, proxy.container)];
            cfg.proxy_gids = cfg.proxy_uids.clone();
            return Ok(Some(cfg));
        }

        if status.lists(istio::INIT_CONTAINER) {
            // Istio injected istio-init and it is gone: whatever programs capture now, it is not Istio.
            return Err(CaptureError::MissingInitContainer {
                container: istio::INIT_CONTAINER.to_string(),
            });
        }
        // Injected with neither init container nor a NONE mode: an older CNI install that adds no
        // validation container. The CNI plugin reads the annotations.
        from_cni_annotations(meta, proxy.container).map(Some)
    }

    /// Parses an `istio-iptables` invocation (command followed by args), applying its environment
    /// variables first as flag defaults, the way `istio-iptables` does.
    pub fn from_init_container(container: &Container) -> Result<CaptureConfig, CaptureError> {
        parse_init_container(container)
    }

    /// Parses bare `istio-iptables` args (no environment). `container` names the source in errors.
    pub fn from_istio_iptables_args(
        container: &str,
        args: &[String],
    ) -> Result<CaptureConfig, CaptureError> {
        let mut flags = IptablesFlags::default();
        flags.parse_args(container, args)?;
        flags.into_config(container)
    }

    /// What Istio's injection will write for a pod that is not injected yet (no
    /// `sidecar.istio.io/status`), assuming the default install (istio-init, no CNI):
    /// the `traffic.sidecar.istio.io/*` and interception-mode annotations over the template's
    /// defaults, an `istio-init` container the pod brings itself parsed as the args the injector
    /// will keep, and the proxy UID from an `istio-proxy` container the pod brings (the template
    /// writes `-u` from it; `-g` then defaults to the same).
    pub fn predict(spec: &PodSpec, meta: &ObjectMeta) -> Result<CaptureConfig, CaptureError> {
        let own_init = istio::find_init_container(spec, istio::INIT_CONTAINER)
            .filter(|c| c.args.as_ref().is_some_and(|a| !a.is_empty()) || c.command.is_some());
        let mut cfg = match own_init {
            Some(init) => parse_init_container(init)?,
            None => from_annotations(
                meta,
                CaptureSource::Predicted {
                    init_container: None,
                },
                false,
            )?,
        };
        cfg.source = CaptureSource::Predicted {
            init_container: own_init.map(|c| c.name.clone()),
        };
        if own_init.is_none() {
            let own_proxy_uid = spec
                .containers
                .iter()
                .chain(istio::init_containers(spec))
                .find(|c| c.name == istio::PROXY_CONTAINER)
                .and_then(|c| c.security_context.as_ref())
                .and_then(|s| s.run_as_user);
            let uid = own_proxy_uid.unwrap_or(DEFAULT_PROXY_UID);
            cfg.proxy_uids = vec![uid];
            cfg.proxy_gids = vec![uid];
        }
        if cfg.interception_mode == InterceptionMode::None {
            cfg.rules_applied = false;
        }
        Ok(cfg)
    }

    fn defaults(source: CaptureSource, cni: bool, role: ProxyRole) -> CaptureConfig {
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

/// The proxy's UID as the proxy-uid check should assume it when capture settings cannot be read:
/// the proxy container's `runAsUser`, else the pod's, else 1337.
pub fn fallback_proxy_identity(spec: &PodSpec) -> (i64, i64) {
    let Some(proxy) = istio::find_proxy(spec) else {
        return (DEFAULT_PROXY_UID, DEFAULT_PROXY_UID);
    };
    let uid = proxy_run_as_user(spec, proxy.container);
    let gid = proxy
        .container
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_group)
        .or_else(|| spec.security_context.as_ref().and_then(|s| s.run_as_group))
        .unwrap_or(uid);
    (uid, gid)
}

fn proxy_run_as_user(spec: &PodSpec, proxy: &Container) -> i64 {
    proxy
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .or_else(|| spec.security_context.as_ref().and_then(|s| s.run_as_user))
        .unwrap_or(DEFAULT_PROXY_UID)
}

fn validation_runs(container: &Container) -> bool {
    container
        .args
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .any(|a| a == "--run-validation" || a == "--run-validation=true")
}

/// istio-cni's reading of the pod (`NewRedirect`): annotations with CNI defaults, proxy UID/GID
/// from the `istio-proxy` container's own security context (0 or unset means 1337), DNS capture
/// from the proxy's `ISTIO_META_DNS_CAPTURE`.
fn from_cni_annotations(
    meta: &ObjectMeta,
    proxy: &Container,
) -> Result<CaptureConfig, CaptureError> {
    let mut cfg = from_annotations(meta, CaptureSource::CniAnnotations, true)?;
    let sc = proxy.security_context.as_ref();
    cfg.proxy_uids = vec![sc
        .and_then(|s| s.run_as_user)
        .filter(|u| *u != 0)
        .unwrap_or(DEFAULT_PROXY_UID)];
    cfg.proxy_gids = vec![sc
        .and_then(|s| s.run_as_group)
        .filter(|g| *g != 0)
        .unwrap_or(DEFAULT_PROXY_UID)];
    let proxy_env = |name: &str| {
        proxy
            .env
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
            .and_then(parse_go_bool)
    };
    cfg.dns_capture = proxy_env("ISTIO_META_DNS_CAPTURE").unwrap_or(false);
    cfg.dual_stack = proxy_env("ISTIO_DUAL_STACK").unwrap_or(false);
    cfg.drop_invalid = proxy_env("INVALID_DROP").unwrap_or(false);
    Ok(cfg)
}

/// The `traffic.sidecar.istio.io/*` and interception-mode annotations over Istio's defaults.
/// `cni` selects istio-cni's defaults (status port 15020 excluded from outbound capture).
fn from_annotations(
    meta: &ObjectMeta,
    source: CaptureSource,
    cni: bool,
) -> Result<CaptureConfig, CaptureError> {
    let mut cfg = CaptureConfig::defaults(source, cni, ProxyRole::Sidecar);
    let get = |key: &str| istio::annotation(meta, key);
    let bad = |key: &str, value: &str, reason: String| CaptureError::BadAnnotation {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };

    if let Some(mode) = get(istio::INTERCEPTION_MODE_ANNOTATION) {
        cfg.interception_mode = mode
            .parse()
            .map_err(|e| bad(istio::INTERCEPTION_MODE_ANNOTATION, mode, e))?;
    }
    if let Some(v) = get(traffic::INCLUDE_OUTBOUND_IP_RANGES) {
        cfg.include_outbound_ip_ranges =
            parse_ip_ranges(v).map_err(|e| bad(traffic::INCLUDE_OUTBOUND_IP_RANGES, v, e))?;
    }
    if let Some(v) = get(traffic::EXCLUDE_OUTBOUND_IP_RANGES) {
        cfg.exclude_outbound_ip_ranges =
            parse_cidrs(v).map_err(|e| bad(traffic::EXCLUDE_OUTBOUND_IP_RANGES, v, e))?;
    }
    // istio-cni excludes the status port from outbound capture unless told otherwise.
    cfg.exclude_outbound_ports = match get(traffic::EXCLUDE_OUTBOUND_PORTS) {
        Some(v) => {
            parse_ports_or_wildcard(v).map_err(|e| bad(traffic::EXCLUDE_OUTBOUND_PORTS, v, e))?
        }
        None if cni => vec![PROXY_STATUS_PORT],
        None => Vec::new(),
    };
    if let Some(v) = get(traffic::INCLUDE_OUTBOUND_PORTS) {
        cfg.include_outbound_ports =
            parse_ports_or_wildcard(v).map_err(|e| bad(traffic::INCLUDE_OUTBOUND_PORTS, v, e))?;
    }
    if let Some(v) = get(traffic::INCLUDE_INBOUND_PORTS) {
        cfg.include_inbound_ports =
            parse_port_selection(v).map_err(|e| bad(traffic::INCLUDE_INBOUND_PORTS, v, e))?;
    }
    let mut inbound_excluded = match get(traffic::EXCLUDE_INBOUND_PORTS) {
        Some(v) => {
            parse_ports_or_wildcard(v).map_err(|e| bad(traffic::EXCLUDE_INBOUND_PORTS, v, e))?
        }
        None => vec![PROXY_STATUS_PORT],
    };
    // Both the CNI plugin and the injection template always exclude the proxy's own ports.
    for p in [15020, 15021, 15090] {
        if !inbound_excluded.contains(&p) {
            inbound_excluded.push(p);
        }
    }
    cfg.exclude_inbound_ports = inbound_excluded;
    if let Some(v) = get(traffic::EXCLUDE_INTERFACES) {
        cfg.exclude_interfaces = split_list(v);
    }
    cfg.reroute_virtual_interfaces = match get(traffic::REROUTE_VIRTUAL_INTERFACES) {
        Some(v) => split_list(v),
        None => get(traffic::KUBEVIRT_INTERFACES)
            .map(split_list)
            .unwrap_or_default(),
    };
    Ok(cfg)
}

/// The value-taking and boolean flags of `istio-iptables`, by long name and shorthand.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Value,
    Bool,
}

/// (long name, shorthand, kind). Log flags come from Istio's shared logging options.
const FLAGS: &[(&str, Option<char>, FlagKind)] = &[
    ("envoy-port", Some('p'), FlagKind::Value),
    ("inbound-capture-port", Some('z'), FlagKind::Value),
    ("inbound-tunnel-port", Some('e'), FlagKind::Value),
    ("proxy-uid", Some('u'), FlagKind::Value),
    ("proxy-gid", Some('g'), FlagKind::Value),
    (
        "istio-inbound-interception-mode",
        Some('m'),
        FlagKind::Value,
    ),
    ("istio-inbound-ports", Some('b'), FlagKind::Value),
    ("istio-local-exclude-ports", Some('d'), FlagKind::Value),
    ("istio-exclude-interfaces", Some('c'), FlagKind::Value),
    ("istio-service-cidr", Some('i'), FlagKind::Value),
    ("istio-service-exclude-cidr", Some('x'), FlagKind::Value),
    ("istio-outbound-ports", Some('q'), FlagKind::Value),
    (
        "istio-local-outbound-ports-exclude",
        Some('o'),
        FlagKind::Value,
    ),
    ("kube-virt-interfaces", Some('k'), FlagKind::Value),
    ("istio-inbound-tproxy-mark", Some('t'), FlagKind::Value),
    (
        "istio-inbound-tproxy-route-table",
        Some('r'),
        FlagKind::Value,
    ),
    ("dry-run", Some('n'), FlagKind::Bool),
    ("restore-format", Some('f'), FlagKind::Bool),
    ("iptables-trace-logging", None, FlagKind::Bool),
    ("iptables-probe-port", None, FlagKind::Value),
    ("probe-timeout", None, FlagKind::Value),
    ("skip-rule-apply", None, FlagKind::Bool),
    ("run-validation", None, FlagKind::Bool),
    ("redirect-dns", None, FlagKind::Bool),
    ("drop-invalid", None, FlagKind::Bool),
    ("dual-stack", None, FlagKind::Bool),
    ("capture-all-dns", None, FlagKind::Bool),
    ("network-namespace", None, FlagKind::Value),
    ("cni-mode", None, FlagKind::Bool),
    ("reconcile", None, FlagKind::Bool),
    ("cleanup-only", None, FlagKind::Bool),
    ("force-apply", None, FlagKind::Bool),
    ("native-nftables", None, FlagKind::Bool),
    ("force-iptables-binary", None, FlagKind::Value),
    ("log_output_level", None, FlagKind::Value),
    ("log_stacktrace_level", None, FlagKind::Value),
    ("log_caller", None, FlagKind::Value),
    ("log_target", None, FlagKind::Value),
    ("log_as_json", None, FlagKind::Bool),
    ("log_rotate", None, FlagKind::Value),
    ("log_rotate_max_age", None, FlagKind::Value),
    ("log_rotate_max_backups", None, FlagKind::Value),
    ("log_rotate_max_size", None, FlagKind::Value),
];

/// Environment variables `istio-iptables` reads as flag defaults (`pkg/flag.BindEnv` upper-cases
/// the flag name; a few flags have an additional legacy name). Value-less flags not listed here
/// cannot be set from the environment.
const FLAG_ENV: &[(&str, &str)] = &[
    ("INBOUND_CAPTURE_PORT", "inbound-capture-port"),
    ("INBOUND_TUNNEL_PORT", "inbound-tunnel-port"),
    ("PROXY_UID", "proxy-uid"),
    ("PROXY_GID", "proxy-gid"),
    (
        "ISTIO_INBOUND_INTERCEPTION_MODE",
        "istio-inbound-interception-mode",
    ),
    ("ISTIO_INBOUND_PORTS", "istio-inbound-ports"),
    ("ISTIO_LOCAL_EXCLUDE_PORTS", "istio-local-exclude-ports"),
    ("ISTIO_EXCLUDE_INTERFACES", "istio-exclude-interfaces"),
    ("ISTIO_SERVICE_CIDR", "istio-service-cidr"),
    ("ISTIO_SERVICE_EXCLUDE_CIDR", "istio-service-exclude-cidr"),
    ("ISTIO_OUTBOUND_PORTS", "istio-outbound-ports"),
    (
        "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
        "istio-local-outbound-ports-exclude",
    ),
    ("KUBE_VIRT_INTERFACES", "kube-virt-interfaces"),
    ("ISTIO_INBOUND_TPROXY_MARK", "istio-inbound-tproxy-mark"),
    (
        "ISTIO_INBOUND_TPROXY_ROUTE_TABLE",
        "istio-inbound-tproxy-route-table",
    ),
    ("DRY_RUN", "dry-run"),
    ("SKIP_RULE_APPLY", "skip-rule-apply"),
    ("RUN_VALIDATION", "run-validation"),
    ("REDIRECT_DNS", "redirect-dns"),
    ("ISTIO_META_DNS_CAPTURE", "redirect-dns"),
    ("DROP_INVALID", "drop-invalid"),
    ("INVALID_DROP", "drop-invalid"),
    ("DUAL_STACK", "dual-stack"),
    ("ISTIO_DUAL_STACK", "dual-stack"),
    ("CAPTURE_ALL_DNS", "capture-all-dns"),
    ("NATIVE_NFTABLES", "native-nftables"),
];

/// Owner-group filters have no flag, only these environment variables.
const OWNER_GROUPS_ENV: &str = "ISTIO_OUTBOUND_OWNER_GROUPS";
const OWNER_GROUPS_EXCLUDE_ENV: &str = "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE";

/// Program names that may precede the flags (`command: [istio-iptables]`, `pilot-agent istio-iptables`).
fn is_program_name(token: &str) -> bool {
    let base = token.rsplit('/').next().unwrap_or(token);
    matches!(
        base,
        "istio-iptables" | "istio-iptables.sh" | "pilot-agent" | "istio-clean-iptables"
    )
}

#[derive(Default)]
struct IptablesFlags {
    /// Last value per long flag name, as `istio-iptables` (pflag) keeps the last one given.
    values: std::collections::BTreeMap<&'static str, String>,
    owner_groups_include: Option<String>,
    owner_groups_exclude: Option<String>,
}

impl IptablesFlags {
    fn apply_env(&mut self, container: &Container) -> Result<(), CaptureError> {
        for var in container.env.as_deref().unwrap_or(&[]) {
            let target = FLAG_ENV
                .iter()
                .find(|(env, _)| *env == var.name)
                .map(|(_, flag)| *flag);
            let is_groups = var.name == OWNER_GROUPS_ENV || var.name == OWNER_GROUPS_EXCLUDE_ENV;
            if target.is_none() && !is_groups {
                continue;
            }
            let value = match (&var.value, &var.value_from) {
                (_, Some(from)) => {
                    let from = if from.config_map_key_ref.is_some() {
                        "a ConfigMap"
                    } else if from.secret_key_ref.is_some() {
                        "a Secret"
                    } else {
                        "a field or resource reference"
                    };
                    return Err(CaptureError::UnresolvableEnv {
                        container: container.name.clone(),
                        name: var.name.clone(),
                        from: from.to_string(),
                    });
                }
                (Some(v), None) => v.clone(),
                (None, None) => String::new(),
            };
            if let Some(flag) = target {
                self.values.insert(flag, value);
            } else if var.name == OWNER_GROUPS_ENV {
                self.owner_groups_include = Some(value);
            } else {
                self.owner_groups_exclude = Some(value);
            }
        }
        Ok(())
    }

    fn parse_args(&mut self, container: &str, tokens: &[String]) -> Result<(), CaptureError> {
        let mut i = 0;
        // Skip leading program names (`pilot-agent istio-iptables ...`).
        while i < tokens.len() && is_program_name(&tokens[i]) {
            i += 1;
        }
        let unknown = |arg: &str| CaptureError::UnknownArg {
            container: container.to_string(),
            arg: arg.to_string(),
        };
        while i < tokens.len() {
            let token = tokens[i].as_str();
            i += 1;
            let (spec, inline) = if let Some(long) = token.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (long, None),
                };
                let spec = FLAGS
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .ok_or_else(|| unknown(token))?;
                (spec, inline.map(str::to_string))
            } else if let Some(short) = token.strip_prefix('-') {
                let mut chars = short.chars();
                let c = chars.next().ok_or_else(|| unknown(token))?;
                let spec = FLAGS
                    .iter()
                    .find(|(_, s, _)| *s == Some(c))
                    .ok_or_else(|| unknown(token))?;
                let rest = chars.as_str();
                let inline = if rest.is_empty() {
                    None
                } else {
                    Some(rest.strip_prefix('=').unwrap_or(rest).to_string())
                };
                (spec, inline)
            } else {
                return Err(unknown(token));
            };
            let (name, _, kind) = *spec;
            let value = match (kind, inline) {
                (FlagKind::Bool, Some(v)) => {
                    parse_go_bool(&v).ok_or_else(|| CaptureError::BadValue {
                        container: container.to_string(),
                        flag: format!("--{name}"),
                        value: v.clone(),
                        reason: "not a boolean".to_string(),
                    })?;
                    v
                }
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Value, Some(v)) => v,
                (FlagKind::Value, None) => {
                    let v = tokens.get(i).ok_or_else(|| CaptureError::MissingValue {
                        container: container.to_string(),
                        flag: token.to_string(),
                    })?;
                    i += 1;
                    v.clone()
                }
            };
            self.values.insert(name, value);
        }
        Ok(())
    }

    fn into_config(self, container: &str) -> Result<CaptureConfig, CaptureError> {
        let mut cfg = CaptureConfig::defaults(
            CaptureSource::InitContainer {
                container: container.to_string(),
            },
            false,
            ProxyRole::Sidecar,
        );
        let get = |name: &str| self.values.get(name).map(String::as_str);
        let bad = |name: &str, value: &str, reason: String| CaptureError::BadValue {
            container: container.to_string(),
            flag: format!("--{name}"),
            value: value.to_string(),
            reason,
        };
        let flag_bool = |name: &str| get(name).and_then(parse_go_bool).unwrap_or(false);
        let port = |name: &str, default: u16| -> Result<u16, CaptureError> {
            match get(name) {
                None | Some("") => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| bad(name, v, "not a port".to_string())),
            }
        };

        cfg.outbound_redirect_port = port("envoy-port", DEFAULT_OUTBOUND_REDIRECT_PORT)?;
        cfg.inbound_redirect_port = port("inbound-capture-port", DEFAULT_INBOUND_REDIRECT_PORT)?;
        cfg.inbound_tunnel_port = port("inbound-tunnel-port", DEFAULT_INBOUND_TUNNEL_PORT)?;

        if let Some(v) = get("proxy-uid").filter(|v| !v.is_empty()) {
            cfg.proxy_uids = parse_ids(v).map_err(|e| bad("proxy-uid", v, e))?;
        }
        cfg.proxy_gids = match get("proxy-gid").filter(|v| !v.is_empty()) {
            Some(v) => parse_ids(v).map_err(|e| bad("proxy-gid", v, e))?,
            // istio-iptables: "same default value as -u param".
            None => cfg.proxy_uids.clone(),
        };
        if let Some(v) = get("istio-inbound-interception-mode").filter(|v| !v.is_empty()) {
            cfg.interception_mode = match v {
                "REDIRECT" => InterceptionMode::Redirect,
                "TPROXY" => InterceptionMode::Tproxy,
                other => {
                    return Err(bad(
                        "istio-inbound-interception-mode",
                        other,
                        "expected REDIRECT or TPROXY".to_string(),
                    ))
                }
            };
        }
        // istio-iptables with no -i captures no outbound traffic by address.
        cfg.include_outbound_ip_ranges = match get("istio-service-cidr") {
            Some(v) => parse_ip_ranges(v).map_err(|e| bad("istio-service-cidr", v, e))?,
            None => IpRanges::Only(Vec::new()),
        };
        if let Some(v) = get("istio-service-exclude-cidr") {
            if v.trim() == "*" {
                return Err(bad(
                    "istio-service-exclude-cidr",
                    v,
                    "istio-iptables refuses a wildcard exclusion".to_string(),
                ));
            }
            cfg.exclude_outbound_ip_ranges =
                parse_cidrs(v).map_err(|e| bad("istio-service-exclude-cidr", v, e))?;
        }
        if let Some(v) = get("istio-outbound-ports") {
            cfg.include_outbound_ports =
                parse_ports_or_wildcard(v).map_err(|e| bad("istio-outbound-ports", v, e))?;
        }
        if let Some(v) = get("istio-local-outbound-ports-exclude") {
            cfg.exclude_outbound_ports = parse_ports_or_wildcard(v)
                .map_err(|e| bad("istio-local-outbound-ports-exclude", v, e))?;
        }
        // istio-iptables with no -b captures no inbound traffic.
        cfg.include_inbound_ports = match get("istio-inbound-ports") {
            Some(v) => parse_port_selection(v).map_err(|e| bad("istio-inbound-ports", v, e))?,
            None => PortSelection::Only(Vec::new()),
        };
        if let Some(v) = get("istio-local-exclude-ports") {
            cfg.exclude_inbound_ports =
                parse_ports_or_wildcard(v).map_err(|e| bad("istio-local-exclude-ports", v, e))?;
        }
        if let Some(v) = get("istio-exclude-interfaces") {
            cfg.exclude_interfaces = split_list(v);
        }
        if let Some(v) = get("kube-virt-interfaces") {
            cfg.reroute_virtual_interfaces = split_list(v);
        }
        if let Some(v) = get("istio-inbound-tproxy-mark").filter(|v| !v.is_empty()) {
            cfg.tproxy_mark = v
                .trim()
                .parse()
                .map_err(|_| bad("istio-inbound-tproxy-mark", v, "not a number".to_string()))?;
        }
        if let Some(v) = get("istio-inbound-tproxy-route-table").filter(|v| !v.is_empty()) {
            cfg.tproxy_route_table = v.trim().parse().map_err(|_| {
                bad(
                    "istio-inbound-tproxy-route-table",
                    v,
                    "not a number".to_string(),
                )
            })?;
        }
        cfg.owner_groups = match (&self.owner_groups_include, &self.owner_groups_exclude) {
            (Some(inc), _) if !inc.trim().is_empty() && inc.trim() != "*" => {
                OwnerGroups::Only(split_list(inc))
            }
            (_, Some(exc)) => OwnerGroups::AllExcept(split_list(exc)),
            _ => OwnerGroups::AllExcept(Vec::new()),
        };
        cfg.dns_capture = flag_bool("redirect-dns");
        cfg.capture_all_dns = flag_bool("capture-all-dns");
        cfg.drop_invalid = flag_bool("drop-invalid");
        cfg.dual_stack = flag_bool("dual-stack");
        cfg.native_nftables = flag_bool("native-nftables");
        cfg.run_validation = flag_bool("run-validation");
        cfg.rules_skipped_by = ["dry-run", "skip-rule-apply", "cleanup-only"]
            .into_iter()
            .filter(|f| flag_bool(f))
            .map(|f| format!("--{f}"))
            .collect();
        cfg.rules_applied = cfg.rules_skipped_by.is_empty();
        Ok(cfg)
    }
}

fn parse_init_container(container: &Container) -> Result<CaptureConfig, CaptureError> {
    let mut flags = IptablesFlags::default();
    flags.apply_env(container)?;
    let tokens: Vec<String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .cloned()
        .collect();
    flags.parse_args(&container.name, &tokens)?;
    flags.into_config(&container.name)
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_ip_ranges(v: &str) -> Result<IpRanges, String> {
    if v.trim() == "*" {
        return Ok(IpRanges::All);
    }
    parse_cidrs(v).map(IpRanges::Only)
}

fn parse_cidrs(v: &str) -> Result<Vec<Cidr>, String> {
    split_list(v).iter().map(|s| s.parse()).collect()
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.trim()
        .parse::<u16>()
        .map_err(|_| format!("{s:?} is not a port number"))
}

/// A port list. A wildcard is refused: `istio-iptables` would pass `*` to `--dport` and fail.
fn parse_ports_or_wildcard(v: &str) -> Result<Vec<u16>, String> {
    if v.trim() == "*" {
        return Err("a wildcard is not a port list here".to_string());
    }
    split_list(v).iter().map(|s| parse_port(s)).collect()
}

fn parse_port_selection(v: &str) -> Result<PortSelection, String> {
    if v.trim() == "*" {
        return Ok(PortSelection::All);
    }
    split_list(v)
        .iter()
        .map(|s| parse_port(s))
        .collect::<Result<Vec<_>, _>>()
        .map(PortSelection::Only)
}

fn parse_ids(v: &str) -> Result<Vec<i64>, String> {
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

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn parses_default_injection_args() {
        let cfg = CaptureConfig::from_istio_iptables_args(
            "istio-init",
            &args(&[
                "istio-iptables",
                "-p",
                "15001",
                "-z",
                "15006",
                "-u",
                "1337",
                "-m",
                "REDIRECT",
                "-i",
                "*",
                "-x",
                "",
                "-b",
                "*",
                "-d",
                "15090,15021,15020",
                "--log_output_level=default:info",
            ]),
        )
        .unwrap();
        assert_eq!(cfg.proxy_uids, vec![1337]);
        assert_eq!(cfg.proxy_gids, vec![1337]);
        assert_eq!(cfg.interception_mode, InterceptionMode::Redirect);
        assert_eq!(cfg.include_outbound_ip_ranges, IpRanges::All);
        assert!(cfg.exclude_outbound_ip_ranges.is_empty());
        assert_eq!(cfg.exclude_inbound_ports, vec![15090, 15021, 15020]);
        assert!(cfg.rules_applied);
        assert!(cfg.outbound_narrowings().is_empty());
    }

    #[test]
    fn gid_defaults_to_uid_and_flags_take_all_syntaxes() {
        let cfg = CaptureConfig::from_istio_iptables_args(
            "istio-init",
            &args(&[
                "--proxy-uid=1234",
                "-i=*",
                "-x10.0.0.0/8",
                "--istio-local-outbound-ports-exclude",
                "443",
            ]),
        )
        .unwrap();
        assert_eq!(cfg.proxy_uids, vec![1234]);
        assert_eq!(cfg.proxy_gids, vec![1234]);
        assert_eq!(
            cfg.exclude_outbound_ip_ranges,
            vec!["10.0.0.0/8".parse().unwrap()]
        );
        assert_eq!(cfg.exclude_outbound_ports, vec![443]);
        assert_eq!(
            cfg.outbound_narrowings(),
            vec![
                Narrowing::ExcludedRanges {
                    ranges: vec!["10.0.0.0/8".parse().unwrap()]
                },
                Narrowing::ExcludedPorts { ports: vec![443] }
            ]
        );
    }

    #[test]
    fn unknown_and_incomplete_args_are_errors() {
        let err =
            CaptureConfig::from_istio_iptables_args("istio-init", &args(&["my", "custom", "args"]))
                .unwrap_err();
        assert_eq!(
            err,
            CaptureError::UnknownArg {
                container: "istio-init".into(),
                arg: "my".into()
            }
        );
        let err =
            CaptureConfig::from_istio_iptables_args("istio-init", &args(&["-p"])).unwrap_err();
        assert!(matches!(err, CaptureError::MissingValue { .. }));
        let err = CaptureConfig::from_istio_iptables_args("istio-init", &args(&["-u", "proxy"]))
            .unwrap_err();
        assert!(matches!(err, CaptureError::BadValue { .. }));
        let err =
            CaptureConfig::from_istio_iptables_args("istio-init", &args(&["--bogus"])).unwrap_err();
        assert!(matches!(err, CaptureError::UnknownArg { .. }));
        let err =
            CaptureConfig::from_istio_iptables_args("istio-init", &args(&["-x", "*"])).unwrap_err();
        assert!(matches!(err, CaptureError::BadValue { .. }));
    }

    #[test]
    fn dry_run_and_empty_include_are_narrowings() {
        let cfg = CaptureConfig::from_istio_iptables_args(
            "istio-init",
            &args(&["-i", "", "-q", "443", "-n"]),
        )
        .unwrap();
        assert!(!cfg.rules_applied);
        let n = cfg.outbound_narrowings();
        assert!(matches!(n[0], Narrowing::RulesNotApplied { .. }));
        assert_eq!(
            n[1],
            Narrowing::IncludedRangesOnly {
                ranges: vec![],
                still_captured_ports: vec![443]
            }
        );
    }

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
