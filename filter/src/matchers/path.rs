//! Request paths: Istio string forms plus the URI-template operators `{*}` and `{**}`.
//!
//! Templates follow Envoy's `uri_template` matcher, which Istio generates for them: `{*}` is one
//! or more path characters within a segment, `{**}` is zero or more path characters including
//! `/`, and the whole (normalised) path must match.

use super::string::{PatternError, StringMatcher, StringPattern};
use crate::text::quote;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    String(StringPattern),
    Template(PathTemplate),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathPatternError {
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error("{}: a path template must start with `/`", quote(.0))]
    TemplateNotAbsolute(String),
    #[error("{}: `{{**}}` must be the last operator of a path template", quote(.0))]
    AnyNotLast(String),
    #[error("{}: `{{*}}` and `{{**}}` must each fill a whole path segment", quote(.0))]
    OperatorNotWholeSegment(String),
    #[error("{}: segment {} holds characters not allowed in a path template", quote(.0), quote(.1))]
    InvalidLiteral(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    /// `{*}`: one or more path characters, no `/`.
    OneSegment,
    /// `{**}` and everything after it (only literals may follow): zero or more path characters
    /// or `/`, then exactly `tail`.
    Rest {
        tail: String,
    },
}

/// RFC 3986 `pchar` without `*` (Envoy's literal set for templates); `%` keeps escapes intact.
fn is_template_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b)
}

impl PathPattern {
    pub fn parse(raw: &str) -> Result<Self, PathPatternError> {
        if raw.contains("{*}") || raw.contains("{**}") {
            PathTemplate::parse(raw).map(Self::Template)
        } else if raw.contains('{') || raw.contains('}') {
            Err(PathPatternError::OperatorNotWholeSegment(raw.to_string()))
        } else {
            Ok(Self::String(StringPattern::parse(raw)?))
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::String(p) => p.matches(path),
            Self::Template(t) => t.matches(path),
        }
    }
}

impl PathTemplate {
    pub fn parse(raw: &str) -> Result<Self, PathPatternError> {
        if !raw.starts_with('/') {
            return Err(PathPatternError::TemplateNotAbsolute(raw.to_string()));
        }
        // Validation mirrors Istio's CheckValidPathTemplate.
        let mut seen_rest = false;
        for segment in raw.trim_matches('/').split('/') {
            match segment {
                "{*}" | "{**}" if seen_rest => {
                    return Err(PathPatternError::AnyNotLast(raw.to_string()));
                }
                "{*}" => {}
                "{**}" => seen_rest = true,
                _ if segment.contains('{') || segment.contains('}') => {
                    return Err(PathPatternError::OperatorNotWholeSegment(raw.to_string()));
                }
                _ if segment.is_empty() || !segment.bytes().all(is_template_char) => {
                    return Err(PathPatternError::InvalidLiteral(
                        raw.to_string(),
                        segment.to_string(),
                    ));
                }
                _ => {}
            }
        }
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut rest_started = false;
        for (i, segment) in raw.split('/').enumerate() {
            if i > 0 {
                literal.push('/');
            }
            match segment {
                "{*}" => {
                    if !literal.is_empty() {
                        tokens.push(Token::Literal(std::mem::take(&mut literal)));
                    }
                    tokens.push(Token::OneSegment);
                }
                "{**}" => {
                    if !literal.is_empty() {
                        tokens.push(Token::Literal(std::mem::take(&mut literal)));
                    }
                    rest_started = true;
                }
                _ => literal.push_str(segment),
            }
        }
        if rest_started {
            tokens.push(Token::Rest { tail: literal });
        } else if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Ok(Self { tokens })
    }

    pub fn matches(&self, path: &str) -> bool {
        let mut rest = path;
        for token in &self.tokens {
            match token {
                Token::Literal(text) => match rest.strip_prefix(text.as_str()) {
                    Some(after) => rest = after,
                    None => return false,
                },
                Token::OneSegment => {
                    // Template characters are ASCII, so the count is a char boundary.
                    let taken = rest.bytes().take_while(|b| is_template_char(*b)).count();
                    if taken == 0 {
                        return false;
                    }
                    rest = rest.get(taken..).unwrap_or("");
                }
                Token::Rest { tail } => {
                    let Some(middle) = rest.strip_suffix(tail.as_str()) else {
                        return false;
                    };
                    return middle.bytes().all(|b| b == b'/' || is_template_char(b));
                }
            }
        }
        rest.is_empty()
    }
}

/// A list of path patterns, ORed. Matched against the normalised path (see [`crate::normalize`]).
#[derive(Debug, Clone, Default)]
pub struct PathMatcher {
    strings: StringMatcher,
    has_strings: bool,
    templates: Vec<PathTemplate>,
}

impl PathMatcher {
    #[inline(never)]
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a PathPattern>) -> Self {
        let mut matcher = Self::default();
        for pattern in patterns {
            match pattern {
                PathPattern::String(p) => {
                    matcher.strings.insert(p);
                    matcher.has_strings = true;
                }
                PathPattern::Template(t) => matcher.templates.push(t.clone()),
            }
        }
        matcher
    }

    pub fn matches(&self, path: &str) -> bool {
        (self.has_strings && self.strings.matches(path))
            || self.templates.iter().any(|t| t.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(raw: &str) -> PathTemplate {
        PathTemplate::parse(raw).unwrap()
    }

    #[test]
    fn istio_template_examples() {
        // From the Operation.paths documentation of Istio's AuthorizationPolicy.
        assert!(template("/foo/{*}").matches("/foo/bar"));
        assert!(!template("/foo/{*}").matches("/foo/bar/baz"));
        assert!(!template("/foo/{*}").matches("/foo/"));
        assert!(template("/foo/{**}/").matches("/foo/bar/"));
        assert!(template("/foo/{**}/").matches("/foo//"));
        assert!(!template("/foo/{**}/").matches("/foo/bar"));
        assert!(template("/foo/{*}/bar/{**}").matches("/foo/buzz/bar/"));
        assert!(template("/foo/{*}/bar/{**}").matches("/foo/buzz/bar/baz"));
        assert!(!template("/foo/{*}/bar/{**}").matches("/foo/buzz/bar"));
        assert!(template("/{**}").matches("/"));
        assert!(template("/{**}").matches("/a/b/c"));
    }

    #[test]
    fn invalid_templates() {
        assert!(matches!(
            PathPattern::parse("/*/baz/{*}"),
            Err(PathPatternError::InvalidLiteral(..))
        ));
        assert!(matches!(
            PathPattern::parse("/**/baz/{*}"),
            Err(PathPatternError::InvalidLiteral(..))
        ));
        assert!(matches!(
            PathPattern::parse("/{**}/foo/{*}"),
            Err(PathPatternError::AnyNotLast(_))
        ));
        assert!(matches!(
            PathPattern::parse("/foo/{*}.txt"),
            Err(PathPatternError::OperatorNotWholeSegment(_))
        ));
        assert!(matches!(
            PathPattern::parse("foo/{*}"),
            Err(PathPatternError::TemplateNotAbsolute(_))
        ));
        assert!(matches!(
            PathPattern::parse("/foo/{id}"),
            Err(PathPatternError::OperatorNotWholeSegment(_))
        ));
        assert!(PathPattern::parse("/a//{*}").is_err());
    }

    #[test]
    fn string_forms() {
        let patterns: Vec<PathPattern> = ["/info*", "/data", "*.json", "/v1/{*}/items"]
            .iter()
            .map(|p| PathPattern::parse(p).unwrap())
            .collect();
        let m = PathMatcher::new(&patterns);
        assert!(m.matches("/info"));
        assert!(m.matches("/information"));
        assert!(m.matches("/data"));
        assert!(!m.matches("/data/x"));
        assert!(m.matches("/x/y.json"));
        assert!(m.matches("/v1/42/items"));
        assert!(!m.matches("/v1/42/43/items"));
    }
}
