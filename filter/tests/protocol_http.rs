//! HTTP request checks over header lists.

use egress_filter::protocol::{HttpChecks, HttpConfig, HttpViolation};

fn req<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "api.example.com"),
        (":path", "/v1"),
    ];
    for (k, v) in extra {
        if let Some(slot) = h.iter_mut().find(|(name, _)| name == k) {
            slot.1 = v;
        } else {
            h.push((k, v));
        }
    }
    h.retain(|(_, v)| *v != "<drop>");
    h
}

fn check(c: &HttpChecks, h: &[(&str, &str)], sni: Option<&str>) -> Result<(), HttpViolation> {
    c.check(h, Some("HTTP/2"), sni)
}

fn defaults() -> HttpChecks {
    HttpChecks::default()
}

#[test]
fn a_plain_request_passes() {
    let h = req(&[("user-agent", "curl/8"), ("accept", "*/*")]);
    assert_eq!(check(&defaults(), &h, Some("api.example.com")), Ok(()));
    assert_eq!(defaults().check(&h, Some("HTTP/1.1"), None), Ok(()));
}

#[test]
fn connect_is_refused_unless_allowed() {
    let h = req(&[
        (":method", "CONNECT"),
        (":path", "<drop>"),
        (":scheme", "<drop>"),
    ]);
    assert_eq!(
        check(&defaults(), &h, None),
        Err(HttpViolation::ConnectNotAllowed)
    );
    let allow = HttpChecks {
        allow_connect: true,
        ..defaults()
    };
    assert_eq!(check(&allow, &h, None), Ok(()));
    // Extended CONNECT (RFC 8441) is CONNECT too.
    let ws = req(&[(":method", "CONNECT"), (":protocol", "websocket")]);
    assert_eq!(
        check(&defaults(), &ws, None),
        Err(HttpViolation::ConnectNotAllowed)
    );
}

#[test]
fn method_allow_list() {
    let c = HttpChecks {
        allowed_methods: Some(vec!["GET".into(), "HEAD".into()]),
        ..defaults()
    };
    assert_eq!(check(&c, &req(&[(":method", "HEAD")]), None), Ok(()));
    assert_eq!(
        check(&c, &req(&[(":method", "POST")]), None),
        Err(HttpViolation::MethodNotAllowed {
            method: "POST".into()
        })
    );
    // Methods are case-sensitive (RFC 9110 §9.1).
    assert_eq!(
        check(&c, &req(&[(":method", "get")]), None),
        Err(HttpViolation::MethodNotAllowed {
            method: "get".into()
        })
    );
    assert_eq!(
        check(&defaults(), &req(&[(":method", "<drop>")]), None),
        Err(HttpViolation::MissingMethod)
    );
    assert_eq!(
        check(&defaults(), &req(&[(":method", "GE T")]), None),
        Err(HttpViolation::InvalidMethod {
            method: "GE T".into()
        })
    );
}

#[test]
fn authority_is_required_and_must_be_host_port() {
    let no_authority = req(&[(":authority", "<drop>")]);
    assert_eq!(
        check(&defaults(), &no_authority, None),
        Err(HttpViolation::MissingAuthority)
    );
    let empty = req(&[(":authority", "")]);
    assert_eq!(
        check(&defaults(), &empty, None),
        Err(HttpViolation::MissingAuthority)
    );
    let lax = HttpChecks {
        require_authority: false,
        ..defaults()
    };
    assert_eq!(check(&lax, &no_authority, None), Ok(()));
    // A Host header stands in for :authority.
    let host_only = req(&[(":authority", "<drop>"), ("host", "api.example.com")]);
    assert_eq!(check(&defaults(), &host_only, None), Ok(()));
    for bad in [
        "user@api.example.com",
        "api.example.com:https",
        "api example.com",
    ] {
        assert_eq!(
            check(&defaults(), &req(&[(":authority", bad)]), None),
            Err(HttpViolation::InvalidAuthority {
                authority: bad.into()
            })
        );
    }
}

#[test]
fn authority_must_match_sni() {
    let c = defaults();
    for (authority, sni) in [
        ("api.example.com", "api.example.com"),
        ("API.Example.com:443", "api.example.com"),
        ("api.example.com.", "api.example.com"),
        ("api.example.com", "API.EXAMPLE.COM."),
        ("[2001:db8::1]:443", "2001:db8::1"),
    ] {
        assert_eq!(
            check(&c, &req(&[(":authority", authority)]), Some(sni)),
            Ok(()),
            "{authority} vs {sni}"
        );
    }
    assert_eq!(
        check(
            &c,
            &req(&[(":authority", "blocked.example.org")]),
            Some("allowed.example.com")
        ),
        Err(HttpViolation::SniMismatch {
            host: "blocked.example.org".into(),
            sni: "allowed.example.com".into()
        })
    );
    // Unknown or empty SNI: nothing to compare.
    assert_eq!(
        check(&c, &req(&[(":authority", "x.org")]), Some("")),
        Ok(())
    );
    // Istio's mesh-internal SNI names a cluster, not the client's target.
    let istio = "outbound_.443_._.istio-egressgateway.istio-system.svc.cluster.local";
    assert_eq!(
        check(&c, &req(&[(":authority", "x.org")]), Some(istio)),
        Ok(())
    );
    let off = HttpChecks {
        require_sni_match: false,
        ..defaults()
    };
    assert_eq!(
        check(&off, &req(&[(":authority", "x.org")]), Some("y.org")),
        Ok(())
    );
}

#[test]
fn host_header_must_agree_with_authority() {
    let h = req(&[("host", "other.example.com")]);
    assert_eq!(
        check(&defaults(), &h, None),
        Err(HttpViolation::HostAuthorityMismatch {
            host: "other.example.com".into(),
            authority: "api.example.com".into()
        })
    );
    assert_eq!(
        check(&defaults(), &req(&[("Host", "API.example.com")]), None),
        Ok(())
    );
    let twice = vec![
        (":method", "GET"),
        (":authority", "a.com"),
        (":authority", "b.com"),
    ];
    assert_eq!(
        check(&defaults(), &twice, None),
        Err(HttpViolation::DuplicateHeader {
            name: ":authority".into()
        })
    );
}

#[test]
fn versions() {
    let h = req(&[]);
    assert_eq!(defaults().check(&h, Some("HTTP/1.1"), None), Ok(()));
    assert_eq!(
        defaults().check(&h, Some("HTTP/1.0"), None),
        Err(HttpViolation::VersionNotAllowed {
            version: "HTTP/1.0".into()
        })
    );
    assert_eq!(
        defaults().check(&h, Some("HTTP/3"), None),
        Err(HttpViolation::VersionNotAllowed {
            version: "HTTP/3".into()
        })
    );
    assert_eq!(
        defaults().check(&h, None, None),
        Err(HttpViolation::UnknownVersion)
    );
    let h3 = HttpChecks {
        allowed_versions: vec!["HTTP/3".into()],
        ..defaults()
    };
    assert_eq!(h3.check(&h, Some("HTTP/3"), None), Ok(()));
}

#[test]
fn header_count_and_size_limits() {
    let c = HttpChecks {
        max_headers: 6,
        max_header_bytes: 200,
        ..defaults()
    };
    let six = req(&[("a", "1"), ("b", "2")]);
    assert_eq!(check(&c, &six, None), Ok(()));
    let seven = req(&[("a", "1"), ("b", "2"), ("c", "3")]);
    assert_eq!(
        check(&c, &seven, None),
        Err(HttpViolation::TooManyHeaders { count: 7, max: 6 })
    );
    let long = "v".repeat(200);
    let big = req(&[("x", long.as_str())]);
    // 7+3 + 7+5 + 10+15 + 5+3 + 1+200 bytes of names and values.
    assert_eq!(
        check(&c, &big, None),
        Err(HttpViolation::HeadersTooLarge {
            bytes: 256,
            max: 200
        })
    );
}

#[test]
fn illegal_characters_are_refused() {
    for (name, value) in [
        ("x-a", "line\r\nInjected: 1"),
        ("x-a", "nul\0"),
        ("x-a", "del\x7f"),
        ("x-a", "bell\x07"),
    ] {
        assert_eq!(
            check(&defaults(), &req(&[(name, value)]), None),
            Err(HttpViolation::InvalidHeaderValue { name: name.into() })
        );
    }
    for name in ["bad name", "x:y", "x(y)", "", "é", ":unknown-pseudo"] {
        assert_eq!(
            check(&defaults(), &req(&[(name, "v")]), None),
            Err(HttpViolation::InvalidHeaderName { name: name.into() })
        );
    }
    // Tab and obs-text are legal in values.
    assert_eq!(
        check(
            &defaults(),
            &req(&[("x-a", "a\tb"), ("x-b", "caf\u{e9}")]),
            None
        ),
        Ok(())
    );
    // Non-UTF-8 bytes work through the byte-slice form.
    let raw: Vec<(Vec<u8>, Vec<u8>)> = req(&[])
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .chain([(b"x-bin".to_vec(), vec![0xff, 0xfe])])
        .collect();
    assert_eq!(defaults().check(&raw, Some("HTTP/2"), None), Ok(()));
}

#[test]
fn long_values_in_violations_are_cut() {
    let name = "x".repeat(1000) + " ";
    match check(&defaults(), &req(&[(name.as_str(), "v")]), None) {
        Err(HttpViolation::InvalidHeaderName { name }) => assert_eq!(name.len(), 128),
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_defaults_match_check_defaults() {
    assert_eq!(
        HttpConfig::default()
            .validate(
                &egress_filter::ConfigPath::root()
                    .field("protocol")
                    .field("http")
            )
            .unwrap(),
        HttpChecks::default()
    );
    assert_eq!(
        HttpViolation::ConnectNotAllowed.reason(),
        "http_connect_not_allowed"
    );
    assert_eq!(
        HttpViolation::SniMismatch {
            host: "a".into(),
            sni: "b".into()
        }
        .to_string(),
        ":authority host \"a\" differs from TLS SNI \"b\" (domain fronting)"
    );
}
