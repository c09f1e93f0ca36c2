use serde_json::{json, Value};

use super::*;
use crate::resources::{ClusterEgressPolicy, EgressPolicy};

/// A ClusterEgressPolicy; `subject` is the resolved list (`None`: every source).
fn cep(name: &str, tier: &str, priority: i64, rules: Value) -> ClusterEgressPolicy {
    serde_json::from_value(json!({
        "apiVersion": "policy.egress-guard.dev/v1alpha1",
        "kind": "ClusterEgressPolicy",
        "metadata": {"name": name},
        "spec": {"tier": tier, "priority": priority, "rules": rules},
    }))
    .unwrap()
}

fn ep(namespace: &str, name: &str, action: &str, rules: Value) -> EgressPolicy {
    serde_json::from_value(json!({
        "apiVersion": "policy.egress-guard.dev/v1alpha1",
        "kind": "EgressPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"action": action, "rules": rules},
    }))
    .unwrap()
}

struct Case {
    set: PolicySet,
    subjects: BTreeMap<String, Option<Vec<String>>>,
}

impl Case {
    fn new() -> Case {
        Case {
            set: PolicySet::default(),
            subjects: BTreeMap::new(),
        }
    }

    fn cluster(mut self, policy: ClusterEgressPolicy, subject: Option<&[&str]>) -> Case {
        self.subjects.insert(
            policy.metadata.name.clone().unwrap(),
            subject.map(|s| s.iter().map(|n| n.to_string()).collect()),
        );
        self.set.cluster_policies.push(policy);
        self
    }

    fn dry_run(mut self) -> Case {
        if let Some(last) = self.set.cluster_policies.last_mut() {
            last.spec.dry_run = true;
        }
        self
    }

    fn namespaced(mut self, policy: EgressPolicy) -> Case {
        self.set.egress_policies.push(policy);
        self
    }

    /// `(policy, rule) -> by` for every reported rule.
    fn report(&self) -> Vec<(String, String, String)> {
        analyse(&self.set, &self.subjects)
            .into_iter()
            .flat_map(|(policy, rules)| {
                rules
                    .into_iter()
                    .map(move |r| (policy.to_string(), r.rule, r.by))
            })
            .collect()
    }
}

fn deny_hosts(name: &str, hosts: &[&str]) -> Value {
    json!([{"name": name, "action": "Deny", "to": [{"operation": {"hosts": hosts}}]}])
}

fn allow_hosts(hosts: &[&str]) -> Value {
    json!([{"to": [{"operation": {"hosts": hosts}}]}])
}

fn block_paste() -> ClusterEgressPolicy {
    cep(
        "block-paste",
        "Admin",
        10,
        deny_hosts("paste-sites", &["pastebin.com", "*.pastebin.com"]),
    )
}

#[test]
fn an_admin_deny_for_everyone_shadows_a_namespace_allow() {
    let case = Case::new().cluster(block_paste(), None).namespaced(ep(
        "team-a",
        "paste",
        "ALLOW",
        allow_hosts(&["raw.pastebin.com"]),
    ));
    assert_eq!(
        case.report(),
        [(
            "EgressPolicy team-a/paste".to_string(),
            "rules[0]".to_string(),
            "denied first by ClusterEgressPolicy block-paste priority 10, rule paste-sites"
                .to_string()
        )]
    );
}

#[test]
fn a_baseline_rule_is_shadowed_by_an_admin_rule_and_by_a_namespace_with_allow_policies() {
    let baseline_paste = cep(
        "paste-ok",
        "Baseline",
        0,
        json!([{"name": "paste", "action": "Allow", "to": [{"operation": {"hosts": ["pastebin.com"]}}]}]),
    );
    let case = Case::new()
        .cluster(block_paste(), None)
        .cluster(baseline_paste.clone(), None);
    assert_eq!(case.report().len(), 1, "{:?}", case.report());
    assert!(case.report()[0].2.contains("block-paste"));

    // team-a has an ALLOW EgressPolicy: whatever reaches its namespace tier is decided there.
    let mut docs = baseline_paste;
    docs.metadata.name = Some("docs".into());
    docs.spec.rules[0].to = Some(vec![crate::resources::RuleTo {
        operation: Some(crate::resources::Operation {
            hosts: Some(vec!["docs.rs".into()]),
            ..Default::default()
        }),
    }]);
    let case = Case::new().cluster(docs, Some(&["team-a"])).namespaced(ep(
        "team-a",
        "github",
        "ALLOW",
        allow_hosts(&["github.com"]),
    ));
    let report = case.report();
    assert_eq!(report.len(), 1, "{report:?}");
    assert!(
        report[0].2.contains("EgressPolicies of namespace team-a"),
        "{report:?}"
    );
}

#[test]
fn an_earlier_admin_rule_of_any_action_shadows_a_later_one() {
    let case = Case::new()
        .cluster(
            cep(
                "pass-all",
                "Admin",
                0,
                json!([{"name": "everything", "action": "Pass"}]),
            ),
            None,
        )
        .cluster(block_paste(), None);
    let report = case.report();
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(report[0].0, "ClusterEgressPolicy block-paste");
    assert_eq!(
        report[0].2,
        "passed on first by ClusterEgressPolicy pass-all priority 0, rule everything"
    );
}

#[test]
fn cidr_containment_and_source_namespaces_are_understood() {
    let internal = cep(
        "no-internal",
        "Admin",
        1,
        json!([{"name": "rfc1918", "action": "Deny", "from": [{"source": {"namespaces": ["team-*"]}}],
                "when": [{"key": "destination.ip", "values": ["10.0.0.0/8"]}]}]),
    );
    let case = Case::new().cluster(internal, None).namespaced(ep(
        "team-a",
        "db",
        "ALLOW",
        json!([{"when": [{"key": "destination.ip", "values": ["10.0.0.0/8"]}]}]),
    ));
    assert_eq!(case.report().len(), 1, "{:?}", case.report());
    assert!(cidr_covers("10.0.0.0/8", "10.1.2.0/24"));
    assert!(cidr_covers("10.0.0.0/8", "10.1.2.3"));
    assert!(!cidr_covers("10.1.0.0/16", "10.0.0.0/8"));
    assert!(!cidr_covers("10.0.0.0/8", "fd00::/8"));
    assert!(cidr_covers("::/0", "fd00::1"));
    assert!(!cidr_covers("not-an-ip", "10.0.0.1"));
}

#[test]
fn rules_that_are_still_reachable_are_not_reported() {
    let paste_for = |ns: &str| ep(ns, "paste", "ALLOW", allow_hosts(&["pastebin.com"]));
    let cases: Vec<(&str, Case)> = vec![
        (
            "the Admin policy covers other namespaces only",
            Case::new()
                .cluster(block_paste(), Some(&["ci-a"]))
                .namespaced(paste_for("team-b")),
        ),
        (
            "a Baseline policy for every source is not covered by one for some namespaces",
            Case::new().cluster(block_paste(), Some(&["ci-a"])).cluster(
                cep(
                    "paste-ok",
                    "Baseline",
                    0,
                    json!([{"name": "p", "action": "Allow",
                    "to": [{"operation": {"hosts": ["pastebin.com"]}}]}]),
                ),
                None,
            ),
        ),
        (
            "the Admin policy is a dry run",
            Case::new()
                .cluster(block_paste(), None)
                .dry_run()
                .namespaced(paste_for("team-a")),
        ),
        (
            "an earlier PASS may hand the requests on before the DENY",
            Case::new()
                .cluster(
                    cep(
                        "pass-ci",
                        "Admin",
                        5,
                        json!([{"name": "ci", "action": "Pass",
                        "from": [{"source": {"principals": ["cluster.local/ns/team-a/sa/ci"]}}]}]),
                    ),
                    None,
                )
                .cluster(block_paste(), None)
                .namespaced(paste_for("team-a")),
        ),
        (
            "*.pastebin.com does not cover pastebin.com itself",
            Case::new()
                .cluster(
                    cep(
                        "sub",
                        "Admin",
                        1,
                        deny_hosts("subdomains", &["*.pastebin.com"]),
                    ),
                    None,
                )
                .namespaced(paste_for("team-a")),
        ),
        (
            "the DENY is narrower (one path only)",
            Case::new()
                .cluster(
                    cep(
                        "uploads",
                        "Admin",
                        1,
                        json!([{"name": "upload", "action": "Deny",
                        "to": [{"operation": {"hosts": ["pastebin.com"], "paths": ["/upload"]}}]}]),
                    ),
                    None,
                )
                .namespaced(paste_for("team-a")),
        ),
        (
            "an SNI condition does not cover plain HTTP requests to the host",
            Case::new()
                .cluster(
                    cep(
                        "sni",
                        "Admin",
                        1,
                        json!([{"name": "sni", "action": "Deny",
                        "when": [{"key": "connection.sni", "values": ["pastebin.com"]}]}]),
                    ),
                    None,
                )
                .namespaced(paste_for("team-a")),
        ),
        (
            "a DENY with hosts still acts on TCP, where the earlier host rule does not",
            Case::new()
                .cluster(
                    cep(
                        "github",
                        "Admin",
                        1,
                        json!([{"name": "gh", "action": "Allow",
                        "to": [{"operation": {"hosts": ["github.com"]}}]}]),
                    ),
                    None,
                )
                .namespaced(ep("team-a", "no-gh", "DENY", allow_hosts(&["github.com"]))),
        ),
        (
            "the namespace has only DENY policies, which do not cover the rule",
            Case::new()
                .cluster(
                    cep(
                        "docs",
                        "Baseline",
                        0,
                        json!([{"name": "docs", "action": "Allow",
                        "to": [{"operation": {"hosts": ["docs.rs"]}}]}]),
                    ),
                    Some(&["team-a"]),
                )
                .namespaced(ep(
                    "team-a",
                    "no-paste",
                    "DENY",
                    allow_hosts(&["pastebin.com"]),
                )),
        ),
        (
            "a rule that matches no source of its namespace is dead, not shadowed",
            Case::new().cluster(block_paste(), None).namespaced(ep(
                "team-a",
                "other",
                "ALLOW",
                json!([{"from": [{"source": {"namespaces": ["team-b"]}}],
                        "to": [{"operation": {"hosts": ["pastebin.com"]}}]}]),
            )),
        ),
        (
            "a subject that resolved to no namespace",
            Case::new().cluster(block_paste(), None).cluster(
                cep("none", "Admin", 20, deny_hosts("x", &["pastebin.com"])),
                Some(&[]),
            ),
        ),
    ];
    for (what, case) in cases {
        assert!(case.report().is_empty(), "{what}: {:?}", case.report());
    }
}

#[test]
fn different_deciders_per_namespace_are_each_named() {
    let case = Case::new()
        .cluster(
            cep(
                "a",
                "Admin",
                1,
                json!([{"name": "ra", "action": "Deny",
                "from": [{"source": {"namespaces": ["ci-a"]}}]}]),
            ),
            None,
        )
        .cluster(
            cep(
                "b",
                "Admin",
                2,
                json!([{"name": "rb", "action": "Allow",
                "from": [{"source": {"namespaces": ["ci-b"]}}]}]),
            ),
            None,
        )
        .cluster(
            cep("late", "Admin", 3, deny_hosts("x", &["pastebin.com"])),
            Some(&["ci-a", "ci-b"]),
        );
    let report = case.report();
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(
        report[0].2,
        "for namespace ci-a: denied first by ClusterEgressPolicy a priority 1, rule ra; \
         for namespace ci-b: allowed first by ClusterEgressPolicy b priority 2, rule rb"
    );
    // Take ci-b's decider away: ci-b reaches the rule, so it is not reported.
    let mut case = case;
    case.set.cluster_policies.remove(1);
    case.subjects.remove("b");
    assert!(case.report().is_empty(), "{:?}", case.report());
}

#[test]
fn string_and_host_coverage() {
    assert!(string_covers("*", "abc"));
    assert!(!string_covers("abc", "*"));
    assert!(string_covers(
        "cluster.local/ns/ci-*",
        "cluster.local/ns/ci-a/sa/x"
    ));
    assert!(string_covers("ci-*", "ci-a*"));
    assert!(!string_covers("ci-a*", "ci-*"));
    assert!(string_covers("*.com", "*.github.com"));
    assert!(host_covers("*.GitHub.com", "api.github.com."));
    assert!(host_covers("github.com:*", "GITHUB.COM"));
    assert!(!host_covers("*.github.com", "github.com"));
    assert!(!host_covers("github.com", "*.github.com"));
    assert!(path_covers("/api/*", "/api/v1/*"));
    assert!(!path_covers("/api/{*}", "/api/x"));
    assert!(path_covers("/api/{*}", "/api/{*}"));
}
