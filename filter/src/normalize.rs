//! Path normalisation as Istio's default `BASE` option does it, applied inside the filter too so a
//! gateway whose own normalisation is off is not fooled by `/public/%2e%2e/admin`.
//!
//! Steps: strip the query and fragment; refuse encoded or raw NUL; decode `%XX` escapes of
//! unreserved characters (`A-Z a-z 0-9 - . _ ~`) once, upper-case the hex digits of the escapes
//! that stay and encode a stray `%` as `%25`; turn `\` into `/`; resolve `.` and `..` segments
//! (RFC 3986 section 5.2.4). Slashes are not merged and `%2F`/`%5C` stay encoded, as with `BASE`:
//! the result is the path Envoy's RBAC matches under Istio's gateway defaults, and normalising
//! it again changes nothing.
//!
//! One defence goes further than Envoy: Istio keeps `%2F` and does not merge slashes, and many
//! upstream servers do both, so `/public/..%2Fadmin` or `/public//../admin` match `/public/*`
//! here and in RBAC and may reach `/admin` upstream. A path that resolves differently once its
//! escaped slashes are decoded and its slashes merged is refused (the stream is denied).
//! `%2F` alone (`/projects/group%2Frepo`) and `//` alone stay allowed.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path contains an encoded or raw NUL byte")]
    Nul,
    #[error("path resolves to another path once `%2F`/`%5C` are decoded or slashes merged, as upstream servers may do")]
    Ambiguous,
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_digit_upper(n: u8) -> u8 {
    if n < 10 {
        b'0' + n
    } else {
        b'A' + (n - 10)
    }
}

/// The path without its query and fragment.
pub fn strip_query(raw: &str) -> &str {
    match raw.bytes().position(|b| b == b'?' || b == b'#') {
        Some(end) => raw.get(..end).unwrap_or(raw),
        None => raw,
    }
}

/// A path that normalising leaves as it is: absolute, with no escape, backslash or NUL to
/// rewrite, no segment that starts with a dot (so no `.` or `..` to resolve) and no empty
/// segment (so nothing for the slash checks). Most request paths are.
fn is_normal(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    let mut previous = 0u8;
    for &b in path {
        match b {
            0 | b'%' | b'\\' => return false,
            b'.' | b'/' if previous == b'/' => return false,
            _ => {}
        }
        previous = b;
    }
    true
}

/// Normalises a request path (`:path`, query allowed) into the form rules are matched against.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    let path = strip_query(raw);
    if is_normal(path.as_bytes()) {
        return Ok(path.to_string());
    }
    normalize_path_fully(path.as_bytes())
}

/// [`normalize_path`] of a path without its query, every step taken.
fn normalize_path_fully(path: &[u8]) -> Result<String, PathError> {
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        match b {
            0 => return Err(PathError::Nul),
            b'%' => {
                let hi = path.get(i + 1).copied().and_then(hex_value);
                let lo = path.get(i + 2).copied().and_then(hex_value);
                match (hi, lo) {
                    (Some(0), Some(0)) => return Err(PathError::Nul),
                    (Some(hi), Some(lo)) => {
                        let value = hi * 16 + lo;
                        if is_unreserved(value) {
                            decoded.push(value);
                        } else {
                            decoded.push(b'%');
                            decoded.push(hex_digit_upper(hi));
                            decoded.push(hex_digit_upper(lo));
                        }
                        i += 3;
                        continue;
                    }
                    // A `%` that starts no escape is itself encoded, so a second pass is a no-op.
                    _ => decoded.extend_from_slice(b"%25"),
                }
            }
            b'\\' => decoded.push(b'/'),
            _ => decoded.push(b),
        }
        i += 1;
    }
    // Only ASCII bytes were replaced or inserted, so the text is still UTF-8.
    let decoded = String::from_utf8(decoded).unwrap_or_default();
    if !decoded.starts_with('/') {
        return Ok(decoded);
    }
    let resolved = remove_dot_segments(&decoded);
    if has_slash_variants(&decoded) {
        // What a server that decodes escaped slashes and merges slashes before resolving dot
        // segments would see, against what the rules match.
        let upstream = remove_dot_segments(&merge_slashes(&decode_slashes(&decoded)));
        if merge_slashes(&decode_slashes(&resolved)) != upstream {
            return Err(PathError::Ambiguous);
        }
    }
    Ok(resolved)
}

/// Whether the path has an escaped slash or an empty segment.
fn has_slash_variants(path: &str) -> bool {
    path.contains("//") || path.contains("%2F") || path.contains("%5C")
}

/// `%2F` and `%5C` (upper case after normalisation) as `/`.
fn decode_slashes(path: &str) -> String {
    path.replace("%2F", "/").replace("%5C", "/")
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for ch in path.chars() {
        if !(ch == '/' && out.ends_with('/')) {
            out.push(ch);
        }
    }
    out
}

/// RFC 3986 5.2.4 for an absolute path; empty segments (`//`) are kept.
fn remove_dot_segments(path: &str) -> String {
    let body = path.strip_prefix('/').unwrap_or(path);
    let segments: Vec<&str> = body.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    let mut result = String::with_capacity(path.len());
    result.push('/');
    crate::text::push_joined(&mut result, &out, "/", "");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize_path(p).unwrap()
    }

    #[test]
    fn base_normalisation() {
        assert_eq!(n("/public/%2e%2e/admin"), "/admin");
        assert_eq!(n("/public/%2E%2e/admin?x=1"), "/admin");
        assert_eq!(n("/a/b/c/./../../g"), "/a/g");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/b/."), "/a/b/");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/a//b"), "/a//b");
        assert_eq!(n("\\..\\admin"), "/admin");
        assert_eq!(n("/a\\b"), "/a/b");
        assert_eq!(n("/%41%7e%2D"), "/A~-");
        assert_eq!(n("/a%2fb"), "/a%2Fb");
        assert_eq!(n("/projects/group%2Frepo"), "/projects/group%2Frepo");
        assert_eq!(n("/files//x"), "/files//x");
        assert_eq!(n("/100%"), "/100%25");
        assert_eq!(n("/x#frag"), "/x");
        assert_eq!(n(""), "");
        assert_eq!(n("*"), "*");
        assert_eq!(n("/"), "/");
    }

    #[test]
    fn paths_that_resolve_differently_upstream_are_refused() {
        for ambiguous in [
            "/public/..%2Fadmin",
            "/public/..%2fadmin",
            "/public/%2e%2e%2Fadmin",
            "/public/..%5Cadmin",
            "/a%5c..%5cb",
            "/public//../admin",
            "/public/x%2F..%2F..%2Fadmin?q",
        ] {
            assert_eq!(
                normalize_path(ambiguous),
                Err(PathError::Ambiguous),
                "{ambiguous}"
            );
        }
        // A second pass over an accepted path is a no-op.
        for fine in [
            "/projects/group%2Frepo/raw",
            "//admin",
            "/a/b/../c",
            "/a%2Fb/c",
        ] {
            let once = n(fine);
            assert_eq!(n(&once), once, "{fine}");
        }
    }

    #[test]
    fn paths_left_as_they_are_are_those_full_normalisation_leaves() {
        // Every path of up to six bytes over the bytes normalisation cares about.
        let alphabet = [b'/', b'.', b'a', b'%', b'2', b'F', b'\\', b'?'];
        let mut paths: Vec<Vec<u8>> = vec![Vec::new()];
        let mut checked = 0;
        for _ in 0..6 {
            let mut longer = Vec::new();
            for path in &paths {
                for &b in &alphabet {
                    let mut p = path.clone();
                    p.push(b);
                    let raw = String::from_utf8(p.clone()).unwrap();
                    let full = normalize_path_fully(strip_query(&raw).as_bytes());
                    assert_eq!(normalize_path(&raw), full, "{raw:?}");
                    if is_normal(strip_query(&raw).as_bytes()) {
                        assert_eq!(full.as_deref(), Ok(strip_query(&raw)), "{raw:?}");
                    }
                    checked += 1;
                    longer.push(p);
                }
            }
            paths = longer;
        }
        assert_eq!(checked, 8 + 64 + 512 + 4_096 + 32_768 + 262_144);
        assert!(is_normal(b"/v1/items"));
        assert!(!is_normal(b"/v1/./items") && !is_normal(b"/v1//items") && !is_normal(b"v1"));
    }

    #[test]
    fn nul_is_refused() {
        assert_eq!(normalize_path("/a%00b"), Err(PathError::Nul));
        assert_eq!(normalize_path("/a\0b"), Err(PathError::Nul));
        assert!(normalize_path("/a?%00").is_ok());
    }
}
