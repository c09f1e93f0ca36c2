//! The settings every sink shares: which mode delivers, how long alerts live, how often Events
//! are refreshed, who reports, and how hard HTTP deliveries are retried.

use std::time::Duration;

use crate::kube_client::RetryPolicy;
use crate::snapshot::Origin;

/// Settings shared by the sinks.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// Which mode delivers: decides report names and which alerts a run may resolve.
    pub origin: Origin,
    /// `endsAt` of a firing alert is now + this: longer than the time between two runs, so an
    /// alert stays firing between CronJob runs and ends by itself if the auditor stops running.
    pub alert_ttl: Duration,
    /// An Event for a finding already reported is updated (series count) at most this often.
    pub event_refresh: Duration,
    /// `reportingInstance` of Events (the pod name in the cluster).
    pub reporting_instance: String,
    /// Retries of webhook and Alertmanager posts.
    pub http_retry: RetryPolicy,
}

impl Default for SinkSettings {
    fn default() -> Self {
        SinkSettings {
            origin: Origin::Scan,
            alert_ttl: Duration::from_secs(3 * 3600),
            event_refresh: Duration::from_secs(3600),
            reporting_instance: default_instance(),
            http_retry: RetryPolicy {
                initial_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(5),
                request_timeout: Duration::from_secs(15),
                deadline: Duration::from_secs(45),
            },
        }
    }
}

/// The pod name from the downward API (`POD_NAME`), else the host name.
pub fn default_instance() -> String {
    let name = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "egress-auditor".to_string());
    name.chars().take(128).collect()
}
