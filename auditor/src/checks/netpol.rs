//! `egress-networkpolicy-missing`: an injected namespace whose pods no egress NetworkPolicy
//! selects. Without one, any pod that gets around its sidecar reaches the internet directly.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

use super::injection::{namespace_is_ambient, NamespaceInjection};
use super::selector;
use super::WorkloadFacts;
use crate::finding::{Finding, Severity};
use crate::rules::{rule, EGRESS_NETWORKPOLICY_MISSING};
use crate::snapshot::Snapshot;

/// Whether the policy restricts egress. Kubernetes: with `policyTypes` unset, Egress applies only
/// when the policy has egress rules.
pub fn has_egress_type(np: &NetworkPolicy) -> bool {
    let Some(spec) = &np.spec else {
        return false;
    };
    match &spec.policy_types {
        Some(types) => types.iter().any(|t| t == "Egress"),
        None => spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
    }
}

pub fn egress_networkpolicy_missing(snapshot: &Snapshot, facts: &[WorkloadFacts]) -> Vec<Finding> {
    let severity = rule(EGRESS_NETWORKPOLICY_MISSING)
        .map(|r| r.severity)
        .unwrap_or(Severity::Medium);
    let mut out = Vec::new();
    for (name, ns) in &snapshot.namespaces {
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        let injection = NamespaceInjection::of(name, &labels);
        if !injection.is_injected() || namespace_is_ambient(&labels) {
            continue;
        }
        let egress: Vec<&NetworkPolicy> = snapshot
            .network_policies_in(name)
            .iter()
            .filter(|np| has_egress_type(np))
            .collect();
        let policy_names: Vec<String> = egress
            .iter()
            .map(|np| np.metadata.name.clone().unwrap_or_default())
            .collect();
        // NetworkPolicies do not apply to host-network pods; host-network reports those.
        let workloads: Vec<&WorkloadFacts> = facts
            .iter()
            .filter(|w| w.namespace == *name && !w.host_network)
            .collect();
        // Sorted, so the evidence does not depend on input order.
        let unselected: Vec<String> = workloads
            .iter()
            .filter(|w| {
                !egress.iter().any(|np| {
                    let sel = np
                        .spec
                        .as_ref()
                        .and_then(|s| s.pod_selector.clone())
                        .unwrap_or_default();
                    selector::matches(&sel, &w.labels)
                })
            })
            .map(|w| format!("{}/{}", w.kind, w.name))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let message = if egress.is_empty() {
            format!("injected namespace {name} has no NetworkPolicy with policyTypes Egress: a pod that bypasses its sidecar can reach any destination")
        } else if !unselected.is_empty() {
            format!(
                "injected namespace {name}: egress NetworkPolicies ({}) select none of {}",
                policy_names.join(", "),
                unselected.join(", ")
            )
        } else {
            continue;
        };
        out.push(Finding {
            rule: EGRESS_NETWORKPOLICY_MISSING.to_string(),
            severity,
            kind: "Namespace".to_string(),
            namespace: None,
            name: name.clone(),
            container: None,
            message,
            evidence: json!({
                "egressPolicies": policy_names,
                "unselectedWorkloads": unselected,
                "workloadsInSnapshot": workloads.len(),
            }),
        });
    }
    out
}
