//! An HTTP header map that behaves like Envoy's `HeaderMapImpl` as seen through proxy-wasm.
//!
//! - Keys are stored lower-cased; look-ups, adds, replaces and removes lower-case the key.
//! - Pseudo headers (`:authority`, `:path`, ...) are kept before all other headers.
//! - In request headers `host` is another name for `:authority` (Envoy's static look-up table
//!   maps the legacy `host` key onto the inline `:authority` entry).
//! - In request headers, a repeated *inline* header (`:authority`/`host`, `user-agent`,
//!   `x-forwarded-for`, `content-type`, ...: [`INLINE_REQUEST_HEADERS`]) is folded into its
//!   first entry, the values joined with `,` (Envoy `HeaderMapImpl::insertByKey` /
//!   `addViaMove` → `appendToHeader`). Any other repeated header is kept as separate entries.
//! - `get` returns the first entry only, as `proxy_get_header_map_value` does in Envoy: the
//!   joined value for an inline header, the first value for any other.

/// Envoy's inline request headers: `INLINE_REQ_STRING_HEADERS`, `INLINE_REQ_NUMERIC_HEADERS`,
/// `INLINE_REQ_RESP_STRING_HEADERS` and `INLINE_REQ_RESP_NUMERIC_HEADERS`
/// (`source/common/http/header_map_impl.h`), plus `referer`, which the CEL attributes register
/// (`source/extensions/filters/common/expr/context.cc`). Other extensions compiled into a build
/// may register more; these are the ones every Envoy has. `host` is `:authority`.
pub const INLINE_REQUEST_HEADERS: &[&str] = &[
    ":authority",
    ":method",
    ":path",
    ":protocol",
    ":scheme",
    "connection",
    "content-length",
    "content-type",
    "expect",
    "grpc-timeout",
    "keep-alive",
    "proxy-connection",
    "proxy-status",
    "referer",
    "te",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "via",
    "x-client-trace-id",
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-external-address",
    "x-envoy-force-trace",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-internal",
    "x-envoy-ip-tags",
    "x-envoy-is-timeout-retry",
    "x-envoy-max-retries",
    "x-envoy-original-path",
    "x-envoy-original-url",
    "x-envoy-retriable-header-names",
    "x-envoy-retriable-status-codes",
    "x-envoy-retry-grpc-on",
    "x-envoy-retry-on",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-stream-duration-ms",
    "x-forwarded-client-cert",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(String, Vec<u8>)>,
    /// Request headers: `host` aliases `:authority` and inline headers fold.
    host_is_authority: bool,
}

impl HeaderMap {
    /// A map for request headers, where `host` and `:authority` are one header and a repeated
    /// inline header folds into one entry.
    pub fn request() -> HeaderMap {
        HeaderMap {
            entries: Vec::new(),
            host_is_authority: true,
        }
    }

    /// A map for any other header block (response headers, trailers, metadata).
    pub fn other() -> HeaderMap {
        HeaderMap::default()
    }

    fn canonical_key(&self, key: &[u8]) -> String {
        let lower = String::from_utf8_lossy(key).to_ascii_lowercase();
        if self.host_is_authority && lower == "host" {
            ":authority".to_string()
        } else {
            lower
        }
    }

    /// Appends a value (Envoy `addCopy`), keeping pseudo headers first. In request headers a
    /// second value of an inline header is appended to the first entry after a `,` (an empty
    /// value adds nothing, and an empty first value takes no `,`), as Envoy's `appendToHeader`.
    pub fn add(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let key = self.canonical_key(key.as_ref());
        let value = value.as_ref().to_vec();
        if self.host_is_authority && INLINE_REQUEST_HEADERS.contains(&key.as_str()) {
            if let Some((_, existing)) = self.entries.iter_mut().find(|(k, _)| *k == key) {
                if !value.is_empty() {
                    if !existing.is_empty() {
                        existing.push(b',');
                    }
                    existing.extend_from_slice(&value);
                }
                return;
            }
        }
        if key.starts_with(':') {
            let at = self
                .entries
                .iter()
                .position(|(k, _)| !k.starts_with(':'))
                .unwrap_or(self.entries.len());
            self.entries.insert(at, (key, value));
        } else {
            self.entries.push((key, value));
        }
    }

    /// Sets a header to one value (Envoy `setCopy`): the first entry keeps its place and takes
    /// the value, later duplicates are dropped; an absent header is appended.
    pub fn replace(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let key = self.canonical_key(key.as_ref());
        match self.entries.iter().position(|(k, _)| *k == key) {
            Some(first) => {
                self.entries[first].1 = value.as_ref().to_vec();
                let mut index = 0;
                self.entries.retain(|(k, _)| {
                    let keep = index <= first || *k != key;
                    index += 1;
                    keep
                });
            }
            None => self.add(key, value),
        }
    }

    /// Removes every entry of a header.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        let key = self.canonical_key(key.as_ref());
        self.entries.retain(|(k, _)| *k != key);
    }

    /// Whether a stored (lower-case) key is the one asked for; look-ups run on every host call,
    /// so they compare in place instead of building the canonical key.
    fn is_key(&self, stored: &str, key: &[u8]) -> bool {
        if self.host_is_authority && key.eq_ignore_ascii_case(b"host") {
            stored == ":authority"
        } else {
            stored.as_bytes().eq_ignore_ascii_case(key)
        }
    }

    /// The first value of a header.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<&[u8]> {
        let key = key.as_ref();
        self.entries
            .iter()
            .find(|(k, _)| self.is_key(k, key))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of a header as text (lossy).
    pub fn get_str(&self, key: impl AsRef<[u8]>) -> Option<String> {
        self.get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// All values of a header joined with "," (Envoy `getAllOfHeaderAsString`, used by the
    /// `request.headers` property).
    pub fn get_joined(&self, key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        let key = key.as_ref();
        let mut values = self.entries.iter().filter(|(k, _)| self.is_key(k, key));
        let mut joined = values.next()?.1.clone();
        for (_, v) in values {
            joined.push(b',');
            joined.extend_from_slice(v);
        }
        Some(joined)
    }

    /// Replaces all entries (`proxy_set_header_map_pairs`).
    pub fn set_all(&mut self, pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) {
        self.entries.clear();
        for (k, v) in pairs {
            self.add(k, v);
        }
    }

    /// Entries in order, as `proxy_get_header_map_pairs` lists them.
    pub fn entries(&self) -> &[(String, Vec<u8>)] {
        &self.entries
    }

    /// Distinct keys in order of first appearance.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for (k, _) in &self.entries {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
        keys
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of key and value lengths (Envoy `byteSize`, returned by `proxy_get_header_map_size`).
    pub fn byte_size(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The ABI serialisation of all entries.
    pub fn serialize(&self) -> Vec<u8> {
        crate::pairs::encode(&self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_headers_stay_first_and_host_is_authority() {
        let mut h = HeaderMap::request();
        h.add("User-Agent", "curl");
        h.add(":path", "/");
        h.add("Host", "example.com");
        assert_eq!(h.keys(), vec![":path", ":authority", "user-agent"]);
        assert_eq!(h.get("host"), Some(&b"example.com"[..]));
        assert_eq!(h.get(":AUTHORITY"), Some(&b"example.com"[..]));
    }

    #[test]
    fn replace_keeps_position_and_drops_duplicates() {
        let mut h = HeaderMap::other();
        h.add("a", "1");
        h.add("b", "2");
        h.add("a", "3");
        h.replace("A", "9");
        assert_eq!(
            h.entries(),
            &[("a".into(), b"9".to_vec()), ("b".into(), b"2".to_vec())]
        );
        h.replace("c", "4");
        assert_eq!(h.keys(), vec!["a", "b", "c"]);
    }

    #[test]
    fn repeated_inline_request_headers_fold_into_one_entry() {
        let mut h = HeaderMap::request();
        h.add("Host", "a.example");
        h.add(":authority", "b.example");
        h.add("user-agent", "");
        h.add("user-agent", "x");
        h.add("User-Agent", "y");
        h.add("x-team", "a");
        h.add("x-team", "b");
        assert_eq!(h.get(":authority"), Some(&b"a.example,b.example"[..]));
        assert_eq!(h.get("user-agent"), Some(&b"x,y"[..]));
        assert_eq!(h.get("x-team"), Some(&b"a"[..]));
        assert_eq!(h.len(), 4);
        // Other maps keep every entry.
        let mut other = HeaderMap::other();
        other.add("user-agent", "x");
        other.add("user-agent", "y");
        assert_eq!(other.len(), 2);
    }

    #[test]
    fn repeated_headers_join_with_comma() {
        let mut h = HeaderMap::other();
        h.add("x", "1");
        h.add("x", "2");
        assert_eq!(h.get("x"), Some(&b"1"[..]));
        assert_eq!(h.get_joined("x"), Some(b"1,2".to_vec()));
        assert_eq!(h.byte_size(), 4);
    }
}
