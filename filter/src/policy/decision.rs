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
}

impl Reason {
    pub const CODES: [&'static str; 5] = [
        "denied_by_policy",
        "allowed_by_policy",
        "no_allow_policies",
        "no_allow_policy_matched",
        "cannot_evaluate",
    ];

    /// Position of this reason's code in [`Reason::CODES`].
    pub fn index(&self) -> usize {
        match self {
            Self::DeniedByPolicy => 0,
            Self::AllowedByPolicy => 1,
            Self::NoAllowPolicies => 2,
            Self::NoAllowPolicyMatched => 3,
            Self::CannotEvaluate(_) => 4,
        }
    }

    pub fn code(&self) -> &'static str {
        Self::CODES.get(self.index()).copied().unwrap_or("")
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
}

impl WouldBe {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Audit => "audit",
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
    pub would_be: WouldBe,
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
            _ => "egress denied: no ALLOW policy matched\n".to_string(),
        }
    }
}
