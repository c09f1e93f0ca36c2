//! Role rules flattened into one grant per (role, namespace, group, resource, verb), for the
//! tests that compare RBAC with the API calls a binary makes.

use serde_json::Value;

use super::object_name;

/// One permission: (namespace of the Role, or None for a ClusterRole), group, resource, verb.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub role: String,
    pub namespace: Option<String>,
    pub group: String,
    pub resource: String,
    pub verb: String,
    /// `resourceNames` of the rule (empty: any name).
    pub names: Vec<String>,
}

impl Grant {
    /// This grant is for `(group, resource, verb)`, made in `only` (a namespace) or anywhere. A
    /// call made only in one namespace must be granted by a Role there: a ClusterRole for it
    /// would grant every namespace.
    pub fn is_used_by(&self, call: (&str, &str, &str), only: Option<&str>) -> bool {
        call == (
            self.group.as_str(),
            self.resource.as_str(),
            self.verb.as_str(),
        ) && match (only, self.namespace.as_deref()) {
            (None, _) => true,
            (Some(only), Some(role_namespace)) => only == role_namespace,
            (Some(_), None) => false,
        }
    }

    pub fn allows(&self, call: (&str, &str, &str), only: Option<&str>) -> bool {
        call == (
            self.group.as_str(),
            self.resource.as_str(),
            self.verb.as_str(),
        ) && (self.namespace.is_none() || self.namespace.as_deref() == only)
    }
}

pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Every grant of every Role and ClusterRole in `objects`.
pub fn grants(objects: &[Value]) -> Vec<Grant> {
    let mut out = Vec::new();
    for role in objects
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("Role" | "ClusterRole")))
    {
        let namespace = match role["kind"].as_str() {
            Some("Role") => Some(
                role["metadata"]["namespace"]
                    .as_str()
                    .expect("a Role has a namespace")
                    .to_string(),
            ),
            _ => None,
        };
        for rule in role["rules"].as_array().into_iter().flatten() {
            assert!(
                rule["nonResourceURLs"].is_null(),
                "{}: nonResourceURLs",
                object_name(role)
            );
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        out.push(Grant {
                            role: object_name(role),
                            namespace: namespace.clone(),
                            group: group.clone(),
                            resource: resource.clone(),
                            verb,
                            names: strings(&rule["resourceNames"]),
                        });
                    }
                }
            }
        }
    }
    out
}
