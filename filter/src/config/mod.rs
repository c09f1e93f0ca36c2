//! The filter configuration: the WasmPlugin `pluginConfig`, delivered as JSON.
//!
//! `policies[].rules` has exactly the shape of `spec.rules` of Istio's `security.istio.io/v1`
//! AuthorizationPolicy. Deserialisation refuses unknown fields; the semantic checks (patterns,
//! CIDRs, ports, `when` keys, ...) happen while the policy is compiled, and every error carries a
//! JSON path into the document.

mod error;
mod model;

pub use error::{ConfigError, ConfigErrorKind, ConfigPath};
pub use model::{
    ConditionSpec, Config, FromSpec, OperationSpec, PolicySpec, RuleSpec, Scalar, SourceSpec,
    ToSpec,
};

/// Parses pluginConfig JSON into the model, locating syntax and shape errors.
pub fn parse_config(json: &[u8]) -> Result<Config, ConfigError> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::new(ConfigPath::root(), ConfigErrorKind::Empty));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let config: Config = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = ConfigPath::from_serde(err.path());
        ConfigError::new(path, ConfigErrorKind::Syntax(err.into_inner().to_string()))
    })?;
    deserializer.end().map_err(|err| {
        ConfigError::new(ConfigPath::root(), ConfigErrorKind::Syntax(err.to_string()))
    })?;
    Ok(config)
}
