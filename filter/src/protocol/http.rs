//! HTTP request checks: pure functions over the request's header list (pseudo-headers included,
//! as Envoy hands them to the filter).

use crate::text::quote;

/// RFC 9110 §5.6.2 `tchar`: the characters of a token (header names, methods).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// RFC 9110 §5.5 field-value: visible characters, obs-text, and SP/HTAB between them.
/// CR, LF, NUL and other controls are what request smuggling and header injection are made of.
pub fn is_valid_field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
}

/// HTTP versions as Envoy names them in `request.protocol`.
pub const HTTP_VERSIONS: [&str; 4] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"];

const PSEUDO_HEADERS: [&str; 5] = [":method", ":scheme", ":authority", ":path", ":protocol"];

/// The HTTP checks, validated (see `protocol::config::HttpConfig` for the JSON form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpChecks {
    /// `None`: any method token except CONNECT.
    pub allowed_methods: Option<Vec<String>>,
    pub allow_connect: bool,
    pub require_authority: bool,
    pub require_sni_match: bool,
    pub allowed_versions: Vec<String>,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

impl Default for HttpChecks {
    fn default() -> Self {
        HttpChecks {
            allowed_methods: None,
            allow_connect: false,
            require_authority: true,
            require_sni_match: true,
            allowed_versions: vec!["HTTP/1.1".into(), "HTTP/2".into()],
            max_headers: 100,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Why a request fails the HTTP checks. Values taken from the request are cut to 128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpViolation {
    #[error("{count} headers exceed the limit of {max}")]
    TooManyHeaders { count: usize, max: usize },
    #[error("{bytes} bytes of headers exceed the limit of {max}")]
    HeadersTooLarge { bytes: usize, max: usize },
    #[error("header name {} has characters outside RFC 9110 token", quote(.name))]
    InvalidHeaderName { name: String },
    #[error("value of header {} has control characters", quote(.name))]
    InvalidHeaderValue { name: String },
    #[error("{name} appears twice")]
    DuplicateHeader { name: String },
    #[error("request has no :method")]
    MissingMethod,
    #[error("method {} is not a token", quote(.method))]
    InvalidMethod { method: String },
    #[error("method {method} is not allowed")]
    MethodNotAllowed { method: String },
    #[error("CONNECT is not allowed")]
    ConnectNotAllowed,
    #[error("request has no :authority")]
    MissingAuthority,
    #[error(":authority {} is not host[:port]", quote(.authority))]
    InvalidAuthority { authority: String },
    #[error("host {} differs from :authority {}", quote(.host), quote(.authority))]
    HostAuthorityMismatch { host: String, authority: String },
    #[error(":authority host {} differs from TLS SNI {} (domain fronting)", quote(.host), quote(.sni))]
    SniMismatch { host: String, sni: String },
    #[error("HTTP version unknown")]
    UnknownVersion,
    #[error("{version} is not allowed")]
    VersionNotAllowed { version: String },
}

impl HttpViolation {
    /// Short reason for logs and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            HttpViolation::TooManyHeaders { .. } => "http_too_many_headers",
            HttpViolation::HeadersTooLarge { .. } => "http_headers_too_large",
            HttpViolation::InvalidHeaderName { .. } => "http_invalid_header_name",
            HttpViolation::InvalidHeaderValue { .. } => "http_invalid_header_value",
            HttpViolation::DuplicateHeader { .. } => "http_duplicate_header",
            HttpViolation::MissingMethod => "http_missing_method",
            HttpViolation::InvalidMethod { .. } => "http_invalid_method",
            HttpViolation::MethodNotAllowed { .. } => "http_method_not_allowed",
            HttpViolation::ConnectNotAllowed => "http_connect_not_allowed",
            HttpViolation::MissingAuthority => "http_missing_authority",
            HttpViolation::InvalidAuthority { .. } => "http_invalid_authority",
            HttpViolation::HostAuthorityMismatch { .. } => "http_host_authority_mismatch",
            HttpViolation::SniMismatch { .. } => "http_sni_mismatch",
            HttpViolation::UnknownVersion => "http_unknown_version",
            HttpViolation::VersionNotAllowed { .. } => "http_version_not_allowed",
        }
    }
}

fn shown(bytes: &[u8]) -> String {
    let cut = bytes.get(..128).unwrap_or(bytes);
    String::from_utf8_lossy(cut).into_owned()
}

/// Host and port of an `:authority`, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    pub host: &'a str,
    pub port: Option<&'a str>,
}

/// Splits `host[:port]` (with `[v6]` literals). No userinfo: RFC 9110 §4.2.4 forbids it in
/// requests, and `user@host` is a classic way to make two parsers see two hosts. No `,`
/// either, although RFC 3986 allows it in a reg-name: Envoy folds a repeated `Host` or
/// `:authority` into one value joined with `,`, so `evil.example,api.example.com` is two hosts.
pub fn parse_authority(authority: &str) -> Option<Authority<'_>> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let close = rest.find(']')?;
        let inner = rest.get(..close)?;
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let host = authority.get(..close + 2)?;
        match authority.get(close + 2..)? {
            "" => (host, None),
            tail => (host, Some(tail.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let reg_name_ok = host.starts_with('[')
        || (!host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'%'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b';'
                            | b'='
                    )
            }));
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    (reg_name_ok && port_ok).then_some(Authority { host, port })
}

/// Host names compare case-insensitively and without a trailing dot.
pub fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Istio's own SNI for mesh mTLS (`outbound_.443_._.svc.ns.svc.cluster.local`) names a cluster,
/// not the host the client asked for, so it says nothing about domain fronting.
pub fn is_istio_internal_sni(sni: &str) -> bool {
    sni.starts_with("outbound_.") || sni.starts_with("inbound_.")
}

impl HttpChecks {
    /// Checks one request. `headers` are all request header pairs including pseudo-headers;
    /// `version` is Envoy's `request.protocol`; `sni` is the downstream TLS SNI when known.
    /// Returns the first violation in a fixed order (sizes, syntax, method, authority, version).
    pub fn check<K, V>(
        &self,
        headers: &[(K, V)],
        version: Option<&str>,
        sni: Option<&str>,
    ) -> Result<(), HttpViolation>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        if headers.len() > self.max_headers {
            return Err(HttpViolation::TooManyHeaders {
                count: headers.len(),
                max: self.max_headers,
            });
        }
        let bytes: usize = headers
            .iter()
            .map(|(k, v)| k.as_ref().len().saturating_add(v.as_ref().len()))
            .fold(0usize, usize::saturating_add);
        if bytes > self.max_header_bytes {
            return Err(HttpViolation::HeadersTooLarge {
                bytes,
                max: self.max_header_bytes,
            });
        }

        let mut method: Option<&[u8]> = None;
        let mut authority: Option<&[u8]> = None;
        let mut host_header: Option<&[u8]> = None;
        for (name, value) in headers {
            let (name, value) = (name.as_ref(), value.as_ref());
            if let Some(pseudo) = name.strip_prefix(b":") {
                if !PSEUDO_HEADERS
                    .iter()
                    .any(|p| p.as_bytes().get(1..) == Some(pseudo))
                {
                    return Err(HttpViolation::InvalidHeaderName { name: shown(name) });
                }
            } else if name.is_empty() || !name.iter().copied().all(is_tchar) {
                return Err(HttpViolation::InvalidHeaderName { name: shown(name) });
            }
            if !is_valid_field_value(value) {
                return Err(HttpViolation::InvalidHeaderValue { name: shown(name) });
            }
            let slot = if name == b":method" {
                &mut method
            } else if name == b":authority" {
                &mut authority
            } else if name.eq_ignore_ascii_case(b"host") {
                &mut host_header
            } else {
                continue;
            };
            if slot.is_some() {
                return Err(HttpViolation::DuplicateHeader { name: shown(name) });
            }
            *slot = Some(value);
        }

        let method = method.ok_or(HttpViolation::MissingMethod)?;
        if method.is_empty() || !method.iter().copied().all(is_tchar) {
            return Err(HttpViolation::InvalidMethod {
                method: shown(method),
            });
        }
        // Tokens are ASCII, so this cannot fail; the fallback keeps it panic-free.
        let method = std::str::from_utf8(method).unwrap_or("");
        if method == "CONNECT" {
            if !self.allow_connect {
                return Err(HttpViolation::ConnectNotAllowed);
            }
        } else if let Some(allowed) = &self.allowed_methods {
            if !allowed.iter().any(|m| m == method) {
                return Err(HttpViolation::MethodNotAllowed {
                    method: method.to_owned(),
                });
            }
        }

        if let (Some(host), Some(auth)) = (host_header, authority) {
            if !host.eq_ignore_ascii_case(auth) {
                return Err(HttpViolation::HostAuthorityMismatch {
                    host: shown(host),
                    authority: shown(auth),
                });
            }
        }
        match authority.or(host_header).filter(|a| !a.is_empty()) {
            None if self.require_authority => return Err(HttpViolation::MissingAuthority),
            None => {}
            Some(raw) => {
                let parsed = std::str::from_utf8(raw)
                    .ok()
                    .and_then(parse_authority)
                    .ok_or_else(|| HttpViolation::InvalidAuthority {
                        authority: shown(raw),
                    })?;
                if self.require_sni_match {
                    if let Some(sni) = sni.filter(|s| !s.is_empty() && !is_istio_internal_sni(s)) {
                        let host = parsed.host.trim_start_matches('[').trim_end_matches(']');
                        if normalize_host(host) != normalize_host(sni) {
                            return Err(HttpViolation::SniMismatch {
                                host: shown(host.as_bytes()),
                                sni: shown(sni.as_bytes()),
                            });
                        }
                    }
                }
            }
        }

        let version = version.ok_or(HttpViolation::UnknownVersion)?;
        if !self.allowed_versions.iter().any(|v| v == version) {
            return Err(HttpViolation::VersionNotAllowed {
                version: shown(version.as_bytes()),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_forms() {
        assert_eq!(
            parse_authority("api.example.com:8443"),
            Some(Authority {
                host: "api.example.com",
                port: Some("8443")
            })
        );
        assert_eq!(
            parse_authority("[2001:db8::1]:443"),
            Some(Authority {
                host: "[2001:db8::1]",
                port: Some("443")
            })
        );
        assert_eq!(
            parse_authority("[::1]"),
            Some(Authority {
                host: "[::1]",
                port: None
            })
        );
        assert_eq!(
            parse_authority("host:"),
            Some(Authority {
                host: "host",
                port: Some("")
            })
        );
        for bad in [
            "",
            "user@host",
            "a b",
            "host:80:80",
            "host:http",
            "[::1",
            "[zz]",
            "[::1]x",
            ":80",
            "host:123456",
        ] {
            assert_eq!(parse_authority(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_and_values() {
        assert!(b"x-api-key".iter().copied().all(is_tchar));
        assert!(!is_tchar(b' ') && !is_tchar(b':') && !is_tchar(b'"') && !is_tchar(0x7f));
        assert!(is_valid_field_value(b"text/html; q=0.9\tx"));
        assert!(is_valid_field_value("caf\u{e9}".as_bytes()));
        assert!(!is_valid_field_value(b"a\r\nb"));
        assert!(!is_valid_field_value(b"a\0b"));
        assert!(!is_valid_field_value(b"a\x7fb"));
    }

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("API.Example.COM."), "api.example.com");
    }
}
