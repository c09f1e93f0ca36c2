//! What the engine knows about a request or connection, gathered once per stream.
//!
//! Values arrive already normalised: host and SNI lower case without port or trailing dot, the
//! path after [`normalize_path`](crate::normalize::normalize_path), IPv4-mapped IPv6 addresses
//! as IPv4. An absent attribute (`None`) is unknown: positive matches on it fail and negative
//! (`not...`) matches succeed, as in Envoy's RBAC.

use std::net::{IpAddr, Ipv6Addr};

use crate::matchers::host::{normalize_host, normalize_sni};
use crate::normalize::normalize_path;

/// Whether the stream is an HTTP request (HTTP filter) or a TCP connection (network filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficKind {
    Http,
    Tcp,
}

impl TrafficKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
        }
    }
}

/// Connection properties an HTTP request reads only when something looks at them: each is a
/// host call (or two) on every request. What a configuration's rules, rate limits and checks
/// can look at is worked out once, at configure time; the peer identity and the request head
/// are always read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads(u8);

impl Reads {
    pub const NONE: Reads = Reads(0);
    /// `source.address` (and `source.port` without a port in it): `source.ip`, `source.port`,
    /// `remote.ip`.
    pub const SOURCE: Reads = Reads(1);
    /// `destination.address` (and `destination.port`): `destination.ip`, `destination.port`.
    pub const DESTINATION: Reads = Reads(2);
    /// `connection.requested_server_name`: `connection.sni`.
    pub const SNI: Reads = Reads(4);
    /// `request.protocol` of an HTTP request: `request.protocol`, `connection.protocol`.
    pub const PROTOCOL: Reads = Reads(8);
    pub const ALL: Reads = Reads(15);

    pub fn contains(self, other: Reads) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// What `self` has and `other` has not.
    pub fn without(self, other: Reads) -> Reads {
        Reads(self.0 & !other.0)
    }
}

impl std::ops::BitOr for Reads {
    type Output = Reads;
    fn bitor(self, other: Reads) -> Reads {
        Reads(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for Reads {
    fn bitor_assign(&mut self, other: Reads) {
        self.0 |= other.0;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Peer identity: the URI SAN of the client certificate without `spiffe://`.
    pub source_principal: Option<String>,
    /// The namespace inside the principal (`<td>/ns/<namespace>/sa/<sa>`).
    pub source_namespace: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub source_port: Option<u16>,
    /// The original client address as Envoy computed it (see docs/config.md).
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: Option<u16>,
    /// TLS SNI, normalised like a host.
    pub sni: Option<String>,
    pub mtls: Option<bool>,
    /// `connection.protocol` (tls, http1, http2, ssh, unknown): for TCP from the connection's
    /// first bytes (known only once they are inspected), for HTTP from `request.protocol`.
    pub connection_protocol: Option<&'static str>,
    /// `connection.tls_version`: the highest TLS version the ClientHello offers (TCP, inspected).
    pub tls_version: Option<&'static str>,
    /// `connection.alpn`: the ALPN protocols the ClientHello offers (TCP, inspected).
    pub alpn: Vec<String>,
    /// Present for HTTP requests only.
    pub http: Option<HttpAttributes>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpAttributes {
    /// `:authority` as received.
    pub authority: Option<String>,
    /// `:authority` normalised for matching.
    pub host: Option<String>,
    pub method: Option<String>,
    /// `:path` as received, query removed (queries may hold secrets and are never logged).
    pub raw_path: Option<String>,
    /// `:path` normalised for matching.
    pub path: Option<String>,
    pub scheme: Option<String>,
    pub protocol: Option<String>,
    /// Lower-case header names with their values (repeated headers joined with `,`, as Envoy
    /// does), sorted by name. Only headers some rule refers to are kept.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    #[error(transparent)]
    Authority(#[from] crate::matchers::host::AuthorityError),
    #[error("{0}")]
    Path(#[from] crate::normalize::PathError),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("malformed {what}: {}", crate::text::quote(.1), what = .0)]
    Malformed(&'static str, String),
    #[error("cannot read {0}: {1}")]
    Host(String, String),
    /// A property Envoy gives every connection is missing: the filter is not running where it
    /// thinks, and nothing it would decide could be trusted.
    #[error("{0} is absent (Envoy reports it on every connection)")]
    Absent(&'static str),
}

impl Attributes {
    pub fn kind(&self) -> TrafficKind {
        if self.http.is_some() {
            TrafficKind::Http
        } else {
            TrafficKind::Tcp
        }
    }

    /// Value of a request header (lower-case name); `None` for TCP or a missing header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let headers = &self.http.as_ref()?.headers;
        let at = headers
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()?;
        headers.get(at).map(|(_, v)| v.as_str())
    }

    pub fn host(&self) -> Option<&str> {
        self.http.as_ref()?.host.as_deref()
    }

    pub fn method(&self) -> Option<&str> {
        self.http.as_ref()?.method.as_deref()
    }

    pub fn path(&self) -> Option<&str> {
        self.http.as_ref()?.path.as_deref()
    }

    /// Sets the principal and the namespace derived from it.
    pub fn with_principal(mut self, principal: &str) -> Self {
        self.source_namespace = namespace_of(principal).map(str::to_string);
        self.source_principal = Some(principal.to_string());
        self.mtls = Some(true);
        self
    }

    /// Sets the source IP (also used as `remote.ip`, see docs/config.md).
    pub fn with_source_ip(mut self, ip: IpAddr) -> Self {
        let ip = canonical_ip(ip);
        self.source_ip = Some(ip);
        self.remote_ip = Some(ip);
        self
    }

    pub fn with_destination(mut self, ip: Option<IpAddr>, port: Option<u16>) -> Self {
        self.destination_ip = ip.map(canonical_ip);
        self.destination_port = port;
        self
    }

    pub fn with_sni(mut self, sni: &str) -> Self {
        self.sni = normalize_sni(sni);
        self
    }

    /// Records what inspecting the connection's first bytes found.
    pub fn set_facts(&mut self, facts: &crate::protocol::ConnectionFacts) {
        self.connection_protocol = Some(facts.protocol_name());
        self.tls_version = facts.tls_version();
        self.alpn = facts.alpn().to_vec();
    }

    pub fn with_http(mut self, http: HttpAttributes) -> Self {
        self.http = Some(http);
        self
    }
}

/// The raw pieces of an HTTP request head, as the proxy reports them.
#[derive(Debug, Clone, Default)]
pub struct RequestHead<'a> {
    pub authority: Option<&'a str>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub scheme: Option<&'a str>,
    pub protocol: Option<&'a str>,
    /// All request headers (any case, repeated names allowed).
    pub headers: &'a [(&'a str, &'a str)],
}

impl HttpAttributes {
    /// Normalises a request head. `wanted_headers` (lower case) are the header names rules refer
    /// to; other headers are not kept.
    pub fn from_request(
        head: &RequestHead<'_>,
        wanted_headers: &[String],
    ) -> Result<Self, AttributeError> {
        let host = match head.authority {
            Some(authority) if !authority.is_empty() => Some(normalize_host(authority)?),
            _ => None,
        };
        let path = match head.path {
            Some(path) => Some(normalize_path(path)?),
            None => None,
        };
        let raw_path = head
            .path
            .map(|p| crate::normalize::strip_query(p).to_string());
        let mut headers: Vec<(String, String)> = Vec::new();
        if !wanted_headers.is_empty() {
            for (name, value) in head.headers {
                // Wanted names are lower case already (compiled so): no copy for the others.
                let Some(wanted) = wanted_headers.iter().find(|w| name.eq_ignore_ascii_case(w))
                else {
                    continue;
                };
                match headers.iter_mut().find(|(n, _)| n == wanted) {
                    Some((_, joined)) => {
                        joined.push(',');
                        joined.push_str(value);
                    }
                    None => headers.push((wanted.clone(), (*value).to_string())),
                }
            }
            crate::text::sort_by(&mut headers, |a, b| a.0 < b.0);
        }
        Ok(Self {
            authority: head.authority.map(str::to_string),
            host,
            method: head.method.map(str::to_string),
            raw_path,
            path,
            scheme: head.scheme.map(str::to_string),
            protocol: head.protocol.map(str::to_string),
            headers,
        })
    }
}

/// IPv4-mapped IPv6 addresses (dual-stack listeners) are treated as the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Parses Envoy's `ip:port` / `[ipv6]:port` address form (a bare IP is accepted too).
#[inline(never)]
pub fn parse_socket_address(text: &str) -> Result<(IpAddr, Option<u16>), AttributeError> {
    let malformed = || AttributeError::Malformed("address", text.to_string());
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(malformed)?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| malformed())?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(malformed)?,
            ),
        };
        return Ok((canonical_ip(IpAddr::V6(ip)), port));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok((canonical_ip(ip), None));
    }
    let (ip, port) = text.rsplit_once(':').ok_or_else(malformed)?;
    let ip: IpAddr = ip.parse().map_err(|_| malformed())?;
    if ip.is_ipv6() {
        return Err(malformed());
    }
    let port: u16 = port.parse().map_err(|_| malformed())?;
    Ok((canonical_ip(ip), Some(port)))
}

/// The principal Istio matches: the peer certificate's URI SAN without `spiffe://`. Other URI
/// schemes carry no mesh identity and give no principal.
pub fn principal_from_uri_san(san: &str) -> Option<&str> {
    san.strip_prefix("spiffe://").filter(|p| !p.is_empty())
}

/// `cluster.local/ns/dev/sa/app` → `dev`.
pub fn namespace_of(principal: &str) -> Option<&str> {
    let mut parts = principal.split('/');
    while let Some(part) = parts.next() {
        if part == "ns" {
            return parts.next().filter(|ns| !ns.is_empty());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses() {
        assert_eq!(
            parse_socket_address("10.1.2.3:51000").unwrap(),
            ("10.1.2.3".parse().unwrap(), Some(51000))
        );
        assert_eq!(
            parse_socket_address("[2001:db8::1]:443").unwrap(),
            ("2001:db8::1".parse().unwrap(), Some(443))
        );
        assert_eq!(
            parse_socket_address("[::ffff:10.0.0.1]:80").unwrap(),
            ("10.0.0.1".parse().unwrap(), Some(80))
        );
        assert_eq!(
            parse_socket_address("10.1.2.3").unwrap(),
            ("10.1.2.3".parse().unwrap(), None)
        );
        for bad in [
            "",
            "10.1.2.3:",
            "10.1.2.3:99999",
            "host:80",
            "[::1",
            "[::1]x",
            "2001:db8::1:80:x",
        ] {
            assert!(parse_socket_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identities() {
        assert_eq!(
            principal_from_uri_san("spiffe://cluster.local/ns/dev/sa/app"),
            Some("cluster.local/ns/dev/sa/app")
        );
        assert_eq!(principal_from_uri_san("https://example.com"), None);
        assert_eq!(namespace_of("cluster.local/ns/dev/sa/app"), Some("dev"));
        assert_eq!(namespace_of("cluster.local/sa/app"), None);
        assert_eq!(namespace_of("td/ns/"), None);
    }

    #[test]
    fn request_heads() {
        let headers = [("X-Team", "a"), ("x-team", "b"), ("user-agent", "curl")];
        let head = RequestHead {
            authority: Some("API.Example.com:443"),
            method: Some("GET"),
            path: Some("/public/%2e%2e/admin?token=secret"),
            headers: &headers,
            ..RequestHead::default()
        };
        let http = HttpAttributes::from_request(&head, &["x-team".to_string()]).unwrap();
        assert_eq!(http.host.as_deref(), Some("api.example.com"));
        assert_eq!(http.path.as_deref(), Some("/admin"));
        assert_eq!(http.raw_path.as_deref(), Some("/public/%2e%2e/admin"));
        assert_eq!(
            http.headers,
            vec![("x-team".to_string(), "a,b".to_string())]
        );
        let attrs = Attributes::default().with_http(http);
        assert_eq!(attrs.header("x-team"), Some("a,b"));
        assert_eq!(attrs.header("user-agent"), None);
    }
}
