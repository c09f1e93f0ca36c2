//! The filter configuration: the WasmPlugin `pluginConfig`, delivered as JSON.
//!
//! `policies[].rules` has exactly the shape of `spec.rules` of Istio's `security.istio.io/v1`
//! AuthorizationPolicy. Reading refuses unknown fields; the semantic checks (patterns, CIDRs,
//! ports, `when` keys, ...) happen while the policy is compiled, and every error carries a JSON
//! path into the document.

mod error;
pub mod json;
mod model;
pub mod read;

pub use error::{ConfigError, ConfigErrorKind, ConfigPath};
pub use json::{Json, JsonWriter};
pub use model::{
    ConditionSpec, Config, FromSpec, LogConfig, OperationSpec, PolicySpec, RuleSpec, SourceSpec,
    TiersSpec, ToSpec,
};
pub use read::Scalar;

/// Parses pluginConfig JSON into the model, locating syntax and shape errors.
pub fn parse_config(json: &[u8]) -> Result<Config, ConfigError> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::new(ConfigPath::root(), ConfigErrorKind::Empty));
    }
    let document = json::parse(json)?;
    Config::read(&document, &ConfigPath::root())
}
