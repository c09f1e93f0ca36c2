//! Which protocol a connection speaks, from its first bytes.

use super::http::is_tchar;

/// A protocol told apart by its first bytes; also the value of the `connection.protocol` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tls,
    Http1,
    Http2,
    /// HTTP/3 requests (QUIC listeners); never detected from a TCP connection's bytes.
    Http3,
    Ssh,
    Unknown,
}

impl Protocol {
    /// The value `connection.protocol` takes in rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tls => "tls",
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Http3 => "http3",
            Protocol::Ssh => "ssh",
            Protocol::Unknown => "unknown",
        }
    }

    /// Maps Envoy's `request.protocol` ("HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3",
    /// `Http::Utility::getProtocolString`) so HTTP requests get a `connection.protocol` too.
    pub fn from_http_protocol(value: &str) -> Option<Protocol> {
        match value {
            "HTTP/1.0" | "HTTP/1.1" => Some(Protocol::Http1),
            "HTTP/2" => Some(Protocol::Http2),
            "HTTP/3" => Some(Protocol::Http3),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// The bytes so far fit a known protocol's opening but do not settle it yet.
    NeedMoreBytes,
    Detected(Protocol),
}

/// Detection never asks for more than this many bytes: a prefix this long that is still
/// unsettled (an HTTP/1 request line that has not ended) is `Unknown`.
pub const MAX_DETECT_BYTES: usize = 8192;

/// HTTP/2 connection preface (RFC 9113 §3.4), sent first by a prior-knowledge client.
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SSH_PREFIX: &[u8] = b"SSH-";
const MAX_METHOD_LEN: usize = 32;

enum Candidate {
    Match,
    NeedMore,
    NoMatch,
}

type Check = fn(&[u8]) -> Candidate;

/// Identifies the protocol of a connection from the bytes the client sent first.
///
/// - TLS: a handshake record header, `0x16 0x03 0x00..=0x04`.
/// - HTTP/2 with prior knowledge: the full 24-byte connection preface.
/// - SSH: `SSH-` (RFC 4253 identification string).
/// - HTTP/1: a whole request line, `token SP request-target SP HTTP/1.d CRLF` (bare LF accepted,
///   as RFC 9112 allows). A method token followed by a space alone is not enough: many text
///   protocols start that way (e.g. `SET k v` to Redis).
pub fn detect(prefix: &[u8]) -> Detection {
    if prefix.is_empty() {
        return Detection::NeedMoreBytes;
    }
    let mut need_more = false;
    let checks: [(Protocol, Check); 4] = [
        (Protocol::Tls, tls_record),
        (Protocol::Http2, http2_preface),
        (Protocol::Ssh, ssh_banner),
        (Protocol::Http1, http1_request_line),
    ];
    for (protocol, check) in checks {
        match check(prefix) {
            Candidate::Match => return Detection::Detected(protocol),
            Candidate::NeedMore => need_more = true,
            Candidate::NoMatch => {}
        }
    }
    if need_more && prefix.len() < MAX_DETECT_BYTES {
        Detection::NeedMoreBytes
    } else {
        Detection::Detected(Protocol::Unknown)
    }
}

fn literal(prefix: &[u8], expected: &[u8]) -> Candidate {
    if prefix.starts_with(expected) {
        Candidate::Match
    } else if expected.starts_with(prefix) {
        Candidate::NeedMore
    } else {
        Candidate::NoMatch
    }
}

fn tls_record(prefix: &[u8]) -> Candidate {
    match (prefix.first(), prefix.get(1), prefix.get(2)) {
        (Some(0x16), Some(0x03), Some(minor)) if *minor <= 0x04 => Candidate::Match,
        (Some(0x16), Some(0x03), None) | (Some(0x16), None, _) => Candidate::NeedMore,
        _ => Candidate::NoMatch,
    }
}

fn http2_preface(prefix: &[u8]) -> Candidate {
    literal(prefix, HTTP2_PREFACE)
}

fn ssh_banner(prefix: &[u8]) -> Candidate {
    literal(prefix, SSH_PREFIX)
}

fn http1_request_line(prefix: &[u8]) -> Candidate {
    let mut pos = 0usize;
    // method
    while let Some(&b) = prefix.get(pos) {
        if !is_tchar(b) {
            break;
        }
        pos += 1;
        if pos > MAX_METHOD_LEN {
            return Candidate::NoMatch;
        }
    }
    match prefix.get(pos) {
        None => return Candidate::NeedMore,
        Some(b' ') if pos > 0 => pos += 1,
        Some(_) => return Candidate::NoMatch,
    }
    // request-target: visible ASCII, at least one byte
    let target_start = pos;
    while let Some(&b) = prefix.get(pos) {
        if !(0x21..=0x7e).contains(&b) {
            break;
        }
        pos += 1;
    }
    match prefix.get(pos) {
        None => return Candidate::NeedMore,
        Some(b' ') if pos > target_start => pos += 1,
        Some(_) => return Candidate::NoMatch,
    }
    // HTTP-version
    let rest = prefix.get(pos..).unwrap_or(&[]);
    const VERSION: &[u8] = b"HTTP/1.";
    match literal(rest, VERSION) {
        Candidate::Match => {}
        other => return other,
    }
    let after = rest.get(VERSION.len()..).unwrap_or(&[]);
    match (after.first(), after.get(1), after.get(2)) {
        (None, _, _) => Candidate::NeedMore,
        (Some(d), _, _) if !d.is_ascii_digit() => Candidate::NoMatch,
        (Some(_), None, _) => Candidate::NeedMore,
        (Some(_), Some(b'\n'), _) => Candidate::Match,
        (Some(_), Some(b'\r'), None) => Candidate::NeedMore,
        (Some(_), Some(b'\r'), Some(b'\n')) => Candidate::Match,
        _ => Candidate::NoMatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_of_a_request_line_asks_for_more() {
        let line = b"GET /index.html HTTP/1.1\r\n";
        for cut in 1..line.len() {
            assert_eq!(detect(&line[..cut]), Detection::NeedMoreBytes, "cut {cut}");
        }
        assert_eq!(detect(line), Detection::Detected(Protocol::Http1));
    }

    #[test]
    fn every_prefix_of_the_h2_preface_asks_for_more() {
        for cut in 1..HTTP2_PREFACE.len() {
            assert_eq!(
                detect(&HTTP2_PREFACE[..cut]),
                Detection::NeedMoreBytes,
                "cut {cut}"
            );
        }
        assert_eq!(detect(HTTP2_PREFACE), Detection::Detected(Protocol::Http2));
    }

    #[test]
    fn long_unfinished_request_line_is_unknown() {
        let mut line = b"GET /".to_vec();
        line.resize(MAX_DETECT_BYTES, b'a');
        assert_eq!(detect(&line), Detection::Detected(Protocol::Unknown));
    }
}
