//! `tiers`: admin policies, then each source namespace's own policies, then baseline policies,
//! then a default (see docs/config.md, "Tiers"). Read strictly, like the rest of the document;
//! the policies are [`PolicySpec`]s read with their tier's field list.

use super::error::{ConfigError, ConfigErrorKind, ConfigPath};
use super::json::Json;
use super::model::PolicySpec;
use super::read::{read_u32, wrong_type, ObjectReader};

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
