//! Protocol checks: HTTP request sanity, protocol detection from a connection's first bytes,
//! and TLS ClientHello inspection for TLS passthrough.
//!
//! Flow: `protocol` JSON → [`ProtocolConfig`] → [`ProtocolConfig::validate`] →
//! [`ProtocolChecks`]. HTTP: [`HttpChecks::check`] over the header list. TCP: feed the
//! connection's bytes to a [`ConnectionInspector`] until it yields [`ConnectionFacts`], then
//! [`TcpChecks::check`]; the facts also answer the `connection.protocol`,
//! `connection.tls_version` and `connection.alpn` rule keys.

pub mod config;
pub mod detect;
pub mod http;
pub mod tcp;
pub mod tls;

pub use config::{ConfigError, HttpConfig, ProtocolChecks, ProtocolConfig, TcpConfig};
pub use detect::{detect, Detection, Protocol, HTTP2_PREFACE, MAX_DETECT_BYTES};
pub use http::{
    is_tchar, is_valid_field_value, normalize_host, parse_authority, HttpChecks, HttpViolation,
};
pub use tcp::{ConnectionFacts, ConnectionInspector, TcpChecks, TcpViolation, FACT_KEYS};
pub use tls::{
    is_grease, parse_client_hello, ClientHello, ClientHelloParser, TlsError, TlsVersion,
    DEFAULT_MAX_CLIENT_HELLO_BYTES,
};
