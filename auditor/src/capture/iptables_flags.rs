//! The capture settings as `istio-iptables` (the `istio-init` container) reads them: its flags,
//! long and short, and the environment variables it takes as flag defaults.

use k8s_openapi::api::core::v1::Container;

use super::model::*;
use crate::istio::ProxyRole;

impl CaptureConfig {
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

pub(super) fn parse_init_container(container: &Container) -> Result<CaptureConfig, CaptureError> {
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
}
