//! Property tests for the rate limiter's parsers and stored-state decoding: arbitrary input
//! never panics, and corrupt shared data never lets traffic through unlimited.

use proptest::prelude::*;

use egress_filter::ratelimit::bucket::{
    decode_set, decode_single, encode_set, encode_single, BucketState, SetEntry, StoredKey,
};
use egress_filter::ratelimit::{
    parse_duration, BucketKey, BucketParams, CasStore, KeyAttribute, MemoryStore, RateLimitSpec,
    RateLimiter,
};

const SEC: u64 = 1_000_000_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn duration_parser_on_arbitrary_text(text in "\\PC{0,24}") {
        let _ = parse_duration(&text);
    }

    #[test]
    fn duration_parser_on_duration_like_text(text in "[0-9.]{0,14}(ms|s|m|h|x|)([0-9]{0,3}(ms|s))?") {
        let _ = parse_duration(&text);
    }

    #[test]
    fn key_attribute_parser(text in "\\PC{0,40}") {
        if let Ok(attr) = KeyAttribute::parse(&text) {
            // What parses prints back as the canonical (lower-cased) form.
            prop_assert_eq!(attr.to_string(), text.to_ascii_lowercase());
        }
    }

    #[test]
    fn decoders_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(state) = decode_single(&bytes) {
            prop_assert_eq!(encode_single(&state), bytes.clone());
        }
        if let Ok(entries) = decode_set(&bytes) {
            prop_assert_eq!(encode_set(&entries), bytes);
        }
    }

    #[test]
    fn set_encoding_round_trips(entries in proptest::collection::vec((any::<u32>(), any::<u64>(), any::<u64>(), "\\PC{0,200}"), 0..8)) {
        let entries: Vec<SetEntry> = entries
            .into_iter()
            .map(|(tokens, last_fill_ns, last_used_ns, key)| SetEntry {
                key: StoredKey::for_key(&key),
                state: BucketState { tokens, last_fill_ns, last_used_ns },
            })
            .collect();
        prop_assert_eq!(decode_set(&encode_set(&entries)), Ok(entries));
    }

    #[test]
    fn garbage_in_shared_data_is_recovered_and_still_limited(garbage in proptest::collection::vec(any::<u8>(), 0..200), max in 1u32..20) {
        let l = RateLimiter::new(RateLimitSpec {
            name: "f".into(),
            key: vec![],
            params: BucketParams { max_tokens: max, tokens_per_fill: 1, fill_interval_ns: SEC },
            max_keys: 1,
        });
        let store = MemoryStore::new();
        store.set("egress-guard/rl/v1/f/set/0", &garbage, 0).unwrap();
        let k = BucketKey::from_values(Vec::<Option<&str>>::new());
        let admitted = (0..100).filter(|_| l.check(&store, &k, 1_000 * SEC).allowed()).count();
        // Garbage decodes as some valid state at most holding `max` tokens, or is replaced by a new
        // (full) bucket: never more than one bucket's worth.
        prop_assert!(admitted <= max as usize);
    }

    #[test]
    fn arbitrary_clock_never_panics(times in proptest::collection::vec(any::<u64>(), 1..50), interval_ms in 50u64..100_000) {
        let l = RateLimiter::new(RateLimitSpec {
            name: "clock".into(),
            key: vec![],
            params: BucketParams { max_tokens: 3, tokens_per_fill: 2, fill_interval_ns: interval_ms * 1_000_000 },
            max_keys: 10,
        });
        let store = MemoryStore::new();
        let k = BucketKey::from_values([Some("x")]);
        for t in times {
            let d = l.check(&store, &k, t);
            prop_assert!(d.remaining <= 3);
            prop_assert!(d.retry_after_secs >= 1);
        }
    }
}
