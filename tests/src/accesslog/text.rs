//! Envoy's text access-log format: the format string compiled into literals and command
//! operators, and lines matched against it.
//!
//! Envoy writes values as they are, with `-` for an absent one, and does not escape the quotes
//! around `"%REQ(USER-AGENT)%"`: a header value may itself contain `" "`. A value therefore
//! ends at the first occurrence of the literal that follows its operator, unless the rest of the
//! line then fails to match, in which case the next occurrence is tried (bounded backtracking).
//! Values between quotes may hold anything; a value outside quotes holds no space and no `"`, and
//! numeric operators hold digits (or `-`), which is what pins a line to the format when a quoted
//! value contains the delimiter.

use std::collections::BTreeMap;

/// Istio's default `meshConfig.accessLogFormat` for `accessLogEncoding: TEXT` (Istio 1.9 and
/// later; `EnvoyTextLogFormat` in istio/istio `pilot/pkg/model/telemetry_logging.go`), without
/// its trailing newline.
pub const ISTIO_TEXT_FORMAT: &str = concat!(
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" ",
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ",
    "\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ",
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" ",
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% ",
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% ",
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%"
);

/// Attempts at placing a value before a line counts as not matching the format.
const MATCH_BUDGET: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Operator(Operator),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Operator {
    /// As written between the `%`s, without a `:N` length limit: `REQ(:METHOD)`.
    name: String,
    /// What the value may look like.
    shape: Shape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Digits, or `-`.
    Number,
    /// No space and no `"` (values outside quotes).
    Token,
    /// Anything (between quotes or brackets).
    Free,
}

/// Operators whose values never hold a space or a `"`, quoted or not: addresses, the
/// authority (Envoy refuses other characters in it), the request line's parts and the default
/// start time. They pin the fields around a header value that holds `" "`.
fn one_word(name: &str) -> bool {
    matches!(
        name,
        "START_TIME"
            | "REQ(:METHOD)"
            | "REQ(:AUTHORITY)"
            | "REQ(HOST)"
            | "PROTOCOL"
            | "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)"
            | "REQ(:PATH)"
            | "UPSTREAM_HOST"
            | "UPSTREAM_CLUSTER"
            | "UPSTREAM_CLUSTER_RAW"
            | "UPSTREAM_LOCAL_ADDRESS"
            | "REQUESTED_SERVER_NAME"
    ) || name.starts_with("DOWNSTREAM_") && name.contains("ADDRESS")
}

/// A compiled text format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFormat {
    pieces: Vec<Piece>,
}

/// The values of one line, by operator name; `None` for `-`.
pub type TextValues = BTreeMap<String, Option<String>>;

fn numeric(name: &str) -> bool {
    matches!(
        name,
        "RESPONSE_CODE"
            | "BYTES_RECEIVED"
            | "BYTES_SENT"
            | "DURATION"
            | "REQUEST_DURATION"
            | "REQUEST_TX_DURATION"
            | "RESPONSE_DURATION"
            | "RESPONSE_TX_DURATION"
            | "UPSTREAM_REQUEST_ATTEMPT_COUNT"
            | "UPSTREAM_WIRE_BYTES_RECEIVED"
            | "UPSTREAM_WIRE_BYTES_SENT"
            | "DOWNSTREAM_WIRE_BYTES_RECEIVED"
            | "DOWNSTREAM_WIRE_BYTES_SENT"
            | "CONNECTION_ID"
            | "RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)"
    )
}

impl TextFormat {
    /// Compiles an Envoy format string (`%OPERATOR%`, `%OPERATOR(arg)%`, `%OPERATOR(arg):N%`
    /// between literal text). A trailing newline is ignored: lines are read without it.
    pub fn parse(format: &str) -> Result<TextFormat, String> {
        let format = format.strip_suffix('\n').unwrap_or(format);
        let mut pieces: Vec<Piece> = Vec::new();
        let mut rest = format;
        while !rest.is_empty() {
            let Some(start) = rest.find('%') else {
                pieces.push(Piece::Literal(rest.to_string()));
                break;
            };
            if start > 0 {
                pieces.push(Piece::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else {
                return Err(format!(
                    "the format has a '%' at byte {} that starts no %OPERATOR%",
                    format.len() - rest.len() + start
                ));
            };
            let raw = &after[..end];
            if raw.is_empty() {
                return Err("the format has an empty operator \"%%\"".to_string());
            }
            // `%REQ(USER-AGENT):10%` truncates; the name is what comes before the length.
            let name = match raw.rsplit_once("):") {
                Some((head, len)) if len.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{head})")
                }
                _ => raw.to_string(),
            };
            if let Some(Piece::Operator(previous)) = pieces.last() {
                return Err(format!(
                    "%{}% and %{name}% have nothing between them, so a line cannot be split into the two",
                    previous.name
                ));
            }
            pieces.push(Piece::Operator(Operator {
                name,
                shape: Shape::Free,
            }));
            rest = &after[end + 1..];
        }
        if !pieces.iter().any(|p| matches!(p, Piece::Operator(_))) {
            return Err("the format has no %OPERATOR%".to_string());
        }
        // Shapes depend on the neighbours: quoted or bracketed values are free.
        for i in 0..pieces.len() {
            let before = match i.checked_sub(1).and_then(|j| pieces.get(j)) {
                Some(Piece::Literal(l)) => l.chars().last(),
                _ => None,
            };
            let after = match pieces.get(i + 1) {
                Some(Piece::Literal(l)) => l.chars().next(),
                _ => None,
            };
            if let Some(Piece::Operator(op)) = pieces.get_mut(i) {
                let enclosed = matches!(
                    (before, after),
                    (Some('"'), Some('"')) | (Some('['), Some(']'))
                );
                op.shape = if numeric(&op.name) {
                    Shape::Number
                } else if one_word(&op.name) || !enclosed {
                    Shape::Token
                } else {
                    Shape::Free
                };
            }
        }
        Ok(TextFormat { pieces })
    }

    /// Istio's default text format.
    pub fn istio_default() -> TextFormat {
        // The constant is a valid format (a unit test parses it).
        TextFormat::parse(ISTIO_TEXT_FORMAT).unwrap_or(TextFormat { pieces: Vec::new() })
    }

    /// Whether the format has this operator (`%NAME%` given with or without the `%`s).
    pub fn has_operator(&self, name: &str) -> bool {
        let name = name.trim_matches('%');
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Operator(op) if op.name == name))
    }

    /// The operators, in order, as written (`%REQ(:METHOD)%`).
    pub fn operators(&self) -> Vec<String> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Operator(op) => Some(format!("%{}%", op.name)),
                Piece::Literal(_) => None,
            })
            .collect()
    }

    /// Splits a line into the values of the format's operators.
    pub fn match_line(&self, line: &str) -> Result<TextValues, String> {
        let mut ends = vec![0usize; self.pieces.len()];
        let mut budget = MATCH_BUDGET;
        if self.place(0, line, 0, &mut ends, &mut budget) {
            let mut values = TextValues::new();
            let mut start = 0;
            for (piece, &end) in self.pieces.iter().zip(&ends) {
                if let Piece::Operator(op) = piece {
                    let value = line.get(start..end).unwrap_or("");
                    let value = (value != "-" && !value.is_empty()).then(|| value.to_string());
                    values.insert(op.name.clone(), value);
                }
                start = end;
            }
            return Ok(values);
        }
        if budget == 0 {
            return Err(
                "the line matches the text format in too many ways (quoted values full of '\" \"')"
                    .to_string(),
            );
        }
        Err(self.explain_mismatch(line))
    }

    /// Places piece `i` at byte `at`; `ends[i]` is where it ends. Depth-first, first
    /// occurrence first.
    fn place(
        &self,
        i: usize,
        line: &str,
        at: usize,
        ends: &mut [usize],
        budget: &mut usize,
    ) -> bool {
        let Some(piece) = self.pieces.get(i) else {
            return at == line.len();
        };
        let rest = line.get(at..).unwrap_or("");
        match piece {
            Piece::Literal(literal) => {
                if !rest.starts_with(literal.as_str()) {
                    return false;
                }
                ends[i] = at + literal.len();
                self.place(i + 1, line, at + literal.len(), ends, budget)
            }
            Piece::Operator(op) => {
                let next = match self.pieces.get(i + 1) {
                    Some(Piece::Literal(l)) => Some(l.as_str()),
                    _ => None,
                };
                let last = [(line.len() - at, "")];
                let candidates: Box<dyn Iterator<Item = (usize, &str)>> = match next {
                    // The last piece takes the rest of the line.
                    None => Box::new(last.into_iter()),
                    Some(literal) => Box::new(rest.match_indices(literal)),
                };
                for (offset, _) in candidates {
                    if *budget == 0 {
                        return false;
                    }
                    *budget -= 1;
                    let end = at + offset;
                    let value = line.get(at..end).unwrap_or("");
                    if !op.shape.fits(value) {
                        // A longer value would hold the delimiter too; it may still fit when
                        // the delimiter itself fits the shape.
                        continue;
                    }
                    ends[i] = end;
                    if self.place(i + 1, line, end, ends, budget) {
                        return true;
                    }
                }
                false
            }
        }
    }

    /// Names the first operator at which a line stops matching, for the unusable-line report.
    fn explain_mismatch(&self, line: &str) -> String {
        let mut at = 0;
        for (i, piece) in self.pieces.iter().enumerate() {
            let rest = line.get(at..).unwrap_or("");
            match piece {
                Piece::Literal(literal) => {
                    if !rest.starts_with(literal.as_str()) {
                        return format!(
                            "does not match the text format: expected {literal:?} at column {}",
                            at + 1
                        );
                    }
                    at += literal.len();
                }
                Piece::Operator(op) => {
                    let end = match self.pieces.get(i + 1) {
                        Some(Piece::Literal(l)) => rest.find(l.as_str()).map(|o| at + o),
                        _ => Some(line.len()),
                    };
                    let Some(end) = end else {
                        return format!(
                            "does not match the text format: the line ends inside %{}% (column {})",
                            op.name,
                            at + 1
                        );
                    };
                    let value = line.get(at..end).unwrap_or("");
                    if !op.shape.fits(value) {
                        return format!(
                            "does not match the text format: %{}% is {value:?}, not {} (column {})",
                            op.name,
                            op.shape.describe(),
                            at + 1
                        );
                    }
                    at = end;
                }
            }
        }
        "does not match the text format: a value holds one of the format's delimiters".to_string()
    }
}

impl Shape {
    fn fits(self, value: &str) -> bool {
        match self {
            Shape::Free => true,
            Shape::Token => !value.is_empty() && !value.contains([' ', '"']),
            Shape::Number => {
                value == "-" || (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
            }
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Shape::Free => "anything",
            Shape::Token => "one word",
            Shape::Number => "a number",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line in Istio's default format with a distinct value in every field.
    const HTTP_LINE: &str = concat!(
        "[2026-03-01T10:15:30.123Z] \"POST /v1/charges?limit=3 HTTP/1.1\" 201 - via_upstream - ",
        "\"-\" 512 2048 87 80 \"10.1.7.3, 10.1.0.1\" \"stripe-python/7.1 (linux; \"quoted\" x)\" ",
        "\"6b1f3e2a-9c4d-4e1b-8a77-1d2c3b4a5f60\" \"api.stripe.com\" \"54.187.174.169:443\" ",
        "outbound|443||api.stripe.com 10.20.0.5:48312 10.20.0.5:8080 10.1.7.3:52000 ",
        "outbound_.80_._.istio-egressgateway.istio-system.svc.cluster.local -"
    );

    const TCP_LINE: &str = concat!(
        "[2026-03-01T10:15:31.000Z] \"- - -\" 0 - - - \"-\" 517 4096 1203 - \"-\" \"-\" \"-\" \"-\" ",
        "\"140.82.112.6:443\" outbound|443||api.github.com 10.20.0.5:40112 10.20.0.5:8443 ",
        "10.1.4.20:41008 api.github.com -"
    );

    fn value(line: &str, operator: &str) -> Option<String> {
        let values = TextFormat::istio_default()
            .match_line(line)
            .unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(values.contains_key(operator), "no {operator} in {values:?}");
        values[operator].clone()
    }

    macro_rules! field {
        ($test:ident, $operator:literal, $http:expr, $tcp:expr) => {
            #[test]
            fn $test() {
                assert_eq!(
                    value(HTTP_LINE, $operator).as_deref(),
                    $http,
                    "HTTP line, %{}%",
                    $operator
                );
                assert_eq!(
                    value(TCP_LINE, $operator).as_deref(),
                    $tcp,
                    "TCP line, %{}%",
                    $operator
                );
            }
        };
    }

    field!(
        start_time,
        "START_TIME",
        Some("2026-03-01T10:15:30.123Z"),
        Some("2026-03-01T10:15:31.000Z")
    );
    field!(method, "REQ(:METHOD)", Some("POST"), None);
    field!(
        path,
        "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)",
        Some("/v1/charges?limit=3"),
        None
    );
    field!(protocol, "PROTOCOL", Some("HTTP/1.1"), None);
    field!(response_code, "RESPONSE_CODE", Some("201"), Some("0"));
    field!(response_flags, "RESPONSE_FLAGS", None, None);
    field!(
        response_code_details,
        "RESPONSE_CODE_DETAILS",
        Some("via_upstream"),
        None
    );
    field!(
        connection_termination_details,
        "CONNECTION_TERMINATION_DETAILS",
        None,
        None
    );
    field!(
        upstream_transport_failure_reason,
        "UPSTREAM_TRANSPORT_FAILURE_REASON",
        None,
        None
    );
    field!(bytes_received, "BYTES_RECEIVED", Some("512"), Some("517"));
    field!(bytes_sent, "BYTES_SENT", Some("2048"), Some("4096"));
    field!(duration, "DURATION", Some("87"), Some("1203"));
    field!(
        upstream_service_time,
        "RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)",
        Some("80"),
        None
    );
    field!(
        x_forwarded_for,
        "REQ(X-FORWARDED-FOR)",
        Some("10.1.7.3, 10.1.0.1"),
        None
    );
    field!(
        user_agent,
        "REQ(USER-AGENT)",
        Some("stripe-python/7.1 (linux; \"quoted\" x)"),
        None
    );
    field!(
        request_id,
        "REQ(X-REQUEST-ID)",
        Some("6b1f3e2a-9c4d-4e1b-8a77-1d2c3b4a5f60"),
        None
    );
    field!(authority, "REQ(:AUTHORITY)", Some("api.stripe.com"), None);
    field!(
        upstream_host,
        "UPSTREAM_HOST",
        Some("54.187.174.169:443"),
        Some("140.82.112.6:443")
    );
    field!(
        upstream_cluster,
        "UPSTREAM_CLUSTER_RAW",
        Some("outbound|443||api.stripe.com"),
        Some("outbound|443||api.github.com")
    );
    field!(
        upstream_local_address,
        "UPSTREAM_LOCAL_ADDRESS",
        Some("10.20.0.5:48312"),
        Some("10.20.0.5:40112")
    );
    field!(
        downstream_local_address,
        "DOWNSTREAM_LOCAL_ADDRESS",
        Some("10.20.0.5:8080"),
        Some("10.20.0.5:8443")
    );
    field!(
        downstream_remote_address,
        "DOWNSTREAM_REMOTE_ADDRESS",
        Some("10.1.7.3:52000"),
        Some("10.1.4.20:41008")
    );
    field!(
        requested_server_name,
        "REQUESTED_SERVER_NAME",
        Some("outbound_.80_._.istio-egressgateway.istio-system.svc.cluster.local"),
        Some("api.github.com")
    );
    field!(route_name, "ROUTE_NAME", None, None);

    #[test]
    fn a_header_value_holding_the_delimiter_does_not_shift_the_fields_after_it() {
        // A client can put `" "` in its user agent; the authority and addresses still land in
        // their fields, and the text is kept by the two header fields between them.
        let line = HTTP_LINE.replace(
            "(linux; \"quoted\" x)",
            "x\" \"api.evil.example\" \"1.2.3.4:443",
        );
        let values = TextFormat::istio_default().match_line(&line).unwrap();
        assert_eq!(values["REQ(:AUTHORITY)"].as_deref(), Some("api.stripe.com"));
        assert_eq!(
            values["UPSTREAM_HOST"].as_deref(),
            Some("54.187.174.169:443")
        );
        assert_eq!(
            values["DOWNSTREAM_REMOTE_ADDRESS"].as_deref(),
            Some("10.1.7.3:52000")
        );
        let headers = format!(
            "{}\" \"{}",
            values["REQ(USER-AGENT)"].as_deref().unwrap(),
            values["REQ(X-REQUEST-ID)"].as_deref().unwrap()
        );
        assert_eq!(
            headers,
            "stripe-python/7.1 x\" \"api.evil.example\" \"1.2.3.4:443\" \"6b1f3e2a-9c4d-4e1b-8a77-1d2c3b4a5f60"
        );
    }

    #[test]
    fn the_default_format_has_every_istio_field() {
        let format = TextFormat::istio_default();
        assert_eq!(format.operators().len(), 24, "{:?}", format.operators());
        assert!(format.has_operator("%DOWNSTREAM_REMOTE_ADDRESS%"));
        assert!(!format.has_operator("DOWNSTREAM_PEER_URI_SAN"));
    }

    #[test]
    fn an_appended_operator_is_read_and_limits_are_ignored_in_names() {
        let format = TextFormat::parse(&format!(
            "{ISTIO_TEXT_FORMAT} %DOWNSTREAM_PEER_URI_SAN% \"%REQ(USER-AGENT):20%\"\n"
        ))
        .unwrap();
        let line = format!("{TCP_LINE} spiffe://cluster.local/ns/ci/sa/runner \"curl\"");
        let values = format.match_line(&line).unwrap();
        assert_eq!(
            values["DOWNSTREAM_PEER_URI_SAN"].as_deref(),
            Some("spiffe://cluster.local/ns/ci/sa/runner")
        );
        assert!(format.has_operator("REQ(USER-AGENT)"));
    }

    #[test]
    fn lines_that_do_not_fit_say_where() {
        let format = TextFormat::istio_default();
        let err = format
            .match_line(
                "2026-03-01T10:15:31.000000Z\twarning\tenvoy config\tgRPC config stream closed",
            )
            .unwrap_err();
        assert!(err.contains("expected \"[\" at column 1"), "{err}");
        let shifted = HTTP_LINE.replacen(" 512 ", " lots ", 1);
        let err = format.match_line(&shifted).unwrap_err();
        assert!(err.contains("%BYTES_RECEIVED% is \"lots\""), "{err}");
        let cut = &TCP_LINE[..TCP_LINE.len() - 20];
        assert!(format.match_line(cut).is_err());
    }

    #[test]
    fn formats_that_cannot_be_split_are_refused() {
        assert!(TextFormat::parse("%START_TIME%%PROTOCOL%")
            .unwrap_err()
            .contains("nothing between them"));
        assert!(TextFormat::parse("[%START_TIME").is_err());
        assert!(TextFormat::parse("no operators").is_err());
    }

    #[test]
    fn backtracking_is_bounded() {
        let format =
            TextFormat::parse("\"%REQ(A)%\" \"%REQ(B)%\" \"%REQ(C)%\" %RESPONSE_CODE%").unwrap();
        let hostile = format!("\"{}\" x", "\" \"".repeat(400));
        let err = format.match_line(&hostile).unwrap_err();
        assert!(
            err.contains("too many ways") || err.contains("does not match"),
            "{err}"
        );
        let fine = format.match_line("\"a\" \"b \" \"c\" \"d\" 200").unwrap();
        assert_eq!(fine["REQ(A)"].as_deref(), Some("a"));
        // Ambiguous: the first value takes the first delimiter, the last shape decides the rest.
        assert_eq!(fine["REQ(B)"].as_deref(), Some("b "));
        assert_eq!(fine["REQ(C)"].as_deref(), Some("c\" \"d"));
    }
}
