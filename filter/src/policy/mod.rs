//! Istio AuthorizationPolicy semantics over compiled rules.
//!
//! Order: any matching DENY policy denies; otherwise, if ALLOW policies exist, one must match;
//! AUDIT policies never change the decision; dry-run policies are evaluated and reported only.
//! HTTP requests and TCP connections each have their own compiled variant of every rule (see
//! [`HttpOnlyOnTcp`]).

mod decision;
mod rule;
mod tiers;
mod trace;

pub use decision::{
    Decision, DryRunHit, PolicyAction, Reason, RuleRef, TierName, Verdict, WouldBe,
};
pub use rule::{compile_rule, Check, CompiledRule, FieldMatcher, HttpOnlyOnTcp, RuleMatcher};
pub use tiers::{CompiledTiers, LimitPlan, RuleAction, TierPolicyInfo};
pub use trace::{RuleResult, TraceStep, Tracer};

use crate::attributes::{Attributes, Reads, TrafficKind};
use crate::config::{ConfigError, ConfigErrorKind, ConfigPath, PolicySpec, RuleSpec};
use crate::matchers::host::{HostTable, HostTableBuilder};
use crate::matchers::{fast_map, HostPattern};
use crate::text::sort_by;

/// Below this many rules in a tier, scanning them is as fast as consulting an index.
const INDEX_MIN_RULES: usize = 8;

#[derive(Debug, Clone)]
pub struct PolicyInfo {
    pub name: String,
    pub action: PolicyAction,
    pub dry_run: bool,
    /// Number of rules in the configuration (some may not apply to TCP connections).
    pub rules: usize,
}

#[derive(Debug, Clone)]
struct RuleEntry {
    policy: u32,
    rule: u32,
    matcher: RuleMatcher,
}

#[derive(Debug, Clone, Copy)]
enum IndexKey {
    Host,
    Sni,
}

/// Rules narrowed down by host (HTTP) or SNI (TCP) before they are evaluated one by one.
#[derive(Debug, Clone)]
struct RuleIndex {
    key: IndexKey,
    table: HostTable,
    /// Rules without a host requirement: always candidates.
    unindexed: Vec<u32>,
}

/// The rules of one kind of policy (DENY, ALLOW, ...), in configuration order.
#[derive(Debug, Clone, Default)]
struct RuleList {
    entries: Vec<RuleEntry>,
    index: Option<RuleIndex>,
}

#[derive(Default)]
struct RuleListBuilder {
    entries: Vec<RuleEntry>,
    keys: Vec<Option<Vec<HostPattern>>>,
}

impl RuleListBuilder {
    fn push(&mut self, entry: RuleEntry, keys: Option<Vec<HostPattern>>) {
        self.entries.push(entry);
        self.keys.push(keys);
    }

    fn build(self, key: IndexKey) -> RuleList {
        let indexed = self.keys.iter().filter(|k| k.is_some()).count();
        if self.entries.len() < INDEX_MIN_RULES || indexed * 2 < self.entries.len() {
            return RuleList {
                entries: self.entries,
                index: None,
            };
        }
        let mut table = HostTableBuilder::default();
        let mut unindexed = Vec::new();
        for (i, keys) in self.keys.iter().enumerate() {
            let id = i as u32;
            match keys {
                Some(patterns) => patterns.iter().for_each(|p| table.insert(p, id)),
                None => unindexed.push(id),
            }
        }
        RuleList {
            entries: self.entries,
            index: Some(RuleIndex {
                key,
                table: table.build(),
                unindexed,
            }),
        }
    }
}

impl RuleList {
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Visits the entries that match, in order; stops when `f` returns true.
    fn each_match<'a>(&'a self, attrs: &Attributes, f: impl FnMut(&'a RuleEntry) -> bool) {
        self.each_match_where(attrs, |_| true, f);
    }

    /// [`RuleList::each_match`] over the entries `keep` accepts (checked before matching).
    fn each_match_where<'a>(
        &'a self,
        attrs: &Attributes,
        keep: impl Fn(&RuleEntry) -> bool,
        mut f: impl FnMut(&'a RuleEntry) -> bool,
    ) {
        match &self.index {
            None => {
                for entry in &self.entries {
                    if keep(entry) && entry.matcher.matches(attrs) && f(entry) {
                        return;
                    }
                }
            }
            Some(index) => {
                let mut candidates = index.unindexed.clone();
                let value = match index.key {
                    IndexKey::Host => attrs.host(),
                    IndexKey::Sni => attrs.sni.as_deref(),
                };
                if let Some(value) = value {
                    index.table.for_each_match(value, &mut |id| {
                        candidates.push(id);
                        false
                    });
                }
                sort_by(&mut candidates, |a, b| a < b);
                candidates.dedup();
                for id in candidates {
                    let Some(entry) = self.entries.get(id as usize) else {
                        continue;
                    };
                    if keep(entry) && entry.matcher.matches(attrs) && f(entry) {
                        return;
                    }
                }
            }
        }
    }

    fn first_match(&self, attrs: &Attributes) -> Option<&RuleEntry> {
        let mut found = None;
        self.each_match(attrs, |entry| {
            found = Some(entry);
            true
        });
        found
    }

    /// The first matching rule of every policy that has one.
    fn matches_per_policy(&self, attrs: &Attributes) -> Vec<(u32, u32)> {
        let mut hits: Vec<(u32, u32)> = Vec::new();
        self.each_match(attrs, |entry| {
            if hits.last().map(|h| h.0) != Some(entry.policy) {
                hits.push((entry.policy, entry.rule));
            }
            false
        });
        hits
    }
}

/// The policies compiled for one kind of traffic, by action.
#[derive(Debug, Clone, Default)]
struct ActionLists {
    deny: RuleList,
    allow: RuleList,
    audit: RuleList,
    dry_run: RuleList,
}

impl ActionLists {
    /// The list holding `info`'s rules (as [`ActionListsBuilder::list`] filled it).
    fn list_of(&self, info: &PolicyInfo) -> &RuleList {
        if info.dry_run {
            return &self.dry_run;
        }
        match info.action {
            PolicyAction::Deny => &self.deny,
            PolicyAction::Allow => &self.allow,
            PolicyAction::Audit => &self.audit,
        }
    }
}

#[derive(Default)]
struct ActionListsBuilder {
    deny: RuleListBuilder,
    allow: RuleListBuilder,
    audit: RuleListBuilder,
    dry_run: RuleListBuilder,
}

impl ActionListsBuilder {
    fn list(&mut self, info: &PolicyInfo) -> &mut RuleListBuilder {
        if info.dry_run {
            return &mut self.dry_run;
        }
        match info.action {
            PolicyAction::Deny => &mut self.deny,
            PolicyAction::Allow => &mut self.allow,
            PolicyAction::Audit => &mut self.audit,
        }
    }

    fn build(self, key: IndexKey) -> ActionLists {
        ActionLists {
            deny: self.deny.build(key),
            allow: self.allow.build(key),
            audit: self.audit.build(key),
            dry_run: self.dry_run.build(key),
        }
    }
}

/// All policies, compiled once per configuration and shared by every stream.
#[derive(Debug, Clone, Default)]
pub struct CompiledPolicy {
    policies: Vec<PolicyInfo>,
    http: ActionLists,
    tcp: ActionLists,
    /// An enforced ALLOW policy exists (even one without rules): requests must match one.
    enforced_allow: bool,
    dry_run_allow: Vec<u32>,
    header_names: Vec<String>,
    /// The connection properties some rule needs read for an HTTP request.
    http_reads: Reads,
    /// Some rule that applies to TCP reads inspection facts (`connection.protocol`, ...).
    tcp_needs_inspection: bool,
}

/// Where a rule goes: its policy (position in the list being built) and index, its path in
/// the document, and how its HTTP-only fields apply to TCP.
struct RuleAt<'a> {
    policy: u32,
    rule: u32,
    path: &'a ConfigPath,
    on_tcp: HttpOnlyOnTcp,
}

/// Compiles a rule into its HTTP list and, when it applies to TCP, its TCP list; adds the
/// headers it reads to `header_names` and the connection properties its HTTP form needs to
/// `http_reads`. Returns whether TCP connections must be inspected for it.
#[inline(never)]
fn push_rule(
    [http, tcp]: [&mut RuleListBuilder; 2],
    spec: &RuleSpec,
    at: &RuleAt<'_>,
    header_names: &mut Vec<String>,
    http_reads: &mut Reads,
) -> Result<bool, ConfigError> {
    let rule = compile_rule(spec, at.path, at.on_tcp)?;
    for name in rule.http.header_names() {
        crate::text::add_unique(header_names, name);
    }
    *http_reads |= rule.http.reads();
    let mut needs_inspection = false;
    if let Some(matcher) = rule.tcp {
        needs_inspection = matcher.needs_inspection();
        let entry = RuleEntry {
            policy: at.policy,
            rule: at.rule,
            matcher,
        };
        tcp.push(entry, rule.sni_keys);
    }
    let entry = RuleEntry {
        policy: at.policy,
        rule: at.rule,
        matcher: rule.http,
    };
    http.push(entry, rule.host_keys);
    Ok(needs_inspection)
}

/// Policy and rule names become parts of metric names and log lines.
fn is_valid_name(name: &str) -> bool {
    name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn validate_name(name: &str, path: &ConfigPath) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::new(path.clone(), ConfigErrorKind::EmptyName));
    }
    if !is_valid_name(name) {
        return Err(ConfigError::new(
            path.clone(),
            ConfigErrorKind::InvalidName(name.to_string()),
        ));
    }
    if let Some(why) = crate::stat_name::tag_extraction_clash(name) {
        return Err(ConfigError::new(
            path.clone(),
            ConfigErrorKind::NameRewrittenByStatsTags(name.to_string(), why),
        ));
    }
    Ok(())
}

fn parse_action(action: Option<&str>, path: &ConfigPath) -> Result<PolicyAction, ConfigError> {
    match action {
        None | Some("ALLOW") => Ok(PolicyAction::Allow),
        Some("DENY") => Ok(PolicyAction::Deny),
        Some("AUDIT") => Ok(PolicyAction::Audit),
        Some(other @ "CUSTOM") => Err(ConfigError::new(
            path.clone(),
            ConfigErrorKind::UnsupportedAction(other.to_string()),
        )),
        Some(other) => Err(ConfigError::new(
            path.clone(),
            ConfigErrorKind::InvalidAction(other.to_string()),
        )),
    }
}

impl CompiledPolicy {
    /// Validates and compiles `policies` found at `path` in the configuration document.
    pub fn compile(specs: &[PolicySpec], path: &ConfigPath) -> Result<Self, ConfigError> {
        let mut policies = Vec::with_capacity(specs.len());
        // By Prometheus form: names equal there would be one metric.
        let mut names = fast_map::<Box<str>, String>();
        let mut http = ActionListsBuilder::default();
        let mut tcp = ActionListsBuilder::default();
        let mut header_names: Vec<String> = Vec::new();
        let mut http_reads = Reads::NONE;
        let mut tcp_needs_inspection = false;

        for (p, spec) in specs.iter().enumerate() {
            let path = path.index(p);
            validate_name(&spec.name, &path.field("name"))?;
            let metric_form = crate::stat_name::prometheus_form(&spec.name);
            if let Some(other) = names.insert(metric_form.into(), spec.name.clone()) {
                let kind = if other == spec.name {
                    ConfigErrorKind::DuplicateName(spec.name.clone())
                } else {
                    ConfigErrorKind::MetricNameClash(spec.name.clone(), other)
                };
                return Err(ConfigError::new(path.field("name"), kind));
            }
            let action = parse_action(spec.action.as_deref(), &path.field("action"))?;
            // Istio's validation refuses this: it would look like a deny-all but never matches.
            if action == PolicyAction::Deny && spec.rules.as_ref().is_none_or(Vec::is_empty) {
                return Err(ConfigError::new(
                    path.clone(),
                    ConfigErrorKind::DenyWithoutRules,
                ));
            }
            let info = PolicyInfo {
                name: spec.name.clone(),
                action,
                dry_run: spec.dry_run,
                rules: spec.rules.as_ref().map_or(0, Vec::len),
            };
            let on_tcp = match action {
                PolicyAction::Allow => HttpOnlyOnTcp::DropRule,
                PolicyAction::Deny | PolicyAction::Audit => HttpOnlyOnTcp::IgnoreField,
            };
            for (r, rule_spec) in spec.rules.iter().flatten().enumerate() {
                let lists = [http.list(&info), tcp.list(&info)];
                let at = RuleAt {
                    policy: p as u32,
                    rule: r as u32,
                    path: &path.field("rules").index(r),
                    on_tcp,
                };
                tcp_needs_inspection |=
                    push_rule(lists, rule_spec, &at, &mut header_names, &mut http_reads)?;
            }
            policies.push(info);
        }

        let enforced_allow = policies
            .iter()
            .any(|p| !p.dry_run && p.action == PolicyAction::Allow);
        let dry_run_allow = policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.dry_run && p.action == PolicyAction::Allow)
            .map(|(i, _)| i as u32)
            .collect();
        sort_by(&mut header_names, |a, b| a < b);
        Ok(Self {
            policies,
            http: http.build(IndexKey::Host),
            tcp: tcp.build(IndexKey::Sni),
            enforced_allow,
            dry_run_allow,
            header_names,
            http_reads,
            tcp_needs_inspection,
        })
    }

    /// The connection properties some rule needs read for an HTTP request.
    pub fn http_reads(&self) -> Reads {
        self.http_reads
    }

    /// TCP connections must be inspected before these policies can decide them.
    pub fn tcp_needs_inspection(&self) -> bool {
        self.tcp_needs_inspection
    }

    pub fn policies(&self) -> &[PolicyInfo] {
        &self.policies
    }

    /// Lower-case names of the request headers some rule reads (the only ones gathered).
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    fn name(&self, policy: u32) -> &str {
        self.policies
            .get(policy as usize)
            .map_or("", |p| p.name.as_str())
    }

    fn action(&self, policy: u32) -> Option<PolicyAction> {
        self.policies.get(policy as usize).map(|p| p.action)
    }

    fn lists(&self, kind: TrafficKind) -> &ActionLists {
        match kind {
            TrafficKind::Http => &self.http,
            TrafficKind::Tcp => &self.tcp,
        }
    }

    pub fn evaluate(&self, attrs: &Attributes) -> Decision<'_> {
        let tier = self.lists(attrs.kind());

        let audit = tier
            .audit
            .matches_per_policy(attrs)
            .into_iter()
            .map(|(p, _)| self.name(p))
            .collect();

        let mut decision = Decision {
            verdict: Verdict::Deny,
            policy: None,
            rule: None,
            action: None,
            reason: Reason::NoAllowPolicyMatched,
            audit,
            dry_run: Vec::new(),
            tier: None,
            rule_name: None,
            passed: None,
            namespace: None,
        };
        if let Some(entry) = tier.deny.first_match(attrs) {
            decision.policy = Some(self.name(entry.policy));
            decision.rule = Some(entry.rule as usize);
            decision.action = Some(PolicyAction::Deny);
            decision.reason = Reason::DeniedByPolicy;
        } else if !self.enforced_allow {
            decision.verdict = Verdict::Allow;
            decision.reason = Reason::NoAllowPolicies;
        } else if let Some(entry) = tier.allow.first_match(attrs) {
            decision.verdict = Verdict::Allow;
            decision.policy = Some(self.name(entry.policy));
            decision.rule = Some(entry.rule as usize);
            decision.action = Some(PolicyAction::Allow);
            decision.reason = Reason::AllowedByPolicy;
        }

        if !tier.dry_run.is_empty() || !self.dry_run_allow.is_empty() {
            decision.dry_run = self.dry_run_hits(tier, attrs, &decision);
        }
        decision
    }

    fn dry_run_hits<'p>(
        &'p self,
        tier: &ActionLists,
        attrs: &Attributes,
        actual: &Decision<'_>,
    ) -> Vec<DryRunHit<'p>> {
        let denied_by_policy = actual.reason == Reason::DeniedByPolicy;
        let matched = tier.dry_run.matches_per_policy(attrs);
        let mut hits: Vec<(u32, DryRunHit<'p>)> = matched
            .iter()
            .filter_map(|&(p, r)| {
                let would_be = match self.action(p)? {
                    PolicyAction::Deny => WouldBe::Deny,
                    PolicyAction::Audit => WouldBe::Audit,
                    PolicyAction::Allow if denied_by_policy => WouldBe::Deny,
                    PolicyAction::Allow => WouldBe::Allow,
                };
                Some((
                    p,
                    DryRunHit {
                        policy: self.name(p),
                        rule: Some(r as usize),
                        would_be,
                        tier: None,
                        rule_name: None,
                    },
                ))
            })
            .collect();
        // An ALLOW policy that does not match would deny a request allowed only because no
        // ALLOW policy is enforced yet.
        if actual.reason == Reason::NoAllowPolicies {
            for &p in &self.dry_run_allow {
                if !matched.iter().any(|(m, _)| *m == p) {
                    hits.push((
                        p,
                        DryRunHit {
                            policy: self.name(p),
                            rule: None,
                            would_be: WouldBe::Deny,
                            tier: None,
                            rule_name: None,
                        },
                    ));
                }
            }
            sort_by(&mut hits, |a, b| a.0 < b.0);
        }
        hits.into_iter().map(|(_, hit)| hit).collect()
    }
}
