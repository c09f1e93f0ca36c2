//! What Envoy's HTTP codecs and HTTP connection manager do to a request before the first HTTP
//! filter sees it, with Istio's gateway settings.
//!
//! Codecs (`source/common/http/http1/codec_impl.cc`, `.../http2/codec_impl.cc`):
//! - HTTP/1: `Host` is `:authority` (and a second `Host` folds into it, see [`HeaderMap`]).
//!   An absolute-form target (`GET http://h/p`) sets `:authority`, `:scheme` and `:path` from the
//!   URL, replacing the `Host` header (RFC 9112 §3.2.2); a CONNECT target (authority-form) sets
//!   `:authority` and leaves no `:path` (`ServerConnectionImpl::handlePath`). HTTP/1.0 is answered
//!   426 before any filter unless `accept_http_10` is set (`checkProtocolVersion`).
//! - HTTP/2: a `host` header is dropped when `:authority` is present (Envoy PR 30005, runtime
//!   guard `http2_discard_host_header`); without `:authority` it becomes `:authority`.
//!
//! Connection manager (`ConnectionManagerUtility::maybeNormalizePath`, Istio
//! `listener_builder.go` "Setup normalization"):
//! - a `#fragment` is cut from `:path` (Istio turns `http_reject_path_with_fragment` off and keeps
//!   `http_strip_fragment_from_path_unsafe_if_disabled` on);
//! - escaped slashes are kept (`path_with_escaped_slashes_action: KEEP_UNCHANGED`), except with
//!   mesh `pathNormalization: DECODE_AND_MERGE_SLASHES` (`UNESCAPE_AND_FORWARD`);
//! - `normalize_path` (Istio `BASE`, the default): [`canonical_path`];
//! - `merge_slashes` with `MERGE_SLASHES` and `DECODE_AND_MERGE_SLASHES`;
//! - `x-forwarded-proto` and `x-request-id` when absent, and (`use_remote_address`, which Istio
//!   sets on gateways) the peer address appended to `x-forwarded-for`.

use crate::config::{HostOptions, PathNormalization};
use crate::headers::HeaderMap;
use crate::stream::HttpRequest;

/// What the codec does with a request before the connection manager sees it.
pub(crate) enum CodecVerdict {
    /// The request goes on with these headers.
    Accepted(HeaderMap),
    /// The codec answers with this status; no filter sees the request.
    Refused { status: u32 },
}

/// The request headers the first HTTP filter sees. `request_id` makes an `x-request-id`.
pub(crate) fn request_headers(
    request: &HttpRequest,
    options: &HostOptions,
    request_id: impl FnOnce() -> String,
) -> CodecVerdict {
    let http1 = request.protocol.starts_with("HTTP/1");
    if request.protocol == "HTTP/1.0" && !options.accept_http_10 {
        return CodecVerdict::Refused { status: 426 };
    }
    let connect = request.method.as_deref() == Some("CONNECT");
    let mut authority = request.authority.clone();
    let mut path = request.path.clone();
    let mut scheme = request.scheme.clone();
    let mut target_sets_authority = false;
    if http1 && connect {
        // Authority-form: the request line names host:port; there is no path.
        path = None;
        target_sets_authority = authority.is_some();
    } else if http1 {
        if let Some(url) = path.as_deref().and_then(AbsoluteUrl::parse) {
            authority = Some(url.authority.to_string());
            scheme = Some(url.scheme.to_ascii_lowercase());
            path = Some(url.path_and_query.to_string());
            target_sets_authority = true;
        }
    }
    let mut headers = HeaderMap::request();
    for (name, value) in [
        (":authority", &authority),
        (":path", &path),
        (":method", &request.method),
        (":scheme", &scheme),
    ] {
        if let Some(value) = value {
            headers.add(name, value);
        }
    }
    let http2 = request.protocol == "HTTP/2";
    for (name, value) in &request.headers {
        let is_host = name.eq_ignore_ascii_case("host") || name == ":authority";
        // The request target replaced the Host header; HTTP/2 drops `host` next to :authority.
        if is_host && (target_sets_authority || (http2 && authority.is_some())) {
            continue;
        }
        headers.add(name, value);
    }
    if let Some(raw) = headers.get_str(":path") {
        headers.replace(":path", normalize(&raw, options.path_normalization));
    }
    if options.connection_manager_headers {
        if headers.get("x-forwarded-proto").is_none() {
            let scheme = scheme.as_deref().unwrap_or("http");
            headers.add("x-forwarded-proto", scheme);
        }
        if headers.get("x-request-id").is_none() {
            headers.add("x-request-id", request_id());
        }
        headers.add(
            "x-forwarded-for",
            request.connection.source.ip().to_string(),
        );
    }
    CodecVerdict::Accepted(headers)
}

/// An absolute-form request target, split as Envoy's `Utility::Url` splits it.
struct AbsoluteUrl<'a> {
    scheme: &'a str,
    authority: &'a str,
    /// The path and query, `/` when the URL has none.
    path_and_query: &'a str,
}

impl<'a> AbsoluteUrl<'a> {
    fn parse(target: &'a str) -> Option<AbsoluteUrl<'a>> {
        let (scheme, rest) = target.split_once("://")?;
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return None;
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() {
            return None;
        }
        Some(AbsoluteUrl {
            scheme,
            authority,
            path_and_query: if path.is_empty() { "/" } else { path },
        })
    }
}

/// The connection manager's path handling for one mesh setting: the fragment is cut, then the
/// part before `?` is normalised; the query is kept as it came.
pub(crate) fn normalize(raw: &str, mode: PathNormalization) -> String {
    let raw = raw.split('#').next().unwrap_or(raw);
    if mode == PathNormalization::None || !raw.starts_with('/') {
        return raw.to_string();
    }
    let (path, query) = match raw.find('?') {
        Some(at) => raw.split_at(at),
        None => (raw, ""),
    };
    let mut path = path.to_string();
    if mode == PathNormalization::DecodeAndMergeSlashes {
        path = unescape_slashes(&path);
    }
    path = canonical_path(&path);
    if matches!(
        mode,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    ) {
        path = merge_slashes(&path);
    }
    path + query
}

/// Envoy `PathUtil::canonicalPath` (Chromium `url::CanonicalizePath` on the part before `?`):
/// escapes of unreserved characters are decoded, `\` becomes `/`, and `.`/`..` segments
/// (`%2e` spellings included) are resolved. Other escapes, `%2F` among them, stay as written.
pub(crate) fn canonical_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(value) = hex {
                if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(value as char);
                } else {
                    decoded.push_str(&path[i..i + 3]);
                }
                i += 3;
                continue;
            }
        }
        if b == b'\\' {
            decoded.push('/');
        } else {
            // Push the whole UTF-8 character starting here.
            let ch = path[i..].chars().next().unwrap_or('\u{fffd}');
            decoded.push(ch);
            i += ch.len_utf8();
            continue;
        }
        i += 1;
    }
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if index == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if index == last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    format!("/{}", out.join("/"))
}

/// `%2F`/`%5C` (any case) decoded to `/` and `\` (`UNESCAPE_AND_FORWARD`).
fn unescape_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        match escape.to_ascii_lowercase().as_str() {
            "%2f" => out.push('/'),
            "%5c" => out.push('\\'),
            _ => {
                out.push('%');
                rest = &rest[at + 1..];
                continue;
            }
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    out
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for ch in path.chars() {
        if ch == '/' && out.ends_with('/') {
            continue;
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_normalisation_as_envoy_canonical_path() {
        let base = |p: &str| normalize(p, PathNormalization::Base);
        assert_eq!(base("/public/%2e%2e/admin?x=%2e%2e"), "/admin?x=%2e%2e");
        assert_eq!(base("/public/../admin"), "/admin");
        assert_eq!(base("/a/./b/."), "/a/b/");
        assert_eq!(base("/a\\..\\b"), "/b");
        assert_eq!(base("/%41%7e"), "/A~");
        assert_eq!(base("/a%2Fb/..%2f"), "/a%2Fb/..%2f");
        assert_eq!(base("//admin"), "//admin");
        assert_eq!(base("/x#frag"), "/x");
        assert_eq!(base("*"), "*");
        assert_eq!(normalize("/a/../b", PathNormalization::None), "/a/../b");
        assert_eq!(
            normalize("//a///b", PathNormalization::MergeSlashes),
            "/a/b"
        );
        assert_eq!(
            normalize("/a%2F..%2Fb", PathNormalization::DecodeAndMergeSlashes),
            "/b"
        );
    }

    #[test]
    fn absolute_form_targets() {
        let url = AbsoluteUrl::parse("HTTP://evil.example:8080/x?y").unwrap();
        assert_eq!(
            (url.scheme, url.authority, url.path_and_query),
            ("HTTP", "evil.example:8080", "/x?y")
        );
        assert_eq!(AbsoluteUrl::parse("http://h").unwrap().path_and_query, "/");
        assert!(AbsoluteUrl::parse("/x").is_none());
        assert!(AbsoluteUrl::parse("ftp://h/x").is_none());
        assert!(AbsoluteUrl::parse("http:///x").is_none());
    }
}
