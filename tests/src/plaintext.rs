//! `egress-sim check-config --downstream plaintext`: what in a configuration can never match
//! when the gateway receives plaintext. Such a request has no peer certificate, hence no
//! principal and no namespace: rules that require one, admin and baseline policies with a
//! `subject`, and every `tiers.namespaces` entry never apply.
//!
//! The filter cannot tell how its listener is set up, so this is computed here from the
//! configuration file (the user's JSON), not by the filter.

use serde_json::Value;

const REASON: &str = "a gateway that receives plaintext sees no principal, so no namespace";

/// The field of `rule` (AuthorizationPolicy shape) that requires a principal or a namespace,
/// when it can never match without one.
fn required_identity(rule: &Value) -> Option<String> {
    let non_empty = |v: Option<&Value>| v.and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if let Some(from) = rule.get("from").and_then(Value::as_array) {
        // Any `from` entry may match: only when every one needs an identity does the rule.
        let needs: Vec<String> = from
            .iter()
            .enumerate()
            .filter_map(|(i, entry)| {
                let source = entry.get("source")?;
                ["principals", "namespaces"]
                    .into_iter()
                    .find(|f| non_empty(source.get(*f)))
                    .map(|f| format!("from[{i}].source.{f}"))
            })
            .collect();
        if !from.is_empty() && needs.len() == from.len() {
            return needs.into_iter().next();
        }
    }
    let when = rule.get("when").and_then(Value::as_array)?;
    when.iter().enumerate().find_map(|(i, condition)| {
        let key = condition.get("key")?.as_str()?;
        (matches!(key, "source.principal" | "source.namespace")
            && non_empty(condition.get("values")))
        .then(|| format!("when[{i}] {key}"))
    })
}

fn rules(out: &mut Vec<String>, policy: &Value, path: &str) {
    let name = policy.get("name").and_then(Value::as_str).unwrap_or("");
    let rules = policy.get("rules").and_then(Value::as_array);
    for (j, rule) in rules.into_iter().flatten().enumerate() {
        if let Some(field) = required_identity(rule) {
            out.push(format!(
                "warning: {path}.rules[{j}] ({name}): can never match: it requires {field}, and {REASON}"
            ));
        }
    }
}

fn limit_matches(out: &mut Vec<String>, limits: Option<&Value>, path: &str) {
    let limits = limits.and_then(Value::as_array);
    for (k, limit) in limits.into_iter().flatten().enumerate() {
        let Some(rule) = limit.get("match") else {
            continue;
        };
        if let Some(field) = required_identity(rule) {
            let name = limit.get("name").and_then(Value::as_str).unwrap_or("");
            out.push(format!(
                "warning: {path}[{k}].match ({name}): the limit never applies: it requires {field}, and {REASON}"
            ));
        }
    }
}

/// One `warning: ...` line per policy, namespace entry, rule and limit that can never match.
pub fn never_matching(config: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let list = |key: &str, from: &Value| from.get(key).and_then(Value::as_array).cloned();
    for (i, policy) in list("policies", config).into_iter().flatten().enumerate() {
        rules(&mut out, &policy, &format!("policies[{i}]"));
    }
    limit_matches(&mut out, config.get("rateLimits"), "rateLimits");
    let Some(tiers) = config.get("tiers") else {
        return out;
    };
    for tier in ["admin", "baseline"] {
        for (i, policy) in list(tier, tiers).into_iter().flatten().enumerate() {
            let path = format!("tiers.{tier}[{i}]");
            if policy.get("subject").is_some_and(|s| !s.is_null()) {
                let name = policy.get("name").and_then(Value::as_str).unwrap_or("");
                out.push(format!(
                    "warning: {path} ({name}): never applies: it has a subject, and {REASON}"
                ));
                continue;
            }
            rules(&mut out, &policy, &path);
            limit_matches(
                &mut out,
                policy.get("rateLimits"),
                &format!("{path}.rateLimits"),
            );
        }
    }
    if let Some(namespaces) = tiers.get("namespaces").and_then(Value::as_object) {
        for namespace in namespaces.keys() {
            out.push(format!(
                "warning: tiers.namespaces.{namespace}: never consulted: {REASON}"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn warns_about_what_needs_an_identity() {
        let config = json!({
            "tiers": {
                "admin": [
                    {"name": "ci", "priority": 1, "subject": {"namespaces": ["ci"]}, "rules": [{"action": "ALLOW"}]},
                    {"name": "mixed", "priority": 2, "rules": [
                        {"action": "DENY", "from": [{"source": {"namespaces": ["dev"]}}, {"source": {"ipBlocks": ["10.0.0.0/8"]}}]},
                        {"action": "ALLOW", "from": [{"source": {"principals": ["a"]}}, {"source": {"namespaces": ["b"]}}]},
                        {"action": "ALLOW", "when": [{"key": "source.namespace", "notValues": ["x"]}]},
                        {"action": "ALLOW", "when": [{"key": "source.ip", "values": ["1.2.3.4"]}, {"key": "source.principal", "values": ["*"]}]}
                    ], "rateLimits": [{"name": "l", "maxTokens": 1, "fillInterval": "1s", "match": {"from": [{"source": {"namespaces": ["x"]}}]}}]}
                ],
                "namespaces": {"team-a": [], "team-b": []}
            }
        });
        assert_eq!(
            never_matching(&config),
            [
                format!("warning: tiers.admin[0] (ci): never applies: it has a subject, and {REASON}"),
                format!("warning: tiers.admin[1].rules[1] (mixed): can never match: it requires from[0].source.principals, and {REASON}"),
                format!("warning: tiers.admin[1].rules[3] (mixed): can never match: it requires when[1] source.principal, and {REASON}"),
                format!("warning: tiers.admin[1].rateLimits[0].match (l): the limit never applies: it requires from[0].source.namespaces, and {REASON}"),
                format!("warning: tiers.namespaces.team-a: never consulted: {REASON}"),
                format!("warning: tiers.namespaces.team-b: never consulted: {REASON}"),
            ]
        );
        let plain = json!({"policies": [{"name": "p", "rules": [{"from": [{"source": {"principals": ["*"]}}]}, {}]}]});
        assert_eq!(never_matching(&plain).len(), 1);
        assert!(never_matching(&json!({"policies": [{"name": "p", "rules": [{}]}]})).is_empty());
    }
}
