//! The one thing every check produces and every sink renders.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How bad a finding is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|sev| sev.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown severity {s:?} (expected one of info, low, medium, high, critical)"
                )
            })
    }
}

/// One violation on one object (and optionally one of its containers).
///
/// Serialised exactly as the JSON findings document shows it:
/// `{"rule","severity","kind","namespace","name","container","message","evidence"}`.
/// For cluster-scoped objects (a Namespace finding) `namespace` is `None` and `name` is the object's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable rule id, e.g. `sidecar-missing`.
    pub rule: String,
    pub severity: Severity,
    /// Kind of the object judged: `Pod`, `Deployment`, `Namespace`, `ConfigMap`, ...
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub container: Option<String>,
    pub message: String,
    /// Facts the verdict rests on (the annotation, the arg, the UID ...), free-form JSON object.
    pub evidence: serde_json::Value,
}

impl Finding {
    /// The namespace the finding belongs to for grouping: its namespace, or its name for a
    /// Namespace; empty for other cluster-scoped objects.
    pub fn group_namespace(&self) -> &str {
        match (&self.namespace, self.kind.as_str()) {
            (Some(ns), _) => ns,
            (None, "Namespace") => &self.name,
            (None, _) => "",
        }
    }

    /// A key that identifies "the same finding" across runs (for de-duplication of Events and alerts).
    pub fn identity(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}",
            self.rule,
            self.kind,
            self.namespace.as_deref().unwrap_or(""),
            self.name,
            self.container.as_deref().unwrap_or("")
        )
    }
}
