//! Kubernetes label selectors (`matchLabels` and `matchExpressions` with `In`, `NotIn`, `Exists`,
//! `DoesNotExist`), as the API server evaluates them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A selector with neither `matchLabels` nor `matchExpressions` selects everything.
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// Checks what the API server's `LabelSelectorAsSelector` refuses; `Err` is (field path relative
/// to the selector, reason).
pub fn validate(selector: &LabelSelector) -> Result<(), (String, String)> {
    for (i, expression) in selector.match_expressions.iter().flatten().enumerate() {
        let at = |field: &str| format!("matchExpressions[{i}].{field}");
        if expression.key.is_empty() {
            return Err((at("key"), "must not be empty".into()));
        }
        let values = expression.values.as_deref().unwrap_or_default();
        match expression.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err((
                    at("values"),
                    format!("must be non-empty for operator {}", expression.operator),
                ))
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err((
                    at("values"),
                    format!("must be empty for operator {}", expression.operator),
                ))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err((
                    at("operator"),
                    format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                ))
            }
        }
    }
    Ok(())
}

/// Whether `labels` satisfy every term of the selector (a validated one: unknown operators match
/// nothing).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    labels_match
        && selector.match_expressions.iter().flatten().all(|e| {
            let value = labels.get(&e.key);
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
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

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn each_operator() {
        let ci = labels(&[("team", "ci"), ("tier", "build")]);
        let web = labels(&[("team", "web")]);
        let cases = [
            (expression("team", "In", &["ci", "ops"]), true, false),
            (expression("team", "NotIn", &["ci"]), false, true),
            (expression("tier", "NotIn", &["prod"]), true, true),
            (expression("tier", "Exists", &[]), true, false),
            (expression("tier", "DoesNotExist", &[]), false, true),
        ];
        for (e, on_ci, on_web) in cases {
            let selector = LabelSelector {
                match_expressions: Some(vec![e.clone()]),
                match_labels: None,
            };
            assert_eq!(matches(&selector, &ci), on_ci, "{e:?} on ci");
            assert_eq!(matches(&selector, &web), on_web, "{e:?} on web");
        }
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("team", "ci")])),
            match_expressions: Some(vec![expression("tier", "In", &["build"])]),
        };
        assert!(matches(
            &selector,
            &labels(&[("team", "ci"), ("tier", "build")])
        ));
        assert!(!matches(&selector, &labels(&[("team", "ci")])));
        assert!(!matches(&selector, &labels(&[("tier", "build")])));
        assert!(!is_empty(&selector));
        assert!(is_empty(&LabelSelector::default()));
        assert!(matches(&LabelSelector::default(), &labels(&[])));
    }

    #[test]
    fn invalid_selectors_name_the_field() {
        let bad = [
            (expression("team", "In", &[]), "matchExpressions[0].values"),
            (
                expression("team", "Exists", &["x"]),
                "matchExpressions[0].values",
            ),
            (
                expression("team", "Equals", &["x"]),
                "matchExpressions[0].operator",
            ),
            (expression("", "Exists", &[]), "matchExpressions[0].key"),
        ];
        for (e, field) in bad {
            let selector = LabelSelector {
                match_expressions: Some(vec![e]),
                match_labels: None,
            };
            assert_eq!(validate(&selector).unwrap_err().0, field);
        }
    }
}
