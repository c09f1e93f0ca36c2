//! What `egress-sim explain` shows: every tier, policy and rule looked at for one request, and
//! why each matched or not. Produced only when the host logs at debug level; the steps come
//! from the same matchers and the same walk that decide.

use super::{ActionLists, CompiledPolicy, RuleList, TierName};
use crate::attributes::Attributes;

/// Receives the steps of one evaluation.
pub type Tracer<'t> = &'t mut dyn FnMut(&TraceStep<'_>);

/// Lends the tracer for one call, keeping it for the next ones.
pub fn reborrow<'a>(tracer: &'a mut Option<Tracer<'_>>) -> Option<Tracer<'a>> {
    match tracer {
        Some(t) => Some(&mut **t),
        None => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleResult {
    Matched,
    /// Why not: the field that failed and the request's value.
    Missed(String),
    /// An ALLOW or PASS rule with HTTP-only fields never matches a TCP connection.
    NotOnTcp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceStep<'a> {
    /// A policy looked at; `skipped` says why its rules were not: `subject` (the source's
    /// namespace is not in it, or the source has none) or `no_rules`.
    Policy {
        /// `None` for plain `policies`.
        tier: Option<TierName>,
        policy: &'a str,
        priority: Option<u16>,
        dry_run: bool,
        skipped: Option<&'static str>,
    },
    Rule {
        tier: Option<TierName>,
        policy: &'a str,
        rule: usize,
        name: Option<&'a str>,
        action: &'static str,
        result: RuleResult,
    },
    /// How a tier ended: `allow` or `deny` (detail: the deciding policy; the namespace in the
    /// namespace tier), `pass` (the admin policy), `no_decision`, and for the namespace tier
    /// `no_namespace` (the request has none) or `no_policies` (detail: the namespace).
    Tier {
        tier: TierName,
        outcome: &'static str,
        detail: &'a str,
    },
}

impl RuleList {
    /// The entry of rule `rule` of policy `policy` (entries are in policy, then rule order).
    pub(super) fn find(&self, policy: u32, rule: u32) -> Option<&super::RuleEntry> {
        let at = self
            .entries
            .binary_search_by(|e| (e.policy, e.rule).cmp(&(policy, rule)))
            .ok()?;
        self.entries.get(at)
    }

    /// Whether rule `rule` of policy `policy` matches, and why not.
    pub(super) fn result(&self, policy: u32, rule: u32, attrs: &Attributes) -> RuleResult {
        match self.find(policy, rule) {
            None => RuleResult::NotOnTcp,
            Some(entry) => match entry.matcher.miss(attrs) {
                None => RuleResult::Matched,
                Some(why) => RuleResult::Missed(why),
            },
        }
    }
}

impl CompiledPolicy {
    /// Reports every rule of every policy, in configuration order (Istio semantics look at all
    /// of them; [`CompiledPolicy::evaluate`] decides).
    pub fn trace(&self, attrs: &Attributes, tier: Option<TierName>, tracer: Tracer<'_>) {
        let lists: &ActionLists = self.lists(attrs.kind());
        for (p, info) in self.policies.iter().enumerate() {
            tracer(&TraceStep::Policy {
                tier,
                policy: &info.name,
                priority: None,
                dry_run: info.dry_run,
                skipped: (info.rules == 0).then_some("no_rules"),
            });
            let list = lists.list_of(info);
            for r in 0..info.rules {
                tracer(&TraceStep::Rule {
                    tier,
                    policy: &info.name,
                    rule: r,
                    name: None,
                    action: info.action.as_str(),
                    result: list.result(p as u32, r as u32, attrs),
                });
            }
        }
    }
}
