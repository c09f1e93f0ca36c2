use std::fmt;

use crate::text::quote;

/// Where in the pluginConfig document something is: `policies[2].rules[0].to[0].operation.ports[1]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigPath(String);

impl ConfigPath {
    pub fn root() -> Self {
        Self(String::new())
    }

    #[inline(never)]
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_string())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    #[inline(never)]
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        if self.0.is_empty() {
            "$"
        } else {
            &self.0
        }
    }
}

impl fmt::Display for ConfigPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every way a pluginConfig can be wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrorKind {
    #[error("configuration is empty")]
    Empty,
    #[error("{0}")]
    Syntax(String),
    #[error("policy name must not be empty")]
    EmptyName,
    #[error("policy name {} may only contain letters, digits, `-` and `_` (at most 128); it becomes part of metric names", quote(.0))]
    InvalidName(String),
    #[error("policy name {}: {}", quote(.0), .1)]
    NameRewrittenByStatsTags(String, String),
    #[error("duplicate policy name {}", quote(.0))]
    DuplicateName(String),
    #[error("policy name {} gives the same Prometheus metric as {} (`-` becomes `_`)", quote(.0), quote(.1))]
    MetricNameClash(String, String),
    #[error("action {} is not supported; use ALLOW, DENY or AUDIT", quote(.0))]
    UnsupportedAction(String),
    #[error("action {} is not one of ALLOW, DENY, AUDIT", quote(.0))]
    InvalidAction(String),
    #[error(
        "a DENY policy without `rules` never matches; add an empty rule `{{}}` to deny everything"
    )]
    DenyWithoutRules,
    #[error("`{0}` must not be empty; leave it out to match anything")]
    EmptyList(&'static str),
    #[error("`{0}` must be set")]
    Missing(&'static str),
    #[error("`{0}` must not be empty")]
    EmptyObject(&'static str),
    #[error("empty value is not allowed")]
    EmptyValue,
    #[error("{0}")]
    InvalidValue(String),
    #[error("{0}")]
    InvalidPort(String),
    #[error("`{0}` is not supported by the egress filter")]
    Unsupported(String),
    #[error("at least one of `values` or `notValues` must be set for key {}", quote(.0))]
    WhenWithoutValues(String),
    #[error("unknown attribute {}; supported keys: request.headers[<name>], source.ip, remote.ip, source.namespace, source.principal, destination.ip, destination.port, connection.sni, connection.protocol, connection.tls_version, connection.alpn", quote(.0))]
    UnknownWhenKey(String),
    #[error("bad key {}: expected request.headers[<header name>]", quote(.0))]
    BadHeaderKey(String),
    /// A rule of `tiers` broken (the message says which).
    #[error("{0}")]
    Tiers(&'static str),
    /// A value of `tiers` that is not allowed: `{0}` then the quoted value, then `{2}`.
    #[error("{}{}{}", .0, quote(.1), .2)]
    TiersValue(&'static str, String, &'static str),
}

impl ConfigErrorKind {
    pub const POLICIES_WITH_TIERS: &'static str =
        "`policies` and `tiers` cannot be used together: put the policies in a tier";
    pub const PASS_OUTSIDE_ADMIN: &'static str =
        "PASS is only allowed in the admin tier (it hands the request to the namespace tier)";
    pub const NO_TIER_RULES: &'static str = "a tier policy needs at least one rule";
    pub const PRIORITY_TOO_HIGH: &'static str = "priority must be in 0..=1000";
    pub const RULE_LIMIT_WITH_MATCH: &'static str =
        "a rule's `rateLimit` applies to the requests the rule matches: it takes no `match`";
    pub const LIMIT_ON_DENY_RULE: &'static str =
        "a DENY rule cannot have a `rateLimit`: the requests it matches are denied";
}

/// A rejected configuration: the JSON path of the offending value and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {kind}")]
pub struct ConfigError {
    pub path: Box<ConfigPath>,
    pub kind: Box<ConfigErrorKind>,
}

impl ConfigError {
    #[inline(never)]
    pub fn new(path: ConfigPath, kind: ConfigErrorKind) -> Self {
        Self {
            path: Box::new(path),
            kind: Box::new(kind),
        }
    }
}
