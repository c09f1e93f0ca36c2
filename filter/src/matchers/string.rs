//! Istio's string-match forms, parsed once and used by every string field of a rule.

use super::{fast_map, insert_id, AffixMap, IdMap};

/// One value of a string field in an AuthorizationPolicy rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StringPattern {
    /// `abc` matches exactly `abc`.
    Exact(String),
    /// `abc*` matches `abc` and `abcd`.
    Prefix(String),
    /// `*abc` matches `abc` and `xabc`.
    Suffix(String),
    /// `*` matches any non-empty value.
    Presence,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty value is not allowed")]
    Empty,
    #[error("{}: `*` is only allowed as the first or the last character", crate::text::quote(.0))]
    MisplacedWildcard(String),
}

impl StringPattern {
    #[inline(never)]
    pub fn parse(raw: &str) -> Result<Self, PatternError> {
        if raw.is_empty() {
            return Err(PatternError::Empty);
        }
        if raw == "*" {
            return Ok(Self::Presence);
        }
        let misplaced = || PatternError::MisplacedWildcard(raw.to_string());
        if let Some(prefix) = raw.strip_suffix('*') {
            if prefix.contains('*') {
                return Err(misplaced());
            }
            return Ok(Self::Prefix(prefix.to_string()));
        }
        if let Some(suffix) = raw.strip_prefix('*') {
            if suffix.contains('*') {
                return Err(misplaced());
            }
            return Ok(Self::Suffix(suffix.to_string()));
        }
        if raw.contains('*') {
            return Err(misplaced());
        }
        Ok(Self::Exact(raw.to_string()))
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(exact) => value == exact,
            Self::Prefix(prefix) => value.starts_with(prefix.as_str()),
            Self::Suffix(suffix) => value.ends_with(suffix.as_str()),
            Self::Presence => !value.is_empty(),
        }
    }
}

/// A list of string patterns, ORed: matches when any pattern matches. Lookup cost does not grow
/// with the number of patterns (hash for exact values, length-bucketed hashes for affixes).
#[derive(Debug, Clone)]
pub struct StringMatcher {
    /// Same table type as the host and affix tables, so the `.wasm` carries one copy of it.
    exact: IdMap,
    prefixes: AffixMap,
    suffixes: AffixMap,
    presence: bool,
}

impl Default for StringMatcher {
    fn default() -> Self {
        Self {
            exact: fast_map(),
            prefixes: AffixMap::default(),
            suffixes: AffixMap::default(),
            presence: false,
        }
    }
}

impl StringMatcher {
    #[inline(never)]
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a StringPattern>) -> Self {
        let mut matcher = Self::default();
        for pattern in patterns {
            matcher.insert(pattern);
        }
        matcher
    }

    pub fn insert(&mut self, pattern: &StringPattern) {
        match pattern {
            StringPattern::Exact(s) => {
                insert_id(&mut self.exact, s, 0);
            }
            // `abc*` and `*abc` also match `abc` itself; an empty affix cannot occur (that is `*`).
            StringPattern::Prefix(s) => self.prefixes.insert(s, 0),
            StringPattern::Suffix(s) => self.suffixes.insert(s, 0),
            StringPattern::Presence => self.presence = true,
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        if self.presence && !value.is_empty() {
            return true;
        }
        if self.exact.contains_key(value) {
            return true;
        }
        let mut any = |_| true;
        (!self.prefixes.is_empty() && self.prefixes.prefixes_of(value, &mut any))
            || (!self.suffixes.is_empty() && self.suffixes.suffixes_of(value, &mut any))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_forms() {
        assert_eq!(
            StringPattern::parse("abc"),
            Ok(StringPattern::Exact("abc".into()))
        );
        assert_eq!(
            StringPattern::parse("abc*"),
            Ok(StringPattern::Prefix("abc".into()))
        );
        assert_eq!(
            StringPattern::parse("*abc"),
            Ok(StringPattern::Suffix("abc".into()))
        );
        assert_eq!(StringPattern::parse("*"), Ok(StringPattern::Presence));
        assert_eq!(StringPattern::parse(""), Err(PatternError::Empty));
        assert!(StringPattern::parse("a*c").is_err());
        assert!(StringPattern::parse("**").is_err());
        assert!(StringPattern::parse("*a*").is_err());
    }

    #[test]
    fn matcher_agrees_with_patterns() {
        let patterns: Vec<StringPattern> = ["GET", "PO*", "*CH", "x"]
            .iter()
            .map(|p| StringPattern::parse(p).unwrap())
            .collect();
        let matcher = StringMatcher::new(&patterns);
        for value in [
            "GET", "POST", "PO", "PATCH", "CH", "x", "", "DELETE", "get", "Gé", "é",
        ] {
            let expected = patterns.iter().any(|p| p.matches(value));
            assert_eq!(matcher.matches(value), expected, "{value}");
        }
    }

    #[test]
    fn presence_needs_a_value() {
        let matcher = StringMatcher::new(&[StringPattern::Presence]);
        assert!(matcher.matches("a"));
        assert!(!matcher.matches(""));
    }
}
