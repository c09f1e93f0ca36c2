//! The compiler: policy objects and Namespaces in, the filter's `pluginConfig` out. Pure (no I/O)
//! and deterministic: the same objects give the same bytes, whatever order they came in.
//!
//! - ClusterEgressPolicy tier Admin → `tiers.admin[]`, Baseline → `tiers.baseline[]`, ordered by
//!   (priority, name); `spec.subject.namespaces` is resolved against the Namespaces' labels to a
//!   sorted list, and an absent or empty selector leaves `subject` out (every source).
//! - EgressPolicy in namespace X → `tiers.namespaces.X[]`, ordered by name.
//! - Rate limits get names unique in the whole document: `<policy>.<rule>` for a rule's limit,
//!   `<namespace>.<policy>.<limit>` for an EgressPolicy's (shortened with a hash past 64 bytes).
//! - The base configuration (`rateLimits`, `protocol`, `tiers.default`) is merged in.
//!
//! Every policy is checked on its own first, by the filter's own configuration code
//! (`egress_filter::CompiledConfig::from_json`), so each invalid policy is named with the field
//! at fault; then the whole document is checked the same way.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::resources::{
    ClusterEgressPolicy, EgressPolicy, PolicyKind, PolicyRef, RuleAction, Tier, DRY_RUN_ANNOTATION,
};
use crate::selector;

/// Lowest and highest `spec.priority`.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = 0..=1000;
/// The filter's limit on a rate limit's name.
const MAX_LIMIT_NAME: usize = 64;
/// A Kubernetes DNS label's limit, which policy, rule and limit names are held to.
const MAX_LABEL: usize = 63;

/// Everything the compiler reads.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub cluster_policies: Vec<ClusterEgressPolicy>,
    pub egress_policies: Vec<EgressPolicy>,
    pub namespaces: Vec<Namespace>,
}

/// One thing wrong with one policy object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub policy: PolicyRef,
    /// Path in the object, as `spec.rules[1].action`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.policy, self.field, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Policies(Vec<PolicyError>),
    #[error("base configuration: {field}: {message}")]
    Base { field: String, message: String },
}

/// The global settings merged into every compiled configuration: a pluginConfig with
/// `rateLimits`, `protocol`, `log` and `tiers.default` only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BaseConfig {
    rate_limits: Option<Value>,
    protocol: Option<Value>,
    log: Option<Value>,
    default: Option<Value>,
}

impl BaseConfig {
    /// Reads and checks a base configuration (JSON); the error names the field.
    pub fn from_json(text: &[u8]) -> Result<BaseConfig, CompileError> {
        let base_error = |field: &str, message: String| CompileError::Base {
            field: field.to_string(),
            message,
        };
        let value: Value =
            serde_json::from_slice(text).map_err(|e| base_error("$", e.to_string()))?;
        let Value::Object(mut map) = value else {
            return Err(base_error("$", "expected a JSON object".into()));
        };
        let rate_limits = map.remove("rateLimits");
        let protocol = map.remove("protocol");
        let log = map.remove("log");
        let default = match map.remove("tiers") {
            None => None,
            Some(Value::Object(mut tiers)) => {
                let default = tiers.remove("default");
                if let Some(key) = tiers.keys().next() {
                    return Err(base_error(
                        &format!("tiers.{key}"),
                        "only `default` may be set here; policies come from ClusterEgressPolicy and EgressPolicy objects".into(),
                    ));
                }
                default
            }
            Some(_) => return Err(base_error("tiers", "expected an object".into())),
        };
        if let Some(key) = map.keys().next() {
            return Err(base_error(
                key,
                "not a base setting; the base configuration holds only rateLimits, protocol, log and tiers.default".into(),
            ));
        }
        let base = BaseConfig {
            rate_limits,
            protocol,
            log,
            default,
        };
        // The filter is the judge of the settings themselves.
        let document = base.document(Map::new());
        egress_filter::CompiledConfig::from_json(document.to_string().as_bytes())
            .map_err(|e| base_error(e.path.as_str(), e.kind.to_string()))?;
        Ok(base)
    }

    fn document(&self, mut tiers: Map<String, Value>) -> Value {
        tiers.insert(
            "default".into(),
            self.default.clone().unwrap_or_else(|| json!("DENY")),
        );
        let mut root = Map::new();
        root.insert("tiers".into(), Value::Object(tiers));
        if let Some(limits) = &self.rate_limits {
            root.insert("rateLimits".into(), limits.clone());
        }
        if let Some(protocol) = &self.protocol {
            root.insert("protocol".into(), protocol.clone());
        }
        if let Some(log) = &self.log {
            root.insert("log".into(), log.clone());
        }
        Value::Object(root)
    }
}

/// A compiled configuration, with what is needed to explain it.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// The pluginConfig (object keys sorted, lists in their documented order).
    pub plugin_config: Value,
    /// Resolved subjects of the ClusterEgressPolicies: `None` is every source.
    pub subjects: BTreeMap<String, Option<Vec<String>>>,
}

impl Compiled {
    /// The pluginConfig as the `compile` command prints it: pretty JSON ending in a newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.plugin_config)
            .unwrap_or_else(|_| String::from("{}"));
        text.push('\n');
        text
    }
}

/// Compiles every policy of `set` into one pluginConfig. `Err` lists every invalid policy (or the
/// document-wide problem, when each policy is fine alone).
pub fn compile(set: &PolicySet, base: &BaseConfig) -> Result<Compiled, CompileError> {
    let mut errors = Vec::new();
    let mut subjects = BTreeMap::new();
    let mut tiers: BTreeMap<Tier, Vec<(i64, String, Value)>> = BTreeMap::new();
    // Where each policy lands, to lead a document-wide error back to its object.
    let mut placements: Vec<(String, PolicyRef)> = Vec::new();

    for policy in &set.cluster_policies {
        match cluster_policy(policy, &set.namespaces) {
            Ok((subject, value)) => {
                let name = policy.metadata.name.clone().unwrap_or_default();
                subjects.insert(name.clone(), subject);
                tiers.entry(policy.spec.tier).or_default().push((
                    policy.spec.priority,
                    name,
                    value,
                ));
            }
            Err(e) => errors.extend(e),
        }
    }
    let mut namespaces: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for policy in &set.egress_policies {
        match egress_policy(policy) {
            Ok((namespace, value)) => namespaces
                .entry(namespace)
                .or_default()
                .push((policy.metadata.name.clone().unwrap_or_default(), value)),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        errors.sort_by(|a, b| (&a.policy, &a.field).cmp(&(&b.policy, &b.field)));
        return Err(CompileError::Policies(errors));
    }

    let mut tier_map = Map::new();
    for (tier, mut policies) in tiers {
        policies.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (i, (_, name, _)) in policies.iter().enumerate() {
            placements.push((
                format!("tiers.{}[{i}]", tier.key()),
                PolicyRef {
                    kind: PolicyKind::ClusterEgressPolicy,
                    namespace: None,
                    name: name.clone(),
                },
            ));
        }
        tier_map.insert(
            tier.key().into(),
            Value::Array(policies.into_iter().map(|(_, _, v)| v).collect()),
        );
    }
    if !namespaces.is_empty() {
        let mut by_namespace = Map::new();
        for (namespace, mut policies) in namespaces {
            policies.sort_by(|a, b| a.0.cmp(&b.0));
            for (i, (name, _)) in policies.iter().enumerate() {
                placements.push((
                    format!("tiers.namespaces.{namespace}[{i}]"),
                    PolicyRef {
                        kind: PolicyKind::EgressPolicy,
                        namespace: Some(namespace.clone()),
                        name: name.clone(),
                    },
                ));
            }
            by_namespace.insert(
                namespace,
                Value::Array(policies.into_iter().map(|(_, v)| v).collect()),
            );
        }
        tier_map.insert("namespaces".into(), Value::Object(by_namespace));
    }
    let plugin_config = base.document(tier_map);
    if let Err(e) = egress_filter::CompiledConfig::from_json(plugin_config.to_string().as_bytes()) {
        let path = e.path.as_str().to_string();
        let message = e.kind.to_string();
        return Err(match locate(&placements, &path) {
            Some((policy, field)) => CompileError::Policies(vec![PolicyError {
                policy,
                field,
                message,
            }]),
            None => CompileError::Base {
                field: path,
                message,
            },
        });
    }
    Ok(Compiled {
        plugin_config,
        subjects,
    })
}

/// The policy and field an error at `path` of the compiled document is about.
fn locate(placements: &[(String, PolicyRef)], path: &str) -> Option<(PolicyRef, String)> {
    placements.iter().find_map(|(prefix, policy)| {
        let rest = path.strip_prefix(prefix.as_str())?;
        if !(rest.is_empty() || rest.starts_with('.')) {
            return None;
        }
        Some((policy.clone(), object_field(policy.kind, rest)))
    })
}

/// Translates a path inside one compiled policy (`.rules[0].to`) into the object's own
/// (`spec.rules[0].to`).
fn object_field(kind: PolicyKind, rest: &str) -> String {
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    let top = rest.split(['.', '[']).next().unwrap_or("");
    match top {
        "" => "spec".into(),
        "name" => "metadata.name".into(),
        "dryRun" if kind == PolicyKind::EgressPolicy => {
            format!("metadata.annotations[{DRY_RUN_ANNOTATION}]")
        }
        "subject" => "spec.subject.namespaces".into(),
        _ => format!("spec.{rest}"),
    }
}

fn policy_error(
    policy: &PolicyRef,
    field: impl Into<String>,
    message: impl Into<String>,
) -> PolicyError {
    PolicyError {
        policy: policy.clone(),
        field: field.into(),
        message: message.into(),
    }
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, at most 63 characters: a Kubernetes DNS label.
pub fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

fn check_label(
    policy: &PolicyRef,
    field: &str,
    what: &str,
    text: &str,
    errors: &mut Vec<PolicyError>,
) {
    if !is_dns_label(text) {
        errors.push(policy_error(
            policy,
            field,
            format!(
                "{what} {text:?} must be a DNS label (lower-case letters, digits and '-', at most {MAX_LABEL}): it names metrics and log fields"
            ),
        ));
    }
}

/// A rate limit name unique in the document, within the filter's 64 bytes: the parts (DNS labels,
/// which never hold `_`) joined by `_`, or, when that is too long, its start and a hash of the
/// whole. Not `.`: the name becomes a segment of metric names, which Envoy splits at dots.
pub fn limit_name(parts: &[&str]) -> String {
    let full = parts.join("_");
    if full.len() <= MAX_LIMIT_NAME {
        return full;
    }
    let digest = hex::encode(Sha256::digest(full.as_bytes()));
    let keep = MAX_LIMIT_NAME - 9;
    format!("{}_{}", &full[..keep], &digest[..8])
}

/// The filter document holding only this policy, to check it alone.
fn check_alone(policy: &PolicyRef, tiers: Value, errors: &mut Vec<PolicyError>) {
    let document = json!({ "tiers": tiers });
    if let Err(e) = egress_filter::CompiledConfig::from_json(document.to_string().as_bytes()) {
        let path = e.path.as_str();
        // The only policy sits at index 0 of its list.
        let rest = ["tiers.admin[0]", "tiers.baseline[0]"]
            .iter()
            .find_map(|p| path.strip_prefix(p))
            .or_else(|| {
                let namespace = policy.namespace.as_deref()?;
                path.strip_prefix(&format!("tiers.namespaces.{namespace}[0]"))
            });
        let field = match rest {
            Some(rest) if rest.is_empty() || rest.starts_with('.') => {
                object_field(policy.kind, rest)
            }
            _ if path.starts_with("tiers.namespaces") => "metadata.namespace".into(),
            _ => path.to_string(),
        };
        errors.push(policy_error(policy, field, e.kind.to_string()));
    }
}

type Subject = Option<Vec<String>>;

fn cluster_policy(
    policy: &ClusterEgressPolicy,
    namespaces: &[Namespace],
) -> Result<(Subject, Value), Vec<PolicyError>> {
    let reference = policy.reference();
    let name = reference.name.as_str();
    let spec = &policy.spec;
    let mut errors = Vec::new();
    check_label(&reference, "metadata.name", "name", name, &mut errors);
    if !PRIORITY_RANGE.contains(&spec.priority) {
        errors.push(policy_error(
            &reference,
            "spec.priority",
            format!(
                "{} is outside {}..={}",
                spec.priority,
                PRIORITY_RANGE.start(),
                PRIORITY_RANGE.end()
            ),
        ));
    }
    if spec.rules.is_empty() {
        errors.push(policy_error(
            &reference,
            "spec.rules",
            "must have at least one rule",
        ));
    }
    let mut seen = BTreeSet::new();
    let mut rules = Vec::with_capacity(spec.rules.len());
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = |field: &str| format!("spec.rules[{i}].{field}");
        check_label(
            &reference,
            &at("name"),
            "rule name",
            &rule.name,
            &mut errors,
        );
        if !seen.insert(rule.name.as_str()) {
            errors.push(policy_error(
                &reference,
                at("name"),
                format!("rule name {:?} is used twice", rule.name),
            ));
        }
        if rule.action == RuleAction::Pass && spec.tier != Tier::Admin {
            errors.push(policy_error(
                &reference,
                at("action"),
                "Pass is only allowed in the Admin tier (there is no later tier to pass to)",
            ));
        }
        let mut compiled = Map::new();
        compiled.insert("name".into(), json!(rule.name));
        compiled.insert("action".into(), json!(rule.action.filter_action()));
        insert_rule_fields(&mut compiled, &rule.match_rule());
        if let Some(limit) = &rule.rate_limit {
            if rule.action == RuleAction::Deny {
                errors.push(policy_error(
                    &reference,
                    at("rateLimit"),
                    "a Deny rule allows nothing, so it cannot limit anything",
                ));
            }
            let mut value = serde_json::to_value(limit).unwrap_or_default();
            if let Value::Object(map) = &mut value {
                map.insert("name".into(), json!(limit_name(&[name, &rule.name])));
            }
            compiled.insert("rateLimit".into(), value);
        }
        rules.push(Value::Object(compiled));
    }
    let subject = match spec.subject.as_ref().and_then(|s| s.namespaces.as_ref()) {
        None => None,
        Some(sel) => match selector::validate(sel) {
            Err((field, message)) => {
                errors.push(policy_error(
                    &reference,
                    format!("spec.subject.namespaces.{field}"),
                    message,
                ));
                None
            }
            Ok(()) if selector::is_empty(sel) => None,
            Ok(()) => {
                let empty = BTreeMap::new();
                let mut names: Vec<String> = namespaces
                    .iter()
                    .filter(|n| {
                        selector::matches(sel, n.metadata.labels.as_ref().unwrap_or(&empty))
                    })
                    .filter_map(|n| n.metadata.name.clone())
                    .collect();
                names.sort();
                names.dedup();
                Some(names)
            }
        },
    };
    let mut value = Map::new();
    value.insert("name".into(), json!(name));
    value.insert("priority".into(), json!(spec.priority));
    if let Some(names) = &subject {
        value.insert("subject".into(), json!({ "namespaces": names }));
    }
    if spec.dry_run {
        value.insert("dryRun".into(), json!(true));
    }
    value.insert("rules".into(), Value::Array(rules));
    let value = Value::Object(value);
    if errors.is_empty() {
        check_alone(
            &reference,
            json!({ spec.tier.key(): [value.clone()] }),
            &mut errors,
        );
    }
    if errors.is_empty() {
        Ok((subject, value))
    } else {
        Err(errors)
    }
}

fn insert_rule_fields(target: &mut Map<String, Value>, rule: &crate::resources::Rule) {
    if let Ok(Value::Object(fields)) = serde_json::to_value(rule) {
        target.extend(fields);
    }
}

fn egress_policy(policy: &EgressPolicy) -> Result<(String, Value), Vec<PolicyError>> {
    let reference = policy.reference();
    let mut errors = Vec::new();
    let Some(namespace) = policy.metadata.namespace.clone().filter(|n| !n.is_empty()) else {
        return Err(vec![policy_error(
            &reference,
            "metadata.namespace",
            "an EgressPolicy governs the sources of its own namespace: set metadata.namespace",
        )]);
    };
    let name = reference.name.as_str();
    check_label(&reference, "metadata.name", "name", name, &mut errors);
    let spec = &policy.spec;
    let mut value = Map::new();
    value.insert("name".into(), json!(name));
    value.insert("action".into(), json!(spec.action().filter_action()));
    if let Some(rules) = &spec.rules {
        value.insert(
            "rules".into(),
            serde_json::to_value(rules).unwrap_or_default(),
        );
    }
    if policy.dry_run() {
        value.insert("dryRun".into(), json!(true));
    }
    if let Some(limits) = &spec.rate_limits {
        let mut seen = BTreeSet::new();
        let mut compiled = Vec::with_capacity(limits.len());
        for (i, limit) in limits.iter().enumerate() {
            let field = format!("spec.rateLimits[{i}].name");
            check_label(
                &reference,
                &field,
                "rate limit name",
                &limit.name,
                &mut errors,
            );
            if !seen.insert(limit.name.as_str()) {
                errors.push(policy_error(
                    &reference,
                    field,
                    format!("rate limit name {:?} is used twice", limit.name),
                ));
            }
            let mut entry = serde_json::to_value(limit).unwrap_or_default();
            if let Value::Object(map) = &mut entry {
                map.insert(
                    "name".into(),
                    json!(limit_name(&[&namespace, name, &limit.name])),
                );
            }
            compiled.push(entry);
        }
        value.insert("rateLimits".into(), Value::Array(compiled));
    }
    let value = Value::Object(value);
    if errors.is_empty() {
        check_alone(
            &reference,
            json!({ "namespaces": { namespace.as_str(): [value.clone()] } }),
            &mut errors,
        );
    }
    if errors.is_empty() {
        Ok((namespace, value))
    } else {
        Err(errors)
    }
}
