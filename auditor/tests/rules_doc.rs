//! docs/rules.md documents every rule the auditor reports, at the severity it reports it, and
//! nothing it does not.

use std::collections::BTreeMap;
use std::path::Path;

use egress_auditor::rules::{CAPTURE_EXCLUSION, RULES};

/// Rule sections (`## id` or `### id`) and the text of their `**Severity:**` line.
fn documented_rules() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/rules.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut sections = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(heading) = line
            .strip_prefix("### ")
            .or_else(|| line.strip_prefix("## "))
        {
            // Rule ids are one lower-case word with dashes; other headings are prose.
            current = heading
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-')
                .then(|| heading.to_string());
            if let Some(id) = &current {
                assert!(
                    sections.insert(id.clone(), String::new()).is_none(),
                    "{id} is documented twice"
                );
            }
        } else if let (Some(id), Some(severity)) = (&current, line.strip_prefix("**Severity:** ")) {
            let entry = sections.get_mut(id).unwrap();
            if entry.is_empty() {
                *entry = severity.to_string();
            }
        }
    }
    sections
}

#[test]
fn every_rule_is_documented_at_its_severity() {
    let documented = documented_rules();
    for rule in RULES {
        let severity = documented
            .get(rule.id)
            .unwrap_or_else(|| panic!("docs/rules.md has no section for {}", rule.id));
        let first_word = severity
            .split(|c: char| !c.is_ascii_alphabetic())
            .next()
            .unwrap_or("");
        if rule.id == CAPTURE_EXCLUSION {
            assert!(severity.starts_with("graded"), "{}: {severity}", rule.id);
        } else {
            assert_eq!(
                first_word,
                rule.severity.as_str(),
                "{}: docs say {severity:?}",
                rule.id
            );
        }
    }
    let known: Vec<&str> = RULES.iter().map(|r| r.id).collect();
    for id in documented.keys() {
        assert!(
            known.contains(&id.as_str()),
            "docs/rules.md documents {id}, which is no rule"
        );
    }
}
