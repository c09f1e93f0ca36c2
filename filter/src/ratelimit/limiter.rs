//! A rate limit over a [`CasStore`]: which bucket a request falls in, the CAS read-modify-write
//! that takes its token, and the decision with its response headers.
//!
//! Shared data never expires, so a limit keeps its buckets in a fixed number of store keys:
//! `ceil(maxKeys / 8)` *bucket sets* plus one overflow bucket. A bucket key hashes to one set;
//! the set holds up to 8 keyed buckets (capacities add up to exactly `maxKeys`). Looking up,
//! inserting, reusing a stale bucket and taking the token all happen in one CAS write of that
//! one set value, so concurrent workers can never create a key twice or lose an update.
//!
//! When a key's set is full and none of its buckets is stale, the request takes its token from
//! the limit's overflow bucket, which has the same size and fill rate. Traffic past the key cap
//! is thus still limited, only more coarsely; the decision says so for the log.

use std::sync::Arc;

use super::bucket::{
    decode_set, decode_single, encode_set, encode_single, fnv1a_64, reset_seconds,
    retry_after_seconds, BucketState, SetEntry, StoredKey,
};
use super::config::{BucketParams, KeyAttribute, RateLimitSpec};
use super::store::CasStore;

/// Keyed buckets per set (per shared-data value).
pub const SET_WAYS: u32 = 8;
/// CAS attempts before a request is denied as contended.
pub const DEFAULT_MAX_CAS_ATTEMPTS: u32 = 16;
/// Prefix of every shared-data key written by the rate limiter. Istio leaves the VM id empty, so
/// every Wasm plugin in the proxy writes into one namespace: the project prefix keeps other
/// plugins' keys apart. The value format's version is part of it: while an image update rolls
/// out, the old and the new build run side by side in one process, and a build that cannot read
/// the other's values would otherwise reset its buckets on every request.
pub const DEFAULT_STORE_PREFIX: &str = "egress-guard/rl/v1/";
/// CAS sent when creating a key that was absent on read. Envoy stores a value for an absent key
/// whatever the CAS; if another worker created the key in between, its CAS differs from this
/// value (barring the one-in-2^32 chance that the global counter sits exactly here), the write
/// fails, and the read-modify-write starts over on the other worker's value. A CAS of 0 would
/// overwrite it instead and lose its update.
pub const CREATE_CAS: u32 = u32::MAX;

/// The values of a limit's key attributes for one request, as a bucket identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketKey {
    text: String,
    stored: StoredKey,
    hash: u64,
}

impl BucketKey {
    /// Builds the key from the attribute values in `key` order; `None` is an attribute the
    /// request does not have. Values are length-prefixed, so no two value lists share a key.
    pub fn from_values<I, S>(values: I) -> BucketKey
    where
        I: IntoIterator<Item = Option<S>>,
        S: AsRef<str>,
    {
        let mut text = String::new();
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                text.push(';');
            }
            match value {
                Some(v) => {
                    let v = v.as_ref();
                    text.push_str(&v.len().to_string());
                    text.push(':');
                    text.push_str(v);
                }
                None => text.push('-'),
            }
        }
        let stored = StoredKey::for_key(&text);
        let hash = fnv1a_64(text.as_bytes());
        BucketKey { text, stored, hash }
    }

    /// Readable form for logs (may be long: it contains the request's values).
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// What the limit decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitOutcome {
    /// A token was taken.
    Allowed,
    /// The bucket was empty.
    Limited,
    /// Every CAS attempt lost a race (or the store kept failing): denied, failing closed.
    Contended,
}

/// Which bucket answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketRef {
    /// A keyed bucket in the given set.
    Keyed { set: u32 },
    /// The per-limit overflow bucket: the key's set was full of active buckets.
    Overflow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitDecision {
    pub limit_name: Arc<str>,
    pub outcome: RateLimitOutcome,
    pub bucket: BucketRef,
    /// `x-ratelimit-limit`: the bucket size.
    pub limit: u32,
    /// `x-ratelimit-remaining`: tokens left after this request.
    pub remaining: u32,
    /// `x-ratelimit-reset` (draft-03, as Envoy): seconds until the next fill.
    pub reset_secs: u64,
    /// `retry-after`: whole seconds until the next fill, at least 1.
    pub retry_after_secs: u64,
    /// A stale bucket of another key was reused for this key.
    pub reclaimed_stale: bool,
    /// The stored state was unreadable (e.g. an older layout) and was replaced by a new bucket.
    pub recovered_corrupt: bool,
    /// CAS writes that lost a race before the final answer.
    pub cas_conflicts: u32,
}

impl RateLimitDecision {
    pub fn allowed(&self) -> bool {
        self.outcome == RateLimitOutcome::Allowed
    }

    /// Short reason for logs and metric labels.
    pub fn reason(&self) -> &'static str {
        match (self.outcome, self.bucket) {
            (RateLimitOutcome::Allowed, BucketRef::Keyed { .. }) => "allowed",
            (RateLimitOutcome::Allowed, BucketRef::Overflow) => "allowed_overflow",
            (RateLimitOutcome::Limited, BucketRef::Keyed { .. }) => "rate_limited",
            (RateLimitOutcome::Limited, BucketRef::Overflow) => "rate_limited_overflow",
            (RateLimitOutcome::Contended, _) => "rate_limit_contended",
        }
    }

    /// The draft-03 headers Envoy adds when `enable_x_ratelimit_headers` is on.
    pub fn ratelimit_headers(&self) -> [(&'static str, String); 3] {
        [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", self.reset_secs.to_string()),
        ]
    }

    /// Headers of the 429 local reply.
    pub fn limited_response_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("x-envoy-ratelimited", "true".to_owned())];
        headers.extend(self.ratelimit_headers());
        headers.push(("retry-after", self.retry_after_secs.to_string()));
        headers
    }

    /// Of several limits' decisions for one request, the one to report: a denial before an
    /// allowance, then the longest wait, then the fewest tokens left.
    pub fn most_restrictive<'a, I>(decisions: I) -> Option<&'a RateLimitDecision>
    where
        I: IntoIterator<Item = &'a RateLimitDecision>,
    {
        decisions.into_iter().max_by(|a, b| {
            (!a.allowed())
                .cmp(&!b.allowed())
                .then(a.retry_after_secs.cmp(&b.retry_after_secs))
                .then(b.remaining.cmp(&a.remaining))
        })
    }
}

/// One configured rate limit, ready to answer requests.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    name: Arc<str>,
    key: Vec<KeyAttribute>,
    params: BucketParams,
    max_keys: u32,
    sets: u32,
    set_key_prefix: String,
    overflow_key: String,
    max_cas_attempts: u32,
}

impl RateLimiter {
    pub fn new(spec: RateLimitSpec) -> Self {
        Self::with_store_prefix(spec, DEFAULT_STORE_PREFIX)
    }

    /// `prefix` namespaces the shared-data keys (shared data is per VM id, not per plugin).
    pub fn with_store_prefix(spec: RateLimitSpec, prefix: &str) -> Self {
        let max_keys = spec.max_keys.max(1);
        RateLimiter {
            set_key_prefix: format!("{prefix}{}/set/", spec.name),
            overflow_key: format!("{prefix}{}/overflow", spec.name),
            name: Arc::from(spec.name),
            key: spec.key,
            params: spec.params,
            max_keys,
            sets: max_keys.div_ceil(SET_WAYS),
            max_cas_attempts: DEFAULT_MAX_CAS_ATTEMPTS,
        }
    }

    pub fn with_max_cas_attempts(mut self, attempts: u32) -> Self {
        self.max_cas_attempts = attempts.max(1);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn params(&self) -> &BucketParams {
        &self.params
    }

    /// Number of bucket sets; with the overflow bucket, the store holds at most
    /// `set_count() + 1` keys for this limit.
    pub fn set_count(&self) -> u32 {
        self.sets
    }

    /// The most shared-data keys this limit ever writes.
    pub fn max_store_keys(&self) -> u32 {
        self.sets + 1
    }

    /// Builds the request's bucket key by asking `lookup` for each key attribute in order.
    pub fn bucket_key<F, S>(&self, mut lookup: F) -> BucketKey
    where
        F: FnMut(&KeyAttribute) -> Option<S>,
        S: AsRef<str>,
    {
        BucketKey::from_values(self.key.iter().map(&mut lookup))
    }

    /// Keyed buckets set `set` may hold; the capacities of all sets add up to `max_keys`.
    fn set_capacity(&self, set: u32) -> usize {
        let base = self.max_keys / self.sets;
        let extra = self.max_keys % self.sets;
        (base + u32::from(set < extra)) as usize
    }

    fn set_store_key(&self, set: u32) -> String {
        format!("{}{set}", self.set_key_prefix)
    }

    /// Takes one token for `key` at host time `now_ns` (Unix nanoseconds).
    pub fn check<S: CasStore + ?Sized>(
        &self,
        store: &S,
        key: &BucketKey,
        now_ns: u64,
    ) -> RateLimitDecision {
        let set = u32::try_from(key.hash % u64::from(self.sets)).unwrap_or(0);
        let store_key = self.set_store_key(set);
        let capacity = self.set_capacity(set);
        let mut conflicts = 0u32;
        let mut recovered = false;
        for _ in 0..self.max_cas_attempts {
            let (mut entries, cas) = match store.get(&store_key) {
                Some((bytes, cas)) => match decode_set(&bytes) {
                    Ok(entries) => (entries, cas),
                    Err(_) => {
                        recovered = true;
                        (Vec::new(), cas)
                    }
                },
                None => (Vec::new(), CREATE_CAS),
            };
            let existing = entries.iter().position(|e| e.key == key.stored);
            let mut reclaimed = false;
            let index = match existing {
                Some(i) => i,
                None => {
                    let fresh = SetEntry {
                        key: key.stored.clone(),
                        state: BucketState::new_full(&self.params, now_ns),
                    };
                    if entries.len() < capacity {
                        entries.push(fresh);
                        entries.len() - 1
                    } else if let Some(i) = self.stalest(&entries, now_ns) {
                        if let Some(slot) = entries.get_mut(i) {
                            *slot = fresh;
                        }
                        reclaimed = true;
                        i
                    } else {
                        let mut decision = self.check_overflow(store, now_ns);
                        decision.cas_conflicts = decision.cas_conflicts.saturating_add(conflicts);
                        decision.recovered_corrupt |= recovered;
                        return decision;
                    }
                }
            };
            // `index` was just found or pushed, so this cannot miss.
            let Some(entry) = entries.get_mut(index) else {
                break;
            };
            let allowed = entry.state.try_take(&self.params, now_ns);
            let remaining = entry.state.tokens;
            let bucket = BucketRef::Keyed { set };
            if !allowed {
                // Nothing changed that matters (an empty bucket stays empty), so no write: the
                // answer is as of the read.
                return self
                    .decision(RateLimitOutcome::Limited, bucket, 0, now_ns)
                    .with_flags(false, recovered, conflicts);
            }
            match store.set(&store_key, &encode_set(&entries), cas) {
                Ok(()) => {
                    return self
                        .decision(RateLimitOutcome::Allowed, bucket, remaining, now_ns)
                        .with_flags(reclaimed, recovered, conflicts);
                }
                Err(_) => conflicts += 1,
            }
        }
        self.decision(
            RateLimitOutcome::Contended,
            BucketRef::Keyed { set },
            0,
            now_ns,
        )
        .with_flags(false, recovered, conflicts)
    }

    /// Index of the stale bucket idle the longest, if any.
    fn stalest(&self, entries: &[SetEntry], now_ns: u64) -> Option<usize> {
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state.is_stale(&self.params, now_ns))
            .min_by_key(|(_, e)| e.state.last_used_ns)
            .map(|(i, _)| i)
    }

    fn check_overflow<S: CasStore + ?Sized>(&self, store: &S, now_ns: u64) -> RateLimitDecision {
        let mut conflicts = 0u32;
        let mut recovered = false;
        for _ in 0..self.max_cas_attempts {
            let (mut state, cas, written_before) = match store.get(&self.overflow_key) {
                Some((bytes, cas)) => match decode_single(&bytes) {
                    Ok(state) => (state, cas, true),
                    Err(_) => {
                        recovered = true;
                        (BucketState::new_full(&self.params, now_ns), cas, false)
                    }
                },
                None => (
                    BucketState::new_full(&self.params, now_ns),
                    CREATE_CAS,
                    false,
                ),
            };
            let allowed = state.try_take(&self.params, now_ns);
            if !allowed && written_before {
                return self
                    .decision(RateLimitOutcome::Limited, BucketRef::Overflow, 0, now_ns)
                    .with_flags(false, recovered, conflicts);
            }
            match store.set(&self.overflow_key, &encode_single(&state), cas) {
                Ok(()) => {
                    let outcome = if allowed {
                        RateLimitOutcome::Allowed
                    } else {
                        RateLimitOutcome::Limited
                    };
                    return self
                        .decision(outcome, BucketRef::Overflow, state.tokens, now_ns)
                        .with_flags(false, recovered, conflicts);
                }
                Err(_) => conflicts += 1,
            }
        }
        self.decision(RateLimitOutcome::Contended, BucketRef::Overflow, 0, now_ns)
            .with_flags(false, recovered, conflicts)
    }

    fn decision(
        &self,
        outcome: RateLimitOutcome,
        bucket: BucketRef,
        remaining: u32,
        now_ns: u64,
    ) -> RateLimitDecision {
        RateLimitDecision {
            limit_name: Arc::clone(&self.name),
            outcome,
            bucket,
            limit: self.params.max_tokens,
            remaining,
            reset_secs: reset_seconds(&self.params, now_ns),
            retry_after_secs: retry_after_seconds(&self.params, now_ns),
            reclaimed_stale: false,
            recovered_corrupt: false,
            cas_conflicts: 0,
        }
    }
}

impl RateLimitDecision {
    fn with_flags(mut self, reclaimed: bool, recovered: bool, conflicts: u32) -> Self {
        self.reclaimed_stale = reclaimed;
        self.recovered_corrupt = recovered;
        self.cas_conflicts = conflicts;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::store::MemoryStore;

    fn limiter(max_keys: u32) -> RateLimiter {
        RateLimiter::new(RateLimitSpec {
            name: "t".into(),
            key: vec![KeyAttribute::SourcePrincipal],
            params: BucketParams {
                max_tokens: 2,
                tokens_per_fill: 1,
                fill_interval_ns: 1_000_000_000,
            },
            max_keys,
        })
    }

    #[test]
    fn set_capacities_add_up_to_max_keys() {
        for max_keys in [1, 2, 7, 8, 9, 10, 17, 100, 10_000, 10_001] {
            let l = limiter(max_keys);
            let total: usize = (0..l.set_count()).map(|s| l.set_capacity(s)).sum();
            assert_eq!(total, max_keys as usize, "max_keys {max_keys}");
            assert!((0..l.set_count()).all(|s| l.set_capacity(s) <= SET_WAYS as usize));
            assert!(l.max_store_keys() <= max_keys + 1);
        }
    }

    #[test]
    fn key_values_are_unambiguous() {
        let a = BucketKey::from_values([Some("a;1:b"), None]);
        let b = BucketKey::from_values([Some("a"), Some("b")]);
        assert_ne!(a, b);
        assert_eq!(b.text(), "1:a;1:b");
        assert_eq!(
            BucketKey::from_values([None::<&str>, Some("")]).text(),
            "-;0:"
        );
        assert_eq!(
            BucketKey::from_values(Vec::<Option<&str>>::new()).text(),
            ""
        );
    }

    #[test]
    fn the_store_prefix_names_the_value_format() {
        assert_eq!(
            DEFAULT_STORE_PREFIX,
            format!("egress-guard/rl/v{}/", super::super::bucket::FORMAT_VERSION)
        );
    }

    #[test]
    fn corrupt_state_is_replaced_by_a_new_bucket() {
        let store = MemoryStore::new();
        let l = limiter(8);
        let key = BucketKey::from_values([Some("p")]);
        store
            .set("egress-guard/rl/v1/t/set/0", b"garbage", 0)
            .unwrap();
        let d = l.check(&store, &key, 0);
        assert!(d.allowed());
        assert!(d.recovered_corrupt);
        assert_eq!(d.remaining, 1);
        let d = l.check(&store, &key, 0);
        assert!(!d.recovered_corrupt);
        assert_eq!(d.remaining, 0);
    }
}
