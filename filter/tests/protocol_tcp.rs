//! TCP inspection: first bytes → facts → TCP checks, on captured ClientHellos and other protocols.

use std::path::PathBuf;

use egress_filter::protocol::{
    ConnectionFacts, ConnectionInspector, Protocol, ProtocolConfig, TcpChecks, TcpViolation,
    TlsError, TlsVersion, DEFAULT_MAX_CLIENT_HELLO_BYTES, MAX_DETECT_BYTES,
};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/tls")
            .join(name),
    )
    .unwrap()
}

fn inspect(bytes: &[u8]) -> ConnectionFacts {
    let mut i = ConnectionInspector::new(DEFAULT_MAX_CLIENT_HELLO_BYTES);
    match i.feed(bytes) {
        Some(f) => f.clone(),
        None => i.finish().clone(),
    }
}

fn checks(json: serde_json::Value) -> TcpChecks {
    ProtocolConfig::from_json(serde_json::json!({ "tcp": json }).to_string().as_bytes())
        .unwrap()
        .validate(&egress_filter::ConfigPath::root().field("protocol"))
        .unwrap()
        .tcp
}

#[test]
fn facts_from_a_captured_hello_in_any_split() {
    let bytes = data("curl.bin");
    for cut in 0..=bytes.len() {
        let mut i = ConnectionInspector::new(DEFAULT_MAX_CLIENT_HELLO_BYTES);
        let first = i.feed(&bytes[..cut]).cloned();
        assert_eq!(first.is_some(), cut == bytes.len(), "cut {cut}");
        let facts = i.feed(&bytes[cut..]).cloned().expect("complete");
        assert_eq!(facts.protocol, Protocol::Tls);
        assert_eq!(facts.sni(), Some("api.example.com"));
        assert_eq!(facts.tls_version(), Some("1.3"));
        assert_eq!(facts.alpn(), ["h2", "http/1.1"]);
    }
    let facts = inspect(&bytes);
    assert_eq!(
        facts.values("connection.protocol"),
        Some(vec!["tls".to_owned()])
    );
    assert_eq!(
        facts.values("connection.tls_version"),
        Some(vec!["1.3".to_owned()])
    );
    assert_eq!(
        facts.values("connection.alpn"),
        Some(vec!["h2".to_owned(), "http/1.1".to_owned()])
    );
    assert_eq!(facts.values("connection.sni"), None);
    let tls12 = inspect(&data("openssl_s_client_tls12.bin"));
    assert_eq!(
        tls12.values("connection.tls_version"),
        Some(vec!["1.2".to_owned()])
    );
    assert_eq!(tls12.values("connection.alpn"), Some(vec![]));
}

#[test]
fn facts_for_other_protocols() {
    let http = inspect(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (http.protocol, http.client_hello.clone(), http.tls_version()),
        (Protocol::Http1, None, None)
    );
    assert_eq!(http.values("connection.tls_version"), Some(vec![]));
    assert_eq!(inspect(b"SSH-2.0-OpenSSH_9.2\r\n").protocol, Protocol::Ssh);
    assert_eq!(
        inspect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").protocol,
        Protocol::Http2
    );
    assert_eq!(inspect(b"\x00\x01binary").protocol, Protocol::Unknown);
    // Ended while undecided.
    assert_eq!(inspect(b"GET /").protocol, Protocol::Unknown);
}

#[test]
fn only_tls_on_tls_ports() {
    let c = checks(serde_json::json!({"tlsPorts": [443]}));
    for (bytes, protocol) in [
        (&b"GET / HTTP/1.1\r\n"[..], Protocol::Http1),
        (b"SSH-2.0-x\r\n", Protocol::Ssh),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Protocol::Http2),
        (b"\xde\xad\xbe\xef", Protocol::Unknown),
    ] {
        let facts = inspect(bytes);
        assert_eq!(
            c.check(&facts, 443, None),
            Err(TcpViolation::NotTls {
                port: 443,
                protocol
            })
        );
        assert_eq!(
            c.check(&facts, 22, None),
            Ok(()),
            "other ports are not TLS-only"
        );
    }
    assert_eq!(
        c.check(&inspect(&data("curl.bin")), 443, Some("api.example.com")),
        Ok(())
    );
    assert_eq!(
        TcpViolation::NotTls {
            port: 443,
            protocol: Protocol::Ssh
        }
        .to_string(),
        "port 443 is declared TLS but the connection speaks ssh"
    );
}

#[test]
fn unparseable_tls_is_denied() {
    let c = checks(serde_json::json!({"tlsPorts": [443]}));
    let mut bad = data("curl.bin");
    bad[5] = 0x02; // not a ClientHello
    let facts = inspect(&bad);
    assert_eq!(facts.protocol, Protocol::Tls);
    assert_eq!(
        c.check(&facts, 443, None),
        Err(TcpViolation::BadClientHello(TlsError::NotClientHello {
            msg_type: 2
        }))
    );
    // Even on a port not declared TLS: a TLS connection that cannot be evaluated is refused.
    assert!(c.check(&facts, 8080, None).is_err());
    // Cut short by the end of the stream.
    let facts = inspect(&data("curl.bin")[..100]);
    assert_eq!(
        c.check(&facts, 443, None),
        Err(TcpViolation::BadClientHello(TlsError::Truncated))
    );
    assert_eq!(
        c.check(&facts, 443, None).unwrap_err().reason(),
        "tls_truncated"
    );
}

#[test]
fn minimum_tls_version() {
    let tls12 = inspect(&data("openssl_s_client_tls12.bin"));
    let tls13 = inspect(&data("openssl_s_client_h2.bin"));
    let min13 = checks(serde_json::json!({"minTlsVersion": "1.3"}));
    assert_eq!(
        min13.check(&tls12, 443, Some("legacy.example.org")),
        Err(TcpViolation::TlsVersionTooLow {
            offered: TlsVersion::TLS12,
            min: TlsVersion::TLS13
        })
    );
    assert_eq!(min13.check(&tls13, 443, Some("api.example.com")), Ok(()));
    let min12 = checks(serde_json::json!({}));
    assert_eq!(min12.check(&tls12, 443, Some("legacy.example.org")), Ok(()));
}

#[test]
fn alpn_allow_list() {
    let h2 = inspect(&data("openssl_s_client_h2.bin")); // offers h2, http/1.1
    let only_h2 = checks(serde_json::json!({"allowedAlpn": ["h2"]}));
    assert_eq!(
        only_h2.check(&h2, 443, None),
        Err(TcpViolation::AlpnNotAllowed {
            protocol: "http/1.1".into()
        })
    );
    let both = checks(serde_json::json!({"allowedAlpn": ["h2", "http/1.1"]}));
    assert_eq!(both.check(&h2, 443, None), Ok(()));
    // No ALPN offered: fine unless required.
    let tls12 = inspect(&data("openssl_s_client_tls12.bin"));
    assert_eq!(both.check(&tls12, 443, None), Ok(()));
    let required = checks(serde_json::json!({"allowedAlpn": ["h2"], "requireAlpn": true}));
    assert_eq!(
        required.check(&tls12, 443, None),
        Err(TcpViolation::AlpnMissing)
    );
}

#[test]
fn sni_presence_and_agreement() {
    let c = checks(serde_json::json!({}));
    let no_sni = inspect(&data("openssl_s_client_no_sni.bin"));
    assert_eq!(c.check(&no_sni, 443, None), Err(TcpViolation::SniMissing));
    let lax = checks(serde_json::json!({"requireSni": false}));
    assert_eq!(lax.check(&no_sni, 443, None), Ok(()));
    // Presence is optional then, agreement is not.
    assert_eq!(
        lax.check(&inspect(&data("curl.bin")), 443, Some("other.example.com")),
        Err(TcpViolation::SniMismatch {
            sni: "api.example.com".into(),
            requested: "other.example.com".into()
        })
    );

    let curl = inspect(&data("curl.bin"));
    assert_eq!(c.check(&curl, 443, Some("api.example.com")), Ok(()));
    assert_eq!(c.check(&curl, 443, Some("API.EXAMPLE.COM.")), Ok(()));
    assert_eq!(
        c.check(&curl, 443, None),
        Ok(()),
        "requested name unknown: presence is enough"
    );
    assert_eq!(c.check(&curl, 443, Some("")), Ok(()));
    assert_eq!(
        c.check(&curl, 443, Some("other.example.com")),
        Err(TcpViolation::SniMismatch {
            sni: "api.example.com".into(),
            requested: "other.example.com".into()
        })
    );
}

#[test]
fn ech_is_refused_unless_allowed() {
    // The openssl hello with one extension appended: encrypted_client_hello (0xfe0d), empty.
    let stream = data("openssl_s_client_h2.bin");
    let mut hs = stream[5..].to_vec();
    hs.extend_from_slice(&[0xfe, 0x0d, 0x00, 0x00]);
    let body_len = hs.len() - 4;
    hs[1..4].copy_from_slice(&(body_len as u32).to_be_bytes()[1..]);
    // Walk to the extensions length past version, random, session id, suites, compression.
    let ext_len_at = 4 + 2 + 32 + 1 + usize::from(hs[4 + 34]);
    let ext_len_at =
        ext_len_at + 2 + usize::from(u16::from_be_bytes([hs[ext_len_at], hs[ext_len_at + 1]]));
    let ext_len_at = ext_len_at + 1 + usize::from(hs[ext_len_at]);
    let old = u16::from_be_bytes([hs[ext_len_at], hs[ext_len_at + 1]]);
    hs[ext_len_at..ext_len_at + 2].copy_from_slice(&(old + 4).to_be_bytes());
    let mut ech = vec![0x16, 0x03, 0x01];
    ech.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    ech.extend_from_slice(&hs);
    let facts = inspect(&ech);
    assert!(facts.client_hello.as_ref().expect("parses").ech);
    let c = checks(serde_json::json!({}));
    assert_eq!(
        c.check(&facts, 443, Some("api.example.com")),
        Err(TcpViolation::EchNotAllowed)
    );
    let allow = checks(serde_json::json!({"allowEch": true}));
    assert_eq!(allow.check(&facts, 443, Some("api.example.com")), Ok(()));
}

#[test]
fn buffering_is_bounded() {
    // An HTTP/1 request line that never ends.
    let mut i = ConnectionInspector::new(DEFAULT_MAX_CLIENT_HELLO_BYTES);
    assert!(i.feed(b"GET /").is_none());
    let mut settled = None;
    for _ in 0..100 {
        if let Some(f) = i.feed(&[b'a'; 1000]) {
            settled = Some(f.protocol);
            break;
        }
        assert!(i.buffered() <= MAX_DETECT_BYTES);
    }
    assert_eq!(settled, Some(Protocol::Unknown));
    // A TLS record stream that keeps going: refused at the ClientHello limit.
    let mut i = ConnectionInspector::new(1024);
    let mut stream = vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x04, 0x00];
    // Records of 129 bytes: the 8th would take the handshake past 4 + 1024 bytes.
    stream.extend(
        std::iter::repeat_n(
            [0x16, 0x03, 0x01, 0x00, 0x81].into_iter().chain([0u8; 129]),
            20,
        )
        .flatten(),
    );
    let mut result = None;
    for chunk in stream.chunks(7) {
        assert!(i.buffered() <= 1024 + 4 + MAX_DETECT_BYTES);
        if let Some(f) = i.feed(chunk) {
            result = Some(f.clone());
            break;
        }
    }
    let facts = result.expect("settled");
    assert!(
        matches!(facts.tls_error, Some(TlsError::TooLarge { max: 1024, .. })),
        "{facts:?}"
    );
}
