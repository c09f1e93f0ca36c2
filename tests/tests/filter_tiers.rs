//! `tiers` through the real `egress_filter.wasm`, run by `egress-sim replay` as a user runs it:
//! one named case per request, checking the decision, the reply status, and the decision
//! line's tier, policy, rule, PASS taken, audit and dry-run entries and rate limit. Plus
//! `egress-sim explain` and `check-config --downstream plaintext` on the same configuration.
//!
//! Configurations: `data/filter/tiers.json` (admin, three teams, baseline),
//! `data/filter/tiers-default-allow.json`, and the plain `policies` of `data/filter/policy.json`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{data, egress_filter};
use egress_sim::replay::{self, Decision, ReplayResult};
use serde_json::{json, Value};

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_egress-sim"))
}

/// One request and what its decision line must say. `None` fields are not checked, except
/// that `passed`, `dry_run` and `audit` are always compared (absent means none).
struct Case {
    name: &'static str,
    config: &'static str,
    request: Value,
    decision: Decision,
    status: Option<u32>,
    tier: Option<&'static str>,
    policy: Value,
    rule: Value,
    reason: &'static str,
    passed: Value,
    dry_run: Vec<Value>,
    audit: Vec<&'static str>,
    limit: Option<&'static str>,
}

const TIERS: &str = "filter/tiers.json";
const DEFAULT_ALLOW: &str = "filter/tiers-default-allow.json";
const PLAIN: &str = "filter/policy.json";

fn principal(ns: &str) -> String {
    format!("cluster.local/ns/{ns}/sa/app")
}

/// An HTTP GET from `source` (`None`: plaintext) to `host` (port 80).
fn get(source: Option<&str>, host: &str) -> Value {
    let mut request = json!({"http": {"authority": host}});
    if let Some(principal) = source {
        request["source"] = json!({ "principal": principal });
    }
    request
}

/// A TLS-passthrough connection (port 443) with this SNI. The client's first bytes (a TLS record
/// header) are what the filter decides on: it holds a connection until the client speaks.
fn tls(source: Option<&str>, sni: &str) -> Value {
    let mut request = json!({ "sni": sni, "tcp": { "data_base64": "FgMBAAA=" } });
    if let Some(principal) = source {
        request["source"] = json!({ "principal": principal });
    }
    request
}

fn case(name: &'static str, config: &'static str, request: Value, decision: Decision) -> Case {
    Case {
        name,
        config,
        request,
        decision,
        status: None,
        tier: None,
        policy: Value::Null,
        rule: Value::Null,
        reason: "",
        passed: Value::Null,
        dry_run: Vec::new(),
        audit: Vec::new(),
        limit: None,
    }
}

impl Case {
    /// The decision line: tier, policy (null for none), rule (name, index or null), reason.
    fn by(mut self, tier: &'static str, policy: Value, rule: Value, reason: &'static str) -> Self {
        self.tier = Some(tier);
        self.policy = policy;
        self.rule = rule;
        self.reason = reason;
        self
    }
    fn status(mut self, status: u32) -> Self {
        self.status = Some(status);
        self
    }
    fn passed(mut self, policy: &str, rule: &str) -> Self {
        self.passed = json!({"policy": policy, "rule": rule});
        self
    }
    fn dry_run(mut self, tier: &str, policy: &str, rule: Value, would_be: &str) -> Self {
        self.dry_run
            .push(json!({"tier": tier, "policy": policy, "rule": rule, "wouldBe": would_be}));
        self
    }
    fn audit(mut self, policy: &'static str) -> Self {
        self.audit.push(policy);
        self
    }
    fn limited_by(mut self, limit: &'static str) -> Self {
        self.limit = Some(limit);
        self
    }
}

use Decision::{Allow, Deny, Ratelimited};

fn s(text: &str) -> Value {
    json!(text)
}

fn cases() -> Vec<Case> {
    let null = Value::Null;
    let team_a = principal("team-a");
    let team_b = principal("team-b");
    let ci_a = principal("ci-a");
    vec![
        // --- admin tier: priority order, first matching rule, subjects ---
        case("priority_lower_number_first", TIERS, get(Some(&ci_a), "pastebin.com"), Deny)
            .status(403)
            .by("admin", s("block-paste"), s("paste-http"), "denied_by_policy"),
        case("admin_deny_applies_to_plaintext", TIERS, get(None, "www.pastebin.com"), Deny)
            .status(403)
            .by("admin", s("block-paste"), s("paste-http"), "denied_by_policy"),
        case("admin_allow_for_subject", TIERS, get(Some(&ci_a), "api.github.com"), Allow)
            .by("admin", s("ci-egress"), s("github"), "allowed_by_policy"),
        case("admin_second_rule", TIERS, get(Some(&principal("ci-b")), "pypi.org"), Allow)
            .by("admin", s("ci-egress"), s("pypi"), "allowed_by_policy"),
        case("admin_catch_all_deny_rule", TIERS, get(Some(&ci_a), "example.org"), Deny)
            .status(403)
            .by("admin", s("ci-egress"), s("rest"), "denied_by_policy"),
        case("subject_miss_skips_the_policy", TIERS, get(Some(&principal("ci-z")), "api.github.com"), Deny)
            .status(403)
            .by("default", null.clone(), null.clone(), "default_deny")
            .passed("delegate", "to-teams"),
        case("equal_priority_ordered_by_name", TIERS, get(Some(&team_a), "tie.example"), Deny)
            .status(403)
            .by("admin", s("a-tie"), s("tie"), "denied_by_policy"),
        case("equal_priority_next_name", TIERS, get(Some(&team_a), "tie2.example"), Allow)
            .by("admin", s("b-tie"), s("tie"), "allowed_by_policy"),
        // --- PASS to the namespace tier ---
        case("pass_then_namespace_allow", TIERS, get(Some(&team_a), "api.team-a.example"), Allow)
            .by("namespace", s("allow-api"), json!(0), "allowed_by_policy")
            .passed("delegate", "to-teams"),
        case("pass_then_namespace_allow_miss_denies", TIERS, get(Some(&team_a), "other.example"), Deny)
            .status(403)
            .by("namespace", null.clone(), null.clone(), "no_allow_policy_matched")
            .passed("delegate", "to-teams"),
        case("pass_then_namespace_without_allow_to_baseline", TIERS, get(Some(&team_b), "mirror.example"), Allow)
            .by("baseline", s("allow-mirror"), s("mirror"), "allowed_by_policy")
            .passed("delegate", "to-teams")
            // Enforcing the dry-run ALLOW policy would give team-b an ALLOW policy that misses.
            .dry_run("namespace", "try-allow-b", null.clone(), "deny"),
        case("namespace_deny", TIERS, get(Some(&team_b), "ads.example"), Deny)
            .status(403)
            .by("namespace", s("deny-ads"), json!(0), "denied_by_policy")
            .passed("delegate", "to-teams"),
        case(
            "namespace_audit",
            TIERS,
            json!({"source": {"principal": team_b}, "http": {"method": "POST", "authority": "upload.example"}}),
            Deny,
        )
        .status(403)
        .by("default", null.clone(), null.clone(), "default_deny")
        .passed("delegate", "to-teams")
        .audit("audit-posts")
        .dry_run("namespace", "try-allow-b", null.clone(), "deny"),
        case("namespace_without_policies_to_baseline", TIERS, get(Some(&principal("team-z")), "mirror.example"), Allow)
            .by("baseline", s("allow-mirror"), s("mirror"), "allowed_by_policy")
            .passed("delegate", "to-teams"),
        case("default_deny", TIERS, get(Some(&principal("team-z")), "nothing.example"), Deny)
            .status(403)
            .by("default", null.clone(), null.clone(), "default_deny")
            .passed("delegate", "to-teams"),
        // --- no principal: no namespace, subjects never match ---
        case("plaintext_skips_subjects_and_namespace_tier", TIERS, get(None, "api.github.com"), Deny)
            .status(403)
            .by("default", null.clone(), null.clone(), "default_deny")
            .passed("delegate", "to-teams"),
        case("plaintext_reaches_baseline", TIERS, get(None, "mirror.example"), Allow)
            .by("baseline", s("allow-mirror"), s("mirror"), "allowed_by_policy")
            .passed("delegate", "to-teams"),
        case("principal_without_namespace", TIERS, get(Some("cluster.local/sa/app"), "api.team-a.example"), Deny)
            .status(403)
            .by("default", null.clone(), null.clone(), "default_deny")
            .passed("delegate", "to-teams"),
        // --- dry run in every tier ---
        case("dry_run_admin_deny_not_enforced", TIERS, get(Some(&ci_a), "gist.github.com"), Allow)
            .by("admin", s("ci-egress"), s("github"), "allowed_by_policy")
            .dry_run("admin", "try-block-gists", s("gists"), "deny"),
        case("dry_run_namespace_allow", TIERS, get(Some(&team_a), "new.team-a.example"), Deny)
            .status(403)
            .by("namespace", null.clone(), null.clone(), "no_allow_policy_matched")
            .passed("delegate", "to-teams")
            .dry_run("namespace", "try-allow-new", json!(0), "allow"),
        case("dry_run_namespace_without_enforced_allow", TIERS, get(Some(&team_b), "b.example"), Deny)
            .status(403)
            .by("default", null.clone(), null.clone(), "default_deny")
            .passed("delegate", "to-teams")
            .dry_run("namespace", "try-allow-b", json!(0), "allow"),
        case("dry_run_namespace_allow_that_misses", TIERS, get(Some(&team_b), "c.example"), Deny)
            .status(403)
            .by("default", null.clone(), null.clone(), "default_deny")
            .passed("delegate", "to-teams")
            .dry_run("namespace", "try-allow-b", null.clone(), "deny"),
        case("dry_run_baseline", TIERS, get(None, "docs.example"), Deny)
            .status(403)
            .by("default", null.clone(), null.clone(), "default_deny")
            .passed("delegate", "to-teams")
            .dry_run("baseline", "try-base", s("docs"), "allow"),
        // --- TCP connections (TLS passthrough) ---
        case("tcp_admin_sni_allow", TIERS, tls(Some(&ci_a), "github.com"), Allow)
            .by("admin", s("ci-egress"), s("github-tls"), "allowed_by_policy"),
        case("tcp_admin_sni_deny", TIERS, tls(None, "www.pastebin.com"), Deny)
            .by("admin", s("block-paste"), s("paste-tls"), "denied_by_policy"),
        case("tcp_allow_rule_with_hosts_never_matches", TIERS, tls(Some(&ci_a), "api.github.com"), Deny)
            .by("admin", s("ci-egress"), s("rest"), "denied_by_policy"),
        case(
            "tcp_deny_rule_ignores_hosts",
            TIERS,
            json!({"source": {"principal": team_a}, "destination": {"port": 80}, "tcp": {"data_base64": "SEVMTw=="}}),
            Deny,
        )
        .by("admin", s("block-paste"), s("paste-http"), "denied_by_policy"),
        case("tcp_pass_then_namespace_sni", TIERS, tls(Some(&team_a), "tls.team-a.example"), Allow)
            .by("namespace", s("allow-tls"), json!(0), "allowed_by_policy")
            .passed("delegate", "to-teams"),
        case("tcp_namespace_allow_miss", TIERS, tls(Some(&team_a), "other.example"), Deny)
            .by("namespace", null.clone(), null.clone(), "no_allow_policy_matched")
            .passed("delegate", "to-teams"),
        case("tcp_plaintext_default", TIERS, tls(None, "other.example"), Deny)
            .by("default", null.clone(), null.clone(), "default_deny")
            .passed("delegate", "to-teams"),
        // --- rate limits attached to tiers ---
        case("admin_rule_limit_1", TIERS, get(Some("cluster.local/ns/ci-a/sa/burst"), "pypi.org"), Allow)
            .by("admin", s("ci-egress"), s("pypi"), "allowed_by_policy"),
        case("admin_rule_limit_2", TIERS, get(Some("cluster.local/ns/ci-a/sa/burst"), "pypi.org"), Allow)
            .by("admin", s("ci-egress"), s("pypi"), "allowed_by_policy"),
        case("admin_rule_limit_3", TIERS, get(Some("cluster.local/ns/ci-a/sa/burst"), "pypi.org"), Ratelimited)
            .status(429)
            .by("admin", s("ci-egress"), s("pypi"), "rate_limited")
            .limited_by("ci-pypi"),
        case("admin_limit_under_namespace_allow_1", TIERS, get(Some("cluster.local/ns/team-a/sa/burst"), "limited.example"), Allow)
            .by("namespace", s("allow-api"), json!(0), "allowed_by_policy")
            .passed("delegate", "to-teams"),
        case("admin_limit_under_namespace_allow_2", TIERS, get(Some("cluster.local/ns/team-a/sa/burst"), "limited.example"), Allow)
            .by("namespace", s("allow-api"), json!(0), "allowed_by_policy")
            .passed("delegate", "to-teams"),
        case("admin_limit_under_namespace_allow_3", TIERS, get(Some("cluster.local/ns/team-a/sa/burst"), "limited.example"), Allow)
            .by("namespace", s("allow-api"), json!(0), "allowed_by_policy")
            .passed("delegate", "to-teams"),
        case("admin_limit_under_namespace_allow_4", TIERS, get(Some("cluster.local/ns/team-a/sa/burst"), "limited.example"), Ratelimited)
            .status(429)
            .by("namespace", s("allow-api"), json!(0), "rate_limited")
            .passed("delegate", "to-teams")
            .limited_by("per-principal"),
        case("admin_limit_other_principal", TIERS, get(Some("cluster.local/ns/team-a/sa/other"), "limited.example"), Allow)
            .by("namespace", s("allow-api"), json!(0), "allowed_by_policy")
            .passed("delegate", "to-teams"),
        case("baseline_rule_limit_1", TIERS, get(Some("cluster.local/ns/team-z/sa/burst"), "mirror.example"), Allow)
            .by("baseline", s("allow-mirror"), s("mirror"), "allowed_by_policy")
            .passed("delegate", "to-teams"),
        case("baseline_rule_limit_2", TIERS, get(Some("cluster.local/ns/team-z/sa/burst"), "mirror.example"), Allow)
            .by("baseline", s("allow-mirror"), s("mirror"), "allowed_by_policy")
            .passed("delegate", "to-teams"),
        case("baseline_rule_limit_3", TIERS, get(Some("cluster.local/ns/team-z/sa/burst"), "mirror.example"), Ratelimited)
            .status(429)
            .by("baseline", s("allow-mirror"), s("mirror"), "rate_limited")
            .passed("delegate", "to-teams")
            .limited_by("mirror"),
        case("namespace_policy_limit_1", TIERS, get(Some(&principal("team-c")), "c.example"), Allow)
            .by("namespace", s("allow-c"), json!(0), "allowed_by_policy")
            .passed("delegate", "to-teams"),
        case("namespace_policy_limit_2", TIERS, tls(Some(&principal("team-c")), "c.example"), Ratelimited)
            .by("namespace", s("allow-c"), json!(0), "rate_limited")
            .passed("delegate", "to-teams")
            .limited_by("team-c"),
        // --- default ALLOW ---
        case("default_allow", DEFAULT_ALLOW, get(Some(&team_a), "anything.example"), Allow)
            .by("default", null.clone(), null.clone(), "default_allow"),
        case("default_allow_plaintext_tcp", DEFAULT_ALLOW, tls(None, "anything.example"), Allow)
            .by("default", null.clone(), null.clone(), "default_allow"),
        case("admin_deny_before_default_allow", DEFAULT_ALLOW, get(None, "evil.example"), Deny)
            .status(403)
            .by("admin", s("block-evil"), s("evil"), "denied_by_policy"),
        // --- plain `policies` keep their round-1 lines ---
        case(
            "plain_policies_allow_unchanged",
            PLAIN,
            json!({"source": {"principal": "cluster.local/ns/ci/sa/runner"}, "http": {"authority": "api.github.com"}}),
            Allow,
        )
        .by("", s("ci-to-github"), json!(0), "allowed_by_policy"),
        case(
            "plain_policies_deny_unchanged",
            PLAIN,
            json!({"source": {"principal": "cluster.local/ns/dev/sa/app"}, "http": {"authority": "api.github.com"}}),
            Deny,
        )
        .status(403)
        .by("", null.clone(), null.clone(), "no_allow_policy_matched"),
        case(
            "plain_policies_tcp_unchanged",
            PLAIN,
            json!({"sni": "github.com", "tcp": {"data_base64": "FgMBAAA="}}),
            Allow,
        )
        .by("", s("tls-to-github"), json!(0), "allowed_by_policy"),
    ]
}

/// Runs every case of `config` through one `egress-sim replay` (2 workers) and returns the
/// results by case name.
fn replay(config: &str, cases: &[&Case]) -> Vec<ReplayResult> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("filter_tiers");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(config.replace('/', "_") + ".jsonl");
    let lines: Vec<String> = cases
        .iter()
        .map(|c| {
            let mut request = c.request.clone();
            request["id"] = json!(c.name);
            request.to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let output = sim()
        .args(["replay", "--workers", "2", "--wasm"])
        .arg(egress_filter())
        .arg("--config")
        .arg(data(config))
        .arg("--requests")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check(case: &Case, result: &ReplayResult) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |what: &str, got: Value, want: Value| {
        if got != want {
            problems.push(format!("{}: {what} is {got}, want {want}", case.name));
        }
    };
    expect("decision", json!(result.decision), json!(case.decision));
    expect("status", json!(result.status), json!(case.status));
    let Some(line) = replay::decision_log(&result.logs) else {
        return vec![format!(
            "{}: no decision line in {:?}",
            case.name, result.logs
        )];
    };
    let field = |key: &str| line.get(key).cloned().unwrap_or(Value::Null);
    if case.config == PLAIN {
        // Round-1 lines have no tier keys at all.
        for key in ["tier", "passed"] {
            let present = line.contains_key(key);
            expect(
                &format!("presence of {key:?}"),
                json!(present),
                json!(false),
            );
        }
    } else {
        expect("tier", field("tier"), json!(case.tier));
    }
    expect("policy", field("policy"), case.policy.clone());
    expect("rule", field("rule"), case.rule.clone());
    expect("reason", field("reason"), json!(case.reason));
    expect("passed", field("passed"), case.passed.clone());
    expect("dryRun", field("dryRun"), json!(case.dry_run));
    expect("audit", field("audit"), json!(case.audit));
    let limit = line
        .get("rateLimit")
        .filter(|l| l["result"] != "allowed")
        .map(|l| l["name"].clone());
    expect("refusing limit", json!(limit), json!(case.limit));
    problems
}

#[test]
fn tier_cases_through_the_wasm() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut problems = Vec::new();
    for config in [TIERS, DEFAULT_ALLOW, PLAIN] {
        let group: Vec<&Case> = cases.iter().filter(|c| c.config == config).collect();
        let results = replay(config, &group);
        assert_eq!(
            results.len(),
            group.len(),
            "{config}: one result per request"
        );
        for (case, result) in group.iter().zip(&results) {
            assert_eq!(result.id, case.name);
            problems.extend(check(case, result));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems in {} cases:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
    println!("{} tier cases decided as expected", cases.len());
}

fn write(name: &str, contents: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("filter_tiers");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn explain_tells_the_tiers_of_one_request() {
    let output = sim()
        .args(["explain", "--wasm"])
        .arg(egress_filter())
        .arg("--config")
        .arg(data(TIERS))
        .arg("--request")
        .arg(r#"{"source":{"principal":"cluster.local/ns/ci-z/sa/app"},"http":{"authority":"api.github.com"}}"#)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "request: http GET api.github.com/, from cluster.local/ns/ci-z/sa/app (namespace ci-z)",
        "admin tier\n  policy block-paste (priority 10)\n    rule paste-http (DENY): no match: to[0].hosts: request.host is \"api.github.com\"",
        "  policy try-block-gists (priority 15) [dry run]",
        "  policy ci-egress (priority 20): skipped, its subject does not hold the source's namespace",
        "  policy a-tie (priority 25)\n",
        "  policy b-tie (priority 25)\n",
        "    rule to-teams (PASS): matches\n  → PASS taken in policy delegate: on to the namespace tier",
        "namespace tier (namespace \"ci-z\"): skipped: namespace \"ci-z\" has no policies",
        "baseline tier\n  policy allow-mirror (priority 10)",
        "default tier: → deny",
        "decision: deny (tier default, reason default_deny)",
        "  passed over: admin policy delegate rule to-teams",
        "decision line: {\"event\":\"decision\",\"kind\":\"http\",\"decision\":\"deny\",\"tier\":\"default\"",
        "outcome: deny, status 403",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in\n{stdout}");
    }
    // a-tie sorts before b-tie although it comes later in the file.
    let a = stdout.find("policy a-tie").unwrap();
    let b = stdout.find("policy b-tie").unwrap();
    assert!(a < b, "{stdout}");

    // A TCP connection from a file, and a plain-`policies` configuration.
    let request = write(
        "explain-tcp.json",
        r#"{"id":"t","sni":"tls.team-a.example","source":{"principal":"cluster.local/ns/team-a/sa/app"},"tcp":{"data_base64":"FgMBAAA="}}"#,
    );
    let output = sim()
        .args(["explain", "--wasm"])
        .arg(egress_filter())
        .arg("--config")
        .arg(data(TIERS))
        .arg("--request-file")
        .arg(&request)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("request: tcp sni tls.team-a.example port 443"),
        "{stdout}"
    );
    for expected in [
        "  policy allow-api\n    rule #0 (ALLOW): no match: an ALLOW or PASS rule with HTTP-only fields never matches TCP",
        "  policy allow-tls\n    rule #0 (ALLOW): matches",
        "    rule paste-tls (DENY): no match: when values: connection.sni is \"tls.team-a.example\"",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in\n{stdout}");
    }
    assert!(stdout.contains("  → allow (namespace team-a)"), "{stdout}");
    assert!(stdout.contains("baseline tier: not reached"), "{stdout}");

    let output = sim()
        .args(["explain", "--wasm"])
        .arg(egress_filter())
        .arg("--config")
        .arg(data(PLAIN))
        .arg("--request")
        .arg(r#"{"source":{"principal":"cluster.local/ns/dev/sa/app"},"http":{"authority":"github.com"}}"#)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("policies (Istio semantics"), "{stdout}");
    assert!(
        stdout.contains("decision: deny (reason no_allow_policy_matched)"),
        "{stdout}"
    );
    assert!(!stdout.contains("not reached"), "{stdout}");

    // A rejected configuration: exit 1 with the filter's reason.
    let bad = write(
        "bad-tiers.json",
        r#"{"tiers":{"baseline":[{"name":"b","priority":1,"rules":[{"action":"PASS"}]}]}}"#,
    );
    let output = sim()
        .args(["explain", "--wasm"])
        .arg(egress_filter())
        .arg("--config")
        .arg(&bad)
        .arg("--request")
        .arg(r#"{"http":{}}"#)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout
            .contains("tiers.baseline[0].rules[0].action: PASS is only allowed in the admin tier"),
        "{stdout}"
    );
}

#[test]
fn check_config_warns_about_subjects_on_a_plaintext_gateway() {
    let run = |extra: &[&str]| {
        let output = sim()
            .args(["check-config", "--wasm"])
            .arg(egress_filter())
            .arg("--config")
            .arg(data(TIERS))
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "warnings do not fail the check"
        );
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(run(&[]), "ok\n");
    assert_eq!(run(&["--downstream", "mtls"]), "ok\n");
    let text = run(&["--downstream", "plaintext"]);
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 4, "{text}");
    for expected in [
        "warning: tiers.admin[2] (ci-egress): never applies: it has a subject",
        "warning: tiers.namespaces.team-a: never consulted",
        "warning: tiers.namespaces.team-b: never consulted",
        "warning: tiers.namespaces.team-c: never consulted",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(text.ends_with("ok\n"), "{text}");
}
