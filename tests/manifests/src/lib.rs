//! Packaging of the egress filter as an Istio Wasm OCI image, and the checks that keep the
//! `istio/` and `deploy/` manifests valid: CRD schema validation and the image pins.

#![forbid(unsafe_code)]

pub mod oci;
pub mod pins;
pub mod schema;
pub mod yaml;
