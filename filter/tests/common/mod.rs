//! Request builders shared by the integration tests.
#![allow(dead_code)]

use std::net::IpAddr;

use egress_filter::attributes::{Attributes, HttpAttributes, RequestHead};
use egress_filter::CompiledConfig;

/// Compiles `{"policies": <policies>}`; panics with the error (tests only).
pub fn compile(policies: &str) -> CompiledConfig {
    let json = format!("{{\"policies\": {policies}}}");
    match CompiledConfig::from_json(json.as_bytes()) {
        Ok(config) => config,
        Err(err) => panic!("config rejected: {err}\n{json}"),
    }
}

/// A request or connection described the way the proxy reports it.
#[derive(Debug, Clone, Default)]
pub struct Req {
    pub principal: Option<String>,
    pub source_ip: Option<String>,
    pub destination_ip: Option<String>,
    pub port: Option<u16>,
    pub sni: Option<String>,
    pub http: Option<HttpReq>,
}

#[derive(Debug, Clone, Default)]
pub struct HttpReq {
    pub method: String,
    pub authority: Option<String>,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// An HTTPS request through the gateway from a meshed workload in `dev`.
pub fn http(method: &str, authority: &str, path: &str) -> Req {
    Req {
        principal: Some("cluster.local/ns/dev/sa/app".into()),
        source_ip: Some("10.1.2.3".into()),
        destination_ip: Some("10.0.0.10".into()),
        port: Some(443),
        sni: None,
        http: Some(HttpReq {
            method: method.into(),
            authority: Some(authority.into()),
            path: path.into(),
            headers: Vec::new(),
        }),
    }
}

/// A TLS-passthrough connection with this SNI from a meshed workload in `dev`.
pub fn tcp(sni: &str) -> Req {
    Req {
        principal: Some("cluster.local/ns/dev/sa/app".into()),
        source_ip: Some("10.1.2.3".into()),
        destination_ip: Some("10.0.0.10".into()),
        port: Some(443),
        sni: if sni.is_empty() {
            None
        } else {
            Some(sni.into())
        },
        http: None,
    }
}

impl Req {
    pub fn principal(mut self, principal: &str) -> Self {
        self.principal = Some(principal.into());
        self
    }

    pub fn plaintext(mut self) -> Self {
        self.principal = None;
        self
    }

    pub fn source_ip(mut self, ip: &str) -> Self {
        self.source_ip = Some(ip.into());
        self
    }

    pub fn destination_ip(mut self, ip: &str) -> Self {
        self.destination_ip = Some(ip.into());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn sni(mut self, sni: &str) -> Self {
        self.sni = Some(sni.into());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Some(http) = self.http.as_mut() {
            http.headers.push((name.into(), value.into()));
        }
        self
    }

    pub fn no_authority(mut self) -> Self {
        if let Some(http) = self.http.as_mut() {
            http.authority = None;
        }
        self
    }

    /// Builds engine attributes, keeping the headers the configuration refers to.
    pub fn attributes(&self, wanted_headers: &[String]) -> Attributes {
        let mut attrs = Attributes::default();
        if let Some(p) = &self.principal {
            attrs = attrs.with_principal(p);
        }
        if let Some(ip) = &self.source_ip {
            attrs = attrs.with_source_ip(ip.parse::<IpAddr>().expect("test IP"));
        }
        attrs = attrs.with_destination(
            self.destination_ip
                .as_ref()
                .map(|ip| ip.parse().expect("test IP")),
            self.port,
        );
        if let Some(sni) = &self.sni {
            attrs = attrs.with_sni(sni);
        }
        if let Some(http) = &self.http {
            let headers: Vec<(&str, &str)> = http
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let head = RequestHead {
                authority: http.authority.as_deref(),
                method: Some(&http.method),
                path: Some(&http.path),
                scheme: Some("https"),
                protocol: Some("HTTP/1.1"),
                headers: &headers,
            };
            attrs = attrs.with_http(
                HttpAttributes::from_request(&head, wanted_headers).expect("test request"),
            );
        }
        attrs
    }
}
