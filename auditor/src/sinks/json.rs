//! The JSON report: `{"findings":[...],"summary":{...}}`, findings in the shape of [`Finding`].

use serde::Serialize;

use super::Summary;
use crate::finding::Finding;

#[derive(Serialize)]
struct Report<'a> {
    findings: &'a [Finding],
    summary: &'a Summary,
}

/// Writes the report as [`render`] renders it, without holding the whole text in memory (a scan
/// of 100,000 pods prints about 20 MB).
pub fn write(
    out: &mut impl std::io::Write,
    findings: &[Finding],
    summary: &Summary,
) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &Report { findings, summary })?;
    out.write_all(b"\n")
}

/// Renders the report as pretty-printed JSON followed by a newline.
pub fn render(findings: &[Finding], summary: &Summary) -> String {
    let mut out = serde_json::to_string_pretty(&Report { findings, summary })
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise report: {e}\"}}"));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_gives_the_rendered_text() {
        let findings = vec![Finding {
            rule: "host-network".into(),
            severity: crate::finding::Severity::High,
            kind: "Pod".into(),
            namespace: Some("a".into()),
            name: "p".into(),
            container: None,
            message: "m \"quoted\"".into(),
            evidence: serde_json::json!({"k": [1, 2]}),
        }];
        let summary = Summary::new(&findings, crate::finding::Severity::Low, None);
        let mut written = Vec::new();
        write(&mut written, &findings, &summary).expect("write");
        assert_eq!(
            String::from_utf8(written).ok(),
            Some(render(&findings, &summary))
        );
    }
}
