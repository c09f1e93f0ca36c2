//! Renderers of findings. Each sink only renders: it gets `&[Finding]` (already sorted by
//! [`crate::checks::check_all`]) and a [`Summary`], and never judges anything.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::finding::{Finding, Severity};

pub mod json;
pub mod sarif;
pub mod table;

// Sinks that deliver to other systems (cluster objects, alerting, a metrics file), the pieces
// they share, and the dispatcher (`delivery`), the only module that knows every sink.
pub mod alertmanager;
pub mod delivery;
pub mod events;
mod http;
mod kube_objects;
pub mod policyreport;
pub mod settings;
pub mod webhook;

/// Counts that accompany the findings in every report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Number of findings.
    pub findings: usize,
    /// Findings per severity (every severity present, zeros included).
    pub by_severity: BTreeMap<Severity, usize>,
    /// Findings per rule id.
    pub by_rule: BTreeMap<String, usize>,
    /// The lowest severity that makes the run fail.
    pub fail_on: Severity,
    /// Whether any finding is at or above `fail_on`.
    pub failed: bool,
    /// What the source read (files, documents, skipped kinds ...), source-specific.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
}

impl Summary {
    pub fn new(
        findings: &[Finding],
        fail_on: Severity,
        input: Option<serde_json::Value>,
    ) -> Summary {
        let mut by_severity: BTreeMap<Severity, usize> =
            Severity::ALL.into_iter().map(|s| (s, 0)).collect();
        let mut by_rule = BTreeMap::new();
        for f in findings {
            *by_severity.entry(f.severity).or_default() += 1;
            *by_rule.entry(f.rule.clone()).or_default() += 1;
        }
        Summary {
            findings: findings.len(),
            by_severity,
            by_rule,
            fail_on,
            failed: findings.iter().any(|f| f.severity >= fail_on),
            input,
        }
    }
}

/// Where a finding's object was read from, for sinks that point into files (SARIF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLocation {
    /// Path (or URI) of the file.
    pub uri: String,
    /// 1-based line where the object's document starts.
    pub line: usize,
}
