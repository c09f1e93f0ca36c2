//! Global rate limits: a `rateLimits` entry with `global` is decided by an Envoy Rate Limit
//! Service (Limitador, envoyproxy/ratelimit) shared by every gateway replica, instead of by a
//! token bucket in this replica's shared data.
//!
//! For each request the limit applies to, the filter sends one `ShouldRateLimit` call to the
//! `cluster`, with `domain` and the limit's descriptors, and waits for the answer (at most
//! `timeoutMs`). `OVER_LIMIT` refuses the request with 429; any other code lets it go, as in
//! Envoy's ratelimit filter. A call that cannot be made, times out, fails or answers with bytes
//! that do not decode is an error: `failureMode` decides (`deny` by default: fail closed).
//!
//! Descriptor: one, unless `descriptors` says otherwise: the entry `limit` = the limit's name,
//! then one entry per `key` attribute, named as the attribute (`source.namespace`, ...). An
//! attribute the request lacks is sent with an empty value, so such requests share one counter
//! instead of escaping the limit.

use std::sync::Arc;

use crate::attributes::Attributes;
use crate::config::read::ObjectReader;
use crate::config::{ConfigError, ConfigPath, Json, JsonWriter};
use crate::rls::{self, RlsResponse};
use crate::text::{push_uint, quote};

use super::config::{invalid, KeyAttribute, RateLimitSpec, NANOS_PER_SEC};

pub const DEFAULT_TIMEOUT_MS: u32 = 20;
pub const MAX_TIMEOUT_MS: u32 = 60_000;
const MAX_DESCRIPTORS: usize = 8;
const MAX_ENTRIES: usize = 16;
const MAX_KEY_LEN: usize = 64;
const MAX_VALUE_LEN: usize = 256;
const MAX_NAME_LEN: usize = 255;
/// Largest `raw_body` of the service used as the 429 body; a larger one is replaced by ours.
const MAX_REPLY_BODY: usize = 4096;
/// Most headers of the service copied to a reply.
const MAX_COPIED_HEADERS: usize = 16;

/// What happens to a request when the rate limit service gives no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Refuse it (Envoy `failure_mode_deny: true`).
    Deny,
    /// Let it through (Envoy's default).
    Allow,
}

impl FailureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Allow => "allow",
        }
    }
}

/// One descriptor entry of `global.descriptors`, as read.
#[derive(Debug, Clone, Default)]
pub struct EntryConfig {
    pub key: String,
    pub value: Option<String>,
    pub attribute: Option<String>,
}

impl EntryConfig {
    const FIELDS: &'static [&'static str] = &["key", "value", "attribute"];

    fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, Self::FIELDS)?;
        let entry = Self {
            key: obj.required_string("key")?,
            value: obj.string("value")?,
            attribute: obj.string("attribute")?,
        };
        obj.finish()?;
        Ok(entry)
    }
}

/// `rateLimits[].global`, as read.
#[derive(Debug, Clone, Default)]
pub struct GlobalConfig {
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: Option<u32>,
    pub failure_mode: Option<String>,
    pub descriptors: Option<Vec<Vec<EntryConfig>>>,
}

impl GlobalConfig {
    const FIELDS: &'static [&'static str] = &[
        "cluster",
        "domain",
        "timeoutMs",
        "failureMode",
        "descriptors",
    ];

    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, Self::FIELDS)?;
        let config = Self {
            cluster: obj.required_string("cluster")?,
            domain: obj.required_string("domain")?,
            timeout_ms: obj.u32("timeoutMs")?,
            failure_mode: obj.string("failureMode")?,
            descriptors: obj.list("descriptors", |value, path| match value {
                Json::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| EntryConfig::read(item, &path.index(i)))
                    .collect(),
                _ => Err(invalid(path.clone(), "expected a list of entries")),
            })?,
        };
        obj.finish()?;
        Ok(config)
    }
}

/// The value of a descriptor entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryValue {
    Fixed(String),
    /// The request's value of this attribute (empty when the request lacks it).
    Attribute(KeyAttribute),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorEntry {
    pub key: String,
    pub value: EntryValue,
}

/// A validated global limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalLimit {
    pub name: Arc<str>,
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: u32,
    pub failure_mode: FailureMode,
    pub descriptors: Vec<Vec<DescriptorEntry>>,
    /// Requests per window, for the service's limits file (`maxTokens`).
    pub max_value: u32,
    /// The window in seconds (`fillInterval`).
    pub window_seconds: u64,
}

/// Istio names outbound clusters `outbound|<port>|<subset>|<host>` (inbound likewise).
fn check_cluster(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{} is not an Envoy cluster name (1 to 255 printable characters, no spaces)",
            quote(name)
        ));
    }
    let mut parts = name.split('|');
    let istio = match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(_), None, ..) => true,
        (Some(direction), Some(port), Some(_), Some(host), None) => {
            (direction == "outbound" || direction == "inbound")
                && port.parse::<u16>().is_ok_and(|p| p > 0)
                && !host.is_empty()
        }
        _ => false,
    };
    if !istio {
        return Err(format!(
            "{} is not an Istio cluster name (expected outbound|<port>|<subset>|<host>, \
             e.g. outbound|8081||limitador.limitador.svc.cluster.local)",
            quote(name)
        ));
    }
    if rls::may_parse_as_protobuf(name.as_bytes()) {
        return Err(format!(
            "{} would be read by Envoy as a serialized GrpcService, not as a cluster name",
            quote(name)
        ));
    }
    Ok(())
}

/// Domains, descriptor keys and fixed values end up quoted in the service's limits file;
/// quotes, backslashes and control characters are refused so they never need escaping.
/// Domains are further limited to what Limitador namespaces usually are.
fn check_text(text: &str, max: usize, domain: bool) -> Result<(), String> {
    let bad = |c: char| {
        c.is_control()
            || matches!(c, '\'' | '"' | '\\')
            || (domain && !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
    };
    if text.is_empty() || text.len() > max || text.chars().any(bad) {
        return Err(format!(
            "{}: expected 1 to {max} characters, {}",
            quote(text),
            if domain {
                "letters, digits, '-', '_', '.' or '/'"
            } else {
                "no quotes, backslashes or control characters"
            }
        ));
    }
    Ok(())
}

fn read_entry(entry: &EntryConfig, path: &ConfigPath) -> Result<DescriptorEntry, ConfigError> {
    check_text(&entry.key, MAX_KEY_LEN, false).map_err(|m| invalid(path.field("key"), m))?;
    let value = match (&entry.value, &entry.attribute) {
        (Some(value), None) => {
            check_text(value, MAX_VALUE_LEN, false).map_err(|m| invalid(path.field("value"), m))?;
            EntryValue::Fixed(value.clone())
        }
        (None, Some(attribute)) => EntryValue::Attribute(
            KeyAttribute::parse(attribute).map_err(|m| invalid(path.field("attribute"), m))?,
        ),
        _ => {
            return Err(invalid(
                path.clone(),
                "an entry needs exactly one of `value` (fixed) or `attribute`",
            ))
        }
    };
    Ok(DescriptorEntry {
        key: entry.key.clone(),
        value,
    })
}

impl GlobalConfig {
    /// Checks every field; `path` locates `global` (e.g. `rateLimits[1].global`) and `spec` is
    /// its validated limit (name, key, window).
    pub fn validate(
        &self,
        path: &ConfigPath,
        spec: &RateLimitSpec,
    ) -> Result<GlobalLimit, ConfigError> {
        check_cluster(&self.cluster).map_err(|m| invalid(path.field("cluster"), m))?;
        check_text(&self.domain, MAX_NAME_LEN, true)
            .map_err(|m| invalid(path.field("domain"), m))?;
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(invalid(
                path.field("timeoutMs"),
                format!("{timeout_ms} is outside 1..={MAX_TIMEOUT_MS}"),
            ));
        }
        let failure_mode = match self.failure_mode.as_deref() {
            None | Some("deny") => FailureMode::Deny,
            Some("allow") => FailureMode::Allow,
            Some(other) => {
                return Err(invalid(
                    path.field("failureMode"),
                    format!("{} is not one of deny, allow", quote(other)),
                ))
            }
        };
        let descriptors = match &self.descriptors {
            None => vec![default_descriptor(spec)],
            Some(list) => {
                let here = path.field("descriptors");
                if list.is_empty() || list.len() > MAX_DESCRIPTORS {
                    return Err(invalid(here, "must hold 1 to 8 descriptors"));
                }
                let mut descriptors = Vec::with_capacity(list.len());
                for (i, entries) in list.iter().enumerate() {
                    let at = here.index(i);
                    if entries.is_empty() || entries.len() > MAX_ENTRIES {
                        return Err(invalid(at, "must hold 1 to 16 entries"));
                    }
                    let mut descriptor: Vec<DescriptorEntry> = Vec::with_capacity(entries.len());
                    for (j, entry) in entries.iter().enumerate() {
                        let entry = read_entry(entry, &at.index(j))?;
                        if descriptor.iter().any(|e| e.key == entry.key) {
                            return Err(invalid(
                                at.index(j).field("key"),
                                format!("{} is used twice in this descriptor", quote(&entry.key)),
                            ));
                        }
                        descriptor.push(entry);
                    }
                    descriptors.push(descriptor);
                }
                descriptors
            }
        };
        Ok(GlobalLimit {
            name: Arc::from(spec.name.as_str()),
            cluster: self.cluster.clone(),
            domain: self.domain.clone(),
            timeout_ms,
            failure_mode,
            descriptors,
            max_value: spec.params.max_tokens,
            window_seconds: spec.params.fill_interval_ns / NANOS_PER_SEC,
        })
    }
}

/// `limit` = the limit's name, then each key attribute under its own name.
fn default_descriptor(spec: &RateLimitSpec) -> Vec<DescriptorEntry> {
    let mut entries = vec![DescriptorEntry {
        key: "limit".to_string(),
        value: EntryValue::Fixed(spec.name.clone()),
    }];
    entries.extend(spec.key.iter().map(|attr| DescriptorEntry {
        key: attr.to_string(),
        value: EntryValue::Attribute(attr.clone()),
    }));
    entries
}

impl GlobalLimit {
    /// The `RateLimitRequest` for this request (one hit).
    pub fn request(&self, attrs: &Attributes) -> Vec<u8> {
        let mut encoder = rls::RequestEncoder::new(&self.domain);
        for descriptor in &self.descriptors {
            for entry in descriptor {
                match &entry.value {
                    EntryValue::Fixed(v) => encoder.entry(&entry.key, v),
                    EntryValue::Attribute(attr) => {
                        let value = crate::outcome::key_value(attrs, attr);
                        encoder.entry(&entry.key, value.as_deref().unwrap_or(""));
                    }
                }
            }
            encoder.end_descriptor();
        }
        encoder.finish(1)
    }

    /// Writes this limit for the configuration log line, which `egress-sim limits` turns into
    /// the service's limits file: both sides then agree on domain and descriptors.
    pub fn describe(&self, w: &mut JsonWriter) {
        w.element_object();
        w.str("name", Some(&self.name));
        w.str("cluster", Some(&self.cluster));
        w.str("domain", Some(&self.domain));
        w.uint("maxValue", Some(u64::from(self.max_value)));
        w.uint("seconds", Some(self.window_seconds));
        w.key_array("descriptors");
        for descriptor in &self.descriptors {
            w.element_object();
            w.key_array("entries");
            for entry in descriptor {
                w.element_object();
                w.str("key", Some(&entry.key));
                match &entry.value {
                    EntryValue::Fixed(v) => w.str("value", Some(v)),
                    EntryValue::Attribute(a) => w.str("attribute", Some(&a.to_string())),
                }
                w.end_object();
            }
            w.end_array();
            w.end_object();
        }
        w.end_array();
        w.end_object();
    }
}

/// Why the service gave no usable answer. The names are metric and log names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RlsError {
    /// `proxy_grpc_call` was refused: Envoy does not know the cluster (status 4, ParseFailure).
    UnknownCluster,
    /// `proxy_grpc_call` failed otherwise.
    DispatchFailed,
    /// The call timed out: Envoy closes it with 14 "upstream request timeout" (or 4,
    /// DEADLINE_EXCEEDED, behind a newer runtime guard).
    Timeout,
    /// gRPC 14 otherwise: the service or its connection is down.
    Unavailable,
    /// Any other gRPC status.
    GrpcStatus,
    /// The answer does not decode as a `RateLimitResponse`.
    BadResponse,
}

impl RlsError {
    pub const ALL: [RlsError; 6] = [
        Self::UnknownCluster,
        Self::DispatchFailed,
        Self::Timeout,
        Self::Unavailable,
        Self::GrpcStatus,
        Self::BadResponse,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownCluster => "unknown_cluster",
            Self::DispatchFailed => "dispatch_failed",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::GrpcStatus => "grpc_status",
            Self::BadResponse => "bad_response",
        }
    }

    /// Classifies a gRPC close (a non-zero status; `message` from `proxy_get_status`).
    pub fn from_grpc_status(status: u32, message: &[u8]) -> Self {
        match status {
            4 => Self::Timeout,
            14 if message == b"upstream request timeout" => Self::Timeout,
            14 => Self::Unavailable,
            _ => Self::GrpcStatus,
        }
    }

    /// Position in [`RlsError::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a global limit decided a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalResult {
    /// The service answered: `over_limit` when its overall code was `OVER_LIMIT`.
    Answered { code: u32, over_limit: bool },
    /// No usable answer; the failure mode decided.
    Failed { error: RlsError, detail: String },
}

/// The global limit that decided a stream, for the log, the metrics and the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalHit {
    pub limit_name: Arc<str>,
    pub domain: String,
    pub failure_mode: FailureMode,
    pub result: GlobalResult,
    /// Lower-cased headers for the reply: the service's, or computed from its statuses.
    pub headers: Vec<(String, String)>,
    /// `raw_body` of the service, when usable as the reply body.
    pub body: Option<Vec<u8>>,
    /// From the call to the answer, host clock.
    pub latency_ns: u64,
}

impl GlobalHit {
    pub fn answered(limit: &GlobalLimit, response: &RlsResponse, latency_ns: u64) -> Self {
        let over_limit = response.overall_code == rls::CODE_OVER_LIMIT;
        let body = (over_limit
            && !response.raw_body.is_empty()
            && response.raw_body.len() <= MAX_REPLY_BODY)
            .then(|| response.raw_body.clone());
        Self {
            limit_name: Arc::clone(&limit.name),
            domain: limit.domain.clone(),
            failure_mode: limit.failure_mode,
            result: GlobalResult::Answered {
                code: response.overall_code,
                over_limit,
            },
            headers: reply_headers(response, over_limit),
            body,
            latency_ns,
        }
    }

    pub fn failed(limit: &GlobalLimit, error: RlsError, detail: String, latency_ns: u64) -> Self {
        Self {
            limit_name: Arc::clone(&limit.name),
            domain: limit.domain.clone(),
            failure_mode: limit.failure_mode,
            result: GlobalResult::Failed { error, detail },
            headers: Vec::new(),
            body: None,
            latency_ns,
        }
    }

    /// Whether the request may go on.
    pub fn allowed(&self) -> bool {
        match &self.result {
            GlobalResult::Answered { over_limit, .. } => !over_limit,
            GlobalResult::Failed { .. } => self.failure_mode == FailureMode::Allow,
        }
    }

    pub fn over_limit(&self) -> bool {
        matches!(
            self.result,
            GlobalResult::Answered {
                over_limit: true,
                ..
            }
        )
    }

    pub fn error(&self) -> Option<RlsError> {
        match &self.result {
            GlobalResult::Failed { error, .. } => Some(*error),
            GlobalResult::Answered { .. } => None,
        }
    }

    /// The reason code of the decision line.
    pub fn reason(&self) -> &'static str {
        match &self.result {
            GlobalResult::Answered {
                over_limit: true, ..
            } => "global_rate_limited",
            GlobalResult::Answered { .. } => "allowed",
            GlobalResult::Failed { .. } => match self.failure_mode {
                FailureMode::Deny => "rate_limit_service_error",
                FailureMode::Allow => "rate_limit_service_error_allowed",
            },
        }
    }

    /// The value of a reply header computed here, for the log.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The leading number of a reply header (`"10, 10;w=60"` gives 10).
    pub fn header_number(&self, name: &str) -> Option<u64> {
        self.header(name).and_then(leading_number)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn leading_number(text: &str) -> Option<u64> {
    let text = text.trim_start_matches(' ');
    let end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    text.get(..end)?.parse().ok()
}

/// The headers to send with a decision: the service's `response_headers_to_add` (Limitador's
/// style: it puts `X-RateLimit-*` there), lower-cased, with the unsafe ones dropped; when it sent
/// no `x-ratelimit-*`, the draft-03 headers Envoy computes from `statuses` (envoyproxy/ratelimit's
/// style). For a refusal, `retry-after` unless the service sent one: the longest
/// `duration_until_reset` of the over-limit statuses, else `x-ratelimit-reset`, at least 1 s.
fn reply_headers(response: &RlsResponse, over_limit: bool) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for (key, value) in &response.response_headers {
        let key = key.to_ascii_lowercase();
        let safe = !key.is_empty()
            && key.bytes().all(crate::protocol::is_tchar)
            && crate::protocol::http::is_valid_field_value(value.as_bytes())
            && key != "content-length"
            && key != "transfer-encoding"
            && key != "connection";
        if safe && headers.len() < MAX_COPIED_HEADERS {
            headers.push((key, value.clone()));
        }
    }
    if header(&headers, "x-ratelimit-limit").is_none() {
        draft03_headers(&response.statuses, &mut headers);
    }
    if over_limit && header(&headers, "retry-after").is_none() {
        let from_statuses = response
            .statuses
            .iter()
            .filter(|s| s.code == rls::CODE_OVER_LIMIT)
            .filter_map(|s| s.duration_until_reset)
            .map(|(secs, nanos)| u64::try_from(secs).unwrap_or(0) + u64::from(nanos > 0))
            .max();
        let from_reset = header(&headers, "x-ratelimit-reset").and_then(leading_number);
        if let Some(secs) = from_statuses.or(from_reset) {
            let mut value = String::new();
            push_uint(&mut value, secs.max(1));
            headers.push(("retry-after".to_string(), value));
        }
    }
    headers
}

/// Envoy's `enable_x_ratelimit_headers: DRAFT_VERSION_03`: the status with the fewest requests
/// remaining gives `x-ratelimit-remaining` and `-reset`; `x-ratelimit-limit` lists every limit.
fn draft03_headers(statuses: &[rls::DescriptorStatus], headers: &mut Vec<(String, String)>) {
    let mut winner: Option<&rls::DescriptorStatus> = None;
    let mut policies = String::new();
    for status in statuses {
        let Some(limit) = &status.current_limit else {
            continue;
        };
        if winner.is_none_or(|w| status.limit_remaining < w.limit_remaining) {
            winner = Some(status);
        }
        if let Some(window) = limit.window_seconds() {
            policies.push_str(", ");
            push_uint(&mut policies, u64::from(limit.requests_per_unit));
            policies.push_str(";w=");
            push_uint(&mut policies, window);
            if !limit.name.is_empty()
                && crate::protocol::http::is_valid_field_value(limit.name.as_bytes())
            {
                policies.push_str(";name=\"");
                policies.push_str(&limit.name.replace('"', "'"));
                policies.push('"');
            }
        }
    }
    let Some(winner) = winner else {
        return;
    };
    let mut value = String::new();
    let rpu = winner
        .current_limit
        .as_ref()
        .map_or(0, |l| l.requests_per_unit);
    push_uint(&mut value, u64::from(rpu));
    value.push_str(&policies);
    headers.push(("x-ratelimit-limit".to_string(), value));
    let mut value = String::new();
    push_uint(&mut value, u64::from(winner.limit_remaining));
    headers.push(("x-ratelimit-remaining".to_string(), value));
    if let Some((secs, _)) = winner.duration_until_reset {
        let mut value = String::new();
        push_uint(&mut value, u64::try_from(secs).unwrap_or(0));
        headers.push(("x-ratelimit-reset".to_string(), value));
    }
}

/// The smallest latency bound a duration falls under, in milliseconds (`None`: above all).
pub const LATENCY_BOUNDS_MS: [u64; 8] = [1, 5, 10, 25, 50, 100, 250, 1000];

/// How many of [`LATENCY_BOUNDS_MS`] are at least `latency_ns` (the cumulative buckets it
/// counts in, from the largest bound down; the `inf` bucket always counts).
pub fn latency_buckets(latency_ns: u64) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .filter(|bound| latency_ns <= **bound * 1_000_000)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::config::BucketParams;
    use crate::rls::{CurrentLimit, DescriptorStatus, Entry};
    use serde_json::json;

    fn spec() -> RateLimitSpec {
        RateLimitSpec {
            name: "openai".into(),
            key: vec![KeyAttribute::SourceNamespace, KeyAttribute::DestinationHost],
            params: BucketParams {
                max_tokens: 100,
                tokens_per_fill: 100,
                fill_interval_ns: 60 * NANOS_PER_SEC,
            },
            max_keys: 1,
        }
    }

    fn path() -> ConfigPath {
        ConfigPath::root()
            .field("rateLimits")
            .index(0)
            .field("global")
    }

    fn read(value: serde_json::Value) -> Result<GlobalLimit, ConfigError> {
        let json = crate::config::json::parse(value.to_string().as_bytes()).unwrap();
        GlobalConfig::read(&json, &path())?.validate(&path(), &spec())
    }

    const CLUSTER: &str = "outbound|8081||limitador.limitador.svc.cluster.local";

    #[test]
    fn defaults_and_default_descriptor() {
        let limit = read(json!({"cluster": CLUSTER, "domain": "egress"})).unwrap();
        assert_eq!(limit.timeout_ms, 20);
        assert_eq!(limit.failure_mode, FailureMode::Deny);
        assert_eq!((limit.max_value, limit.window_seconds), (100, 60));
        let keys: Vec<&str> = limit.descriptors[0]
            .iter()
            .map(|e| e.key.as_str())
            .collect();
        assert_eq!(keys, ["limit", "source.namespace", "destination.host"]);

        let attrs = Attributes {
            source_namespace: Some("ml".into()),
            ..Attributes::default()
        };
        let expected = rls::encode_request(
            "egress",
            &[vec![
                Entry {
                    key: "limit",
                    value: "openai",
                },
                Entry {
                    key: "source.namespace",
                    value: "ml",
                },
                Entry {
                    key: "destination.host",
                    value: "",
                },
            ]],
            1,
        );
        assert_eq!(limit.request(&attrs), expected);
    }

    #[test]
    fn descriptor_override() {
        let limit = read(
            json!({"cluster": "limitador", "domain": "egress", "failureMode": "allow",
            "timeoutMs": 250,
            "descriptors": [[{"key": "tier", "value": "gold"},
                             {"key": "ns", "attribute": "source.namespace"}]]}),
        )
        .unwrap();
        assert_eq!(limit.failure_mode, FailureMode::Allow);
        assert_eq!(limit.timeout_ms, 250);
        assert_eq!(
            limit.descriptors,
            vec![vec![
                DescriptorEntry {
                    key: "tier".into(),
                    value: EntryValue::Fixed("gold".into())
                },
                DescriptorEntry {
                    key: "ns".into(),
                    value: EntryValue::Attribute(KeyAttribute::SourceNamespace)
                },
            ]]
        );
    }

    #[test]
    fn errors_are_located() {
        let at = "rateLimits[0].global";
        let cases = [
            (json!({"cluster": "", "domain": "d"}), format!("{at}.cluster: \"\" is not an Envoy cluster name (1 to 255 printable characters, no spaces)")),
            (json!({"cluster": "a b", "domain": "d"}), format!("{at}.cluster: \"a b\" is not an Envoy cluster name (1 to 255 printable characters, no spaces)")),
            (json!({"cluster": "outbound|x||h", "domain": "d"}), format!("{at}.cluster: \"outbound|x||h\" is not an Istio cluster name (expected outbound|<port>|<subset>|<host>, e.g. outbound|8081||limitador.limitador.svc.cluster.local)")),
            (json!({"cluster": "hxhx", "domain": "d"}), format!("{at}.cluster: \"hxhx\" would be read by Envoy as a serialized GrpcService, not as a cluster name")),
            (json!({"cluster": CLUSTER, "domain": "a'b"}), format!("{at}.domain: \"a'b\": expected 1 to 255 characters, letters, digits, '-', '_', '.' or '/'")),
            (json!({"cluster": CLUSTER, "domain": "d", "timeoutMs": 0}), format!("{at}.timeoutMs: 0 is outside 1..=60000")),
            (json!({"cluster": CLUSTER, "domain": "d", "failureMode": "open"}), format!("{at}.failureMode: \"open\" is not one of deny, allow")),
            (json!({"cluster": CLUSTER, "domain": "d", "descriptors": []}), format!("{at}.descriptors: must hold 1 to 8 descriptors")),
            (json!({"cluster": CLUSTER, "domain": "d", "descriptors": [[]]}), format!("{at}.descriptors[0]: must hold 1 to 16 entries")),
            (json!({"cluster": CLUSTER, "domain": "d", "descriptors": [[{"key": "k"}]]}), format!("{at}.descriptors[0][0]: an entry needs exactly one of `value` (fixed) or `attribute`")),
            (json!({"cluster": CLUSTER, "domain": "d", "descriptors": [[{"key": "k", "value": "it's"}]]}), format!("{at}.descriptors[0][0].value: \"it's\": expected 1 to 256 characters, no quotes, backslashes or control characters")),
            (json!({"cluster": CLUSTER, "domain": "d", "descriptors": [[{"key": "k", "attribute": "source.user"}]]}), format!("{at}.descriptors[0][0].attribute: unknown key attribute \"source.user\"; expected one of source.principal, source.namespace, source.ip, destination.host, destination.port, connection.sni, request.headers[<name>]")),
            (json!({"cluster": CLUSTER, "domain": "d", "descriptors": [[{"key": "k", "value": "a"}, {"key": "k", "value": "b"}]]}), format!("{at}.descriptors[0][1].key: \"k\" is used twice in this descriptor")),
        ];
        for (value, expected) in cases {
            assert_eq!(read(value).unwrap_err().to_string(), expected);
        }
        let err = read(json!({"cluster": CLUSTER, "domain": "d", "timeout": 5})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{at}.timeout: unknown field")),
            "{err}"
        );
        let err = read(json!({"cluster": CLUSTER})).unwrap_err();
        assert!(err.to_string().contains("missing field `domain`"), "{err}");
    }

    fn limit() -> GlobalLimit {
        read(json!({"cluster": CLUSTER, "domain": "egress"})).unwrap()
    }

    #[test]
    fn limitador_headers_are_copied_lower_cased_with_retry_after_from_the_reset() {
        let response = RlsResponse {
            overall_code: rls::CODE_OVER_LIMIT,
            response_headers: vec![
                ("X-RateLimit-Limit".into(), "2, 2;w=60".into()),
                ("X-RateLimit-Remaining".into(), "0".into()),
                ("X-RateLimit-Reset".into(), "59".into()),
                ("Bad Header".into(), "x".into()),
                ("x-injected".into(), "a\r\nset-cookie: x".into()),
                ("content-length".into(), "9".into()),
            ],
            ..Default::default()
        };
        let hit = GlobalHit::answered(&limit(), &response, 0);
        assert!(!hit.allowed());
        let headers: Vec<(&str, &str)> = hit
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            headers,
            vec![
                ("x-ratelimit-limit", "2, 2;w=60"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "59"),
                ("retry-after", "59"),
            ]
        );
        assert_eq!(hit.header_number("x-ratelimit-limit"), Some(2));
    }

    #[test]
    fn statuses_give_draft03_headers_and_retry_after() {
        let response = RlsResponse {
            overall_code: rls::CODE_OVER_LIMIT,
            statuses: vec![
                DescriptorStatus {
                    code: rls::CODE_OK,
                    current_limit: Some(CurrentLimit {
                        requests_per_unit: 1000,
                        unit: 3,
                        name: String::new(),
                    }),
                    limit_remaining: 998,
                    duration_until_reset: Some((1200, 0)),
                },
                DescriptorStatus {
                    code: rls::CODE_OVER_LIMIT,
                    current_limit: Some(CurrentLimit {
                        requests_per_unit: 10,
                        unit: 2,
                        name: "per-ip".into(),
                    }),
                    limit_remaining: 0,
                    duration_until_reset: Some((41, 500_000_000)),
                },
            ],
            raw_body: b"slow down\n".to_vec(),
            ..Default::default()
        };
        let hit = GlobalHit::answered(&limit(), &response, 0);
        assert_eq!(
            hit.header("x-ratelimit-limit"),
            Some("10, 1000;w=3600, 10;w=60;name=\"per-ip\"")
        );
        assert_eq!(hit.header("x-ratelimit-remaining"), Some("0"));
        assert_eq!(hit.header("x-ratelimit-reset"), Some("41"));
        assert_eq!(hit.header("retry-after"), Some("42"));
        assert_eq!(hit.body.as_deref(), Some(&b"slow down\n"[..]));
        assert_eq!(hit.reason(), "global_rate_limited");
    }

    #[test]
    fn any_code_but_over_limit_allows_and_failures_follow_the_mode() {
        for code in [rls::CODE_UNKNOWN, rls::CODE_OK, 7] {
            let hit = GlobalHit::answered(
                &limit(),
                &RlsResponse {
                    overall_code: code,
                    ..Default::default()
                },
                0,
            );
            assert!(hit.allowed(), "code {code}");
            assert_eq!(hit.header("retry-after"), None);
        }
        let mut l = limit();
        let hit = GlobalHit::failed(&l, RlsError::Timeout, "timed out".into(), 0);
        assert!(!hit.allowed());
        assert_eq!(hit.reason(), "rate_limit_service_error");
        l.failure_mode = FailureMode::Allow;
        let hit = GlobalHit::failed(&l, RlsError::Timeout, "timed out".into(), 0);
        assert!(hit.allowed());
        assert_eq!(hit.reason(), "rate_limit_service_error_allowed");
    }

    #[test]
    fn grpc_statuses_are_classified() {
        assert_eq!(
            RlsError::from_grpc_status(14, b"upstream request timeout"),
            RlsError::Timeout
        );
        assert_eq!(RlsError::from_grpc_status(4, b""), RlsError::Timeout);
        assert_eq!(
            RlsError::from_grpc_status(14, b"no healthy upstream"),
            RlsError::Unavailable
        );
        assert_eq!(RlsError::from_grpc_status(13, b""), RlsError::GrpcStatus);
        for (i, e) in RlsError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
    }

    #[test]
    fn latency_buckets_are_cumulative() {
        assert_eq!(latency_buckets(0), 8);
        assert_eq!(latency_buckets(1_000_000), 8);
        assert_eq!(latency_buckets(3_000_000), 7);
        assert_eq!(latency_buckets(1_000_000_001), 0);
    }
}
