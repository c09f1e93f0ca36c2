//! Every Kubernetes API call the controller makes. The RBAC in
//! `deploy/components/policy-controller` must grant exactly these (a test in tests/manifests
//! compares).

/// One verb on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiCall {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Plural resource name, with `/status` for the status subresource.
    pub resource: &'static str,
    pub verb: &'static str,
    /// `Some(place)` when the call is made in one namespace only (a Role there is enough):
    /// [`WASMPLUGIN_NAMESPACE`] or [`LEASE_NAMESPACE`]; `None` when cluster-wide.
    pub namespace: Option<&'static str>,
}

/// Where the installed WasmPlugins live (the default `--wasmplugin` targets).
pub const WASMPLUGIN_NAMESPACE: &str = "istio-system";
/// Where the installed controller keeps its Lease (its own namespace).
pub const LEASE_NAMESPACE: &str = "egress-guard";

const fn call(group: &'static str, resource: &'static str, verb: &'static str) -> ApiCall {
    ApiCall {
        group,
        resource,
        verb,
        namespace: None,
    }
}

const fn in_namespace(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    namespace: &'static str,
) -> ApiCall {
    ApiCall {
        group,
        resource,
        verb,
        namespace: Some(namespace),
    }
}

pub const API_CALLS: &[ApiCall] = &[
    // Watched (list + watch) and recompiled on every change.
    call("policy.egress-guard.dev", "clusteregresspolicies", "list"),
    call("policy.egress-guard.dev", "clusteregresspolicies", "watch"),
    call("policy.egress-guard.dev", "egresspolicies", "list"),
    call("policy.egress-guard.dev", "egresspolicies", "watch"),
    call("", "namespaces", "list"),
    call("", "namespaces", "watch"),
    // Status: patched with the resourceVersion the conditions were computed for; on a conflict
    // the object is read again.
    call("policy.egress-guard.dev", "clusteregresspolicies", "get"),
    call("policy.egress-guard.dev", "egresspolicies", "get"),
    call(
        "policy.egress-guard.dev",
        "clusteregresspolicies/status",
        "patch",
    ),
    call("policy.egress-guard.dev", "egresspolicies/status", "patch"),
    // The WasmPlugins: read (is it installed, is its config current?), then server-side apply.
    in_namespace(
        "extensions.istio.io",
        "wasmplugins",
        "get",
        WASMPLUGIN_NAMESPACE,
    ),
    in_namespace(
        "extensions.istio.io",
        "wasmplugins",
        "patch",
        WASMPLUGIN_NAMESPACE,
    ),
    // Leader election.
    in_namespace("coordination.k8s.io", "leases", "get", LEASE_NAMESPACE),
    in_namespace("coordination.k8s.io", "leases", "create", LEASE_NAMESPACE),
    in_namespace("coordination.k8s.io", "leases", "update", LEASE_NAMESPACE),
];
