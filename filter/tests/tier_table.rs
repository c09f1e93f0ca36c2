//! Decision table for `tiers`: admin (ordered, PASS), namespace (Istio semantics, "no ALLOW
//! policies" falls through), baseline, default; subjects, plaintext sources, dry runs, and
//! tier-attached rate limits. Every case is also evaluated with a tracer (the `explain` path),
//! which must reach the same decision.

mod common;

use common::{http, tcp, Req};
use egress_filter::policy::{TierName, TraceStep, WouldBe};
use egress_filter::ratelimit::MemoryStore;
use egress_filter::{CompiledConfig, FinalVerdict, Outcome};

fn compile(json: &str) -> CompiledConfig {
    CompiledConfig::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{json}"))
}

fn principal(ns: &str) -> String {
    format!("cluster.local/ns/{ns}/sa/app")
}

fn get(ns: &str, host: &str) -> Req {
    http("GET", host, "/").principal(&principal(ns))
}

/// What a case expects: final verdict, tier, policy, rule (name or index), reason.
#[derive(Debug, Clone, PartialEq)]
struct Want {
    verdict: FinalVerdict,
    tier: TierName,
    policy: Option<&'static str>,
    rule: Option<String>,
    reason: &'static str,
}

fn want(
    verdict: FinalVerdict,
    tier: TierName,
    policy: Option<&'static str>,
    rule: Option<&str>,
    reason: &'static str,
) -> Want {
    Want {
        verdict,
        tier,
        policy,
        rule: rule.map(str::to_string),
        reason,
    }
}

use FinalVerdict::{Allow, Deny};
use TierName::{Admin, Baseline, Default, Namespace};

struct Case {
    name: &'static str,
    config: &'static str,
    req: Req,
    want: Want,
    passed: Option<(&'static str, &'static str)>,
    audit: Vec<&'static str>,
    dry_run: Vec<(TierName, &'static str, WouldBe)>,
}

fn case(name: &'static str, config: &'static str, req: Req, want: Want) -> Case {
    Case {
        name,
        config,
        req,
        want,
        passed: None,
        audit: Vec::new(),
        dry_run: Vec::new(),
    }
}

impl Case {
    fn passed(mut self, policy: &'static str, rule: &'static str) -> Self {
        self.passed = Some((policy, rule));
        self
    }
    fn audit(mut self, policies: &[&'static str]) -> Self {
        self.audit = policies.to_vec();
        self
    }
    fn dry_run(mut self, tier: TierName, policy: &'static str, would_be: WouldBe) -> Self {
        self.dry_run.push((tier, policy, would_be));
        self
    }
}

/// A security team's admin tier, two teams' namespace policies, a baseline.
const COMPANY: &str = r#"{"tiers":{
  "admin":[
    {"name":"delegate","priority":30,"rules":[{"name":"to-teams","action":"PASS"}]},
    {"name":"block-paste","priority":10,"rules":[
      {"name":"paste","action":"DENY","to":[{"operation":{"hosts":["pastebin.com","*.pastebin.com"]}}]}]},
    {"name":"ci-egress","priority":20,"subject":{"namespaces":["ci-a","ci-b"]},"rules":[
      {"name":"github","action":"ALLOW","to":[{"operation":{"hosts":["*.github.com","github.com"]}}]},
      {"name":"pypi","action":"ALLOW","to":[{"operation":{"hosts":["pypi.org"]}}]},
      {"name":"rest","action":"DENY"}]}
  ],
  "namespaces":{
    "team-a":[{"name":"allow-api","rules":[{"to":[{"operation":{"hosts":["api.team-a.example"]}}]}]}],
    "team-b":[
      {"name":"deny-ads","action":"DENY","rules":[{"to":[{"operation":{"hosts":["ads.example"]}}]}]},
      {"name":"audit-posts","action":"AUDIT","rules":[{"to":[{"operation":{"methods":["POST"]}}]}]}]
  },
  "baseline":[
    {"name":"allow-mirror","priority":10,"rules":[
      {"name":"mirror","action":"ALLOW","to":[{"operation":{"hosts":["mirror.example"]}}]}]}
  ]
}}"#;

/// Equal priorities are ordered by name; a lower number comes first.
const ORDER: &str = r#"{"tiers":{"admin":[
  {"name":"b-allow","priority":5,"rules":[{"action":"ALLOW"}]},
  {"name":"a-deny","priority":5,"rules":[{"action":"DENY","to":[{"operation":{"hosts":["x.example","y.example"]}}]}]},
  {"name":"z-first","priority":1,"rules":[{"action":"ALLOW","to":[{"operation":{"hosts":["y.example"]}}]}]}
]}}"#;

const DEFAULT_ALLOW: &str = r#"{"tiers":{"default":"ALLOW",
  "baseline":[{"name":"deny-evil","priority":0,"rules":[{"action":"DENY","to":[{"operation":{"hosts":["evil.example"]}}]}]}]}}"#;
const EMPTY_TIERS: &str = r#"{"tiers":{}}"#;

const DRY_RUNS: &str = r#"{"tiers":{
  "admin":[
    {"name":"try-block","priority":1,"dryRun":true,"rules":[
      {"name":"evil","action":"DENY","to":[{"operation":{"hosts":["evil.example"]}}]}]},
    {"name":"try-pass","priority":2,"dryRun":true,"rules":[{"name":"all","action":"PASS"}]},
    {"name":"pass-all","priority":3,"rules":[{"action":"PASS"}]}
  ],
  "namespaces":{
    "team-d":[{"name":"try-allow","dryRun":true,"rules":[{"to":[{"operation":{"hosts":["d.example"]}}]}]}],
    "team-e":[{"name":"allow-e","rules":[{}]},
              {"name":"try-deny","action":"DENY","dryRun":true,"rules":[{"to":[{"operation":{"hosts":["evil.example"]}}]}]}]
  },
  "baseline":[
    {"name":"try-base","priority":1,"dryRun":true,"rules":[{"name":"mirror","action":"ALLOW","to":[{"operation":{"hosts":["mirror.example"]}}]}]}
  ],
  "default":"DENY"
}}"#;

/// TCP connections: SNI rules, HTTP-only fields in ALLOW/PASS (never match) and DENY (ignored).
const TCP: &str = r#"{"tiers":{
  "admin":[
    {"name":"tls-github","priority":1,"subject":{"namespaces":["ci-a"]},"rules":[
      {"name":"sni","action":"ALLOW","when":[{"key":"connection.sni","values":["github.com"]}]}]},
    {"name":"http-pass","priority":2,"rules":[{"name":"hosts","action":"PASS","to":[{"operation":{"hosts":["pass.example"]}}]}]},
    {"name":"deny-8080","priority":3,"rules":[{"name":"posts","action":"DENY","to":[{"operation":{"methods":["POST"],"ports":["8080"]}}]}]},
    {"name":"pass-sni","priority":4,"rules":[{"name":"sni","action":"PASS","when":[{"key":"connection.sni","values":["*.team.example"]}]}]}
  ],
  "namespaces":{"team-a":[{"name":"allow-sni","rules":[{"when":[{"key":"connection.sni","values":["api.team.example"]}]}]}]}
}}"#;

const ROUND_ONE: &str = r#"{"policies":[{"name":"allow-github","rules":[{"to":[{"operation":{"hosts":["github.com"]}}]}]}]}"#;

fn cases() -> Vec<Case> {
    vec![
        // --- admin tier ---
        case(
            "admin_allow_for_subject",
            COMPANY,
            get("ci-a", "api.github.com"),
            want(
                Allow,
                Admin,
                Some("ci-egress"),
                Some("github"),
                "allowed_by_policy",
            ),
        ),
        case(
            "admin_lower_priority_number_first",
            COMPANY,
            get("ci-a", "pastebin.com"),
            want(
                Deny,
                Admin,
                Some("block-paste"),
                Some("paste"),
                "denied_by_policy",
            ),
        ),
        case(
            "admin_first_matching_rule_decides",
            COMPANY,
            get("ci-b", "example.org"),
            want(
                Deny,
                Admin,
                Some("ci-egress"),
                Some("rest"),
                "denied_by_policy",
            ),
        ),
        case(
            "admin_second_rule",
            COMPANY,
            get("ci-b", "pypi.org"),
            want(
                Allow,
                Admin,
                Some("ci-egress"),
                Some("pypi"),
                "allowed_by_policy",
            ),
        ),
        case(
            "subject_miss_skips_the_policy",
            COMPANY,
            get("ci-c", "api.github.com"),
            want(Deny, Default, None, None, "default_deny"),
        )
        .passed("delegate", "to-teams"),
        // --- PASS to the namespace tier ---
        case(
            "pass_then_namespace_allow",
            COMPANY,
            get("team-a", "api.team-a.example"),
            want(
                Allow,
                Namespace,
                Some("allow-api"),
                Some("0"),
                "allowed_by_policy",
            ),
        )
        .passed("delegate", "to-teams"),
        case(
            "pass_then_namespace_allow_miss_denies",
            COMPANY,
            get("team-a", "mirror.example"),
            want(Deny, Namespace, None, None, "no_allow_policy_matched"),
        )
        .passed("delegate", "to-teams"),
        case(
            "pass_then_namespace_without_allow_goes_to_baseline",
            COMPANY,
            get("team-b", "mirror.example"),
            want(
                Allow,
                Baseline,
                Some("allow-mirror"),
                Some("mirror"),
                "allowed_by_policy",
            ),
        )
        .passed("delegate", "to-teams"),
        case(
            "namespace_deny",
            COMPANY,
            get("team-b", "ads.example"),
            want(
                Deny,
                Namespace,
                Some("deny-ads"),
                Some("0"),
                "denied_by_policy",
            ),
        )
        .passed("delegate", "to-teams"),
        case(
            "namespace_audit_then_default",
            COMPANY,
            http("POST", "upload.example", "/").principal(&principal("team-b")),
            want(Deny, Default, None, None, "default_deny"),
        )
        .passed("delegate", "to-teams")
        .audit(&["audit-posts"]),
        case(
            "namespace_without_policies_skipped",
            COMPANY,
            get("team-c", "mirror.example"),
            want(
                Allow,
                Baseline,
                Some("allow-mirror"),
                Some("mirror"),
                "allowed_by_policy",
            ),
        )
        .passed("delegate", "to-teams"),
        case(
            "default_deny",
            COMPANY,
            get("team-c", "x.example"),
            want(Deny, Default, None, None, "default_deny"),
        )
        .passed("delegate", "to-teams"),
        // --- no principal: no namespace, subjects never match ---
        case(
            "plaintext_skips_subjects_and_namespace_tier",
            COMPANY,
            http("GET", "api.github.com", "/").plaintext(),
            want(Deny, Default, None, None, "default_deny"),
        )
        .passed("delegate", "to-teams"),
        case(
            "plaintext_reaches_baseline",
            COMPANY,
            http("GET", "mirror.example", "/").plaintext(),
            want(
                Allow,
                Baseline,
                Some("allow-mirror"),
                Some("mirror"),
                "allowed_by_policy",
            ),
        )
        .passed("delegate", "to-teams"),
        case(
            "plaintext_subjectless_admin_applies",
            COMPANY,
            http("GET", "www.pastebin.com", "/").plaintext(),
            want(
                Deny,
                Admin,
                Some("block-paste"),
                Some("paste"),
                "denied_by_policy",
            ),
        ),
        case(
            "principal_without_namespace_is_like_plaintext",
            COMPANY,
            http("GET", "api.team-a.example", "/").principal("spiffe-less/identity"),
            want(Deny, Default, None, None, "default_deny"),
        )
        .passed("delegate", "to-teams"),
        // --- ordering ---
        case(
            "priority_before_name",
            ORDER,
            get("dev", "y.example"),
            want(
                Allow,
                Admin,
                Some("z-first"),
                Some("0"),
                "allowed_by_policy",
            ),
        ),
        case(
            "equal_priority_by_name",
            ORDER,
            get("dev", "x.example"),
            want(Deny, Admin, Some("a-deny"), Some("0"), "denied_by_policy"),
        ),
        case(
            "equal_priority_later_name",
            ORDER,
            get("dev", "other.example"),
            want(
                Allow,
                Admin,
                Some("b-allow"),
                Some("0"),
                "allowed_by_policy",
            ),
        ),
        // --- default ---
        case(
            "default_allow_when_set",
            DEFAULT_ALLOW,
            get("dev", "anything.example"),
            want(Allow, Default, None, None, "default_allow"),
        ),
        case(
            "baseline_deny_before_default_allow",
            DEFAULT_ALLOW,
            get("dev", "evil.example"),
            want(
                Deny,
                Baseline,
                Some("deny-evil"),
                Some("0"),
                "denied_by_policy",
            ),
        ),
        case(
            "empty_tiers_deny",
            EMPTY_TIERS,
            get("dev", "github.com"),
            want(Deny, Default, None, None, "default_deny"),
        ),
        // --- dry run in every tier ---
        case(
            "dry_run_admin_deny_not_enforced",
            DRY_RUNS,
            get("team-e", "evil.example"),
            want(
                Allow,
                Namespace,
                Some("allow-e"),
                Some("0"),
                "allowed_by_policy",
            ),
        )
        .passed("pass-all", "0")
        .dry_run(Admin, "try-block", WouldBe::Deny)
        .dry_run(Admin, "try-pass", WouldBe::Pass)
        .dry_run(Namespace, "try-deny", WouldBe::Deny),
        case(
            "dry_run_namespace_allow",
            DRY_RUNS,
            get("team-d", "d.example"),
            want(Deny, Default, None, None, "default_deny"),
        )
        .passed("pass-all", "0")
        .dry_run(Admin, "try-pass", WouldBe::Pass)
        .dry_run(Namespace, "try-allow", WouldBe::Allow),
        case(
            "dry_run_namespace_allow_miss",
            DRY_RUNS,
            get("team-d", "other.example"),
            want(Deny, Default, None, None, "default_deny"),
        )
        .passed("pass-all", "0")
        .dry_run(Admin, "try-pass", WouldBe::Pass)
        .dry_run(Namespace, "try-allow", WouldBe::Deny),
        case(
            "dry_run_baseline",
            DRY_RUNS,
            http("GET", "mirror.example", "/").plaintext(),
            want(Deny, Default, None, None, "default_deny"),
        )
        .passed("pass-all", "0")
        .dry_run(Admin, "try-pass", WouldBe::Pass)
        .dry_run(Baseline, "try-base", WouldBe::Allow),
        // --- TCP connections ---
        case(
            "tcp_sni_allow_in_admin",
            TCP,
            tcp("github.com").principal(&principal("ci-a")),
            want(
                Allow,
                Admin,
                Some("tls-github"),
                Some("sni"),
                "allowed_by_policy",
            ),
        ),
        case(
            "tcp_http_only_pass_never_matches_and_deny_ignores_methods",
            TCP,
            tcp("pass.example")
                .port(8080)
                .principal(&principal("team-a")),
            want(
                Deny,
                Admin,
                Some("deny-8080"),
                Some("posts"),
                "denied_by_policy",
            ),
        ),
        case(
            "tcp_pass_by_sni_then_namespace",
            TCP,
            tcp("api.team.example").principal(&principal("team-a")),
            want(
                Allow,
                Namespace,
                Some("allow-sni"),
                Some("0"),
                "allowed_by_policy",
            ),
        )
        .passed("pass-sni", "sni"),
        case(
            "tcp_no_admin_match_goes_to_namespace",
            TCP,
            tcp("other.example").principal(&principal("team-a")),
            want(Deny, Namespace, None, None, "no_allow_policy_matched"),
        ),
        case(
            "tcp_no_match_default",
            TCP,
            tcp("other.example").principal(&principal("team-z")),
            want(Deny, Default, None, None, "default_deny"),
        ),
    ]
}

/// What a decision came to, owned: the want, the PASS taken, audit and dry-run hits.
type Got = (
    Want,
    Option<(String, String)>,
    Vec<String>,
    Vec<(TierName, String, WouldBe)>,
);

fn run(config: &CompiledConfig, req: &Req, traced: bool) -> Got {
    let attrs = req.attributes(config.header_names());
    let store = MemoryStore::new();
    let mut steps = 0usize;
    let mut count = |_: &TraceStep<'_>| steps += 1;
    let tracer = traced.then_some(&mut count as &mut dyn FnMut(&TraceStep<'_>));
    let outcome: Outcome<'_> = config.decide_traced(&attrs, None, &store, 1, tracer);
    let d = &outcome.decision;
    let want = Want {
        verdict: outcome.verdict(),
        tier: d.tier.expect("a tier decision"),
        policy: d.policy.map(|p| &*Box::leak(Box::<str>::from(p))),
        rule: d
            .rule_name
            .map(str::to_string)
            .or(d.rule.map(|r| r.to_string())),
        reason: outcome.reason(),
    };
    let passed = d.passed.map(|p| {
        (
            p.policy.to_string(),
            p.name.map_or(p.rule.to_string(), str::to_string),
        )
    });
    let audit = d.audit.iter().map(|a| a.to_string()).collect();
    let dry = d
        .dry_run
        .iter()
        .map(|h| {
            (
                h.tier.expect("tier dry run"),
                h.policy.to_string(),
                h.would_be,
            )
        })
        .collect();
    drop(outcome);
    if traced {
        assert!(steps > 0, "the traced evaluation reports steps");
    }
    (want, passed, audit, dry)
}

#[test]
fn tier_decision_table() {
    let cases = cases();
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let config = compile(case.config);
        for traced in [false, true] {
            let (got, passed, audit, dry) = run(&config, &case.req, traced);
            let want_passed = case.passed.map(|(p, r)| (p.to_string(), r.to_string()));
            let want_dry: Vec<(TierName, String, WouldBe)> = case
                .dry_run
                .iter()
                .map(|(t, p, w)| (*t, p.to_string(), *w))
                .collect();
            if got != case.want || passed != want_passed || audit != case.audit || dry != want_dry {
                failures.push(format!(
                    "{} (traced {traced}): got {got:?} passed {passed:?} audit {audit:?} dry {dry:?}",
                    case.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn plain_policies_have_no_tier() {
    let config = compile(ROUND_ONE);
    assert!(config.tiers.is_none());
    let attrs = get("dev", "github.com").attributes(config.header_names());
    let decision = config.evaluate(&attrs);
    assert_eq!(decision.tier, None);
    assert_eq!(decision.policy, Some("allow-github"));
    assert_eq!(decision.rule_name, None);
    assert_eq!(decision.passed, None);
}

/// A PASS rule's limit applies to the requests it passed that a later tier allows.
#[test]
fn pass_rule_limit() {
    let config = compile(
        r#"{"tiers":{
      "admin":[{"name":"delegate","priority":1,"rules":[
        {"name":"pass","action":"PASS","rateLimit":{"name":"passed","maxTokens":2,"fillInterval":"1m"}}]}],
      "namespaces":{"team-a":[{"name":"allow-all","rules":[{}]}]}
    }}"#,
    );
    let store = MemoryStore::new();
    let attrs = get("team-a", "x.example").attributes(config.header_names());
    let verdicts: Vec<FinalVerdict> = (0..3)
        .map(|_| config.decide(&attrs, None, &store, 1).verdict())
        .collect();
    assert_eq!(verdicts, [Allow, Allow, FinalVerdict::RateLimited]);
    // A denied request takes no token.
    let denied = get("team-b", "x.example").attributes(config.header_names());
    assert_eq!(config.decide(&denied, None, &store, 1).verdict(), Deny);
}

/// Rate limits attached to tier policies and rules; an admin limit holds whichever tier allows.
#[test]
fn tier_attached_rate_limits() {
    let config = compile(
        r#"{"tiers":{
      "admin":[
        {"name":"ci","priority":1,"subject":{"namespaces":["ci"]},"rules":[
          {"name":"github","action":"ALLOW","to":[{"operation":{"hosts":["github.com"]}}],
           "rateLimit":{"name":"ci-github","maxTokens":1,"fillInterval":"1m"}}]},
        {"name":"delegate","priority":2,"rateLimits":[{"name":"all-sources","maxTokens":3,"fillInterval":"1m","key":["source.principal"]}],
         "rules":[{"name":"pass","action":"PASS","rateLimit":{"name":"passed","maxTokens":1000,"fillInterval":"1m"}}]},
        {"name":"try","priority":3,"dryRun":true,"rateLimits":[{"name":"dry","maxTokens":1,"fillInterval":"1m"}],"rules":[{"action":"ALLOW"}]}
      ],
      "namespaces":{
        "team-a":[{"name":"allow-all","rules":[{}],"rateLimits":[{"name":"team-a-api","maxTokens":2,"fillInterval":"1m","match":{"to":[{"operation":{"hosts":["api.example"]}}]}}]}]
      },
      "baseline":[{"name":"base","priority":1,"rules":[{"name":"mirror","action":"ALLOW","to":[{"operation":{"hosts":["mirror.example"]}}],
        "rateLimit":{"name":"mirror","maxTokens":1,"fillInterval":"1m"}}]}]
    }}"#,
    );
    let store = MemoryStore::new();
    let verdicts = |req: &Req, n: usize| -> Vec<(FinalVerdict, Option<String>)> {
        let attrs = req.attributes(config.header_names());
        (0..n)
            .map(|_| {
                let o = config.decide(&attrs, None, &store, 5_000_000_000);
                let limit = o
                    .rate_limit
                    .as_ref()
                    .filter(|h| !h.decision.allowed())
                    .map(|h| h.decision.limit_name.to_string());
                (o.verdict(), limit)
            })
            .collect()
    };
    use FinalVerdict::RateLimited;
    // Rule-level limit of an admin ALLOW rule (the subject's policy-level limits: none).
    assert_eq!(
        verdicts(&get("ci", "github.com"), 2),
        [(Allow, None), (RateLimited, Some("ci-github".into()))]
    );
    // The admin policy's limit (3 per principal) holds although the namespace tier allows;
    // the namespace's own limit (2 to api.example) answers first.
    assert_eq!(
        verdicts(&get("team-a", "api.example"), 3),
        [
            (Allow, None),
            (Allow, None),
            (RateLimited, Some("team-a-api".into()))
        ]
    );
    // Every limit that applies took a token, also for the refused request: the principal has
    // used its 3. Another principal of the namespace has its own bucket.
    assert_eq!(
        verdicts(&get("team-a", "other.example"), 1),
        [(RateLimited, Some("all-sources".into()))]
    );
    let other = http("GET", "other.example", "/").principal("cluster.local/ns/team-a/sa/other");
    assert_eq!(
        verdicts(&other, 4),
        [
            (Allow, None),
            (Allow, None),
            (Allow, None),
            (RateLimited, Some("all-sources".into()))
        ]
    );
    // A baseline rule's limit; the dry-run policy's limit is never enforced.
    assert_eq!(
        verdicts(&http("GET", "mirror.example", "/").plaintext(), 2),
        [(Allow, None), (RateLimited, Some("mirror".into()))]
    );
}

#[test]
fn explain_steps_name_what_was_looked_at() {
    let config = compile(COMPANY);
    let attrs = get("ci-c", "api.github.com").attributes(config.header_names());
    let mut lines = Vec::new();
    let mut collect = |step: &TraceStep<'_>| lines.push(egress_filter::log::trace_line(step));
    config.evaluate_traced(&attrs, Some(&mut collect));
    let text = lines.join("\n");
    for expected in [
        r#"{"event":"explain","step":"policy","tier":"admin","policy":"block-paste","priority":10,"dryRun":false,"skipped":null}"#,
        r#"{"event":"explain","step":"rule","tier":"admin","policy":"block-paste","index":0,"name":"paste","action":"DENY","matched":false,"why":"to[0].hosts (request.host)"}"#,
        r#"{"event":"explain","step":"policy","tier":"admin","policy":"ci-egress","priority":20,"dryRun":false,"skipped":"subject"}"#,
        r#"{"event":"explain","step":"rule","tier":"admin","policy":"delegate","index":0,"name":"to-teams","action":"PASS","matched":true}"#,
        r#"{"event":"explain","step":"tier","tier":"admin","outcome":"pass","detail":"delegate"}"#,
        r#"{"event":"explain","step":"tier","tier":"namespace","outcome":"no_policies","detail":"ci-c"}"#,
        r#"{"event":"explain","step":"rule","tier":"baseline","policy":"allow-mirror","index":0,"name":"mirror","action":"ALLOW","matched":false,"why":"to[0].hosts (request.host)"}"#,
        r#"{"event":"explain","step":"tier","tier":"baseline","outcome":"no_decision"}"#,
        r#"{"event":"explain","step":"tier","tier":"default","outcome":"deny"}"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    // The rule after the one that matched in a policy is not looked at.
    assert!(!text.contains(r#""name":"pypi""#), "{text}");

    // Plain policies: every rule of every policy, without a tier.
    let config = compile(
        r#"{"policies":[{"name":"p","rules":[{"from":[{"source":{"namespaces":["x"]}}]},
           {"when":[{"key":"request.headers[x-team]","notValues":["a"]}]}]},{"name":"none"}]}"#,
    );
    let attrs = get("dev", "github.com")
        .header("x-team", "a")
        .attributes(config.header_names());
    let mut lines = Vec::new();
    let mut collect = |step: &TraceStep<'_>| lines.push(egress_filter::log::trace_line(step));
    config.evaluate_traced(&attrs, Some(&mut collect));
    assert_eq!(
        lines,
        [
            r#"{"event":"explain","step":"policy","tier":null,"policy":"p","dryRun":false,"skipped":null}"#,
            r#"{"event":"explain","step":"rule","tier":null,"policy":"p","index":0,"name":null,"action":"ALLOW","matched":false,"why":"from[0].namespaces (source.namespace)"}"#,
            r#"{"event":"explain","step":"rule","tier":null,"policy":"p","index":1,"name":null,"action":"ALLOW","matched":false,"why":"when notValues (request.headers[x-team])"}"#,
            r#"{"event":"explain","step":"policy","tier":null,"policy":"none","dryRun":false,"skipped":"no_rules"}"#,
        ]
    );
}

#[test]
fn tier_decision_lines() {
    let config = compile(COMPANY);
    let store = MemoryStore::new();
    let line = |req: Req| -> serde_json::Value {
        let attrs = req.attributes(config.header_names());
        let outcome = config.decide(&attrs, None, &store, 1);
        let text = egress_filter::log::outcome_line(
            egress_filter::TrafficKind::Http,
            &outcome,
            Some(&attrs),
        );
        serde_json::from_str(&text).unwrap()
    };
    let l = line(get("team-a", "api.team-a.example"));
    assert_eq!(l["tier"], "namespace");
    assert_eq!(l["policy"], "allow-api");
    assert_eq!(l["rule"], 0);
    assert_eq!(
        l["passed"],
        serde_json::json!({"policy":"delegate","rule":"to-teams"})
    );
    let l = line(get("ci-a", "github.com"));
    assert_eq!(l["tier"], "admin");
    assert_eq!(l["rule"], "github");
    assert!(l.get("passed").is_none());
    let l = line(get("team-c", "x.example"));
    assert_eq!(
        (&l["tier"], &l["reason"], &l["policy"], &l["rule"]),
        (
            &serde_json::json!("default"),
            &serde_json::json!("default_deny"),
            &serde_json::Value::Null,
            &serde_json::Value::Null
        )
    );
    let attrs = get("team-c", "x.example").attributes(config.header_names());
    assert_eq!(
        config.evaluate(&attrs).deny_body(),
        "egress denied by default: no policy allowed the request\n"
    );
}

/// Enough host rules for the tier's host index: the indexed walk and the rule-by-rule (traced)
/// walk agree, and both keep the (priority, name) order, subjects included.
#[test]
fn indexed_admin_tier_keeps_priority_order() {
    struct Spec {
        name: String,
        priority: u32,
        subject: Option<String>,
        allow: bool,
        exact: String,
        wildcard: String,
    }
    let specs: Vec<Spec> = (0..24)
        .map(|i| Spec {
            name: format!("p{i:02}"),
            priority: (i * 7) % 5,
            subject: (i % 3 == 0).then(|| format!("ns-{}", i % 4)),
            allow: i % 2 == 0,
            exact: format!("h{}.example", i % 6),
            wildcard: format!("w{}.example", i % 5),
        })
        .collect();
    let policies: Vec<String> = specs
        .iter()
        .map(|s| {
            let subject = s
                .subject
                .as_ref()
                .map_or(String::new(), |ns| format!(r#""subject":{{"namespaces":["{ns}"]}},"#));
            format!(
                r#"{{"name":"{}","priority":{},{subject}"rules":[{{"name":"r","action":"{}","to":[{{"operation":{{"hosts":["{}","*.{}"]}}}}]}}]}}"#,
                s.name,
                s.priority,
                if s.allow { "ALLOW" } else { "DENY" },
                s.exact,
                s.wildcard
            )
        })
        .collect();
    let config = compile(&format!(
        r#"{{"tiers":{{"admin":[{}],"default":"ALLOW"}}}}"#,
        policies.join(",")
    ));
    let mut order: Vec<&Spec> = specs.iter().collect();
    order.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));

    let mut checked = 0;
    for source in [
        None,
        Some("ns-0"),
        Some("ns-1"),
        Some("ns-3"),
        Some("other"),
    ] {
        for host in [
            "h0.example",
            "h3.example",
            "x.w2.example",
            "a.b.w4.example",
            "none.example",
        ] {
            let req = match source {
                Some(ns) => get(ns, host),
                None => http("GET", host, "/").plaintext(),
            };
            let expected = order
                .iter()
                .find(|s| {
                    let applies = s.subject.as_deref().is_none_or(|ns| source == Some(ns));
                    let hit = host == s.exact || host.ends_with(&format!(".{}", s.wildcard));
                    applies && hit
                })
                .map(|s| (s.name.as_str(), if s.allow { Allow } else { Deny }));
            let (untraced, ..) = run(&config, &req, false);
            let (traced, ..) = run(&config, &req, true);
            assert_eq!(untraced, traced, "{source:?} {host}");
            let got =
                (untraced.tier == Admin).then(|| (untraced.policy.unwrap_or(""), untraced.verdict));
            assert_eq!(got, expected, "{source:?} {host}");
            checked += 1;
        }
    }
    assert_eq!(checked, 25);
}
