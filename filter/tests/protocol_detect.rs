//! Protocol detection from a connection's first bytes.

use std::path::PathBuf;

use egress_filter::protocol::{detect, Detection, Protocol, HTTP2_PREFACE, MAX_DETECT_BYTES};

fn detected(bytes: &[u8]) -> Protocol {
    match detect(bytes) {
        Detection::Detected(p) => p,
        Detection::NeedMoreBytes => panic!("{:?} still undecided", String::from_utf8_lossy(bytes)),
    }
}

#[test]
fn http1_request_lines() {
    for line in [
        &b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n"[..],
        b"POST /v1/upload?x=1 HTTP/1.1\r\n",
        b"GET http://api.example.com/ HTTP/1.1\r\n",
        b"CONNECT api.example.com:443 HTTP/1.1\r\n",
        b"OPTIONS * HTTP/1.1\r\n",
        b"HEAD /x HTTP/1.0\r\n",
        b"PROPFIND /dav HTTP/1.1\r\n",
        b"GET / HTTP/1.1\n", // bare LF, tolerated by RFC 9112
    ] {
        assert_eq!(
            detected(line),
            Protocol::Http1,
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn text_that_only_starts_like_http1_is_unknown() {
    for line in [
        &b"SET key value\r\n"[..], // Redis inline command: token, space, ...
        b"EHLO mail.example.com\r\n",
        b"GET / HTTP/2.0\r\n",
        b"GET / HTTP/1.x\r\n",
        b"GET /a b HTTP/1.1\r\n",
        b"GET  / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\r",
        b" GET / HTTP/1.1\r\n",
        b"GET\t/ HTTP/1.1\r\n",
        b"G(T / HTTP/1.1\r\n",
        b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA / HTTP/1.1\r\n", // 40-byte method
    ] {
        assert_eq!(
            detected(line),
            Protocol::Unknown,
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn http2_prior_knowledge_preface() {
    assert_eq!(detected(HTTP2_PREFACE), Protocol::Http2);
    let mut with_settings = HTTP2_PREFACE.to_vec();
    with_settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    assert_eq!(detected(&with_settings), Protocol::Http2);
    assert_eq!(
        detected(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
        Protocol::Unknown
    );
}

#[test]
fn ssh_banner() {
    assert_eq!(
        detected(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"),
        Protocol::Ssh
    );
    assert_eq!(detected(b"SSH-"), Protocol::Ssh);
    assert_eq!(detect(b"SSH"), Detection::NeedMoreBytes);
    assert_eq!(
        detect(b"SSX-2.0"),
        Detection::NeedMoreBytes,
        "could still be a method token"
    );
    assert_eq!(detected(b"SSX-2.0\r\n"), Protocol::Unknown);
}

#[test]
fn tls_records() {
    let capture =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls/curl.bin"))
            .unwrap();
    assert_eq!(detected(&capture), Protocol::Tls);
    assert_eq!(detected(&capture[..3]), Protocol::Tls);
    for minor in 0..=4u8 {
        assert_eq!(detected(&[0x16, 0x03, minor]), Protocol::Tls);
    }
    assert_eq!(detected(&[0x16, 0x03, 0x05]), Protocol::Unknown);
    assert_eq!(detected(&[0x16, 0x02, 0x01]), Protocol::Unknown);
    assert_eq!(detected(&[0x17, 0x03, 0x03]), Protocol::Unknown);
    // SSLv2-compatible hello: not accepted as TLS.
    assert_eq!(detected(&[0x80, 0x2e, 0x01, 0x03, 0x01]), Protocol::Unknown);
}

#[test]
fn short_prefixes_wait_for_more() {
    for prefix in [
        &b""[..],
        b"\x16",
        b"\x16\x03",
        b"G",
        b"GE",
        b"GET",
        b"GET ",
        b"GET /",
        b"GET / HTTP/1.1",
        b"GET / HTTP/1.1\r",
        b"P",
        b"PRI * HTTP/2.0\r\n",
        b"S",
        b"SS",
    ] {
        assert_eq!(
            detect(prefix),
            Detection::NeedMoreBytes,
            "{:?}",
            String::from_utf8_lossy(prefix)
        );
    }
    // Not a prefix of anything known: decided at once.
    for prefix in [&b"\x00"[..], b"\xff\xfe", b"{", b"\x16\x04"] {
        assert_eq!(detect(prefix), Detection::Detected(Protocol::Unknown));
    }
}

#[test]
fn random_bytes_are_unknown_and_never_wait_forever() {
    // Deterministic pseudo-random streams (xorshift), 64 of them, 1 KiB each.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..64 {
        let bytes: Vec<u8> = (0..1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        // Random data might start with 0x16 0x03 0x0X by chance; that is TLS-looking by design.
        let p = detected(&bytes);
        assert!(p == Protocol::Unknown || p == Protocol::Tls, "{p:?}");
    }
    let long_line = [b"GET /".as_slice(), &vec![b'a'; MAX_DETECT_BYTES]].concat();
    assert_eq!(detected(&long_line), Protocol::Unknown);
}

#[test]
fn protocol_names_for_rules() {
    let names: Vec<&str> = [
        Protocol::Tls,
        Protocol::Http1,
        Protocol::Http2,
        Protocol::Ssh,
        Protocol::Unknown,
    ]
    .iter()
    .map(|p| p.as_str())
    .collect();
    assert_eq!(names, ["tls", "http1", "http2", "ssh", "unknown"]);
    assert_eq!(
        Protocol::from_http_protocol("HTTP/1.1"),
        Some(Protocol::Http1)
    );
    assert_eq!(
        Protocol::from_http_protocol("HTTP/2"),
        Some(Protocol::Http2)
    );
    assert_eq!(
        Protocol::from_http_protocol("HTTP/3"),
        Some(Protocol::Http3)
    );
    assert_eq!(Protocol::Http3.as_str(), "http3");
    assert_eq!(Protocol::from_http_protocol("HTTP/0.9"), None);
}
