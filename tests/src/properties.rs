//! `proxy_get_property` / `proxy_set_property` as Envoy answers them.
//!
//! Paths are segments joined by NUL. The first segment is a top-level name; below it Envoy
//! walks maps by key. Values are encoded as Envoy's `serializeValue` does: strings and bytes
//! raw, integers (int64/uint64), timestamps and durations as 8 little-endian bytes, booleans as
//! one byte, maps in the ABI pairs encoding. Reading a whole attribute group (`request`,
//! `connection`, ...) fails with `SerializationFailure`, as its keys cannot be listed in Envoy.
//!
//! Covered: `request.{path,url_path,host,scheme,method,headers,referer,useragent,id,query,
//! protocol,time,size}`, `response.{code,code_details,headers}` once a response exists,
//! `connection.{id,mtls,requested_server_name,tls_version,uri_san_peer_certificate,
//! subject_peer_certificate,subject_local_certificate,uri_san_local_certificate}`,
//! `source.{address,port}`, `destination.{address,port}`, `upstream.{address,port}` on TCP
//! once tcp_proxy connected, `xds.node.{id,metadata.<key>}`, `connection_id`, `plugin_name`,
//! `plugin_root_id`, `plugin_vm_id`, `filter_state.<key>` (objects earlier filters set, and
//! values set with `proxy_set_property`), `metadata`. Everything else is `NotFound`, with the
//! out-parameters untouched: Envoy never answers `Ok` with an empty value for something absent.
//!
//! TLS as Envoy's `ConnectionWrapper` sees it (`source/extensions/filters/common/expr/
//! context.cc`): on a connection without TLS every TLS field is `NotFound` except `mtls`
//! (false). On terminated TLS the fields exist from the start, but the peer certificate only
//! after the handshake, which on TCP ends after `proxy_on_new_connection`: until then `mtls` is
//! false and the peer SANs are `NotFound`. `tls_version` is cached on its first read, so a read
//! before the handshake pins "unknown" for the connection.

use std::net::SocketAddr;

use crate::abi::Status;
use crate::headers::HeaderMap;
use crate::state::{Context, ContextKind, HttpStreamState, StreamProtocol, StreamState};

/// A property value before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    /// A string or bytes value.
    Bytes(Vec<u8>),
    Int(i64),
    Uint(u64),
    Bool(bool),
    /// Unix nanoseconds.
    Timestamp(i64),
    /// A map, as (key, value) pairs of already-encoded values.
    Map(Vec<(Vec<u8>, Vec<u8>)>),
}

impl PropertyValue {
    pub fn string(s: impl AsRef<str>) -> PropertyValue {
        PropertyValue::Bytes(s.as_ref().as_bytes().to_vec())
    }

    /// The bytes the module receives.
    pub fn encode(self) -> Vec<u8> {
        match self {
            PropertyValue::Bytes(b) => b,
            PropertyValue::Int(i) | PropertyValue::Timestamp(i) => i.to_le_bytes().to_vec(),
            PropertyValue::Uint(u) => u.to_le_bytes().to_vec(),
            PropertyValue::Bool(b) => vec![u8::from(b)],
            PropertyValue::Map(pairs) => crate::pairs::encode(&pairs),
        }
    }
}

/// The segments of a path as Envoy's `Context::getProperty` splits it: NUL-separated, a
/// trailing NUL adds no empty segment, an empty path has none.
fn segments(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = path.strip_suffix(b"\0").unwrap_or(path);
    let count = if path.is_empty() { 0 } else { usize::MAX };
    body.split(|&b| b == 0).take(count)
}

/// [`segments`], collected.
pub fn split_path(path: &[u8]) -> Vec<&[u8]> {
    segments(path).collect()
}

/// What the property look-up needs from the VM besides the context.
pub(crate) struct PropertyEnv<'a> {
    pub vm_id: &'a str,
    pub local_principal: &'a str,
    pub node_id: &'a str,
    pub node_metadata: &'a [(String, String)],
}

/// Paths this deep are split on the stack; deeper ones (rare) in a `Vec`.
const STACK_SEGMENTS: usize = 8;

/// Looks a property up for a context.
pub(crate) fn get(ctx: &Context, env: &PropertyEnv<'_>, path: &[u8]) -> Result<Vec<u8>, Status> {
    let mut stack: [&[u8]; STACK_SEGMENTS] = [&[]; STACK_SEGMENTS];
    let mut count = 0;
    for part in segments(path) {
        if let Some(slot) = stack.get_mut(count) {
            *slot = part;
        }
        count += 1;
    }
    let heap;
    let segments: &[&[u8]] = match stack.get(..count) {
        Some(on_stack) => on_stack,
        None => {
            heap = split_path(path);
            &heap
        }
    };
    let Some((top, rest)) = segments.split_first() else {
        // Envoy serialises the empty (null) value it starts from: a serialisation failure.
        return Err(Status::SerializationFailure);
    };
    match *top {
        b"plugin_name" => match &ctx.plugin {
            Some(plugin) => leaf(rest, PropertyValue::string(&plugin.name)),
            None => Err(Status::NotFound),
        },
        b"plugin_root_id" => leaf(
            rest,
            PropertyValue::string(ctx.plugin.as_ref().map_or("", |p| p.root_id.as_str())),
        ),
        b"plugin_vm_id" => leaf(rest, PropertyValue::string(env.vm_id)),
        // Listener and node data need no stream: root contexts read them too.
        b"xds" => group(rest, |field, rest| xds_field(env, field, rest)),
        _ => {
            // Everything else needs stream info, which only stream contexts have.
            let ContextKind::Stream(stream) = &ctx.kind else {
                return Err(Status::NotFound);
            };
            stream_property(stream, env, top, rest)
        }
    }
}

fn stream_property(
    stream: &StreamState,
    env: &PropertyEnv<'_>,
    top: &[u8],
    rest: &[&[u8]],
) -> Result<Vec<u8>, Status> {
    let http = match &stream.protocol {
        StreamProtocol::Http(h) => Some(h),
        StreamProtocol::Tcp(_) => None,
    };
    match top {
        b"connection_id" => leaf(rest, PropertyValue::Uint(stream.connection_id)),
        b"request" => group(rest, |field, rest| request_field(stream, http, field, rest)),
        b"response" => group(rest, |field, rest| response_field(http, field, rest)),
        b"connection" => group(rest, |field, rest| {
            leaf(rest, connection_field(stream, env, field)?)
        }),
        b"source" => group(rest, |field, rest| {
            leaf(rest, address_field(stream.connection.source, field)?)
        }),
        b"destination" => group(rest, |field, rest| {
            leaf(rest, address_field(stream.connection.destination, field)?)
        }),
        // TCP: tcp_proxy sets the upstream host when it connects (right after the filters'
        // `on_new_connection`). HTTP: the router picks it after the request filters.
        b"upstream" => group(rest, |field, rest| {
            let host = match &stream.protocol {
                StreamProtocol::Tcp(t) => t.upstream_host.ok_or(Status::NotFound)?,
                StreamProtocol::Http(_) => return Err(Status::NotFound),
            };
            leaf(rest, address_field(host, field)?)
        }),
        // Dynamic metadata: an empty protobuf message, which serialises to no bytes.
        b"metadata" if rest.is_empty() => Ok(Vec::new()),
        b"metadata" => Err(Status::NotFound),
        // A string accessor serialises as its string (`FilterStateWrapper`: `serializeAsString`).
        b"filter_state" => group(rest, |key, rest| {
            let value = filter_state_value(stream, key)
                .or_else(|| {
                    stream
                        .connection
                        .filter_state
                        .iter()
                        .find(|(k, _)| k.as_bytes() == key)
                        .map(|(_, v)| v.as_slice())
                })
                .ok_or(Status::NotFound)?;
            leaf(rest, PropertyValue::Bytes(value.to_vec()))
        }),
        _ => {
            // Unknown names are looked up in filter state as "wasm.<name>", where
            // proxy_set_property puts values.
            let mut key = b"wasm.".to_vec();
            key.extend_from_slice(top);
            let value = filter_state_value(stream, &key).ok_or(Status::NotFound)?;
            leaf(rest, PropertyValue::Bytes(value.to_vec()))
        }
    }
}

fn filter_state_value<'a>(stream: &'a StreamState, key: &[u8]) -> Option<&'a [u8]> {
    stream
        .filter_state
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

/// A scalar: the path must end here.
fn leaf(rest: &[&[u8]], value: PropertyValue) -> Result<Vec<u8>, Status> {
    if rest.is_empty() {
        Ok(value.encode())
    } else {
        Err(Status::NotFound)
    }
}

/// An attribute group whose keys Envoy cannot list: readable only field by field.
fn group(
    rest: &[&[u8]],
    field: impl FnOnce(&[u8], &[&[u8]]) -> Result<Vec<u8>, Status>,
) -> Result<Vec<u8>, Status> {
    match rest.split_first() {
        None => Err(Status::SerializationFailure),
        Some((name, rest)) => field(name, rest),
    }
}

fn request_field(
    stream: &StreamState,
    http: Option<&HttpStreamState>,
    field: &[u8],
    rest: &[&[u8]],
) -> Result<Vec<u8>, Status> {
    // Fields that come from the stream info exist for TCP too.
    match field {
        b"time" => {
            return leaf(
                rest,
                PropertyValue::Timestamp(
                    i64::try_from(stream.start_unix_nanos).unwrap_or(i64::MAX),
                ),
            )
        }
        b"protocol" => {
            let http = http.ok_or(Status::NotFound)?;
            return leaf(rest, PropertyValue::string(&http.protocol));
        }
        _ => {}
    }
    let http = http.ok_or(Status::NotFound)?;
    let headers = http.visible_request_headers().ok_or(Status::NotFound)?;
    let header = |name: &str| headers.get(name).map(|v| PropertyValue::Bytes(v.to_vec()));
    let value = match field {
        b"path" => header(":path"),
        b"url_path" => headers
            .get(":path")
            .map(|p| PropertyValue::Bytes(p.split(|&b| b == b'?').next().unwrap_or(p).to_vec())),
        // After the `?`, up to a `#`.
        b"query" => headers.get(":path").map(|p| {
            PropertyValue::Bytes(match p.iter().position(|&b| b == b'?') {
                Some(i) => p[i + 1..]
                    .split(|&b| b == b'#')
                    .next()
                    .unwrap_or(&[])
                    .to_vec(),
                None => Vec::new(),
            })
        }),
        b"host" => header(":authority"),
        b"scheme" => header(":scheme"),
        b"method" => header(":method"),
        b"referer" => header("referer"),
        b"useragent" => header("user-agent"),
        b"id" => header("x-request-id"),
        b"size" => request_size(headers, http).map(PropertyValue::Int),
        b"headers" => return header_map_property(headers, rest),
        _ => None,
    };
    leaf(rest, value.ok_or(Status::NotFound)?)
}

/// Envoy uses content-length when present, else the body bytes received; a content-length
/// that is not a number gives no value.
fn request_size(headers: &HeaderMap, http: &HttpStreamState) -> Option<i64> {
    match headers.get_str("content-length") {
        Some(value) => value.parse::<i64>().ok(),
        None => Some(http.request_body.len() as i64),
    }
}

/// `xds.node.id` and `xds.node.metadata.<key>` (a `Struct` walked as a map: string values
/// come raw). Whole messages (`xds.node`) are not modelled.
fn xds_field(env: &PropertyEnv<'_>, field: &[u8], rest: &[&[u8]]) -> Result<Vec<u8>, Status> {
    match (field, rest) {
        (b"node", [b"id"]) => Ok(env.node_id.as_bytes().to_vec()),
        (b"node", [b"metadata", key]) => env
            .node_metadata
            .iter()
            .find(|(k, _)| k.as_bytes() == *key)
            .map(|(_, v)| v.as_bytes().to_vec())
            .ok_or(Status::NotFound),
        _ => Err(Status::NotFound),
    }
}

fn response_field(
    http: Option<&HttpStreamState>,
    field: &[u8],
    rest: &[&[u8]],
) -> Result<Vec<u8>, Status> {
    let http = http.ok_or(Status::NotFound)?;
    let headers = http.response_headers.as_ref().ok_or(Status::NotFound)?;
    match field {
        b"code" => {
            let code = headers
                .get_str(":status")
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or(Status::NotFound)?;
            leaf(rest, PropertyValue::Int(code))
        }
        b"code_details" => {
            let details = http.response_details.as_ref().ok_or(Status::NotFound)?;
            leaf(rest, PropertyValue::string(details))
        }
        b"headers" => header_map_property(
            http.visible_response_headers().ok_or(Status::NotFound)?,
            rest,
        ),
        _ => Err(Status::NotFound),
    }
}

/// `request.headers` / `response.headers`: a listable map of lower-cased names to all values
/// joined with ",", or one header.
fn header_map_property(headers: &HeaderMap, rest: &[&[u8]]) -> Result<Vec<u8>, Status> {
    match rest {
        [] => {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = headers
                .keys()
                .into_iter()
                .map(|k| {
                    (
                        k.as_bytes().to_vec(),
                        headers.get_joined(k).unwrap_or_default(),
                    )
                })
                .collect();
            Ok(PropertyValue::Map(pairs).encode())
        }
        [name, rest @ ..] => {
            let value = headers.get_joined(name).ok_or(Status::NotFound)?;
            leaf(rest, PropertyValue::Bytes(value))
        }
    }
}

fn connection_field(
    stream: &StreamState,
    env: &PropertyEnv<'_>,
    field: &[u8],
) -> Result<PropertyValue, Status> {
    let conn = &stream.connection;
    let tls_terminated = conn.tls();
    // The client certificate is known once the handshake is over.
    let peer = conn
        .principal
        .as_ref()
        .filter(|_| stream.handshake_complete);
    Ok(match field {
        b"id" => PropertyValue::Uint(stream.connection_id),
        b"mtls" => PropertyValue::Bool(peer.is_some()),
        b"requested_server_name" => PropertyValue::string(conn.sni.as_deref().unwrap_or("")),
        b"tls_version" if tls_terminated => {
            let handshake_complete = stream.handshake_complete;
            PropertyValue::string(stream.tls_version.get_or_init(|| {
                if handshake_complete {
                    "TLSv1.3"
                } else {
                    // BoringSSL's `SSL_get_version` before a version is negotiated.
                    "unknown"
                }
            }))
        }
        b"uri_san_peer_certificate" => match peer {
            Some(principal) => PropertyValue::string(format!("spiffe://{principal}")),
            None => return Err(Status::NotFound),
        },
        // Istio workload certificates carry an empty subject.
        b"subject_peer_certificate" | b"subject_local_certificate" if tls_terminated => {
            PropertyValue::string("")
        }
        b"uri_san_local_certificate" if tls_terminated => {
            PropertyValue::string(format!("spiffe://{}", env.local_principal))
        }
        _ => return Err(Status::NotFound),
    })
}

fn address_field(addr: SocketAddr, field: &[u8]) -> Result<PropertyValue, Status> {
    match field {
        // IPv4 "ip:port", IPv6 "[ip]:port", as Envoy's address `asString`.
        b"address" => Ok(PropertyValue::Bytes(address_string(addr))),
        b"port" => Ok(PropertyValue::Int(i64::from(addr.port()))),
        _ => Err(Status::NotFound),
    }
}

/// `addr` as Envoy writes it; IPv4 without the formatting machinery (read on every request).
fn address_string(addr: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = addr else {
        return addr.to_string().into_bytes();
    };
    let mut out = Vec::with_capacity(21);
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_decimal(&mut out, u32::from(octet));
    }
    out.push(b':');
    push_decimal(&mut out, u32::from(v4.port()));
    out
}

fn push_decimal(out: &mut Vec<u8>, n: u32) {
    let mut divisor = 1;
    while n / divisor >= 10 {
        divisor *= 10;
    }
    while divisor > 0 {
        out.push(b'0' + (n / divisor % 10) as u8);
        divisor /= 10;
    }
}

/// `proxy_set_property`: stores the value in the stream's filter state under "wasm." + path.
/// Contexts without stream info (root, VM) get `NotFound`, as in Envoy.
pub(crate) fn set(ctx: &mut Context, path: &[u8], value: &[u8]) -> Result<(), Status> {
    let stream = ctx.stream_mut().ok_or(Status::NotFound)?;
    let mut key = b"wasm.".to_vec();
    key.extend_from_slice(path);
    match stream.filter_state.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value.to_vec(),
        None => stream.filter_state.push((key, value.to_vec())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_splitting_matches_envoy() {
        assert_eq!(split_path(b"a\0b"), vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(split_path(b"a\0"), vec![&b"a"[..]]);
        assert_eq!(split_path(b"\0a"), vec![&b""[..], &b"a"[..]]);
        assert!(split_path(b"").is_empty());
    }

    #[test]
    fn scalar_encodings() {
        assert_eq!(
            PropertyValue::Int(443).encode(),
            vec![0xbb, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(PropertyValue::Bool(true).encode(), vec![1]);
        assert_eq!(PropertyValue::Bool(false).encode(), vec![0]);
        assert_eq!(PropertyValue::string("ab").encode(), b"ab".to_vec());
        assert_eq!(PropertyValue::Uint(u64::MAX).encode(), vec![0xff; 8]);
    }

    #[test]
    fn addresses_as_envoy_writes_them() {
        for text in [
            "10.1.2.3:51000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[2001:db8::1]:443",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(address_string(addr), text.as_bytes());
        }
    }
}
