//! Streams as the caller describes them, and what happened to them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::abi::{Action, LogLevel};

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
    /// The gateway terminates TLS on this connection although the client sent no certificate
    /// (Istio `tls.mode: SIMPLE`). A `principal` implies terminated TLS.
    pub tls_terminated: bool,
    /// Filter state objects earlier filters put on the stream (key, value as
    /// `proxy_get_property("filter_state\0<key>")` returns it: a string accessor's string).
    pub filter_state: Vec<(String, Vec<u8>)>,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            source: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 50000),
            destination: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 443),
            principal: None,
            sni: None,
            tls_terminated: false,
            filter_state: Vec::new(),
        }
    }
}

/// The filter state key Istio's waypoint sets to the caller's SPIFFE ID (its
/// `ConnectAuthorityFilter`, from `%DOWNSTREAM_PEER_URI_SAN%` of the HBONE connection).
pub const WAYPOINT_PEER_PRINCIPAL_KEY: &str = "io.istio.peer_principal";

impl Connection {
    /// A validated client certificate: the connection is mutual TLS, terminated by the gateway.
    pub fn mtls(&self) -> bool {
        self.principal.is_some()
    }

    /// The gateway terminates TLS (with or without a client certificate).
    pub fn tls(&self) -> bool {
        self.principal.is_some() || self.tls_terminated
    }

    /// A stream on a waypoint's internal listener (`main_internal`): no TLS of its own, the
    /// caller's identity in filter state `io.istio.peer_principal` (as `spiffe://<principal>`).
    pub fn waypoint(principal: &str) -> Connection {
        Connection {
            filter_state: vec![(
                WAYPOINT_PEER_PRINCIPAL_KEY.to_string(),
                format!("spiffe://{principal}").into_bytes(),
            )],
            ..Connection::default()
        }
    }

    /// [`Connection::waypoint`] from this workload address: what a waypoint's filter sees for a
    /// pod's connection carried in an HBONE tunnel.
    pub fn via_waypoint(source: SocketAddr, workload_principal: &str) -> Connection {
        Connection {
            source,
            ..Connection::waypoint(workload_principal)
        }
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

/// A TCP connection and what happens on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpStream {
    pub connection: Connection,
    /// Chunks of downstream data, one read each. Used when `script` is empty.
    pub downstream: Vec<Vec<u8>>,
    /// Chunks the upstream sends back after the downstream data, one read each, then the
    /// upstream closes. Used when `script` is empty.
    pub upstream: Vec<Vec<u8>>,
    /// The connection's events in order. Empty: `downstream` as client reads, then `upstream`
    /// as server reads followed by the server's FIN (if it sent anything).
    pub script: Vec<TcpEvent>,
    /// The upstream host tcp_proxy connects to (`upstream.address` once connected).
    pub upstream_host: SocketAddr,
}

impl Default for TcpStream {
    fn default() -> Self {
        TcpStream {
            connection: Connection::default(),
            downstream: Vec::new(),
            upstream: Vec::new(),
            script: Vec::new(),
            upstream_host: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)), 443),
        }
    }
}

impl TcpStream {
    /// A connection whose events follow `script`.
    pub fn scripted(connection: Connection, script: Vec<TcpEvent>) -> TcpStream {
        TcpStream {
            connection,
            script,
            ..TcpStream::default()
        }
    }

    /// The events the host plays: `script`, or the ones `downstream` and `upstream` stand for.
    pub fn events(&self) -> Vec<TcpEvent> {
        if !self.script.is_empty() {
            return self.script.clone();
        }
        let mut events: Vec<TcpEvent> = self
            .downstream
            .iter()
            .cloned()
            .map(TcpEvent::ClientData)
            .collect();
        events.extend(self.upstream.iter().cloned().map(TcpEvent::UpstreamData));
        if !self.upstream.is_empty() {
            events.push(TcpEvent::UpstreamFin);
        }
        events
    }
}

/// Something that happens on a TCP connection once the filter chain is built. tcp_proxy
/// (Envoy's default, "connect immediately") opens the upstream connection right after the
/// filters' `on_new_connection` let it run, before it reads anything from the client; until then
/// client reads are disabled, and there is no upstream to hear from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpEvent {
    /// The client's TLS handshake completes (TLS-terminating listeners): from now on the peer
    /// certificate is visible. Implied before the first client bytes.
    HandshakeComplete,
    /// A read of client bytes: `proxy_on_downstream_data` with everything buffered so far, unless
    /// Envoy is not reading from the client (no upstream yet, or its buffer limit was passed).
    ClientData(Vec<u8>),
    /// The client half-closes: `proxy_on_downstream_data` with end_of_stream, even without new
    /// bytes (tcp_proxy enables half-close).
    ClientFin,
    /// The client closes the connection: `proxy_on_downstream_connection_close` (remote), and
    /// nothing after it.
    ClientClose,
    /// A read filter before this one takes this many bytes off the front of the buffered
    /// client data on the next read (as a filter that consumes a preamble would).
    EarlierFilterDrains(usize),
    /// A read of server bytes: `proxy_on_upstream_data` with everything held so far (bytes the
    /// module paused stay in the upstream's read buffer and come again with the next read:
    /// Envoy has no continue on the write path).
    UpstreamData(Vec<u8>),
    /// The server half-closes: `proxy_on_upstream_data` with end_of_stream, then
    /// `proxy_on_upstream_connection_close` with peer Unknown (Envoy's `Context::onWrite`).
    UpstreamFin,
}

/// Which way a TCP data callback carried bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server: `proxy_on_downstream_data`.
    Downstream,
    /// Server to client: `proxy_on_upstream_data`.
    Upstream,
}

/// One TCP data callback as the module got it, and what it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataCall {
    pub direction: Direction,
    /// The buffer size passed (everything held, not only the new bytes).
    pub size: usize,
    pub end_of_stream: bool,
    pub action: Action,
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
    /// TCP: bytes of the server that reached the client.
    pub received_bytes: Vec<u8>,
    /// TCP: every data callback in order.
    pub data_calls: Vec<DataCall>,
    /// The filter state the stream ended with (keys as Envoy names them: `wasm.` + the path
    /// the module set), what an access log's `%FILTER_STATE(...)%` prints.
    pub filter_state: Vec<(String, Vec<u8>)>,
    /// With `HostOptions::record_property_reads`: every property the stream's context read, in
    /// order (segments joined by `.`, e.g. `source.address`).
    pub properties_read: Vec<String>,
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

    /// A filter state value the stream ended with, as text (`key` as Envoy names it).
    pub fn filter_state(&self, key: &str) -> Option<String> {
        self.filter_state
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The module's messages, one string each.
    pub fn messages(&self) -> Vec<&str> {
        self.logs.iter().map(|l| l.message.as_str()).collect()
    }
}
