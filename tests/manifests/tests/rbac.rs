//! The RBAC rendered from deploy/ grants nothing beyond the API calls the auditor makes
//! (`egress_auditor::kube_client::API_CALLS`), and everything they need.

mod common;

use std::collections::BTreeSet;

use egress_auditor::kube_client::{ApiCall, API_CALLS};
use serde_json::Value;

use common::{deploy_dir, object_name, render_kustomization};

/// One permission: (namespace of the Role, or None for a ClusterRole), group, resource, verb.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    role: String,
    namespace: Option<String>,
    group: String,
    resource: String,
    verb: String,
}

impl Grant {
    /// A call the auditor makes that this grant is for. A call made only in one namespace must
    /// be granted by a Role there: a ClusterRole for it would grant every namespace.
    fn is_used_by(&self, call: &ApiCall) -> bool {
        (call.group, call.resource, call.verb)
            == (
                self.group.as_str(),
                self.resource.as_str(),
                self.verb.as_str(),
            )
            && match (call.namespace, self.namespace.as_deref()) {
                (None, _) => true,
                (Some(only), Some(role_namespace)) => only == role_namespace,
                (Some(_), None) => false,
            }
    }

    fn allows(&self, call: &ApiCall) -> bool {
        (call.group, call.resource, call.verb)
            == (
                self.group.as_str(),
                self.resource.as_str(),
                self.verb.as_str(),
            )
            && (self.namespace.is_none() || self.namespace.as_deref() == call.namespace)
    }
}

fn strings(value: &Value) -> Vec<String> {
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

fn grants(objects: &[Value]) -> Vec<Grant> {
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
                        });
                    }
                }
            }
        }
    }
    out
}

fn rendered_overlays() -> Option<Vec<(String, Vec<Value>)>> {
    let mut out = Vec::new();
    for overlay in ["cronjob", "watch", "node", "full"] {
        let objects = render_kustomization(&deploy_dir().join("overlays").join(overlay))?;
        out.push((overlay.to_string(), objects));
    }
    Some(out)
}

#[test]
fn roles_grant_nothing_beyond_the_auditors_api_calls() {
    let Some(overlays) = rendered_overlays() else {
        return;
    };
    println!(
        "{} API calls in egress_auditor::kube_client::API_CALLS",
        API_CALLS.len()
    );
    let mut excess = Vec::new();
    for (overlay, objects) in &overlays {
        let grants = grants(objects);
        assert!(!grants.is_empty(), "{overlay} renders no RBAC");
        for grant in grants {
            for part in [&grant.group, &grant.resource, &grant.verb] {
                assert!(
                    !part.contains('*'),
                    "{overlay}: {} uses a wildcard",
                    grant.role
                );
            }
            if !API_CALLS.iter().any(|call| grant.is_used_by(call)) {
                excess.push(format!(
                    "{overlay}: {} grants {} on {}/{}",
                    grant.role, grant.verb, grant.group, grant.resource
                ));
            }
        }
    }
    assert!(
        excess.is_empty(),
        "grants the auditor never uses:\n{}",
        excess.join("\n")
    );
}

#[test]
fn roles_grant_every_call_the_auditor_makes() {
    let Some(overlays) = rendered_overlays() else {
        return;
    };
    let granted: Vec<Grant> = overlays
        .iter()
        .flat_map(|(_, objects)| grants(objects))
        .collect();
    let missing: Vec<String> = API_CALLS
        .iter()
        .filter(|call| !granted.iter().any(|g| g.allows(call)))
        .map(|c| {
            format!(
                "{} on {}/{} (namespace {:?})",
                c.verb, c.group, c.resource, c.namespace
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the auditor makes calls no role allows:\n{}",
        missing.join("\n")
    );
}

#[test]
fn rbac_check_catches_an_extra_grant() {
    let Some(overlays) = rendered_overlays() else {
        return;
    };
    let mut objects = overlays[0].1.clone();
    let role = objects
        .iter_mut()
        .find(|o| o["kind"] == "ClusterRole")
        .unwrap();
    role["rules"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
        ));
    let unused: Vec<Grant> = grants(&objects)
        .into_iter()
        .filter(|g| !API_CALLS.iter().any(|call| g.is_used_by(call)))
        .collect();
    assert_eq!(unused.len(), 1);
    assert_eq!(unused[0].resource, "secrets");
    // A namespace-only call granted cluster-wide is excess too.
    let cluster_wide = Grant {
        role: "test".into(),
        namespace: None,
        group: String::new(),
        resource: "configmaps".into(),
        verb: "list".into(),
    };
    assert!(!API_CALLS.iter().any(|call| cluster_wide.is_used_by(call)));
}

#[test]
fn writes_only_reports_and_events_and_reads_only_the_mesh_configmap() {
    let Some(overlays) = rendered_overlays() else {
        return;
    };
    let writable = ["policyreports", "clusterpolicyreports", "events"];
    for (overlay, objects) in &overlays {
        for grant in grants(objects) {
            if !matches!(grant.verb.as_str(), "get" | "list" | "watch") {
                assert!(
                    writable.contains(&grant.resource.as_str()),
                    "{overlay}: {grant:?}"
                );
            }
            assert!(grant.resource != "secrets", "{overlay}: {grant:?}");
        }
        for role in objects
            .iter()
            .filter(|o| matches!(o["kind"].as_str(), Some("Role" | "ClusterRole")))
        {
            for rule in role["rules"].as_array().unwrap() {
                if strings(&rule["resources"]).contains(&"configmaps".to_string()) {
                    assert_eq!(
                        strings(&rule["resourceNames"]),
                        ["istio"],
                        "{overlay}: only the mesh ConfigMap"
                    );
                }
            }
        }
        // Each binding gives its role to the ServiceAccount of the same component.
        for binding in objects.iter().filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("RoleBinding" | "ClusterRoleBinding")
            )
        }) {
            let role = binding["roleRef"]["name"].as_str().unwrap();
            let [subject] = binding["subjects"].as_array().unwrap().as_slice() else {
                panic!("{overlay}: {} has one subject", object_name(binding))
            };
            assert_eq!(subject["kind"], "ServiceAccount");
            assert_eq!(subject["namespace"], "egress-guard");
            assert!(
                role.starts_with(subject["name"].as_str().unwrap()),
                "{overlay}: {role} bound to {subject}"
            );
        }
    }
}

/// Least privilege per component: the CronJob never watches, the node agent reads only pods and
/// writes only its own PolicyReports (never ClusterPolicyReports) and Events.
#[test]
fn each_component_gets_only_its_own_part() {
    let Some(overlays) = rendered_overlays() else {
        return;
    };
    let of = |overlay: &str, role: &str| -> BTreeSet<String> {
        let objects = &overlays.iter().find(|(o, _)| o == overlay).unwrap().1;
        grants(objects)
            .into_iter()
            .filter(|g| g.role.contains(role))
            .map(|g| format!("{} {}", g.verb, g.resource))
            .collect()
    };
    let scan = of("cronjob", "egress-guard-scan");
    assert!(!scan.iter().any(|g| g.starts_with("watch ")), "{scan:?}");
    let node_reads: BTreeSet<String> = of("full", "egress-guard-node")
        .into_iter()
        .filter(|g| !g.ends_with("policyreports") && !g.ends_with("events"))
        .collect();
    assert_eq!(
        node_reads,
        BTreeSet::from(["list pods".to_string(), "watch pods".to_string()])
    );
    for overlay in ["node", "full"] {
        let node_sinks: BTreeSet<String> = of(overlay, "egress-guard-node")
            .into_iter()
            .filter(|g| g.ends_with("policyreports") || g.ends_with("events"))
            .collect();
        let expected: BTreeSet<String> = [
            "list policyreports",
            "create policyreports",
            "update policyreports",
            "list events",
            "create events",
            "patch events",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(node_sinks, expected, "{overlay}");
    }
}
