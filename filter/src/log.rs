//! The one structured log line written for every decision.
//!
//! Format (one JSON object, keys always present unless noted):
//! `{"event":"decision","kind":"http"|"tcp","decision":"allow"|"deny","policy":<name>|null,
//!   "rule":<index>|null,"action":"ALLOW"|"DENY"|"AUDIT"|null,"reason":<code>,
//!   "detail":<text> (only for cannot_evaluate),"audit":[<policy>...],
//!   "dryRun":[{"policy":<name>,"rule":<index>|null,"wouldBe":"allow"|"deny"|"audit"}...],
//!   "attributes":{<Istio attribute name>: <value>, ...}}`
//! Attributes that are unknown are left out; long values are cut to [`MAX_LOGGED_VALUE`] bytes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::attributes::{Attributes, TrafficKind};
use crate::policy::Decision;

/// Longest attribute value written to the log, in bytes; longer values end with `...`.
pub const MAX_LOGGED_VALUE: usize = 256;

fn clip(value: &str) -> Cow<'_, str> {
    if value.len() <= MAX_LOGGED_VALUE {
        return Cow::Borrowed(value);
    }
    let mut end = MAX_LOGGED_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...", value.get(..end).unwrap_or("")))
}

#[derive(Serialize)]
struct LogLine<'a> {
    event: &'static str,
    kind: &'static str,
    decision: &'static str,
    policy: Option<&'a str>,
    rule: Option<usize>,
    action: Option<&'static str>,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    audit: &'a [&'a str],
    #[serde(rename = "dryRun")]
    dry_run: Vec<DryRunLine<'a>>,
    attributes: AttributeLine<'a>,
}

#[derive(Serialize)]
struct DryRunLine<'a> {
    policy: &'a str,
    rule: Option<usize>,
    #[serde(rename = "wouldBe")]
    would_be: &'static str,
}

#[derive(Serialize, Default)]
struct AttributeLine<'a> {
    #[serde(rename = "source.principal", skip_serializing_if = "Option::is_none")]
    source_principal: Option<Cow<'a, str>>,
    #[serde(rename = "source.namespace", skip_serializing_if = "Option::is_none")]
    source_namespace: Option<Cow<'a, str>>,
    #[serde(rename = "source.ip", skip_serializing_if = "Option::is_none")]
    source_ip: Option<String>,
    #[serde(rename = "source.port", skip_serializing_if = "Option::is_none")]
    source_port: Option<u16>,
    #[serde(rename = "remote.ip", skip_serializing_if = "Option::is_none")]
    remote_ip: Option<String>,
    #[serde(rename = "destination.ip", skip_serializing_if = "Option::is_none")]
    destination_ip: Option<String>,
    #[serde(rename = "destination.port", skip_serializing_if = "Option::is_none")]
    destination_port: Option<u16>,
    #[serde(rename = "connection.sni", skip_serializing_if = "Option::is_none")]
    sni: Option<Cow<'a, str>>,
    #[serde(rename = "connection.mtls", skip_serializing_if = "Option::is_none")]
    mtls: Option<bool>,
    #[serde(rename = "request.authority", skip_serializing_if = "Option::is_none")]
    authority: Option<Cow<'a, str>>,
    #[serde(rename = "request.host", skip_serializing_if = "Option::is_none")]
    host: Option<Cow<'a, str>>,
    #[serde(rename = "request.method", skip_serializing_if = "Option::is_none")]
    method: Option<Cow<'a, str>>,
    #[serde(rename = "request.path", skip_serializing_if = "Option::is_none")]
    raw_path: Option<Cow<'a, str>>,
    #[serde(rename = "request.normalized_path", skip_serializing_if = "Option::is_none")]
    path: Option<Cow<'a, str>>,
    #[serde(rename = "request.scheme", skip_serializing_if = "Option::is_none")]
    scheme: Option<Cow<'a, str>>,
    #[serde(rename = "request.protocol", skip_serializing_if = "Option::is_none")]
    protocol: Option<Cow<'a, str>>,
    #[serde(rename = "request.headers", skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<&'a str, Cow<'a, str>>,
}

impl<'a> AttributeLine<'a> {
    fn new(attrs: &'a Attributes) -> Self {
        let text = |v: &'a Option<String>| v.as_deref().map(clip);
        let mut line = Self {
            source_principal: text(&attrs.source_principal),
            source_namespace: text(&attrs.source_namespace),
            source_ip: attrs.source_ip.map(|ip| ip.to_string()),
            source_port: attrs.source_port,
            remote_ip: attrs.remote_ip.map(|ip| ip.to_string()),
            destination_ip: attrs.destination_ip.map(|ip| ip.to_string()),
            destination_port: attrs.destination_port,
            sni: text(&attrs.sni),
            mtls: attrs.mtls,
            ..Self::default()
        };
        if let Some(http) = &attrs.http {
            line.authority = text(&http.authority);
            line.host = text(&http.host);
            line.method = text(&http.method);
            line.raw_path = text(&http.raw_path);
            line.path = text(&http.path);
            line.scheme = text(&http.scheme);
            line.protocol = text(&http.protocol);
            line.headers = http
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), clip(value)))
                .collect();
        }
        line
    }
}

/// Renders the decision log line. `attrs` is `None` when nothing could be gathered.
pub fn decision_line(kind: TrafficKind, decision: &Decision<'_>, attrs: Option<&Attributes>) -> String {
    let empty = Attributes::default();
    let line = LogLine {
        event: "decision",
        kind: kind.as_str(),
        decision: decision.verdict.as_str(),
        policy: decision.policy,
        rule: decision.rule,
        action: decision.action.map(|a| a.as_str()),
        reason: decision.reason.code(),
        detail: decision.reason.detail(),
        audit: &decision.audit,
        dry_run: decision
            .dry_run
            .iter()
            .map(|hit| DryRunLine {
                policy: hit.policy,
                rule: hit.rule,
                would_be: hit.would_be.as_str(),
            })
            .collect(),
        attributes: AttributeLine::new(attrs.unwrap_or(&empty)),
    };
    serde_json::to_string(&line).unwrap_or_else(|_| {
        // Serialising plain strings and numbers cannot fail; keep a valid line regardless.
        format!(
            "{{\"event\":\"decision\",\"kind\":\"{}\",\"decision\":\"{}\"}}",
            kind.as_str(),
            decision.verdict.as_str()
        )
    })
}
