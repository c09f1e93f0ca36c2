//! Real upstream clusters: a unary gRPC call the module makes with `proxy_grpc_call` to a
//! cluster that [`HostOptions::cluster_endpoints`](crate::HostOptions) maps to an address goes
//! there over HTTP/2 (plaintext, prior knowledge), as Envoy's gRPC async client sends it, on a
//! tokio runtime of the host's own. The answer is mapped to what Envoy hands the module: the
//! response message, or a gRPC status and message for `proxy_on_grpc_close`.
//!
//! Status mapping (Envoy `AsyncStreamImpl` and the router in front of it):
//! - no connection, or a reset before the response headers: 14 UNAVAILABLE (the router's 503);
//! - the timeout: 14 "upstream request timeout" (the router's 504);
//! - a response status other than 200: the `grpc-status` it carries, else Envoy's HTTP to gRPC
//!   mapping (400 → 13, 401 → 16, 403 → 7, 404 → 12, 429/502/503/504 → 14, others → 2);
//! - a reset after the headers, a compressed or second message, or an OK reply without a
//!   message: 13 INTERNAL; trailers without `grpc-status`: 2 UNKNOWN; a `grpc-status` that is
//!   not a known code: -1 (Envoy's `InvalidCode`, seen by the module as 0xFFFFFFFF).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;

/// The largest response message accepted (Envoy's default has no limit; a test service never
/// comes near this).
const MAX_MESSAGE: usize = 4 << 20;

pub const STATUS_INTERNAL: u32 = 13;
pub const STATUS_UNAVAILABLE: u32 = 14;
const STATUS_UNKNOWN: u32 = 2;
const INVALID_CODE: u32 = u32::MAX;

pub const TIMEOUT_MESSAGE: &str = "upstream request timeout";
const CONNECT_FAILURE: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
const RESET_BEFORE_HEADERS: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: remote reset";

/// One unary call.
#[derive(Debug, Clone)]
pub struct GrpcRequest {
    pub address: SocketAddr,
    /// `:authority` (Envoy sends the cluster name).
    pub authority: String,
    pub service: String,
    pub method: String,
    pub metadata: Vec<(String, String)>,
    pub message: Vec<u8>,
    /// `None`: no timeout (the module passed 0).
    pub timeout: Option<Duration>,
}

/// What the call ended with, as the module sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcOutcome {
    /// Delivered with `proxy_on_grpc_receive` (no close follows for a unary call).
    Message(Vec<u8>),
    /// Delivered with `proxy_on_grpc_close`.
    Closed { status: u32, message: String },
}

impl GrpcOutcome {
    fn closed(status: u32, message: impl Into<String>) -> Self {
        Self::Closed {
            status,
            message: message.into(),
        }
    }
}

/// The host's network side, started on the first real call.
#[derive(Default)]
pub struct Upstreams {
    transport: OnceLock<Result<Transport, String>>,
}

impl Upstreams {
    pub fn transport(&self) -> Result<&Transport, String> {
        self.transport
            .get_or_init(|| Transport::new().map_err(|e| format!("cannot start the runtime: {e}")))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// The `:authority` of calls to `cluster`: Envoy sends the cluster name; Istio's names contain
/// `|`, which an HTTP/2 client library refuses in an authority, so those send their host part.
pub fn authority_for(cluster: &str, address: SocketAddr) -> String {
    let candidate = cluster.rsplit('|').next().unwrap_or(cluster);
    if !candidate.is_empty() && candidate.parse::<http::uri::Authority>().is_ok() {
        candidate.to_string()
    } else {
        address.to_string()
    }
}

/// The runtime and one HTTP/2 connection per upstream address (as a connection pool would
/// reuse it); a broken connection is replaced on the next call.
pub struct Transport {
    runtime: tokio::runtime::Runtime,
    /// Shared with the calls' tasks (never the runtime: a task must not drop it).
    pool: Arc<Pool>,
}

#[derive(Default)]
struct Pool {
    connections: Mutex<HashMap<SocketAddr, SendRequest<Bytes>>>,
}

/// Cancels its call when dropped (`proxy_grpc_cancel`, `proxy_grpc_close`, or the VM gone).
#[derive(Debug)]
pub struct CallHandle(tokio::task::AbortHandle);

impl Drop for CallHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Transport {
    pub fn new() -> std::io::Result<Transport> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("egress-sim-upstream")
            .enable_all()
            .build()?;
        Ok(Transport {
            runtime,
            pool: Arc::default(),
        })
    }

    /// Starts a call; `done` receives its outcome on a runtime thread, unless it is cancelled.
    pub fn call(
        &self,
        request: GrpcRequest,
        done: impl FnOnce(GrpcOutcome) + Send + 'static,
    ) -> CallHandle {
        let pool = Arc::clone(&self.pool);
        let task = self.runtime.spawn(async move {
            let outcome = match request.timeout {
                Some(timeout) => tokio::time::timeout(timeout, pool.unary(&request))
                    .await
                    .unwrap_or_else(|_| GrpcOutcome::closed(STATUS_UNAVAILABLE, TIMEOUT_MESSAGE)),
                None => pool.unary(&request).await,
            };
            done(outcome);
        });
        CallHandle(task.abort_handle())
    }
}

impl Pool {
    async fn connection(&self, address: SocketAddr) -> Result<SendRequest<Bytes>, ()> {
        let cached = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&address)
            .cloned();
        if let Some(send) = cached {
            if let Ok(send) = send.ready().await {
                return Ok(send);
            }
        }
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(drop)?;
        let _ = tcp.set_nodelay(true);
        let (send, connection) = h2::client::handshake(tcp).await.map_err(drop)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let send = send.ready().await.map_err(drop)?;
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address, send.clone());
        Ok(send)
    }

    async fn unary(&self, request: &GrpcRequest) -> GrpcOutcome {
        let Ok(mut send) = self.connection(request.address).await else {
            return GrpcOutcome::closed(STATUS_UNAVAILABLE, CONNECT_FAILURE);
        };
        let Some(head) = request_head(request) else {
            return GrpcOutcome::closed(STATUS_INTERNAL, "invalid request headers");
        };
        let (response, mut body) = match send.send_request(head, false) {
            Ok(sent) => sent,
            Err(_) => return GrpcOutcome::closed(STATUS_UNAVAILABLE, RESET_BEFORE_HEADERS),
        };
        let mut framed = BytesMut::with_capacity(request.message.len() + 5);
        framed.extend_from_slice(&[0]);
        framed.extend_from_slice(&(request.message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&request.message);
        if body.send_data(framed.freeze(), true).is_err() {
            return GrpcOutcome::closed(STATUS_UNAVAILABLE, RESET_BEFORE_HEADERS);
        }
        let Ok(response) = response.await else {
            return GrpcOutcome::closed(STATUS_UNAVAILABLE, RESET_BEFORE_HEADERS);
        };
        let (parts, mut body) = response.into_parts();
        if let Some(status) = grpc_status(&parts.headers) {
            // Trailers-only reply (also the way a non-200 answer carries a gRPC status).
            return match status {
                0 => GrpcOutcome::closed(STATUS_INTERNAL, "unary call without a response message"),
                s => GrpcOutcome::closed(s, grpc_message(&parts.headers)),
            };
        }
        if parts.status != http::StatusCode::OK {
            return GrpcOutcome::closed(
                http_to_grpc_status(parts.status.as_u16()),
                format!("upstream answered HTTP {}", parts.status.as_u16()),
            );
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let Ok(chunk) = chunk else {
                return GrpcOutcome::closed(STATUS_INTERNAL, "stream reset");
            };
            let _ = body.flow_control().release_capacity(chunk.len());
            if data.len() + chunk.len() > MAX_MESSAGE + 5 {
                return GrpcOutcome::closed(8, "response message too large");
            }
            data.extend_from_slice(&chunk);
        }
        let trailers = match body.trailers().await {
            Ok(Some(trailers)) => trailers,
            Ok(None) => return GrpcOutcome::closed(STATUS_UNKNOWN, "no grpc-status"),
            Err(_) => return GrpcOutcome::closed(STATUS_INTERNAL, "stream reset"),
        };
        match grpc_status(&trailers) {
            None => GrpcOutcome::closed(STATUS_UNKNOWN, "no grpc-status"),
            Some(0) => match unframe(&data) {
                Some(message) => GrpcOutcome::Message(message),
                None => GrpcOutcome::closed(STATUS_INTERNAL, "malformed response message"),
            },
            Some(status) => GrpcOutcome::closed(status, grpc_message(&trailers)),
        }
    }
}

/// The request head Envoy's gRPC client sends.
fn request_head(request: &GrpcRequest) -> Option<http::Request<()>> {
    let uri = format!(
        "http://{}/{}/{}",
        request.authority, request.service, request.method
    );
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-envoy-internal", "true");
    if let Some(timeout) = request.timeout {
        let ms = timeout.as_millis();
        builder = builder
            .header("grpc-timeout", format!("{ms}m"))
            .header("x-envoy-expected-rq-timeout-ms", ms.to_string());
    }
    for (name, value) in &request.metadata {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(()).ok()
}

fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|s| *s <= 16)
            .unwrap_or(INVALID_CODE),
    )
}

/// `grpc-message`, percent-decoded as the gRPC protocol encodes it.
fn grpc_message(headers: &http::HeaderMap) -> String {
    let raw = headers
        .get("grpc-message")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Envoy `Grpc::Utility::httpToGrpcStatus`.
fn http_to_grpc_status(status: u16) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// The one uncompressed message of a unary response (5-byte gRPC frame).
fn unframe(data: &[u8]) -> Option<Vec<u8>> {
    let (&flag, rest) = data.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let message = rest.get(4..4 + len)?;
    (flag == 0 && rest.len() == 4 + len).then(|| message.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_statuses() {
        assert_eq!(unframe(&[0, 0, 0, 0, 2, 7, 8]), Some(vec![7, 8]));
        assert_eq!(unframe(&[0, 0, 0, 0, 0]), Some(vec![]));
        assert_eq!(unframe(&[1, 0, 0, 0, 1, 7]), None, "compressed");
        assert_eq!(unframe(&[0, 0, 0, 0, 1, 7, 0, 0]), None, "a second message");
        assert_eq!(unframe(&[0, 0, 0]), None);
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", "14".parse().unwrap());
        headers.insert("grpc-message", "no%20healthy%20upstream%".parse().unwrap());
        assert_eq!(grpc_status(&headers), Some(14));
        assert_eq!(grpc_message(&headers), "no healthy upstream%");
        headers.insert("grpc-status", "99".parse().unwrap());
        assert_eq!(grpc_status(&headers), Some(INVALID_CODE));
        assert_eq!(http_to_grpc_status(503), 14);
        assert_eq!(http_to_grpc_status(500), 2);
    }
}
