//! The whole decision for one stream, in order: policies (allow/deny), then protocol checks,
//! then local rate limits, then global ones (asked of the rate limit service only when the
//! local ones allowed the stream). A stream denied by a policy or a protocol check takes no
//! token and costs the rate limit service nothing.

use std::fmt;

use crate::attributes::Attributes;
use crate::policy::{Decision, RuleMatcher};
use crate::protocol::{HttpViolation, TcpViolation};
use crate::ratelimit::{
    CasStore, FailureMode, GlobalHit, GlobalLimit, KeyAttribute, RateLimitDecision, RateLimiter,
};

/// One `rateLimits` entry, compiled: its `match` for each kind of traffic and its limiter.
#[derive(Debug, Clone)]
pub struct CompiledRateLimit {
    pub limiter: RateLimiter,
    pub http: RuleMatcher,
    /// `None`: the match reads HTTP-only fields, so the limit never applies to TCP connections.
    pub tcp: Option<RuleMatcher>,
}

impl CompiledRateLimit {
    pub fn applies(&self, attrs: &Attributes) -> bool {
        limit_applies(&self.http, self.tcp.as_ref(), attrs)
    }
}

/// One `rateLimits` entry with `global`, compiled: decided by the rate limit service.
#[derive(Debug, Clone)]
pub struct CompiledGlobalLimit {
    pub limit: GlobalLimit,
    pub http: RuleMatcher,
    /// `None`: the match reads HTTP-only fields, so the limit never applies to TCP connections.
    pub tcp: Option<RuleMatcher>,
}

impl CompiledGlobalLimit {
    pub fn applies(&self, attrs: &Attributes) -> bool {
        limit_applies(&self.http, self.tcp.as_ref(), attrs)
    }
}

/// Whether a limit's `match` selects this stream: its HTTP variant for a request, its TCP
/// variant (if it has one) for a connection.
fn limit_applies(http: &RuleMatcher, tcp: Option<&RuleMatcher>, attrs: &Attributes) -> bool {
    match attrs.http {
        Some(_) => http.matches(attrs),
        None => tcp.is_some_and(|m| m.matches(attrs)),
    }
}

/// A failed protocol check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolViolation {
    Http(HttpViolation),
    Tcp(TcpViolation),
}

impl ProtocolViolation {
    /// The check's stable name, used as the decision reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Http(v) => v.reason(),
            Self::Tcp(v) => v.reason(),
        }
    }
}

impl fmt::Display for ProtocolViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(v) => v.fmt(f),
            Self::Tcp(v) => v.fmt(f),
        }
    }
}

/// The rate limit that answered for a stream: the most restrictive of the matching limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHit {
    pub decision: RateLimitDecision,
    /// The bucket's key (the request's values of the limit's key attributes).
    pub key: String,
    /// How many limits matched (each took a token).
    pub matched: usize,
}

/// What finally happens to the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalVerdict {
    Allow,
    /// Denied by a policy, a protocol check, or because it could not be evaluated.
    Deny,
    RateLimited,
}

impl FinalVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::RateLimited => "ratelimited",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<'p> {
    /// The policy decision (always made first).
    pub decision: Decision<'p>,
    /// Set when the policies allowed the stream and a protocol check failed.
    pub violation: Option<ProtocolViolation>,
    /// Set when the policies and protocol checks allowed the stream and some local limit
    /// matched.
    pub rate_limit: Option<RateLimitHit>,
    /// Set when the local limits allowed the stream and a global limit was asked: the one that
    /// refused it, or the last one asked.
    pub global: Option<GlobalHit>,
}

impl<'p> Outcome<'p> {
    /// Only the policy decision (e.g. a stream that could not be evaluated).
    pub fn policy_only(decision: Decision<'p>) -> Self {
        Self {
            decision,
            violation: None,
            rate_limit: None,
            global: None,
        }
    }

    fn local_refused(&self) -> bool {
        self.rate_limit
            .as_ref()
            .is_some_and(|h| !h.decision.allowed())
    }

    pub fn verdict(&self) -> FinalVerdict {
        if !self.decision.is_allowed() || self.violation.is_some() {
            return FinalVerdict::Deny;
        }
        if self.local_refused() {
            return FinalVerdict::RateLimited;
        }
        match &self.global {
            Some(g) if g.over_limit() => FinalVerdict::RateLimited,
            // No usable answer and failureMode deny.
            Some(g) if !g.allowed() => FinalVerdict::Deny,
            _ => FinalVerdict::Allow,
        }
    }

    /// The rate limit service failed this stream and its failure mode denies it.
    pub fn global_failed_closed(&self) -> bool {
        self.decision.is_allowed()
            && self.violation.is_none()
            && !self.local_refused()
            && self
                .global
                .as_ref()
                .is_some_and(|g| g.error().is_some() && g.failure_mode == FailureMode::Deny)
    }

    /// The name of the limit that refused the stream, local or global.
    pub fn refusing_limit(&self) -> Option<&str> {
        if self.verdict() != FinalVerdict::RateLimited {
            return None;
        }
        if self.local_refused() {
            return self.rate_limit.as_ref().map(|h| &*h.decision.limit_name);
        }
        self.global.as_ref().map(|g| &*g.limit_name)
    }

    /// The reason code for the log: the protocol check or rate-limit outcome when one decided.
    pub fn reason(&self) -> &'static str {
        if self.decision.is_allowed() {
            if let Some(v) = &self.violation {
                return v.reason();
            }
            if let Some(hit) = self.rate_limit.as_ref().filter(|h| !h.decision.allowed()) {
                return hit.decision.reason();
            }
            if let Some(global) = self.global.as_ref().filter(|g| g.reason() != "allowed") {
                return global.reason();
            }
        }
        self.decision.reason.code()
    }

    /// Body of the local reply (403 or 429).
    pub fn reply_body(&self) -> String {
        if !self.decision.is_allowed() {
            return self.decision.deny_body();
        }
        if let Some(v) = &self.violation {
            return format!("egress denied: protocol check {} failed\n", v.reason());
        }
        if self.global_failed_closed() {
            return "egress denied: the rate limit service gave no answer\n".to_string();
        }
        match self.refusing_limit() {
            Some(name) => format!("egress rate limited by {name}\n"),
            None => String::new(),
        }
    }
}

/// A key attribute's value for this stream. `destination.host` is the HTTP host, else the SNI.
pub fn key_value(attrs: &Attributes, attr: &KeyAttribute) -> Option<String> {
    match attr {
        KeyAttribute::SourcePrincipal => attrs.source_principal.clone(),
        KeyAttribute::SourceNamespace => attrs.source_namespace.clone(),
        KeyAttribute::SourceIp => attrs.source_ip.map(|ip| ip.to_string()),
        KeyAttribute::DestinationHost => attrs.host().or(attrs.sni.as_deref()).map(str::to_owned),
        KeyAttribute::DestinationPort => attrs.destination_port.map(|p| p.to_string()),
        KeyAttribute::ConnectionSni => attrs.sni.clone(),
        KeyAttribute::RequestHeader(name) => attrs.header(name).map(str::to_owned),
    }
}

/// Takes a token from every limit that applies; the most restrictive answer is kept.
pub fn check_rate_limits<'a, S: CasStore + ?Sized>(
    limits: impl IntoIterator<Item = &'a CompiledRateLimit>,
    attrs: &Attributes,
    store: &S,
    now_ns: u64,
) -> Option<RateLimitHit> {
    let mut best: Option<RateLimitHit> = None;
    let mut matched = 0usize;
    for limit in limits.into_iter().filter(|l| l.applies(attrs)) {
        matched += 1;
        let key = limit.limiter.bucket_key(|attr| key_value(attrs, attr));
        let decision = limit.limiter.check(store, &key, now_ns);
        let replace = match &best {
            None => true,
            Some(current) => RateLimitDecision::most_restrictive([&current.decision, &decision])
                .is_some_and(|d| std::ptr::eq(d, &decision)),
        };
        if replace {
            best = Some(RateLimitHit {
                decision,
                key: key.text().to_owned(),
                matched: 0,
            });
        }
    }
    best.map(|mut hit| {
        hit.matched = matched;
        hit
    })
}
