//! Whether Istio is expected to inject a pod, following the injector's own decision
//! (`pkg/kube/inject/inject.go` `injectRequired` and the webhook's namespace/object selectors).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::WorkloadFacts;
use crate::istio::{self, InjectSwitch};
use crate::snapshot::Snapshot;

/// How a namespace's labels select the injector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceInjection {
    /// `istio-injection=enabled`.
    Enabled,
    /// `istio.io/rev=<rev>` without an `istio-injection` label.
    Revision(String),
    /// `istio-injection` set to anything but `enabled`: the injector skips the namespace, even
    /// for pods asking to be injected.
    Disabled(String),
    /// Neither label.
    Unlabelled,
    /// One of the namespaces Istio never injects (kube-system, ...).
    Ignored,
}

impl NamespaceInjection {
    pub fn of(namespace: &str, labels: &BTreeMap<String, String>) -> NamespaceInjection {
        if istio::IGNORED_NAMESPACES.contains(&namespace) {
            return NamespaceInjection::Ignored;
        }
        if let Some(v) = labels.get(istio::NAMESPACE_INJECTION_LABEL) {
            return if v == "enabled" {
                NamespaceInjection::Enabled
            } else {
                NamespaceInjection::Disabled(v.clone())
            };
        }
        if let Some(rev) = labels.get(istio::REVISION_LABEL) {
            return NamespaceInjection::Revision(rev.clone());
        }
        NamespaceInjection::Unlabelled
    }

    /// Injection is on for the namespace as a whole.
    pub fn is_injected(&self) -> bool {
        matches!(
            self,
            NamespaceInjection::Enabled | NamespaceInjection::Revision(_)
        )
    }

    fn evidence(&self) -> Value {
        match self {
            NamespaceInjection::Enabled => json!({"label": "istio-injection=enabled"}),
            NamespaceInjection::Revision(rev) => json!({"label": format!("istio.io/rev={rev}")}),
            NamespaceInjection::Disabled(v) => json!({"label": format!("istio-injection={v}")}),
            NamespaceInjection::Unlabelled => Value::Null,
            NamespaceInjection::Ignored => json!({"ignoredByIstio": true}),
        }
    }
}

/// Whether the namespace (by its labels) is enrolled in ambient mode.
pub fn namespace_is_ambient(labels: &BTreeMap<String, String>) -> bool {
    labels.get(istio::DATAPLANE_MODE_LABEL).map(String::as_str)
        == Some(istio::ambient::MODE_AMBIENT)
}

/// What the injector would decide for one workload.
#[derive(Debug, Clone)]
pub struct InjectionContext {
    pub namespace: NamespaceInjection,
    /// The namespace object was in the snapshot.
    pub namespace_known: bool,
    /// The pod's `sidecar.istio.io/inject` switch and where it was read.
    pub pod_switch: InjectSwitch,
    pub pod_switch_source: Option<(&'static str, String)>,
    /// Istio would inject the pod (before hostNetwork is considered). The injector does not read
    /// the ambient labels: a pod it injects is a sidecar pod whatever `istio.io/dataplane-mode`
    /// says, and istio-cni then leaves it to the sidecar.
    pub injection_requested: bool,
    /// Why: the label that asked for injection.
    pub requested_by: Option<String>,
}

impl InjectionContext {
    pub fn new(snapshot: &Snapshot, w: &WorkloadFacts) -> InjectionContext {
        let ns_labels = snapshot.namespace_labels(&w.namespace);
        let namespace = NamespaceInjection::of(&w.namespace, ns_labels);
        let pod_labels = &w.labels;
        let (pod_switch, source) = istio::inject_switch(
            pod_labels.get(istio::INJECT_KEY),
            w.inject_annotation.as_deref(),
        );
        let pod_switch_source = source.map(|(s, v)| (s, v.to_string()));

        let (injection_requested, requested_by) = match &namespace {
            NamespaceInjection::Ignored | NamespaceInjection::Disabled(_) => (false, None),
            NamespaceInjection::Enabled | NamespaceInjection::Revision(_) => match pod_switch {
                InjectSwitch::Off => (false, None),
                _ => (
                    true,
                    Some(match &namespace {
                        NamespaceInjection::Revision(r) => {
                            format!("namespace {} label istio.io/rev={r}", w.namespace)
                        }
                        _ => format!("namespace {} label istio-injection=enabled", w.namespace),
                    }),
                ),
            },
            NamespaceInjection::Unlabelled => {
                // Unlabelled namespace: only the pod's own labels select the injector's object
                // selector webhook (annotations do not).
                if pod_labels.get(istio::INJECT_KEY) == Some("true") {
                    (
                        true,
                        Some("pod label sidecar.istio.io/inject=true".to_string()),
                    )
                } else if let Some(rev) = pod_labels.get(istio::REVISION_LABEL) {
                    (true, Some(format!("pod label istio.io/rev={rev}")))
                } else {
                    (false, None)
                }
            }
        };

        InjectionContext {
            namespace,
            namespace_known: snapshot.namespace(&w.namespace).is_some(),
            pod_switch,
            pod_switch_source,
            injection_requested,
            requested_by,
        }
    }

    /// The pod opts out of an injected namespace.
    pub fn opted_out(&self) -> bool {
        self.namespace.is_injected() && self.pod_switch == InjectSwitch::Off
    }

    pub fn namespace_evidence(&self) -> Value {
        self.namespace.evidence()
    }
}
