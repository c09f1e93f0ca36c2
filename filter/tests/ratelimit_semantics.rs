//! Token-bucket semantics of the rate limiter over the in-memory shared-data store.

use egress_filter::ratelimit::{
    BucketKey, BucketParams, BucketRef, CasStore, KeyAttribute, MemoryStore, RateLimitConfig,
    RateLimitDecision, RateLimitOutcome, RateLimitSpec, RateLimiter,
};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
/// A real-looking Unix time in ns that is a fill boundary for 1s, 10s and 60s intervals.
const T0: u64 = 1_700_000_040 * SEC;

fn limiter(
    max_tokens: u32,
    tokens_per_fill: u32,
    fill_interval_ns: u64,
    max_keys: u32,
) -> RateLimiter {
    RateLimiter::new(RateLimitSpec {
        name: "test".into(),
        key: vec![KeyAttribute::SourcePrincipal],
        params: BucketParams {
            max_tokens,
            tokens_per_fill,
            fill_interval_ns,
        },
        max_keys,
    })
}

fn key(principal: &str) -> BucketKey {
    BucketKey::from_values([Some(principal)])
}

fn admitted(l: &RateLimiter, store: &MemoryStore, k: &BucketKey, now: u64, n: usize) -> usize {
    (0..n).filter(|_| l.check(store, k, now).allowed()).count()
}

#[test]
fn burst_admits_max_tokens_then_limits_with_headers() {
    let store = MemoryStore::new();
    let l = limiter(20, 10, SEC, 100);
    let k = key("spiffe://cluster.local/ns/a/sa/client");
    let mut remaining = Vec::new();
    for _ in 0..20 {
        let d = l.check(&store, &k, T0 + 100 * MS);
        assert_eq!(d.outcome, RateLimitOutcome::Allowed);
        remaining.push(d.remaining);
    }
    assert_eq!(remaining, (0..20).rev().collect::<Vec<u32>>());

    let d = l.check(&store, &k, T0 + 100 * MS);
    assert_eq!(d.outcome, RateLimitOutcome::Limited);
    assert_eq!(d.reason(), "rate_limited");
    assert_eq!(
        d.limited_response_headers(),
        vec![
            ("x-envoy-ratelimited", "true".to_owned()),
            ("x-ratelimit-limit", "20".to_owned()),
            ("x-ratelimit-remaining", "0".to_owned()),
            // 1s interval, 100ms into it: Envoy reports the interval minus whole elapsed seconds.
            ("x-ratelimit-reset", "1".to_owned()),
            ("retry-after", "1".to_owned()),
        ]
    );
    assert_eq!(&*d.limit_name, "test");
}

#[test]
fn tokens_come_back_after_fill_interval() {
    let store = MemoryStore::new();
    let l = limiter(20, 10, SEC, 100);
    let k = key("p");
    assert_eq!(admitted(&l, &store, &k, T0, 25), 20);
    // Still inside the first interval: nothing.
    assert_eq!(admitted(&l, &store, &k, T0 + 999 * MS, 5), 0);
    // One fill: tokensPerFill.
    assert_eq!(admitted(&l, &store, &k, T0 + SEC, 15), 10);
    // Five fills later the bucket is capped at maxTokens, not 50.
    assert_eq!(admitted(&l, &store, &k, T0 + 6 * SEC, 60), 20);
}

#[test]
fn partial_intervals_are_aligned_to_fill_boundaries() {
    let store = MemoryStore::new();
    let l = limiter(2, 1, 10 * SEC, 100);
    let k = key("p");
    // Drained 9.5s into an interval: the next token comes at the boundary, 0.5s later,
    // as with Envoy's fill timer, not 10s after draining.
    assert_eq!(admitted(&l, &store, &k, T0 + 9_500 * MS, 3), 2);
    let d = l.check(&store, &k, T0 + 9_600 * MS);
    assert!(!d.allowed());
    assert_eq!(d.retry_after_secs, 1);
    assert_eq!(d.reset_secs, 1);
    assert_eq!(admitted(&l, &store, &k, T0 + 10 * SEC, 3), 1);
    let d = l.check(&store, &k, T0 + 13_200 * MS);
    assert_eq!((d.reset_secs, d.retry_after_secs), (7, 7));
}

#[test]
fn keys_have_independent_buckets() {
    let store = MemoryStore::new();
    let l = limiter(3, 1, SEC, 100);
    let (a, b) = (key("alice"), key("bob"));
    assert_eq!(admitted(&l, &store, &a, T0, 10), 3);
    assert_eq!(admitted(&l, &store, &b, T0, 10), 3);
    assert_eq!(admitted(&l, &store, &a, T0 + SEC, 10), 1);
    // A missing attribute is its own bucket, distinct from an empty value.
    let none = BucketKey::from_values([None::<&str>]);
    let empty = key("");
    assert_eq!(admitted(&l, &store, &none, T0, 10), 3);
    assert_eq!(admitted(&l, &store, &empty, T0, 10), 3);
}

#[test]
fn bucket_key_is_built_from_the_configured_attributes() {
    let spec = RateLimitConfig::from_json(
        serde_json::json!({
            "name": "per-tenant", "key": ["source.namespace", "request.headers[X-Tenant]"],
            "maxTokens": 1, "fillInterval": "1s"
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
    .validate(
        &egress_filter::ConfigPath::root()
            .field("rateLimits")
            .index(0),
    )
    .unwrap();
    let l = RateLimiter::new(spec);
    let k = l.bucket_key(|attr| match attr {
        KeyAttribute::SourceNamespace => Some("shop".to_owned()),
        KeyAttribute::RequestHeader(name) if name == "x-tenant" => Some("t1".to_owned()),
        _ => None,
    });
    assert_eq!(k.text(), "4:shop;2:t1");
}

#[test]
fn key_cap_holds_under_a_spray_of_unique_keys() {
    let store = MemoryStore::new();
    let max_keys = 50;
    let l = limiter(5, 1, SEC, max_keys);
    let mut overflow_allowed = 0;
    let mut overflow_seen = 0;
    for i in 0..5_000 {
        let d = l.check(&store, &key(&format!("attacker-{i}")), T0 + i * MS / 10);
        if d.bucket == BucketRef::Overflow {
            overflow_seen += 1;
            overflow_allowed += usize::from(d.allowed());
        }
    }
    // Shared data holds at most one value per bucket set plus the overflow bucket.
    assert!(
        store.len() as u32 <= l.max_store_keys(),
        "{} keys",
        store.len()
    );
    assert_eq!(l.max_store_keys(), 50 / 8 + 1 + 1);
    // Keyed buckets never exceed maxKeys in total.
    let keyed: usize = store
        .keys()
        .iter()
        .filter(|k| k.contains("/set/"))
        .map(|k| store.get(k).map_or(0, |(v, _)| usize::from(v[2])))
        .sum();
    assert!(keyed <= max_keys as usize, "{keyed} keyed buckets");
    assert_eq!(keyed, max_keys as usize, "every slot got used");
    // Everything past the cap shared one bucket: its 5 tokens (all within 0.5s, no refill).
    assert!(overflow_seen >= 4_900, "{overflow_seen}");
    assert_eq!(overflow_allowed, 5);
}

#[test]
fn overflow_bucket_refills_like_the_others() {
    let store = MemoryStore::new();
    let l = limiter(2, 1, SEC, 1);
    assert!(l.check(&store, &key("first"), T0).allowed());
    let d = l.check(&store, &key("second"), T0);
    assert_eq!(d.bucket, BucketRef::Overflow);
    assert_eq!(d.reason(), "allowed_overflow");
    assert!(l.check(&store, &key("third"), T0).allowed());
    let d = l.check(&store, &key("fourth"), T0);
    assert_eq!(
        (d.outcome, d.bucket),
        (RateLimitOutcome::Limited, BucketRef::Overflow)
    );
    assert_eq!(d.reason(), "rate_limited_overflow");
    let d = l.check(&store, &key("fifth"), T0 + SEC);
    // "first" is not stale yet (it was used within the refill period), so still overflow.
    assert_eq!(
        (d.outcome, d.bucket),
        (RateLimitOutcome::Allowed, BucketRef::Overflow)
    );
}

#[test]
fn stale_buckets_are_reused_and_active_ones_are_not() {
    let store = MemoryStore::new();
    // maxKeys 1: a single set with a single slot.
    let l = limiter(4, 2, SEC, 1);
    let (a, b) = (key("a"), key("b"));
    assert!(l.check(&store, &a, T0).allowed());
    // "a" refills to full at T0+1s but must also be idle for a refill-to-full period (2s).
    let d = l.check(&store, &b, T0 + SEC);
    assert_eq!(d.bucket, BucketRef::Overflow);
    let d = l.check(&store, &b, T0 + 2 * SEC);
    assert_eq!(d.bucket, BucketRef::Keyed { set: 0 });
    assert!(d.reclaimed_stale);
    assert_eq!(
        d.remaining, 3,
        "a reused slot starts as a full bucket for its new key"
    );
    // Now "a" is the one without a slot.
    let d = l.check(&store, &a, T0 + 2 * SEC);
    assert_eq!(d.bucket, BucketRef::Overflow);
}

#[test]
fn reuse_never_hands_out_more_than_a_fresh_bucket() {
    // A key whose bucket was reclaimed comes back to a full bucket: exactly what it would have
    // had, since only full buckets are reclaimed.
    let store = MemoryStore::new();
    let l = limiter(3, 3, SEC, 1);
    let (a, b) = (key("a"), key("b"));
    assert_eq!(admitted(&l, &store, &a, T0, 3), 3);
    assert_eq!(admitted(&l, &store, &b, T0 + 2 * SEC, 1), 1); // reclaims a's slot
    assert_eq!(admitted(&l, &store, &a, T0 + 5 * SEC, 10), 3); // reclaims b's slot
}

#[test]
fn limited_requests_do_not_write() {
    let store = MemoryStore::new();
    let l = limiter(1, 1, SEC, 8);
    let k = key("p");
    assert!(l.check(&store, &k, T0).allowed());
    let before = store.get(&store.keys()[0]);
    assert!(!l.check(&store, &k, T0).allowed());
    assert_eq!(
        store.get(&store.keys()[0]),
        before,
        "value and CAS unchanged"
    );
}

#[test]
fn most_restrictive_prefers_denials_then_longer_waits() {
    let store = MemoryStore::new();
    let fast = limiter(5, 1, SEC, 8);
    let slow = RateLimiter::with_store_prefix(
        RateLimitSpec {
            name: "slow".into(),
            key: vec![],
            params: BucketParams {
                max_tokens: 1,
                tokens_per_fill: 1,
                fill_interval_ns: 60 * SEC,
            },
            max_keys: 8,
        },
        "other/",
    );
    let k = key("p");
    let empty = BucketKey::from_values(Vec::<Option<&str>>::new());
    let first = [fast.check(&store, &k, T0), slow.check(&store, &empty, T0)];
    let chosen = RateLimitDecision::most_restrictive(&first).unwrap();
    assert_eq!(&*chosen.limit_name, "slow"); // both allowed; 0 remaining beats 4
    let second = [fast.check(&store, &k, T0), slow.check(&store, &empty, T0)];
    let chosen = RateLimitDecision::most_restrictive(&second).unwrap();
    assert!(!chosen.allowed());
    assert_eq!(chosen.retry_after_secs, 60);
    assert!(store.keys().iter().any(|k| k.starts_with("other/slow/")));
}
