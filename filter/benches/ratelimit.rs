//! Cost of one rate-limit decision against the in-memory CAS store (the shared-data calls of
//! the real host come on top; the host benchmark measures them).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

use egress_filter::ratelimit::{
    BucketKey, BucketParams, KeyAttribute, MemoryStore, RateLimitSpec, RateLimiter,
};

const SEC: u64 = 1_000_000_000;

fn limiter(name: &str, max_tokens: u32) -> RateLimiter {
    RateLimiter::new(RateLimitSpec {
        name: name.into(),
        key: vec![KeyAttribute::SourcePrincipal, KeyAttribute::DestinationHost],
        params: BucketParams {
            max_tokens,
            tokens_per_fill: max_tokens,
            fill_interval_ns: SEC,
        },
        max_keys: 10_000,
    })
}

fn decisions(c: &mut Criterion) {
    let store = MemoryStore::new();
    let allowing = limiter("allowing", u32::MAX);
    let limiting = limiter("limiting", 1);
    let lookup = |attr: &KeyAttribute| match attr {
        KeyAttribute::SourcePrincipal => Some("spiffe://cluster.local/ns/shop/sa/checkout"),
        KeyAttribute::DestinationHost => Some("api.example.com"),
        _ => None,
    };
    let key = allowing.bucket_key(lookup);
    let mut now = 1_700_000_000 * SEC;
    c.bench_function("ratelimit_bucket_key", |b| {
        b.iter(|| black_box(allowing.bucket_key(lookup)))
    });
    c.bench_function("ratelimit_check_allowed", |b| {
        b.iter(|| {
            now += 1;
            black_box(allowing.check(&store, black_box(&key), now))
        })
    });
    c.bench_function("ratelimit_check_limited", |b| {
        b.iter(|| black_box(limiting.check(&store, black_box(&key), now)))
    });
    // Ten limits on one request, each its own bucket (the "10 limits" case, natively).
    let ten: Vec<RateLimiter> = (0..10)
        .map(|i| limiter(&format!("l{i}"), u32::MAX))
        .collect();
    c.bench_function("ratelimit_ten_limits_allowed", |b| {
        b.iter(|| {
            now += 1;
            for l in &ten {
                black_box(l.check(&store, &key, now));
            }
        })
    });
    // A full set (8 keyed buckets, 128-byte keys) makes the value to decode and encode largest.
    let wide = limiter("wide", u32::MAX);
    let long_keys: Vec<BucketKey> = (0..100_000)
        .map(|i| BucketKey::from_values([Some(format!("{i:0>124}"))]))
        .collect();
    for k in &long_keys {
        wide.check(&store, k, now);
    }
    let k0 = &long_keys[0];
    c.bench_function("ratelimit_check_full_set_long_keys", |b| {
        b.iter(|| {
            now += 1;
            black_box(wide.check(&store, black_box(k0), now))
        })
    });
}

criterion_group!(benches, decisions);
criterion_main!(benches);
