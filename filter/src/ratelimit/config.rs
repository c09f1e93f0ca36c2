//! `rateLimits` entries: the JSON shape, its validation, and the compiled form the limiter uses.

use std::fmt;

use crate::config::read::ObjectReader;
pub use crate::config::ConfigError;
use crate::config::{ConfigErrorKind, ConfigPath, Json, RuleSpec};
use crate::text::quote;

/// Envoy's local_ratelimit refuses fill intervals below 50ms; so do we.
pub const MIN_FILL_INTERVAL_NS: u64 = 50 * NANOS_PER_MILLI;
/// Upper bound that keeps all bucket arithmetic far from overflow; longer windows are not
/// what a token bucket on a gateway is for.
pub const MAX_FILL_INTERVAL_NS: u64 = 24 * 3600 * NANOS_PER_SEC;
pub const DEFAULT_MAX_KEYS: u32 = 10_000;
/// Every bucket set is one shared-data value that lives until the VM is gone; this bounds the
/// memory one limit can pin in the gateway.
pub const MAX_MAX_KEYS: u32 = 1_000_000;
const MAX_NAME_LEN: usize = 64;

pub(crate) const NANOS_PER_MILLI: u64 = 1_000_000;
pub(crate) const NANOS_PER_SEC: u64 = 1_000_000_000;

#[inline(never)]
pub(crate) fn invalid(path: ConfigPath, message: impl Into<String>) -> ConfigError {
    ConfigError::new(path, ConfigErrorKind::InvalidValue(message.into()))
}

/// One entry of `rateLimits`, as read (strictly: unknown fields are refused).
#[derive(Debug, Clone, Default)]
pub struct RateLimitConfig {
    pub name: String,
    /// Which traffic the limit applies to (`from`/`to`/`when`, as a policy rule). Absent: all.
    pub match_rule: Option<RuleSpec>,
    /// Attributes whose values split the traffic into buckets; empty: one bucket.
    pub key: Vec<String>,
    pub max_tokens: u32,
    /// Default 1 (a global limit: `maxTokens`, the whole window).
    pub tokens_per_fill: Option<u32>,
    pub fill_interval: String,
    /// Default [`DEFAULT_MAX_KEYS`]; a global limit keeps no buckets here.
    pub max_keys: Option<u32>,
    /// Decided by a rate limit service shared by every replica (see [`super::global`]).
    pub global: Option<super::global::GlobalConfig>,
}

impl RateLimitConfig {
    const FIELDS: &'static [&'static str] = &[
        "name",
        "match",
        "key",
        "maxTokens",
        "tokensPerFill",
        "fillInterval",
        "maxKeys",
        "global",
    ];

    /// Reads one entry at `path` (e.g. `rateLimits[1]`).
    #[inline(never)]
    pub fn read(value: &Json, path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut obj = ObjectReader::new(value, path, Self::FIELDS)?;
        let mut config = Self {
            name: obj.required_string("name")?,
            ..Self::default()
        };
        config.match_rule = obj.object("match", RuleSpec::read)?;
        config.key = obj.strings("key")?.unwrap_or_default();
        config.max_tokens = obj.required_u32("maxTokens")?;
        config.tokens_per_fill = obj.u32("tokensPerFill")?;
        config.fill_interval = obj.required_string("fillInterval")?;
        config.max_keys = obj.u32("maxKeys")?;
        config.global = obj.object("global", super::global::GlobalConfig::read)?;
        obj.finish()?;
        Ok(config)
    }

    /// Parses one entry from JSON text (errors are located from the document root).
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        Self::read(&crate::config::json::parse(json)?, &ConfigPath::root())
    }
}

/// An attribute that splits buckets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyAttribute {
    SourcePrincipal,
    SourceNamespace,
    SourceIp,
    DestinationHost,
    DestinationPort,
    ConnectionSni,
    /// `request.headers[<name>]`; the name is stored lower-cased (header names are
    /// case-insensitive and Envoy hands them over lower-cased).
    RequestHeader(String),
}

impl KeyAttribute {
    /// The connection properties a bucket key of this attribute needs read. A request without
    /// a host falls back to the SNI for `destination.host`.
    pub fn reads(&self) -> crate::attributes::Reads {
        use crate::attributes::Reads;
        match self {
            Self::SourceIp => Reads::SOURCE,
            Self::DestinationPort => Reads::DESTINATION,
            Self::DestinationHost | Self::ConnectionSni => Reads::SNI,
            Self::SourcePrincipal | Self::SourceNamespace | Self::RequestHeader(_) => Reads::NONE,
        }
    }

    #[inline(never)]
    pub fn parse(text: &str) -> Result<KeyAttribute, String> {
        Ok(match text {
            "source.principal" => KeyAttribute::SourcePrincipal,
            "source.namespace" => KeyAttribute::SourceNamespace,
            "source.ip" => KeyAttribute::SourceIp,
            "destination.host" => KeyAttribute::DestinationHost,
            "destination.port" => KeyAttribute::DestinationPort,
            "connection.sni" => KeyAttribute::ConnectionSni,
            _ => {
                let name = text
                    .strip_prefix("request.headers[")
                    .and_then(|rest| rest.strip_suffix(']'))
                    .ok_or_else(|| {
                        format!(
                            "unknown key attribute {}; expected one of source.principal, \
                             source.namespace, source.ip, destination.host, destination.port, \
                             connection.sni, request.headers[<name>]",
                            quote(text)
                        )
                    })?;
                if name.is_empty() || !name.bytes().all(crate::protocol::is_tchar) {
                    return Err(format!(
                        "{}: {} is not a valid header name",
                        quote(text),
                        quote(name)
                    ));
                }
                KeyAttribute::RequestHeader(name.to_ascii_lowercase())
            }
        })
    }
}

impl fmt::Display for KeyAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAttribute::SourcePrincipal => f.write_str("source.principal"),
            KeyAttribute::SourceNamespace => f.write_str("source.namespace"),
            KeyAttribute::SourceIp => f.write_str("source.ip"),
            KeyAttribute::DestinationHost => f.write_str("destination.host"),
            KeyAttribute::DestinationPort => f.write_str("destination.port"),
            KeyAttribute::ConnectionSni => f.write_str("connection.sni"),
            KeyAttribute::RequestHeader(name) => write!(f, "request.headers[{name}]"),
        }
    }
}

/// Token-bucket parameters, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketParams {
    pub max_tokens: u32,
    pub tokens_per_fill: u32,
    pub fill_interval_ns: u64,
}

/// A validated `rateLimits` entry (without its `match`, which the engine compiles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSpec {
    pub name: String,
    pub key: Vec<KeyAttribute>,
    pub params: BucketParams,
    pub max_keys: u32,
}

impl RateLimitConfig {
    /// Checks every field; `path` locates this entry (e.g. `rateLimits[1]`).
    pub fn validate(&self, path: &ConfigPath) -> Result<RateLimitSpec, ConfigError> {
        let at = |field: &str| path.field(field);
        validate_name(&self.name).map_err(|m| invalid(at("name"), m))?;

        let mut key = Vec::with_capacity(self.key.len());
        for (i, text) in self.key.iter().enumerate() {
            let here = at("key").index(i);
            let attr = KeyAttribute::parse(text).map_err(|m| invalid(here.clone(), m))?;
            if key.contains(&attr) {
                return Err(invalid(here, format!("{} is listed twice", quote(text))));
            }
            key.push(attr);
        }

        if self.max_tokens == 0 {
            return Err(invalid(at("maxTokens"), "must be at least 1"));
        }
        let tokens_per_fill = match (self.tokens_per_fill, &self.global) {
            (Some(0), _) => return Err(invalid(at("tokensPerFill"), "must be at least 1")),
            (Some(n), Some(_)) if n != self.max_tokens => {
                return Err(invalid(
                    at("tokensPerFill"),
                    "a global limit counts maxTokens requests per fillInterval window; \
                     leave tokensPerFill out",
                ))
            }
            (Some(n), _) => n,
            (None, Some(_)) => self.max_tokens,
            (None, None) => 1,
        };
        if self.global.is_some() && self.max_keys.is_some() {
            return Err(invalid(
                at("maxKeys"),
                "a global limit keeps no buckets in the gateway; leave maxKeys out",
            ));
        }
        let max_keys = self.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
        let fill_interval_ns =
            parse_duration(&self.fill_interval).map_err(|m| invalid(at("fillInterval"), m))?;
        if fill_interval_ns < MIN_FILL_INTERVAL_NS {
            return Err(invalid(
                at("fillInterval"),
                format!("{} is below the 50ms minimum", quote(&self.fill_interval)),
            ));
        }
        if fill_interval_ns > MAX_FILL_INTERVAL_NS {
            return Err(invalid(
                at("fillInterval"),
                format!("{} is above the 24h maximum", quote(&self.fill_interval)),
            ));
        }
        if self.global.is_some() && fill_interval_ns % NANOS_PER_SEC != 0 {
            return Err(invalid(
                at("fillInterval"),
                format!(
                    "{}: a global limit's window is a whole number of seconds",
                    quote(&self.fill_interval)
                ),
            ));
        }
        if max_keys == 0 || max_keys > MAX_MAX_KEYS {
            return Err(invalid(
                at("maxKeys"),
                format!("{max_keys} is outside 1..={MAX_MAX_KEYS}"),
            ));
        }
        Ok(RateLimitSpec {
            name: self.name.clone(),
            key,
            params: BucketParams {
                max_tokens: self.max_tokens,
                tokens_per_fill,
                fill_interval_ns,
            },
            max_keys,
        })
    }
}

/// The error for a `global` limit attached to a tier policy: a rate limit service is asked for
/// the top-level `rateLimits` only.
pub fn global_limit_not_top_level(path: &ConfigPath) -> ConfigError {
    invalid(
        path.field("global"),
        "a global limit is only supported in the top-level `rateLimits`, not on a tier policy"
            .to_string(),
    )
}

/// The error for a limit named like the earlier one `first_name` at `first`, or with the same
/// Prometheus form (`-` becomes `_`), which would make the two one metric.
pub fn name_already_used(
    name: &str,
    path: &ConfigPath,
    first_name: &str,
    first: &ConfigPath,
) -> ConfigError {
    let why = if first_name == name {
        "is already used by"
    } else {
        "gives the same Prometheus metric (`-` becomes `_`) as"
    };
    invalid(
        path.field("name"),
        format!("{} {why} {first}", crate::text::quote(name)),
    )
}

fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    // The name becomes part of shared-data keys, metric names and log lines. No `.`: a stat
    // name is split into tags at its dots (see `stat_name`).
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return Err(format!(
            "{} may contain only letters, digits, '-' and '_' (it becomes a segment of metric names)",
            crate::text::quote(name)
        ));
    }
    if let Some(why) = crate::stat_name::tag_extraction_clash(name) {
        return Err(format!("{}: {why}", crate::text::quote(name)));
    }
    Ok(())
}

/// Parses a duration such as `"1s"`, `"500ms"`, `"1m"`, `"1.5s"` or `"1m30s"` into nanoseconds.
/// Units: `ms`, `s`, `m`, `h`. Errors name the input.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{} is not a duration (examples: \"500ms\", \"1s\", \"1m30s\")",
            quote(text)
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    let bytes = text.as_bytes();
    let mut pos = 0usize;
    let mut total: u128 = 0;
    while pos < bytes.len() {
        let int_start = pos;
        while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        let int_part = text.get(int_start..pos).ok_or_else(bad)?;
        let mut frac_part = "";
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            let frac_start = pos;
            while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
                pos += 1;
            }
            frac_part = text.get(frac_start..pos).ok_or_else(bad)?;
            if frac_part.is_empty() {
                return Err(bad());
            }
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_start = pos;
        while bytes.get(pos).is_some_and(u8::is_ascii_alphabetic) {
            pos += 1;
        }
        let unit_ns: u128 = match text.get(unit_start..pos).ok_or_else(bad)? {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("{} has no unit (use ms, s, m or h)", quote(text))),
            other => {
                return Err(format!(
                    "{}: unknown unit {} (use ms, s, m or h)",
                    quote(text),
                    quote(other)
                ))
            }
        };
        // Long digit strings would overflow; nothing sensible needs more than 12 digits.
        if int_part.len() > 12 || frac_part.len() > 9 {
            return Err(format!("{} is too long", quote(text)));
        }
        let int_value: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut part = int_value * unit_ns;
        if !frac_part.is_empty() {
            let frac_value: u128 = frac_part.parse().map_err(|_| bad())?;
            let scale = 10u128.pow(frac_part.len() as u32);
            part += frac_value * unit_ns / scale;
        }
        total = total.saturating_add(part);
    }
    u64::try_from(total).map_err(|_| format!("{} is too long", quote(text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: serde_json::Value) -> RateLimitConfig {
        RateLimitConfig::from_json(value.to_string().as_bytes()).expect("test config parses")
    }

    fn at(i: usize) -> ConfigPath {
        ConfigPath::root().field("rateLimits").index(i)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(1_000_000_000));
        assert_eq!(parse_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_duration("1m"), Ok(60_000_000_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration(".25s"), Ok(250_000_000));
        for bad in [
            "",
            "1",
            "s",
            "1x",
            "1.s",
            "-1s",
            "1 s",
            "1s ",
            "9999999999999s",
            "1ns",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn full_entry_validates_with_defaults() {
        let spec = config(json!({
            "name": "per-principal",
            "match": {"to": [{"operation": {"hosts": ["api.example.com"]}}]},
            "key": ["source.principal", "request.headers[X-Tenant]"],
            "maxTokens": 20,
            "tokensPerFill": 10,
            "fillInterval": "1s"
        }))
        .validate(&at(0))
        .unwrap();
        assert_eq!(spec.name, "per-principal");
        assert_eq!(
            spec.key,
            vec![
                KeyAttribute::SourcePrincipal,
                KeyAttribute::RequestHeader("x-tenant".into())
            ]
        );
        assert_eq!(
            spec.params,
            BucketParams {
                max_tokens: 20,
                tokens_per_fill: 10,
                fill_interval_ns: 1_000_000_000
            }
        );
        assert_eq!(spec.max_keys, DEFAULT_MAX_KEYS);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = RateLimitConfig::from_json(
            json!({"name": "a", "maxTokens": 1, "fillInterval": "1s", "burst": 3})
                .to_string()
                .as_bytes(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("burst"), "{err}");
    }

    #[test]
    fn errors_carry_the_json_path() {
        let cases = [
            (
                json!({"name": "a", "maxTokens": 1, "fillInterval": "10ms"}),
                "rateLimits[1].fillInterval: \"10ms\" is below the 50ms minimum",
            ),
            (
                json!({"name": "a", "maxTokens": 0, "fillInterval": "1s"}),
                "rateLimits[1].maxTokens: must be at least 1",
            ),
            (
                json!({"name": "a", "maxTokens": 1, "tokensPerFill": 0, "fillInterval": "1s"}),
                "rateLimits[1].tokensPerFill: must be at least 1",
            ),
            (
                json!({"name": "a b", "maxTokens": 1, "fillInterval": "1s"}),
                "rateLimits[1].name: \"a b\" may contain only letters, digits, '-' and '_' (it becomes a segment of metric names)",
            ),
            (
                json!({"name": "tls.per-source", "maxTokens": 1, "fillInterval": "1s"}),
                "rateLimits[1].name: \"tls.per-source\" may contain only letters, digits, '-' and '_' (it becomes a segment of metric names)",
            ),
            (
                json!({"name": "l7-cache", "maxTokens": 1, "fillInterval": "1s"}),
                "rateLimits[1].name: \"l7-cache\": Istio's default stats tag extractor (cache\\.(.+?)\\.) would rewrite the metric names it is part of",
            ),
            (
                json!({"name": "a", "maxTokens": 1, "fillInterval": "1s", "key": ["source.ip", "source.ip"]}),
                "rateLimits[1].key[1]: \"source.ip\" is listed twice",
            ),
            (
                json!({"name": "a", "maxTokens": 1, "fillInterval": "1s", "maxKeys": 0}),
                "rateLimits[1].maxKeys: 0 is outside 1..=1000000",
            ),
            (
                json!({"name": "a", "maxTokens": 1, "fillInterval": "25h"}),
                "rateLimits[1].fillInterval: \"25h\" is above the 24h maximum",
            ),
        ];
        for (value, expected) in cases {
            let err = config(value).validate(&at(1)).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
        let err = config(json!({"name": "a", "maxTokens": 1, "fillInterval": "1s",
                                "key": ["source.user"]}))
        .validate(&at(0))
        .unwrap_err();
        assert_eq!(err.path.as_str(), "rateLimits[0].key[0]");
        assert!(err
            .to_string()
            .contains("unknown key attribute \"source.user\""));
        let err = config(json!({"name": "a", "maxTokens": 1, "fillInterval": "1s",
                                "key": ["request.headers[bad header]"]}))
        .validate(&at(0))
        .unwrap_err();
        assert_eq!(err.path.as_str(), "rateLimits[0].key[0]");
    }

    #[test]
    fn global_limits_count_whole_windows() {
        let global = json!({"cluster": "limitador", "domain": "egress"});
        let spec = config(json!({"name": "g", "maxTokens": 100, "fillInterval": "1m",
                                 "global": global}))
        .validate(&at(0))
        .unwrap();
        assert_eq!(spec.params.tokens_per_fill, 100);
        let cases = [
            (
                json!({"name": "g", "maxTokens": 100, "tokensPerFill": 1, "fillInterval": "1m", "global": global}),
                "rateLimits[0].tokensPerFill: a global limit counts maxTokens requests per fillInterval window; leave tokensPerFill out",
            ),
            (
                json!({"name": "g", "maxTokens": 100, "maxKeys": 5, "fillInterval": "1m", "global": global}),
                "rateLimits[0].maxKeys: a global limit keeps no buckets in the gateway; leave maxKeys out",
            ),
            (
                json!({"name": "g", "maxTokens": 100, "fillInterval": "1500ms", "global": global}),
                "rateLimits[0].fillInterval: \"1500ms\": a global limit's window is a whole number of seconds",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(
                config(value).validate(&at(0)).unwrap_err().to_string(),
                expected
            );
        }
    }

    #[test]
    fn names_must_be_unique() {
        // Names key the shared data: two limits with one name would share buckets.
        let limits = json!([
            {"name": "a", "maxTokens": 1, "fillInterval": "1s"},
            {"name": "b", "maxTokens": 1, "fillInterval": "1s"},
            {"name": "a", "maxTokens": 2, "fillInterval": "1s"},
        ]);
        let compile = |limits: &serde_json::Value| {
            let config = json!({ "rateLimits": limits }).to_string();
            crate::CompiledConfig::from_json(config.as_bytes())
        };
        let err = compile(&limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rateLimits[2].name: \"a\" is already used by rateLimits[0]"
        );
        let first_two = json!([limits[0].clone(), limits[1].clone()]);
        assert_eq!(compile(&first_two).unwrap().rate_limits.len(), 2);
    }

    #[test]
    fn key_attributes_round_trip_through_display() {
        for text in [
            "source.principal",
            "source.namespace",
            "source.ip",
            "destination.host",
            "destination.port",
            "connection.sni",
            "request.headers[x-api-key]",
        ] {
            assert_eq!(KeyAttribute::parse(text).unwrap().to_string(), text);
        }
    }
}
