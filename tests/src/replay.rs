//! `egress-sim replay`: requests as JSON lines in, one JSON line per request out.
//!
//! Input (every field but `id` optional):
//! `{"id":"r1","at_ms":0,"worker":0,
//!   "source":{"principal":"cluster.local/ns/dev/sa/app","ip":"10.1.2.3","port":51000},
//!   "destination":{"ip":"93.184.216.34","port":443},"sni":"api.example.com",
//!   "http":{"method":"GET","authority":"api.example.com","path":"/v1?q=1","scheme":"https",
//!           "protocol":"HTTP/1.1","headers":{"user-agent":"curl/8"},"body_base64":"..."},
//!   "tcp":{"data_base64":"..."}}`
//!
//! With `http` the request is an HTTP stream, otherwise a TCP connection. Beyond that shape:
//! a header value may be a list (a repeated header); `http.response` (`status`, `headers`,
//! `body_base64`) makes the upstream answer; `tcp.chunks_base64` sends several reads and
//! `tcp.upstream_base64` the upstream's reads.
//!
//! Defaults: source 10.0.0.1:50000 without principal (plaintext), destination 10.0.0.2 port
//! 443 when there is an SNI or the scheme is https and 80 otherwise; method GET, path `/`, scheme
//! https with an SNI else http, protocol HTTP/1.1; no `:authority` unless given. `at_ms` moves
//! the host clock (milliseconds since the replay started; never backwards); `worker` picks the
//! worker (modulo the number of workers), else requests go round-robin.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::deployment::Deployment;
use crate::stream::{
    Connection, HttpRequest, HttpResponse, StreamKind, StreamOutcome, StreamResult, TcpStream,
};
use crate::HostError;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("line {line}: {message}")]
    Input { line: usize, message: String },
    #[error("request {id:?} (line {line}): {source}")]
    Host {
        id: String,
        line: usize,
        #[source]
        source: HostError,
    },
}

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub id: String,
    pub at_ms: Option<u64>,
    pub worker: Option<usize>,
    pub source: Option<SourceSpec>,
    pub destination: Option<DestinationSpec>,
    pub sni: Option<String>,
    pub http: Option<HttpSpec>,
    pub tcp: Option<TcpSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub principal: Option<String>,
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    pub method: Option<String>,
    pub authority: Option<String>,
    pub path: Option<String>,
    pub scheme: Option<String>,
    pub protocol: Option<String>,
    #[serde(default)]
    pub headers: HeaderList,
    pub body_base64: Option<String>,
    pub response: Option<ResponseSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    pub status: u16,
    #[serde(default)]
    pub headers: HeaderList,
    pub body_base64: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSpec {
    pub data_base64: Option<String>,
    pub chunks_base64: Option<Vec<String>>,
    pub upstream_base64: Option<Vec<String>>,
}

/// Headers in the order written; a value may be a string or a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeaderVisitor;

        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }

        impl<'de> Visitor<'de> for HeaderVisitor {
            type Value = HeaderList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of header names to a string or a list of strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderList, A::Error> {
                let mut headers = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let value = map.next_value::<OneOrMany>().map_err(|_| {
                        de::Error::custom(format!(
                            "header {name:?}: the value must be a string or a list of strings"
                        ))
                    })?;
                    match value {
                        OneOrMany::One(v) => headers.push((name, v)),
                        OneOrMany::Many(vs) => {
                            headers.extend(vs.into_iter().map(|v| (name.clone(), v)))
                        }
                    }
                }
                Ok(HeaderList(headers))
            }
        }

        deserializer.deserialize_map(HeaderVisitor)
    }
}

/// A request ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamInput {
    Http(HttpRequest),
    Tcp(TcpStream),
}

/// A validated input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayItem {
    pub line: usize,
    pub id: String,
    pub at: Option<Duration>,
    pub worker: Option<usize>,
    pub input: StreamInput,
}

impl ReplayItem {
    pub fn kind(&self) -> StreamKind {
        match self.input {
            StreamInput::Http(_) => StreamKind::Http,
            StreamInput::Tcp(_) => StreamKind::Tcp,
        }
    }
}

const PROTOCOLS: [&str; 4] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"];

fn decode_base64(field: &str, text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("{field}: invalid base64: {e}"))
}

impl ReplayRequest {
    /// Checks the request and fills in the defaults.
    pub fn into_item(self, line: usize) -> Result<ReplayItem, String> {
        let input = match (self.http, self.tcp) {
            (Some(_), Some(_)) => {
                return Err("a request has either \"http\" or \"tcp\", not both".to_string())
            }
            (Some(http), None) => {
                StreamInput::Http(http_request(http, self.source, self.destination, self.sni)?)
            }
            (None, tcp) => StreamInput::Tcp(tcp_stream(
                tcp.unwrap_or_default(),
                self.source,
                self.destination,
                self.sni,
            )?),
        };
        if self.id.is_empty() {
            return Err("id: must not be empty".to_string());
        }
        Ok(ReplayItem {
            line,
            id: self.id,
            at: self.at_ms.map(Duration::from_millis),
            worker: self.worker,
            input,
        })
    }
}

fn connection(
    source: Option<SourceSpec>,
    destination: Option<DestinationSpec>,
    sni: Option<String>,
    default_port: u16,
) -> Connection {
    let source = source.unwrap_or_default();
    let destination = destination.unwrap_or_default();
    Connection {
        source: SocketAddr::new(
            source.ip.unwrap_or(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            source.port.unwrap_or(50000),
        ),
        destination: SocketAddr::new(
            destination
                .ip
                .unwrap_or(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
            destination.port.unwrap_or(default_port),
        ),
        principal: source.principal,
        sni,
        ..Connection::default()
    }
}

fn http_request(
    http: HttpSpec,
    source: Option<SourceSpec>,
    destination: Option<DestinationSpec>,
    sni: Option<String>,
) -> Result<HttpRequest, String> {
    let scheme = http
        .scheme
        .unwrap_or_else(|| if sni.is_some() { "https" } else { "http" }.to_string());
    let protocol = http.protocol.unwrap_or_else(|| "HTTP/1.1".to_string());
    if !PROTOCOLS.contains(&protocol.as_str()) {
        return Err(format!(
            "http.protocol: {protocol:?} is not one of {}",
            PROTOCOLS.join(", ")
        ));
    }
    let default_port = if sni.is_some() || scheme == "https" {
        443
    } else {
        80
    };
    let body = http
        .body_base64
        .map(|b| decode_base64("http.body_base64", &b))
        .transpose()?;
    let response = http
        .response
        .map(|r| -> Result<HttpResponse, String> {
            Ok(HttpResponse {
                status: r.status,
                headers: r.headers.0,
                body: r
                    .body_base64
                    .map(|b| decode_base64("http.response.body_base64", &b))
                    .transpose()?,
            })
        })
        .transpose()?;
    Ok(HttpRequest {
        connection: connection(source, destination, sni, default_port),
        method: Some(http.method.unwrap_or_else(|| "GET".to_string())),
        authority: http.authority,
        path: Some(http.path.unwrap_or_else(|| "/".to_string())),
        scheme: Some(scheme),
        protocol,
        headers: http.headers.0,
        body,
        response,
    })
}

fn tcp_stream(
    tcp: TcpSpec,
    source: Option<SourceSpec>,
    destination: Option<DestinationSpec>,
    sni: Option<String>,
) -> Result<TcpStream, String> {
    if tcp.data_base64.is_some() && tcp.chunks_base64.is_some() {
        return Err("tcp: give data_base64 or chunks_base64, not both".to_string());
    }
    let mut downstream = Vec::new();
    if let Some(data) = &tcp.data_base64 {
        downstream.push(decode_base64("tcp.data_base64", data)?);
    }
    for (i, chunk) in tcp.chunks_base64.iter().flatten().enumerate() {
        downstream.push(decode_base64(&format!("tcp.chunks_base64[{i}]"), chunk)?);
    }
    let mut upstream = Vec::new();
    for (i, chunk) in tcp.upstream_base64.iter().flatten().enumerate() {
        upstream.push(decode_base64(&format!("tcp.upstream_base64[{i}]"), chunk)?);
    }
    let default_port = if sni.is_some() { 443 } else { 80 };
    Ok(TcpStream {
        connection: connection(source, destination, sni, default_port),
        downstream,
        upstream,
        ..TcpStream::default()
    })
}

/// Parses and checks every line before anything runs, so a bad line stops the replay before
/// any request is sent.
pub fn parse_requests(text: &str) -> Result<Vec<ReplayItem>, ReplayError> {
    let mut items = Vec::new();
    let mut last_at: Option<(Duration, usize)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let err = |message: String| ReplayError::Input { line, message };
        let request: ReplayRequest = serde_json::from_str(raw).map_err(|e| err(e.to_string()))?;
        let item = request.into_item(line).map_err(err)?;
        if let Some(at) = item.at {
            if let Some((previous, previous_line)) = last_at {
                if at < previous {
                    return Err(err(format!(
                        "at_ms {} is earlier than at_ms {} on line {previous_line}: the clock only moves forward",
                        at.as_millis(),
                        previous.as_millis()
                    )));
                }
            }
            last_at = Some((at, line));
        }
        items.push(item);
    }
    Ok(items)
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
    Ratelimited,
    Error,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Ratelimited => "ratelimited",
            Decision::Error => "error",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: String,
    pub message: String,
}

/// One output line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayResult {
    pub id: String,
    pub decision: Decision,
    /// HTTP status the client got; null for TCP and for forwarded requests.
    pub status: Option<u32>,
    /// Headers of the local reply (repeated headers joined with ",").
    pub headers: BTreeMap<String, String>,
    /// Body of the local reply (lossy UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub logs: Vec<LogLine>,
    /// Envoy's response code details, when a reply or reset happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Why the stream failed (VM failure, or the module never resumed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The module's decision log line (`{"event":"decision",...}`) for the stream, if it wrote one.
pub fn decision_log(logs: &[LogLine]) -> Option<serde_json::Map<String, serde_json::Value>> {
    logs.iter().rev().find_map(|l| {
        let value: serde_json::Value = serde_json::from_str(&l.message).ok()?;
        let object = value.as_object()?;
        (object.get("event")?.as_str()? == "decision").then(|| object.clone())
    })
}

/// A stream's log lines, as the replay output gives them.
pub fn log_lines(outcome: &StreamOutcome) -> Vec<LogLine> {
    outcome
        .logs
        .iter()
        .map(|l| LogLine {
            level: l.level.to_string(),
            message: l.message.clone(),
        })
        .collect()
}

/// How a stream's outcome reads as a decision.
pub fn to_result(id: &str, outcome: &StreamOutcome) -> ReplayResult {
    let logs = log_lines(outcome);
    let mut result = ReplayResult {
        id: id.to_string(),
        decision: Decision::Allow,
        status: None,
        headers: BTreeMap::new(),
        body: None,
        logs,
        details: None,
        error: None,
    };
    let http = outcome.kind == StreamKind::Http;
    match &outcome.result {
        StreamResult::Continued => {}
        StreamResult::LocalReply(reply) => {
            result.decision = if reply.status == 429 {
                Decision::Ratelimited
            } else {
                Decision::Deny
            };
            result.status = Some(reply.status);
            for (k, v) in &reply.headers {
                result
                    .headers
                    .entry(k.clone())
                    .and_modify(|existing| {
                        existing.push(',');
                        existing.push_str(v);
                    })
                    .or_insert_with(|| v.clone());
            }
            result.details = (!reply.details.is_empty()).then(|| reply.details.clone());
            result.body = Some(String::from_utf8_lossy(&reply.body).into_owned());
        }
        StreamResult::Reset => {
            result.decision = Decision::Deny;
            result.details = Some("wasm_close_stream".to_string());
        }
        StreamResult::Closed => {
            let ratelimited = decision_log(&result.logs)
                .and_then(|d| {
                    d.get("decision")
                        .and_then(|v| v.as_str())
                        .map(|s| s == "ratelimited")
                })
                .unwrap_or(false);
            result.decision = if ratelimited {
                Decision::Ratelimited
            } else {
                Decision::Deny
            };
        }
        StreamResult::Paused => {
            result.decision = Decision::Error;
            result.error = Some(
                "the filter paused the stream and never resumed it (the client gave up)"
                    .to_string(),
            );
        }
        StreamResult::FailedClosed { error } => {
            result.decision = Decision::Error;
            result.error = Some(error.clone());
            if http {
                result.status = Some(503);
                result.details = Some("wasm_fail_stream".to_string());
            }
        }
        StreamResult::FailedOpen { error } => {
            result.decision = Decision::Allow;
            result.error = Some(error.clone());
        }
    }
    result
}

/// Runs each worker on a thread of its own, as Envoy's workers run, each taking its requests
/// (by `worker`, else round-robin) in order; the results come back in input order. The clock
/// is shared by all threads, so `at_ms` is refused here.
pub fn run_parallel(
    deployment: &mut Deployment,
    items: &[ReplayItem],
) -> Result<Vec<ReplayResult>, ReplayError> {
    if let Some(item) = items.iter().find(|i| i.at.is_some()) {
        return Err(ReplayError::Input {
            line: item.line,
            message: "at_ms cannot be used when workers run in parallel".to_string(),
        });
    }
    let workers = deployment.workers();
    let count = workers.len().max(1);
    let mut queues: Vec<Vec<(usize, &ReplayItem)>> = vec![Vec::new(); count];
    for (n, item) in items.iter().enumerate() {
        queues[item.worker.unwrap_or(n) % count].push((n, item));
    }
    let mut results: Vec<Option<ReplayResult>> = vec![None; items.len()];
    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .iter_mut()
            .zip(queues)
            .map(|(worker, queue)| {
                scope.spawn(move || -> Result<Vec<(usize, ReplayResult)>, ReplayError> {
                    let mut out = Vec::with_capacity(queue.len());
                    for (n, item) in queue {
                        out.push((n, run_on_worker(worker, item)?));
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Vec<_>>()
    });
    for outcome in outcomes {
        for (n, result) in outcome? {
            results[n] = Some(result);
        }
    }
    Ok(results.into_iter().flatten().collect())
}

/// Runs one item on `worker` (no clock change).
pub fn run_on_worker(
    worker: &mut crate::Worker,
    item: &ReplayItem,
) -> Result<ReplayResult, ReplayError> {
    let outcome = match &item.input {
        StreamInput::Http(request) => worker.http(request),
        StreamInput::Tcp(connection) => worker.tcp(connection),
    }
    .map_err(|source| ReplayError::Host {
        id: item.id.clone(),
        line: item.line,
        source,
    })?;
    Ok(to_result(&item.id, &outcome))
}

/// Runs the requests in order, each on its worker, and reports each.
pub fn run(
    deployment: &mut Deployment,
    items: &[ReplayItem],
) -> Result<Vec<ReplayResult>, ReplayError> {
    let mut results = Vec::with_capacity(items.len());
    for (n, item) in items.iter().enumerate() {
        results.push(run_one(deployment, item, n)?);
    }
    Ok(results)
}

/// Runs the `n`-th request: moves the clock to its time (every worker runs its due timers),
/// then runs it on its worker, or on worker `n` modulo their number.
pub fn run_one(
    deployment: &mut Deployment,
    item: &ReplayItem,
    n: usize,
) -> Result<ReplayResult, ReplayError> {
    if let Some(at) = item.at {
        deployment.host().clock().set_elapsed(at);
        // Time passes for every worker: each runs its due timers.
        for worker in deployment.workers() {
            worker.poll();
        }
    }
    run_on_worker(deployment.worker(item.worker.unwrap_or(n)), item)
}

/// A readable table of what was allowed and denied, and why.
pub fn summary(items: &[ReplayItem], results: &[ReplayResult]) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "ID".into(),
        "KIND".into(),
        "DECISION".into(),
        "STATUS".into(),
        "POLICY".into(),
        "REASON".into(),
    ]];
    for (item, result) in items.iter().zip(results) {
        let decision = decision_log(&result.logs);
        let field = |name: &str| {
            decision
                .as_ref()
                .and_then(|d| d.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let mut reason = field("reason").unwrap_or_default();
        if let Some(detail) = field("detail") {
            reason = format!("{reason}: {detail}");
        }
        if let Some(error) = &result.error {
            reason = if reason.is_empty() {
                error.clone()
            } else {
                format!("{reason}; {error}")
            };
        }
        rows.push([
            result.id.clone(),
            match item.kind() {
                StreamKind::Http => "http".into(),
                StreamKind::Tcp => "tcp".into(),
            },
            result.decision.to_string(),
            result.status.map_or_else(|| "-".into(), |s| s.to_string()),
            // With `tiers`, the tier that decided follows the policy.
            match (field("policy"), field("tier")) {
                (Some(policy), Some(tier)) => format!("{policy} ({tier})"),
                (None, Some(tier)) => format!("- ({tier})"),
                (policy, None) => policy.unwrap_or_else(|| "-".into()),
            },
            if reason.is_empty() {
                "-".into()
            } else {
                reason
            },
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (c, width) in widths.iter().enumerate() {
            out.push_str(&format!("{:<width$}  ", row[c], width = width));
        }
        out.push_str(&row[5]);
        out.push('\n');
    }
    let count = |d: Decision| results.iter().filter(|r| r.decision == d).count();
    out.push_str(&format!(
        "\n{} requests: {} allowed, {} denied, {} rate-limited, {} errors\n",
        results.len(),
        count(Decision::Allow),
        count(Decision::Deny),
        count(Decision::Ratelimited),
        count(Decision::Error)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_headers_in_order() {
        let items = parse_requests(
            r#"{"id":"a","sni":"x.example","http":{"headers":{"b":"1","a":["2","3"]}}}"#,
        )
        .unwrap();
        let StreamInput::Http(req) = &items[0].input else {
            panic!("http expected")
        };
        assert_eq!(req.scheme.as_deref(), Some("https"));
        assert_eq!(req.connection.destination.port(), 443);
        assert_eq!(
            req.headers,
            vec![
                ("b".to_string(), "1".to_string()),
                ("a".to_string(), "2".to_string()),
                ("a".to_string(), "3".to_string())
            ]
        );
    }

    #[test]
    fn bad_lines_name_the_line_and_field() {
        let err = parse_requests("{\"id\":\"a\"}\n\n{\"id\":\"b\",\"htp\":{}}").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("line 3:"), "{text}");
        assert!(text.contains("htp"), "{text}");
        let err = parse_requests(r#"{"id":"a","tcp":{"data_base64":"!!"}}"#).unwrap_err();
        assert!(err.to_string().contains("tcp.data_base64"), "{err}");
        let err =
            parse_requests("{\"id\":\"a\",\"at_ms\":5}\n{\"id\":\"b\",\"at_ms\":4}").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse_requests(r#"{"id":"a","http":{"protocol":"HTTP/9"}}"#).unwrap_err();
        assert!(err.to_string().contains("http.protocol"), "{err}");
        let err = parse_requests(r#"{"id":"a","http":{},"tcp":{}}"#).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }
}
