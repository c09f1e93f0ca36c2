//! egress-controller: compiles `ClusterEgressPolicy` and `EgressPolicy` objects
//! (`policy.egress-guard.dev/v1alpha1`) into the egress filter's WasmPlugin `pluginConfig`.
//!
//! The compiler ([`compile`]) and the shadow analysis ([`shadow`]) are pure; the in-cluster
//! controller ([`controller`]) watches the policies and Namespaces, recompiles on every change,
//! writes the WasmPlugins with server-side apply and reports status on every policy.

pub mod api_calls;
pub mod compile;
pub mod controller;
pub mod input;
pub mod lease;
pub mod metrics;
pub mod resources;
pub mod selector;
pub mod server;
pub mod shadow;
pub mod status;
pub mod wasmplugin;

pub use api_calls::{ApiCall, API_CALLS};
