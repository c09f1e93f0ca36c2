//! Every Kubernetes API call the auditor makes, in any mode (cluster scan, watch, sinks).
//!
//! The deploy manifests' RBAC must grant exactly these and nothing more: read-only on what the
//! checks read, create/update only on PolicyReports and Events.

/// One verb on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiCall {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Plural resource name.
    pub resource: &'static str,
    pub verb: &'static str,
    /// `Some(ns)` when the call is only made in that namespace (a Role there is enough);
    /// `None` when it is made cluster-wide or in any namespace (a ClusterRole).
    pub namespace: Option<&'static str>,
}

const fn call(group: &'static str, resource: &'static str, verb: &'static str) -> ApiCall {
    ApiCall {
        group,
        resource,
        verb,
        namespace: None,
    }
}

pub const API_CALLS: &[ApiCall] = &[
    // Read by `scan --cluster` (list) and `watch` (list + watch).
    call("", "namespaces", "list"),
    call("", "namespaces", "watch"),
    call("", "pods", "list"),
    call("", "pods", "watch"),
    call("networking.k8s.io", "networkpolicies", "list"),
    call("networking.k8s.io", "networkpolicies", "watch"),
    call("extensions.istio.io", "wasmplugins", "list"),
    call("extensions.istio.io", "wasmplugins", "watch"),
    call("networking.istio.io", "envoyfilters", "list"),
    call("networking.istio.io", "envoyfilters", "watch"),
    // The mesh ConfigMap only: listed with a field selector on its name.
    ApiCall {
        group: "",
        resource: "configmaps",
        verb: "list",
        namespace: Some(crate::snapshot::MESH_CONFIG_NAMESPACE),
    },
    ApiCall {
        group: "",
        resource: "configmaps",
        verb: "watch",
        namespace: Some(crate::snapshot::MESH_CONFIG_NAMESPACE),
    },
    // `--sink events`: existing events are listed by label, new ones created, repeats patched.
    call("events.k8s.io", "events", "list"),
    call("events.k8s.io", "events", "create"),
    call("events.k8s.io", "events", "patch"),
    // `--sink policyreport`: listed by label, then created or replaced.
    call("wgpolicyk8s.io", "policyreports", "list"),
    call("wgpolicyk8s.io", "policyreports", "create"),
    call("wgpolicyk8s.io", "policyreports", "update"),
    call("wgpolicyk8s.io", "clusterpolicyreports", "list"),
    call("wgpolicyk8s.io", "clusterpolicyreports", "create"),
    call("wgpolicyk8s.io", "clusterpolicyreports", "update"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_reports_and_events() {
        for c in API_CALLS {
            let write = !matches!(c.verb, "get" | "list" | "watch");
            if write {
                assert!(
                    matches!(
                        c.resource,
                        "policyreports" | "clusterpolicyreports" | "events"
                    ),
                    "unexpected write {c:?}"
                );
                assert!(
                    matches!(c.verb, "create" | "update" | "patch"),
                    "unexpected verb {c:?}"
                );
            }
        }
    }

    #[test]
    fn no_duplicates() {
        let mut seen = std::collections::BTreeSet::new();
        for c in API_CALLS {
            assert!(seen.insert(*c), "duplicate {c:?}");
        }
    }
}
