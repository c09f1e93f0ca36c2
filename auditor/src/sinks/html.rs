//! The report as one self-contained HTML page a person opens in a browser: risk per namespace,
//! then every finding, worst first, with its evidence and how to fix it.
//!
//! Inline CSS only: no script, nothing fetched (the page's Content-Security-Policy forbids it
//! too). Object names, annotations and evidence come from the cluster, so everything is
//! escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Summary;
use crate::finding::{Finding, Severity};
use crate::rules::{group_namespace, rule};

/// Text for element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// How much a finding of this severity weighs in a namespace's risk score.
fn weight(severity: Severity) -> u64 {
    match severity {
        Severity::Critical => 10,
        Severity::High => 5,
        Severity::Medium => 2,
        Severity::Low => 1,
        Severity::Info => 0,
    }
}

fn colour(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "#8e0000",
        Severity::High => "#c62828",
        Severity::Medium => "#ef6c00",
        Severity::Low => "#1565c0",
        Severity::Info => "#616161",
    }
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px 32px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5a6275;margin:0 0 16px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #d9dde6;border-radius:6px;padding:10px 16px;min-width:110px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e6e8ee;vertical-align:top}
th{background:#f3f5f9;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.sev{display:inline-block;color:#fff;border-radius:3px;padding:0 6px;font-size:12px;font-weight:600;text-transform:uppercase}
.finding{border:1px solid #d9dde6;border-left-width:6px;border-radius:6px;padding:10px 14px;margin:10px 0}
.finding h3{font-size:15px;margin:0 0 4px}
.object{color:#5a6275}
.fix{background:#f1f8e9;border-radius:4px;padding:6px 10px;margin-top:6px}
pre{background:#f6f7f9;border-radius:4px;padding:8px 10px;overflow-x:auto;font:12px ui-monospace,Menlo,Consolas,monospace;margin:6px 0 0;white-space:pre-wrap;word-break:break-all}
code{font:12px ui-monospace,Menlo,Consolas,monospace}
";

fn badge(severity: Severity) -> String {
    format!(
        "<span class=\"sev\" style=\"background:{}\">{}</span>",
        colour(severity),
        severity.as_str()
    )
}

/// One namespace's findings.
#[derive(Default)]
struct Risk {
    score: u64,
    by_severity: BTreeMap<Severity, usize>,
    objects: std::collections::BTreeSet<String>,
}

fn object(f: &Finding) -> String {
    match &f.container {
        Some(c) => format!("{}/{} [{}]", f.kind, f.name, c),
        None => format!("{}/{}", f.kind, f.name),
    }
}

/// Renders the page.
pub fn render(findings: &[Finding], summary: &Summary) -> String {
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    // Worst first; within a severity the order the checks gave (by namespace and object).
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));

    let mut risks: BTreeMap<&str, Risk> = BTreeMap::new();
    for f in findings {
        let risk = risks.entry(group_namespace(f)).or_default();
        risk.score += weight(f.severity);
        *risk.by_severity.entry(f.severity).or_default() += 1;
        risk.objects.insert(object(f));
    }
    let mut risks: Vec<(&str, Risk)> = risks.into_iter().collect();
    risks.sort_by(|a, b| b.1.score.cmp(&a.1.score).then_with(|| a.0.cmp(b.0)));

    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
    );
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    out.push_str("<title>egress-auditor report</title><style>");
    out.push_str(STYLE);
    out.push_str("</style></head><body>\n<h1>Egress bypass audit</h1>\n");
    let verdict = if summary.failed {
        format!(
            "findings at or above --fail-on {}: the run fails",
            summary.fail_on
        )
    } else {
        format!("nothing at or above --fail-on {}", summary.fail_on)
    };
    let _ = writeln!(
        out,
        "<p class=\"meta\">{} finding{} in {} namespace{}; {}.</p>",
        summary.findings,
        if summary.findings == 1 { "" } else { "s" },
        risks.len(),
        if risks.len() == 1 { "" } else { "s" },
        escape(&verdict)
    );
    out.push_str("<div class=\"cards\">");
    for severity in Severity::ALL.iter().rev() {
        let n = summary.by_severity.get(severity).copied().unwrap_or(0);
        let _ = write!(
            out,
            "<div class=\"card\"><b style=\"color:{}\">{n}</b>{}</div>",
            colour(*severity),
            severity.as_str()
        );
    }
    out.push_str("</div>\n");

    out.push_str("<h2>Risk by namespace</h2>\n");
    if risks.is_empty() {
        out.push_str("<p>No findings: no way around the sidecar was found.</p>\n");
    } else {
        out.push_str(
            "<table><tr><th>Namespace</th><th>Risk score</th><th>Worst</th><th>Critical</th>\
             <th>High</th><th>Medium</th><th>Low</th><th>Info</th><th>Objects</th></tr>\n",
        );
        for (namespace, risk) in &risks {
            let worst = risk
                .by_severity
                .keys()
                .next_back()
                .map(|s| badge(*s))
                .unwrap_or_default();
            let count = |s: Severity| risk.by_severity.get(&s).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"n\">{}</td><td>{worst}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                if namespace.is_empty() {
                    "(cluster)".to_string()
                } else {
                    escape(namespace)
                },
                risk.score,
                count(Severity::Critical),
                count(Severity::High),
                count(Severity::Medium),
                count(Severity::Low),
                count(Severity::Info),
                risk.objects.len()
            );
        }
        out.push_str("</table>\n<p class=\"meta\">Risk score: critical 10, high 5, medium 2, low 1 per finding.</p>\n");
    }

    out.push_str("<h2>Findings, worst first</h2>\n");
    for f in sorted {
        let info = rule(&f.rule);
        let namespace = group_namespace(f);
        let _ = writeln!(
            out,
            "<div class=\"finding\" style=\"border-left-color:{}\"><h3>{} {}</h3>\
             <div class=\"object\"><code>{}</code>{} &middot; rule <code>{}</code></div>\
             <p>{}</p><pre>{}</pre>{}</div>",
            colour(f.severity),
            badge(f.severity),
            escape(info.map_or(f.rule.as_str(), |r| r.title)),
            escape(&object(f)),
            if namespace.is_empty() {
                String::new()
            } else {
                format!(" in namespace <code>{}</code>", escape(namespace))
            },
            escape(&f.rule),
            escape(&f.message),
            escape(&serde_json::to_string_pretty(&f.evidence).unwrap_or_default()),
            info.map(|r| format!("<div class=\"fix\"><b>Fix:</b> {}</div>", escape(r.fix)))
                .unwrap_or_default()
        );
    }
    if let Some(input) = &summary.input {
        let _ = writeln!(
            out,
            "<h2>What was read</h2>\n<pre>{}</pre>",
            escape(&serde_json::to_string_pretty(input).unwrap_or_default())
        );
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &str, severity: Severity, ns: &str, name: &str) -> Finding {
        Finding {
            rule: rule.into(),
            severity,
            kind: "Pod".into(),
            namespace: Some(ns.into()),
            name: name.into(),
            container: None,
            message: format!("{name} message"),
            evidence: serde_json::json!({"annotation": "<b>x</b>"}),
        }
    }

    #[test]
    fn worst_first_with_fix_and_escaped_names() {
        let findings = vec![
            finding("sidecar-opt-out", Severity::Medium, "a", "quiet"),
            finding(
                "privileged",
                Severity::Critical,
                "b",
                "<script>alert(1)</script>",
            ),
        ];
        let summary = Summary::new(&findings, Severity::Low, None);
        let html = render(&findings, &summary);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>x</b>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        let critical = html.find("Container is privileged").unwrap();
        let medium = html.find("opts out of the sidecar").unwrap();
        assert!(critical < medium, "critical first");
        assert!(html.contains("Set privileged: false"), "the fix is shown");
        // Namespace b (one critical: 10) ranks above a (one medium: 2).
        let b = html.find("<tr><td>b</td><td class=\"n\">10</td>").unwrap();
        let a = html.find("<tr><td>a</td><td class=\"n\">2</td>").unwrap();
        assert!(b < a);
    }
}
