//! SARIF 2.1.0, so CI systems show findings inline on the manifest that holds the object.

use serde_json::{json, Value};

use super::{SourceLocation, Summary};
use crate::finding::{Finding, Severity};
use crate::rules::RULES;

const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

fn level(sev: Severity) -> &'static str {
    match sev {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// The numeric score GitHub code scanning reads to rank security results.
fn security_severity(sev: Severity) -> &'static str {
    match sev {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "1.0",
    }
}

/// Renders a SARIF log with one run. `locate` maps a finding to the file it came from; findings
/// without a file get only a logical location (the Kubernetes object).
pub fn render(
    findings: &[Finding],
    summary: &Summary,
    locate: &dyn Fn(&Finding) -> Option<SourceLocation>,
) -> String {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.id,
                "shortDescription": {"text": r.title},
                "fullDescription": {"text": format!("{}. {}", r.title, r.fix)},
                "help": {"text": r.fix, "markdown": format!("{}\n\nSee docs/rules.md#{}", r.fix, r.id)},
                "defaultConfiguration": {"level": level(r.severity)},
                "properties": {
                    "security-severity": security_severity(r.severity),
                    "tags": ["security", "istio", "egress"],
                },
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let rule_index = RULES.iter().position(|r| r.id == f.rule);
            let logical = json!({
                "fullyQualifiedName": logical_name(f),
                "kind": "resource",
            });
            let mut location = json!({"logicalLocations": [logical]});
            if let Some(src) = locate(f) {
                location["physicalLocation"] = json!({
                    "artifactLocation": {"uri": src.uri},
                    "region": {"startLine": src.line.max(1)},
                });
            }
            let mut result = json!({
                "ruleId": f.rule,
                "level": level(f.severity),
                "message": {"text": format!("{}: {}", logical_name(f), f.message)},
                "locations": [location],
                "partialFingerprints": {"egressAuditorFinding/v1": f.identity()},
                "properties": {
                    "severity": f.severity,
                    "security-severity": security_severity(f.severity),
                    "kind": f.kind,
                    "namespace": f.namespace,
                    "name": f.name,
                    "container": f.container,
                    "evidence": f.evidence,
                },
            });
            if let Some(i) = rule_index {
                result["ruleIndex"] = json!(i);
            }
            result
        })
        .collect();
    let log = json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "egress-auditor",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://istio.io/latest/docs/ops/best-practices/security/",
                "rules": rules,
            }},
            "results": results,
            "properties": {"summary": summary},
        }],
    });
    let mut out = serde_json::to_string_pretty(&log).unwrap_or_default();
    out.push('\n');
    out
}

/// `namespace/Kind/name[/container]`.
fn logical_name(f: &Finding) -> String {
    let mut s = String::new();
    if let Some(ns) = &f.namespace {
        s.push_str(ns);
        s.push('/');
    }
    s.push_str(&f.kind);
    s.push('/');
    s.push_str(&f.name);
    if let Some(c) = &f.container {
        s.push('/');
        s.push_str(c);
    }
    s
}
