//! The replay summary as one self-contained HTML page: inline CSS and SVG, no script, nothing
//! fetched (its Content-Security-Policy forbids it too). Every value from the traffic is
//! escaped: hosts, paths and names in an access log are whatever a client sent.

use std::fmt::Write as _;

use super::render::namespace_label;
use super::{Counts, Summary};
use crate::accesslog::time::format_utc;

/// What the page says about where the numbers come from.
#[derive(Debug, Clone, Default)]
pub struct ReportMeta {
    /// The traffic replayed (a file name).
    pub input: String,
    /// The pluginConfig it was replayed through.
    pub config: String,
}

/// Text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
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

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px 32px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5a6275;margin:0 0 16px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #d9dde6;border-radius:6px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:22px}
.allow{color:#2e7d32}.deny{color:#c62828}.limited{color:#ef6c00}.error{color:#616161}
table{border-collapse:collapse;width:100%;margin-top:4px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e6e8ee;vertical-align:top}
th{background:#f3f5f9;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
";

const COLOURS: [(&str, &str); 4] = [
    ("allowed", "#2e7d32"),
    ("denied", "#c62828"),
    ("rate-limited", "#ef6c00"),
    ("errors", "#616161"),
];

fn parts(c: &Counts) -> [u64; 4] {
    [c.allow, c.deny, c.ratelimited, c.error]
}

fn at_label(summary: &Summary, offset_ms: u64) -> String {
    match summary.input.start_ms {
        Some(start) => format!(
            "{} UTC",
            format_utc(start.saturating_add(i64::try_from(offset_ms).unwrap_or(i64::MAX)))
        ),
        None => format!("+{:.1}s", offset_ms as f64 / 1000.0),
    }
}

/// Stacked bars, one per time bucket.
fn chart(summary: &Summary) -> String {
    let buckets = &summary.timeline.buckets;
    let (width, height, left, bottom) = (960.0f64, 220.0f64, 48.0f64, 28.0f64);
    let plot_h = height - bottom - 8.0;
    let max = buckets.iter().map(|b| b.requests).max().unwrap_or(0).max(1);
    let slot = (width - left) / buckets.len().max(1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg role=\"img\" aria-label=\"Decisions over time\" style=\"width:100%;max-width:1200px;height:auto\" \
         viewBox=\"0 0 {width} {height}\">"
    );
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{y}\" x2=\"{width}\" y2=\"{y}\" stroke=\"#9aa3b5\"/>\
         <text x=\"{x}\" y=\"14\" font-size=\"11\" text-anchor=\"end\" fill=\"#5a6275\">{max}</text>\
         <text x=\"{x}\" y=\"{y}\" font-size=\"11\" text-anchor=\"end\" fill=\"#5a6275\">0</text>",
        y = 8.0 + plot_h,
        x = left - 6.0,
    );
    for (i, bucket) in buckets.iter().enumerate() {
        let x = left + i as f64 * slot;
        let mut y = 8.0 + plot_h;
        for ((name, colour), value) in COLOURS.iter().zip(parts(bucket)) {
            if value == 0 {
                continue;
            }
            let h = plot_h * value as f64 / max as f64;
            y -= h;
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{colour}\">\
                 <title>{at}: {value} {name}</title></rect>",
                w = (slot - 1.0).max(1.0),
                at = escape(&at_label(summary, i as u64 * summary.timeline.bucket_ms)),
            );
        }
    }
    let span = buckets.len() as u64 * summary.timeline.bucket_ms;
    for (fraction, anchor) in [(0.0, "start"), (0.5, "middle"), (1.0, "end")] {
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{y}\" font-size=\"11\" text-anchor=\"{anchor}\" fill=\"#5a6275\">{label}</text>",
            x = left + (width - left) * fraction,
            y = height - 8.0,
            label = escape(&at_label(summary, (span as f64 * fraction) as u64)),
        );
    }
    svg.push_str("</svg>");
    svg
}

fn counts_cells(c: &Counts) -> String {
    format!(
        "<td class=\"n\">{}</td><td class=\"n allow\">{}</td><td class=\"n deny\">{}</td>\
         <td class=\"n limited\">{}</td><td class=\"n error\">{}</td>",
        c.requests, c.allow, c.deny, c.ratelimited, c.error
    )
}

fn decided_by_cell(group: &super::Group) -> String {
    let mut by: Vec<(String, u64)> = group
        .decided_by
        .iter()
        .map(|(d, c)| (d.label(), c.requests))
        .collect();
    by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    by.iter()
        .map(|(label, n)| format!("<code>{}</code> {n}", escape(label)))
        .collect::<Vec<_>>()
        .join("<br>")
}

/// Per source namespace: how much of its traffic would be refused.
fn by_namespace(summary: &Summary) -> String {
    let mut namespaces: Vec<(Option<&str>, Counts, usize)> = Vec::new();
    for (ns, _, group) in summary.rows() {
        match namespaces.last_mut() {
            Some((last, counts, hosts)) if *last == ns => {
                counts.merge(&group.counts);
                *hosts += 1;
            }
            _ => namespaces.push((ns, group.counts, 1)),
        }
    }
    let mut out = String::from(
        "\n<h2>By source namespace</h2>\n<table><tr><th>Namespace</th><th>Destinations</th>\
         <th>Requests</th><th>Allow</th><th>Deny</th><th>Rate-limited</th><th>Error</th>\
         <th>Refused</th></tr>\n",
    );
    for (ns, counts, hosts) in namespaces {
        let refused = counts.deny + counts.ratelimited + counts.error;
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{hosts}</td>{}<td class=\"n\">{:.1}%</td></tr>",
            escape(namespace_label(ns)),
            counts_cells(&counts),
            100.0 * refused as f64 / counts.requests.max(1) as f64
        );
    }
    out.push_str("</table>\n");
    out
}

/// What the dry-run policies would have done.
fn dry_run(summary: &Summary) -> String {
    let mut rows: Vec<(Option<&str>, &str, &super::DryRunVerdict, u64)> = Vec::new();
    for (ns, host, group) in summary.rows() {
        for (verdict, n) in &group.dry_run {
            rows.push((ns, host, verdict, *n));
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<h2>Dry-run policies</h2>\n<p>Evaluated and logged, not enforced: what they would do.</p>\n\
         <table><tr><th>Namespace</th><th>Destination</th><th>Policy[rule]</th><th>Would be</th>\
         <th>Requests</th></tr>\n",
    );
    for (ns, host, verdict, n) in rows {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td><code>{}{}</code></td><td>{}</td><td class=\"n\">{n}</td></tr>",
            escape(namespace_label(ns)),
            escape(host),
            escape(&verdict.policy),
            verdict.rule.as_ref().map(|r| format!("[{}]", escape(r))).unwrap_or_default(),
            escape(&verdict.would_be),
        );
    }
    out.push_str("</table>\n");
    out
}

/// The page.
pub fn report(summary: &Summary, meta: &ReportMeta) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
    );
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    out.push_str("<title>egress-guard replay report</title><style>");
    out.push_str(STYLE);
    out.push_str("</style></head><body>\n<h1>Egress replay report</h1>\n");
    let span = match summary.input.start_ms {
        Some(start) => {
            let end = summary.timeline.buckets.len() as u64 * summary.timeline.bucket_ms;
            format!(
                "; traffic from {} to {}",
                format_utc(start),
                at_label(summary, end)
            )
        }
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "<p class=\"meta\">Traffic <code>{}</code> replayed through the real filter with \
         <code>{}</code>: {} lines read, {} could not be used{}.</p>",
        escape(&meta.input),
        escape(&meta.config),
        summary.input.lines,
        summary.input.unusable,
        escape(&span)
    );
    let t = &summary.totals;
    out.push_str("<div class=\"cards\">");
    for (label, value, class) in [
        ("requests", t.requests, ""),
        ("would be allowed", t.allow, "allow"),
        ("would be denied", t.deny, "deny"),
        ("rate-limited", t.ratelimited, "limited"),
        ("errors", t.error, "error"),
    ] {
        let _ = write!(
            out,
            "<div class=\"card\"><b class=\"{class}\">{value}</b>{label}</div>"
        );
    }
    out.push_str("</div>\n<h2>Decisions over time</h2>\n<div class=\"legend\">");
    for (name, colour) in COLOURS {
        let _ = write!(
            out,
            "<span><i style=\"background:{colour}\"></i>{name}</span>"
        );
    }
    out.push_str("</div>\n");
    out.push_str(&chart(summary));

    out.push_str(&by_namespace(summary));

    let mut denied: Vec<_> = summary
        .rows()
        .into_iter()
        .filter(|(_, _, g)| g.counts.deny + g.counts.ratelimited + g.counts.error > 0)
        .collect();
    denied.sort_by_key(|(_, _, g)| {
        std::cmp::Reverse(g.counts.deny + g.counts.ratelimited + g.counts.error)
    });
    out.push_str("\n<h2>What would break: denied destinations</h2>\n");
    if denied.is_empty() {
        out.push_str("<p>Nothing would be denied.</p>\n");
    } else {
        out.push_str(
            "<table><tr><th>Namespace</th><th>Destination</th><th>Requests</th><th>Allow</th>\
             <th>Deny</th><th>Rate-limited</th><th>Error</th><th>Decided by</th></tr>\n",
        );
        for (ns, host, group) in denied.iter().take(25) {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td>{}<td>{}</td></tr>",
                escape(namespace_label(*ns)),
                escape(host),
                counts_cells(&group.counts),
                decided_by_cell(group)
            );
        }
        out.push_str("</table>\n");
    }

    out.push_str(
        "<h2>By namespace and destination</h2>\n<table><tr><th>Namespace</th><th>Destination</th>\
                  <th>Requests</th><th>Allow</th><th>Deny</th><th>Rate-limited</th><th>Error</th>\
                  <th>Decided by (policy[rule] requests)</th></tr>\n",
    );
    for (ns, host, group) in summary.rows() {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td>{}<td>{}</td></tr>",
            escape(namespace_label(ns)),
            escape(host),
            counts_cells(&group.counts),
            decided_by_cell(group)
        );
    }
    if let Some(group) = &summary.overflow {
        let _ = writeln!(
            out,
            "<tr><td colspan=\"2\">beyond {} namespace and host pairs</td>{}<td></td></tr>",
            summary.max_groups,
            counts_cells(&group.counts)
        );
    }
    out.push_str("</table>\n");
    out.push_str(&dry_run(summary));
    if summary.input.unusable > 0 {
        let _ = writeln!(
            out,
            "<h2>Lines that could not be used</h2>\n<p>{} lines; the first {}:</p><ul>",
            summary.input.unusable,
            summary.input.unusable_examples.len()
        );
        for u in &summary.input.unusable_examples {
            let _ = writeln!(out, "<li>line {}: {}</li>", u.line, escape(&u.reason));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_text() {
        assert_eq!(
            escape("<script>alert('x')</script>&\"\u{1b}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\u{fffd}"
        );
    }
}
