//! The configuration model: plain structs read from JSON by [`super::read`], each object strict
//! about its fields (unknown ones are refused).

use super::error::{ConfigError, ConfigErrorKind, ConfigPath};
use super::json::Json;
use super::read::{read_u32, wrong_type, ObjectReader, Scalar};

/// The whole pluginConfig; any other top-level key is refused as unknown.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub policies: Vec<PolicySpec>,
    /// `None`: plain `policies` with Istio semantics (the two keys exclude each other).
    pub tiers: Option<TiersSpec>,
    pub rate_limits: Vec<crate::ratelimit::RateLimitConfig>,
    /// `None`: no protocol checks.
    pub protocol: Option<crate::protocol::ProtocolConfig>,
    pub log: LogConfig,
}

/// `log`: what the filter writes about its decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// `allowed` (default `true`): a decision line for every allowed stream too. With `false`,
    /// an allowed stream without audit or dry-run matches writes no line; its decision is in
    /// filter state for Envoy's access log, and only what the decision needs is read.
    pub allowed: bool,
    /// `filterState` (default `true`): every decision is set as the stream's filter state
    /// `wasm.egress_guard.decision`, which Envoy's access log prints with
    /// `%FILTER_STATE(wasm.egress_guard.decision:PLAIN)%`.
    pub filter_state: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            allowed: true,
            filter_state: true,
        }
    }
}

impl LogConfig {
    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, &["allowed", "filterState"])?;
        let default = Self::default();
        let config = Self {
            allowed: obj.bool("allowed")?.unwrap_or(default.allowed),
            filter_state: obj.bool("filterState")?.unwrap_or(default.filter_state),
        };
        obj.finish()?;
        Ok(config)
    }
}

/// One AuthorizationPolicy: a name plus the fields of its `spec` that apply to the egress gateway.
/// Also the shape of the policies of `tiers` (one model, read with each shape's field list).
#[derive(Debug, Clone, Default)]
pub struct PolicySpec {
    pub name: String,
    /// `ALLOW` (default), `DENY` or `AUDIT`. Not a field of admin and baseline policies.
    pub action: Option<String>,
    /// Absent or empty: the policy never matches.
    pub rules: Option<Vec<RuleSpec>>,
    /// Evaluated and logged, never enforced (Istio's `istio.io/dry-run` annotation).
    pub dry_run: bool,
    /// `tiers` only: limits on finally allowed requests (see docs/config.md, "Tiers").
    pub rate_limits: Vec<crate::ratelimit::RateLimitConfig>,
    /// Admin and baseline policies only (required there): `0..=1000`, lower first.
    pub priority: Option<u16>,
    /// Admin and baseline policies only: the source namespaces it applies to; `None`: every
    /// source, with or without a principal.
    pub subject: Option<Vec<String>>,
}

/// `spec.rules[]` of an AuthorizationPolicy. Also the shape of other rule-like sections, and of
/// the rules of admin and baseline policies (which add `name`, `action` and `rateLimit`).
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub from: Option<Vec<FromSpec>>,
    pub to: Option<Vec<ToSpec>>,
    pub when: Option<Vec<ConditionSpec>>,
    pub name: Option<String>,
    /// `ALLOW`, `DENY` or `PASS` (admin and baseline rules, required there).
    pub action: Option<String>,
    /// A limit on the requests this rule matched once finally allowed; it has no `match`
    /// (boxed: a limit's `match` is a rule).
    pub rate_limit: Option<Box<crate::ratelimit::RateLimitConfig>>,
}

#[derive(Debug, Clone, Default)]
pub struct FromSpec {
    pub source: Option<SourceSpec>,
}

#[derive(Debug, Clone, Default)]
pub struct SourceSpec {
    pub principals: Option<Vec<String>>,
    pub not_principals: Option<Vec<String>>,
    pub namespaces: Option<Vec<String>>,
    pub not_namespaces: Option<Vec<String>>,
    pub ip_blocks: Option<Vec<String>>,
    pub not_ip_blocks: Option<Vec<String>>,
    pub remote_ip_blocks: Option<Vec<String>>,
    pub not_remote_ip_blocks: Option<Vec<String>>,
    // Istio fields the egress filter cannot evaluate; read so the error can say so instead of
    // calling them unknown.
    pub request_principals: Option<Vec<String>>,
    pub not_request_principals: Option<Vec<String>>,
    pub service_accounts: Option<Vec<String>>,
    pub not_service_accounts: Option<Vec<String>>,
    pub trust_domains: Option<Vec<String>>,
    pub not_trust_domains: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct ToSpec {
    pub operation: Option<OperationSpec>,
}

#[derive(Debug, Clone, Default)]
pub struct OperationSpec {
    pub hosts: Option<Vec<String>>,
    pub not_hosts: Option<Vec<String>>,
    pub ports: Option<Vec<Scalar>>,
    pub not_ports: Option<Vec<Scalar>>,
    pub methods: Option<Vec<String>>,
    pub not_methods: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub not_paths: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct ConditionSpec {
    pub key: String,
    pub values: Option<Vec<Scalar>>,
    pub not_values: Option<Vec<Scalar>>,
}

impl Config {
    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(
            value,
            path,
            &["policies", "rateLimits", "protocol", "tiers", "log"],
        )?;
        let policies = obj.list("policies", PolicySpec::read)?;
        let tiers = obj.object("tiers", TiersSpec::read)?;
        if policies.is_some() && tiers.is_some() {
            return Err(ConfigError::new(
                path.clone(),
                ConfigErrorKind::Tiers(ConfigErrorKind::POLICIES_WITH_TIERS),
            ));
        }
        let mut config = Self {
            policies: policies.unwrap_or_default(),
            tiers,
            ..Self::default()
        };
        config.rate_limits = obj
            .list("rateLimits", crate::ratelimit::RateLimitConfig::read)?
            .unwrap_or_default();
        config.protocol = obj.object("protocol", crate::protocol::ProtocolConfig::read)?;
        config.log = obj.object("log", LogConfig::read)?.unwrap_or_default();
        obj.finish()?;
        Ok(config)
    }
}

impl PolicySpec {
    const FIELDS: &'static [&'static str] = &["name", "action", "rules", "dryRun"];
    const NAMESPACED_FIELDS: &'static [&'static str] =
        &["name", "action", "rules", "dryRun", "rateLimits"];
    const TIER_FIELDS: &'static [&'static str] = &[
        "name",
        "priority",
        "subject",
        "dryRun",
        "rules",
        "rateLimits",
    ];

    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        Self::read_as(value, path, Self::FIELDS)
    }

    /// A policy of `tiers.namespaces.<ns>`: a round-1 policy plus `rateLimits`.
    pub fn read_namespaced(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        Self::read_as(value, path, Self::NAMESPACED_FIELDS)
    }

    /// A policy of `tiers.admin` or `tiers.baseline`.
    pub fn read_tier(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        Self::read_as(value, path, Self::TIER_FIELDS)
    }

    /// Reads the fields in `known` (the others are refused as unknown).
    #[inline(never)]
    fn read_as(
        value: &Json,
        path: &ConfigPath,
        known: &'static [&'static str],
    ) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, known)?;
        let read_rule: fn(&Json, &ConfigPath) -> Result<RuleSpec, ConfigError> =
            if known == Self::TIER_FIELDS {
                RuleSpec::read_tier
            } else {
                RuleSpec::read
            };
        // Field by field into one value: an error drops it whole (one drop routine in the
        // `.wasm`, not one per field read so far).
        let mut spec = Self {
            name: obj.required_string("name")?,
            ..Self::default()
        };
        spec.action = obj.string("action")?;
        spec.rules = obj.list("rules", read_rule)?;
        spec.dry_run = obj.bool("dryRun")?.unwrap_or(false);
        spec.rate_limits = obj
            .list("rateLimits", crate::ratelimit::RateLimitConfig::read)?
            .unwrap_or_default();
        spec.priority = obj.object("priority", read_priority)?;
        spec.subject = obj.object("subject", read_subject)?;
        obj.finish()?;
        Ok(spec)
    }
}

impl RuleSpec {
    const FIELDS: &'static [&'static str] = &["from", "to", "when"];
    const TIER_FIELDS: &'static [&'static str] =
        &["name", "action", "from", "to", "when", "rateLimit"];

    /// Reads one rule; the shape of `spec.rules[]` in an AuthorizationPolicy.
    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        Self::read_as(value, path, Self::FIELDS)
    }

    /// A rule of an admin or baseline policy.
    pub fn read_tier(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        Self::read_as(value, path, Self::TIER_FIELDS)
    }

    #[inline(never)]
    fn read_as(
        value: &Json,
        path: &ConfigPath,
        known: &'static [&'static str],
    ) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, known)?;
        let mut spec = Self {
            from: obj.list("from", FromSpec::read)?,
            ..Self::default()
        };
        spec.to = obj.list("to", ToSpec::read)?;
        spec.when = obj.list("when", ConditionSpec::read)?;
        spec.name = obj.string("name")?;
        spec.action = obj.string("action")?;
        spec.rate_limit = obj.object("rateLimit", |v, p| {
            crate::ratelimit::RateLimitConfig::read(v, p).map(Box::new)
        })?;
        if spec
            .rate_limit
            .as_ref()
            .is_some_and(|l| l.match_rule.is_some())
        {
            return Err(ConfigError::new(
                path.field("rateLimit").field("match"),
                ConfigErrorKind::Tiers(ConfigErrorKind::RULE_LIMIT_WITH_MATCH),
            ));
        }
        obj.finish()?;
        Ok(spec)
    }
}

impl FromSpec {
    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, &["source"])?;
        let source = match obj.take("source") {
            Some((v, p)) => Some(SourceSpec::read(v, &p)?),
            None => None,
        };
        obj.finish()?;
        Ok(Self { source })
    }
}

impl SourceSpec {
    const FIELDS: &'static [&'static str] = &[
        "principals",
        "notPrincipals",
        "requestPrincipals",
        "notRequestPrincipals",
        "namespaces",
        "notNamespaces",
        "serviceAccounts",
        "notServiceAccounts",
        "ipBlocks",
        "notIpBlocks",
        "remoteIpBlocks",
        "notRemoteIpBlocks",
        "trustDomains",
        "notTrustDomains",
    ];

    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, Self::FIELDS)?;
        // One loop over the fields rather than fourteen calls: smaller `.wasm`.
        let mut fields: [Option<Vec<String>>; 14] = Default::default();
        for (slot, name) in fields.iter_mut().zip(Self::FIELDS) {
            *slot = obj.strings(name)?;
        }
        obj.finish()?;
        let [principals, not_principals, request_principals, not_request_principals, namespaces, not_namespaces, service_accounts, not_service_accounts, ip_blocks, not_ip_blocks, remote_ip_blocks, not_remote_ip_blocks, trust_domains, not_trust_domains] =
            fields;
        Ok(Self {
            principals,
            not_principals,
            namespaces,
            not_namespaces,
            ip_blocks,
            not_ip_blocks,
            remote_ip_blocks,
            not_remote_ip_blocks,
            request_principals,
            not_request_principals,
            service_accounts,
            not_service_accounts,
            trust_domains,
            not_trust_domains,
        })
    }
}

impl ToSpec {
    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, &["operation"])?;
        let operation = match obj.take("operation") {
            Some((v, p)) => Some(OperationSpec::read(v, &p)?),
            None => None,
        };
        obj.finish()?;
        Ok(Self { operation })
    }
}

impl OperationSpec {
    const FIELDS: &'static [&'static str] = &[
        "hosts",
        "notHosts",
        "ports",
        "notPorts",
        "methods",
        "notMethods",
        "paths",
        "notPaths",
    ];

    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, Self::FIELDS)?;
        let mut spec = Self {
            hosts: obj.strings("hosts")?,
            ..Self::default()
        };
        spec.not_hosts = obj.strings("notHosts")?;
        spec.ports = obj.scalars("ports")?;
        spec.not_ports = obj.scalars("notPorts")?;
        spec.methods = obj.strings("methods")?;
        spec.not_methods = obj.strings("notMethods")?;
        spec.paths = obj.strings("paths")?;
        spec.not_paths = obj.strings("notPaths")?;
        obj.finish()?;
        Ok(spec)
    }
}

impl ConditionSpec {
    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, &["key", "values", "notValues"])?;
        let spec = Self {
            key: obj.required_string("key")?,
            values: obj.scalars("values")?,
            not_values: obj.scalars("notValues")?,
        };
        obj.finish()?;
        Ok(spec)
    }
}

// `tiers` (see docs/config.md, "Tiers"): admin policies, then each source namespace's own
// policies, then baseline policies, then a default. The policies are `PolicySpec`s read with
// their tier's field list.

#[derive(Debug, Clone, Default)]
pub struct TiersSpec {
    pub admin: Vec<PolicySpec>,
    /// Source namespace → its policies, in document order.
    pub namespaces: Vec<(String, Vec<PolicySpec>)>,
    pub baseline: Vec<PolicySpec>,
    /// `ALLOW` or `DENY`; absent: `DENY`.
    pub default: Option<String>,
}

/// RFC 1123 label, as Kubernetes requires of namespace names.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    bytes.len() <= 63
        && edge(bytes.first())
        && edge(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[inline(never)]
fn check_dns_label(name: &str, path: &ConfigPath) -> Result<(), ConfigError> {
    if is_dns_label(name) {
        return Ok(());
    }
    Err(ConfigError::new(
        path.clone(),
        ConfigErrorKind::TiersValue(
            "namespace ",
            name.to_string(),
            " is not a DNS label (RFC 1123: at most 63 lower-case letters, digits and `-`, \
             starting and ending with a letter or digit)",
        ),
    ))
}

/// `priority`: an integer in `0..=1000`.
pub fn read_priority(value: &Json, path: &ConfigPath) -> Result<u16, ConfigError> {
    match read_u32(value, path)? {
        p @ 0..=1000 => Ok(p as u16),
        _ => Err(ConfigError::new(
            path.clone(),
            ConfigErrorKind::Tiers(ConfigErrorKind::PRIORITY_TOO_HIGH),
        )),
    }
}

/// `subject: {"namespaces": [...]}`, namespaces being DNS labels.
pub fn read_subject(value: &Json, path: &ConfigPath) -> Result<Vec<String>, ConfigError> {
    let mut obj = ObjectReader::new(value, path, &["namespaces"])?;
    let namespaces = obj.strings("namespaces")?;
    // A misspelt field is reported as such, not as a missing `namespaces`.
    obj.finish()?;
    let namespaces = namespaces.ok_or_else(|| {
        ConfigError::new(
            path.clone(),
            ConfigErrorKind::Syntax("missing field `namespaces`".to_string()),
        )
    })?;
    let list = path.field("namespaces");
    for (i, name) in namespaces.iter().enumerate() {
        check_dns_label(name, &list.index(i))?;
    }
    Ok(namespaces)
}

impl TiersSpec {
    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj =
            ObjectReader::new(value, path, &["admin", "namespaces", "baseline", "default"])?;
        let mut tiers = Self::default();
        if let Some(admin) = obj.list("admin", PolicySpec::read_tier)? {
            tiers.admin = admin;
        }
        if let Some(namespaces) = obj.object("namespaces", read_namespaces)? {
            tiers.namespaces = namespaces;
        }
        if let Some(baseline) = obj.list("baseline", PolicySpec::read_tier)? {
            tiers.baseline = baseline;
        }
        tiers.default = obj.string("default")?;
        if let Some(text) = tiers
            .default
            .as_deref()
            .filter(|d| !matches!(*d, "ALLOW" | "DENY"))
        {
            return Err(ConfigError::new(
                path.field("default"),
                ConfigErrorKind::TiersValue(
                    "default ",
                    text.to_string(),
                    " is not one of ALLOW, DENY",
                ),
            ));
        }
        obj.finish()?;
        Ok(tiers)
    }
}

#[inline(never)]
fn read_namespaces(
    value: &Json,
    path: &ConfigPath,
) -> Result<Vec<(String, Vec<PolicySpec>)>, ConfigError> {
    let Json::Object(members) = value else {
        return Err(wrong_type(path, "an object", value));
    };
    let mut namespaces = Vec::with_capacity(members.len());
    for (key, value) in members {
        let here = path.field(key);
        check_dns_label(key, &here)?;
        let Json::Array(items) = value else {
            return Err(wrong_type(&here, "a list", value));
        };
        let mut policies = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            policies.push(PolicySpec::read_namespaced(item, &here.index(i))?);
        }
        namespaces.push((key.clone(), policies));
    }
    Ok(namespaces)
}
