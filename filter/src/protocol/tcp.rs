//! TCP (network filter) inspection: detect the protocol from the first bytes, parse the TLS
//! ClientHello when it is TLS, and check the result against the TCP rules.

use super::detect::{detect, Detection, Protocol, MAX_DETECT_BYTES};
use super::http::normalize_host;
use super::tls::{ClientHello, ClientHelloParser, TlsError, TlsVersion};
use crate::text::quote;

/// Follows one connection's first bytes until its protocol (and ClientHello) is known.
///
/// Feed only bytes not fed before: if the host hands over the whole buffered data on every
/// call, pass the part after what was already fed. Buffering is bounded by
/// [`MAX_DETECT_BYTES`] before detection and by the ClientHello limit after it.
#[derive(Debug, Clone)]
pub struct ConnectionInspector {
    prefix: Vec<u8>,
    protocol: Option<Protocol>,
    tls: Option<ClientHelloParser>,
    max_client_hello_bytes: usize,
    facts: Option<ConnectionFacts>,
}

/// What inspection found out; also the source of the `connection.*` rule keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionFacts {
    pub protocol: Protocol,
    pub client_hello: Option<ClientHello>,
    /// Set when the connection looks like TLS but its ClientHello is not acceptable.
    pub tls_error: Option<TlsError>,
}

/// The `when` keys inspection provides.
pub const FACT_KEYS: [&str; 3] = [
    "connection.protocol",
    "connection.tls_version",
    "connection.alpn",
];

impl ConnectionFacts {
    /// `connection.protocol`: tls, http1, http2, ssh, unknown.
    pub fn protocol_name(&self) -> &'static str {
        self.protocol.as_str()
    }

    /// `connection.tls_version`: the highest version the ClientHello offers ("1.2", "1.3").
    /// In passthrough the negotiated version is never seen; the offer is what the client can do.
    pub fn tls_version(&self) -> Option<&'static str> {
        self.client_hello
            .as_ref()
            .map(|h| h.max_offered_version().as_str())
    }

    /// `connection.alpn`: the offered ALPN protocols, in order (a rule matches if any does).
    pub fn alpn(&self) -> &[String] {
        self.client_hello.as_ref().map_or(&[], |h| h.alpn_list())
    }

    /// ClientHello SNI, when there is one.
    pub fn sni(&self) -> Option<&str> {
        self.client_hello.as_ref().and_then(|h| h.sni.as_deref())
    }

    /// Values of a `when` key from [`FACT_KEYS`]; `None` for other keys.
    pub fn values(&self, key: &str) -> Option<Vec<String>> {
        match key {
            "connection.protocol" => Some(vec![self.protocol_name().to_owned()]),
            "connection.tls_version" => {
                Some(self.tls_version().map(str::to_owned).into_iter().collect())
            }
            "connection.alpn" => Some(self.alpn().to_vec()),
            _ => None,
        }
    }
}

impl ConnectionInspector {
    pub fn new(max_client_hello_bytes: usize) -> Self {
        ConnectionInspector {
            prefix: Vec::new(),
            protocol: None,
            tls: None,
            max_client_hello_bytes,
            facts: None,
        }
    }

    /// Feeds the next bytes. `Some` once everything is known (the same facts on later calls).
    pub fn feed(&mut self, data: &[u8]) -> Option<&ConnectionFacts> {
        if self.facts.is_none() {
            self.advance(data);
        }
        self.facts.as_ref()
    }

    /// The stream ended, or the caller will wait no longer: settle with what is known.
    /// Undecided detection becomes `Unknown`; a ClientHello cut short is `Truncated`.
    pub fn finish(&mut self) -> &ConnectionFacts {
        let facts = self
            .facts
            .take()
            .unwrap_or_else(|| match (&mut self.tls, self.protocol) {
                (Some(parser), _) => {
                    let result = parser.finish().cloned();
                    tls_facts(result)
                }
                (None, Some(protocol)) => ConnectionFacts {
                    protocol,
                    client_hello: None,
                    tls_error: None,
                },
                (None, None) => ConnectionFacts {
                    protocol: Protocol::Unknown,
                    client_hello: None,
                    tls_error: None,
                },
            });
        self.prefix = Vec::new();
        self.facts.insert(facts)
    }

    /// Bytes held right now (bounded as documented above).
    pub fn buffered(&self) -> usize {
        self.prefix.len() + self.tls.as_ref().map_or(0, ClientHelloParser::buffered)
    }

    fn advance(&mut self, data: &[u8]) {
        if let Some(parser) = &mut self.tls {
            match parser.feed(data) {
                Ok(None) => {}
                Ok(Some(hello)) => self.facts = Some(tls_facts(Ok(hello.clone()))),
                Err(e) => self.facts = Some(tls_facts(Err(e))),
            }
            return;
        }
        let room = MAX_DETECT_BYTES.saturating_sub(self.prefix.len());
        self.prefix
            .extend_from_slice(data.get(..room).unwrap_or(data));
        match detect(&self.prefix) {
            Detection::NeedMoreBytes => {}
            Detection::Detected(Protocol::Tls) => {
                let mut parser = ClientHelloParser::new(self.max_client_hello_bytes);
                // The prefix holds what has arrived so far (at most MAX_DETECT_BYTES of it);
                // hand the parser the whole of it, then anything past the cap.
                let prefix = std::mem::take(&mut self.prefix);
                let result = match parser.feed(&prefix) {
                    Ok(None) => parser
                        .feed(data.get(room..).unwrap_or(&[]))
                        .map(|h| h.cloned()),
                    other => other.map(|h| h.cloned()),
                };
                self.protocol = Some(Protocol::Tls);
                match result {
                    Ok(None) => self.tls = Some(parser),
                    Ok(Some(hello)) => self.facts = Some(tls_facts(Ok(hello))),
                    Err(e) => self.facts = Some(tls_facts(Err(e))),
                }
            }
            Detection::Detected(protocol) => {
                self.prefix = Vec::new();
                self.protocol = Some(protocol);
                self.facts = Some(ConnectionFacts {
                    protocol,
                    client_hello: None,
                    tls_error: None,
                });
            }
        }
    }
}

fn tls_facts(result: Result<ClientHello, TlsError>) -> ConnectionFacts {
    match result {
        Ok(hello) => ConnectionFacts {
            protocol: Protocol::Tls,
            client_hello: Some(hello),
            tls_error: None,
        },
        Err(e) => ConnectionFacts {
            protocol: Protocol::Tls,
            client_hello: None,
            tls_error: Some(e),
        },
    }
}

/// The TCP checks, validated (see `protocol::config::TcpConfig` for the JSON form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpChecks {
    pub tls_ports: Vec<u16>,
    pub min_tls_version: TlsVersion,
    /// `None`: any ALPN value.
    pub allowed_alpn: Option<Vec<String>>,
    pub require_alpn: bool,
    pub require_sni: bool,
    pub allow_ech: bool,
    pub max_client_hello_bytes: usize,
}

impl Default for TcpChecks {
    fn default() -> Self {
        TcpChecks {
            tls_ports: Vec::new(),
            min_tls_version: TlsVersion::TLS12,
            allowed_alpn: None,
            require_alpn: false,
            require_sni: true,
            allow_ech: false,
            max_client_hello_bytes: super::tls::DEFAULT_MAX_CLIENT_HELLO_BYTES,
        }
    }
}

/// Why a connection fails the TCP checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TcpViolation {
    #[error("port {port} is declared TLS but the connection speaks {protocol}")]
    NotTls { port: u16, protocol: Protocol },
    #[error(transparent)]
    BadClientHello(TlsError),
    #[error("client offers at most TLS {offered}, below the minimum {min}")]
    TlsVersionTooLow {
        offered: TlsVersion,
        min: TlsVersion,
    },
    #[error("ClientHello has no ALPN")]
    AlpnMissing,
    #[error("ALPN protocol {} is not allowed", quote(.protocol))]
    AlpnNotAllowed { protocol: String },
    #[error("ClientHello has no SNI")]
    SniMissing,
    #[error("ClientHello SNI {} differs from the requested server name {}", quote(.sni), quote(.requested))]
    SniMismatch { sni: String, requested: String },
    #[error("encrypted ClientHello is not allowed")]
    EchNotAllowed,
}

impl TcpViolation {
    /// Short reason for logs and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            TcpViolation::NotTls { .. } => "tcp_not_tls",
            TcpViolation::BadClientHello(e) => e.reason(),
            TcpViolation::TlsVersionTooLow { .. } => "tls_version_too_low",
            TcpViolation::AlpnMissing => "tls_alpn_missing",
            TcpViolation::AlpnNotAllowed { .. } => "tls_alpn_not_allowed",
            TcpViolation::SniMissing => "tls_sni_missing",
            TcpViolation::SniMismatch { .. } => "tls_sni_mismatch",
            TcpViolation::EchNotAllowed => "tls_ech_not_allowed",
        }
    }
}

impl TcpChecks {
    pub fn is_tls_port(&self, port: u16) -> bool {
        self.tls_ports.contains(&port)
    }

    /// Checks an inspected connection to `port`. `requested_server_name` is Envoy's
    /// `connection.requested_server_name` (set by the TLS inspector) when known.
    ///
    /// Any connection that looks like TLS gets the TLS checks, whatever its port: TLS through
    /// a plain port is still TLS. A TLS-looking connection whose ClientHello cannot be parsed
    /// is refused: it cannot be evaluated.
    pub fn check(
        &self,
        facts: &ConnectionFacts,
        port: u16,
        requested_server_name: Option<&str>,
    ) -> Result<(), TcpViolation> {
        if facts.protocol != Protocol::Tls {
            if self.is_tls_port(port) {
                return Err(TcpViolation::NotTls {
                    port,
                    protocol: facts.protocol,
                });
            }
            return Ok(());
        }
        let hello = match (&facts.client_hello, &facts.tls_error) {
            (Some(hello), None) => hello,
            (_, Some(e)) => return Err(TcpViolation::BadClientHello(e.clone())),
            (None, None) => return Err(TcpViolation::BadClientHello(TlsError::Truncated)),
        };
        if hello.ech && !self.allow_ech {
            return Err(TcpViolation::EchNotAllowed);
        }
        let offered = hello.max_offered_version();
        if offered < self.min_tls_version {
            return Err(TcpViolation::TlsVersionTooLow {
                offered,
                min: self.min_tls_version,
            });
        }
        match &hello.alpn {
            None if self.require_alpn => return Err(TcpViolation::AlpnMissing),
            None => {}
            Some(offer) => {
                if let Some(allowed) = &self.allowed_alpn {
                    // The server picks among the offer, so every entry must be acceptable.
                    if let Some(bad) = offer.iter().find(|p| !allowed.contains(p)) {
                        return Err(TcpViolation::AlpnNotAllowed {
                            protocol: bad.chars().take(64).collect(),
                        });
                    }
                }
            }
        }
        match (&hello.sni, requested_server_name.filter(|r| !r.is_empty())) {
            (None, _) if self.require_sni => return Err(TcpViolation::SniMissing),
            // Checked even without `require_sni`: Envoy's TLS inspector read the same bytes, so
            // a difference means two parsers disagree, which is how filters are bypassed.
            (Some(sni), Some(requested)) if normalize_host(sni) != normalize_host(requested) => {
                return Err(TcpViolation::SniMismatch {
                    sni: sni.clone(),
                    requested: requested.chars().take(255).collect(),
                });
            }
            _ => {}
        }
        Ok(())
    }
}
