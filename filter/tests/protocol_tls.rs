//! TLS ClientHello parser: real ClientHellos captured from openssl and curl, the same messages
//! fragmented across records and reads, synthesized GREASE/ECH hellos, and malformed input.

use std::path::PathBuf;

use egress_filter::protocol::{
    is_grease, parse_client_hello, ClientHello, ClientHelloParser, TlsError, TlsVersion,
    DEFAULT_MAX_CLIENT_HELLO_BYTES,
};

fn data(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tls")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const CAPTURES: [&str; 4] = [
    "openssl_s_client_h2.bin",
    "openssl_s_client_tls12.bin",
    "openssl_s_client_no_sni.bin",
    "curl.bin",
];

fn parse(bytes: &[u8]) -> Result<ClientHello, TlsError> {
    parse_client_hello(bytes, DEFAULT_MAX_CLIENT_HELLO_BYTES)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The handshake bytes carried by a stream of records (test-side reassembly).
fn handshake_of(stream: &[u8]) -> (u16, Vec<u8>) {
    let mut hs = Vec::new();
    let mut i = 0;
    let version = u16::from_be_bytes([stream[1], stream[2]]);
    while i + 5 <= stream.len() {
        let len = usize::from(u16::from_be_bytes([stream[i + 3], stream[i + 4]]));
        hs.extend_from_slice(&stream[i + 5..i + 5 + len]);
        i += 5 + len;
    }
    (version, hs)
}

/// Re-frames handshake bytes into records cut at `cuts` (offsets into the handshake bytes).
fn records(version: u16, hs: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(hs.len());
    for w in bounds.windows(2) {
        let frag = &hs[w[0]..w[1]];
        out.push(0x16);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&(frag.len() as u16).to_be_bytes());
        out.extend_from_slice(frag);
    }
    out
}

/// Builds ClientHellos for cases no capture covers (GREASE, ECH, malformed fields).
struct HelloBuilder {
    legacy_version: u16,
    session_id: Vec<u8>,
    suites: Vec<u16>,
    compression: Vec<u8>,
    extensions: Option<Vec<(u16, Vec<u8>)>>,
}

impl HelloBuilder {
    fn new() -> Self {
        HelloBuilder {
            legacy_version: 0x0303,
            session_id: vec![7; 32],
            suites: vec![0x1301, 0x1302, 0xc02f],
            compression: vec![0],
            extensions: Some(Vec::new()),
        }
    }
    fn ext(mut self, ext_type: u16, data: Vec<u8>) -> Self {
        self.extensions
            .get_or_insert_with(Vec::new)
            .push((ext_type, data));
        self
    }
    fn body(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.legacy_version.to_be_bytes());
        b.extend_from_slice(&[0x42; 32]);
        b.push(self.session_id.len() as u8);
        b.extend_from_slice(&self.session_id);
        b.extend_from_slice(&((self.suites.len() * 2) as u16).to_be_bytes());
        for s in &self.suites {
            b.extend_from_slice(&s.to_be_bytes());
        }
        b.push(self.compression.len() as u8);
        b.extend_from_slice(&self.compression);
        if let Some(exts) = &self.extensions {
            let mut e = Vec::new();
            for (t, d) in exts {
                e.extend_from_slice(&t.to_be_bytes());
                e.extend_from_slice(&(d.len() as u16).to_be_bytes());
                e.extend_from_slice(d);
            }
            b.extend_from_slice(&(e.len() as u16).to_be_bytes());
            b.extend_from_slice(&e);
        }
        b
    }
    fn handshake(&self) -> Vec<u8> {
        let body = self.body();
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        hs
    }
    fn stream(&self) -> Vec<u8> {
        records(0x0301, &self.handshake(), &[])
    }
}

fn sni_ext(name: &[u8]) -> Vec<u8> {
    let mut entry = vec![0u8];
    entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
    entry.extend_from_slice(name);
    let mut d = (entry.len() as u16).to_be_bytes().to_vec();
    d.extend_from_slice(&entry);
    d
}

fn alpn_ext(names: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for n in names {
        list.push(n.len() as u8);
        list.extend_from_slice(n);
    }
    let mut d = (list.len() as u16).to_be_bytes().to_vec();
    d.extend_from_slice(&list);
    d
}

fn versions_ext(versions: &[u16]) -> Vec<u8> {
    let mut d = vec![(versions.len() * 2) as u8];
    for v in versions {
        d.extend_from_slice(&v.to_be_bytes());
    }
    d
}

// ---------------------------------------------------------------------------------------------
// Real captures

#[test]
fn openssl_with_sni_and_alpn() {
    let h = parse(&data("openssl_s_client_h2.bin")).unwrap();
    assert_eq!(h.record_version, 0x0301);
    assert_eq!(h.legacy_version, 0x0303);
    assert_eq!(h.sni.as_deref(), Some("api.example.com"));
    assert_eq!(h.alpn, Some(strings(&["h2", "http/1.1"])));
    assert_eq!(
        h.supported_versions,
        Some(vec![0x0304, 0x0303, 0x0302, 0x0301])
    );
    assert_eq!(h.max_offered_version(), TlsVersion::TLS13);
    assert!(!h.ech);
    assert!(!h.grease);
    assert_eq!(h.cipher_suite_count, 31);
    assert_eq!(
        h.extension_types,
        vec![
            0x0000, 0x000b, 0x000a, 0x0023, 0x0010, 0x0016, 0x0017, 0x000d, 0x002b, 0x002d, 0x0033
        ]
    );
    assert_eq!(h.records, 1);
}

#[test]
fn openssl_tls12_only() {
    let h = parse(&data("openssl_s_client_tls12.bin")).unwrap();
    assert_eq!(h.sni.as_deref(), Some("legacy.example.org"));
    assert_eq!(h.alpn, None);
    assert_eq!(h.supported_versions, None);
    assert_eq!(h.legacy_version, 0x0303);
    assert_eq!(h.max_offered_version(), TlsVersion::TLS12);
    assert_eq!(h.cipher_suite_count, 28);
}

#[test]
fn openssl_without_sni() {
    let h = parse(&data("openssl_s_client_no_sni.bin")).unwrap();
    assert_eq!(h.sni, None);
    assert_eq!(h.alpn, None);
    assert_eq!(h.max_offered_version(), TlsVersion::TLS13);
}

#[test]
fn curl_hello() {
    let h = parse(&data("curl.bin")).unwrap();
    assert_eq!(h.sni.as_deref(), Some("api.example.com"));
    assert_eq!(h.alpn, Some(strings(&["h2", "http/1.1"])));
    assert_eq!(
        h.supported_versions,
        Some(vec![0x0304, 0x0303, 0x0302, 0x0301])
    );
    assert_eq!(h.extension_types.last(), Some(&0x0015)); // padding to 512 bytes
    assert_eq!(data("curl.bin").len(), 517);
}

#[test]
fn every_read_split_gives_the_same_result() {
    for name in CAPTURES {
        let bytes = data(name);
        let whole = parse(&bytes).unwrap();
        for cut in 0..=bytes.len() {
            let mut p = ClientHelloParser::default();
            let first = p.feed(&bytes[..cut]).unwrap().cloned();
            if cut < bytes.len() {
                assert_eq!(
                    first,
                    None,
                    "{name}: complete after {cut} of {} bytes",
                    bytes.len()
                );
            }
            let second = p.feed(&bytes[cut..]).unwrap().cloned();
            assert_eq!(second.as_ref(), Some(&whole), "{name} split at {cut}");
            assert_eq!(p.consumed(), bytes.len());
        }
        // One byte per read.
        let mut p = ClientHelloParser::default();
        let mut result = None;
        for b in &bytes {
            result = p.feed(std::slice::from_ref(b)).unwrap().cloned();
        }
        assert_eq!(result.as_ref(), Some(&whole), "{name} byte by byte");
    }
}

#[test]
fn handshake_fragmented_across_records() {
    for name in CAPTURES {
        let (version, hs) = handshake_of(&data(name));
        let whole = parse(&data(name)).unwrap();
        let n = hs.len();
        for cuts in [
            vec![1], // record of one byte: the handshake type alone
            vec![3], // the 3-byte length split from its type
            vec![4], // header, then body
            vec![n / 2],
            vec![n - 1],
            vec![2, n / 3], // three records
            vec![n / 3, 2 * n / 3],
            vec![40, 41], // a one-byte record in the middle
        ] {
            let stream = records(version, &hs, &cuts);
            let h = parse(&stream).unwrap_or_else(|e| panic!("{name} cuts {cuts:?}: {e}"));
            assert_eq!(h.records, cuts.len() + 1);
            assert_eq!(
                ClientHello {
                    records: 1,
                    ..h.clone()
                },
                whole,
                "{name} cuts {cuts:?}"
            );
        }
    }
}

#[test]
fn fragmented_records_with_every_read_split() {
    let (version, hs) = handshake_of(&data("curl.bin"));
    let stream = records(version, &hs, &[100, 300]);
    let whole = parse(&stream).unwrap();
    assert_eq!(whole.records, 3);
    for cut in 0..=stream.len() {
        let mut p = ClientHelloParser::default();
        assert_eq!(
            p.feed(&stream[..cut]).unwrap().is_some(),
            cut == stream.len()
        );
        assert_eq!(
            p.feed(&stream[cut..]).unwrap(),
            Some(&whole),
            "split at {cut}"
        );
    }
}

#[test]
fn bytes_after_the_hello_are_left_alone() {
    let mut stream = data("openssl_s_client_h2.bin");
    let len = stream.len();
    // A TLS 1.3 middlebox-compat change_cipher_spec record and early data follow.
    stream.extend_from_slice(&[
        0x14, 0x03, 0x03, 0x00, 0x01, 0x01, 0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5,
    ]);
    let mut p = ClientHelloParser::default();
    let h = p.feed(&stream).unwrap().cloned().unwrap();
    assert_eq!(h.sni.as_deref(), Some("api.example.com"));
    assert_eq!(p.consumed(), len);
    // Later reads change nothing.
    assert_eq!(p.feed(b"more").unwrap(), Some(&h));
}

// ---------------------------------------------------------------------------------------------
// Synthesized hellos

#[test]
fn grease_and_ech() {
    let stream = HelloBuilder {
        suites: vec![0x8a8a, 0x1301, 0x1302],
        ..HelloBuilder::new()
    }
    .ext(0x1a1a, vec![])
    .ext(0x0000, sni_ext(b"cover.example.net"))
    .ext(0x0010, alpn_ext(&[b"h2"]))
    .ext(0x002b, versions_ext(&[0x7a7a, 0x0304, 0x0303]))
    .ext(0xfe0d, vec![0x00, 0x00, 0x01, 0x00, 0x01, 0x2a])
    .ext(0x4a4a, vec![0])
    .stream();
    let h = parse(&stream).unwrap();
    assert!(h.grease);
    assert!(h.ech);
    assert_eq!(h.sni.as_deref(), Some("cover.example.net"));
    assert_eq!(
        h.supported_versions,
        Some(vec![0x0304, 0x0303]),
        "GREASE dropped"
    );
    assert_eq!(h.max_offered_version(), TlsVersion::TLS13);
    assert_eq!(
        h.extension_types.iter().filter(|t| is_grease(**t)).count(),
        2
    );
}

#[test]
fn hello_without_extensions_is_legal() {
    let stream = HelloBuilder {
        extensions: None,
        ..HelloBuilder::new()
    }
    .stream();
    let h = parse(&stream).unwrap();
    assert_eq!(
        (&h.sni, &h.alpn, &h.supported_versions),
        (&None, &None, &None)
    );
    assert_eq!(h.max_offered_version(), TlsVersion::TLS12);
}

#[test]
fn unknown_server_name_types_are_skipped() {
    let mut list = vec![7u8, 0, 3, b'a', b'b', b'c'];
    list.extend_from_slice(&[0, 0, 5]);
    list.extend_from_slice(b"x.org");
    let mut d = (list.len() as u16).to_be_bytes().to_vec();
    d.extend_from_slice(&list);
    let h = parse(&HelloBuilder::new().ext(0, d).stream()).unwrap();
    assert_eq!(h.sni.as_deref(), Some("x.org"));
}

// ---------------------------------------------------------------------------------------------
// Refusals

fn err(stream: &[u8]) -> TlsError {
    parse(stream).expect_err("must be refused")
}

#[test]
fn record_layer_refusals() {
    let good = data("openssl_s_client_h2.bin");
    let mut alert = good.clone();
    alert[0] = 0x15;
    assert_eq!(
        err(&alert),
        TlsError::NotHandshakeRecord { content_type: 0x15 }
    );
    let mut v2 = good.clone();
    v2[1] = 0x02;
    assert_eq!(
        err(&v2),
        TlsError::UnsupportedRecordVersion { version: 0x0201 }
    );
    assert_eq!(err(&[0x16, 0x03, 0x01, 0x00, 0x00]), TlsError::EmptyRecord);
    assert_eq!(
        err(&[0x16, 0x03, 0x01, 0x40, 0x01]),
        TlsError::RecordTooLong { length: 16385 }
    );
    // A second record that is not a handshake record.
    let (version, hs) = handshake_of(&good);
    let mut split = records(version, &hs, &[50]);
    split[5 + 50] = 0x17;
    assert_eq!(
        err(&split),
        TlsError::NotHandshakeRecord { content_type: 0x17 }
    );
}

#[test]
fn handshake_layer_refusals() {
    let (version, mut hs) = handshake_of(&data("curl.bin"));
    hs[0] = 0x02; // ServerHello
    assert_eq!(
        err(&records(version, &hs, &[])),
        TlsError::NotClientHello { msg_type: 2 }
    );
    // Refused from the first byte of the handshake, without waiting for the rest.
    let mut p = ClientHelloParser::default();
    assert_eq!(
        p.feed(&records(version, &hs, &[])[..6]).unwrap_err(),
        TlsError::NotClientHello { msg_type: 2 }
    );

    let mut p = ClientHelloParser::new(1024);
    let big = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x10, 0x00];
    assert_eq!(
        p.feed(&big).unwrap_err(),
        TlsError::TooLarge {
            length: 4096,
            max: 1024
        }
    );

    let (version, hs) = handshake_of(&data("curl.bin"));
    let mut trailing = hs.clone();
    trailing.extend_from_slice(&[0x01, 0x00]);
    assert_eq!(
        err(&records(version, &trailing, &[])),
        TlsError::TrailingData
    );

    let stream = data("curl.bin");
    assert_eq!(err(&stream[..300]), TlsError::Truncated);
    assert_eq!(err(&[]), TlsError::Truncated);
}

#[test]
fn records_beyond_the_limit_are_refused_before_buffering() {
    let mut p = ClientHelloParser::new(600);
    // Declares 600 bytes of body (within the limit), sent in records of 100 bytes: the 7th
    // record would take the handshake past 604 bytes and is refused from its header.
    let mut stream = vec![0x16, 0x03, 0x01, 0x00, 0x64, 0x01, 0x00, 0x02, 0x58];
    stream.extend_from_slice(&[0u8; 96]);
    for _ in 0..6 {
        stream.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x64]);
        stream.extend_from_slice(&[0u8; 100]);
    }
    let e = p.feed(&stream).unwrap_err();
    assert!(matches!(e, TlsError::TooLarge { max: 600, .. }), "{e:?}");
    assert_eq!(p.buffered(), 0, "buffer released on error");
}

#[test]
fn body_refusals() {
    let cases: Vec<(HelloBuilder, TlsError)> = vec![
        (
            HelloBuilder {
                legacy_version: 0x0200,
                ..HelloBuilder::new()
            },
            TlsError::Malformed {
                field: "legacy_version",
            },
        ),
        (
            HelloBuilder {
                session_id: vec![0; 33],
                ..HelloBuilder::new()
            },
            TlsError::Malformed {
                field: "legacy_session_id",
            },
        ),
        (
            HelloBuilder {
                suites: vec![],
                ..HelloBuilder::new()
            },
            TlsError::Malformed {
                field: "cipher_suites",
            },
        ),
        (
            HelloBuilder {
                compression: vec![],
                ..HelloBuilder::new()
            },
            TlsError::Malformed {
                field: "legacy_compression_methods",
            },
        ),
        (
            HelloBuilder::new()
                .ext(0x10, alpn_ext(&[b"h2"]))
                .ext(0x10, alpn_ext(&[b"h2"])),
            TlsError::DuplicateExtension { ext_type: 0x10 },
        ),
        (
            HelloBuilder::new().ext(0, sni_ext(b"evil.com\0.example.com")),
            TlsError::InvalidServerName,
        ),
        (
            HelloBuilder::new().ext(0, sni_ext(b"")),
            TlsError::InvalidServerName,
        ),
        (
            HelloBuilder::new().ext(0, sni_ext(b"a b")),
            TlsError::InvalidServerName,
        ),
        (
            HelloBuilder::new().ext(0, vec![0, 0]),
            TlsError::Malformed {
                field: "server_name list",
            },
        ),
        (
            HelloBuilder::new().ext(0x10, alpn_ext(&[b"h2", b""])),
            TlsError::Malformed {
                field: "alpn protocol",
            },
        ),
        (
            HelloBuilder::new().ext(0x10, vec![0, 5, 2, b'h']),
            TlsError::Malformed { field: "alpn list" },
        ),
        (
            HelloBuilder::new().ext(0x2b, vec![3, 3, 4, 3]),
            TlsError::Malformed {
                field: "supported_versions",
            },
        ),
    ];
    for (builder, expected) in cases {
        assert_eq!(err(&builder.stream()), expected);
    }
    // Two host_name entries in one server_name list.
    let mut list = Vec::new();
    for name in [b"a.com", b"b.com"] {
        list.extend_from_slice(&[0, 0, 5]);
        list.extend_from_slice(name);
    }
    let mut d = (list.len() as u16).to_be_bytes().to_vec();
    d.extend_from_slice(&list);
    assert_eq!(
        err(&HelloBuilder::new().ext(0, d).stream()),
        TlsError::Malformed {
            field: "server_name repeats host_name"
        }
    );
    // Extension block length that disagrees with the message.
    let mut body_hs = HelloBuilder::new()
        .ext(0x10, alpn_ext(&[b"h2"]))
        .handshake();
    let ext_len_at = body_hs.len() - 9 - 2;
    body_hs[ext_len_at + 1] += 1;
    assert!(matches!(
        err(&records(0x0301, &body_hs, &[])),
        TlsError::Malformed { .. }
    ));
}

#[test]
fn errors_have_reasons_and_messages() {
    assert_eq!(TlsError::Truncated.reason(), "tls_truncated");
    assert_eq!(
        TlsError::TooLarge {
            length: 20000,
            max: 16384
        }
        .to_string(),
        "ClientHello of 20000 bytes exceeds the 16384-byte limit"
    );
    assert_eq!(
        TlsError::DuplicateExtension { ext_type: 0x10 }.to_string(),
        "ClientHello repeats extension 0x0010"
    );
}
