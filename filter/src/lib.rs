//! egress-filter: the egress gateway's policy engine and its proxy-wasm glue.
//!
//! The engine (configuration, matchers, Istio AuthorizationPolicy evaluation, attribute
//! gathering, decision log) is plain Rust that runs natively in tests and benchmarks; the
//! proxy-wasm contexts in `wasm` (wasm32 only) gather attributes, ask the engine and act.

#![deny(unsafe_code)]

pub mod attributes;
pub mod config;
pub mod gather;
pub mod log;
pub mod matchers;
pub mod metrics;
pub mod normalize;
pub mod policy;
pub mod protocol;
pub mod ratelimit;
pub mod text;

#[cfg(target_arch = "wasm32")]
mod wasm;

pub use attributes::{Attributes, HttpAttributes, RequestHead, TrafficKind};
pub use config::{ConfigError, ConfigPath};
pub use policy::{CompiledPolicy, Decision, PolicyAction, Reason, Verdict};

/// Everything the filter compiles from one pluginConfig. Further sections of the configuration
/// (rate limits, protocol checks) add their compiled form here.
#[derive(Debug, Clone, Default)]
pub struct CompiledConfig {
    pub policy: CompiledPolicy,
}

impl CompiledConfig {
    /// Parses, validates and compiles pluginConfig JSON; the error names the offending value.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let config = config::parse_config(json)?;
        let policy =
            CompiledPolicy::compile(&config.policies, &ConfigPath::root().field("policies"))?;
        Ok(Self { policy })
    }
}
