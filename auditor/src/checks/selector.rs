//! Kubernetes label selector evaluation (`matchLabels` and `matchExpressions`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A pod's labels, kept for every pod of a scan: sorted pairs, one allocation for the list and one
/// per string. (A `BTreeMap` node has room for eleven pairs however few there are: about 540
/// bytes for a pod's usual five labels, against about 180 here.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(Box<[(Box<str>, Box<str>)]>);

impl Labels {
    /// The value of `key`, if the pod has that label.
    pub fn get(&self, key: &str) -> Option<&str> {
        let at = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        self.0.get(at).map(|(_, v)| &**v)
    }
}

impl From<&BTreeMap<String, String>> for Labels {
    fn from(map: &BTreeMap<String, String>) -> Self {
        // A map iterates in key order, which is the order `get` searches in.
        Labels(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
        )
    }
}

/// Whether `labels` satisfy the selector. All `matchLabels` entries and all `matchExpressions`
/// must hold; an empty selector selects everything. A requirement Kubernetes would reject at
/// admission (unknown operator, `In` without values) selects nothing.
pub fn matches(selector: &LabelSelector, labels: &Labels) -> bool {
    if let Some(ml) = &selector.match_labels {
        if !ml.iter().all(|(k, v)| labels.get(k) == Some(v.as_str())) {
            return false;
        }
    }
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or(&[]);
        let value = labels.get(&req.key);
        let listed = |v: &str| values.iter().any(|x| x == v);
        let ok = match req.operator.as_str() {
            "In" => !values.is_empty() && value.is_some_and(listed),
            "NotIn" => !values.is_empty() && !value.is_some_and(listed),
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

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from(&map(pairs))
    }

    #[test]
    fn labels_are_found_by_key() {
        let l = labels(&[
            ("app.kubernetes.io/name", "web"),
            ("app", "a"),
            ("version", "v1"),
            ("", "empty key"),
            ("sidecar.istio.io/inject", "false"),
        ]);
        assert_eq!(l.get("app"), Some("a"));
        assert_eq!(l.get("app.kubernetes.io/name"), Some("web"));
        assert_eq!(l.get("version"), Some("v1"));
        assert_eq!(l.get(""), Some("empty key"));
        assert_eq!(l.get("sidecar.istio.io/inject"), Some("false"));
        assert_eq!(l.get("ap"), None);
        assert_eq!(l.get("zzz"), None);
        assert_eq!(Labels::default().get("app"), None);
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
            match_labels: Some(map(&[("app", "web")])),
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
