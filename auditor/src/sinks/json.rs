//! The JSON report: `{"findings":[...],"summary":{...}}`, findings in the shape of [`Finding`].

use serde::Serialize;

use super::Summary;
use crate::finding::Finding;

#[derive(Serialize)]
struct Report<'a> {
    findings: &'a [Finding],
    summary: &'a Summary,
}

/// Renders the report as pretty-printed JSON followed by a newline.
pub fn render(findings: &[Finding], summary: &Summary) -> String {
    let mut out = serde_json::to_string_pretty(&Report { findings, summary })
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise report: {e}\"}}"));
    out.push('\n');
    out
}
