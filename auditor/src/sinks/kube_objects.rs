//! What the sinks that write Kubernetes objects (PolicyReports, Events) share: the label that
//! marks the auditor's own objects, and how they point at the object a finding is about.

/// Label on everything the auditor writes, so it can find its own objects again.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "egress-auditor";

/// The apiVersion of a kind the checks report on.
pub fn api_version_of(kind: &str) -> &'static str {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => "apps/v1",
        "Job" | "CronJob" => "batch/v1",
        "NetworkPolicy" => "networking.k8s.io/v1",
        _ => "v1",
    }
}
