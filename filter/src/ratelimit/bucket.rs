//! Token-bucket arithmetic (Envoy local_ratelimit semantics) and the binary encoding of bucket
//! state kept in shared data.
//!
//! Fills happen at fixed boundaries: multiples of `fill_interval` since the Unix epoch on the
//! host clock. Every worker therefore agrees on when a fill happens without any timer, and a
//! bucket is brought up to date lazily, when it is next touched.

use super::config::{BucketParams, NANOS_PER_SEC};

/// State of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    /// Tokens left as of `last_fill_ns`.
    pub tokens: u32,
    /// The fill boundary up to which fills have been credited (a multiple of the interval).
    pub last_fill_ns: u64,
    /// When a token was last taken; decides whether the bucket is stale and may be reused.
    pub last_used_ns: u64,
}

/// Start of the fill interval that contains `now_ns`.
pub fn fill_boundary(now_ns: u64, interval_ns: u64) -> u64 {
    match now_ns.checked_rem(interval_ns) {
        Some(rem) => now_ns - rem,
        None => now_ns,
    }
}

impl BucketState {
    /// A bucket created at `now_ns` starts full, as Envoy's does.
    pub fn new_full(params: &BucketParams, now_ns: u64) -> Self {
        BucketState {
            tokens: params.max_tokens,
            last_fill_ns: fill_boundary(now_ns, params.fill_interval_ns),
            last_used_ns: now_ns,
        }
    }

    /// Credits the fills between `last_fill_ns` and `now_ns`, capped at `max_tokens`. A clock that
    /// went backwards credits nothing and never moves `last_fill_ns` back. Tokens above
    /// `max_tokens` (left by a configuration with a larger bucket) are cut down.
    pub fn refill(&mut self, params: &BucketParams, now_ns: u64) {
        let interval = params.fill_interval_ns;
        // A state written under another interval may be unaligned; align it down.
        let last = fill_boundary(self.last_fill_ns, interval);
        let current = fill_boundary(now_ns, interval);
        if current > last {
            let fills = (current - last).checked_div(interval).unwrap_or(0);
            let added = fills.saturating_mul(u64::from(params.tokens_per_fill));
            let tokens = u64::from(self.tokens).saturating_add(added);
            self.tokens = u32::try_from(tokens.min(u64::from(params.max_tokens)))
                .unwrap_or(params.max_tokens);
            self.last_fill_ns = current;
        } else {
            self.last_fill_ns = self.last_fill_ns.max(last);
        }
        self.tokens = self.tokens.min(params.max_tokens);
    }

    /// Refills, then takes one token if there is one.
    pub fn try_take(&mut self, params: &BucketParams, now_ns: u64) -> bool {
        self.refill(params, now_ns);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        self.last_used_ns = self.last_used_ns.max(now_ns);
        true
    }

    /// A bucket is stale when it is full and nothing has taken from it for as long as it takes to
    /// fill it from empty: it is then indistinguishable from a new bucket, so reusing its slot for
    /// another key loses nothing.
    pub fn is_stale(&self, params: &BucketParams, now_ns: u64) -> bool {
        let mut current = *self;
        current.refill(params, now_ns);
        current.tokens >= params.max_tokens
            && now_ns.saturating_sub(self.last_used_ns) >= refill_to_full_ns(params)
    }
}

/// Time for an empty bucket to fill up: `ceil(max_tokens / tokens_per_fill)` intervals.
pub fn refill_to_full_ns(params: &BucketParams) -> u64 {
    let fills = u64::from(params.max_tokens).div_ceil(u64::from(params.tokens_per_fill.max(1)));
    fills.saturating_mul(params.fill_interval_ns)
}

/// `x-ratelimit-reset` as Envoy computes it (`remainingFillInterval`): the fill interval minus
/// the whole seconds elapsed since the last fill, truncated to seconds. Sub-second intervals
/// therefore report 0, as they do in Envoy.
pub fn reset_seconds(params: &BucketParams, now_ns: u64) -> u64 {
    let interval = params.fill_interval_ns;
    let elapsed = now_ns - fill_boundary(now_ns, interval);
    let elapsed_whole_secs = elapsed / NANOS_PER_SEC * NANOS_PER_SEC;
    interval.saturating_sub(elapsed_whole_secs) / NANOS_PER_SEC
}

/// `retry-after`: whole seconds, rounded up, until the next fill adds a token; at least 1 so that
/// a client does not retry at once.
pub fn retry_after_seconds(params: &BucketParams, now_ns: u64) -> u64 {
    let interval = params.fill_interval_ns;
    let next = fill_boundary(now_ns, interval).saturating_add(interval);
    next.saturating_sub(now_ns).div_ceil(NANOS_PER_SEC).max(1)
}

// ---------------------------------------------------------------------------------------------
// Encoding. All integers little-endian. Version byte first so a future layout can be told apart.
//
// Single bucket (the per-limit overflow bucket), 24 bytes:
//   0  u8   version = 1
//   1  u8   kind = 0 (single bucket)
//   2  u16  reserved = 0
//   4  u32  tokens
//   8  u64  last_fill_ns
//   16 u64  last_used_ns
//
// Bucket set (up to `ways` keyed buckets that hash to the same set):
//   0  u8   version = 1
//   1  u8   kind = 1 (bucket set)
//   2  u8   entry count
//   3  u8   reserved = 0
//   then per entry:
//   0  u32  tokens
//   4  u64  last_fill_ns
//   12 u64  last_used_ns
//   20 u8   key form: 0 = key bytes verbatim, 1 = 16-byte FNV-1a-128 digest of a long key
//   21 u8   key length n
//   22 n    key bytes
// ---------------------------------------------------------------------------------------------

pub const FORMAT_VERSION: u8 = 1;
const KIND_SINGLE: u8 = 0;
const KIND_SET: u8 = 1;
const STATE_LEN: usize = 20;
pub const SINGLE_LEN: usize = 4 + STATE_LEN;

/// Keys up to this many bytes are stored verbatim; longer ones (e.g. built from long header
/// values) as a digest, so one set value stays small whatever the request carries.
pub const MAX_VERBATIM_KEY_LEN: usize = 128;

/// The stored state could not be decoded (an older layout, or not ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptState;

fn put_state(out: &mut Vec<u8>, state: &BucketState) {
    out.extend_from_slice(&state.tokens.to_le_bytes());
    out.extend_from_slice(&state.last_fill_ns.to_le_bytes());
    out.extend_from_slice(&state.last_used_ns.to_le_bytes());
}

fn get_state(bytes: &[u8]) -> Option<BucketState> {
    let tokens = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
    let last_fill_ns = u64::from_le_bytes(bytes.get(4..12)?.try_into().ok()?);
    let last_used_ns = u64::from_le_bytes(bytes.get(12..20)?.try_into().ok()?);
    Some(BucketState {
        tokens,
        last_fill_ns,
        last_used_ns,
    })
}

pub fn encode_single(state: &BucketState) -> Vec<u8> {
    let mut out = Vec::with_capacity(SINGLE_LEN);
    out.extend_from_slice(&[FORMAT_VERSION, KIND_SINGLE, 0, 0]);
    put_state(&mut out, state);
    out
}

pub fn decode_single(bytes: &[u8]) -> Result<BucketState, CorruptState> {
    if bytes.len() != SINGLE_LEN || bytes.get(0..4) != Some(&[FORMAT_VERSION, KIND_SINGLE, 0, 0]) {
        return Err(CorruptState);
    }
    bytes.get(4..).and_then(get_state).ok_or(CorruptState)
}

/// How a bucket key is stored in a set entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub form: u8,
    pub bytes: Vec<u8>,
}

pub const KEY_FORM_VERBATIM: u8 = 0;
pub const KEY_FORM_DIGEST: u8 = 1;

impl StoredKey {
    pub fn for_key(text: &str) -> StoredKey {
        if text.len() <= MAX_VERBATIM_KEY_LEN {
            StoredKey {
                form: KEY_FORM_VERBATIM,
                bytes: text.as_bytes().to_vec(),
            }
        } else {
            StoredKey {
                form: KEY_FORM_DIGEST,
                bytes: fnv1a_128(text.as_bytes()).to_le_bytes().to_vec(),
            }
        }
    }
}

/// One keyed bucket inside a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetEntry {
    pub key: StoredKey,
    pub state: BucketState,
}

pub fn encode_set(entries: &[SetEntry]) -> Vec<u8> {
    let size: usize = entries
        .iter()
        .map(|e| STATE_LEN + 2 + e.key.bytes.len())
        .sum();
    let mut out = Vec::with_capacity(4 + size);
    // Counts and key lengths are bounded by construction (ways <= 255, keys <= 128 bytes).
    let count = u8::try_from(entries.len()).unwrap_or(u8::MAX);
    out.extend_from_slice(&[FORMAT_VERSION, KIND_SET, count, 0]);
    for entry in entries.iter().take(usize::from(count)) {
        put_state(&mut out, &entry.state);
        let len = u8::try_from(entry.key.bytes.len()).unwrap_or(u8::MAX);
        out.push(entry.key.form);
        out.push(len);
        out.extend_from_slice(entry.key.bytes.get(..usize::from(len)).unwrap_or(&[]));
    }
    out
}

pub fn decode_set(bytes: &[u8]) -> Result<Vec<SetEntry>, CorruptState> {
    let header = bytes.get(0..4).ok_or(CorruptState)?;
    if header.first() != Some(&FORMAT_VERSION)
        || header.get(1) != Some(&KIND_SET)
        || header.get(3) != Some(&0)
    {
        return Err(CorruptState);
    }
    let count = usize::from(*header.get(2).ok_or(CorruptState)?);
    let mut entries = Vec::with_capacity(count);
    let mut pos = 4usize;
    for _ in 0..count {
        let state = bytes
            .get(pos..pos + STATE_LEN)
            .and_then(get_state)
            .ok_or(CorruptState)?;
        pos += STATE_LEN;
        let form = *bytes.get(pos).ok_or(CorruptState)?;
        let len = usize::from(*bytes.get(pos + 1).ok_or(CorruptState)?);
        pos += 2;
        if form > KEY_FORM_DIGEST {
            return Err(CorruptState);
        }
        let key = bytes.get(pos..pos + len).ok_or(CorruptState)?.to_vec();
        pos += len;
        entries.push(SetEntry {
            key: StoredKey { form, bytes: key },
            state,
        });
    }
    if pos != bytes.len() {
        return Err(CorruptState);
    }
    Ok(entries)
}

/// FNV-1a, 64 bit: picks the set a key lives in. Stable across builds and workers.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// FNV-1a, 128 bit: identity of keys too long to store verbatim.
pub fn fnv1a_128(bytes: &[u8]) -> u128 {
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    let prime: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    for &b in bytes {
        hash ^= u128::from(b);
        hash = hash.wrapping_mul(prime);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = NANOS_PER_SEC;

    fn params(max: u32, per_fill: u32, interval_ns: u64) -> BucketParams {
        BucketParams {
            max_tokens: max,
            tokens_per_fill: per_fill,
            fill_interval_ns: interval_ns,
        }
    }

    #[test]
    fn golden_single_bucket_bytes() {
        let state = BucketState {
            tokens: 0x0102_0304,
            last_fill_ns: 0x1122_3344_5566_7788,
            last_used_ns: 0x99aa_bbcc_ddee_ff00,
        };
        let bytes = encode_single(&state);
        #[rustfmt::skip]
        let golden: [u8; 24] = [
            0x01, 0x00, 0x00, 0x00,                         // version 1, kind single, reserved
            0x04, 0x03, 0x02, 0x01,                         // tokens
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // last_fill_ns
            0x00, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, // last_used_ns
        ];
        assert_eq!(bytes, golden);
        assert_eq!(decode_single(&golden), Ok(state));
    }

    #[test]
    fn golden_set_bytes() {
        let entries = vec![
            SetEntry {
                key: StoredKey::for_key("ab"),
                state: BucketState {
                    tokens: 5,
                    last_fill_ns: 1,
                    last_used_ns: 2,
                },
            },
            SetEntry {
                key: StoredKey::for_key(""),
                state: BucketState {
                    tokens: 0,
                    last_fill_ns: 256,
                    last_used_ns: 0,
                },
            },
        ];
        let bytes = encode_set(&entries);
        #[rustfmt::skip]
        let golden: Vec<u8> = vec![
            0x01, 0x01, 0x02, 0x00,                         // version 1, kind set, 2 entries, reserved
            0x05, 0x00, 0x00, 0x00,                         // entry 0: tokens 5
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //   last_fill_ns 1
            0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //   last_used_ns 2
            0x00, 0x02, b'a', b'b',                         //   verbatim key "ab"
            0x00, 0x00, 0x00, 0x00,                         // entry 1: tokens 0
            0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //   last_fill_ns 256
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //   last_used_ns 0
            0x00, 0x00,                                     //   verbatim key ""
        ];
        assert_eq!(bytes, golden);
        assert_eq!(decode_set(&golden), Ok(entries));
    }

    #[test]
    fn long_keys_are_stored_as_digest() {
        let long = "x".repeat(MAX_VERBATIM_KEY_LEN + 1);
        let key = StoredKey::for_key(&long);
        assert_eq!(key.form, KEY_FORM_DIGEST);
        assert_eq!(key.bytes.len(), 16);
        assert_ne!(StoredKey::for_key(&(long.clone() + "y")), key);
        let exact = "x".repeat(MAX_VERBATIM_KEY_LEN);
        assert_eq!(StoredKey::for_key(&exact).form, KEY_FORM_VERBATIM);
    }

    #[test]
    fn fnv_reference_values() {
        // Published FNV-1a test vectors.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_128(b""), 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d);
        assert_eq!(fnv1a_128(b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
    }

    #[test]
    fn corrupt_values_are_refused() {
        assert_eq!(decode_single(&[]), Err(CorruptState));
        assert_eq!(decode_single(&[2; 24]), Err(CorruptState));
        let mut single = encode_single(&BucketState {
            tokens: 1,
            last_fill_ns: 0,
            last_used_ns: 0,
        });
        single.push(0);
        assert_eq!(decode_single(&single), Err(CorruptState));
        assert_eq!(decode_set(&[1, 1, 1, 0]), Err(CorruptState));
        let set = encode_set(&[SetEntry {
            key: StoredKey::for_key("k"),
            state: BucketState {
                tokens: 1,
                last_fill_ns: 0,
                last_used_ns: 0,
            },
        }]);
        for cut in 0..set.len() {
            assert_eq!(decode_set(&set[..cut]), Err(CorruptState), "cut at {cut}");
        }
        let mut trailing = set.clone();
        trailing.push(7);
        assert_eq!(decode_set(&trailing), Err(CorruptState));
        // A single-bucket value is not a set, and the other way round.
        assert_eq!(decode_set(&single[..24]), Err(CorruptState));
        assert_eq!(decode_single(&set), Err(CorruptState));
    }

    #[test]
    fn refill_is_aligned_to_interval_boundaries() {
        let p = params(10, 4, SEC);
        let mut b = BucketState::new_full(&p, 100 * SEC + SEC / 2);
        assert_eq!(b.last_fill_ns, 100 * SEC);
        for _ in 0..10 {
            assert!(b.try_take(&p, 100 * SEC + SEC / 2));
        }
        assert!(!b.try_take(&p, 100 * SEC + 999_999_999));
        // The fill comes at the boundary, not one interval after the bucket was drained.
        assert!(b.try_take(&p, 101 * SEC));
        assert_eq!(b.tokens, 3);
        // Three more boundaries would add 12: capped at max.
        b.refill(&p, 104 * SEC + 1);
        assert_eq!(b.tokens, 10);
    }

    #[test]
    fn clock_going_back_credits_nothing() {
        let p = params(2, 1, SEC);
        let mut b = BucketState::new_full(&p, 50 * SEC);
        assert!(b.try_take(&p, 50 * SEC));
        assert!(b.try_take(&p, 50 * SEC));
        assert!(!b.try_take(&p, 10 * SEC));
        assert_eq!(b.last_fill_ns, 50 * SEC);
        assert!(b.try_take(&p, 51 * SEC));
    }

    #[test]
    fn tokens_above_a_smaller_max_are_cut() {
        let mut b = BucketState {
            tokens: 100,
            last_fill_ns: 0,
            last_used_ns: 0,
        };
        b.refill(&params(5, 1, SEC), 0);
        assert_eq!(b.tokens, 5);
    }

    #[test]
    fn staleness_needs_full_and_idle_for_a_refill_period() {
        let p = params(10, 5, SEC); // two fills to full
        let mut b = BucketState::new_full(&p, 0);
        assert!(b.try_take(&p, 0));
        assert!(!b.is_stale(&p, SEC)); // full again but idle only 1s
        assert!(b.is_stale(&p, 2 * SEC));
        let untouched = BucketState::new_full(&p, 0);
        assert!(!untouched.is_stale(&p, SEC + SEC / 2));
    }

    #[test]
    fn reset_and_retry_after_follow_envoy() {
        let p = params(1, 1, 3 * SEC);
        // Just after a fill boundary: the whole interval remains.
        assert_eq!(reset_seconds(&p, 30 * SEC), 3);
        assert_eq!(reset_seconds(&p, 31 * SEC + 1), 2);
        assert_eq!(reset_seconds(&p, 32 * SEC + SEC / 2), 1);
        assert_eq!(retry_after_seconds(&p, 30 * SEC), 3);
        assert_eq!(retry_after_seconds(&p, 32 * SEC + SEC / 2), 1);
        let sub_second = params(1, 1, 500 * 1_000_000);
        assert_eq!(reset_seconds(&sub_second, 0), 0);
        assert_eq!(retry_after_seconds(&sub_second, 0), 1);
    }
}
