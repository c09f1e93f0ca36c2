//! Kubernetes label selector evaluation (`matchLabels` and `matchExpressions`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy the selector. All `matchLabels` entries and all `matchExpressions`
/// must hold; an empty selector selects everything. A requirement Kubernetes would reject at
/// admission (unknown operator, `In` without values) selects nothing.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &selector.match_labels {
        if !ml.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or(&[]);
        let value = labels.get(&req.key);
        let ok = match req.operator.as_str() {
            "In" => !values.is_empty() && value.is_some_and(|v| values.contains(v)),
            "NotIn" => !values.is_empty() && value.is_none_or(|v| !values.contains(v)),
            "Exists" => values.is_empty() && value.is_some(),
            "DoesNotExist" => values.is_empty() && value.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|v| v.to_string()).collect())
            },
        }
    }

    #[test]
    fn empty_selector_selects_all() {
        assert!(matches(&LabelSelector::default(), &labels(&[])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["front", "back"]),
                expr("canary", "DoesNotExist", &[]),
                expr("team", "NotIn", &["ops"]),
                expr("app", "Exists", &[]),
            ]),
        };
        assert!(matches(&sel, &labels(&[("app", "web"), ("tier", "front")])));
        assert!(!matches(&sel, &labels(&[("app", "web"), ("tier", "db")])));
        assert!(!matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "front"), ("canary", "1")])
        ));
        assert!(!matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "front"), ("team", "ops")])
        ));
        assert!(!matches(
            &sel,
            &labels(&[("app", "api"), ("tier", "front")])
        ));
    }

    #[test]
    fn invalid_requirements_select_nothing() {
        let sel = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![expr("a", "Matches", &["x"])]),
        };
        assert!(!matches(&sel, &labels(&[("a", "x")])));
        let sel = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![expr("a", "In", &[])]),
        };
        assert!(!matches(&sel, &labels(&[("a", "x")])));
    }
}
