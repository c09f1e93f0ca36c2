//! Property tests over arbitrary bytes for every protocol parser: no panic, bounded buffering,
//! and results independent of how the input is split.

use std::path::PathBuf;

use proptest::prelude::*;

use egress_filter::protocol::{
    detect, normalize_host, parse_authority, ClientHelloParser, ConnectionInspector, Detection,
    HttpChecks, MAX_DETECT_BYTES,
};

fn capture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/tls")
            .join(name),
    )
    .unwrap()
}

/// Bytes that start like a TLS handshake record, so the parser gets past the first check.
fn tls_like() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..=4,
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..2048),
    )
        .prop_map(|(minor, len, rest)| {
            let mut v = vec![0x16, 0x03, minor];
            v.extend_from_slice(&(len % 2048).to_be_bytes());
            v.push(0x01);
            v.extend_from_slice(&rest);
            v
        })
}

/// A captured ClientHello with a few bytes overwritten and possibly cut short.
fn mutated_capture() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..4,
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(which, edits, cut)| {
            let name = [
                "curl.bin",
                "openssl_s_client_h2.bin",
                "openssl_s_client_tls12.bin",
                "openssl_s_client_no_sni.bin",
            ][which];
            let mut bytes = capture(name);
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let keep = cut.index(bytes.len() + 1).max(bytes.len() / 2);
            bytes.truncate(keep);
            bytes
        })
}

fn feed_in_chunks(
    parser: &mut ClientHelloParser,
    bytes: &[u8],
    chunk: usize,
    max: usize,
) -> Result<Option<String>, String> {
    let mut last = Ok(None);
    for piece in bytes.chunks(chunk.max(1)) {
        last = parser
            .feed(piece)
            .map(|h| h.map(|h| format!("{h:?}")))
            .map_err(|e| e.to_string());
        assert!(
            parser.buffered() <= max + 4,
            "buffered {} > {}",
            parser.buffered(),
            max + 4
        );
        if !matches!(last, Ok(None)) {
            break;
        }
    }
    last
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn detect_never_panics_and_never_waits_past_its_bound(bytes in proptest::collection::vec(any::<u8>(), 0..MAX_DETECT_BYTES + 64)) {
        if detect(&bytes) == Detection::NeedMoreBytes {
            prop_assert!(bytes.len() < MAX_DETECT_BYTES);
        }
    }

    #[test]
    fn client_hello_parser_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..64, max in 0usize..4096) {
        let mut p = ClientHelloParser::new(max);
        let _ = feed_in_chunks(&mut p, &bytes, chunk, max);
        let _ = p.finish();
        prop_assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn client_hello_parser_on_tls_looking_bytes(bytes in tls_like(), chunk in 1usize..300) {
        let mut whole = ClientHelloParser::new(1024);
        let expected = feed_in_chunks(&mut whole, &bytes, bytes.len(), 1024);
        let mut pieces = ClientHelloParser::new(1024);
        let got = feed_in_chunks(&mut pieces, &bytes, chunk, 1024);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn client_hello_parser_on_mutated_captures(bytes in mutated_capture(), chunk in 1usize..600) {
        let mut whole = ClientHelloParser::default();
        let expected = feed_in_chunks(&mut whole, &bytes, bytes.len(), 16384);
        let mut pieces = ClientHelloParser::default();
        let got = feed_in_chunks(&mut pieces, &bytes, chunk, 16384);
        prop_assert_eq!(&got, &expected);
        if let Ok(Some(_)) = whole.feed(&[]) {
            let hello = whole.feed(&[]).unwrap().unwrap().clone();
            if let Some(sni) = hello.sni {
                prop_assert!(sni.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
            }
        }
    }

    #[test]
    fn inspector_on_arbitrary_chunks(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1500), 0..16)) {
        let mut i = ConnectionInspector::new(2048);
        for c in &chunks {
            let done = i.feed(c).is_some();
            prop_assert!(i.buffered() <= MAX_DETECT_BYTES + 2048 + 4);
            if done {
                break;
            }
        }
        let _ = i.finish();
        prop_assert_eq!(i.buffered(), 0);
    }

    #[test]
    fn http_checks_on_arbitrary_headers(
        headers in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..24), proptest::collection::vec(any::<u8>(), 0..64)), 0..20),
        version in proptest::option::of("[ -~]{0,10}"),
        sni in proptest::option::of("[ -~]{0,40}"),
    ) {
        let c = HttpChecks::default();
        let _ = c.check(&headers, version.as_deref(), sni.as_deref());
    }

    #[test]
    fn authority_parser_on_arbitrary_text(text in "\\PC{0,64}") {
        if let Some(a) = parse_authority(&text) {
            prop_assert!(!a.host.is_empty());
            prop_assert!(text.starts_with(a.host));
        }
        let _ = normalize_host(&text);
    }
}
