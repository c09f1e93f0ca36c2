//! One rule (`from`/`to`/`when`) compiled into matchers, for HTTP requests and TCP connections.

use crate::attributes::{Attributes, Reads};
use crate::config::{
    ConditionSpec, ConfigError, ConfigErrorKind, ConfigPath, OperationSpec, RuleSpec, Scalar,
    SourceSpec,
};
use crate::matchers::{
    parse_port, CidrSet, HostMatcher, HostPattern, IpBlock, PathMatcher, PathPattern, PortSet,
    StringMatcher, StringPattern,
};

/// What a rule does with HTTP-only fields (hosts, methods, paths, request headers) when the
/// traffic is a TCP connection, following Istio: in ALLOW policies the whole rule never matches
/// (fewer connections allowed); in DENY and AUDIT policies only that field is ignored (the rule
/// matches more widely).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpOnlyOnTcp {
    DropRule,
    IgnoreField,
}

/// The attribute a check looks at, with its compiled matcher.
#[derive(Debug, Clone)]
pub enum FieldMatcher {
    Principal(StringMatcher),
    Namespace(StringMatcher),
    SourceIp(CidrSet),
    RemoteIp(CidrSet),
    DestinationIp(CidrSet),
    DestinationPort(PortSet),
    Sni(HostMatcher),
    Host(HostMatcher),
    Method(StringMatcher),
    Path(PathMatcher),
    Header(Box<str>, StringMatcher),
    /// `connection.protocol`, `connection.tls_version`, `connection.alpn`: facts from
    /// inspecting the connection (see `protocol`).
    ConnectionProtocol(StringMatcher),
    TlsVersion(StringMatcher),
    /// Matches when any offered ALPN protocol does; unknown when none was offered.
    Alpn(StringMatcher),
}

impl FieldMatcher {
    pub fn is_http_only(&self) -> bool {
        matches!(
            self,
            Self::Host(_) | Self::Method(_) | Self::Path(_) | Self::Header(..)
        )
    }

    /// `None` when the attribute is unknown for this request.
    fn matches(&self, attrs: &Attributes) -> Option<bool> {
        Some(match self {
            Self::Principal(m) => m.matches(attrs.source_principal.as_deref()?),
            Self::Namespace(m) => m.matches(attrs.source_namespace.as_deref()?),
            Self::SourceIp(m) => m.contains(attrs.source_ip?),
            Self::RemoteIp(m) => m.contains(attrs.remote_ip?),
            Self::DestinationIp(m) => m.contains(attrs.destination_ip?),
            Self::DestinationPort(m) => m.contains(attrs.destination_port?),
            Self::Sni(m) => m.matches(attrs.sni.as_deref()?),
            Self::Host(m) => m.matches(attrs.host()?),
            Self::Method(m) => m.matches(attrs.method()?),
            Self::Path(m) => m.matches(attrs.path()?),
            Self::Header(name, m) => m.matches(attrs.header(name)?),
            Self::ConnectionProtocol(m) => m.matches(attrs.connection_protocol?),
            Self::TlsVersion(m) => m.matches(attrs.tls_version?),
            Self::Alpn(m) => {
                if attrs.alpn.is_empty() {
                    return None;
                }
                attrs.alpn.iter().any(|a| m.matches(a))
            }
        })
    }

    /// The connection properties this field needs read.
    pub fn reads(&self) -> Reads {
        match self {
            Self::SourceIp(_) | Self::RemoteIp(_) => Reads::SOURCE,
            Self::DestinationIp(_) | Self::DestinationPort(_) => Reads::DESTINATION,
            Self::Sni(_) => Reads::SNI,
            Self::ConnectionProtocol(_) => Reads::PROTOCOL,
            _ => Reads::NONE,
        }
    }

    /// Reads facts only known after the connection's first bytes were inspected.
    pub fn needs_inspection(&self) -> bool {
        matches!(
            self,
            Self::ConnectionProtocol(_) | Self::TlsVersion(_) | Self::Alpn(_)
        )
    }

    /// For `explain`: the attribute this field reads (named as in `when` keys and in the
    /// decision line), and the `from`/`to` fields it comes from, positive and negated.
    fn names(&self) -> [&'static str; 3] {
        match self {
            Self::Principal(_) => ["source.principal", "principals", "notPrincipals"],
            Self::Namespace(_) => ["source.namespace", "namespaces", "notNamespaces"],
            Self::SourceIp(_) => ["source.ip", "ipBlocks", "notIpBlocks"],
            Self::RemoteIp(_) => ["remote.ip", "remoteIpBlocks", "notRemoteIpBlocks"],
            Self::DestinationIp(_) => ["destination.ip", "", ""],
            Self::DestinationPort(_) => ["destination.port", "ports", "notPorts"],
            Self::Sni(_) => ["connection.sni", "", ""],
            Self::Host(_) => ["request.host", "hosts", "notHosts"],
            Self::Method(_) => ["request.method", "methods", "notMethods"],
            Self::Path(_) => ["request.normalized_path", "paths", "notPaths"],
            Self::Header(..) => ["request.headers", "", ""],
            Self::ConnectionProtocol(_) => ["connection.protocol", "", ""],
            Self::TlsVersion(_) => ["connection.tls_version", "", ""],
            Self::Alpn(_) => ["connection.alpn", "", ""],
        }
    }
}

/// One field of a source, operation or condition: `principals` (positive) or `notPrincipals`
/// (negated). A negated check on an unknown attribute passes, as Envoy's `not_id` does.
#[derive(Debug, Clone)]
pub struct Check {
    pub field: FieldMatcher,
    pub negated: bool,
}

impl Check {
    pub fn matches(&self, attrs: &Attributes) -> bool {
        match self.field.matches(attrs) {
            Some(matched) => matched != self.negated,
            None => self.negated,
        }
    }
}

fn all(checks: &[Check], attrs: &Attributes) -> bool {
    checks.iter().all(|c| c.matches(attrs))
}

impl Check {
    /// Which check fails, for `explain`: the field, then the attribute in parentheses (its
    /// value is in the decision line), e.g. `hosts (request.host)`,
    /// `when notValues (request.headers[x-team])`.
    fn describe_miss(&self, in_condition: bool, out: &mut String) {
        let [attribute, positive, negative] = self.field.names();
        out.push_str(match (in_condition, self.negated) {
            (true, true) => "when notValues",
            (true, false) => "when values",
            (false, true) => negative,
            (false, false) => positive,
        });
        out.push_str(" (");
        out.push_str(attribute);
        if let FieldMatcher::Header(header, _) = &self.field {
            out.push('[');
            out.push_str(header);
            out.push(']');
        }
        out.push(')');
    }
}

/// `from` or `to` entries of which none matched: the first failing check of each.
fn entries_miss(list: &str, entries: &[Vec<Check>], attrs: &Attributes) -> String {
    let mut out = String::new();
    for (i, checks) in entries.iter().enumerate() {
        if let Some(check) = checks.iter().find(|c| !c.matches(attrs)) {
            if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str(list);
            out.push('[');
            crate::text::push_uint(&mut out, i as u64);
            out.push_str("].");
            check.describe_miss(false, &mut out);
        }
    }
    out
}

/// A compiled rule: some `from` entry, some `to` entry and every `when` condition must match;
/// an empty list matches anything.
#[derive(Debug, Clone, Default)]
pub struct RuleMatcher {
    from: Vec<Vec<Check>>,
    to: Vec<Vec<Check>>,
    when: Vec<Check>,
}

impl RuleMatcher {
    pub fn matches(&self, attrs: &Attributes) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| all(s, attrs)))
            && (self.to.is_empty() || self.to.iter().any(|o| all(o, attrs)))
            && all(&self.when, attrs)
    }

    /// Why the rule does not match `attrs` (the first part that fails: `from`, `to`, then
    /// `when`), or `None` when it matches. Uses the same checks as [`RuleMatcher::matches`].
    pub fn miss(&self, attrs: &Attributes) -> Option<String> {
        if !self.from.is_empty() && !self.from.iter().any(|s| all(s, attrs)) {
            return Some(entries_miss("from", &self.from, attrs));
        }
        if !self.to.is_empty() && !self.to.iter().any(|o| all(o, attrs)) {
            return Some(entries_miss("to", &self.to, attrs));
        }
        let check = self.when.iter().find(|c| !c.matches(attrs))?;
        let mut out = String::new();
        check.describe_miss(true, &mut out);
        Some(out)
    }

    /// Every check of the rule: sources, operations, conditions.
    fn checks(&self) -> impl Iterator<Item = &Check> {
        self.from
            .iter()
            .chain(self.to.iter())
            .flatten()
            .chain(self.when.iter())
    }

    /// Some check reads `connection.protocol`, `connection.tls_version` or `connection.alpn`.
    pub fn needs_inspection(&self) -> bool {
        self.checks().any(|c| c.field.needs_inspection())
    }

    /// The connection properties some check of the rule needs read.
    pub fn reads(&self) -> Reads {
        self.checks()
            .fold(Reads::NONE, |reads, c| reads | c.field.reads())
    }

    fn has_http_only(&self) -> bool {
        self.checks().any(|c| c.field.is_http_only())
    }

    /// Removes the HTTP-only checks (a TCP connection has none of those attributes).
    fn drop_http_only(&mut self) {
        let keep = |check: &Check| !check.field.is_http_only();
        for checks in self.from.iter_mut().chain(self.to.iter_mut()) {
            checks.retain(keep);
        }
        self.when.retain(keep);
    }

    /// Names (lower case) of the request headers this rule reads.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.checks().filter_map(|c| match &c.field {
            FieldMatcher::Header(name, _) => Some(name.as_ref()),
            _ => None,
        })
    }
}

/// A rule compiled for both kinds of traffic, plus the host names that can serve as an index
/// key (every request the rule matches has one of them).
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub http: RuleMatcher,
    /// `None`: the rule never matches TCP connections.
    pub tcp: Option<RuleMatcher>,
    /// Set when every `to` operation requires one of these hosts.
    pub host_keys: Option<Vec<HostPattern>>,
    /// Set when a `when` condition requires one of these SNI values.
    pub sni_keys: Option<Vec<HostPattern>>,
}

fn invalid(path: ConfigPath, message: impl ToString) -> ConfigError {
    ConfigError::new(path, ConfigErrorKind::InvalidValue(message.to_string()))
}

/// Parses a list field; an absent or empty list is `None` (Istio treats both as unset).
fn parse_list<T, E: ToString>(
    values: &Option<Vec<String>>,
    path: &ConfigPath,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<Vec<T>>, ConfigError> {
    let Some(values) = values.as_ref().filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let mut parsed = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        if value.is_empty() {
            return Err(ConfigError::new(path.index(i), ConfigErrorKind::EmptyValue));
        }
        parsed.push(parse(value).map_err(|e| invalid(path.index(i), e))?);
    }
    Ok(Some(parsed))
}

#[inline(never)]
fn parse_ports(
    values: &Option<Vec<Scalar>>,
    path: &ConfigPath,
) -> Result<Option<Vec<u16>>, ConfigError> {
    let Some(values) = values.as_ref().filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let mut ports = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        if value.text.is_empty() {
            return Err(ConfigError::new(path.index(i), ConfigErrorKind::EmptyValue));
        }
        let port = parse_port(&value.text).map_err(|_| {
            ConfigError::new(
                path.index(i),
                ConfigErrorKind::InvalidPort(format!("{} is not a port", value.quoted())),
            )
        })?;
        ports.push(port);
    }
    Ok(Some(ports))
}

// Function pointers rather than closures: one copy of each helper in the `.wasm`, not one per field.
#[inline(never)]
fn string_check(
    values: &Option<Vec<String>>,
    path: &ConfigPath,
    negated: bool,
    make: fn(StringMatcher) -> FieldMatcher,
) -> Result<Option<Check>, ConfigError> {
    Ok(
        parse_list(values, path, StringPattern::parse)?.map(|patterns| Check {
            field: make(StringMatcher::new(&patterns)),
            negated,
        }),
    )
}

#[inline(never)]
fn cidr_check(
    values: &Option<Vec<String>>,
    path: &ConfigPath,
    negated: bool,
    make: fn(CidrSet) -> FieldMatcher,
) -> Result<Option<Check>, ConfigError> {
    Ok(
        parse_list(values, path, IpBlock::parse)?.map(|blocks| Check {
            field: make(CidrSet::new(&blocks)),
            negated,
        }),
    )
}

/// A `from.source` field: its values, its name, whether it is a `not` field, its matcher.
type SourceField<'a, M> = (
    &'a Option<Vec<String>>,
    &'a str,
    bool,
    fn(M) -> FieldMatcher,
);

#[inline(never)]
fn compile_source(spec: &SourceSpec, path: &ConfigPath) -> Result<Vec<Check>, ConfigError> {
    let unsupported = [
        ("requestPrincipals", &spec.request_principals),
        ("notRequestPrincipals", &spec.not_request_principals),
        ("serviceAccounts", &spec.service_accounts),
        ("notServiceAccounts", &spec.not_service_accounts),
        ("trustDomains", &spec.trust_domains),
        ("notTrustDomains", &spec.not_trust_domains),
    ];
    for (name, value) in unsupported {
        if value.is_some() {
            return Err(ConfigError::new(
                path.field(name),
                ConfigErrorKind::Unsupported(name.to_string()),
            ));
        }
    }
    // Loops over tables rather than one call per field: smaller `.wasm`.
    let mut checks = Vec::new();
    let strings: [SourceField<StringMatcher>; 4] = [
        (
            &spec.principals,
            "principals",
            false,
            FieldMatcher::Principal,
        ),
        (
            &spec.not_principals,
            "notPrincipals",
            true,
            FieldMatcher::Principal,
        ),
        (
            &spec.namespaces,
            "namespaces",
            false,
            FieldMatcher::Namespace,
        ),
        (
            &spec.not_namespaces,
            "notNamespaces",
            true,
            FieldMatcher::Namespace,
        ),
    ];
    for (values, name, negated, make) in strings {
        checks.extend(string_check(values, &path.field(name), negated, make)?);
    }
    let cidrs: [SourceField<CidrSet>; 4] = [
        (&spec.ip_blocks, "ipBlocks", false, FieldMatcher::SourceIp),
        (
            &spec.not_ip_blocks,
            "notIpBlocks",
            true,
            FieldMatcher::SourceIp,
        ),
        (
            &spec.remote_ip_blocks,
            "remoteIpBlocks",
            false,
            FieldMatcher::RemoteIp,
        ),
        (
            &spec.not_remote_ip_blocks,
            "notRemoteIpBlocks",
            true,
            FieldMatcher::RemoteIp,
        ),
    ];
    for (values, name, negated, make) in cidrs {
        checks.extend(cidr_check(values, &path.field(name), negated, make)?);
    }
    if checks.is_empty() {
        return Err(ConfigError::new(
            path.clone(),
            ConfigErrorKind::EmptyObject("from.source"),
        ));
    }
    Ok(checks)
}

#[inline(never)]
fn compile_operation(
    spec: &OperationSpec,
    path: &ConfigPath,
    host_keys: &mut Option<Vec<HostPattern>>,
) -> Result<Vec<Check>, ConfigError> {
    let hosts = parse_list(&spec.hosts, &path.field("hosts"), HostPattern::parse)?;
    let not_hosts = parse_list(&spec.not_hosts, &path.field("notHosts"), HostPattern::parse)?;
    let ports = parse_ports(&spec.ports, &path.field("ports"))?;
    let not_ports = parse_ports(&spec.not_ports, &path.field("notPorts"))?;
    let paths = parse_list(&spec.paths, &path.field("paths"), PathPattern::parse)?;
    let not_paths = parse_list(&spec.not_paths, &path.field("notPaths"), PathPattern::parse)?;

    let mut checks = Vec::new();
    match (&hosts, host_keys.as_mut()) {
        (Some(hosts), Some(keys)) => keys.extend(hosts.iter().cloned()),
        _ => *host_keys = None,
    }
    if let Some(hosts) = &hosts {
        checks.push(Check {
            field: FieldMatcher::Host(HostMatcher::new(hosts)),
            negated: false,
        });
    }
    if let Some(hosts) = &not_hosts {
        checks.push(Check {
            field: FieldMatcher::Host(HostMatcher::new(hosts)),
            negated: true,
        });
    }
    if let Some(ports) = ports {
        checks.push(Check {
            field: FieldMatcher::DestinationPort(PortSet::new(ports)),
            negated: false,
        });
    }
    if let Some(ports) = not_ports {
        checks.push(Check {
            field: FieldMatcher::DestinationPort(PortSet::new(ports)),
            negated: true,
        });
    }
    checks.extend(string_check(
        &spec.methods,
        &path.field("methods"),
        false,
        FieldMatcher::Method,
    )?);
    checks.extend(string_check(
        &spec.not_methods,
        &path.field("notMethods"),
        true,
        FieldMatcher::Method,
    )?);
    if let Some(paths) = &paths {
        checks.push(Check {
            field: FieldMatcher::Path(PathMatcher::new(paths)),
            negated: false,
        });
    }
    if let Some(paths) = &not_paths {
        checks.push(Check {
            field: FieldMatcher::Path(PathMatcher::new(paths)),
            negated: true,
        });
    }
    if checks.is_empty() {
        return Err(ConfigError::new(
            path.clone(),
            ConfigErrorKind::EmptyObject("to.operation"),
        ));
    }
    Ok(checks)
}

/// The `when` keys the filter understands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WhenKey {
    Header(String),
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationIp,
    DestinationPort,
    Sni,
    ConnectionProtocol,
    TlsVersion,
    Alpn,
}

fn is_header_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_when_key(key: &str, path: &ConfigPath) -> Result<WhenKey, ConfigError> {
    let at = || path.field("key");
    Ok(match key {
        "source.ip" => WhenKey::SourceIp,
        "remote.ip" => WhenKey::RemoteIp,
        "source.namespace" => WhenKey::SourceNamespace,
        "source.principal" => WhenKey::SourcePrincipal,
        "destination.ip" => WhenKey::DestinationIp,
        "destination.port" => WhenKey::DestinationPort,
        "connection.sni" => WhenKey::Sni,
        "connection.protocol" => WhenKey::ConnectionProtocol,
        "connection.tls_version" => WhenKey::TlsVersion,
        "connection.alpn" => WhenKey::Alpn,
        "" => return Err(ConfigError::new(at(), ConfigErrorKind::EmptyValue)),
        _ if key.starts_with("request.headers") => {
            let name = key
                .strip_prefix("request.headers[")
                .and_then(|rest| rest.strip_suffix(']'))
                .filter(|name| {
                    let bare = name.strip_prefix(':').unwrap_or(name);
                    !bare.is_empty() && bare.bytes().all(is_header_name_char)
                })
                .ok_or_else(|| {
                    ConfigError::new(at(), ConfigErrorKind::BadHeaderKey(key.to_string()))
                })?;
            WhenKey::Header(name.to_ascii_lowercase())
        }
        _ if key.starts_with("request.auth.")
            || key.starts_with("experimental.")
            || key == "source.serviceAccount"
            || key == "source.trustDomain" =>
        {
            return Err(ConfigError::new(
                at(),
                ConfigErrorKind::Unsupported(key.to_string()),
            ));
        }
        _ => {
            return Err(ConfigError::new(
                at(),
                ConfigErrorKind::UnknownWhenKey(key.to_string()),
            ))
        }
    })
}

const PROTOCOL_VALUES: &[&str] = &["tls", "http1", "http2", "http3", "ssh", "unknown"];
const TLS_VERSION_VALUES: &[&str] = &["1.0", "1.1", "1.2", "1.3"];

/// A condition on an inspection fact: exact values from a closed set, so that a typo is an
/// error rather than a condition that never matches.
#[inline(never)]
fn fact_check(
    values: &Option<Vec<String>>,
    path: &ConfigPath,
    negated: bool,
    known: &[&str],
    make: fn(StringMatcher) -> FieldMatcher,
) -> Result<Option<Check>, ConfigError> {
    for (i, value) in values.iter().flatten().enumerate() {
        if !known.contains(&value.as_str()) {
            return Err(invalid(
                path.index(i),
                format!(
                    "{} is not one of {}",
                    crate::text::quote(value),
                    crate::text::joined(known)
                ),
            ));
        }
    }
    string_check(values, path, negated, make)
}

fn scalar_texts(values: &Option<Vec<Scalar>>) -> Option<Vec<String>> {
    values
        .as_ref()
        .map(|v| v.iter().map(|s| s.text.clone()).collect())
}

#[inline(never)]
fn condition_checks(
    key: &WhenKey,
    values: &Option<Vec<Scalar>>,
    path: &ConfigPath,
    negated: bool,
) -> Result<(Option<Check>, Option<Vec<HostPattern>>), ConfigError> {
    let texts = scalar_texts(values);
    let check = match key {
        WhenKey::Header(name) => {
            parse_list(&texts, path, StringPattern::parse)?.map(|patterns| Check {
                field: FieldMatcher::Header(name.as_str().into(), StringMatcher::new(&patterns)),
                negated,
            })
        }
        WhenKey::SourceNamespace => string_check(&texts, path, negated, FieldMatcher::Namespace)?,
        WhenKey::SourcePrincipal => string_check(&texts, path, negated, FieldMatcher::Principal)?,
        WhenKey::SourceIp => cidr_check(&texts, path, negated, FieldMatcher::SourceIp)?,
        WhenKey::RemoteIp => cidr_check(&texts, path, negated, FieldMatcher::RemoteIp)?,
        WhenKey::DestinationIp => cidr_check(&texts, path, negated, FieldMatcher::DestinationIp)?,
        WhenKey::DestinationPort => parse_ports(values, path)?.map(|ports| Check {
            field: FieldMatcher::DestinationPort(PortSet::new(ports)),
            negated,
        }),
        WhenKey::ConnectionProtocol => fact_check(
            &texts,
            path,
            negated,
            PROTOCOL_VALUES,
            FieldMatcher::ConnectionProtocol,
        )?,
        WhenKey::TlsVersion => fact_check(
            &texts,
            path,
            negated,
            TLS_VERSION_VALUES,
            FieldMatcher::TlsVersion,
        )?,
        WhenKey::Alpn => string_check(&texts, path, negated, FieldMatcher::Alpn)?,
        WhenKey::Sni => {
            let patterns = parse_list(&texts, path, HostPattern::parse)?;
            let check = patterns.as_ref().map(|p| Check {
                field: FieldMatcher::Sni(HostMatcher::new(p)),
                negated,
            });
            return Ok((check, if negated { None } else { patterns }));
        }
    };
    Ok((check, None))
}

#[inline(never)]
fn compile_condition(
    spec: &ConditionSpec,
    path: &ConfigPath,
    sni_keys: &mut Option<Vec<HostPattern>>,
) -> Result<Vec<Check>, ConfigError> {
    let key = parse_when_key(&spec.key, path)?;
    let has = |v: &Option<Vec<Scalar>>| v.as_ref().is_some_and(|v| !v.is_empty());
    if !has(&spec.values) && !has(&spec.not_values) {
        return Err(ConfigError::new(
            path.clone(),
            ConfigErrorKind::WhenWithoutValues(spec.key.clone()),
        ));
    }
    let (positive, keys) = condition_checks(&key, &spec.values, &path.field("values"), false)?;
    let (negative, _) = condition_checks(&key, &spec.not_values, &path.field("notValues"), true)?;
    if sni_keys.is_none() {
        *sni_keys = keys;
    }
    Ok(positive.into_iter().chain(negative).collect())
}

/// Compiles and validates one rule at `path` (e.g. `policies[0].rules[1]`).
pub fn compile_rule(
    spec: &RuleSpec,
    path: &ConfigPath,
    on_tcp: HttpOnlyOnTcp,
) -> Result<CompiledRule, ConfigError> {
    let (http, host_keys, sni_keys) = compile_matcher(spec, path)?;
    // The TCP variant is compiled again rather than cloned: matchers have no `Clone` code in
    // the `.wasm` that way, and the second pass cannot fail where the first did not.
    let tcp = match (http.has_http_only(), on_tcp) {
        (true, HttpOnlyOnTcp::DropRule) => None,
        (has_http_only, _) => {
            let (mut tcp, _, _) = compile_matcher(spec, path)?;
            if has_http_only {
                tcp.drop_http_only();
            }
            Some(tcp)
        }
    };
    Ok(CompiledRule {
        http,
        tcp,
        host_keys,
        sni_keys,
    })
}

type Keys = Option<Vec<HostPattern>>;

fn compile_matcher(
    spec: &RuleSpec,
    path: &ConfigPath,
) -> Result<(RuleMatcher, Keys, Keys), ConfigError> {
    let mut rule = RuleMatcher::default();

    if let Some(from) = &spec.from {
        let path = path.field("from");
        if from.is_empty() {
            return Err(ConfigError::new(path, ConfigErrorKind::EmptyList("from")));
        }
        for (i, entry) in from.iter().enumerate() {
            let path = path.index(i);
            let source = entry.source.as_ref().ok_or_else(|| {
                ConfigError::new(path.clone(), ConfigErrorKind::Missing("from.source"))
            })?;
            rule.from
                .push(compile_source(source, &path.field("source"))?);
        }
    }

    let mut host_keys = None;
    if let Some(to) = &spec.to {
        let path = path.field("to");
        if to.is_empty() {
            return Err(ConfigError::new(path, ConfigErrorKind::EmptyList("to")));
        }
        host_keys = Some(Vec::new());
        for (i, entry) in to.iter().enumerate() {
            let path = path.index(i);
            let operation = entry.operation.as_ref().ok_or_else(|| {
                ConfigError::new(path.clone(), ConfigErrorKind::Missing("to.operation"))
            })?;
            rule.to.push(compile_operation(
                operation,
                &path.field("operation"),
                &mut host_keys,
            )?);
        }
    }

    let mut sni_keys = None;
    if let Some(when) = &spec.when {
        // Unlike `from` and `to`, Istio accepts an empty `when`: no conditions.
        let path = path.field("when");
        for (i, condition) in when.iter().enumerate() {
            rule.when
                .extend(compile_condition(condition, &path.index(i), &mut sni_keys)?);
        }
    }
    Ok((rule, host_keys, sni_keys))
}
