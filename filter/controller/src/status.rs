//! Status on every policy object: the conditions `Accepted`, `Ready` and `Shadowed`, with
//! `observedGeneration`, computed from a compilation (pure) and written to the status subresource
//! with the resourceVersion they were computed for (a conflict re-reads the object).

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::resources::{PolicyRef, PolicyStatus, StatusCondition};
use crate::shadow::Shadowed;

pub const ACCEPTED: &str = "Accepted";
pub const READY: &str = "Ready";
pub const SHADOWED: &str = "Shadowed";

/// Whether the policy's current generation is in effect at the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// Written to (or already in) every WasmPlugin listed.
    Applied { wasmplugins: Vec<String> },
    /// This policy is invalid: nothing was written.
    Invalid,
    /// Valid, but other policies are invalid, so the WasmPlugins keep their previous configuration.
    Held { blockers: Vec<PolicyRef> },
    /// Valid and compiled, but a WasmPlugin could not be written.
    NotWritten { message: String },
}

/// Everything the conditions of one policy are computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `Err((field, reason))` when the policy is invalid.
    pub accepted: Result<(), (String, String)>,
    pub ready: Ready,
    /// `None`: not analysed (the configuration did not compile).
    pub shadowed: Option<Vec<Shadowed>>,
}

/// The status a policy should have: the verdict's conditions, each keeping its
/// lastTransitionTime from `current` when its status did not change.
pub fn desired(
    verdict: &Verdict,
    generation: Option<i64>,
    current: Option<&PolicyStatus>,
    now: &str,
) -> PolicyStatus {
    let (accepted, ready, shadowed) = conditions(verdict);
    let conditions = [(ACCEPTED, accepted), (READY, ready), (SHADOWED, shadowed)]
        .into_iter()
        .map(|(type_, (status, reason, message))| {
            let previous = current
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
                .filter(|c| c.status == status);
            StatusCondition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message,
                last_transition_time: previous
                    .map(|c| c.last_transition_time.clone())
                    .unwrap_or_else(|| now.to_string()),
                observed_generation: generation,
            }
        })
        .collect();
    PolicyStatus {
        observed_generation: generation,
        conditions,
    }
}

type Parts = (&'static str, &'static str, String);

fn conditions(verdict: &Verdict) -> (Parts, Parts, Parts) {
    let accepted = match &verdict.accepted {
        Ok(()) => (
            "True",
            "Accepted",
            "compiled into the egress filter configuration".to_string(),
        ),
        Err((field, message)) => ("False", "Invalid", format!("{field}: {message}")),
    };
    let ready = match &verdict.ready {
        Ready::Applied { wasmplugins } => (
            "True",
            "Applied",
            format!("in effect in WasmPlugin {}", wasmplugins.join(", ")),
        ),
        Ready::Invalid => (
            "False",
            "Invalid",
            "not applied: this policy is invalid; the gateway keeps its previous configuration"
                .to_string(),
        ),
        Ready::Held { blockers } => (
            "False",
            "ConfigurationHeld",
            format!(
                "not applied: the gateway keeps its previous configuration until these are fixed: {}",
                blockers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Ready::NotWritten { message } => ("False", "WasmPluginNotWritten", message.clone()),
    };
    let shadowed = match &verdict.shadowed {
        None => (
            "Unknown",
            "NotAnalysed",
            "the configuration did not compile".to_string(),
        ),
        Some(rules) if rules.is_empty() => (
            "False",
            "NotShadowed",
            "every rule can decide requests no earlier tier decides".to_string(),
        ),
        Some(rules) => (
            "True",
            "Shadowed",
            rules
                .iter()
                .map(|r| format!("rule {} ({}) is unreachable: {}", r.rule, r.field, r.by))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    (accepted, ready, shadowed)
}

/// How a status write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Updated,
    /// The object changed generation (or went away) meanwhile: the next compilation covers it.
    Stale,
}

/// Patches `status` onto the object `name` (resourceVersion `resource_version`, generation
/// `generation`). On a conflict the object is read again and, if it is still the same
/// generation, the status (with transition times recomputed against the fresh one) is written
/// with the new resourceVersion.
pub async fn write<K>(
    api: &Api<K>,
    name: &str,
    mut resource_version: String,
    generation: Option<i64>,
    verdict: &Verdict,
    mut current: Option<PolicyStatus>,
    current_status: impl Fn(&K) -> Option<PolicyStatus>,
) -> Result<Written, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    const ATTEMPTS: usize = 5;
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .to_string();
        let status = desired(verdict, generation, current.as_ref(), &now);
        let patch = json!({
            "metadata": { "resourceVersion": resource_version },
            "status": status,
        });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(Written::Updated),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let Some(fresh) = api.get_opt(name).await? else {
                    return Ok(Written::Stale);
                };
                if fresh.meta().generation != generation {
                    return Ok(Written::Stale);
                }
                resource_version = fresh.meta().resource_version.clone().unwrap_or_default();
                current = current_status(&fresh);
                last_error = Some(kube::Error::Api(s));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        kube::Error::Api(Box::new(kube::core::Status::failure(
            "conflict", "Conflict",
        )))
    }))
}

/// Whether `current` already says what `wanted` says (transition times aside, since `wanted`
/// keeps them where nothing changed).
pub fn up_to_date(current: Option<&PolicyStatus>, wanted: &PolicyStatus) -> bool {
    current.is_some_and(|c| c == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::PolicyKind;

    fn verdict() -> Verdict {
        Verdict {
            accepted: Ok(()),
            ready: Ready::Applied {
                wasmplugins: vec!["istio-system/egress-filter-http".into()],
            },
            shadowed: Some(vec![]),
        }
    }

    #[test]
    fn transition_times_move_only_when_the_status_changes() {
        let first = desired(&verdict(), Some(1), None, "2025-01-01T00:00:00Z");
        assert_eq!(first.observed_generation, Some(1));
        assert!(first
            .conditions
            .iter()
            .all(|c| c.last_transition_time == "2025-01-01T00:00:00Z"
                && c.observed_generation == Some(1)));
        let types: Vec<&str> = first.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [ACCEPTED, READY, SHADOWED]);

        let mut held = verdict();
        held.ready = Ready::Held {
            blockers: vec![PolicyRef {
                kind: PolicyKind::EgressPolicy,
                namespace: Some("team-a".into()),
                name: "broken".into(),
            }],
        };
        let second = desired(&held, Some(2), Some(&first), "2025-01-02T00:00:00Z");
        let by_type = |s: &PolicyStatus, t: &str| {
            s.conditions.iter().find(|c| c.type_ == t).cloned().unwrap()
        };
        assert_eq!(
            by_type(&second, ACCEPTED).last_transition_time,
            "2025-01-01T00:00:00Z"
        );
        let ready = by_type(&second, READY);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "ConfigurationHeld");
        assert_eq!(ready.last_transition_time, "2025-01-02T00:00:00Z");
        assert!(ready.message.contains("EgressPolicy team-a/broken"));
        assert!(up_to_date(
            Some(&second),
            &desired(&held, Some(2), Some(&second), "2025-01-03T00:00:00Z")
        ));
    }

    #[test]
    fn invalid_and_shadowed_say_where_and_why() {
        let v = Verdict {
            accepted: Err((
                "spec.rules[0].action".into(),
                "Pass is only allowed in the Admin tier".into(),
            )),
            ready: Ready::Invalid,
            shadowed: None,
        };
        let s = desired(&v, Some(3), None, "2025-01-01T00:00:00Z");
        assert_eq!(s.conditions[0].reason, "Invalid");
        assert_eq!(
            s.conditions[0].message,
            "spec.rules[0].action: Pass is only allowed in the Admin tier"
        );
        assert_eq!(s.conditions[2].status, "Unknown");
        let v = Verdict {
            shadowed: Some(vec![Shadowed {
                rule: "paste".into(),
                field: "spec.rules[1]".into(),
                by: "denied first by ClusterEgressPolicy block-paste priority 10, rule paste-sites"
                    .into(),
            }]),
            ..verdict()
        };
        let s = desired(&v, Some(1), None, "2025-01-01T00:00:00Z");
        assert_eq!(s.conditions[2].status, "True");
        assert_eq!(
            s.conditions[2].message,
            "rule paste (spec.rules[1]) is unreachable: denied first by ClusterEgressPolicy block-paste priority 10, rule paste-sites"
        );
    }
}
