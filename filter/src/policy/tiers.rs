//! `tiers`: the admin tier (ordered, first matching rule decides, PASS hands on), then the
//! source namespace's own policies (Istio semantics, "no ALLOW policies" is no decision), then
//! the baseline tier (ordered, ALLOW/DENY), then the default.
//!
//! Per request: one hash lookup of the source namespace; admin and baseline order, subjects
//! (as sorted namespace ids) and the rate limits that apply to each namespace are computed at
//! configure time.

use super::trace::reborrow;
use super::{
    is_valid_name, push_rule, validate_name, CompiledPolicy, Decision, DryRunHit, HttpOnlyOnTcp,
    IndexKey, PolicyAction, Reason, RuleAt, RuleList, RuleListBuilder, RuleRef, RuleResult,
    TierName, TraceStep, Tracer, Verdict, WouldBe,
};
use crate::attributes::{Attributes, Reads, TrafficKind};
use crate::config::{ConfigError, ConfigErrorKind, ConfigPath, PolicySpec, RuleSpec, TiersSpec};
use crate::matchers::{fast_map, insert_id, IdMap};
use crate::ratelimit::RateLimitConfig;

/// Compiles one tier-attached rate limit found at a path and returns its index among all the
/// configuration's limits (names are unique across the document).
pub type AddLimit<'a> =
    &'a mut dyn FnMut(&RateLimitConfig, &ConfigPath) -> Result<u32, ConfigError>;

/// The action of an admin or baseline rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    Allow,
    Deny,
    /// Admin tier only: skip the rest of the admin tier, go on with the namespace tier.
    Pass,
}

impl RuleAction {
    /// What the rule does with HTTP-only fields on TCP connections. As Istio does for ALLOW:
    /// a rule that hands out access (ALLOW, or PASS to a less privileged tier) never matches
    /// TCP with them; a DENY rule ignores them on TCP and denies more widely.
    fn on_tcp(self) -> HttpOnlyOnTcp {
        match self {
            Self::Deny => HttpOnlyOnTcp::IgnoreField,
            Self::Allow | Self::Pass => HttpOnlyOnTcp::DropRule,
        }
    }

    pub const ALL: [RuleAction; 3] = [Self::Allow, Self::Deny, Self::Pass];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Pass => "PASS",
        }
    }

    /// The outcome of this rule's policy when it decides (or would, in a dry run).
    pub fn would_be(self) -> WouldBe {
        match self {
            Self::Allow => WouldBe::Allow,
            Self::Deny => WouldBe::Deny,
            Self::Pass => WouldBe::Pass,
        }
    }
}

#[derive(Debug, Clone)]
struct TierRule {
    name: Option<String>,
    action: RuleAction,
    /// The rule's `rateLimit` (never set in a dry-run policy: it enforces nothing).
    limit: Option<u32>,
}

/// An admin or baseline policy.
#[derive(Debug, Clone)]
pub struct TierPolicyInfo {
    pub name: String,
    pub priority: u16,
    pub dry_run: bool,
    /// Sorted namespace ids; `None`: every source.
    subject: Option<Vec<u32>>,
    rules: Vec<TierRule>,
    /// The policy's `rateLimits` (none for a dry-run policy: it enforces nothing).
    limits: Vec<u32>,
}

impl TierPolicyInfo {
    /// Whether the subject holds the source's namespace (a policy without one applies to all).
    fn applies(&self, namespace: Option<u32>) -> bool {
        match &self.subject {
            None => true,
            Some(ids) => namespace.is_some_and(|n| ids.binary_search(&n).is_ok()),
        }
    }

    /// Whether some rule of the policy has this action (its counters exist).
    pub fn has_action(&self, action: RuleAction) -> bool {
        self.rules.iter().any(|r| r.action == action)
    }
}

/// The admin or the baseline tier: policies in evaluation order, and all their rules in one
/// list per kind of traffic, in that order (policy, then rule).
#[derive(Debug, Clone, Default)]
struct OrderedTier {
    policies: Vec<TierPolicyInfo>,
    http: RuleList,
    tcp: RuleList,
}

#[derive(Debug, Clone, Default)]
struct NamespaceTier {
    name: Box<str>,
    /// `None`: the namespace is only named in subjects.
    policies: Option<CompiledPolicy>,
    /// The tier-attached limits every allowed request from this namespace is checked against.
    limits: Vec<u32>,
}

/// Rate limits a tier evaluation attaches to the request, beyond the global `rateLimits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitPlan<'p> {
    /// The PASS rule's and the allowing rule's `rateLimit`.
    pub rules: [Option<u32>; 2],
    /// Policy-level limits whose subject holds the source.
    pub scope: &'p [u32],
}

#[derive(Debug, Clone)]
pub struct CompiledTiers {
    admin: OrderedTier,
    baseline: OrderedTier,
    /// Namespace name → its index in `namespaces`.
    namespace_ids: IdMap,
    namespaces: Vec<NamespaceTier>,
    /// Limits for a source in no namespace named by the configuration (or without one).
    unlisted_limits: Vec<u32>,
    default: Verdict,
    header_names: Vec<String>,
    http_reads: Reads,
    tcp_needs_inspection: bool,
}

/// Builds the tiers, collecting header names and inspection needs on the way.
struct TiersBuilder<'a> {
    namespace_ids: IdMap,
    namespaces: Vec<NamespaceTier>,
    header_names: Vec<String>,
    http_reads: Reads,
    tcp_needs_inspection: bool,
    add_limit: AddLimit<'a>,
}

fn missing(path: &ConfigPath, field: &str) -> ConfigError {
    ConfigError::new(
        path.clone(),
        ConfigErrorKind::Syntax(format!("missing field `{field}`")),
    )
}

impl TiersBuilder<'_> {
    fn namespace_id(&mut self, name: &str) -> u32 {
        if let Some(id) = lookup(&self.namespace_ids, name) {
            return id;
        }
        let id = self.namespaces.len() as u32;
        insert_id(&mut self.namespace_ids, name, id);
        self.namespaces.push(NamespaceTier {
            name: name.into(),
            ..NamespaceTier::default()
        });
        id
    }

    /// Compiles the limits at `path.rateLimits`; those of a dry-run policy are checked only.
    fn limits(&mut self, spec: &PolicySpec, path: &ConfigPath) -> Result<Vec<u32>, ConfigError> {
        let mut ids = Vec::new();
        for (j, limit) in spec.rate_limits.iter().enumerate() {
            let id = (self.add_limit)(limit, &path.field("rateLimits").index(j))?;
            if !spec.dry_run {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    #[inline(never)]
    fn namespace(
        &mut self,
        name: &str,
        specs: &[PolicySpec],
        path: &ConfigPath,
    ) -> Result<(), ConfigError> {
        if let Some(i) = specs
            .iter()
            .position(|s| s.action.as_deref() == Some("PASS"))
        {
            return Err(ConfigError::new(
                path.index(i).field("action"),
                ConfigErrorKind::Tiers(ConfigErrorKind::PASS_OUTSIDE_ADMIN),
            ));
        }
        let policy = CompiledPolicy::compile(specs, path)?;
        for name in policy.header_names() {
            crate::text::add_unique(&mut self.header_names, name);
        }
        self.http_reads |= policy.http_reads();
        self.tcp_needs_inspection |= policy.tcp_needs_inspection();
        let mut limits = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            limits.extend(self.limits(spec, &path.index(i))?);
        }
        let id = self.namespace_id(name);
        if let Some(entry) = self.namespaces.get_mut(id as usize) {
            entry.policies = Some(policy);
            entry.limits = limits;
        }
        Ok(())
    }

    fn ordered(
        &mut self,
        specs: &[PolicySpec],
        path: &ConfigPath,
        allow_pass: bool,
    ) -> Result<OrderedTier, ConfigError> {
        let order = evaluation_order(specs, path)?;
        let mut policies = Vec::with_capacity(specs.len());
        let mut lists = [RuleListBuilder::default(), RuleListBuilder::default()];
        for (o, &(priority, i)) in order.iter().enumerate() {
            let Some(spec) = specs.get(i) else { continue };
            let policy =
                self.tier_policy(spec, &path.index(i), allow_pass, o as u32, &mut lists)?;
            policies.push(TierPolicyInfo { priority, ..policy });
        }
        let [http, tcp] = lists;
        Ok(OrderedTier {
            policies,
            http: http.build(IndexKey::Host),
            tcp: tcp.build(IndexKey::Sni),
        })
    }

    /// One admin or baseline policy at evaluation position `o`; its rules go to `lists`
    /// (HTTP, TCP).
    #[inline(never)]
    fn tier_policy(
        &mut self,
        spec: &PolicySpec,
        path: &ConfigPath,
        allow_pass: bool,
        o: u32,
        lists: &mut [RuleListBuilder; 2],
    ) -> Result<TierPolicyInfo, ConfigError> {
        let rule_specs = spec
            .rules
            .as_deref()
            .ok_or_else(|| missing(path, "rules"))?;
        if rule_specs.is_empty() {
            return Err(ConfigError::new(
                path.field("rules"),
                ConfigErrorKind::Tiers(ConfigErrorKind::NO_TIER_RULES),
            ));
        }
        let mut rules: Vec<TierRule> = Vec::with_capacity(rule_specs.len());
        for (r, rule_spec) in rule_specs.iter().enumerate() {
            let rule_path = path.field("rules").index(r);
            let rule = self.tier_rule(rule_spec, &rule_path, allow_pass, spec.dry_run, &rules)?;
            let [http, tcp] = &mut *lists;
            let at = RuleAt {
                policy: o,
                rule: r as u32,
                path: &rule_path,
                on_tcp: rule.action.on_tcp(),
            };
            self.tcp_needs_inspection |= push_rule(
                [http, tcp],
                rule_spec,
                &at,
                &mut self.header_names,
                &mut self.http_reads,
            )?;
            rules.push(rule);
        }
        let subject = spec.subject.as_ref().map(|names| {
            let mut ids: Vec<u32> = Vec::with_capacity(names.len());
            for name in names {
                let id = self.namespace_id(name);
                if let Err(at) = ids.binary_search(&id) {
                    ids.insert(at, id);
                }
            }
            ids
        });
        Ok(TierPolicyInfo {
            name: spec.name.clone(),
            priority: 0,
            dry_run: spec.dry_run,
            subject,
            rules,
            limits: self.limits(spec, path)?,
        })
    }

    /// Checks a rule's action, name and limit (`earlier`: the policy's rules before it).
    #[inline(never)]
    fn tier_rule(
        &mut self,
        spec: &RuleSpec,
        path: &ConfigPath,
        allow_pass: bool,
        dry_run: bool,
        earlier: &[TierRule],
    ) -> Result<TierRule, ConfigError> {
        let text = spec
            .action
            .as_deref()
            .ok_or_else(|| missing(path, "action"))?;
        let action = parse_rule_action(text, allow_pass, path)?;
        if let Some(name) = &spec.name {
            let kind = if name.is_empty() || !is_valid_name(name) {
                Some((
                    "rule name ",
                    " may only contain letters, digits, `-` and `_` (at most 128)",
                ))
            } else if earlier.iter().any(|r| r.name.as_ref() == Some(name)) {
                Some(("duplicate rule name ", " in this policy"))
            } else {
                None
            };
            if let Some((before, after)) = kind {
                let kind = ConfigErrorKind::TiersValue(before, name.clone(), after);
                return Err(ConfigError::new(path.field("name"), kind));
            }
        }
        let limit = match &spec.rate_limit {
            None => None,
            Some(_) if action == RuleAction::Deny => {
                return Err(ConfigError::new(
                    path.field("rateLimit"),
                    ConfigErrorKind::Tiers(ConfigErrorKind::LIMIT_ON_DENY_RULE),
                ))
            }
            Some(limit) => {
                let id = (self.add_limit)(limit, &path.field("rateLimit"))?;
                (!dry_run).then_some(id)
            }
        };
        Ok(TierRule {
            name: spec.name.clone(),
            action,
            limit,
        })
    }
}

/// Positions of `specs` in evaluation order, (priority, name) ascending, with their priority;
/// checks names (unique within the tier) and priorities on the way.
#[inline(never)]
fn evaluation_order(
    specs: &[PolicySpec],
    path: &ConfigPath,
) -> Result<Vec<(u16, usize)>, ConfigError> {
    let mut keys: Vec<(u16, &str)> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let here = path.index(i);
        validate_name(&spec.name, &here.field("name"))?;
        if keys.iter().any(|(_, name)| *name == spec.name) {
            return Err(ConfigError::new(
                here.field("name"),
                ConfigErrorKind::DuplicateName(spec.name.clone()),
            ));
        }
        let priority = spec.priority.ok_or_else(|| missing(&here, "priority"))?;
        keys.push((priority, &spec.name));
    }
    // Keys are distinct (names are), so each one's rank is its position.
    let mut order = vec![(0, 0); keys.len()];
    for (i, key) in keys.iter().enumerate() {
        let rank = keys.iter().filter(|k| *k < key).count();
        if let Some(slot) = order.get_mut(rank) {
            *slot = (key.0, i);
        }
    }
    Ok(order)
}

/// The policy-level limits of the admin and baseline policies that apply to `namespace`.
fn scope_limits(admin: &OrderedTier, baseline: &OrderedTier, namespace: Option<u32>) -> Vec<u32> {
    let mut limits = Vec::new();
    for policy in admin.policies.iter().chain(&baseline.policies) {
        if policy.applies(namespace) {
            limits.extend_from_slice(&policy.limits);
        }
    }
    limits
}

/// The id of a namespace named by the configuration.
fn lookup(ids: &IdMap, name: &str) -> Option<u32> {
    ids.get(name)
        .and_then(|ids| ids.as_slice().first().copied())
}

fn parse_rule_action(
    action: &str,
    allow_pass: bool,
    path: &ConfigPath,
) -> Result<RuleAction, ConfigError> {
    let expected = if allow_pass {
        " is not one of ALLOW, DENY, PASS"
    } else {
        " is not one of ALLOW, DENY"
    };
    match action {
        "ALLOW" => Ok(RuleAction::Allow),
        "DENY" => Ok(RuleAction::Deny),
        "PASS" if allow_pass => Ok(RuleAction::Pass),
        "PASS" => Err(ConfigError::new(
            path.field("action"),
            ConfigErrorKind::Tiers(ConfigErrorKind::PASS_OUTSIDE_ADMIN),
        )),
        other => Err(ConfigError::new(
            path.field("action"),
            ConfigErrorKind::TiersValue("action ", other.to_string(), expected),
        )),
    }
}

impl OrderedTier {
    fn list(&self, kind: TrafficKind) -> &RuleList {
        match kind {
            TrafficKind::Http => &self.http,
            TrafficKind::Tcp => &self.tcp,
        }
    }

    fn policy(&self, ordered: u32) -> Option<&TierPolicyInfo> {
        self.policies.get(ordered as usize)
    }

    fn rule(&self, ordered: u32, rule: u32) -> Option<(&TierPolicyInfo, &TierRule)> {
        let info = self.policy(ordered)?;
        Some((info, info.rules.get(rule as usize)?))
    }

    fn dry_run_hit<'p>(&'p self, tier: TierName, ordered: u32, rule: u32) -> Option<DryRunHit<'p>> {
        let (info, r) = self.rule(ordered, rule)?;
        Some(DryRunHit {
            policy: &info.name,
            rule: Some(rule as usize),
            would_be: r.action.would_be(),
            tier: Some(tier),
            rule_name: r.name.as_deref(),
        })
    }

    /// The first matching rule of an enforced policy whose subject holds the source, as
    /// (policy position, rule); dry-run policies on the way report their first matching rule.
    fn walk<'p>(
        &'p self,
        tier: TierName,
        attrs: &Attributes,
        namespace: Option<u32>,
        dry_run: &mut Vec<DryRunHit<'p>>,
        tracer: Option<Tracer<'_>>,
    ) -> Option<(u32, u32)> {
        let list = self.list(attrs.kind());
        if let Some(tracer) = tracer {
            return self.walk_traced(tier, list, attrs, namespace, dry_run, tracer);
        }
        let mut found = None;
        let mut last_dry_run = None;
        list.each_match_where(
            attrs,
            |entry| {
                self.policy(entry.policy)
                    .is_some_and(|p| p.applies(namespace))
            },
            |entry| {
                let Some(info) = self.policy(entry.policy) else {
                    return false;
                };
                if !info.dry_run {
                    found = Some((entry.policy, entry.rule));
                    return true;
                }
                if last_dry_run != Some(entry.policy) {
                    last_dry_run = Some(entry.policy);
                    dry_run.extend(self.dry_run_hit(tier, entry.policy, entry.rule));
                }
                false
            },
        );
        found
    }

    /// [`OrderedTier::walk`] rule by rule, reporting each step.
    fn walk_traced<'p>(
        &'p self,
        tier: TierName,
        list: &RuleList,
        attrs: &Attributes,
        namespace: Option<u32>,
        dry_run: &mut Vec<DryRunHit<'p>>,
        tracer: Tracer<'_>,
    ) -> Option<(u32, u32)> {
        for (o, info) in self.policies.iter().enumerate() {
            let applies = info.applies(namespace);
            tracer(&TraceStep::Policy {
                tier: Some(tier),
                policy: &info.name,
                priority: Some(info.priority),
                dry_run: info.dry_run,
                skipped: (!applies).then_some("subject"),
            });
            if !applies {
                continue;
            }
            let mut matched = None;
            for (r, rule) in info.rules.iter().enumerate() {
                let result = list.result(o as u32, r as u32, attrs);
                let hit = result == RuleResult::Matched;
                tracer(&TraceStep::Rule {
                    tier: Some(tier),
                    policy: &info.name,
                    rule: r,
                    name: rule.name.as_deref(),
                    action: rule.action.as_str(),
                    result,
                });
                if hit {
                    matched = Some(r as u32);
                    break;
                }
            }
            let Some(r) = matched else { continue };
            if !info.dry_run {
                return Some((o as u32, r));
            }
            dry_run.extend(self.dry_run_hit(tier, o as u32, r));
        }
        None
    }
}

fn trace_tier(
    tracer: &mut Option<Tracer<'_>>,
    tier: TierName,
    outcome: &'static str,
    detail: &str,
) {
    if let Some(tracer) = tracer {
        tracer(&TraceStep::Tier {
            tier,
            outcome,
            detail,
        });
    }
}

impl CompiledTiers {
    /// Validates and compiles `tiers` found at `path`; `add_limit` compiles attached limits.
    pub fn compile(
        spec: &TiersSpec,
        path: &ConfigPath,
        add_limit: AddLimit<'_>,
    ) -> Result<Self, ConfigError> {
        let mut builder = TiersBuilder {
            namespace_ids: fast_map(),
            namespaces: Vec::new(),
            header_names: Vec::new(),
            http_reads: Reads::NONE,
            tcp_needs_inspection: false,
            add_limit,
        };
        let admin = builder.ordered(&spec.admin, &path.field("admin"), true)?;
        let namespaces_path = path.field("namespaces");
        for (name, policies) in &spec.namespaces {
            builder.namespace(name, policies, &namespaces_path.field(name))?;
        }
        let baseline = builder.ordered(&spec.baseline, &path.field("baseline"), false)?;

        // The policy-level limits each namespace's requests are checked against.
        let mut namespaces = builder.namespaces;
        for (id, entry) in namespaces.iter_mut().enumerate() {
            let mut limits = scope_limits(&admin, &baseline, Some(id as u32));
            limits.append(&mut entry.limits);
            entry.limits = limits;
        }
        Ok(Self {
            unlisted_limits: scope_limits(&admin, &baseline, None),
            admin,
            baseline,
            namespace_ids: builder.namespace_ids,
            namespaces,
            default: match spec.default.as_deref() {
                Some("ALLOW") => Verdict::Allow,
                _ => Verdict::Deny,
            },
            header_names: builder.header_names,
            http_reads: builder.http_reads,
            tcp_needs_inspection: builder.tcp_needs_inspection,
        })
    }

    /// Lower-case names of the request headers some rule reads (unsorted).
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// The connection properties some rule needs read for an HTTP request. Choosing a source
    /// namespace's policies reads `source.namespace`, which comes from the peer identity, read
    /// on every request.
    pub fn http_reads(&self) -> Reads {
        self.http_reads
    }

    pub fn tcp_needs_inspection(&self) -> bool {
        self.tcp_needs_inspection
    }

    /// Admin policies in evaluation order.
    pub fn admin(&self) -> &[TierPolicyInfo] {
        &self.admin.policies
    }

    /// Baseline policies in evaluation order.
    pub fn baseline(&self) -> &[TierPolicyInfo] {
        &self.baseline.policies
    }

    /// Every namespace the configuration names, in index order (the index a decision carries in
    /// [`Decision::namespace`]), with its policies (`None`: only named in subjects).
    pub fn namespaces(&self) -> impl Iterator<Item = (&str, Option<&CompiledPolicy>)> {
        self.namespaces
            .iter()
            .map(|n| (n.name.as_ref(), n.policies.as_ref()))
    }

    /// Policies in all tiers.
    pub fn policy_count(&self) -> usize {
        let namespaced: usize = self
            .namespaces()
            .filter_map(|(_, p)| Some(p?.policies().len()))
            .sum();
        self.admin.policies.len() + self.baseline.policies.len() + namespaced
    }

    pub fn default_verdict(&self) -> Verdict {
        self.default
    }

    /// Decides a request; with a `tracer`, every step is reported (rules are then evaluated one
    /// by one rather than through the host index, with the same outcome).
    pub fn evaluate<'p>(
        &'p self,
        attrs: &Attributes,
        mut tracer: Option<Tracer<'_>>,
    ) -> (Decision<'p>, LimitPlan<'p>) {
        let namespace = attrs
            .source_namespace
            .as_deref()
            .and_then(|ns| lookup(&self.namespace_ids, ns));
        let mut decision = Decision {
            verdict: Verdict::Deny,
            policy: None,
            rule: None,
            action: None,
            reason: Reason::DefaultDeny,
            audit: Vec::new(),
            dry_run: Vec::new(),
            tier: None,
            rule_name: None,
            passed: None,
            namespace,
        };
        let mut plan = LimitPlan {
            rules: [None, None],
            scope: namespace
                .and_then(|n| self.namespaces.get(n as usize))
                .map_or(&self.unlisted_limits, |n| &n.limits),
        };
        let (tier, detail) = self.decide(attrs, namespace, &mut decision, &mut plan, &mut tracer);
        decision.tier = Some(tier);
        trace_tier(&mut tracer, tier, decision.verdict.as_str(), detail);
        (decision, plan)
    }

    /// Walks the tiers until one decides; returns it, with the deciding policy (or namespace).
    fn decide<'p: 'a, 'a>(
        &'p self,
        attrs: &'a Attributes,
        namespace: Option<u32>,
        decision: &mut Decision<'p>,
        plan: &mut LimitPlan<'p>,
        tracer: &mut Option<Tracer<'_>>,
    ) -> (TierName, &'a str) {
        // 1. Admin.
        let found = self.admin.walk(
            TierName::Admin,
            attrs,
            namespace,
            &mut decision.dry_run,
            reborrow(tracer),
        );
        match found.and_then(|(o, r)| Some((self.admin.rule(o, r)?, r))) {
            Some(((info, rule), r)) if rule.action == RuleAction::Pass => {
                decision.passed = Some(RuleRef {
                    policy: &info.name,
                    rule: r as usize,
                    name: rule.name.as_deref(),
                });
                plan.rules[0] = rule.limit;
                trace_tier(tracer, TierName::Admin, "pass", &info.name);
            }
            Some(((info, rule), r)) => {
                decided(decision, info, r, rule, plan);
                return (TierName::Admin, &info.name);
            }
            None => trace_tier(tracer, TierName::Admin, "no_decision", ""),
        }

        // 2. The source namespace's policies.
        let policies = namespace
            .and_then(|n| self.namespaces.get(n as usize))
            .and_then(|n| n.policies.as_ref());
        match (attrs.source_namespace.as_deref(), policies) {
            (None, _) => trace_tier(tracer, TierName::Namespace, "no_namespace", ""),
            (Some(ns), None) => trace_tier(tracer, TierName::Namespace, "no_policies", ns),
            (Some(ns), Some(policy)) => {
                if let Some(tracer) = reborrow(tracer) {
                    policy.trace(attrs, Some(TierName::Namespace), tracer);
                }
                let found = policy.evaluate(attrs);
                decision.audit = found.audit;
                decision
                    .dry_run
                    .extend(found.dry_run.into_iter().map(|mut hit| {
                        hit.tier = Some(TierName::Namespace);
                        hit
                    }));
                if found.reason != Reason::NoAllowPolicies {
                    decision.verdict = found.verdict;
                    decision.policy = found.policy;
                    decision.rule = found.rule;
                    decision.action = found.action;
                    decision.reason = found.reason;
                    return (TierName::Namespace, ns);
                }
                trace_tier(tracer, TierName::Namespace, "no_decision", ns);
            }
        }

        // 3. Baseline.
        let found = self.baseline.walk(
            TierName::Baseline,
            attrs,
            namespace,
            &mut decision.dry_run,
            reborrow(tracer),
        );
        if let Some(((info, rule), r)) =
            found.and_then(|(o, r)| Some((self.baseline.rule(o, r)?, r)))
        {
            decided(decision, info, r, rule, plan);
            return (TierName::Baseline, &info.name);
        }
        trace_tier(tracer, TierName::Baseline, "no_decision", "");

        // 4. Default.
        decision.verdict = self.default;
        if self.default == Verdict::Allow {
            decision.reason = Reason::DefaultAllow;
        }
        (TierName::Default, "")
    }
}

/// Records the decision of an ALLOW or DENY rule of an ordered tier.
fn decided<'p>(
    decision: &mut Decision<'p>,
    info: &'p TierPolicyInfo,
    r: u32,
    rule: &'p TierRule,
    plan: &mut LimitPlan<'p>,
) {
    decision.policy = Some(&info.name);
    decision.rule = Some(r as usize);
    decision.rule_name = rule.name.as_deref();
    if rule.action == RuleAction::Allow {
        decision.verdict = Verdict::Allow;
        decision.action = Some(PolicyAction::Allow);
        decision.reason = Reason::AllowedByPolicy;
        plan.rules[1] = rule.limit;
    } else {
        decision.verdict = Verdict::Deny;
        decision.action = Some(PolicyAction::Deny);
        decision.reason = Reason::DeniedByPolicy;
    }
}
