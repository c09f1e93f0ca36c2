//! A small, strict JSON reader for the pluginConfig.
//!
//! The filter ships as a size-bounded `.wasm`; a general-purpose (de)serialisation framework
//! costs more than the whole policy engine, so the configuration is read with this parser and
//! [`super::read`]. Strict on purpose: duplicate keys, trailing data, invalid UTF-8, lone
//! surrogates and nesting deeper than [`MAX_DEPTH`] are refused. Numbers keep their text.

use std::fmt::Write as _;

use super::error::{ConfigError, ConfigErrorKind, ConfigPath};

/// Deepest nesting accepted; the configuration needs 7 levels, and recursion must stay bounded.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number as written (validated against the JSON grammar).
    Number(String),
    String(String),
    Array(Vec<Json>),
    /// Members in document order (keys are unique).
    Object(Vec<(String, Json)>),
}

impl Json {
    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Number(_) => "a number",
            Self::String(_) => "a string",
            Self::Array(_) => "a list",
            Self::Object(_) => "an object",
        }
    }
}

enum Segment {
    Key(String),
    Index(usize),
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    path: Vec<Segment>,
}

/// Parses a whole document. Errors name the line, column and the path being read.
pub fn parse(input: &[u8]) -> Result<Json, ConfigError> {
    let text = std::str::from_utf8(input).map_err(|e| {
        ConfigError::new(
            ConfigPath::root(),
            ConfigErrorKind::Syntax(format!("invalid UTF-8 at byte {}", e.valid_up_to())),
        )
    })?;
    let mut parser = Parser {
        text,
        bytes: input,
        pos: 0,
        path: Vec::new(),
    };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos < parser.bytes.len() {
        return Err(parser.error("trailing characters after the JSON value"));
    }
    Ok(value)
}

impl Parser<'_> {
    #[inline(never)]
    fn error(&self, what: &str) -> ConfigError {
        let before = self.text.get(..self.pos).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let mut path = ConfigPath::root();
        for segment in &self.path {
            path = match segment {
                Segment::Key(key) => path.field(key),
                Segment::Index(i) => path.index(*i),
            };
        }
        ConfigError::new(
            path,
            ConfigErrorKind::Syntax(format!(
                "invalid JSON at line {line} column {column}: {what}"
            )),
        )
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect_literal(&mut self, literal: &str, value: Json) -> Result<Json, ConfigError> {
        if self.bytes.get(self.pos..self.pos + literal.len()) == Some(literal.as_bytes()) {
            self.pos += literal.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, ConfigError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting is too deep"));
        }
        self.skip_whitespace();
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Json::String),
            Some(b't') => self.expect_literal("true", Json::Bool(true)),
            Some(b'f') => self.expect_literal("false", Json::Bool(false)),
            Some(b'n') => self.expect_literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, ConfigError> {
        self.pos += 1; // '{'
        let mut members: Vec<(String, Json)> = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key in double quotes"));
            }
            let key = self.string()?;
            if members.iter().any(|(k, _)| *k == key) {
                return Err(self.error(&format!("duplicate key {}", crate::text::quote(&key))));
            }
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:`"));
            }
            self.pos += 1;
            self.path.push(Segment::Key(key.clone()));
            let value = self.value(depth + 1)?;
            self.path.pop();
            members.push((key, value));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(members));
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, ConfigError> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.path.push(Segment::Index(items.len()));
            let value = self.value(depth + 1)?;
            self.path.pop();
            items.push(value);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ConfigError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("truncated \\u escape"))?;
        let mut value = 0u32;
        for &d in digits {
            let v = char::from(d)
                .to_digit(16)
                .ok_or_else(|| self.error("invalid \\u escape"))?;
            value = value * 16 + v;
        }
        self.pos += 4;
        Ok(value)
    }

    fn string(&mut self) -> Result<String, ConfigError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // The input is valid UTF-8 and the stops are ASCII, so this is a char boundary.
            out.push_str(self.text.get(start..self.pos).unwrap_or(""));
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escape = self
                        .peek()
                        .ok_or_else(|| self.error("unterminated string"))?;
                    self.pos += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let mut code = self.hex4()?;
                            if (0xD800..0xDC00).contains(&code) {
                                if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                    return Err(self.error("lone surrogate in \\u escape"));
                                }
                                self.pos += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(self.error("lone surrogate in \\u escape"));
                                }
                                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                            }
                            let c = char::from_u32(code)
                                .ok_or_else(|| self.error("lone surrogate in \\u escape"))?;
                            out.push(c);
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                }
                Some(_) => return Err(self.error("control character in string")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Json, ConfigError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        let int_digits = self.digits();
        if int_digits == 0 || (int_digits > 1 && self.bytes.get(int_start) == Some(&b'0')) {
            return Err(self.error("invalid number"));
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        Ok(Json::Number(
            self.text.get(start..self.pos).unwrap_or("").to_string(),
        ))
    }
}

/// Writes JSON text; used for the decision log line.
#[derive(Debug, Default)]
pub struct JsonWriter {
    out: String,
    /// Whether the next member or element needs a comma first: false right after a container
    /// opens, true after any value (a closed container is a value of its parent).
    comma: bool,
}

impl JsonWriter {
    pub fn new() -> Self {
        Self {
            // A decision line is 500 to 900 bytes: one allocation.
            out: String::with_capacity(1024),
            comma: false,
        }
    }

    fn separator(&mut self) {
        if self.comma {
            self.out.push(',');
        }
        self.comma = true;
    }

    /// Keys are the filter's own names and header names from the configuration, which allows
    /// only token characters in them: nothing to escape, so they are written as they are.
    #[inline(never)]
    fn key(&mut self, key: &str) {
        debug_assert!(crate::text::needs_no_escape(key), "{key}");
        self.separator();
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    /// Appends `text`, which is JSON already (members of the open object, with their commas).
    pub fn raw(&mut self, text: &str) {
        self.out.push_str(text);
        self.comma = true;
    }

    pub fn begin_object(&mut self) {
        self.out.push('{');
        self.comma = false;
    }

    pub fn end_object(&mut self) {
        self.out.push('}');
        self.comma = true;
    }

    pub fn begin_array(&mut self) {
        self.out.push('[');
        self.comma = false;
    }

    pub fn end_array(&mut self) {
        self.out.push(']');
        self.comma = true;
    }

    #[inline(never)]
    pub fn key_object(&mut self, key: &str) {
        self.key(key);
        self.begin_object();
    }

    #[inline(never)]
    pub fn key_array(&mut self, key: &str) {
        self.key(key);
        self.begin_array();
    }

    /// An array element that is an object.
    #[inline(never)]
    pub fn element_object(&mut self) {
        self.separator();
        self.begin_object();
    }

    #[inline(never)]
    pub fn element_str(&mut self, value: &str) {
        self.separator();
        crate::text::push_quoted(&mut self.out, value);
    }

    #[inline(never)]
    pub fn str(&mut self, key: &str, value: Option<&str>) {
        self.key(key);
        match value {
            Some(v) => crate::text::push_quoted(&mut self.out, v),
            None => self.out.push_str("null"),
        }
    }

    #[inline(never)]
    pub fn uint(&mut self, key: &str, value: Option<u64>) {
        self.key(key);
        match value {
            Some(v) => crate::text::push_uint(&mut self.out, v),
            None => self.out.push_str("null"),
        }
    }

    /// An IP address as a string (IPv4 written directly, IPv6 through `Display`).
    #[inline(never)]
    pub fn ip(&mut self, key: &str, value: &std::net::IpAddr) {
        self.key(key);
        self.out.push('"');
        match value {
            std::net::IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.out.push('.');
                    }
                    crate::text::push_uint(&mut self.out, u64::from(octet));
                }
            }
            std::net::IpAddr::V6(v6) => {
                let _ = write!(self.out, "{v6}");
            }
        }
        self.out.push('"');
    }

    #[inline(never)]
    pub fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Json {
        parse(text.as_bytes()).unwrap()
    }

    fn err(text: &str) -> String {
        parse(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn parses_values() {
        assert_eq!(ok(" null "), Json::Null);
        assert_eq!(
            ok("[true,false]"),
            Json::Array(vec![Json::Bool(true), Json::Bool(false)])
        );
        assert_eq!(ok("-12.5e+3"), Json::Number("-12.5e+3".into()));
        assert_eq!(
            ok(r#""a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#),
            Json::String("a\"\\/\u{8}\u{c}\n\r\té😀".into())
        );
        assert_eq!(
            ok(r#"{"a":{"b":[1]},"c":"d"}"#),
            Json::Object(vec![
                (
                    "a".into(),
                    Json::Object(vec![(
                        "b".into(),
                        Json::Array(vec![Json::Number("1".into())])
                    )])
                ),
                ("c".into(), Json::String("d".into())),
            ])
        );
    }

    #[test]
    fn refuses_bad_documents() {
        assert_eq!(
            err(r#"{"a":1,"a":2}"#),
            "$: invalid JSON at line 1 column 11: duplicate key \"a\""
        );
        assert_eq!(
            err("{\"policies\":[{\"name\":\"x\",}]}"),
            "policies[0]: invalid JSON at line 1 column 26: expected a key in double quotes"
        );
        assert!(err("[1] x").contains("trailing characters"));
        assert!(err("01").contains("invalid number"));
        assert!(err("1.").contains("invalid number"));
        assert!(err("\"\\ud800\"").contains("lone surrogate"));
        assert!(err("\"a\nb\"").contains("control character"));
        assert!(err("\"abc").contains("unterminated string"));
        assert!(err("tru").contains("expected a value"));
        assert!(err("").contains("unexpected end of input"));
        assert!(parse(b"\"\xff\"").is_err());
        assert!(err(&"[".repeat(100)).contains("nesting is too deep"));
        assert_eq!(
            err("{\n  \"a\": [1,\n  2 3]}"),
            "a: invalid JSON at line 3 column 5: expected `,` or `]`"
        );
    }

    #[test]
    fn writes_json() {
        let mut w = JsonWriter::new();
        w.begin_object();
        w.str("a", Some("x\"y"));
        w.str("b", None);
        w.uint("c", Some(7));
        w.key_array("d");
        w.element_str("e");
        w.element_object();
        w.bool("f", true);
        w.end_object();
        w.end_array();
        w.ip("v4", &"10.0.255.1".parse().unwrap());
        w.ip("v6", &"2001:db8::1".parse().unwrap());
        w.end_object();
        assert_eq!(
            w.finish(),
            r#"{"a":"x\"y","b":null,"c":7,"d":["e",{"f":true}],"v4":"10.0.255.1","v6":"2001:db8::1"}"#
        );
    }
}
