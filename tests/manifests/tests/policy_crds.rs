//! The policy.egress-guard.dev CRDs: the worked example's objects are valid against their
//! structural schemas and every CEL rule (`x-kubernetes-validations`) holds for them; each bad
//! object is refused by the schema or by the CEL rule meant for it. The CEL rules are evaluated
//! for real (the `cel` interpreter), so a rule that does not say what its message says fails here.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use common::{manifest_documents, repo_root};
use egress_manifests::schema::CrdSchemas;
use egress_manifests::yaml;

fn crds() -> Vec<Value> {
    let dir = repo_root().join("deploy/crds/policy");
    [
        "policy.egress-guard.dev_clusteregresspolicies.yaml",
        "policy.egress-guard.dev_egresspolicies.yaml",
    ]
    .iter()
    .flat_map(|f| yaml::load_documents(&dir.join(f)).unwrap())
    .map(|d| d.value)
    .collect()
}

/// rule text -> message, from every x-kubernetes-validations in the CRDs.
fn messages(value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            if let Some(rules) = map
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
            {
                for r in rules {
                    out.insert(
                        r["rule"].as_str().unwrap().to_string(),
                        r["message"].as_str().unwrap_or("").to_string(),
                    );
                }
            }
            map.values().for_each(|v| messages(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| messages(v, out)),
        _ => {}
    }
}

/// The value at a validator path (`spec.rules[0].to`; `""` is the object itself).
fn at<'a>(object: &'a Value, path: &str) -> &'a Value {
    let mut current = object;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (field, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        current = &current[field];
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            current = &current[index.parse::<usize>().unwrap()];
        }
    }
    current
}

struct Checker {
    schemas: CrdSchemas,
    messages: BTreeMap<String, String>,
}

impl Checker {
    fn new() -> Checker {
        let documents = crds();
        let mut messages_by_rule = BTreeMap::new();
        documents
            .iter()
            .for_each(|d| messages(d, &mut messages_by_rule));
        Checker {
            schemas: CrdSchemas::from_documents(&documents).unwrap(),
            messages: messages_by_rule,
        }
    }

    /// Schema violations and failed CEL rules, as `path: message`; plus how many rules ran.
    fn check(&self, object: &Value) -> (Vec<String>, usize) {
        let report = self.schemas.validate(object).unwrap();
        let mut problems: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
        let env = Arc::new(cel::Env::stdlib());
        for (path, rule) in &report.unevaluated_rules {
            let program = env
                .compile(rule)
                .unwrap_or_else(|e| panic!("CEL rule {rule:?} does not parse: {e:?}"));
            let mut context = cel::Context::with_env(env.clone());
            // A rule at the root sees the object with its metadata, as the API server shows it.
            let value = at(object, path);
            context
                .add_variable("self", cel::to_value(value).unwrap())
                .unwrap();
            match program.execute(&context) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => problems.push(format!(
                    "{}: {}",
                    if path.is_empty() { "<root>" } else { path },
                    self.messages.get(rule).cloned().unwrap_or_default()
                )),
                other => panic!("CEL rule {rule:?} at {path} gave {other:?}"),
            }
        }
        (problems, report.unevaluated_rules.len())
    }
}

#[test]
fn the_worked_example_is_valid_and_every_cel_rule_holds() {
    let checker = Checker::new();
    let mut objects = 0;
    let mut rules = 0;
    for document in manifest_documents(&repo_root().join("examples/policies")) {
        if !checker.schemas.knows(
            document.value["apiVersion"].as_str().unwrap_or(""),
            document.value["kind"].as_str().unwrap_or(""),
        ) {
            continue;
        }
        let (problems, evaluated) = checker.check(&document.value);
        assert!(problems.is_empty(), "{}: {problems:?}", document.describe());
        objects += 1;
        rules += evaluated;
    }
    assert!(objects >= 7, "{objects}");
    assert!(rules >= 20, "{rules} CEL rules evaluated");
    println!("{objects} policy objects valid; {rules} CEL rule evaluations held");
}

fn cluster_policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "policy.egress-guard.dev/v1alpha1", "kind": "ClusterEgressPolicy",
           "metadata": {"name": name}, "spec": spec})
}

fn egress_policy(spec: Value) -> Value {
    json!({"apiVersion": "policy.egress-guard.dev/v1alpha1", "kind": "EgressPolicy",
           "metadata": {"name": "team", "namespace": "shop"}, "spec": spec})
}

#[test]
fn each_bad_object_is_refused_where_it_is_wrong() {
    let checker = Checker::new();
    let deny = json!({"name": "r", "action": "Deny"});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "Pass outside the Admin tier",
            cluster_policy("p", json!({"tier": "Baseline", "priority": 1, "rules": [{"name": "r", "action": "Pass"}]})),
            "spec: Pass is only allowed in the Admin tier",
        ),
        (
            "priority out of range",
            cluster_policy("p", json!({"tier": "Admin", "priority": 1001, "rules": [deny]})),
            "spec.priority: 1001 is above the maximum 1000",
        ),
        (
            "no rules",
            cluster_policy("p", json!({"tier": "Admin", "priority": 1, "rules": []})),
            "spec.rules: fewer than minItems 1 items",
        ),
        (
            "rule names twice",
            cluster_policy("p", json!({"tier": "Admin", "priority": 1, "rules": [deny, deny]})),
            "spec.rules[1]: duplicate key (name)",
        ),
        (
            "a Deny rule with a rate limit",
            cluster_policy("p", json!({"tier": "Admin", "priority": 1, "rules": [
                {"name": "r", "action": "Deny", "rateLimit": {"maxTokens": 1, "fillInterval": "1s"}}]})),
            "spec.rules[0]: a Deny rule allows nothing, so it cannot have a rateLimit",
        ),
        (
            "a name that is no DNS label",
            cluster_policy("Block.Paste", json!({"tier": "Admin", "priority": 1, "rules": [deny]})),
            "<root>: the name must be a DNS label",
        ),
        (
            "In without values",
            cluster_policy("p", json!({"tier": "Admin", "priority": 1, "rules": [deny],
                "subject": {"namespaces": {"matchExpressions": [{"key": "team", "operator": "In"}]}}})),
            "spec.subject.namespaces.matchExpressions[0]: values must be non-empty for In and NotIn",
        ),
        (
            "Exists with values",
            cluster_policy("p", json!({"tier": "Admin", "priority": 1, "rules": [deny],
                "subject": {"namespaces": {"matchExpressions": [{"key": "team", "operator": "Exists", "values": ["x"]}]}}})),
            "spec.subject.namespaces.matchExpressions[0]: values must be non-empty for In and NotIn, and empty for Exists",
        ),
        (
            "an unknown tier",
            cluster_policy("p", json!({"tier": "Platform", "priority": 1, "rules": [deny]})),
            "spec.tier: \"Platform\" is not one of",
        ),
        (
            "a DENY EgressPolicy without rules",
            egress_policy(json!({"action": "DENY"})),
            "spec: a DENY policy without rules never matches",
        ),
        (
            "a condition without values",
            egress_policy(json!({"rules": [{"when": [{"key": "source.ip"}]}]})),
            "spec.rules[0].when[0]: at least one of values or notValues must be set",
        ),
        (
            "serviceAccounts with namespaces",
            egress_policy(json!({"rules": [{"from": [{"source": {"serviceAccounts": ["a/b"], "namespaces": ["a"]}}]}]})),
            "spec.rules[0].from[0].source: Cannot set serviceAccounts with namespaces or principals",
        ),
        (
            "a workload selector (the gateway is the only target)",
            egress_policy(json!({"selector": {"matchLabels": {"app": "x"}}, "rules": [{}]})),
            "spec.selector: unknown field \"selector\"",
        ),
        (
            "rate limit names twice",
            egress_policy(json!({"rateLimits": [
                {"name": "a", "maxTokens": 1, "fillInterval": "1s"},
                {"name": "a", "maxTokens": 2, "fillInterval": "1s"}]})),
            "spec.rateLimits[1]: duplicate key (name)",
        ),
        (
            "an unknown rate limit key",
            egress_policy(json!({"rateLimits": [{"name": "a", "key": ["source.user"], "maxTokens": 1, "fillInterval": "1s"}]})),
            "spec.rateLimits[0].key[0]: \"source.user\" does not match pattern",
        ),
        (
            "a fill interval without a unit",
            egress_policy(json!({"rateLimits": [{"name": "a", "maxTokens": 1, "fillInterval": "10"}]})),
            "spec.rateLimits[0].fillInterval: \"10\" does not match pattern",
        ),
    ];
    for (what, object, expected) in cases {
        let (problems, _) = checker.check(&object);
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{what}: expected {expected:?} in {problems:?}"
        );
    }
    // And the same shapes, right, pass.
    for object in [
        cluster_policy(
            "p",
            json!({"tier": "Admin", "priority": 1, "rules": [{"name": "r", "action": "Pass"}]}),
        ),
        cluster_policy(
            "p",
            json!({"tier": "Baseline", "priority": 0, "rules": [
            {"name": "r", "action": "Allow", "rateLimit": {"maxTokens": 1, "fillInterval": "1m30s"}}],
            "subject": {"namespaces": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}}}),
        ),
        egress_policy(json!({"action": "DENY", "rules": [{}]})),
        egress_policy(
            json!({"rateLimits": [{"name": "a", "key": ["request.headers[x-user]"], "maxTokens": 1, "fillInterval": "500ms"}]}),
        ),
    ] {
        let (problems, _) = checker.check(&object);
        assert!(problems.is_empty(), "{object}: {problems:?}");
    }
}
