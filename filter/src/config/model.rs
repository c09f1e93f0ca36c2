use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The whole pluginConfig. Later sections (rate limits, protocol checks) become further fields
/// here; until then any other top-level key is refused as unknown.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub policies: Vec<PolicySpec>,
}

/// One AuthorizationPolicy: a name plus the fields of its `spec` that apply to the egress gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    pub name: String,
    /// `ALLOW` (default), `DENY` or `AUDIT`.
    #[serde(default)]
    pub action: Option<String>,
    /// Absent or empty: the policy never matches.
    #[serde(default)]
    pub rules: Option<Vec<RuleSpec>>,
    /// Evaluated and logged, never enforced (Istio's `istio.io/dry-run` annotation).
    #[serde(default)]
    pub dry_run: bool,
}

/// `spec.rules[]` of an AuthorizationPolicy. Also the shape of other rule-like sections.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleSpec {
    #[serde(default)]
    pub from: Option<Vec<FromSpec>>,
    #[serde(default)]
    pub to: Option<Vec<ToSpec>>,
    #[serde(default)]
    pub when: Option<Vec<ConditionSpec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FromSpec {
    #[serde(default)]
    pub source: Option<SourceSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceSpec {
    pub principals: Option<Vec<String>>,
    pub not_principals: Option<Vec<String>>,
    pub namespaces: Option<Vec<String>>,
    pub not_namespaces: Option<Vec<String>>,
    pub ip_blocks: Option<Vec<String>>,
    pub not_ip_blocks: Option<Vec<String>>,
    pub remote_ip_blocks: Option<Vec<String>>,
    pub not_remote_ip_blocks: Option<Vec<String>>,
    // Istio fields the egress filter cannot evaluate; accepted by the parser so the error can
    // say so instead of calling them unknown.
    pub request_principals: Option<Vec<String>>,
    pub not_request_principals: Option<Vec<String>>,
    pub service_accounts: Option<Vec<String>>,
    pub not_service_accounts: Option<Vec<String>>,
    pub trust_domains: Option<Vec<String>>,
    pub not_trust_domains: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ToSpec {
    #[serde(default)]
    pub operation: Option<OperationSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConditionSpec {
    pub key: String,
    #[serde(default)]
    pub values: Option<Vec<Scalar>>,
    #[serde(default)]
    pub not_values: Option<Vec<Scalar>>,
}

/// A string value that may also be written as a JSON number (`ports: [443]` as well as
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

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::text(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar {
                    text: v.to_string(),
                    was_number: true,
                })
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar {
                    text: v.to_string(),
                    was_number: true,
                })
            }

        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}
