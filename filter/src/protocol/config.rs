//! The `protocol` configuration key: its JSON shape, defaults and validation.

use super::http::{is_tchar, HttpChecks, HTTP_VERSIONS};
use super::tcp::TcpChecks;
use super::tls::TlsVersion;
use crate::config::read::{read_u32, ObjectReader};
pub use crate::config::ConfigError;
use crate::config::{ConfigPath, Json};
use crate::ratelimit::config::invalid;
use crate::text::quote;

/// `protocol`: `{"http": {...}, "tcp": {...}}`. A missing section means that section's
/// defaults, which are on: the checks are cheap and their defaults only refuse what a
/// well-behaved egress client never sends. (Without a `protocol` key at all, the filter runs
/// no protocol checks.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtocolConfig {
    pub http: HttpConfig,
    pub tcp: TcpConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Methods allowed; absent: any method token except CONNECT.
    pub allowed_methods: Option<Vec<String>>,
    pub allow_connect: bool,
    pub require_authority: bool,
    pub require_sni_match: bool,
    pub allowed_versions: Vec<String>,
    pub max_headers: u32,
    pub max_header_bytes: u32,
}

impl ProtocolConfig {
    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, &["http", "tcp"])?;
        let config = Self {
            http: obj.object("http", HttpConfig::read)?.unwrap_or_default(),
            tcp: obj.object("tcp", TcpConfig::read)?.unwrap_or_default(),
        };
        obj.finish()?;
        Ok(config)
    }

    /// Parses a `protocol` object from JSON text (errors are located from the document root).
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        Self::read(&crate::config::json::parse(json)?, &ConfigPath::root())
    }
}

impl HttpConfig {
    const FIELDS: &'static [&'static str] = &[
        "allowedMethods",
        "allowConnect",
        "requireAuthority",
        "requireSniMatch",
        "allowedVersions",
        "maxHeaders",
        "maxHeaderBytes",
    ];

    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, Self::FIELDS)?;
        // Field by field over the defaults: an error drops one whole value (smaller `.wasm`).
        let mut config = Self {
            allowed_methods: obj.strings("allowedMethods")?,
            ..Self::default()
        };
        if let Some(v) = obj.bool("allowConnect")? {
            config.allow_connect = v;
        }
        if let Some(v) = obj.bool("requireAuthority")? {
            config.require_authority = v;
        }
        if let Some(v) = obj.bool("requireSniMatch")? {
            config.require_sni_match = v;
        }
        if let Some(v) = obj.strings("allowedVersions")? {
            config.allowed_versions = v;
        }
        if let Some(v) = obj.u32("maxHeaders")? {
            config.max_headers = v;
        }
        if let Some(v) = obj.u32("maxHeaderBytes")? {
            config.max_header_bytes = v;
        }
        obj.finish()?;
        Ok(config)
    }
}

impl TcpConfig {
    const FIELDS: &'static [&'static str] = &[
        "tlsPorts",
        "minTlsVersion",
        "allowedAlpn",
        "requireAlpn",
        "requireSni",
        "allowEch",
        "maxClientHelloBytes",
    ];

    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, Self::FIELDS)?;
        let mut config = Self::default();
        if let Some(v) = obj.list("tlsPorts", read_u32)? {
            config.tls_ports = v;
        }
        if let Some(v) = obj.string("minTlsVersion")? {
            config.min_tls_version = v;
        }
        config.allowed_alpn = obj.strings("allowedAlpn")?;
        if let Some(v) = obj.bool("requireAlpn")? {
            config.require_alpn = v;
        }
        if let Some(v) = obj.bool("requireSni")? {
            config.require_sni = v;
        }
        if let Some(v) = obj.bool("allowEch")? {
            config.allow_ech = v;
        }
        if let Some(v) = obj.u32("maxClientHelloBytes")? {
            config.max_client_hello_bytes = v;
        }
        obj.finish()?;
        Ok(config)
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        let d = HttpChecks::default();
        HttpConfig {
            allowed_methods: d.allowed_methods,
            allow_connect: d.allow_connect,
            require_authority: d.require_authority,
            require_sni_match: d.require_sni_match,
            allowed_versions: d.allowed_versions,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConfig {
    /// Ports on which only TLS is accepted. Integers, validated to 1..=65535.
    pub tls_ports: Vec<u32>,
    pub min_tls_version: String,
    /// ALPN protocols allowed; absent: any.
    pub allowed_alpn: Option<Vec<String>>,
    pub require_alpn: bool,
    pub require_sni: bool,
    pub allow_ech: bool,
    pub max_client_hello_bytes: u32,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            tls_ports: Vec::new(),
            min_tls_version: "1.2".into(),
            allowed_alpn: None,
            require_alpn: false,
            require_sni: true,
            allow_ech: false,
            max_client_hello_bytes: 16 * 1024,
        }
    }
}

pub const MAX_HEADERS_RANGE: (u32, u32) = (1, 10_000);
pub const MAX_HEADER_BYTES_RANGE: (u32, u32) = (256, 8 * 1024 * 1024);
pub const MAX_CLIENT_HELLO_BYTES_RANGE: (u32, u32) = (512, 64 * 1024);

/// The validated checks, ready for the hot path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtocolChecks {
    pub http: HttpChecks,
    pub tcp: TcpChecks,
}

fn in_range(value: u32, (min, max): (u32, u32), path: ConfigPath) -> Result<u32, ConfigError> {
    if value < min || value > max {
        return Err(invalid(path, format!("{value} is outside {min}..={max}")));
    }
    Ok(value)
}

impl ProtocolConfig {
    /// Validates; `path` locates this object (normally `protocol`).
    pub fn validate(&self, path: &ConfigPath) -> Result<ProtocolChecks, ConfigError> {
        Ok(ProtocolChecks {
            http: self.http.validate(&path.field("http"))?,
            tcp: self.tcp.validate(&path.field("tcp"))?,
        })
    }
}

impl HttpConfig {
    pub fn validate(&self, path: &ConfigPath) -> Result<HttpChecks, ConfigError> {
        let at = |field: &str| path.field(field);
        if let Some(methods) = &self.allowed_methods {
            if methods.is_empty() {
                return Err(invalid(
                    at("allowedMethods"),
                    "an empty list refuses every request; omit the field to allow any method",
                ));
            }
            for (i, method) in methods.iter().enumerate() {
                let here = at("allowedMethods").index(i);
                if method.is_empty() || !method.bytes().all(is_tchar) {
                    return Err(invalid(
                        here,
                        format!("{} is not a method token", quote(method)),
                    ));
                }
                if method == "CONNECT" && !self.allow_connect {
                    return Err(invalid(
                        here,
                        "CONNECT is governed by allowConnect; set \"allowConnect\": true instead",
                    ));
                }
                if methods
                    .get(..i)
                    .is_some_and(|before| before.contains(method))
                {
                    return Err(invalid(here, format!("{} is listed twice", quote(method))));
                }
            }
        }
        if self.allowed_versions.is_empty() {
            return Err(invalid(
                at("allowedVersions"),
                "an empty list refuses every request",
            ));
        }
        for (i, version) in self.allowed_versions.iter().enumerate() {
            if !HTTP_VERSIONS.contains(&version.as_str()) {
                return Err(invalid(
                    at("allowedVersions").index(i),
                    format!(
                        "{} is not one of {}",
                        crate::text::quote(version),
                        crate::text::joined(&HTTP_VERSIONS)
                    ),
                ));
            }
        }
        let max_headers = in_range(self.max_headers, MAX_HEADERS_RANGE, at("maxHeaders"))?;
        let max_header_bytes = in_range(
            self.max_header_bytes,
            MAX_HEADER_BYTES_RANGE,
            at("maxHeaderBytes"),
        )?;
        Ok(HttpChecks {
            allowed_methods: self.allowed_methods.clone(),
            allow_connect: self.allow_connect,
            require_authority: self.require_authority,
            require_sni_match: self.require_sni_match,
            allowed_versions: self.allowed_versions.clone(),
            max_headers: max_headers as usize,
            max_header_bytes: max_header_bytes as usize,
        })
    }
}

impl TcpConfig {
    pub fn validate(&self, path: &ConfigPath) -> Result<TcpChecks, ConfigError> {
        let at = |field: &str| path.field(field);
        let mut tls_ports = Vec::with_capacity(self.tls_ports.len());
        for (i, &port) in self.tls_ports.iter().enumerate() {
            let here = at("tlsPorts").index(i);
            let port = u16::try_from(port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    invalid(here.clone(), format!("{port} is not a port (1..=65535)"))
                })?;
            if tls_ports.contains(&port) {
                return Err(invalid(here, format!("{port} is listed twice")));
            }
            tls_ports.push(port);
        }
        let min_tls_version = TlsVersion::parse(&self.min_tls_version).ok_or_else(|| {
            invalid(
                at("minTlsVersion"),
                format!(
                    "{} is not one of \"1.0\", \"1.1\", \"1.2\", \"1.3\"",
                    quote(&self.min_tls_version)
                ),
            )
        })?;
        if let Some(alpn) = &self.allowed_alpn {
            if alpn.is_empty() {
                return Err(invalid(
                    at("allowedAlpn"),
                    "an empty list refuses every client that sends ALPN; omit the field to allow any",
                ));
            }
            for (i, name) in alpn.iter().enumerate() {
                if name.is_empty() || name.len() > 255 {
                    return Err(invalid(
                        at("allowedAlpn").index(i),
                        "an ALPN protocol name has 1 to 255 bytes",
                    ));
                }
            }
        }
        let max_client_hello_bytes = in_range(
            self.max_client_hello_bytes,
            MAX_CLIENT_HELLO_BYTES_RANGE,
            at("maxClientHelloBytes"),
        )?;
        Ok(TcpChecks {
            tls_ports,
            min_tls_version,
            allowed_alpn: self.allowed_alpn.clone(),
            require_alpn: self.require_alpn,
            require_sni: self.require_sni,
            allow_ech: self.allow_ech,
            max_client_hello_bytes: max_client_hello_bytes as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(value: serde_json::Value) -> Result<ProtocolChecks, ConfigError> {
        ProtocolConfig::from_json(value.to_string().as_bytes())
            .expect("test config parses")
            .validate(&ConfigPath::root().field("protocol"))
    }

    #[test]
    fn empty_object_gives_the_documented_defaults() {
        let checks = validate(json!({})).unwrap();
        assert_eq!(checks, ProtocolChecks::default());
        assert_eq!(checks.http.max_headers, 100);
        assert_eq!(checks.http.max_header_bytes, 65536);
        assert!(!checks.http.allow_connect);
        assert!(checks.http.require_authority && checks.http.require_sni_match);
        assert_eq!(checks.http.allowed_versions, ["HTTP/1.1", "HTTP/2"]);
        assert_eq!(checks.tcp.min_tls_version, TlsVersion::TLS12);
        assert!(checks.tcp.require_sni && !checks.tcp.allow_ech && !checks.tcp.require_alpn);
        assert_eq!(checks.tcp.max_client_hello_bytes, 16384);
        assert!(checks.tcp.tls_ports.is_empty());
    }

    #[test]
    fn full_example_validates() {
        let checks = validate(json!({
            "http": {"allowedMethods": ["GET", "POST"], "allowConnect": false, "requireAuthority": true,
                     "requireSniMatch": true, "allowedVersions": ["HTTP/1.1", "HTTP/2"],
                     "maxHeaders": 100, "maxHeaderBytes": 65536},
            "tcp": {"tlsPorts": [443, 8443], "minTlsVersion": "1.3", "allowedAlpn": ["h2", "http/1.1"],
                    "requireSni": true, "allowEch": false, "maxClientHelloBytes": 16384}
        }))
        .unwrap();
        assert_eq!(
            checks.http.allowed_methods,
            Some(vec!["GET".into(), "POST".into()])
        );
        assert_eq!(checks.tcp.tls_ports, [443, 8443]);
        assert_eq!(checks.tcp.min_tls_version, TlsVersion::TLS13);
    }

    #[test]
    fn unknown_fields_are_refused() {
        for value in [
            json!({"udp": {}}),
            json!({"http": {"allowedMethod": ["GET"]}}),
            json!({"tcp": {"tlsPort": 443}}),
        ] {
            assert!(ProtocolConfig::from_json(value.to_string().as_bytes()).is_err());
        }
    }

    #[test]
    fn errors_carry_the_json_path() {
        let cases = [
            (
                json!({"http": {"allowedMethods": []}}),
                "protocol.http.allowedMethods",
            ),
            (
                json!({"http": {"allowedMethods": ["GET", "BAD METHOD"]}}),
                "protocol.http.allowedMethods[1]",
            ),
            (
                json!({"http": {"allowedMethods": ["GET", "CONNECT"]}}),
                "protocol.http.allowedMethods[1]",
            ),
            (
                json!({"http": {"allowedMethods": ["GET", "GET"]}}),
                "protocol.http.allowedMethods[1]",
            ),
            (
                json!({"http": {"allowedVersions": []}}),
                "protocol.http.allowedVersions",
            ),
            (
                json!({"http": {"allowedVersions": ["HTTP/1.1", "HTTP/2.0"]}}),
                "protocol.http.allowedVersions[1]",
            ),
            (
                json!({"http": {"maxHeaders": 0}}),
                "protocol.http.maxHeaders",
            ),
            (
                json!({"http": {"maxHeaderBytes": 10}}),
                "protocol.http.maxHeaderBytes",
            ),
            (
                json!({"tcp": {"tlsPorts": [443, 0]}}),
                "protocol.tcp.tlsPorts[1]",
            ),
            (
                json!({"tcp": {"tlsPorts": [443, 70000]}}),
                "protocol.tcp.tlsPorts[1]",
            ),
            (
                json!({"tcp": {"tlsPorts": [443, 443]}}),
                "protocol.tcp.tlsPorts[1]",
            ),
            (
                json!({"tcp": {"minTlsVersion": "TLSv1.2"}}),
                "protocol.tcp.minTlsVersion",
            ),
            (
                json!({"tcp": {"allowedAlpn": []}}),
                "protocol.tcp.allowedAlpn",
            ),
            (
                json!({"tcp": {"allowedAlpn": ["h2", ""]}}),
                "protocol.tcp.allowedAlpn[1]",
            ),
            (
                json!({"tcp": {"maxClientHelloBytes": 100}}),
                "protocol.tcp.maxClientHelloBytes",
            ),
        ];
        for (value, path) in cases {
            let err = validate(value.clone()).unwrap_err();
            assert_eq!(err.path.as_str(), path, "{value}: {err}");
        }
        let err = validate(json!({"http": {"allowedMethods": ["GET", "CONNECT"]}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol.http.allowedMethods[1]: CONNECT is governed by allowConnect; set \"allowConnect\": true instead"
        );
        // With allowConnect, listing CONNECT is consistent.
        assert!(
            validate(json!({"http": {"allowConnect": true, "allowedMethods": ["CONNECT"]}}))
                .is_ok()
        );
    }
}
