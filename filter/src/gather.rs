//! Gathers [`Attributes`] from what the proxy reports, through a small trait so the logic (and
//! every way it can fail) runs natively in tests; the proxy-wasm layer implements the trait.
//!
//! Property values use Envoy's encoding: strings as raw bytes, integers as 8-byte little-endian,
//! booleans as one byte. An absent property is unknown (no client certificate, no SNI), except
//! those Envoy reports on every connection (`source.address`, `destination.address`,
//! `connection.mtls`): their absence, a failed read or a malformed value makes the whole stream
//! unevaluable, and the caller denies it.

use crate::attributes::{
    parse_socket_address, principal_from_uri_san, AttributeError, Attributes, HttpAttributes,
    Reads, RequestHead,
};
use crate::matchers::host::normalize_sni;
use crate::protocol::{HttpChecks, HttpViolation, Protocol};

/// A request's header list as the proxy hands it over: the serialised map, kept whole, with
/// the place of each name and value, so reading it costs no allocation per header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList {
    bytes: Vec<u8>,
    /// Name start, name length, value start, value length.
    spans: Vec<[usize; 4]>,
}

impl HeaderList {
    /// Decodes a proxy-wasm header map (`u32` count, then `u32` key and value lengths, then each
    /// key and value followed by a NUL), refusing anything inconsistent instead of panicking.
    pub fn decode(bytes: Vec<u8>) -> Option<Self> {
        if bytes.is_empty() {
            return Some(Self::default());
        }
        let u32_at = |at: usize| -> Option<usize> {
            let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
            usize::try_from(u32::from_le_bytes(raw)).ok()
        };
        let count = u32_at(0)?;
        let mut data = count.checked_mul(8)?.checked_add(4)?;
        if data > bytes.len() {
            return None;
        }
        let mut spans = Vec::with_capacity(count);
        for i in 0..count {
            let key_len = u32_at(4 + i * 8)?;
            let value_len = u32_at(8 + i * 8)?;
            let key_at = data;
            data = data.checked_add(key_len)?;
            if bytes.get(data) != Some(&0) {
                return None;
            }
            data += 1;
            let value_at = data;
            data = data.checked_add(value_len)?;
            if bytes.get(data) != Some(&0) {
                return None;
            }
            data += 1;
            spans.push([key_at, key_len, value_at, value_len]);
        }
        Some(Self { bytes, spans })
    }

    /// A list of these pairs, as the proxy would hand it over.
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Self {
        Self::decode(encode_header_map(pairs)).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Name and value of every header, in order.
    pub fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        self.iter().collect()
    }

    /// [`Self::pairs`] without collecting them.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let at = |start: usize, len: usize| self.bytes.get(start..start + len).unwrap_or(&[]);
        self.spans
            .iter()
            .map(move |&[k, kl, v, vl]| (at(k, kl), at(v, vl)))
    }
}

/// A host call failure other than "not found", with the ABI status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStatus(pub u32);

pub trait ProxyFacts {
    /// The property at `path` (segments joined by NUL, as the ABI passes them: e.g.
    /// `"source\0address"`); `Ok(None)` when it does not exist for this stream.
    fn property(&self, path: &str) -> Result<Option<Vec<u8>>, HostStatus>;
    /// All request headers, in order, repeated names included.
    fn request_headers(&self) -> Result<HeaderList, HostStatus>;
}

#[inline(never)]
fn read(facts: &impl ProxyFacts, path: &str) -> Result<Option<Vec<u8>>, AttributeError> {
    facts.property(path).map_err(|status| {
        AttributeError::Host(path.replace('\0', "."), format!("status {}", status.0))
    })
}

#[inline(never)]
fn read_string(
    facts: &impl ProxyFacts,
    path: &str,
    what: &'static str,
) -> Result<Option<String>, AttributeError> {
    match read(facts, path)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| AttributeError::NotUtf8(what)),
    }
}

fn read_int(
    facts: &impl ProxyFacts,
    path: &str,
    what: &'static str,
) -> Result<Option<i64>, AttributeError> {
    match read(facts, path)? {
        None => Ok(None),
        Some(bytes) => {
            let raw: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| AttributeError::Malformed(what, format!("{} bytes", bytes.len())))?;
            Ok(Some(i64::from_le_bytes(raw)))
        }
    }
}

#[inline(never)]
fn read_bool(
    facts: &impl ProxyFacts,
    path: &str,
    what: &'static str,
) -> Result<Option<bool>, AttributeError> {
    match read(facts, path)?.as_deref() {
        None => Ok(None),
        Some([0]) => Ok(Some(false)),
        Some([1]) => Ok(Some(true)),
        Some(other) => Err(AttributeError::Malformed(
            what,
            format!("{} bytes", other.len()),
        )),
    }
}

#[inline(never)]
fn read_port(
    facts: &impl ProxyFacts,
    path: &str,
    what: &'static str,
) -> Result<Option<u16>, AttributeError> {
    match read_int(facts, path, what)? {
        None => Ok(None),
        Some(n) => u16::try_from(n)
            .map(Some)
            .map_err(|_| AttributeError::Malformed(what, n.to_string())),
    }
}

/// The filter state key Istio's waypoint sets to the caller's SPIFFE ID (`ConnectAuthorityFilter`
/// on the HBONE listener), as a property path.
pub const WAYPOINT_PEER_PRINCIPAL: &str = "filter_state\0io.istio.peer_principal";

/// Connection-level attributes (all a TCP connection has).
pub fn gather_connection(facts: &impl ProxyFacts) -> Result<Attributes, AttributeError> {
    gather_connection_reading(facts, Reads::ALL)
}

/// The peer identity and the connection properties in `reads`; [`read_more`] adds the others.
pub fn gather_connection_reading(
    facts: &impl ProxyFacts,
    reads: Reads,
) -> Result<Attributes, AttributeError> {
    let mut attrs = Attributes::default();
    let mut san = read_string(
        facts,
        "connection\0uri_san_peer_certificate",
        "connection.uri_san_peer_certificate",
    )?;
    if san.is_none() {
        // On a waypoint the filter runs on an internal listener without TLS: Istio puts the
        // SPIFFE ID of the HBONE connection's client certificate in filter state. Only a
        // `spiffe://` value counts.
        san = read_string(
            facts,
            WAYPOINT_PEER_PRINCIPAL,
            "filter_state.io.istio.peer_principal",
        )?
        .filter(|v| principal_from_uri_san(v).is_some());
    }
    // A peer certificate exists only on a TLS connection whose client presented one, which is
    // what `connection.mtls` says: with a URI SAN it need not be read (one host call less on
    // every mesh request).
    attrs.mtls = match san {
        Some(_) => Some(true),
        None => Some(
            read_bool(facts, "connection\0mtls", "connection.mtls")?
                .ok_or(AttributeError::Absent("connection.mtls"))?,
        ),
    };
    if let Some(principal) = san.as_deref().and_then(principal_from_uri_san) {
        attrs = attrs.with_principal(principal);
    }
    read_more(facts, &mut attrs, reads)?;
    Ok(attrs)
}

/// Reads the connection properties in `reads` into `attrs`: all of them for a TCP connection,
/// and for an HTTP request those its decision needs, then the rest when its decision line is
/// written.
pub fn read_more(
    facts: &impl ProxyFacts,
    attrs: &mut Attributes,
    reads: Reads,
) -> Result<(), AttributeError> {
    if reads.contains(Reads::SOURCE) {
        // Envoy's peer addresses exist on every connection (EXPR `PeerWrapper`); without them a
        // DENY on `ipBlocks` could not match, and the stream would pass it unjudged.
        let (ip, port) = read_address(facts, SOURCE)?;
        attrs.source_ip = Some(ip);
        attrs.source_port = port;
        // Envoy's downstream remote address already reflects the gateway's trusted-proxy
        // settings (XFF hops, PROXY protocol); the filter never trusts x-forwarded-for on its
        // own. (`parse_socket_address` returns canonical addresses.)
        attrs.remote_ip = attrs.source_ip;
    }
    if reads.contains(Reads::DESTINATION) {
        let (ip, port) = read_address(facts, DESTINATION)?;
        attrs.destination_ip = Some(ip);
        attrs.destination_port = port;
    }

    if reads.contains(Reads::SNI) {
        if let Some(sni) = read_string(
            facts,
            "connection\0requested_server_name",
            "connection.requested_server_name",
        )? {
            attrs.sni = normalize_sni(&sni);
        }
    }

    // Only a request has a protocol; its head is read by then.
    if reads.contains(Reads::PROTOCOL) && attrs.http.is_some() {
        let protocol = read_protocol(facts)?;
        set_protocol(attrs, protocol);
    }
    Ok(())
}

/// The property paths of one side of the connection, and their attribute names: the address,
/// then the port.
type AddressPaths = [&'static str; 4];
const SOURCE: AddressPaths = [
    "source\0address",
    "source.address",
    "source\0port",
    "source.port",
];
const DESTINATION: AddressPaths = [
    "destination\0address",
    "destination.address",
    "destination\0port",
    "destination.port",
];

/// A side's address, which Envoy reports on every connection, and its port: from the address,
/// which carries it in Envoy, else from the port property (each host call costs time on every
/// request).
#[inline(never)]
fn read_address(
    facts: &impl ProxyFacts,
    [address_path, address, port_path, port]: AddressPaths,
) -> Result<(std::net::IpAddr, Option<u16>), AttributeError> {
    let text = read_string(facts, address_path, address)?.ok_or(AttributeError::Absent(address))?;
    let (ip, mut found) = parse_socket_address(&text)?;
    if found.is_none() {
        found = read_port(facts, port_path, port)?;
    }
    Ok((ip, found))
}

fn read_protocol(facts: &impl ProxyFacts) -> Result<Option<String>, AttributeError> {
    read_string(facts, "request\0protocol", "request.protocol")
}

fn set_protocol(attrs: &mut Attributes, protocol: Option<String>) {
    attrs.connection_protocol = protocol
        .as_deref()
        .and_then(Protocol::from_http_protocol)
        .map(Protocol::as_str);
    if let Some(http) = &mut attrs.http {
        http.protocol = protocol;
    }
}

/// Connection plus request attributes. `wanted_headers` (lower case) are the headers rules read.
pub fn gather_http(
    facts: &impl ProxyFacts,
    wanted_headers: &[String],
) -> Result<Attributes, AttributeError> {
    gather_http_checked(facts, wanted_headers, None, Reads::ALL).map(|(attrs, _)| attrs)
}

/// [`gather_http`] reading only the connection properties in `reads` (the SNI too with
/// `checks`), also running the HTTP protocol `checks` over the raw header list (every header,
/// as received). The violation is returned, not acted on: policies decide first.
pub fn gather_http_checked(
    facts: &impl ProxyFacts,
    wanted_headers: &[String],
    checks: Option<&HttpChecks>,
    reads: Reads,
) -> Result<(Attributes, Option<HttpViolation>), AttributeError> {
    // The checks compare the SNI with the host, and look at the protocol.
    let reads = match checks {
        Some(_) => reads | Reads::SNI | Reads::PROTOCOL,
        None => reads,
    };
    let mut attrs = gather_connection_reading(facts, reads)?;
    let protocol = match reads.contains(Reads::PROTOCOL) {
        true => read_protocol(facts)?,
        false => None,
    };
    let list = facts.request_headers().map_err(|status| {
        AttributeError::Host("request headers".into(), format!("status {}", status.0))
    })?;
    let violation = checks.and_then(|c| {
        c.check(&list.pairs(), protocol.as_deref(), attrs.sni.as_deref())
            .err()
    });
    // Values that are not UTF-8 are read lossily (they are rarely matched); names and
    // pseudo-header values must be UTF-8. Nothing is copied for valid text.
    let lossy: Vec<String>;
    let mut any_lossy = false;
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(list.len());
    for (name, value) in list.iter() {
        let name = std::str::from_utf8(name).map_err(|_| AttributeError::NotUtf8("header name"))?;
        let value = match std::str::from_utf8(value) {
            Ok(value) => value,
            // Pseudo-headers decide host and path matching: refuse rather than guess.
            Err(_) if name.starts_with(':') => {
                return Err(AttributeError::NotUtf8("pseudo-header"))
            }
            Err(_) => {
                any_lossy = true;
                ""
            }
        };
        pairs.push((name, value));
    }
    if any_lossy {
        lossy = list
            .iter()
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
            .collect();
        pairs = pairs
            .iter()
            .zip(&lossy)
            .map(|((name, _), value)| (*name, value.as_str()))
            .collect();
    }
    let first = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let head = RequestHead {
        authority: first(":authority").or_else(|| first("host")),
        method: first(":method"),
        path: first(":path"),
        scheme: first(":scheme"),
        protocol: None,
        headers: &pairs,
    };
    attrs.http = Some(HttpAttributes::from_request(&head, wanted_headers)?);
    if reads.contains(Reads::PROTOCOL) {
        set_protocol(&mut attrs, protocol);
    }
    Ok((attrs, violation))
}

/// Encodes a proxy-wasm header map (for local replies): see [`HeaderList::decode`].
pub fn encode_header_map<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        bytes.extend_from_slice(&(name.as_ref().len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(value.as_ref().len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        bytes.extend_from_slice(name.as_ref());
        bytes.push(0);
        bytes.extend_from_slice(value.as_ref());
        bytes.push(0);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct FakeProxy {
        properties: HashMap<String, Result<Vec<u8>, HostStatus>>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    }

    impl FakeProxy {
        fn string(mut self, path: &str, value: &str) -> Self {
            self.properties
                .insert(path.into(), Ok(value.as_bytes().to_vec()));
            self
        }
        fn int(mut self, path: &str, value: i64) -> Self {
            self.properties
                .insert(path.into(), Ok(value.to_le_bytes().to_vec()));
            self
        }
        fn raw(mut self, path: &str, value: Result<Vec<u8>, HostStatus>) -> Self {
            self.properties.insert(path.into(), value);
            self
        }
        fn header(mut self, name: &str, value: &[u8]) -> Self {
            self.headers
                .push((name.as_bytes().to_vec(), value.to_vec()));
            self
        }
    }

    impl ProxyFacts for FakeProxy {
        fn property(&self, path: &str) -> Result<Option<Vec<u8>>, HostStatus> {
            self.properties
                .get(&path.replace('\0', "."))
                .cloned()
                .transpose()
        }
        fn request_headers(&self) -> Result<HeaderList, HostStatus> {
            Ok(HeaderList::from_pairs(&self.headers))
        }
    }

    fn connection() -> FakeProxy {
        FakeProxy::default()
            .string(
                "connection.uri_san_peer_certificate",
                "spiffe://cluster.local/ns/dev/sa/app",
            )
            .raw("connection.mtls", Ok(vec![1]))
            .string("source.address", "10.1.2.3:51000")
            .int("source.port", 51000)
            .string("destination.address", "[2001:db8::1]:443")
            .int("destination.port", 443)
            .string("connection.requested_server_name", "API.example.com.")
    }

    #[test]
    fn gathers_connection_attributes() {
        let attrs = gather_connection(&connection()).unwrap();
        assert_eq!(
            attrs.source_principal.as_deref(),
            Some("cluster.local/ns/dev/sa/app")
        );
        assert_eq!(attrs.source_namespace.as_deref(), Some("dev"));
        assert_eq!(attrs.source_ip, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(attrs.remote_ip, attrs.source_ip);
        assert_eq!(attrs.source_port, Some(51000));
        assert_eq!(attrs.destination_ip, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(attrs.destination_port, Some(443));
        assert_eq!(attrs.sni.as_deref(), Some("api.example.com"));
        assert!(attrs.http.is_none());
    }

    #[test]
    fn ports_come_from_the_address_or_the_port_property() {
        let proxy = FakeProxy::default()
            .raw("connection.mtls", Ok(vec![0]))
            .string("source.address", "10.1.2.3")
            .int("source.port", 4000)
            .string("destination.address", "10.0.0.2")
            .int("destination.port", 8443);
        let attrs = gather_connection(&proxy).unwrap();
        assert_eq!(attrs.source_port, Some(4000));
        assert_eq!(attrs.destination_port, Some(8443));
        assert_eq!(attrs.destination_ip, Some("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn absent_optional_properties_are_unknown() {
        // Plain TCP without SNI: no certificate, no server name, no ports beside the addresses.
        let proxy = FakeProxy::default()
            .raw("connection.mtls", Ok(vec![0]))
            .string("source.address", "10.1.2.3")
            .string("destination.address", "10.0.0.2");
        let attrs = gather_connection(&proxy).unwrap();
        assert_eq!(attrs.mtls, Some(false));
        assert_eq!(attrs.source_principal, None);
        assert_eq!(attrs.sni, None);
        assert_eq!(attrs.source_port, None);
        assert_eq!(attrs.destination_port, None);
    }

    #[test]
    fn properties_envoy_always_reports_must_be_there() {
        for (absent, name) in [
            ("source.address", "source.address"),
            ("destination.address", "destination.address"),
            ("connection.mtls", "connection.mtls"),
        ] {
            let mut proxy = connection();
            proxy.properties.remove(absent);
            if absent == "connection.mtls" {
                // With a peer certificate mtls is not read; without one it must be reported.
                proxy
                    .properties
                    .remove("connection.uri_san_peer_certificate");
            }
            assert_eq!(
                gather_connection(&proxy),
                Err(AttributeError::Absent(name)),
                "{absent}"
            );
        }
        let mut proxy = connection();
        proxy.properties.remove("connection.mtls");
        assert!(
            gather_connection(&proxy).is_ok(),
            "mtls is implied by the SAN"
        );
    }

    #[test]
    fn a_peer_uri_san_means_mtls() {
        // The SAN exists only for a presented client certificate: mtls is not read then.
        let proxy = connection().raw("connection.mtls", Err(HostStatus(3)));
        let attrs = gather_connection(&proxy).unwrap();
        assert_eq!(attrs.mtls, Some(true));
        assert_eq!(
            attrs.source_principal.as_deref(),
            Some("cluster.local/ns/dev/sa/app")
        );
        // Without one, mtls is read as the proxy reports it, and there is no principal.
        let mut proxy = connection().raw("connection.mtls", Ok(vec![0]));
        proxy
            .properties
            .remove("connection.uri_san_peer_certificate");
        let attrs = gather_connection(&proxy).unwrap();
        assert_eq!((attrs.mtls, attrs.source_principal), (Some(false), None));
    }

    /// A waypoint: no TLS on the connection the filter sees; the HBONE tunnel's peer is in
    /// filter state.
    fn waypoint_connection() -> FakeProxy {
        let mut proxy = connection().raw("connection.mtls", Ok(vec![0])).string(
            "filter_state.io.istio.peer_principal",
            "spiffe://cluster.local/ns/orders/sa/checkout",
        );
        proxy
            .properties
            .remove("connection.uri_san_peer_certificate");
        proxy
    }

    #[test]
    fn on_a_waypoint_the_principal_comes_from_the_hbone_tunnel() {
        let attrs = gather_connection(&waypoint_connection()).unwrap();
        assert_eq!(
            attrs.source_principal.as_deref(),
            Some("cluster.local/ns/orders/sa/checkout")
        );
        assert_eq!(attrs.source_namespace.as_deref(), Some("orders"));
        assert_eq!(attrs.mtls, Some(true), "the tunnel is mutual TLS");

        // The connection's own certificate wins when there is one.
        let proxy = waypoint_connection().string(
            "connection.uri_san_peer_certificate",
            "spiffe://cluster.local/ns/dev/sa/app",
        );
        let attrs = gather_connection(&proxy).unwrap();
        assert_eq!(
            attrs.source_principal.as_deref(),
            Some("cluster.local/ns/dev/sa/app")
        );

        // A value that is no SPIFFE ID gives no principal; one that is not text is refused.
        let proxy =
            waypoint_connection().string("filter_state.io.istio.peer_principal", "orders/checkout");
        let attrs = gather_connection(&proxy).unwrap();
        assert_eq!((attrs.mtls, attrs.source_principal), (Some(false), None));
        let proxy =
            waypoint_connection().raw("filter_state.io.istio.peer_principal", Ok(vec![0xff]));
        assert!(gather_connection(&proxy).is_err());
    }

    #[test]
    fn a_waypoint_principal_comes_from_filter_state() {
        let waypoint = || {
            let mut proxy = connection().raw("connection.mtls", Ok(vec![0]));
            proxy
                .properties
                .remove("connection.uri_san_peer_certificate");
            proxy
        };
        let attrs = gather_connection(&waypoint().string(
            "filter_state.io.istio.peer_principal",
            "spiffe://cluster.local/ns/dev/sa/app",
        ))
        .unwrap();
        assert_eq!(
            (attrs.source_principal.as_deref(), attrs.mtls),
            (Some("cluster.local/ns/dev/sa/app"), Some(true))
        );
        // Not a SPIFFE ID: no principal, and mtls as the connection says.
        let attrs =
            gather_connection(&waypoint().string("filter_state.io.istio.peer_principal", "app"))
                .unwrap();
        assert_eq!((attrs.source_principal, attrs.mtls), (None, Some(false)));
        // A certificate's SAN wins over filter state.
        let attrs = gather_connection(&connection().string(
            "filter_state.io.istio.peer_principal",
            "spiffe://cluster.local/ns/other/sa/x",
        ))
        .unwrap();
        assert_eq!(attrs.source_namespace.as_deref(), Some("dev"));
        let bad = waypoint().raw("filter_state.io.istio.peer_principal", Ok(vec![0xff]));
        assert!(gather_connection(&bad).is_err());
    }

    #[test]
    fn failures_make_the_stream_unevaluable() {
        let cases = [
            connection().raw("source.address", Err(HostStatus(3))),
            connection()
                .string("destination.address", "10.0.0.1")
                .raw("destination.port", Ok(vec![1, 2, 3])),
            connection()
                .string("destination.address", "10.0.0.1")
                .int("destination.port", 70000),
            {
                let mut proxy = connection().raw("connection.mtls", Ok(vec![2]));
                proxy
                    .properties
                    .remove("connection.uri_san_peer_certificate");
                proxy
            },
            connection().string("source.address", "not-an-address"),
            connection().raw("connection.uri_san_peer_certificate", Ok(vec![0xff, 0xfe])),
        ];
        for proxy in cases {
            assert!(gather_connection(&proxy).is_err());
        }
    }

    #[test]
    fn gathers_http_attributes() {
        let proxy = connection()
            .string("request.protocol", "HTTP/1.1")
            .header(":authority", b"EVIL.example:443")
            .header(":method", b"GET")
            .header(":path", b"/public/%2e%2e/admin?x=1")
            .header(":scheme", b"https")
            .header("x-team", b"a")
            .header("X-Team", b"b\xff");
        let attrs = gather_http(&proxy, &["x-team".to_string()]).unwrap();
        assert_eq!(attrs.host(), Some("evil.example"));
        assert_eq!(attrs.path(), Some("/admin"));
        assert_eq!(attrs.method(), Some("GET"));
        assert_eq!(attrs.header("x-team"), Some("a,b\u{fffd}"));
        assert_eq!(
            attrs.http.as_ref().unwrap().protocol.as_deref(),
            Some("HTTP/1.1")
        );

        let bad = connection().header(":path", b"/a\xff");
        assert!(gather_http(&bad, &[]).is_err());
        let bad = connection().header(":authority", b"a b");
        assert!(gather_http(&bad, &[]).is_err());
        let bad = connection().header(":path", b"/a%00");
        assert!(gather_http(&bad, &[]).is_err());
    }

    #[test]
    fn header_map_round_trip() {
        let pairs = [(":method", "GET"), ("x", "")];
        let bytes = encode_header_map(&pairs);
        // count=2 | (7,3) (1,0) | ":method\0GET\0" "x\0\0"
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        assert_eq!(&bytes[4..12], &[7, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&bytes[20..], b":method\0GET\0x\0\0");
        let decoded = HeaderList::decode(bytes.clone()).unwrap();
        assert_eq!(
            decoded.pairs(),
            vec![(&b":method"[..], &b"GET"[..]), (&b"x"[..], &b""[..])]
        );
        assert_eq!(decoded.len(), 2);
        assert!(HeaderList::decode(bytes[..bytes.len() - 1].to_vec()).is_none());
        assert!(HeaderList::decode(vec![255, 255, 255, 255]).is_none());
        assert!(HeaderList::decode(vec![]).unwrap().is_empty());
    }
}
