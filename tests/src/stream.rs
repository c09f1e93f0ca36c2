//! Streams as the caller describes them, and what happened to them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::abi::LogLevel;

/// The downstream connection a stream arrives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    /// Peer identity from the client certificate (e.g. `cluster.local/ns/dev/sa/app`). When set
    /// the connection is mTLS, terminated by the gateway; the certificate's URI SAN is
    /// `spiffe://<principal>`.
    pub principal: Option<String>,
    /// TLS SNI (`connection.requested_server_name`); with no principal the TLS is passed through
    /// and only the SNI is known, as with Envoy's TLS inspector.
    pub sni: Option<String>,
    /// On an ambient waypoint: the source workload's identity from the HBONE tunnel that carried
    /// the connection (e.g. `cluster.local/ns/orders/sa/checkout`). The waypoint terminates the
    /// tunnel's mutual TLS (ztunnel presents the workload's certificate) and hands the inner
    /// connection, which has no TLS of its own, to an internal listener where the filter runs;
    /// Istio's CONNECT filter copies the tunnel peer's URI SAN into filter state
    /// `io.istio.peer_principal` (`%DOWNSTREAM_PEER_URI_SAN%`, pilot `xds/filters`), and that is
    /// the only place the identity is, as `spiffe://<principal>`.
    pub hbone_peer: Option<String>,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            source: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 50000),
            destination: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 443),
            principal: None,
            sni: None,
            hbone_peer: None,
        }
    }
}

impl Connection {
    /// The gateway terminated TLS: there is a TLS session and a validated client certificate.
    pub fn mtls(&self) -> bool {
        self.principal.is_some()
    }

    /// A connection as a waypoint's filter sees it: no TLS, the caller's identity from the
    /// HBONE tunnel.
    pub fn via_waypoint(source: SocketAddr, workload_principal: &str) -> Connection {
        Connection {
            source,
            hbone_peer: Some(workload_principal.to_string()),
            ..Connection::default()
        }
    }

    /// The filter state Envoy holds for a stream on this connection, as (key, value).
    pub fn filter_state(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.hbone_peer
            .iter()
            .map(|peer| {
                (
                    b"io.istio.peer_principal".to_vec(),
                    format!("spiffe://{peer}").into_bytes(),
                )
            })
            .collect()
    }
}

/// An HTTP request (and optionally the upstream's response) on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub connection: Connection,
    /// `:method`; no header when `None`.
    pub method: Option<String>,
    /// `:authority` (HTTP/1.1 `Host`); no header when `None`.
    pub authority: Option<String>,
    /// `:path`, with the query; no header when `None`.
    pub path: Option<String>,
    /// `:scheme`; no header when `None`.
    pub scheme: Option<String>,
    /// `request.protocol`: "HTTP/1.0", "HTTP/1.1", "HTTP/2" or "HTTP/3".
    pub protocol: String,
    /// Other request headers in order; a repeated name gives repeated entries.
    pub headers: Vec<(String, String)>,
    /// Request body, delivered in one `proxy_on_request_body` call with end_of_stream.
    pub body: Option<Vec<u8>>,
    /// Response of the upstream, if the request gets that far.
    pub response: Option<HttpResponse>,
}

impl Default for HttpRequest {
    fn default() -> Self {
        HttpRequest {
            connection: Connection::default(),
            method: Some("GET".into()),
            authority: None,
            path: Some("/".into()),
            scheme: Some("http".into()),
            protocol: "HTTP/1.1".into(),
            headers: Vec::new(),
            body: None,
            response: None,
        }
    }
}

impl HttpRequest {
    /// A GET request for `authority` and `path`.
    pub fn get(authority: &str, path: &str) -> HttpRequest {
        HttpRequest {
            authority: Some(authority.into()),
            path: Some(path.into()),
            ..HttpRequest::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// A TCP connection and the bytes the client sends on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpStream {
    pub connection: Connection,
    /// Chunks of downstream data, one `proxy_on_downstream_data` call each.
    pub downstream: Vec<Vec<u8>>,
    /// Chunks the upstream sends back after the downstream data, one `proxy_on_upstream_data`
    /// call each; then the upstream closes (`proxy_on_upstream_connection_close`).
    pub upstream: Vec<Vec<u8>>,
}

/// One log line of the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: LogLevel,
    pub message: String,
    /// The context it was logged from (0 = the VM itself, e.g. during `_initialize`).
    pub context_id: u32,
}

/// A local reply: the response the module sent instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    /// Response headers as the client gets them (after the module's response hooks), without
    /// the `:status` pseudo header.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Envoy response code details (spaces replaced by `_`).
    pub details: String,
    /// gRPC status, if the module gave a valid one.
    pub grpc_status: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Http,
    Tcp,
}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamResult {
    /// Everything was forwarded.
    Continued,
    /// The module answered with a local reply (HTTP).
    LocalReply(LocalReply),
    /// The module reset the HTTP stream (`proxy_close_stream` on the request or response).
    Reset,
    /// The module closed the TCP connection (`proxy_close_stream` downstream or upstream).
    Closed,
    /// The module paused the stream and never resumed it; the client gave up.
    Paused,
    /// The VM failed (trap, or it had failed before): the stream failed closed, HTTP with a 503
    /// local reply, TCP by closing the connection.
    FailedClosed { error: String },
    /// The VM failed and the plugin fails open: the stream went on without the filter.
    FailedOpen { error: String },
}

/// What happened to a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOutcome {
    pub kind: StreamKind,
    pub context_id: u32,
    pub result: StreamResult,
    /// The module's log lines for this stream, in order.
    pub logs: Vec<LogRecord>,
    /// Request headers as forwarded upstream (after the module's changes), if forwarded.
    pub forwarded_request_headers: Option<Vec<(String, String)>>,
    /// Bytes forwarded upstream (request body or downstream data).
    pub forwarded_bytes: Vec<u8>,
}

impl StreamOutcome {
    /// The HTTP status the client got, if the module or a failure produced a reply.
    pub fn status(&self) -> Option<u32> {
        match &self.result {
            StreamResult::LocalReply(reply) => Some(reply.status),
            StreamResult::FailedClosed { .. } if self.kind == StreamKind::Http => Some(503),
            _ => None,
        }
    }

    pub fn local_reply(&self) -> Option<&LocalReply> {
        match &self.result {
            StreamResult::LocalReply(reply) => Some(reply),
            _ => None,
        }
    }

    /// The module's messages, one string each.
    pub fn messages(&self) -> Vec<&str> {
        self.logs.iter().map(|l| l.message.as_str()).collect()
    }
}
