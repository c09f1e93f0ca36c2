//! Host names: `:authority` of HTTP requests and TLS SNI.
//!
//! Matching is case-insensitive and ignores a port and a trailing dot on both sides, so a rule on
//! `evil.example` also holds for `EVIL.example:443` and `evil.example.`. Exact names live in a hash
//! table, `*.domain` patterns in a reversed-label trie, other affixes in length-bucketed hashes:
//! the cost of a lookup depends on the length of the name, not on the number of patterns.

use super::string::{PatternError, StringPattern};
use super::{fast_map, insert_id, visit, AffixMap, IdMap};
use crate::text::{quote, sort_by};

/// A host pattern after normalisation (lower case, no port, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`: any name strictly below `example.com` (stored without the leading dot).
    Subdomain(String),
    /// `*example.com` (not at a label boundary): any name ending with the text.
    Suffix(String),
    /// `api.*`: any name starting with the text.
    Prefix(String),
    /// `*`: any non-empty name.
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPatternError {
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error("{}: hosts are matched without their port; move the port to `ports`", quote(.0))]
    HasPort(String),
    #[error("{} is not a host name", quote(.0))]
    Invalid(String),
}

impl HostPattern {
    #[inline(never)]
    pub fn parse(raw: &str) -> Result<Self, HostPatternError> {
        if raw.is_empty() {
            return Err(PatternError::Empty.into());
        }
        let lower = raw.to_ascii_lowercase();
        // `host:*` is Istio's documented way to match a host on any port; ports are ignored here.
        let mut text = lower.strip_suffix(":*").unwrap_or(&lower);
        if !text.starts_with('[') {
            if let Some((_, port)) = text.rsplit_once(':') {
                if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(HostPatternError::HasPort(raw.to_string()));
                }
                return Err(HostPatternError::Invalid(raw.to_string()));
            }
        } else if let Some(end) = text.find(']') {
            if end + 1 != text.len() {
                return Err(HostPatternError::HasPort(raw.to_string()));
            }
        }
        if text.len() > 1 {
            text = text.strip_suffix('.').unwrap_or(text);
        }
        if text
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@')
        {
            return Err(HostPatternError::Invalid(raw.to_string()));
        }
        Ok(match StringPattern::parse(text)? {
            StringPattern::Exact(s) => Self::Exact(s),
            StringPattern::Prefix(s) => Self::Prefix(s),
            StringPattern::Suffix(s) => match s.strip_prefix('.') {
                Some(domain) if !domain.is_empty() => Self::Subdomain(domain.to_string()),
                _ => Self::Suffix(s),
            },
            StringPattern::Presence => Self::Any,
        })
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(s) => host == s,
            Self::Subdomain(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            Self::Suffix(s) => host.ends_with(s.as_str()),
            Self::Prefix(s) => host.starts_with(s.as_str()),
            Self::Any => !host.is_empty(),
        }
    }
}

/// Reversed-label trie: `*.api.example.com` is stored under com → example → api.
#[derive(Debug, Clone, Default)]
struct LabelTrie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Clone)]
struct TrieNode {
    /// Sorted by label for binary search; built from a hash map once all patterns are in.
    children: Vec<(Box<str>, u32)>,
    /// Ids of `*.<this node's domain>` patterns.
    below: Vec<u32>,
}

#[derive(Debug)]
struct TrieBuilder {
    /// Children by label (the child node id is the single id stored), and the node's ids.
    nodes: Vec<(IdMap, Vec<u32>)>,
}

impl TrieBuilder {
    fn new() -> Self {
        Self {
            nodes: vec![(fast_map(), Vec::new())],
        }
    }

    fn insert(&mut self, domain: &str, id: u32) {
        let mut node = 0usize;
        for label in domain.rsplit('.') {
            let next_id = self.nodes.len() as u32;
            let Some((children, _)) = self.nodes.get_mut(node) else {
                return;
            };
            let child = match children.get(label) {
                Some(ids) => ids.as_slice().first().copied().unwrap_or(next_id),
                None => {
                    insert_id(children, label, next_id);
                    next_id
                }
            };
            if child == next_id {
                self.nodes.push((fast_map(), Vec::new()));
            }
            node = child as usize;
        }
        if let Some((_, below)) = self.nodes.get_mut(node) {
            below.push(id);
        }
    }

    fn build(self) -> LabelTrie {
        let nodes = self
            .nodes
            .into_iter()
            .map(|(children, below)| {
                let mut children: Vec<(Box<str>, u32)> = children
                    .into_iter()
                    .filter_map(|(label, ids)| Some((label, *ids.as_slice().first()?)))
                    .collect();
                sort_by(&mut children, |a, b| a.0 < b.0);
                TrieNode { children, below }
            })
            .collect();
        LabelTrie { nodes }
    }
}

impl LabelTrie {
    fn for_each_match(&self, host: &str, f: &mut dyn FnMut(u32) -> bool) -> bool {
        let mut node = match self.nodes.first() {
            Some(root) if !root.children.is_empty() => root,
            _ => return false,
        };
        let mut labels = host.rsplit('.').peekable();
        while let Some(label) = labels.next() {
            let Ok(at) = node
                .children
                .binary_search_by(|(child, _)| child.as_ref().cmp(label))
            else {
                return false;
            };
            let Some(next) = node
                .children
                .get(at)
                .and_then(|(_, id)| self.nodes.get(*id as usize))
            else {
                return false;
            };
            node = next;
            // `*.d` matches only names with at least one more label below `d`.
            if labels.peek().is_some() && visit(&node.below, f) {
                return true;
            }
        }
        false
    }
}

/// Host patterns mapped to ids: the policy engine indexes rules by host with it, and
/// [`HostMatcher`] is the form used inside a rule (every id 0).
#[derive(Debug, Clone, Default)]
pub struct HostTable {
    exact: IdMap,
    subdomains: LabelTrie,
    suffixes: AffixMap,
    prefixes: AffixMap,
    any: Vec<u32>,
}

/// Collects patterns, then freezes them into a [`HostTable`].
#[derive(Debug)]
pub struct HostTableBuilder {
    exact: IdMap,
    subdomains: TrieBuilder,
    suffixes: AffixMap,
    prefixes: AffixMap,
    any: Vec<u32>,
}

impl Default for HostTableBuilder {
    fn default() -> Self {
        Self {
            exact: fast_map(),
            subdomains: TrieBuilder::new(),
            suffixes: AffixMap::default(),
            prefixes: AffixMap::default(),
            any: Vec::new(),
        }
    }
}

impl HostTableBuilder {
    pub fn insert(&mut self, pattern: &HostPattern, id: u32) {
        match pattern {
            HostPattern::Exact(s) => insert_id(&mut self.exact, s, id),
            HostPattern::Subdomain(domain) => self.subdomains.insert(domain, id),
            HostPattern::Suffix(s) => self.suffixes.insert(s, id),
            HostPattern::Prefix(s) => self.prefixes.insert(s, id),
            HostPattern::Any => self.any.push(id),
        }
    }

    pub fn build(self) -> HostTable {
        HostTable {
            exact: self.exact,
            subdomains: self.subdomains.build(),
            suffixes: self.suffixes,
            prefixes: self.prefixes,
            any: self.any,
        }
    }
}

impl HostTable {
    /// Calls `f` with the id of every pattern matching `host` (already normalised with
    /// [`normalize_host`]); stops early and returns true as soon as `f` returns true.
    pub fn for_each_match(&self, host: &str, f: &mut dyn FnMut(u32) -> bool) -> bool {
        if host.is_empty() {
            return false;
        }
        if visit(&self.any, f) {
            return true;
        }
        if let Some(ids) = self.exact.get(host) {
            if visit(ids.as_slice(), f) {
                return true;
            }
        }
        self.subdomains.for_each_match(host, f)
            || (!self.suffixes.is_empty() && self.suffixes.suffixes_of(host, f))
            || (!self.prefixes.is_empty() && self.prefixes.prefixes_of(host, f))
    }
}

/// A list of host patterns, ORed.
#[derive(Debug, Clone, Default)]
pub struct HostMatcher {
    table: HostTable,
}

impl HostMatcher {
    #[inline(never)]
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a HostPattern>) -> Self {
        let mut builder = HostTableBuilder::default();
        for pattern in patterns {
            builder.insert(pattern, 0);
        }
        Self {
            table: builder.build(),
        }
    }

    /// `host` must be normalised with [`normalize_host`] (or [`normalize_sni`]).
    pub fn matches(&self, host: &str) -> bool {
        self.table.for_each_match(host, &mut |_| true)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("malformed :authority {}", quote(.0))]
    Malformed(String),
}

/// Turns an `:authority` (or Host header) into the name rules match: lower case, without port
/// and trailing dot. Anything that is not `name[:port]` or `[ipv6][:port]` is refused, so odd
/// encodings cannot slip past a rule.
pub fn normalize_host(authority: &str) -> Result<String, AuthorityError> {
    let malformed = || AuthorityError::Malformed(authority.to_string());
    let (name, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(malformed)?;
        if inside.is_empty()
            || !inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(malformed());
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(malformed)?),
        };
        (
            authority.get(..inside.len() + 2).ok_or_else(malformed)?,
            port,
        )
    } else {
        match authority.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        if port.parse::<u32>().map_or(true, |p| p > 65535) {
            return Err(malformed());
        }
    }
    if !name.starts_with('[') {
        let ok = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !ok {
            return Err(malformed());
        }
    }
    let name = if name.len() > 1 {
        name.strip_suffix('.').unwrap_or(name)
    } else {
        name
    };
    let empty_label = |name: &str| {
        name.starts_with('.')
            || name.ends_with('.')
            || name.as_bytes().windows(2).any(|w| w == b"..")
    };
    if name.is_empty() || (!name.starts_with('[') && empty_label(name)) {
        return Err(malformed());
    }
    Ok(name.to_ascii_lowercase())
}

/// SNI as rules match it: lower case, without a trailing dot; empty means "no SNI".
pub fn normalize_sni(sni: &str) -> Option<String> {
    let name = if sni.len() > 1 {
        sni.strip_suffix('.').unwrap_or(sni)
    } else {
        sni
    };
    if name.is_empty() {
        None
    } else {
        Some(name.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> HostMatcher {
        let parsed: Vec<HostPattern> = patterns
            .iter()
            .map(|p| HostPattern::parse(p).unwrap())
            .collect();
        HostMatcher::new(&parsed)
    }

    #[test]
    fn normalizes_authorities() {
        assert_eq!(normalize_host("EVIL.example:443").unwrap(), "evil.example");
        assert_eq!(normalize_host("evil.example.").unwrap(), "evil.example");
        assert_eq!(
            normalize_host("evil.example.:8443").unwrap(),
            "evil.example"
        );
        assert_eq!(
            normalize_host("[2001:DB8::1]:443").unwrap(),
            "[2001:db8::1]"
        );
        assert_eq!(normalize_host("10.0.0.1:80").unwrap(), "10.0.0.1");
        for bad in [
            "",
            ":443",
            ".a.com",
            "a..com",
            ".",
            "a b",
            "user@host",
            "host:",
            "host:99999",
            "host:12a",
            "[::1",
            "[::1]x",
            "a/b",
            "a:1:2",
        ] {
            assert!(normalize_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_patterns() {
        assert_eq!(
            HostPattern::parse("*.Example.COM"),
            Ok(HostPattern::Subdomain("example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("example.com:*"),
            Ok(HostPattern::Exact("example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("example.com."),
            Ok(HostPattern::Exact("example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("*example.com"),
            Ok(HostPattern::Suffix("example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("api.*"),
            Ok(HostPattern::Prefix("api.".into()))
        );
        assert!(matches!(
            HostPattern::parse("example.com:443"),
            Err(HostPatternError::HasPort(_))
        ));
        assert!(HostPattern::parse("api.*.example").is_err());
        assert!(HostPattern::parse("").is_err());
    }

    #[test]
    fn subdomain_trie() {
        let m = matcher(&["*.example.com", "github.com", "*.githubusercontent.com"]);
        assert!(m.matches("api.example.com"));
        assert!(m.matches("a.b.example.com"));
        assert!(!m.matches("example.com"));
        assert!(!m.matches("badexample.com"));
        assert!(m.matches("github.com"));
        assert!(!m.matches("api.github.com"));
        assert!(m.matches("raw.githubusercontent.com"));
        assert!(!m.matches("com"));
        assert!(!m.matches(""));
    }

    #[test]
    fn raw_suffix_and_prefix() {
        let m = matcher(&["*example.com", "internal.*"]);
        assert!(m.matches("example.com"));
        assert!(m.matches("badexample.com"));
        assert!(m.matches("internal.corp"));
        assert!(!m.matches("corp.internal"));
    }

    #[test]
    fn table_reports_all_values() {
        let mut b = HostTableBuilder::default();
        b.insert(&HostPattern::parse("*.example.com").unwrap(), 1);
        b.insert(&HostPattern::parse("api.example.com").unwrap(), 2);
        b.insert(&HostPattern::parse("*").unwrap(), 3);
        b.insert(&HostPattern::parse("*.com").unwrap(), 4);
        let t = b.build();
        let mut seen = Vec::new();
        t.for_each_match("api.example.com", &mut |v| {
            seen.push(v);
            false
        });
        seen.sort();
        assert_eq!(seen, vec![1, 2, 3, 4]);
    }
}
