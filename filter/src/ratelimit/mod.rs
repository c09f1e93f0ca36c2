//! Token-bucket rate limits whose buckets live in a compare-and-swap store (proxy-wasm shared data).
