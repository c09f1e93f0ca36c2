//! The configuration model: plain structs read from JSON by [`super::read`], each object strict
//! about its fields (unknown ones are refused).

use super::error::{ConfigError, ConfigErrorKind, ConfigPath};
use super::json::Json;
use super::read::ObjectReader;

/// The whole pluginConfig; any other top-level key is refused as unknown.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub policies: Vec<PolicySpec>,
    /// `None`: plain `policies` with Istio semantics (the two keys exclude each other).
    pub tiers: Option<super::tiers::TiersSpec>,
    pub rate_limits: Vec<crate::ratelimit::RateLimitConfig>,
    /// `None`: no protocol checks.
    pub protocol: Option<crate::protocol::ProtocolConfig>,
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

/// A string value that may also be written as a JSON integer (`ports: [443]` as well as
/// `ports: ["443"]`), since YAML-to-JSON conversion of a pluginConfig often yields numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    pub text: String,
    pub was_number: bool,
}

impl Scalar {
    pub fn text(text: &str) -> Self {
        Self {
            text: text.to_string(),
            was_number: false,
        }
    }

    /// The value as it appeared in the document, for error messages.
    pub fn quoted(&self) -> String {
        if self.was_number {
            self.text.clone()
        } else {
            crate::text::quote(&self.text)
        }
    }
}

impl Config {
    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(
            value,
            path,
            &["policies", "rateLimits", "protocol", "tiers"],
        )?;
        let policies = obj.list("policies", PolicySpec::read)?;
        let tiers = obj.object("tiers", super::tiers::TiersSpec::read)?;
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
        spec.priority = obj.object("priority", super::tiers::read_priority)?;
        spec.subject = obj.object("subject", super::tiers::read_subject)?;
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
