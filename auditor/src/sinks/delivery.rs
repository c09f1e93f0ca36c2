//! Delivering findings to the outside world: PolicyReports, Events, Alertmanager, a webhook and a
//! metrics file, in any combination (`--sink` repeated).
//!
//! A sink that fails never loses findings: every sink is tried, failures are collected and the
//! caller still prints the findings (and exits 3).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use serde_json::Value;

use super::settings::SinkSettings;
use super::{alertmanager, events, http, policyreport, webhook};
use crate::finding::Finding;
use crate::kube_client::ApiContext;
use crate::metrics::Metrics;
use crate::snapshot::ScanScope;

/// One `--sink` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// `policyreport`: a wgpolicyk8s.io PolicyReport per namespace plus a ClusterPolicyReport.
    PolicyReport,
    /// `events`: events.k8s.io/v1 Warning Events on the offending objects.
    Events,
    /// `alertmanager=URL`: alerts posted to Alertmanager's API v2.
    Alertmanager(String),
    /// `webhook=URL`: the JSON findings document POSTed.
    Webhook(String),
    /// `metrics=PATH`: the Prometheus exposition written to a file (textfile collector).
    Metrics(PathBuf),
}

impl SinkSpec {
    pub fn name(&self) -> &'static str {
        match self {
            SinkSpec::PolicyReport => "policyreport",
            SinkSpec::Events => "events",
            SinkSpec::Alertmanager(_) => "alertmanager",
            SinkSpec::Webhook(_) => "webhook",
            SinkSpec::Metrics(_) => "metrics",
        }
    }

    /// Whether the sink writes to the Kubernetes API (and so needs a cluster connection).
    pub fn needs_cluster(&self) -> bool {
        matches!(self, SinkSpec::PolicyReport | SinkSpec::Events)
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkSpec::Alertmanager(u) | SinkSpec::Webhook(u) => write!(f, "{}={u}", self.name()),
            SinkSpec::Metrics(p) => write!(f, "metrics={}", p.display()),
            _ => f.write_str(self.name()),
        }
    }
}

fn http_url(sink: &str, url: &str) -> Result<String, String> {
    let ok = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    if ok {
        Ok(url.to_string())
    } else {
        Err(format!(
            "--sink {sink}=URL: {url:?} is not an http:// or https:// URL"
        ))
    }
}

impl FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (s.trim(), None),
        };
        match (name, value) {
            ("policyreport", None) => Ok(SinkSpec::PolicyReport),
            ("events", None) => Ok(SinkSpec::Events),
            ("alertmanager", Some(url)) => http_url(name, url).map(SinkSpec::Alertmanager),
            ("webhook", Some(url)) => http_url(name, url).map(SinkSpec::Webhook),
            ("metrics", Some(path)) if !path.is_empty() => Ok(SinkSpec::Metrics(PathBuf::from(path))),
            ("policyreport" | "events", Some(_)) => Err(format!("--sink {name} takes no value")),
            ("alertmanager" | "webhook", None) => Err(format!("--sink {name} needs a URL: {name}=URL")),
            ("metrics", _) => Err("--sink metrics needs a file: metrics=PATH".to_string()),
            _ => Err(format!(
                "unknown sink {name:?} (expected policyreport, events, alertmanager=URL, webhook=URL or metrics=PATH)"
            )),
        }
    }
}

/// Why building the sinks failed (bad combination of flags).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    #[error("--sink {0} writes to the Kubernetes API and needs --cluster (or watch mode)")]
    NeedsCluster(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// One sink that did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkFailure {
    pub sink: String,
    pub error: String,
}

impl fmt::Display for SinkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sink {} failed: {}", self.sink, self.error)
    }
}

/// What a run hands to the sinks.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub findings: &'a [Finding],
    /// The JSON findings document (what `--format json` prints), for the webhook.
    pub document: &'a Value,
    pub scope: &'a ScanScope,
}

/// The configured sinks, ready to deliver.
pub struct Sinks {
    specs: Vec<SinkSpec>,
    api: Option<ApiContext>,
    http: reqwest::Client,
    settings: SinkSettings,
    metrics: Metrics,
}

impl Sinks {
    pub fn new(
        specs: Vec<SinkSpec>,
        api: Option<ApiContext>,
        settings: SinkSettings,
        metrics: Metrics,
    ) -> Result<Sinks, SinkError> {
        if api.is_none() {
            if let Some(s) = specs.iter().find(|s| s.needs_cluster()) {
                return Err(SinkError::NeedsCluster(s.to_string()));
            }
        }
        let http = http::client(&settings.http_retry).map_err(SinkError::Http)?;
        Ok(Sinks {
            specs,
            api,
            http,
            settings,
            metrics,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub fn specs(&self) -> &[SinkSpec] {
        &self.specs
    }

    /// Delivers to every sink (concurrently); returns the ones that failed.
    pub async fn deliver(&self, delivery: Delivery<'_>) -> Vec<SinkFailure> {
        let now = jiff::Timestamp::now();
        let runs = self.specs.iter().map(|spec| async move {
            let started = Instant::now();
            let result = self.deliver_one(spec, delivery, now).await;
            match &result {
                Ok(()) => tracing::info!(sink = spec.name(), elapsed = ?started.elapsed(), "sink delivered"),
                Err(e) => {
                    self.metrics.sink_failure(spec.name());
                    tracing::error!(sink = spec.name(), error = %e, "sink failed");
                }
            }
            result.err().map(|error| SinkFailure {
                sink: spec.to_string(),
                error,
            })
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn deliver_one(
        &self,
        spec: &SinkSpec,
        d: Delivery<'_>,
        now: jiff::Timestamp,
    ) -> Result<(), String> {
        match spec {
            SinkSpec::PolicyReport => {
                let api = self.api.as_ref().ok_or("no cluster connection")?;
                policyreport::publish(api, d.findings, d.scope, &self.settings.origin, now)
                    .await
                    .map(|_| ())
            }
            SinkSpec::Events => {
                let api = self.api.as_ref().ok_or("no cluster connection")?;
                events::publish(api, d.findings, d.scope, &self.settings, now)
                    .await
                    .map(|_| ())
            }
            SinkSpec::Alertmanager(url) => {
                alertmanager::publish(&self.http, url, d.findings, d.scope, &self.settings, now)
                    .await
                    .map(|_| ())
            }
            SinkSpec::Webhook(url) => {
                webhook::publish(&self.http, url, d.document, &self.settings.http_retry).await
            }
            SinkSpec::Metrics(path) => {
                // The caller has already set the finding counts; this writes them out.
                self.metrics
                    .write_to(path)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_specs_parse() {
        assert_eq!(
            "policyreport".parse::<SinkSpec>(),
            Ok(SinkSpec::PolicyReport)
        );
        assert_eq!("events".parse::<SinkSpec>(), Ok(SinkSpec::Events));
        assert_eq!(
            "alertmanager=http://am:9093".parse::<SinkSpec>(),
            Ok(SinkSpec::Alertmanager("http://am:9093".into()))
        );
        assert_eq!(
            "webhook=https://hooks.example/x".parse::<SinkSpec>(),
            Ok(SinkSpec::Webhook("https://hooks.example/x".into()))
        );
        assert_eq!(
            "metrics=/var/lib/node/auditor.prom".parse::<SinkSpec>(),
            Ok(SinkSpec::Metrics("/var/lib/node/auditor.prom".into()))
        );
        assert!("alertmanager"
            .parse::<SinkSpec>()
            .unwrap_err()
            .contains("needs a URL"));
        assert!("webhook=ftp://x"
            .parse::<SinkSpec>()
            .unwrap_err()
            .contains("not an http"));
        assert!("events=1"
            .parse::<SinkSpec>()
            .unwrap_err()
            .contains("takes no value"));
        assert!("slack"
            .parse::<SinkSpec>()
            .unwrap_err()
            .contains("unknown sink"));
    }

    #[test]
    fn cluster_sinks_need_a_cluster() {
        let err = Sinks::new(
            vec![SinkSpec::Events],
            None,
            SinkSettings::default(),
            Metrics::new(),
        )
        .err();
        assert_eq!(err, Some(SinkError::NeedsCluster("events".into())));
        assert!(Sinks::new(
            vec![SinkSpec::Webhook("http://127.0.0.1:1/x".into())],
            None,
            SinkSettings::default(),
            Metrics::new()
        )
        .is_ok());
    }
}
