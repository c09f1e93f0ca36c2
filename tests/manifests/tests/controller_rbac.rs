//! The policy controller's RBAC is exactly the API calls it makes
//! (`egress_controller::API_CALLS`), and the people ClusterRoles give each team its room and no
//! more.

mod common;

use std::collections::BTreeSet;

use egress_controller::{ApiCall, API_CALLS};
use serde_json::Value;

use common::rbac::{grants, strings, Grant};
use common::{deploy_dir, object_name, render_kustomization};

const SERVICE_ACCOUNT: &str = "egress-guard-policy-controller";

fn rendered() -> Option<Vec<Value>> {
    render_kustomization(&deploy_dir().join("overlays/policy-controller"))
}

/// Roles bound to the controller's ServiceAccount.
fn controller_roles(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("RoleBinding" | "ClusterRoleBinding")
            )
        })
        .filter(|b| {
            b["subjects"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["name"] == SERVICE_ACCOUNT))
        })
        .map(|b| {
            let kind = b["roleRef"]["kind"].as_str().unwrap();
            let namespace = b["metadata"]["namespace"].as_str().unwrap_or("");
            let namespace = if kind == "Role" { namespace } else { "" };
            format!(
                "{kind} {namespace}/{}",
                b["roleRef"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn controller_grants(objects: &[Value]) -> Vec<Grant> {
    let roles = controller_roles(objects);
    grants(objects)
        .into_iter()
        .filter(|g| roles.contains(&g.role))
        .collect()
}

fn call(c: &ApiCall) -> (&str, &str, &str) {
    (c.group, c.resource, c.verb)
}

#[test]
fn the_controller_gets_exactly_the_calls_it_makes() {
    let Some(objects) = rendered() else { return };
    let granted = controller_grants(&objects);
    assert!(granted.len() >= API_CALLS.len(), "{granted:#?}");
    let excess: Vec<&Grant> = granted
        .iter()
        .filter(|g| !API_CALLS.iter().any(|c| g.is_used_by(call(c), c.namespace)))
        .collect();
    assert!(
        excess.is_empty(),
        "grants the controller never uses: {excess:#?}"
    );
    let missing: Vec<&ApiCall> = API_CALLS
        .iter()
        .filter(|c| !granted.iter().any(|g| g.allows(call(c), c.namespace)))
        .collect();
    assert!(missing.is_empty(), "calls no role allows: {missing:#?}");
    for g in &granted {
        assert!(
            ![&g.group, &g.resource, &g.verb]
                .iter()
                .any(|p| p.contains('*')),
            "{g:?}"
        );
        // Writes outside its own status are limited to the objects it owns, by name.
        if g.resource == "wasmplugins" {
            assert_eq!(
                g.names,
                ["egress-filter-http", "egress-filter-network"],
                "{g:?}"
            );
        }
        if g.resource == "leases" && g.verb != "create" {
            assert_eq!(g.names, ["egress-controller"], "{g:?}");
        }
        assert_ne!(g.resource, "secrets");
    }
    // Bindings name the controller's ServiceAccount in the install namespace.
    for binding in objects.iter().filter(|o| {
        matches!(
            o["kind"].as_str(),
            Some("RoleBinding" | "ClusterRoleBinding")
        )
    }) {
        let [subject] = binding["subjects"].as_array().unwrap().as_slice() else {
            panic!("{} has one subject", object_name(binding))
        };
        assert_eq!(subject["name"], SERVICE_ACCOUNT);
        assert_eq!(subject["namespace"], "egress-guard");
    }
}

fn role<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("ClusterRole {name}"))
}

fn verbs_on(objects: &[Value], role_name: &str, resource: &str) -> BTreeSet<String> {
    let wanted = format!("ClusterRole /{role_name}");
    grants(objects)
        .into_iter()
        .filter(|g| g.role == wanted && g.resource == resource)
        .map(|g| g.verb)
        .collect()
}

#[test]
fn people_roles_give_each_team_its_room() {
    let Some(objects) = rendered() else { return };
    let writes = ["create", "update", "patch", "delete", "deletecollection"];
    let reads = ["get", "list", "watch"];
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    let all: Vec<&str> = reads.iter().chain(writes.iter()).copied().collect();

    // Security team: writes the cluster-wide tiers, reads the namespaces' policies.
    assert_eq!(
        verbs_on(
            &objects,
            "egress-guard-security-admin",
            "clusteregresspolicies"
        ),
        set(&all)
    );
    assert_eq!(
        verbs_on(&objects, "egress-guard-security-admin", "egresspolicies"),
        set(&reads)
    );
    // A namespace's team: its EgressPolicies (through edit/admin, so only where it has them).
    let editor = role(&objects, "egress-guard-namespace-editor");
    let labels = &editor["metadata"]["labels"];
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    assert_eq!(
        verbs_on(&objects, "egress-guard-namespace-editor", "egresspolicies"),
        set(&all)
    );
    assert!(verbs_on(
        &objects,
        "egress-guard-namespace-editor",
        "clusteregresspolicies"
    )
    .is_empty());
    // Nobody but the controller writes status.
    for person in [
        "egress-guard-security-admin",
        "egress-guard-namespace-editor",
        "egress-guard-viewer",
    ] {
        for resource in ["clusteregresspolicies/status", "egresspolicies/status"] {
            let verbs = verbs_on(&objects, person, resource);
            assert!(
                verbs.iter().all(|v| reads.contains(&v.as_str())),
                "{person} {resource}: {verbs:?}"
            );
        }
    }
    // Viewers read everything, write nothing.
    let viewer = role(&objects, "egress-guard-viewer");
    assert_eq!(
        viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    for resource in ["clusteregresspolicies", "egresspolicies"] {
        assert_eq!(
            verbs_on(&objects, "egress-guard-viewer", resource),
            set(&reads)
        );
    }
    for rule in viewer["rules"].as_array().unwrap() {
        assert_eq!(strings(&rule["apiGroups"]), ["policy.egress-guard.dev"]);
    }
    // No people role is bound by the install: whom to give them to is the cluster's choice.
    let bound: BTreeSet<String> = objects
        .iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("RoleBinding" | "ClusterRoleBinding")
            )
        })
        .map(|b| b["roleRef"]["name"].as_str().unwrap().to_string())
        .collect();
    for person in [
        "egress-guard-security-admin",
        "egress-guard-namespace-editor",
        "egress-guard-viewer",
    ] {
        assert!(!bound.contains(person), "{person} is bound");
    }
}
