//! The smallest allow-list that admits observed traffic.
//!
//! Per source namespace (or principal): the exact hosts asked for, with the ports and, for
//! HTTP, the methods seen; TLS passthrough by server name. Hosts are collapsed to
//! `*.<registrable domain>` only when at least `collapse_min` distinct names below one
//! registrable domain were seen (`a.cdn.example.com`, `b.cdn.example.com`, `c.example.com` →
//! `*.example.com`); the registrable domain comes from the Public Suffix List (the `psl` crate,
//! which compiles the list in), so a wildcard is never a public suffix (`*.com`, `*.co.uk`,
//! `*.github.io`). Pairs seen fewer than `min_requests` times are left out and listed.
//!
//! Sources without a mesh identity cannot be named by namespace: their hosts go to one policy
//! that matches only sources without a principal (`notPrincipals: ["*"]`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::render::printable;
use super::RequestFacts;
use crate::stream::StreamKind;

/// Default distinct names below one registrable domain that make a wildcard.
pub const DEFAULT_COLLAPSE_MIN: u32 = 3;
/// Cap on distinct (subject, host) pairs held; beyond it a recommendation is refused.
pub const MAX_PAIRS: usize = 100_000;

/// What a policy is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Namespace,
    Principal,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    Namespace(String),
    /// A principal and its namespace, if it has one.
    Principal(String, Option<String>),
    NoIdentity,
}

impl Subject {
    fn describe(&self) -> String {
        match self {
            Subject::Namespace(ns) => format!("namespace {ns}"),
            Subject::Principal(p, _) => format!("principal {p}"),
            Subject::NoIdentity => "sources without identity".to_string(),
        }
    }

    fn namespace(&self) -> Option<&str> {
        match self {
            Subject::Namespace(ns) => Some(ns),
            Subject::Principal(_, ns) => ns.as_deref(),
            Subject::NoIdentity => None,
        }
    }
}

/// What was seen for one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostUse {
    pub requests: u64,
    pub ports: BTreeSet<u16>,
    pub methods: BTreeSet<String>,
}

impl HostUse {
    fn merge(&mut self, other: &HostUse) {
        self.requests += other.requests;
        self.ports.extend(other.ports.iter().copied());
        self.methods.extend(other.methods.iter().cloned());
    }
}

/// Requests a policy cannot be written for, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotExpressible {
    pub by_reason: BTreeMap<String, u64>,
}

/// Observed traffic, reduced to what an allow-list needs.
#[derive(Debug, Clone)]
pub struct Observed {
    group_by: GroupBy,
    pairs: BTreeMap<(Subject, Kind, String), HostUse>,
    pub requests: u64,
    pub not_expressible: NotExpressible,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Http,
    Tls,
}

/// A host name the filter's configuration takes as an exact host: DNS characters, or an IP.
fn expressible_host(host: &str) -> Result<String, &'static str> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        });
    }
    let dns = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if dns {
        Ok(host.to_string())
    } else {
        Err("the host is not a DNS name or an IP address")
    }
}

/// A principal or namespace usable as a match value: no `*` (which would be a wildcard).
fn literal(value: &str) -> bool {
    !value.is_empty() && !value.contains('*') && !value.chars().any(char::is_control)
}

impl Observed {
    pub fn new(group_by: GroupBy) -> Observed {
        Observed {
            group_by,
            pairs: BTreeMap::new(),
            requests: 0,
            not_expressible: NotExpressible::default(),
        }
    }

    fn refuse(&mut self, reason: &str) {
        *self
            .not_expressible
            .by_reason
            .entry(reason.to_string())
            .or_default() += 1;
    }

    /// Takes one request into account. Fails only when the number of distinct pairs passes
    /// [`MAX_PAIRS`].
    pub fn add(&mut self, facts: &RequestFacts) -> Result<(), String> {
        self.requests += 1;
        let subject = match (&facts.principal, &facts.namespace, self.group_by) {
            (None, _, _) => Subject::NoIdentity,
            (Some(p), ns, GroupBy::Principal) if literal(p) => {
                Subject::Principal(p.clone(), ns.clone())
            }
            (Some(_), Some(ns), GroupBy::Namespace) if literal(ns) => {
                Subject::Namespace(ns.clone())
            }
            (Some(_), None, GroupBy::Namespace) => {
                self.refuse("the principal has no namespace");
                return Ok(());
            }
            _ => {
                self.refuse("the principal or namespace holds '*'");
                return Ok(());
            }
        };
        let kind = match facts.kind {
            StreamKind::Http => Kind::Http,
            StreamKind::Tcp if facts.named => Kind::Tls,
            StreamKind::Tcp => {
                self.refuse("TCP without a server name (nothing but the port to allow)");
                return Ok(());
            }
        };
        if facts.kind == StreamKind::Http && !facts.named {
            self.refuse("HTTP without :authority");
            return Ok(());
        }
        let host = match expressible_host(&facts.host) {
            Ok(h) => h,
            Err(reason) => {
                self.refuse(reason);
                return Ok(());
            }
        };
        let key = (subject, kind, host);
        if !self.pairs.contains_key(&key) && self.pairs.len() >= MAX_PAIRS {
            return Err(format!(
                "more than {MAX_PAIRS} distinct source and host pairs: narrow the log (one \
                 namespace, a shorter period) or group by namespace"
            ));
        }
        let entry = self.pairs.entry(key).or_default();
        entry.requests += 1;
        entry.ports.insert(facts.port);
        if let Some(m) = &facts.method {
            entry.methods.insert(m.clone());
        }
        Ok(())
    }
}

/// How to turn observations into policies.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub min_requests: u64,
    pub collapse_min: usize,
    pub dry_run: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_requests: 1,
            collapse_min: DEFAULT_COLLAPSE_MIN as usize,
            dry_run: false,
        }
    }
}

/// One allow rule: hosts (or server names) with the ports and methods they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    tls: bool,
    hosts: Vec<String>,
    ports: BTreeSet<u16>,
    methods: BTreeSet<String>,
}

/// The allow-list of one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectPolicy {
    pub subject: Subject,
    pub rules: Vec<Rule>,
}

/// A pair left out by `--min-requests`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub subject: String,
    pub host: String,
    pub requests: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recommendation {
    pub policies: Vec<SubjectPolicy>,
    pub dropped: Vec<Dropped>,
    /// Requests the policies admit.
    pub admitted: u64,
    pub pairs_kept: usize,
    pub observed: u64,
    pub not_expressible: NotExpressible,
    pub dry_run: bool,
}

/// Names below one registrable domain: `*.domain` when there are enough of them.
fn collapse(hosts: BTreeMap<String, HostUse>, collapse_min: usize) -> BTreeMap<String, HostUse> {
    let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for host in hosts.keys() {
        if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
            continue;
        }
        if let Some(domain) = psl::domain_str(host) {
            if domain != host {
                by_domain
                    .entry(domain.to_string())
                    .or_default()
                    .push(host.clone());
            }
        }
    }
    let mut out = hosts;
    for (domain, siblings) in by_domain {
        if siblings.len() < collapse_min.max(2) {
            continue;
        }
        let mut merged = HostUse::default();
        for sibling in &siblings {
            if let Some(used) = out.remove(sibling) {
                merged.merge(&used);
            }
        }
        out.entry(format!("*.{domain}")).or_default().merge(&merged);
    }
    out
}

impl Observed {
    pub fn recommend(self, options: Options) -> Recommendation {
        let mut dropped = Vec::new();
        let mut kept: BTreeMap<(Subject, Kind), BTreeMap<String, HostUse>> = BTreeMap::new();
        let mut admitted = 0;
        let mut pairs_kept = 0;
        for ((subject, kind, host), used) in self.pairs {
            if used.requests < options.min_requests {
                dropped.push(Dropped {
                    subject: subject.describe(),
                    host,
                    requests: used.requests,
                });
                continue;
            }
            admitted += used.requests;
            pairs_kept += 1;
            kept.entry((subject, kind)).or_default().insert(host, used);
        }
        let mut policies: Vec<SubjectPolicy> = Vec::new();
        for ((subject, kind), hosts) in kept {
            let hosts = collapse(hosts, options.collapse_min);
            // Hosts that share ports (and methods) share a rule.
            let mut rules: BTreeMap<(BTreeSet<u16>, BTreeSet<String>), Vec<String>> =
                BTreeMap::new();
            for (host, used) in hosts {
                let methods = if kind == Kind::Http {
                    used.methods
                } else {
                    BTreeSet::new()
                };
                rules.entry((used.ports, methods)).or_default().push(host);
            }
            let rules = rules.into_iter().map(|((ports, methods), hosts)| Rule {
                tls: kind == Kind::Tls,
                hosts,
                ports,
                methods,
            });
            match policies.last_mut() {
                Some(last) if last.subject == subject => last.rules.extend(rules),
                _ => policies.push(SubjectPolicy {
                    subject,
                    rules: rules.collect(),
                }),
            }
        }
        Recommendation {
            policies,
            dropped,
            admitted,
            pairs_kept,
            observed: self.requests,
            not_expressible: self.not_expressible,
            dry_run: options.dry_run,
        }
    }
}

/// A policy name (`[A-Za-z0-9_-]`, at most 128) for a subject, ending in `-observed`.
fn policy_name(subject: &Subject) -> String {
    let base = match subject {
        Subject::Namespace(ns) => ns.clone(),
        Subject::Principal(p, _) => {
            // td/ns/<ns>/sa/<sa> → <ns>-<sa>
            let parts: Vec<&str> = p.split('/').collect();
            match parts.as_slice() {
                [_, "ns", ns, "sa", sa] => format!("{ns}-{sa}"),
                _ => p.clone(),
            }
        }
        Subject::NoIdentity => "without-identity".to_string(),
    };
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean: String = clean.chars().take(110).collect();
    format!("{}-observed", clean.trim_matches('-'))
}

fn source(subject: &Subject) -> Value {
    match subject {
        Subject::Namespace(ns) => json!({"namespaces": [ns]}),
        Subject::Principal(p, _) => json!({"principals": [p]}),
        Subject::NoIdentity => json!({"notPrincipals": ["*"]}),
    }
}

fn rule_json(rule: &Rule, from: Option<Value>) -> Map<String, Value> {
    let ports: Vec<String> = rule.ports.iter().map(u16::to_string).collect();
    let mut out = Map::new();
    if let Some(from) = from {
        out.insert("from".into(), json!([{ "source": from }]));
    }
    if rule.tls {
        out.insert("to".into(), json!([{ "operation": { "ports": ports } }]));
        out.insert(
            "when".into(),
            json!([{ "key": "connection.sni", "values": rule.hosts }]),
        );
    } else {
        let mut operation = Map::new();
        operation.insert("hosts".into(), json!(rule.hosts));
        operation.insert("ports".into(), json!(ports));
        if !rule.methods.is_empty() {
            operation.insert("methods".into(), json!(rule.methods));
        }
        out.insert("to".into(), json!([{ "operation": operation }]));
    }
    out
}

impl Recommendation {
    /// The names of every policy, so that uniqueness holds after cleaning them.
    fn names(&self) -> Vec<String> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        self.policies
            .iter()
            .map(|p| {
                let name = policy_name(&p.subject);
                let n = seen.entry(name.clone()).or_default();
                *n += 1;
                if *n == 1 {
                    name
                } else {
                    format!("{name}-{n}")
                }
            })
            .collect()
    }

    /// A pluginConfig (`policies`): one ALLOW policy per subject, its source in every rule's
    /// `from`.
    pub fn plugin_config(&self) -> Value {
        let policies: Vec<Value> = self
            .policies
            .iter()
            .zip(self.names())
            .map(|(p, name)| {
                let rules: Vec<Value> = p
                    .rules
                    .iter()
                    .map(|r| Value::Object(rule_json(r, Some(source(&p.subject)))))
                    .collect();
                let mut policy = json!({"name": name, "action": "ALLOW", "rules": rules});
                if self.dry_run {
                    policy["dryRun"] = json!(true);
                }
                policy
            })
            .collect();
        json!({ "policies": policies })
    }

    /// EgressPolicy objects (`policy.egress-guard.dev/v1alpha1`), one per namespace; sources
    /// without identity get a Baseline ClusterEgressPolicy matching only them.
    pub fn egress_policies(&self) -> Vec<Value> {
        let mut by_namespace: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut documents = Vec::new();
        for (p, name) in self.policies.iter().zip(self.names()) {
            match (&p.subject, p.subject.namespace()) {
                (Subject::NoIdentity, _) => {
                    let rules: Vec<Value> = p
                        .rules
                        .iter()
                        .enumerate()
                        .map(|(i, r)| {
                            let mut rule = Map::new();
                            rule.insert("name".into(), json!(format!("observed-{}", i + 1)));
                            rule.insert("action".into(), json!("Allow"));
                            rule.extend(rule_json(r, Some(source(&p.subject))));
                            Value::Object(rule)
                        })
                        .collect();
                    let mut spec = json!({"tier": "Baseline", "priority": 1000, "rules": rules});
                    if self.dry_run {
                        spec["dryRun"] = json!(true);
                    }
                    documents.push(json!({
                        "apiVersion": "policy.egress-guard.dev/v1alpha1",
                        "kind": "ClusterEgressPolicy",
                        "metadata": {"name": name},
                        "spec": spec,
                    }));
                }
                (Subject::Principal(..), Some(ns)) => {
                    let from = Some(source(&p.subject));
                    by_namespace.entry(ns.to_string()).or_default().extend(
                        p.rules
                            .iter()
                            .map(|r| Value::Object(rule_json(r, from.clone()))),
                    );
                }
                (_, Some(ns)) => {
                    by_namespace
                        .entry(ns.to_string())
                        .or_default()
                        .extend(p.rules.iter().map(|r| Value::Object(rule_json(r, None))));
                }
                (_, None) => {}
            }
        }
        let mut namespaced: Vec<Value> = by_namespace
            .into_iter()
            .map(|(ns, rules)| {
                let mut metadata = json!({"name": "observed-egress", "namespace": ns});
                if self.dry_run {
                    metadata["annotations"] = json!({"istio.io/dry-run": "true"});
                }
                json!({
                    "apiVersion": "policy.egress-guard.dev/v1alpha1",
                    "kind": "EgressPolicy",
                    "metadata": metadata,
                    "spec": {"action": "ALLOW", "rules": rules},
                })
            })
            .collect();
        namespaced.extend(documents);
        namespaced
    }

    /// What the recommendation covers, in words, for stderr and the YAML header.
    pub fn statement(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "admits all {} requests of the {} source and host pairs kept (100%)",
            self.admitted, self.pairs_kept
        );
        let dropped: u64 = self.dropped.iter().map(|d| d.requests).sum();
        if !self.dropped.is_empty() {
            let _ = write!(
                out,
                "; left out {dropped} requests in {} pairs seen too rarely (--min-requests)",
                self.dropped.len()
            );
        }
        let refused: u64 = self.not_expressible.by_reason.values().sum();
        if refused > 0 {
            let _ = write!(out, "; {refused} requests cannot be allowed by host:");
            for (reason, n) in &self.not_expressible.by_reason {
                let _ = write!(out, " {n} ({reason})");
            }
        }
        let _ = write!(out, "; {} requests observed", self.observed);
        out
    }

    /// The pairs left out, one per line.
    pub fn dropped_report(&self, most: usize) -> String {
        let mut out = String::new();
        for d in self.dropped.iter().take(most) {
            let _ = writeln!(
                out,
                "  left out: {} -> {} ({} requests)",
                printable(&d.subject),
                printable(&d.host),
                d.requests
            );
        }
        if self.dropped.len() > most {
            let _ = writeln!(out, "  ... and {} more pairs", self.dropped.len() - most);
        }
        out
    }
}

/// Block-style YAML of a JSON value. A string is written plain when YAML reads it back as that
/// string (a word of letters, digits and `._/-` starting with a letter, not `true`, `null`,
/// `yes`, ...), otherwise as a JSON string, which YAML reads back as the same string whatever
/// it holds.
pub fn yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) if plain(s) => s.clone(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

fn plain(s: &str) -> bool {
    const RESERVED: [&str; 11] = [
        "y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf",
    ];
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        write_yaml(v, indent + 2, out);
                    }
                    Value::Array(a)
                        if !a.is_empty() && a.iter().all(|x| !x.is_object() && !x.is_array()) =>
                    {
                        let items: Vec<String> = a.iter().map(scalar).collect();
                        let _ = writeln!(out, "{pad}{key}: [{}]", items.join(", "));
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        write_yaml(v, indent, out);
                    }
                    Value::Object(_) => {
                        let _ = writeln!(out, "{pad}{key}: {{}}");
                    }
                    Value::Array(_) => {
                        let _ = writeln!(out, "{pad}{key}: []");
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{key}: {}", scalar(v));
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                let mut nested = String::new();
                write_yaml(item, indent + 2, &mut nested);
                // The first line of the item goes after the dash.
                let trimmed = nested.get(indent + 2..).unwrap_or("");
                let _ = write!(out, "{pad}- {trimmed}");
                if !nested.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(
        principal: Option<&str>,
        host: &str,
        kind: StreamKind,
        port: u16,
        method: Option<&str>,
    ) -> RequestFacts {
        RequestFacts {
            principal: principal.map(str::to_string),
            namespace: principal
                .and_then(super::super::principal_namespace)
                .map(str::to_string),
            host: host.to_string(),
            named: true,
            kind,
            port,
            method: method.map(str::to_string),
        }
    }

    const CI: Option<&str> = Some("cluster.local/ns/ci/sa/runner");

    #[test]
    fn siblings_collapse_to_the_registrable_domain_only() {
        let mut observed = Observed::new(GroupBy::Namespace);
        for host in [
            "a.cdn.example.com",
            "b.cdn.example.com",
            "c.example.com",
            "example.com",
            "x.co.uk",
            "y.co.uk",
            "z.co.uk",
            "one.github.io",
            "two.github.io",
            "three.github.io",
        ] {
            observed
                .add(&facts(CI, host, StreamKind::Http, 80, Some("GET")))
                .unwrap();
        }
        let rec = observed.recommend(Options::default());
        assert_eq!(rec.policies.len(), 1);
        let hosts: Vec<&str> = rec.policies[0]
            .rules
            .iter()
            .flat_map(|r| r.hosts.iter().map(String::as_str))
            .collect();
        assert_eq!(
            hosts,
            [
                "*.example.com",
                "example.com",
                "one.github.io",
                "three.github.io",
                "two.github.io",
                "x.co.uk",
                "y.co.uk",
                "z.co.uk"
            ],
            "*.example.com does not cover example.com; co.uk and github.io are public suffixes"
        );
    }

    #[test]
    fn fewer_siblings_than_the_threshold_stay_exact() {
        let mut observed = Observed::new(GroupBy::Namespace);
        for host in ["a.example.com", "b.example.com"] {
            observed
                .add(&facts(CI, host, StreamKind::Http, 80, Some("GET")))
                .unwrap();
        }
        let rec = observed.clone().recommend(Options::default());
        assert_eq!(
            rec.policies[0].rules[0].hosts,
            ["a.example.com", "b.example.com"]
        );
        let rec = observed.recommend(Options {
            collapse_min: 2,
            ..Options::default()
        });
        assert_eq!(rec.policies[0].rules[0].hosts, ["*.example.com"]);
    }

    #[test]
    fn rules_share_ports_and_methods_and_tls_goes_by_server_name() {
        let mut observed = Observed::new(GroupBy::Namespace);
        observed
            .add(&facts(
                CI,
                "api.github.com",
                StreamKind::Http,
                80,
                Some("GET"),
            ))
            .unwrap();
        observed
            .add(&facts(
                CI,
                "api.github.com",
                StreamKind::Http,
                80,
                Some("POST"),
            ))
            .unwrap();
        observed
            .add(&facts(CI, "pypi.org", StreamKind::Http, 80, Some("GET")))
            .unwrap();
        observed
            .add(&facts(CI, "github.com", StreamKind::Tcp, 443, None))
            .unwrap();
        observed
            .add(&facts(None, "pypi.org", StreamKind::Http, 80, Some("GET")))
            .unwrap();
        let config = observed.recommend(Options::default()).plugin_config();
        assert_eq!(
            config,
            json!({"policies": [
                {"name": "ci-observed", "action": "ALLOW", "rules": [
                    {"from": [{"source": {"namespaces": ["ci"]}}],
                     "to": [{"operation": {"hosts": ["pypi.org"], "ports": ["80"], "methods": ["GET"]}}]},
                    {"from": [{"source": {"namespaces": ["ci"]}}],
                     "to": [{"operation": {"hosts": ["api.github.com"], "ports": ["80"], "methods": ["GET", "POST"]}}]},
                    {"from": [{"source": {"namespaces": ["ci"]}}],
                     "to": [{"operation": {"ports": ["443"]}}],
                     "when": [{"key": "connection.sni", "values": ["github.com"]}]}
                ]},
                {"name": "without-identity-observed", "action": "ALLOW", "rules": [
                    {"from": [{"source": {"notPrincipals": ["*"]}}],
                     "to": [{"operation": {"hosts": ["pypi.org"], "ports": ["80"], "methods": ["GET"]}}]}
                ]}
            ]})
        );
    }

    #[test]
    fn rare_pairs_are_left_out_and_said() {
        let mut observed = Observed::new(GroupBy::Principal);
        for _ in 0..3 {
            observed
                .add(&facts(
                    CI,
                    "api.github.com",
                    StreamKind::Http,
                    80,
                    Some("GET"),
                ))
                .unwrap();
        }
        observed
            .add(&facts(
                CI,
                "pastebin.com",
                StreamKind::Http,
                80,
                Some("POST"),
            ))
            .unwrap();
        observed
            .add(&facts(CI, "bad host", StreamKind::Http, 80, Some("POST")))
            .unwrap();
        let rec = observed.recommend(Options {
            min_requests: 2,
            ..Options::default()
        });
        assert_eq!(rec.admitted, 3);
        assert_eq!(rec.dropped.len(), 1);
        assert_eq!(rec.dropped[0].host, "pastebin.com");
        let statement = rec.statement();
        assert!(
            statement.contains("admits all 3 requests of the 1 source and host pairs kept (100%)"),
            "{statement}"
        );
        assert!(
            statement.contains("left out 1 requests in 1 pairs"),
            "{statement}"
        );
        assert!(statement.contains("not a DNS name"), "{statement}");
        let docs = rec.egress_policies();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["metadata"]["namespace"], "ci");
        assert_eq!(
            docs[0]["spec"]["rules"][0]["from"][0]["source"]["principals"][0],
            "cluster.local/ns/ci/sa/runner"
        );
    }

    #[test]
    fn yaml_reads_as_the_document() {
        let doc =
            json!({"a": {"b": [1, "x: y"], "c": [{"d": "e", "f": ["g"]}, {"h": {}}]}, "i": "-"});
        for quoted in ["true", "No", "80", "*.example.com", "a b", "a:b"] {
            assert!(!plain(quoted), "{quoted}");
        }
        assert_eq!(
            yaml(&doc),
            "a:\n  b: [1, \"x: y\"]\n  c:\n  - d: e\n    f: [g]\n  - h: {}\ni: \"-\"\n"
        );
    }
}
