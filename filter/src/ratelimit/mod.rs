//! Token-bucket rate limits whose buckets live in a compare-and-swap store (proxy-wasm shared
//! data), so one limit holds across every worker of the gateway.
//!
//! Flow: `rateLimits` JSON → [`RateLimitConfig`] → [`RateLimitConfig::validate`] →
//! [`RateLimitSpec`] → [`RateLimiter`]. Per request: [`RateLimiter::bucket_key`] from the
//! request's attributes, then [`RateLimiter::check`] against the [`CasStore`] with the host time,
//! giving a [`RateLimitDecision`] (allowed or not, response headers, which bucket).

pub mod bucket;
pub mod config;
pub mod global;
pub mod limiter;
pub mod store;

pub use bucket::BucketState;
pub use config::{
    global_limit_not_top_level, name_already_used, parse_duration, BucketParams, ConfigError,
    KeyAttribute, RateLimitConfig, RateLimitSpec, DEFAULT_MAX_KEYS, MIN_FILL_INTERVAL_NS,
};
pub use global::{FailureMode, GlobalHit, GlobalLimit, GlobalResult, RlsError};
pub use limiter::{
    BucketKey, BucketRef, RateLimitDecision, RateLimitOutcome, RateLimiter, CREATE_CAS,
    DEFAULT_MAX_CAS_ATTEMPTS, DEFAULT_STORE_PREFIX, SET_WAYS,
};
pub use store::{CasMismatch, CasStore, MemoryStore};
