//! The replay summary as a table for people, JSON and CSV for tools.
//!
//! Hosts and namespaces come from the traffic: the table shows control characters escaped (no
//! terminal escape sequences get through), CSV quotes what needs it and defuses cells a
//! spreadsheet would run as a formula.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{Counts, Group, Summary};

/// A value safe to print on a terminal: control characters escaped.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The namespace as shown to people.
pub fn namespace_label(namespace: Option<&str>) -> &str {
    namespace.unwrap_or("(no identity)")
}

fn decided_by_text(group: &Group) -> String {
    let mut by: Vec<(String, u64)> = group
        .decided_by
        .iter()
        .map(|(d, c)| (d.label(), c.requests))
        .collect();
    by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    by.iter()
        .map(|(label, n)| format!("{} {n}", printable(label)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn totals_line(totals: &Counts) -> String {
    format!(
        "{} requests: {} would be allowed, {} denied, {} rate-limited, {} errors",
        totals.requests, totals.allow, totals.deny, totals.ratelimited, totals.error
    )
}

/// The per namespace and host table.
pub fn table(summary: &Summary) -> String {
    let mut rows: Vec<[String; 8]> = vec![[
        "NAMESPACE".into(),
        "DESTINATION".into(),
        "REQUESTS".into(),
        "ALLOW".into(),
        "DENY".into(),
        "LIMITED".into(),
        "ERROR".into(),
        "DECIDED BY (POLICY[RULE] REQUESTS)".into(),
    ]];
    let overflow = summary
        .overflow
        .as_ref()
        .map(|g| (Some("(other)"), "(other hosts)", g));
    for (ns, host, group) in summary.rows().into_iter().chain(overflow) {
        let c = &group.counts;
        rows.push([
            printable(namespace_label(ns)),
            printable(host),
            c.requests.to_string(),
            c.allow.to_string(),
            c.deny.to_string(),
            c.ratelimited.to_string(),
            c.error.to_string(),
            decided_by_text(group),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (c, width) in widths.iter().enumerate() {
            if (2..7).contains(&c) {
                let _ = write!(out, "{:>width$}  ", row[c], width = width);
            } else {
                let _ = write!(out, "{:<width$}  ", row[c], width = width);
            }
        }
        out.push_str(&row[7]);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&totals_line(&summary.totals));
    out.push('\n');
    if summary.overflow.is_some() {
        let _ = writeln!(
            out,
            "more than {} namespace and host pairs: the rest are counted in (other)",
            summary.max_groups
        );
    }
    if summary.input.unusable > 0 {
        let _ = writeln!(
            out,
            "{} of {} lines could not be used (the first {} are named on stderr)",
            summary.input.unusable,
            summary.input.lines,
            summary.input.unusable_examples.len()
        );
    }
    out
}

fn counts_json(c: &Counts) -> Value {
    json!({
        "requests": c.requests, "allow": c.allow, "deny": c.deny,
        "ratelimited": c.ratelimited, "error": c.error,
    })
}

fn group_json(namespace: Option<&str>, host: &str, group: &Group) -> Value {
    let mut row = counts_json(&group.counts);
    row["namespace"] = json!(namespace);
    row["host"] = json!(host);
    row["decidedBy"] = group
        .decided_by
        .iter()
        .map(|(d, c)| {
            let mut v = counts_json(c);
            if let Some(tier) = &d.tier {
                v["tier"] = json!(tier);
            }
            v["policy"] = json!(d.policy);
            v["rule"] = json!(d.rule);
            v["reason"] = json!(d.reason);
            v
        })
        .collect();
    row["dryRun"] = group
        .dry_run
        .iter()
        .map(|(d, n)| json!({"policy": d.policy, "rule": d.rule, "wouldBe": d.would_be, "requests": n}))
        .collect();
    row
}

/// The whole summary as one JSON document.
pub fn json(summary: &Summary) -> Value {
    let groups: Vec<Value> = summary
        .rows()
        .into_iter()
        .map(|(ns, host, g)| group_json(ns, host, g))
        .collect();
    json!({
        "input": summary.input,
        "totals": counts_json(&summary.totals),
        "groups": groups,
        "overflow": summary.overflow.as_ref().map(|g| counts_json(&g.counts)),
        "maxGroups": summary.max_groups,
        "timeline": summary.timeline,
    })
}

fn csv_cell(text: &str) -> String {
    // A spreadsheet runs a cell that starts like a formula.
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// One row per namespace, host and decider; summing a (namespace, host)'s rows gives its
/// totals.
pub fn csv(summary: &Summary) -> String {
    let mut out = String::from(
        "namespace,host,tier,policy,rule,reason,requests,allow,deny,ratelimited,error\n",
    );
    for (ns, host, group) in summary.rows() {
        for (d, c) in &group.decided_by {
            let cells = [
                ns.unwrap_or(""),
                host,
                d.tier.as_deref().unwrap_or(""),
                d.policy.as_deref().unwrap_or(""),
                d.rule.as_deref().unwrap_or(""),
                d.reason.as_deref().unwrap_or(""),
            ];
            let mut line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
            line.extend(
                [c.requests, c.allow, c.deny, c.ratelimited, c.error]
                    .iter()
                    .map(u64::to_string),
            );
            out.push_str(&line.join(","));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_and_spreadsheet_injection_are_defused() {
        assert_eq!(printable("evil\x1b[2Jhost"), "evil\\u{1b}[2Jhost");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("api.github.com"), "api.github.com");
    }
}
