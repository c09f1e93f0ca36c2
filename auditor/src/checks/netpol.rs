//! `egress-networkpolicy-missing`: an injected or ambient namespace whose pods no egress
//! NetworkPolicy selects. Without one, any pod that gets around its sidecar reaches the internet
//! directly; in ambient mode ztunnel also passes connections to destinations it does not know
//! straight out, and UDP other than DNS is never captured. NetworkPolicy still binds ambient pods:
//! ztunnel's own connections leave the pod's network namespace with the pod's address.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::json;

use super::injection::{namespace_is_ambient, NamespaceInjection};
use super::selector;
use super::{CheckOptions, WorkloadFacts};
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

/// Which data plane a judged namespace runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dataplane {
    Sidecar,
    Ambient,
}

impl Dataplane {
    fn label(self) -> &'static str {
        match self {
            Dataplane::Sidecar => "injected",
            Dataplane::Ambient => "ambient",
        }
    }
}

pub fn egress_networkpolicy_missing(
    snapshot: &Snapshot,
    opts: &CheckOptions,
    facts: &[WorkloadFacts],
) -> Vec<Finding> {
    let severity = rule(EGRESS_NETWORKPOLICY_MISSING)
        .map(|r| r.severity)
        .unwrap_or(Severity::Medium);
    let mut out = Vec::new();
    // NetworkPolicies do not apply to host-network pods; host-network reports those. Grouped
    // once (in input order), not filtered again for every namespace.
    let mut by_namespace: BTreeMap<&str, Vec<&WorkloadFacts>> = BTreeMap::new();
    for w in facts.iter().filter(|w| !w.host_network) {
        by_namespace
            .entry(w.namespace.as_str())
            .or_default()
            .push(w);
    }
    for (name, ns) in &snapshot.namespaces {
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        // Injection wins over the ambient label (the injector does not read it).
        let dataplane = if NamespaceInjection::of(name, &labels).is_injected() {
            Dataplane::Sidecar
        } else if namespace_is_ambient(&labels) && !opts.cni_excluded_namespaces.contains(name) {
            Dataplane::Ambient
        } else {
            continue;
        };
        let kind = dataplane.label();
        let egress: Vec<&NetworkPolicy> = snapshot
            .network_policies_in(name)
            .iter()
            .filter(|np| has_egress_type(np))
            .collect();
        let policy_names: Vec<String> = egress
            .iter()
            .map(|np| np.metadata.name.clone().unwrap_or_default())
            .collect();
        let workloads: &[&WorkloadFacts] = by_namespace
            .get(name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let selectors: Vec<LabelSelector> = egress
            .iter()
            .map(|np| {
                np.spec
                    .as_ref()
                    .and_then(|s| s.pod_selector.clone())
                    .unwrap_or_default()
            })
            .collect();
        // Sorted, so the evidence does not depend on input order.
        let unselected: Vec<String> = workloads
            .iter()
            .filter(|w| {
                !selectors
                    .iter()
                    .any(|sel| selector::matches(sel, &w.labels))
            })
            .map(|w| format!("{}/{}", w.kind, w.name))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let message = if egress.is_empty() {
            match dataplane {
                Dataplane::Sidecar => format!("injected namespace {name} has no NetworkPolicy with policyTypes Egress: a pod that bypasses its sidecar can reach any destination"),
                Dataplane::Ambient => format!("ambient namespace {name} has no NetworkPolicy with policyTypes Egress: ztunnel passes connections to unknown destinations straight out, UDP is never captured, and a pod that bypasses ztunnel can reach any destination"),
            }
        } else if !unselected.is_empty() {
            format!(
                "{kind} namespace {name}: egress NetworkPolicies ({}) select none of {}",
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
                "dataplane": if dataplane == Dataplane::Ambient { "ambient" } else { "sidecar" },
                "egressPolicies": policy_names,
                "unselectedWorkloads": unselected,
                "workloadsInSnapshot": workloads.len(),
            }),
        });
    }
    out
}
