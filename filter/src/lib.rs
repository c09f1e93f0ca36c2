//! egress-filter: the egress gateway's policy engine and its proxy-wasm glue.

pub mod protocol;
pub mod ratelimit;
