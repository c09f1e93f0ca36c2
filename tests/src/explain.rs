//! `egress-sim explain`: the account of one request, told from what the filter itself logged.
//!
//! At debug log level the egress filter logs one `{"event":"explain",...}` line per tier, policy
//! and rule it looked at, then its decision line (see docs/config.md, "Explain"). This module
//! only reads those lines: the host knows the filter through the ABI, nothing else. Attribute
//! values named by a miss come from the decision line's `attributes`.

use serde_json::{Map, Value};

use crate::replay::LogLine;

type Object = Map<String, Value>;

const TIERS: [&str; 4] = ["admin", "namespace", "baseline", "default"];

fn parse(message: &str) -> Option<Object> {
    match serde_json::from_str::<Value>(message).ok()? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

fn text<'a>(object: &'a Object, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

/// A rule as the decision line and the steps name it: its name, else `#<index>`.
fn rule_label(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(name)) => name.clone(),
        Some(Value::Number(index)) => format!("#{index}"),
        _ => "-".to_string(),
    }
}

/// The request's value of an attribute named in a miss (`request.headers[x-team]`, ...).
fn attribute_value(attributes: &Object, name: &str) -> Option<String> {
    let value = match name
        .strip_prefix("request.headers[")
        .and_then(|rest| rest.strip_suffix(']'))
    {
        Some(header) => attributes.get("request.headers")?.get(header)?,
        None => attributes.get(name)?,
    };
    Some(match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    })
}

/// `to[0].hosts (request.host)` becomes `to[0].hosts: request.host is "x.example"`.
fn explain_miss(why: &str, attributes: &Object) -> String {
    why.split("; ")
        .map(|part| {
            let Some((field, attribute)) = part
                .strip_suffix(')')
                .and_then(|rest| rest.rsplit_once(" ("))
            else {
                return part.to_string();
            };
            match attribute_value(attributes, attribute) {
                Some(value) => format!("{field}: {attribute} is {value}"),
                None => format!("{field}: {attribute} is unknown"),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn tier_heading(tier: Option<&str>, attributes: &Object) -> String {
    match tier {
        None => "policies (Istio semantics: a matching DENY denies; then, if ALLOW policies exist, one must match)".to_string(),
        Some("namespace") => match text(attributes, "source.namespace") {
            Some(ns) => format!("namespace tier (namespace {ns:?})"),
            None => "namespace tier".to_string(),
        },
        Some(tier) => format!("{tier} tier"),
    }
}

fn tier_outcome(step: &Object) -> String {
    let detail = text(step, "detail").unwrap_or("");
    match text(step, "outcome").unwrap_or("") {
        "pass" => format!("→ PASS taken in policy {detail}: on to the namespace tier"),
        "no_decision" if text(step, "tier") == Some("namespace") => {
            "→ no decision (no enforced ALLOW policies, no DENY matched): on to the baseline tier"
                .to_string()
        }
        "no_decision" => "→ no decision".to_string(),
        "no_namespace" => {
            "skipped: the request has no principal namespace (plaintext, or a principal without /ns/)"
                .to_string()
        }
        "no_policies" => format!("skipped: namespace {detail:?} has no policies"),
        outcome if detail.is_empty() => format!("→ {outcome}"),
        outcome if text(step, "tier") == Some("namespace") => {
            format!("→ {outcome} (namespace {detail})")
        }
        outcome => format!("→ {outcome} by policy {detail}"),
    }
}

fn policy_line(step: &Object) -> String {
    let mut line = format!("  policy {}", text(step, "policy").unwrap_or("-"));
    if let Some(priority) = step.get("priority").and_then(Value::as_u64) {
        line.push_str(&format!(" (priority {priority})"));
    }
    if step.get("dryRun").and_then(Value::as_bool) == Some(true) {
        line.push_str(" [dry run]");
    }
    match text(step, "skipped") {
        Some("subject") => {
            line.push_str(": skipped, its subject does not hold the source's namespace")
        }
        Some("no_rules") => line.push_str(": no rules, never matches"),
        Some(other) => line.push_str(&format!(": skipped ({other})")),
        None => {}
    }
    line
}

fn rule_line(step: &Object, attributes: &Object) -> String {
    let label = match text(step, "name") {
        Some(name) => name.to_string(),
        None => format!(
            "#{}",
            step.get("index").and_then(Value::as_u64).unwrap_or(0)
        ),
    };
    let action = text(step, "action").unwrap_or("-");
    if step.get("matched").and_then(Value::as_bool) == Some(true) {
        format!("    rule {label} ({action}): matches")
    } else {
        let why = text(step, "why").unwrap_or("");
        format!(
            "    rule {label} ({action}): no match: {}",
            explain_miss(why, attributes)
        )
    }
}

fn request_line(decision: &Object, attributes: &Object) -> String {
    let kind = text(decision, "kind").unwrap_or("-");
    let source = match (
        text(attributes, "source.principal"),
        text(attributes, "source.namespace"),
    ) {
        (Some(p), Some(ns)) => format!("{p} (namespace {ns})"),
        (Some(p), None) => format!("{p} (no namespace)"),
        (None, _) => "no principal (plaintext)".to_string(),
    };
    let target = if kind == "http" {
        format!(
            "{} {}{}",
            text(attributes, "request.method").unwrap_or("-"),
            text(attributes, "request.host").unwrap_or("-"),
            text(attributes, "request.path").unwrap_or(""),
        )
    } else {
        format!(
            "sni {} port {}",
            text(attributes, "connection.sni").unwrap_or("-"),
            attributes
                .get("destination.port")
                .map_or("-".to_string(), Value::to_string)
        )
    };
    format!("request: {kind} {target}, from {source}")
}

fn decision_summary(decision: &Object) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = format!("decision: {}", text(decision, "decision").unwrap_or("-"));
    let mut facts = Vec::new();
    if let Some(tier) = text(decision, "tier") {
        facts.push(format!("tier {tier}"));
    }
    if let Some(policy) = text(decision, "policy") {
        facts.push(format!("policy {policy}"));
        facts.push(format!("rule {}", rule_label(decision.get("rule"))));
    }
    facts.push(format!(
        "reason {}",
        text(decision, "reason").unwrap_or("-")
    ));
    line.push_str(&format!(" ({})", facts.join(", ")));
    out.push(line);
    if let Some(detail) = text(decision, "detail") {
        out.push(format!("  detail: {detail}"));
    }
    if let Some(Value::Object(passed)) = decision.get("passed") {
        out.push(format!(
            "  passed over: admin policy {} rule {}",
            text(passed, "policy").unwrap_or("-"),
            rule_label(passed.get("rule"))
        ));
    }
    if let Some(Value::Array(audit)) = decision.get("audit") {
        if !audit.is_empty() {
            let names: Vec<&str> = audit.iter().filter_map(Value::as_str).collect();
            out.push(format!("  audited by: {}", names.join(", ")));
        }
    }
    for hit in decision
        .get("dryRun")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let tier = text(hit, "tier").map_or(String::new(), |t| format!("{t} "));
        out.push(format!(
            "  dry run: {tier}policy {} rule {} would {}",
            text(hit, "policy").unwrap_or("-"),
            rule_label(hit.get("rule")),
            text(hit, "wouldBe").unwrap_or("-")
        ));
    }
    if let Some(Value::Object(limit)) = decision.get("rateLimit") {
        out.push(format!(
            "  rate limit {}: {} ({} of {} left)",
            text(limit, "name").unwrap_or("-"),
            text(limit, "result").unwrap_or("-"),
            limit.get("remaining").map_or("-".into(), Value::to_string),
            limit.get("limit").map_or("-".into(), Value::to_string),
        ));
    }
    out
}

/// The account of one stream from its log lines; `None` when the module wrote no decision line
/// (not the egress filter, or it failed before deciding).
pub fn render(logs: &[LogLine]) -> Option<String> {
    let objects: Vec<Object> = logs.iter().filter_map(|l| parse(&l.message)).collect();
    let decision = objects
        .iter()
        .rev()
        .find(|o| text(o, "event") == Some("decision"))?;
    let empty = Object::new();
    let attributes = match decision.get("attributes") {
        Some(Value::Object(a)) => a,
        _ => &empty,
    };
    let steps: Vec<&Object> = objects
        .iter()
        .filter(|o| text(o, "event") == Some("explain"))
        .collect();

    let mut out = vec![request_line(decision, attributes)];
    if steps.is_empty() {
        out.push(
            "(the filter logged no steps: it only does at debug log level, and only for a \
             request it could evaluate)"
                .to_string(),
        );
    }
    let tiered = decision.contains_key("tier");
    let mut current: Option<Option<&str>> = None;
    let mut seen: Vec<&str> = Vec::new();
    for step in &steps {
        let tier = text(step, "tier");
        if current != Some(tier) {
            current = Some(tier);
            if let Some(t) = tier {
                seen.push(t);
            }
            let heading = tier_heading(tier, attributes);
            match text(step, "step") {
                // A tier with nothing to look at ends on the same line.
                Some("tier") => {
                    out.push(format!("{heading}: {}", tier_outcome(step)));
                    continue;
                }
                _ => out.push(heading),
            }
        }
        match text(step, "step") {
            Some("policy") => out.push(policy_line(step)),
            Some("rule") => out.push(rule_line(step, attributes)),
            Some("tier") => out.push(format!("  {}", tier_outcome(step))),
            _ => {}
        }
    }
    if tiered && !steps.is_empty() {
        for tier in TIERS.iter().filter(|t| !seen.contains(t)) {
            out.push(format!("{tier} tier: not reached"));
        }
    }
    out.extend(decision_summary(decision));
    let line = logs
        .iter()
        .rev()
        .find(|l| parse(&l.message).is_some_and(|o| text(&o, "event") == Some("decision")))
        .map_or("", |l| l.message.as_str());
    out.push(format!("decision line: {line}"));
    let mut text = out.join("\n");
    text.push('\n');
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(lines: &[&str]) -> Vec<LogLine> {
        lines
            .iter()
            .map(|m| LogLine {
                level: "debug".into(),
                message: m.to_string(),
            })
            .collect()
    }

    #[test]
    fn tells_each_tier_and_the_values_that_missed() {
        let text = render(&logs(&[
            r#"{"event":"explain","step":"policy","tier":"admin","policy":"ci","priority":20,"dryRun":false,"skipped":"subject"}"#,
            r#"{"event":"explain","step":"policy","tier":"admin","policy":"pass","priority":30,"dryRun":false,"skipped":null}"#,
            r#"{"event":"explain","step":"rule","tier":"admin","policy":"pass","index":0,"name":"teams","action":"PASS","matched":true}"#,
            r#"{"event":"explain","step":"tier","tier":"admin","outcome":"pass","detail":"pass"}"#,
            r#"{"event":"explain","step":"policy","tier":"namespace","policy":"api","dryRun":false,"skipped":null}"#,
            r#"{"event":"explain","step":"rule","tier":"namespace","policy":"api","index":0,"name":null,"action":"ALLOW","matched":false,"why":"to[0].hosts (request.host); to[1].notMethods (request.method)"}"#,
            r#"{"event":"explain","step":"rule","tier":"namespace","policy":"api","index":1,"name":null,"action":"ALLOW","matched":false,"why":"when values (request.headers[x-team])"}"#,
            r#"{"event":"explain","step":"tier","tier":"namespace","outcome":"deny","detail":"team-a"}"#,
            r#"{"event":"decision","kind":"http","decision":"deny","tier":"namespace","policy":null,"rule":null,"action":null,"passed":{"policy":"pass","rule":"teams"},"reason":"no_allow_policy_matched","audit":[],"dryRun":[{"tier":"admin","policy":"try","rule":"r","wouldBe":"deny"}],"attributes":{"source.principal":"cluster.local/ns/team-a/sa/x","source.namespace":"team-a","request.host":"x.example","request.method":"GET","request.path":"/"}}"#,
        ]))
        .unwrap();
        for expected in [
            "request: http GET x.example/, from cluster.local/ns/team-a/sa/x (namespace team-a)",
            "admin tier\n  policy ci (priority 20): skipped, its subject does not hold the source's namespace",
            "    rule teams (PASS): matches\n  → PASS taken in policy pass: on to the namespace tier",
            "namespace tier (namespace \"team-a\")",
            "    rule #0 (ALLOW): no match: to[0].hosts: request.host is \"x.example\"; to[1].notMethods: request.method is \"GET\"",
            "    rule #1 (ALLOW): no match: when values: request.headers[x-team] is unknown",
            "  → deny (namespace team-a)",
            "baseline tier: not reached\ndefault tier: not reached",
            "decision: deny (tier namespace, reason no_allow_policy_matched)",
            "  passed over: admin policy pass rule teams",
            "  dry run: admin policy try rule r would deny",
            "decision line: {\"event\":\"decision\"",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn no_decision_line_is_none() {
        assert_eq!(render(&logs(&["configured"])), None);
    }
}
