//! The configuration model: plain structs read from JSON by [`super::read`], each object strict
//! about its fields (unknown ones are refused).

use super::error::{ConfigError, ConfigPath};
use super::json::Json;
use super::read::{ObjectReader, Scalar};

/// The whole pluginConfig; any other top-level key is refused as unknown.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub policies: Vec<PolicySpec>,
    pub rate_limits: Vec<crate::ratelimit::RateLimitConfig>,
    /// `None`: no protocol checks.
    pub protocol: Option<crate::protocol::ProtocolConfig>,
}

/// One AuthorizationPolicy: a name plus the fields of its `spec` that apply to the egress gateway.
#[derive(Debug, Clone, Default)]
pub struct PolicySpec {
    pub name: String,
    /// `ALLOW` (default), `DENY` or `AUDIT`.
    pub action: Option<String>,
    /// Absent or empty: the policy never matches.
    pub rules: Option<Vec<RuleSpec>>,
    /// Evaluated and logged, never enforced (Istio's `istio.io/dry-run` annotation).
    pub dry_run: bool,
}

/// `spec.rules[]` of an AuthorizationPolicy. Also the shape of other rule-like sections.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub from: Option<Vec<FromSpec>>,
    pub to: Option<Vec<ToSpec>>,
    pub when: Option<Vec<ConditionSpec>>,
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
        let mut obj = ObjectReader::new(value, path, &["policies", "rateLimits", "protocol"])?;
        let config = Self {
            policies: obj.list("policies", PolicySpec::read)?.unwrap_or_default(),
            rate_limits: obj
                .list("rateLimits", crate::ratelimit::RateLimitConfig::read)?
                .unwrap_or_default(),
            protocol: obj.object("protocol", crate::protocol::ProtocolConfig::read)?,
        };
        obj.finish()?;
        Ok(config)
    }
}

impl PolicySpec {
    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, &["name", "action", "rules", "dryRun"])?;
        let spec = Self {
            name: obj.required_string("name")?,
            action: obj.string("action")?,
            rules: obj.list("rules", RuleSpec::read)?,
            dry_run: obj.bool("dryRun")?.unwrap_or(false),
        };
        obj.finish()?;
        Ok(spec)
    }
}

impl RuleSpec {
    /// Reads one rule; the shape of `spec.rules[]` in an AuthorizationPolicy.
    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, &["from", "to", "when"])?;
        let spec = Self {
            from: obj.list("from", FromSpec::read)?,
            to: obj.list("to", ToSpec::read)?,
            when: obj.list("when", ConditionSpec::read)?,
        };
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
        let spec = Self {
            principals: obj.strings("principals")?,
            not_principals: obj.strings("notPrincipals")?,
            namespaces: obj.strings("namespaces")?,
            not_namespaces: obj.strings("notNamespaces")?,
            ip_blocks: obj.strings("ipBlocks")?,
            not_ip_blocks: obj.strings("notIpBlocks")?,
            remote_ip_blocks: obj.strings("remoteIpBlocks")?,
            not_remote_ip_blocks: obj.strings("notRemoteIpBlocks")?,
            request_principals: obj.strings("requestPrincipals")?,
            not_request_principals: obj.strings("notRequestPrincipals")?,
            service_accounts: obj.strings("serviceAccounts")?,
            not_service_accounts: obj.strings("notServiceAccounts")?,
            trust_domains: obj.strings("trustDomains")?,
            not_trust_domains: obj.strings("notTrustDomains")?,
        };
        obj.finish()?;
        Ok(spec)
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
        let spec = Self {
            hosts: obj.strings("hosts")?,
            not_hosts: obj.strings("notHosts")?,
            ports: obj.scalars("ports")?,
            not_ports: obj.scalars("notPorts")?,
            methods: obj.strings("methods")?,
            not_methods: obj.strings("notMethods")?,
            paths: obj.strings("paths")?,
            not_paths: obj.strings("notPaths")?,
        };
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
