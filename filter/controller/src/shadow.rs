//! Which rules can never decide anything because an earlier tier always decides first.
//!
//! Sound, not complete: a rule is reported only when, for every source its policy covers, one
//! earlier rule provably matches every request the rule matches (over HTTP and over TCP) and
//! decides it. "Provably" is structural: each constraint of the earlier rule must be implied by a
//! constraint of the later one (a wildcard host covering a narrower one, a CIDR containing
//! another, equal ports...). When in doubt the rule is not reported.
//!
//! Evaluation order is the filter's: Admin tier (first match decides; PASS leaves the tier), then
//! the source namespace's EgressPolicies (Istio semantics: a DENY match denies; if ALLOW policies
//! exist, whatever they do not allow is denied), then Baseline, then the default.

use std::collections::{BTreeMap, BTreeSet};

use crate::compile::PolicySet;
use crate::resources::{
    Condition, Operation, PolicyAction, PolicyRef, Rule, RuleAction, RuleFrom, RuleTo, Source, Tier,
};

/// One unreachable rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// `paste-sites`, or `rules[2]` for an EgressPolicy rule (they have no names).
    pub rule: String,
    /// `spec.rules[2]`.
    pub field: String,
    /// What decides first, e.g. `denied first by ClusterEgressPolicy block-paste priority 10,
    /// rule paste-sites`.
    pub by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Allow,
    Deny,
    Pass,
    Audit,
}

impl Act {
    fn verb(self) -> &'static str {
        match self {
            Act::Allow => "allowed",
            Act::Deny => "denied",
            Act::Pass => "passed on",
            Act::Audit => "audited",
        }
    }
}

impl From<RuleAction> for Act {
    fn from(a: RuleAction) -> Act {
        match a {
            RuleAction::Allow => Act::Allow,
            RuleAction::Deny => Act::Deny,
            RuleAction::Pass => Act::Pass,
        }
    }
}

/// Who a rule is evaluated for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Domain {
    /// Every source, plaintext ones included.
    Any,
    Namespace(String),
}

/// A rule of a tier policy, in evaluation order.
struct TierStep<'a> {
    policy: PolicyRef,
    priority: i64,
    subject: Option<&'a Vec<String>>,
    enforced: bool,
    rule_index: usize,
    rule_name: &'a str,
    act: Act,
    rule: Rule,
}

impl TierStep<'_> {
    fn applies_to(&self, domain: &Domain) -> bool {
        match (self.subject, domain) {
            (None, _) => true,
            (Some(_), Domain::Any) => false,
            (Some(names), Domain::Namespace(n)) => names.contains(n),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} first by {} priority {}, rule {}",
            self.act.verb(),
            self.policy,
            self.priority,
            self.rule_name
        )
    }
}

/// Every unreachable rule, by policy (policies with none are absent).
pub fn analyse(
    set: &PolicySet,
    subjects: &BTreeMap<String, Option<Vec<String>>>,
) -> BTreeMap<PolicyRef, Vec<Shadowed>> {
    let mut tiers: BTreeMap<Tier, Vec<TierStep<'_>>> = BTreeMap::new();
    let mut ordered: Vec<_> = set.cluster_policies.iter().collect();
    ordered.sort_by(|a, b| {
        (a.spec.priority, &a.metadata.name).cmp(&(b.spec.priority, &b.metadata.name))
    });
    for policy in ordered {
        let name = policy.metadata.name.clone().unwrap_or_default();
        // A policy that did not compile is not in the configuration.
        let Some(subject) = subjects.get(&name) else {
            continue;
        };
        for (i, rule) in policy.spec.rules.iter().enumerate() {
            tiers.entry(policy.spec.tier).or_default().push(TierStep {
                policy: policy.reference(),
                priority: policy.spec.priority,
                subject: subject.as_ref(),
                enforced: !policy.spec.dry_run,
                rule_index: i,
                rule_name: &rule.name,
                act: rule.action.into(),
                rule: rule.match_rule(),
            });
        }
    }
    let empty = Vec::new();
    let admin = tiers.get(&Tier::Admin).unwrap_or(&empty);
    let baseline = tiers.get(&Tier::Baseline).unwrap_or(&empty);
    let namespace_tier = NamespaceTier::new(set);

    let mut out: BTreeMap<PolicyRef, Vec<Shadowed>> = BTreeMap::new();
    for (tier, steps) in [(Tier::Admin, admin), (Tier::Baseline, baseline)] {
        for (position, step) in steps.iter().enumerate() {
            let domains = match step.subject {
                None => vec![Domain::Any],
                Some(names) => names.iter().cloned().map(Domain::Namespace).collect(),
            };
            let earlier = &steps[..position];
            let by = decide_over(&domains, &step.rule, step.act, |domain, rule, act| {
                // The earliest decider is the one named.
                if tier == Tier::Baseline {
                    if let Some(found) = admin_decides(admin, domain, rule, act) {
                        return Some(found);
                    }
                    if let Domain::Namespace(n) = domain {
                        if let Some(found) = namespace_tier.decides(n, rule, act) {
                            return Some(found);
                        }
                    }
                }
                first_covering(earlier, domain, rule, act).map(TierStep::describe)
            });
            if let Some(by) = by {
                out.entry(step.policy.clone()).or_default().push(Shadowed {
                    rule: step.rule_name.to_string(),
                    field: format!("spec.rules[{}]", step.rule_index),
                    by,
                });
            }
        }
    }
    for policy in &set.egress_policies {
        let Some(namespace) = policy.metadata.namespace.clone() else {
            continue;
        };
        let act = match policy.spec.action() {
            PolicyAction::Allow => Act::Allow,
            PolicyAction::Deny => Act::Deny,
            PolicyAction::Audit => Act::Audit,
        };
        let domains = [Domain::Namespace(namespace)];
        for (i, rule) in policy.spec.rules.iter().flatten().enumerate() {
            let by = decide_over(&domains, rule, act, |domain, rule, act| {
                admin_decides(admin, domain, rule, act)
            });
            if let Some(by) = by {
                out.entry(policy.reference()).or_default().push(Shadowed {
                    rule: format!("rules[{i}]"),
                    field: format!("spec.rules[{i}]"),
                    by,
                });
            }
        }
    }
    out
}

/// Runs `decider` for each domain on the rule specialised to it; the rule is shadowed when every
/// domain where it can match at all has a decider (and at least one has).
fn decide_over(
    domains: &[Domain],
    rule: &Rule,
    act: Act,
    mut decider: impl FnMut(&Domain, &Rule, Act) -> Option<String>,
) -> Option<String> {
    let mut found: Vec<(String, String)> = Vec::new();
    for domain in domains {
        let Some(specialised) = specialise(rule, domain) else {
            continue; // cannot match any source of this domain
        };
        let by = decider(domain, &specialised, act)?;
        let label = match domain {
            Domain::Any => String::new(),
            Domain::Namespace(n) => n.clone(),
        };
        found.push((label, by));
    }
    let first = found.first()?.1.clone();
    if found.iter().all(|(_, by)| *by == first) {
        Some(first)
    } else {
        Some(
            found
                .iter()
                .map(|(ns, by)| format!("for namespace {ns}: {by}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

/// The first step (any action: each one takes the request out of this point of the tier) that
/// matches everything `rule` matches.
fn first_covering<'s, 'a>(
    steps: &'s [TierStep<'a>],
    domain: &Domain,
    rule: &Rule,
    act: Act,
) -> Option<&'s TierStep<'a>> {
    steps
        .iter()
        .filter(|s| s.enforced && s.applies_to(domain))
        .find(|s| specialise(&s.rule, domain).is_some_and(|r| covers(&r, rule, act)))
}

/// An Admin ALLOW or DENY that decides everything `rule` matches before a later tier sees it. A
/// PASS earlier in the tier could let some of those requests through to the later tier, so the
/// search stops at the first one.
fn admin_decides(admin: &[TierStep<'_>], domain: &Domain, rule: &Rule, act: Act) -> Option<String> {
    for step in admin.iter().filter(|s| s.enforced && s.applies_to(domain)) {
        if step.act == Act::Pass {
            return None;
        }
        if specialise(&step.rule, domain).is_some_and(|r| covers(&r, rule, act)) {
            return Some(step.describe());
        }
    }
    None
}

/// The namespace tier as Baseline rules see it.
struct NamespaceTier<'a> {
    /// Namespaces with an enforced ALLOW EgressPolicy: every request reaching the tier is decided.
    with_allow: BTreeSet<String>,
    /// Enforced DENY EgressPolicies by namespace: (policy, rule index, rule).
    denies: BTreeMap<String, Vec<(PolicyRef, usize, &'a Rule)>>,
}

impl<'a> NamespaceTier<'a> {
    fn new(set: &'a PolicySet) -> Self {
        let mut tier = NamespaceTier {
            with_allow: BTreeSet::new(),
            denies: BTreeMap::new(),
        };
        for policy in set.egress_policies.iter().filter(|p| !p.dry_run()) {
            let Some(namespace) = policy.metadata.namespace.clone() else {
                continue;
            };
            match policy.spec.action() {
                PolicyAction::Allow => {
                    tier.with_allow.insert(namespace);
                }
                PolicyAction::Deny => {
                    for (i, rule) in policy.spec.rules.iter().flatten().enumerate() {
                        tier.denies.entry(namespace.clone()).or_default().push((
                            policy.reference(),
                            i,
                            rule,
                        ));
                    }
                }
                PolicyAction::Audit => {}
            }
        }
        tier
    }

    fn decides(&self, namespace: &str, rule: &Rule, act: Act) -> Option<String> {
        let domain = Domain::Namespace(namespace.to_string());
        for (policy, i, deny) in self.denies.get(namespace).into_iter().flatten() {
            if specialise(deny, &domain).is_some_and(|r| covers(&r, rule, act)) {
                return Some(format!("denied first by {policy}, rules[{i}]"));
            }
        }
        if self.with_allow.contains(namespace) {
            return Some(format!(
                "decided first by the EgressPolicies of namespace {namespace} (it has ALLOW policies: what they do not allow is denied there)"
            ));
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Specialising a rule to the sources of one namespace

/// The rule as it acts on requests from `domain`: constraints on the source namespace are
/// resolved (dropped when they hold, the entry removed when they cannot). `None`: the rule
/// matches no request from there.
fn specialise(rule: &Rule, domain: &Domain) -> Option<Rule> {
    let Domain::Namespace(namespace) = domain else {
        return Some(rule.clone());
    };
    let mut out = rule.clone();
    if let Some(from) = &rule.from {
        let kept: Vec<RuleFrom> = from
            .iter()
            .filter_map(|entry| {
                let Some(source) = &entry.source else {
                    return Some(entry.clone());
                };
                let mut source = source.clone();
                if let Some(names) = source.namespaces.take() {
                    if !names.iter().any(|p| string_matches(p, namespace)) {
                        return None;
                    }
                }
                if let Some(names) = source.not_namespaces.take() {
                    if names.iter().any(|p| string_matches(p, namespace)) {
                        return None;
                    }
                }
                Some(RuleFrom {
                    source: Some(source),
                })
            })
            .collect();
        if kept.is_empty() {
            return None;
        }
        out.from = Some(kept);
    }
    if let Some(when) = &rule.when {
        let mut kept = Vec::new();
        for condition in when {
            if condition.key != "source.namespace" {
                kept.push(condition.clone());
                continue;
            }
            if let Some(values) = &condition.values {
                if !values.iter().any(|p| string_matches(p, namespace)) {
                    return None;
                }
            }
            if let Some(values) = &condition.not_values {
                if values.iter().any(|p| string_matches(p, namespace)) {
                    return None;
                }
            }
        }
        out.when = Some(kept);
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Coverage: does rule A match every request rule B matches?

/// Over HTTP and TCP. On TCP the filter (as Istio) drops an ALLOW rule with HTTP-only fields and
/// ignores those fields in other rules; an earlier rule with HTTP-only fields is not trusted to
/// cover anything on TCP.
fn covers(a: &Rule, b: &Rule, b_act: Act) -> bool {
    if !covers_rule(a, b) {
        return false;
    }
    let b_on_tcp = if has_http_only(b) {
        if b_act == Act::Allow {
            return true; // B never matches a TCP connection
        }
        without_http_only(b)
    } else {
        b.clone()
    };
    !has_http_only(a) && covers_rule(a, &b_on_tcp)
}

fn has_http_only(rule: &Rule) -> bool {
    rule.to.iter().flatten().any(|t| {
        t.operation.as_ref().is_some_and(|o| {
            o.hosts.is_some()
                || o.not_hosts.is_some()
                || o.methods.is_some()
                || o.not_methods.is_some()
                || o.paths.is_some()
                || o.not_paths.is_some()
        })
    }) || rule
        .when
        .iter()
        .flatten()
        .any(|c| c.key.starts_with("request."))
}

fn without_http_only(rule: &Rule) -> Rule {
    let mut out = rule.clone();
    if let Some(to) = &mut out.to {
        for entry in to.iter_mut() {
            if let Some(o) = &mut entry.operation {
                o.hosts = None;
                o.not_hosts = None;
                o.methods = None;
                o.not_methods = None;
                o.paths = None;
                o.not_paths = None;
            }
        }
    }
    if let Some(when) = &mut out.when {
        when.retain(|c| !c.key.starts_with("request."));
    }
    out
}

fn covers_rule(a: &Rule, b: &Rule) -> bool {
    covers_list(
        a.from.as_deref(),
        b.from.as_deref(),
        |x: &RuleFrom| x.source.as_ref().is_none_or(source_is_empty),
        |x, y| covers_source(x.source.as_ref(), y.source.as_ref()),
    ) && covers_list(
        a.to.as_deref(),
        b.to.as_deref(),
        |x: &RuleTo| {
            x.operation
                .as_ref()
                .is_none_or(|o| *o == Operation::default())
        },
        |x, y| covers_operation(x.operation.as_ref(), y.operation.as_ref()),
    ) && covers_conditions(a.when.as_deref(), b.when.as_deref())
}

/// An OR-list (`from`, `to`): absent matches anything; B's entries must each be covered by one of
/// A's.
fn covers_list<T>(
    a: Option<&[T]>,
    b: Option<&[T]>,
    universal: impl Fn(&T) -> bool,
    entry: impl Fn(&T, &T) -> bool,
) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(a), None) => a.iter().any(universal),
        (Some(a), Some(b)) => b.iter().all(|y| a.iter().any(|x| entry(x, y))),
    }
}

fn source_is_empty(s: &Source) -> bool {
    *s == Source::default()
}

/// A positive field of A (`hosts`) holds for B when B has it too, each of B's values covered by
/// one of A's; a negative field of A (`notHosts`) holds when B excludes at least as much.
fn covers_field(
    a: Option<&Vec<String>>,
    b: Option<&Vec<String>>,
    not: bool,
    pattern: fn(&str, &str) -> bool,
) -> bool {
    match (a, b, not) {
        (None, _, _) => true,
        (Some(_), None, _) => false,
        (Some(a), Some(b), false) => b.iter().all(|y| a.iter().any(|x| pattern(x, y))),
        (Some(a), Some(b), true) => a.iter().all(|x| b.iter().any(|y| pattern(y, x))),
    }
}

fn covers_source(a: Option<&Source>, b: Option<&Source>) -> bool {
    let Some(a) = a else { return true };
    let default = Source::default();
    let b = b.unwrap_or(&default);
    // Fields the filter cannot evaluate: nothing is claimed about them.
    if a.request_principals.is_some()
        || a.not_request_principals.is_some()
        || a.service_accounts.is_some()
        || a.not_service_accounts.is_some()
        || a.trust_domains.is_some()
        || a.not_trust_domains.is_some()
    {
        return false;
    }
    covers_field(
        a.principals.as_ref(),
        b.principals.as_ref(),
        false,
        string_covers,
    ) && covers_field(
        a.not_principals.as_ref(),
        b.not_principals.as_ref(),
        true,
        string_covers,
    ) && covers_field(
        a.namespaces.as_ref(),
        b.namespaces.as_ref(),
        false,
        string_covers,
    ) && covers_field(
        a.not_namespaces.as_ref(),
        b.not_namespaces.as_ref(),
        true,
        string_covers,
    ) && covers_field(
        a.ip_blocks.as_ref(),
        b.ip_blocks.as_ref(),
        false,
        cidr_covers,
    ) && covers_field(
        a.not_ip_blocks.as_ref(),
        b.not_ip_blocks.as_ref(),
        true,
        cidr_covers,
    ) && covers_field(
        a.remote_ip_blocks.as_ref(),
        b.remote_ip_blocks.as_ref(),
        false,
        cidr_covers,
    ) && covers_field(
        a.not_remote_ip_blocks.as_ref(),
        b.not_remote_ip_blocks.as_ref(),
        true,
        cidr_covers,
    )
}

fn covers_operation(a: Option<&Operation>, b: Option<&Operation>) -> bool {
    let Some(a) = a else { return true };
    let default = Operation::default();
    let b = b.unwrap_or(&default);
    covers_field(a.hosts.as_ref(), b.hosts.as_ref(), false, host_covers)
        && covers_field(
            a.not_hosts.as_ref(),
            b.not_hosts.as_ref(),
            true,
            host_covers,
        )
        && covers_field(a.ports.as_ref(), b.ports.as_ref(), false, equal)
        && covers_field(a.not_ports.as_ref(), b.not_ports.as_ref(), true, equal)
        && covers_field(a.methods.as_ref(), b.methods.as_ref(), false, equal)
        && covers_field(a.not_methods.as_ref(), b.not_methods.as_ref(), true, equal)
        && covers_field(a.paths.as_ref(), b.paths.as_ref(), false, path_covers)
        && covers_field(
            a.not_paths.as_ref(),
            b.not_paths.as_ref(),
            true,
            path_covers,
        )
}

/// `when` is an AND-list: each of A's conditions must be implied by one of B's on the same key
/// (values compared exactly: their meaning depends on the key).
fn covers_conditions(a: Option<&[Condition]>, b: Option<&[Condition]>) -> bool {
    let b = b.unwrap_or_default();
    a.unwrap_or_default().iter().all(|x| {
        b.iter().any(|y| {
            y.key == x.key
                && covers_field(x.values.as_ref(), y.values.as_ref(), false, equal)
                && covers_field(x.not_values.as_ref(), y.not_values.as_ref(), true, equal)
        })
    })
}

fn equal(a: &str, b: &str) -> bool {
    a == b
}

/// Istio's string forms: `exact`, `prefix*`, `*suffix`, `*` (any non-empty value).
#[derive(Debug, PartialEq, Eq)]
enum Pattern<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Suffix(&'a str),
    Any,
}

fn pattern(raw: &str) -> Pattern<'_> {
    if raw == "*" {
        Pattern::Any
    } else if let Some(p) = raw.strip_suffix('*') {
        Pattern::Prefix(p)
    } else if let Some(s) = raw.strip_prefix('*') {
        Pattern::Suffix(s)
    } else {
        Pattern::Exact(raw)
    }
}

fn string_matches(raw: &str, value: &str) -> bool {
    match pattern(raw) {
        Pattern::Exact(e) => value == e,
        Pattern::Prefix(p) => value.starts_with(p),
        Pattern::Suffix(s) => value.ends_with(s),
        Pattern::Any => !value.is_empty(),
    }
}

/// Whether every value pattern `b` matches is matched by pattern `a`.
fn string_covers(a: &str, b: &str) -> bool {
    match (pattern(a), pattern(b)) {
        (Pattern::Any, _) => true,
        (_, Pattern::Any) => false,
        (Pattern::Exact(x), Pattern::Exact(y)) => x == y,
        (Pattern::Prefix(x), Pattern::Exact(y) | Pattern::Prefix(y)) => y.starts_with(x),
        (Pattern::Suffix(x), Pattern::Exact(y) | Pattern::Suffix(y)) => y.ends_with(x),
        _ => false,
    }
}

/// Paths: templates (`{*}`, `{**}`) are only compared for equality.
fn path_covers(a: &str, b: &str) -> bool {
    if a.contains('{') || b.contains('{') {
        return a == b;
    }
    string_covers(a, b)
}

/// Hosts as the filter matches them: case-insensitive, `host:*` as `host`, a trailing dot
/// ignored; `*.example.com` is any name strictly below `example.com`.
fn host_covers(a: &str, b: &str) -> bool {
    let normal = |h: &str| {
        let h = h.to_ascii_lowercase();
        let h = h.strip_suffix(":*").unwrap_or(&h).to_string();
        if h.len() > 1 {
            h.strip_suffix('.').unwrap_or(&h).to_string()
        } else {
            h
        }
    };
    let (a, b) = (normal(a), normal(b));
    // `*.d` is the suffix `.d`, which is what the general forms compare.
    string_covers(&a, &b)
}

/// Whether CIDR (or address) `a` contains every address of `b`; anything unparsable is not
/// claimed.
fn cidr_covers(a: &str, b: &str) -> bool {
    match (parse_cidr(a), parse_cidr(b)) {
        (Some((net_a, len_a, v6_a)), Some((net_b, len_b, v6_b))) => {
            v6_a == v6_b && len_a <= len_b && {
                let bits = if v6_a { 128 } else { 32 };
                let shift = bits - u32::from(len_a);
                let mask = if shift >= 128 { 0 } else { !0u128 << shift };
                net_a & mask == net_b & mask
            }
        }
        _ => false,
    }
}

fn parse_cidr(text: &str) -> Option<(u128, u8, bool)> {
    let (address, length) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (text, None),
    };
    let ip: std::net::IpAddr = address.parse().ok()?;
    let (bits, v6, value) = match ip {
        std::net::IpAddr::V4(v4) => (32, false, u128::from(u32::from(v4))),
        std::net::IpAddr::V6(v6) => (128, true, u128::from(v6)),
    };
    let length = length.unwrap_or(bits);
    (length <= bits).then_some((value, length, v6))
}

#[cfg(test)]
mod tests;
