//! The rate limiter's CAS read-modify-write against stores that lose races.

use std::cell::{Cell, RefCell};

use egress_filter::ratelimit::{
    BucketKey, BucketParams, CasMismatch, CasStore, KeyAttribute, MemoryStore, RateLimitOutcome,
    RateLimitSpec, RateLimiter, CREATE_CAS, DEFAULT_MAX_CAS_ATTEMPTS,
};

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_040 * SEC;

fn limiter(max_tokens: u32, max_keys: u32) -> RateLimiter {
    RateLimiter::new(RateLimitSpec {
        name: "cas".into(),
        key: vec![KeyAttribute::SourceIp],
        params: BucketParams {
            max_tokens,
            tokens_per_fill: 1,
            fill_interval_ns: SEC,
        },
        max_keys,
    })
}

/// Before each of the first `conflicts` writes, another "worker" takes a token through the same
/// limiter, so the write carries a stale CAS and must fail and be retried.
struct RacingStore<'a> {
    inner: MemoryStore,
    conflicts: Cell<u32>,
    rival: RefCell<Option<(&'a RateLimiter, BucketKey)>>,
    rival_admitted: Cell<u32>,
}

impl CasStore for RacingStore<'_> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        if self.conflicts.get() > 0 {
            self.conflicts.set(self.conflicts.get() - 1);
            if let Some((limiter, k)) = self.rival.borrow().as_ref() {
                // The rival writes straight to the inner store: it does not race itself.
                if limiter.check(&self.inner, k, T0).allowed() {
                    self.rival_admitted.set(self.rival_admitted.get() + 1);
                }
            }
        }
        self.inner.set(key, value, cas)
    }
}

#[test]
fn lost_races_are_retried_and_no_update_is_lost() {
    let l = limiter(10, 8);
    let k = BucketKey::from_values([Some("10.0.0.1")]);
    let store = RacingStore {
        inner: MemoryStore::new(),
        conflicts: Cell::new(3),
        rival: RefCell::new(Some((&l, k.clone()))),
        rival_admitted: Cell::new(0),
    };
    let d = l.check(&store, &k, T0);
    assert_eq!(d.outcome, RateLimitOutcome::Allowed);
    assert_eq!(d.cas_conflicts, 3);
    assert_eq!(store.rival_admitted.get(), 3);
    // 10 tokens: 3 taken by the rival, 1 by us.
    assert_eq!(d.remaining, 6);
    let rest = (0..20)
        .filter(|_| l.check(&store.inner, &k, T0).allowed())
        .count();
    assert_eq!(rest, 6);
}

/// Every write fails, as if the host kept refusing or other workers always won.
struct AlwaysConflicting {
    inner: MemoryStore,
    sets: Cell<u32>,
}

impl CasStore for AlwaysConflicting {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.inner.get(key)
    }
    fn set(&self, _: &str, _: &[u8], _: u32) -> Result<(), CasMismatch> {
        self.sets.set(self.sets.get() + 1);
        Err(CasMismatch)
    }
}

#[test]
fn endless_conflicts_deny_after_bounded_attempts() {
    let store = AlwaysConflicting {
        inner: MemoryStore::new(),
        sets: Cell::new(0),
    };
    let l = limiter(10, 8);
    let d = l.check(&store, &BucketKey::from_values([Some("10.0.0.1")]), T0);
    assert_eq!(d.outcome, RateLimitOutcome::Contended);
    assert!(!d.allowed(), "fails closed");
    assert_eq!(d.reason(), "rate_limit_contended");
    assert_eq!(d.cas_conflicts, DEFAULT_MAX_CAS_ATTEMPTS);
    assert_eq!(store.sets.get(), DEFAULT_MAX_CAS_ATTEMPTS);
    assert_eq!(
        d.limited_response_headers()[0],
        ("x-envoy-ratelimited", "true".to_owned())
    );

    let store = AlwaysConflicting {
        inner: MemoryStore::new(),
        sets: Cell::new(0),
    };
    let d = limiter(10, 8).with_max_cas_attempts(3).check(
        &store,
        &BucketKey::from_values([Some("x")]),
        T0,
    );
    assert_eq!(
        (d.outcome, d.cas_conflicts),
        (RateLimitOutcome::Contended, 3)
    );
}

#[test]
fn two_workers_creating_the_same_bucket_do_not_lose_a_token() {
    // Both workers read "absent" before either writes; the second creation must not overwrite
    // the first (which a CAS of 0 would do).
    type Rival = Box<dyn Fn(&MemoryStore)>;
    struct Interleaved {
        inner: MemoryStore,
        first_get: Cell<bool>,
        rival: RefCell<Option<Rival>>,
    }
    impl CasStore for Interleaved {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            let v = self.inner.get(key);
            if self.first_get.replace(false) {
                if let Some(rival) = self.rival.borrow_mut().take() {
                    rival(&self.inner); // the other worker creates the bucket right after our read
                }
            }
            v
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
            self.inner.set(key, value, cas)
        }
    }
    let l = limiter(2, 8);
    let k = BucketKey::from_values([Some("10.0.0.9")]);
    let (l2, k2) = (l.clone(), k.clone());
    let store = Interleaved {
        inner: MemoryStore::new(),
        first_get: Cell::new(true),
        rival: RefCell::new(Some(Box::new(move |s: &MemoryStore| {
            assert!(l2.check(s, &k2, T0).allowed());
        }))),
    };
    let d = l.check(&store, &k, T0);
    assert!(d.allowed());
    assert_eq!(d.cas_conflicts, 1, "creation lost the race and was retried");
    assert_eq!(d.remaining, 0, "the rival's token is still spent");
    assert!(!l.check(&store, &k, T0).allowed());
}

#[test]
fn create_cas_is_not_zero() {
    // Zero would mean "unconditional" and overwrite a bucket another worker just created.
    assert_ne!(CREATE_CAS, 0);
}
