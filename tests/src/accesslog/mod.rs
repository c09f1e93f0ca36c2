//! Envoy access logs of the egress gateway, read as requests to replay.
//!
//! Two encodings, as Istio writes them (`meshConfig.accessLogEncoding`):
//! - `JSON`: one object per line with Istio's default keys (`EnvoyJSONLogFormatIstio` in
//!   istio/istio `pilot/pkg/model/telemetry_logging.go`): `start_time`, `method`, `path`,
//!   `protocol`, `response_code`, `authority`, `upstream_host`, `downstream_local_address`,
//!   `downstream_remote_address`, `requested_server_name`, `user_agent`, `request_id`, ...
//!   Values may be strings, numbers (newer Envoy types `response_code`, bytes and durations) or
//!   `null`; `"-"` also means absent.
//! - `TEXT`: Istio's default format string ([`text::ISTIO_TEXT_FORMAT`]) or the one the mesh
//!   uses, given with `--text-format`.
//!
//! The file is read line by line with a bounded buffer, never whole. A line that cannot be used
//! (not the format, no destination, a bad address or time) is reported with its number and why,
//! and the rest goes on.
//!
//! What a line becomes:
//! - HTTP when it has a method; TCP (TLS passthrough) when it has `requested_server_name` and no
//!   method, with a TLS ClientHello carrying that server name as the first bytes (the log does
//!   not record the client's TLS version or ALPN, so those checks see a TLS 1.3 client with no
//!   ALPN); TCP without bytes when it has neither but a destination address.
//! - source `ip:port` from `downstream_remote_address` (on the egress gateway: the client
//!   sidecar's pod); destination `ip:port` from `downstream_local_address` (the gateway's
//!   listener, which is what the filter sees as `destination.*`), else `upstream_host`.
//! - `:authority`, `:path`, protocol, `user-agent` and `x-request-id` from their fields; the
//!   scheme is `http` (HTTP reaches the gateway inside the sidecar's mutual TLS); the SNI from
//!   `requested_server_name`.
//! - the source principal from the field named by `--principal-field` (a JSON key, or a text
//!   format operator such as `%DOWNSTREAM_PEER_URI_SAN%`), without its `spiffe://`; absent
//!   otherwise.
//! - `start_time` moves the host clock: milliseconds since the first line's start. Envoy writes
//!   a line when the stream ends, so start times are not in order; the clock never goes back, and
//!   a line that started before the one ahead of it replays at that one's time.

pub mod text;
pub mod time;

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use crate::client_hello::client_hello;
use crate::replay::{ReplayItem, StreamInput};
use crate::stream::{Connection, HttpRequest, TcpStream};
use text::TextFormat;

/// Longest line read; the rest of a longer one is skipped and the line reported.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The fields a replay uses, by their key in Istio's JSON format, and the text format operators
/// that give them.
const FIELDS: &[(Field, &str, &[&str])] = &[
    (Field::StartTime, "start_time", &["START_TIME"]),
    (Field::Method, "method", &["REQ(:METHOD)"]),
    (
        Field::Path,
        "path",
        &[
            "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)",
            "REQ(:PATH)",
            "REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)",
            "REQ_WITHOUT_QUERY(:PATH)",
        ],
    ),
    (Field::Protocol, "protocol", &["PROTOCOL"]),
    (
        Field::Authority,
        "authority",
        &["REQ(:AUTHORITY)", "REQ(HOST)"],
    ),
    (Field::UpstreamHost, "upstream_host", &["UPSTREAM_HOST"]),
    (
        Field::DownstreamLocal,
        "downstream_local_address",
        &["DOWNSTREAM_LOCAL_ADDRESS"],
    ),
    (
        Field::DownstreamRemote,
        "downstream_remote_address",
        &["DOWNSTREAM_REMOTE_ADDRESS"],
    ),
    (
        Field::ServerName,
        "requested_server_name",
        &["REQUESTED_SERVER_NAME"],
    ),
    (Field::UserAgent, "user_agent", &["REQ(USER-AGENT)"]),
    (Field::RequestId, "request_id", &["REQ(X-REQUEST-ID)"]),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    StartTime,
    Method,
    Path,
    Protocol,
    Authority,
    UpstreamHost,
    DownstreamLocal,
    DownstreamRemote,
    ServerName,
    UserAgent,
    RequestId,
}

/// What one line says, every value `None` when absent (`-`, `null`, empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogEntry {
    pub start_time: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub protocol: Option<String>,
    pub authority: Option<String>,
    pub upstream_host: Option<String>,
    pub downstream_local_address: Option<String>,
    pub downstream_remote_address: Option<String>,
    pub requested_server_name: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// From `--principal-field`, as written (with `spiffe://`).
    pub principal: Option<String>,
}

impl LogEntry {
    fn set(&mut self, field: Field, value: Option<String>) {
        let slot = match field {
            Field::StartTime => &mut self.start_time,
            Field::Method => &mut self.method,
            Field::Path => &mut self.path,
            Field::Protocol => &mut self.protocol,
            Field::Authority => &mut self.authority,
            Field::UpstreamHost => &mut self.upstream_host,
            Field::DownstreamLocal => &mut self.downstream_local_address,
            Field::DownstreamRemote => &mut self.downstream_remote_address,
            Field::ServerName => &mut self.requested_server_name,
            Field::UserAgent => &mut self.user_agent,
            Field::RequestId => &mut self.request_id,
        };
        *slot = value;
    }
}

/// Which encoding the file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// JSON when the first line that is not blank starts with `{`, text otherwise.
    #[default]
    Auto,
    Json,
    Text,
}

/// How to read the file.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub encoding: Encoding,
    pub text_format: TextFormat,
    /// A JSON key, or a text format operator (`%DOWNSTREAM_PEER_URI_SAN%`).
    pub principal_field: Option<String>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            encoding: Encoding::Auto,
            text_format: TextFormat::istio_default(),
            principal_field: None,
        }
    }
}

impl LogOptions {
    /// Checks the options against the encoding before any line is read.
    fn validate_for(&self, encoding: Encoding) -> Result<(), String> {
        let (Some(field), Encoding::Text) = (&self.principal_field, encoding) else {
            return Ok(());
        };
        if self.text_format.has_operator(field) {
            Ok(())
        } else {
            Err(format!(
                "--principal-field {field}: the text format has no such operator; add it to the \
                 mesh's accessLogFormat and to --text-format (operators: {})",
                self.text_format.operators().join(" ")
            ))
        }
    }
}

/// A line that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    pub line: usize,
    pub reason: String,
}

/// Streams a log: each non-blank line as an entry, or the reason it cannot be one.
pub struct LogReader<R> {
    input: R,
    options: LogOptions,
    /// Decided on the first line that is not blank, when `Auto`.
    encoding: Encoding,
    line: usize,
    buffer: Vec<u8>,
}

impl<R: BufRead> LogReader<R> {
    pub fn new(input: R, options: LogOptions) -> Result<LogReader<R>, String> {
        options.validate_for(options.encoding)?;
        Ok(LogReader {
            input,
            encoding: options.encoding,
            options,
            line: 0,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// Lines read so far, blank ones included.
    pub fn lines(&self) -> usize {
        self.line
    }

    /// The encoding in use (`Auto` until a line was read).
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The next line: `Ok(None)` at the end. A read error, or options that do not fit the
    /// encoding found, stop the reading.
    #[allow(clippy::type_complexity)]
    pub fn next_entry(&mut self) -> Result<Option<(usize, Result<LogEntry, String>)>, String> {
        loop {
            let read = self
                .read_line()
                .map_err(|e| format!("reading line {}: {e}", self.line + 1))?;
            let Some(too_long) = read else {
                return Ok(None);
            };
            self.line += 1;
            if too_long {
                return Ok(Some((
                    self.line,
                    Err(format!(
                        "longer than {MAX_LINE_BYTES} bytes; an access log line is a few hundred"
                    )),
                )));
            }
            let text = String::from_utf8_lossy(&self.buffer);
            let text = text.trim_end_matches(['\r', '\n']);
            if text.trim().is_empty() {
                continue;
            }
            if self.encoding == Encoding::Auto {
                self.encoding = if text.trim_start().starts_with('{') {
                    Encoding::Json
                } else {
                    Encoding::Text
                };
                self.options.validate_for(self.encoding)?;
            }
            let entry = match self.encoding {
                Encoding::Text => self.text_entry(text),
                _ => self.json_entry(text),
            };
            return Ok(Some((self.line, entry)));
        }
    }

    /// Reads one line into the buffer, keeping at most [`MAX_LINE_BYTES`]: `Some(true)` when it
    /// was longer, `None` at the end of the input.
    fn read_line(&mut self) -> std::io::Result<Option<bool>> {
        self.buffer.clear();
        let mut too_long = false;
        let mut read_any = false;
        loop {
            let available = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(read_any.then_some(too_long));
            }
            read_any = true;
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], i + 1),
                None => (available, available.len()),
            };
            let room = MAX_LINE_BYTES.saturating_sub(self.buffer.len());
            if chunk.len() > room {
                too_long = true;
            }
            self.buffer
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            let newline = done > chunk.len();
            self.input.consume(done);
            if newline {
                return Ok(Some(too_long));
            }
        }
    }

    fn json_entry(&self, text: &str) -> Result<LogEntry, String> {
        if !text.trim_start().starts_with('{') {
            return Err(not_json(text));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
        let Value::Object(object) = value else {
            return Err("not a JSON object".to_string());
        };
        let mut entry = LogEntry::default();
        for (field, key, _) in FIELDS {
            entry.set(*field, json_value(key, object.get(*key))?);
        }
        if let Some(key) = &self.options.principal_field {
            entry.principal = json_value(key, object.get(key))?;
        }
        Ok(entry)
    }

    fn text_entry(&self, text: &str) -> Result<LogEntry, String> {
        let values = self
            .options
            .text_format
            .match_line(text)
            .map_err(|e| envoy_message(text).unwrap_or(e))?;
        let mut entry = LogEntry::default();
        for (field, _, operators) in FIELDS {
            let value = operators
                .iter()
                .find_map(|op| values.get(*op))
                .cloned()
                .flatten();
            entry.set(*field, value);
        }
        if let Some(field) = &self.options.principal_field {
            entry.principal = values.get(field.trim_matches('%')).cloned().flatten();
        }
        Ok(entry)
    }
}

/// One of Envoy's own messages, which share the pod log: `<time>\t<level>\t...`.
fn envoy_message(text: &str) -> Option<String> {
    let mut fields = text.split('\t');
    let time = fields.next()?;
    let level = fields.next()?;
    (time::parse_rfc3339_ms(time).is_ok() && !level.is_empty() && !level.contains(' '))
        .then(|| format!("one of Envoy's own log messages ({level}), not an access log line"))
}

/// Why a line of a JSON log is not an entry.
fn not_json(text: &str) -> String {
    envoy_message(text).unwrap_or_else(|| {
        let start: String = text.chars().take(40).collect();
        format!("not a JSON object: the line starts with {start:?}")
    })
}

fn json_value(key: &str, value: Option<&Value>) -> Result<Option<String>, String> {
    Ok(match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() || s == "-" => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(format!(
                "{key}: expected a string, a number or null, not {}",
                match other {
                    Value::Bool(_) => "a boolean",
                    Value::Array(_) => "an array",
                    _ => "an object",
                }
            ))
        }
    })
}

/// Turns `start_time` into the replay clock: never backwards.
#[derive(Debug, Default, Clone)]
pub struct LogClock {
    /// The first line's start (ms since the epoch).
    pub origin_ms: Option<i64>,
    elapsed_ms: u64,
}

impl LogClock {
    /// Milliseconds since the replay started for this start time.
    fn at(&mut self, start_ms: i64) -> Duration {
        let origin = *self.origin_ms.get_or_insert(start_ms);
        let since = u64::try_from(start_ms.saturating_sub(origin)).unwrap_or(0);
        self.elapsed_ms = self.elapsed_ms.max(since);
        Duration::from_millis(self.elapsed_ms)
    }
}

fn socket_address(field: &str, text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .map_err(|_| format!("{field}: {text:?} is not an ip:port address"))
}

/// The principal as the filter sees it: without `spiffe://`, the first of several URI SANs.
fn principal(raw: &str) -> Option<String> {
    let first = raw
        .split(',')
        .map(str::trim)
        .find(|s| s.starts_with("spiffe://"))
        .or_else(|| raw.split(',').map(str::trim).next())?;
    let principal = first.strip_prefix("spiffe://").unwrap_or(first);
    (!principal.is_empty()).then(|| principal.to_string())
}

const PROTOCOLS: [&str; 4] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"];

impl LogEntry {
    /// The request this line describes.
    pub fn into_item(self, line: usize, clock: &mut LogClock) -> Result<ReplayItem, String> {
        let at = match &self.start_time {
            Some(t) => {
                Some(clock.at(time::parse_rfc3339_ms(t).map_err(|e| format!("start_time: {e}"))?))
            }
            None => None,
        };
        let source = match &self.downstream_remote_address {
            Some(a) => socket_address("downstream_remote_address", a)?,
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 50000),
        };
        let destination = match (&self.downstream_local_address, &self.upstream_host) {
            (Some(a), _) => Some(socket_address("downstream_local_address", a)?),
            (None, Some(a)) => Some(socket_address("upstream_host", a)?),
            (None, None) => None,
        };
        let sni = self.requested_server_name.clone();
        let connection = |default_port: u16| Connection {
            source,
            destination: destination.unwrap_or(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                default_port,
            )),
            principal: self.principal.as_deref().and_then(principal),
            sni: sni.clone(),
            ..Connection::default()
        };
        let input = if let Some(method) = &self.method {
            let protocol = match self.protocol.as_deref() {
                None => "HTTP/1.1".to_string(),
                Some(p) if PROTOCOLS.contains(&p) => p.to_string(),
                Some(p) => {
                    return Err(format!(
                        "protocol: {p:?} is not one of {}",
                        PROTOCOLS.join(", ")
                    ))
                }
            };
            let mut headers = Vec::new();
            if let Some(ua) = &self.user_agent {
                headers.push(("user-agent".to_string(), ua.clone()));
            }
            if let Some(id) = &self.request_id {
                headers.push(("x-request-id".to_string(), id.clone()));
            }
            StreamInput::Http(HttpRequest {
                connection: connection(80),
                method: Some(method.clone()),
                authority: self.authority.clone(),
                path: Some(self.path.clone().unwrap_or_else(|| "/".to_string())),
                scheme: Some("http".to_string()),
                protocol,
                headers,
                body: None,
                response: None,
            })
        } else if let Some(name) = &sni {
            StreamInput::Tcp(TcpStream {
                connection: connection(443),
                downstream: vec![client_hello(name)],
                upstream: Vec::new(),
                ..TcpStream::default()
            })
        } else if destination.is_some() {
            StreamInput::Tcp(TcpStream {
                connection: connection(443),
                downstream: Vec::new(),
                upstream: Vec::new(),
                ..TcpStream::default()
            })
        } else {
            return Err(
                "no method, no requested_server_name and no destination address: nothing to replay"
                    .to_string(),
            );
        };
        Ok(ReplayItem {
            line,
            id: format!("line-{line}"),
            at,
            worker: None,
            input,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str, options: LogOptions) -> Vec<(usize, Result<LogEntry, String>)> {
        let mut reader = LogReader::new(text.as_bytes(), options).unwrap();
        let mut out = Vec::new();
        while let Some(entry) = reader.next_entry().unwrap() {
            out.push(entry);
        }
        out
    }

    const JSON_HTTP: &str = r#"{"authority":"api.github.com","bytes_received":0,"bytes_sent":512,"connection_termination_details":null,"downstream_local_address":"10.20.0.5:8080","downstream_remote_address":"10.1.4.20:41000","duration":12,"method":"GET","path":"/repos/acme/api","protocol":"HTTP/1.1","request_id":"abc","requested_server_name":"outbound_.80_._.istio-egressgateway.istio-system.svc.cluster.local","response_code":200,"response_code_details":"via_upstream","response_flags":"-","route_name":null,"start_time":"2026-03-01T10:00:00.000Z","upstream_cluster":"outbound|443||api.github.com","upstream_host":"140.82.112.6:443","upstream_local_address":"10.20.0.5:40000","upstream_service_time":"10","upstream_transport_failure_reason":null,"user_agent":"curl/8.5.0","x_forwarded_for":null,"downstream_peer_uri_san":"spiffe://cluster.local/ns/ci/sa/runner"}"#;

    #[test]
    fn json_lines_become_http_and_tls_requests() {
        let tcp = r#"{"start_time":"2026-03-01T10:00:00.250Z","method":"-","path":"-","protocol":"-","response_code":"0","authority":"-","upstream_host":"140.82.112.6:443","downstream_local_address":"10.20.0.5:8443","downstream_remote_address":"10.1.4.20:41002","requested_server_name":"api.github.com"}"#;
        let options = LogOptions {
            principal_field: Some("downstream_peer_uri_san".into()),
            ..LogOptions::default()
        };
        let entries = read_all(&format!("{JSON_HTTP}\n\n{tcp}\n"), options);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].0, 3, "blank lines still count");
        let mut clock = LogClock::default();
        let http = entries[0]
            .1
            .clone()
            .unwrap()
            .into_item(1, &mut clock)
            .unwrap();
        let StreamInput::Http(req) = &http.input else {
            panic!("http expected")
        };
        assert_eq!(req.authority.as_deref(), Some("api.github.com"));
        assert_eq!(req.path.as_deref(), Some("/repos/acme/api"));
        assert_eq!(
            req.connection.principal.as_deref(),
            Some("cluster.local/ns/ci/sa/runner")
        );
        assert_eq!(req.connection.source.to_string(), "10.1.4.20:41000");
        assert_eq!(req.connection.destination.to_string(), "10.20.0.5:8080");
        assert_eq!(http.at, Some(Duration::ZERO));
        assert_eq!(http.id, "line-1");
        assert!(req
            .headers
            .contains(&("user-agent".into(), "curl/8.5.0".into())));
        let tls = entries[1]
            .1
            .clone()
            .unwrap()
            .into_item(3, &mut clock)
            .unwrap();
        let StreamInput::Tcp(tcp) = &tls.input else {
            panic!("tcp expected")
        };
        assert_eq!(tcp.connection.sni.as_deref(), Some("api.github.com"));
        assert_eq!(tcp.connection.principal, None, "no such field on that line");
        assert_eq!(tcp.downstream.len(), 1);
        assert_eq!(tcp.downstream[0][0], 0x16, "a TLS handshake record");
        assert_eq!(tls.at, Some(Duration::from_millis(250)));
    }

    #[test]
    fn the_clock_never_goes_back() {
        let mut clock = LogClock::default();
        assert_eq!(clock.at(1_000), Duration::ZERO);
        assert_eq!(clock.at(1_500), Duration::from_millis(500));
        assert_eq!(clock.at(1_200), Duration::from_millis(500));
        assert_eq!(clock.at(900), Duration::from_millis(500));
        assert_eq!(clock.at(2_000), Duration::from_millis(1_000));
    }

    #[test]
    fn unusable_lines_say_why() {
        let lines = [
            "not json at all {",
            "[1,2]",
            "2026-03-02T09:07:04.785123Z\twarning\tenvoy config\tgRPC config stream closed",
            r#"{"method":"GET","authority":"#,
            r#"{"method":"GET","authority":"a.example","downstream_remote_address":"nowhere"}"#,
            r#"{"method":"GET","authority":"a.example","start_time":"yesterday"}"#,
            r#"{"method":"GET","protocol":"SPDY/3"}"#,
            r#"{"response_code":200}"#,
            r#"{"method":true}"#,
        ];
        let entries = read_all(
            &format!("{{}}\n{}", lines.join("\n")),
            LogOptions {
                encoding: Encoding::Json,
                ..LogOptions::default()
            },
        );
        let mut clock = LogClock::default();
        let reasons: Vec<String> = entries
            .into_iter()
            .skip(1)
            .map(
                |(line, e)| match e.and_then(|e| e.into_item(line, &mut clock)) {
                    Ok(item) => panic!("line {line} was used: {item:?}"),
                    Err(reason) => reason,
                },
            )
            .collect();
        assert_eq!(
            reasons[0],
            "not a JSON object: the line starts with \"not json at all {\""
        );
        assert_eq!(
            reasons[1],
            "not a JSON object: the line starts with \"[1,2]\""
        );
        assert_eq!(
            reasons[2],
            "one of Envoy's own log messages (warning), not an access log line"
        );
        assert!(
            reasons[3].starts_with("not a JSON object: EOF"),
            "{}",
            reasons[3]
        );
        assert!(
            reasons[4].contains("downstream_remote_address"),
            "{}",
            reasons[4]
        );
        assert!(reasons[5].starts_with("start_time:"), "{}", reasons[5]);
        assert!(reasons[6].starts_with("protocol:"), "{}", reasons[6]);
        assert!(reasons[7].contains("nothing to replay"), "{}", reasons[7]);
        assert!(reasons[8].starts_with("method: expected"), "{}", reasons[8]);
    }

    #[test]
    fn text_lines_and_the_principal_operator() {
        let line = concat!(
            "[2026-03-01T10:15:30.123Z] \"GET /simple/requests/ HTTP/2\" 200 - via_upstream - \"-\" ",
            "0 9000 40 38 \"-\" \"pip/24.0\" \"id-1\" \"pypi.org\" \"151.101.0.223:443\" ",
            "outbound|443||pypi.org 10.20.0.5:4000 10.20.0.5:8080 10.1.9.11:33000 - - ",
            "spiffe://cluster.local/ns/shop/sa/frontend"
        );
        let format = TextFormat::parse(&format!(
            "{} %DOWNSTREAM_PEER_URI_SAN%",
            text::ISTIO_TEXT_FORMAT
        ))
        .unwrap();
        let options = LogOptions {
            encoding: Encoding::Auto,
            text_format: format,
            principal_field: Some("%DOWNSTREAM_PEER_URI_SAN%".into()),
        };
        let entries = read_all(line, options);
        let entry = entries[0].1.clone().unwrap();
        assert_eq!(entry.method.as_deref(), Some("GET"));
        assert_eq!(entry.requested_server_name, None);
        let item = entry.into_item(1, &mut LogClock::default()).unwrap();
        let StreamInput::Http(req) = item.input else {
            panic!("http expected")
        };
        assert_eq!(req.protocol, "HTTP/2");
        assert_eq!(
            req.connection.principal.as_deref(),
            Some("cluster.local/ns/shop/sa/frontend")
        );

        // The operator must be in the format.
        let options = LogOptions {
            encoding: Encoding::Text,
            principal_field: Some("%DOWNSTREAM_PEER_URI_SAN%".into()),
            ..LogOptions::default()
        };
        let err = LogReader::new(line.as_bytes(), options).err().unwrap();
        assert!(err.contains("no such operator"), "{err}");
    }

    #[test]
    fn long_lines_are_cut_and_reported_and_reading_goes_on() {
        let long = "x".repeat(MAX_LINE_BYTES * 3);
        let text = format!("{long}\n{JSON_HTTP}");
        let entries = read_all(
            &text,
            LogOptions {
                encoding: Encoding::Json,
                ..LogOptions::default()
            },
        );
        assert_eq!(entries.len(), 2);
        assert!(entries[0].1.as_ref().unwrap_err().contains("longer than"));
        assert!(entries[1].1.is_ok(), "{:?}", entries[1]);
        assert_eq!(entries[1].0, 2);
    }

    #[test]
    fn several_uri_sans_give_the_spiffe_one() {
        assert_eq!(
            principal("https://example.com/x, spiffe://td/ns/a/sa/b").as_deref(),
            Some("td/ns/a/sa/b")
        );
        assert_eq!(principal("td/ns/a/sa/b").as_deref(), Some("td/ns/a/sa/b"));
        assert_eq!(principal("spiffe://"), None);
    }
}
