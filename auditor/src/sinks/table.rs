//! The table for people: findings grouped by namespace, one line each, severity coloured when
//! the output is a terminal.

use std::fmt::Write as _;

use super::Summary;
use crate::finding::{Finding, Severity};
use crate::rules::group_namespace;

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";

fn colour(sev: Severity) -> &'static str {
    match sev {
        Severity::Critical => "\x1b[1;31m",
        Severity::High => "\x1b[31m",
        Severity::Medium => "\x1b[33m",
        Severity::Low => "\x1b[36m",
        Severity::Info => "\x1b[2m",
    }
}

fn paint(text: &str, code: &str, on: bool) -> String {
    if on {
        format!("{code}{text}{RESET}")
    } else {
        text.to_string()
    }
}

/// Renders the findings; `colour` adds ANSI colours (use it only for terminals).
pub fn render(findings: &[Finding], summary: &Summary, colour_on: bool) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        out.push_str("No findings.\n");
    }
    let object_width = findings
        .iter()
        .map(|f| object(f).chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    let rule_width = findings.iter().map(|f| f.rule.len()).max().unwrap_or(0);
    let mut current: Option<&str> = None;
    for f in findings {
        let group = group_namespace(f);
        if current != Some(group) {
            if current.is_some() {
                out.push('\n');
            }
            let title = if group.is_empty() {
                "cluster".to_string()
            } else {
                format!("namespace {group}")
            };
            out.push_str(&paint(&title, BOLD, colour_on));
            out.push('\n');
            current = Some(group);
        }
        let sev = format!("{:<8}", f.severity.as_str().to_uppercase());
        let _ = writeln!(
            out,
            "  {}  {:<rule_width$}  {:<object_width$}  {}",
            paint(&sev, colour(f.severity), colour_on),
            f.rule,
            object(f),
            f.message,
        );
    }
    out.push('\n');
    let counts: Vec<String> = summary
        .by_severity
        .iter()
        .rev()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    let _ = writeln!(
        out,
        "{} finding{}{}{}",
        summary.findings,
        if summary.findings == 1 { "" } else { "s" },
        if counts.is_empty() {
            String::new()
        } else {
            format!(" ({})", counts.join(", "))
        },
        if summary.failed {
            format!("; failing at --fail-on {}", summary.fail_on)
        } else {
            String::new()
        },
    );
    out
}

/// `Kind/name[/container]`.
fn object(f: &Finding) -> String {
    match &f.container {
        Some(c) => format!("{}/{}[{}]", f.kind, f.name, c),
        None => format!("{}/{}", f.kind, f.name),
    }
}
