//! The outcome of evaluating a request against the compiled policies.

use std::fmt;

/// The action of an AuthorizationPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyAction {
    Allow,
    Deny,
    Audit,
}

impl PolicyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Audit => "AUDIT",
        }
    }
}

impl fmt::Display for PolicyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tier of a `tiers` configuration that decided (or that a dry-run hit belongs to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TierName {
    Admin,
    Namespace,
    Baseline,
    Default,
}

impl TierName {
    pub const ALL: [TierName; 4] = [Self::Admin, Self::Namespace, Self::Baseline, Self::Default];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Namespace => "namespace",
            Self::Baseline => "baseline",
            Self::Default => "default",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// Why the verdict is what it is. The codes are stable: logs and metrics use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A DENY policy matched.
    DeniedByPolicy,
    /// An ALLOW policy matched (and no DENY policy did).
    AllowedByPolicy,
    /// No DENY policy matched and there are no ALLOW policies.
    NoAllowPolicies,
    /// ALLOW policies exist and none matched.
    NoAllowPolicyMatched,
    /// The request could not be evaluated (unreadable or malformed attributes): denied.
    CannotEvaluate(String),
    /// `tiers`: no tier decided and `tiers.default` is `ALLOW`.
    DefaultAllow,
    /// `tiers`: no tier decided and `tiers.default` is `DENY` (or absent).
    DefaultDeny,
}

impl Reason {
    pub const CODES: [&'static str; 5] = [
        "denied_by_policy",
        "allowed_by_policy",
        "no_allow_policies",
        "no_allow_policy_matched",
        "cannot_evaluate",
    ];

    /// Codes only a `tiers` configuration produces, after [`Reason::CODES`].
    pub const TIER_CODES: [&'static str; 2] = ["default_allow", "default_deny"];

    /// Position of this reason's code in [`Reason::CODES`] followed by [`Reason::TIER_CODES`].
    pub fn index(&self) -> usize {
        match self {
            Self::DeniedByPolicy => 0,
            Self::AllowedByPolicy => 1,
            Self::NoAllowPolicies => 2,
            Self::NoAllowPolicyMatched => 3,
            Self::CannotEvaluate(_) => 4,
            Self::DefaultAllow => 5,
            Self::DefaultDeny => 6,
        }
    }

    pub fn code(&self) -> &'static str {
        let i = self.index();
        Self::CODES
            .get(i)
            .or_else(|| Self::TIER_CODES.get(i.wrapping_sub(Self::CODES.len())))
            .copied()
            .unwrap_or("")
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::CannotEvaluate(detail) => Some(detail),
            _ => None,
        }
    }
}

/// What a dry-run policy would have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WouldBe {
    Allow,
    Deny,
    Audit,
    /// An admin-tier rule that would hand the request to the namespace tier.
    Pass,
}

impl WouldBe {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Audit => "audit",
            Self::Pass => "pass",
        }
    }
}

/// A dry-run policy that matters for this request: it matched (`rule` is set), or it is an ALLOW
/// policy whose enforcement alone would turn this allowed request into a denied one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRunHit<'p> {
    pub policy: &'p str,
    pub rule: Option<usize>,
    /// The final decision had this policy been enforced (`audit` for a matching AUDIT policy).
    /// In the admin and baseline tiers: what the policy's matching rule would do.
    pub would_be: WouldBe,
    /// `None` for plain `policies`.
    pub tier: Option<TierName>,
    /// The matching rule's name, when it has one (admin and baseline rules).
    pub rule_name: Option<&'p str>,
}

/// A rule of a tier policy: its policy, its index and its name (when it has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleRef<'p> {
    pub policy: &'p str,
    pub rule: usize,
    pub name: Option<&'p str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    pub verdict: Verdict,
    /// The policy that decided; `None` when no policy did (no ALLOW policies, none matched, or
    /// the request could not be evaluated).
    pub policy: Option<&'p str>,
    /// Index of the deciding rule within its policy.
    pub rule: Option<usize>,
    /// Action of the deciding policy.
    pub action: Option<PolicyAction>,
    pub reason: Reason,
    /// Enforced AUDIT policies that matched, in configuration order.
    pub audit: Vec<&'p str>,
    pub dry_run: Vec<DryRunHit<'p>>,
    /// The tier that decided; `None` for plain `policies`.
    pub tier: Option<TierName>,
    /// Name of the deciding rule, when it has one (admin and baseline rules).
    pub rule_name: Option<&'p str>,
    /// The admin rule whose PASS handed the request to the later tiers.
    pub passed: Option<RuleRef<'p>>,
    /// With tiers: the source namespace's index (as in [`super::CompiledTiers::namespaces`]),
    /// looked up once per request; `None` for plain `policies` or an unlisted namespace.
    pub namespace: Option<u32>,
}

impl Decision<'static> {
    /// Denies a request whose attributes could not be read or made sense of.
    pub fn cannot_evaluate(detail: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Deny,
            policy: None,
            rule: None,
            action: None,
            reason: Reason::CannotEvaluate(detail.into()),
            audit: Vec::new(),
            dry_run: Vec::new(),
            tier: None,
            rule_name: None,
            passed: None,
            namespace: None,
        }
    }
}

impl Decision<'_> {
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// Body of the local 403 reply.
    pub fn deny_body(&self) -> String {
        match (&self.reason, self.policy) {
            (Reason::DeniedByPolicy, Some(policy)) => format!("egress denied by policy {policy}\n"),
            (Reason::CannotEvaluate(_), _) => {
                "egress denied: request could not be evaluated\n".to_string()
            }
            (Reason::DefaultDeny, _) => {
                "egress denied by default: no policy allowed the request\n".to_string()
            }
            _ => "egress denied: no ALLOW policy matched\n".to_string(),
        }
    }
}
