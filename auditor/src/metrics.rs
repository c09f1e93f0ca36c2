//! Prometheus metrics: findings by rule and severity (and by namespace), scans, API errors and
//! sink failures.
//!
//! The watch controller serves them on `/metrics`; a one-shot scan can write them to a file for
//! node_exporter's textfile collector (`--sink metrics=PATH`).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::finding::Finding;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct FindingLabels {
    rule: String,
    severity: String,
}

/// `finding_namespace`, not `namespace`: Prometheus' Kubernetes scrape configurations set
/// `namespace` to the auditor's own, which would rename this one to `exported_namespace`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct NamespaceFindingLabels {
    finding_namespace: String,
    rule: String,
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiErrorLabels {
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

struct Inner {
    registry: Registry,
    findings: Family<FindingLabels, Gauge>,
    /// Label sets ever set, so a fixed rule drops to 0 instead of vanishing (a vanished series
    /// looks like missing data, not like "fixed"); its lock also keeps a scrape from seeing half
    /// of a judgement.
    seen: Mutex<Seen>,
    namespace_findings: Family<NamespaceFindingLabels, Gauge>,
    scans: Family<ResultLabels, Counter>,
    api_errors: Family<ApiErrorLabels, Counter>,
    sink_failures: Family<SinkLabels, Counter>,
    last_scan: Gauge<f64, AtomicU64>,
    scan_duration: Gauge<f64, AtomicU64>,
    objects: Gauge,
    /// Watch mode only (registered by [`Metrics::for_watch`]).
    pods_rejudged: Counter,
    pods_context_rejudged: Counter,
}

/// Label sets ever reported, per family.
#[derive(Default)]
struct Seen {
    findings: BTreeSet<FindingLabels>,
    namespace_findings: BTreeSet<NamespaceFindingLabels>,
}

/// Cheap to clone; all clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// The series every mode exports.
    pub fn new() -> Metrics {
        Metrics::build(false)
    }

    /// The series of [`Metrics::new`] and those of the watch controller's incremental
    /// judgement (`watch_pods_rejudged_total`, `watch_pods_context_rejudged_total`).
    pub fn for_watch() -> Metrics {
        Metrics::build(true)
    }

    fn build(watch: bool) -> Metrics {
        let mut registry = Registry::with_prefix("egress_auditor");
        let findings = Family::<FindingLabels, Gauge>::default();
        registry.register(
            "findings",
            "Current findings by rule and severity",
            findings.clone(),
        );
        let namespace_findings = Family::<NamespaceFindingLabels, Gauge>::default();
        registry.register(
            "namespace_findings",
            "Current findings by namespace (finding_namespace), rule and severity",
            namespace_findings.clone(),
        );
        let scans = Family::<ResultLabels, Counter>::default();
        registry.register(
            "scans",
            "Judgements of the whole snapshot, by result",
            scans.clone(),
        );
        let api_errors = Family::<ApiErrorLabels, Counter>::default();
        registry.register(
            "api_errors",
            "Failed Kubernetes API calls (each attempt), by resource and HTTP code",
            api_errors.clone(),
        );
        let sink_failures = Family::<SinkLabels, Counter>::default();
        registry.register(
            "sink_failures",
            "Sink deliveries that failed, by sink",
            sink_failures.clone(),
        );
        let last_scan = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_scan_timestamp_seconds",
            "Unix time of the last completed judgement",
            last_scan.clone(),
        );
        let scan_duration = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_scan_duration_seconds",
            "How long the last judgement took",
            scan_duration.clone(),
        );
        let objects = Gauge::default();
        registry.register(
            "judged_workloads",
            "Pods and pod templates in the last judgement",
            objects.clone(),
        );
        let pods_rejudged = Counter::default();
        let pods_context_rejudged = Counter::default();
        if watch {
            registry.register(
                "watch_pods_rejudged",
                "Pods watch mode judged (all rules) because they were new or had changed",
                pods_rejudged.clone(),
            );
            registry.register(
                "watch_pods_context_rejudged",
                "Unchanged pods whose namespace-dependent rules watch mode ran again, because their namespace or a cluster-wide input changed",
                pods_context_rejudged.clone(),
            );
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                findings,
                seen: Mutex::new(Seen::default()),
                namespace_findings,
                scans,
                api_errors,
                sink_failures,
                last_scan,
                scan_duration,
                objects,
                pods_rejudged,
                pods_context_rejudged,
            }),
        }
    }

    /// Replaces the finding counts with those of `findings`.
    pub fn set_findings(&self, findings: &[Finding]) {
        let mut seen = self.inner.seen.lock().unwrap_or_else(|e| e.into_inner());
        self.replace_findings(&mut seen, findings);
    }

    fn replace_findings(&self, seen: &mut Seen, findings: &[Finding]) {
        let mut counts = std::collections::BTreeMap::<FindingLabels, i64>::new();
        let mut by_namespace = std::collections::BTreeMap::<NamespaceFindingLabels, i64>::new();
        for f in findings {
            *counts
                .entry(FindingLabels {
                    rule: f.rule.clone(),
                    severity: f.severity.as_str().to_string(),
                })
                .or_default() += 1;
            *by_namespace
                .entry(NamespaceFindingLabels {
                    finding_namespace: f.group_namespace().to_string(),
                    rule: f.rule.clone(),
                    severity: f.severity.as_str().to_string(),
                })
                .or_default() += 1;
        }
        publish(&self.inner.findings, &mut seen.findings, counts);
        publish(
            &self.inner.namespace_findings,
            &mut seen.namespace_findings,
            by_namespace,
        );
    }

    /// Records one judgement.
    pub fn scan_done(&self, ok: bool, workloads: usize, duration: std::time::Duration) {
        let _update = self.inner.seen.lock().unwrap_or_else(|e| e.into_inner());
        self.record_scan(ok, workloads, duration);
    }

    /// Publishes a whole judgement at once: its findings and the scan that produced them. A
    /// scrape sees either the previous judgement or this one, never the findings of one with
    /// the scan count of the other.
    pub fn judged(
        &self,
        findings: &[Finding],
        ok: bool,
        workloads: usize,
        duration: std::time::Duration,
    ) {
        let mut seen = self.inner.seen.lock().unwrap_or_else(|e| e.into_inner());
        self.replace_findings(&mut seen, findings);
        self.record_scan(ok, workloads, duration);
    }

    fn record_scan(&self, ok: bool, workloads: usize, duration: std::time::Duration) {
        let result = if ok { "success" } else { "error" };
        self.inner
            .scans
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        self.inner.scan_duration.set(duration.as_secs_f64());
        self.inner
            .objects
            .set(i64::try_from(workloads).unwrap_or(i64::MAX));
        let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
        self.inner.last_scan.set(now);
    }

    /// Records what one incremental watch judgement judged again: `changed` pods (new or
    /// changed: every rule) and `context` unchanged pods (their namespace-dependent rules).
    pub fn pods_rejudged(&self, changed: usize, context: usize) {
        self.inner.pods_rejudged.inc_by(changed as u64);
        self.inner.pods_context_rejudged.inc_by(context as u64);
    }

    pub fn api_error(&self, resource: &str, code: &str) {
        self.inner
            .api_errors
            .get_or_create(&ApiErrorLabels {
                resource: resource.to_string(),
                code: code.to_string(),
            })
            .inc();
    }

    pub fn sink_failure(&self, sink: &str) {
        self.inner
            .sink_failures
            .get_or_create(&SinkLabels {
                sink: sink.to_string(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        // Not in the middle of publishing a judgement.
        let _update = self.inner.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    /// Writes the exposition to `path` atomically (temporary file, then rename), so a collector
    /// never reads half a file.
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("prom.tmp");
        std::fs::write(&tmp, self.encode())?;
        std::fs::rename(&tmp, path)
    }
}

/// Sets each gauge of `counts`, and to 0 every label set seen before and absent now.
fn publish<L>(
    family: &Family<L, Gauge>,
    seen: &mut BTreeSet<L>,
    counts: std::collections::BTreeMap<L, i64>,
) where
    L: Clone
        + Ord
        + std::hash::Hash
        + Eq
        + EncodeLabelSet
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    for labels in seen.iter() {
        if !counts.contains_key(labels) {
            family.get_or_create(labels).set(0);
        }
    }
    for (labels, n) in counts {
        family.get_or_create(&labels).set(n);
        seen.insert(labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Severity;

    fn finding(rule: &str, severity: Severity) -> Finding {
        Finding {
            rule: rule.into(),
            severity,
            kind: "Pod".into(),
            namespace: Some("ns".into()),
            name: "p".into(),
            container: None,
            message: String::new(),
            evidence: serde_json::json!({}),
        }
    }

    #[test]
    fn a_scrape_never_sees_half_a_judgement() {
        let m = Metrics::new();
        let value = |text: &str, series: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        };
        std::thread::scope(|scope| {
            let publisher = m.clone();
            scope.spawn(move || {
                // Judgement n has n findings and is the n-th scan.
                for n in 1..=300 {
                    let findings = vec![finding("host-network", Severity::High); n];
                    publisher.judged(&findings, true, n, std::time::Duration::ZERO);
                }
            });
            for _ in 0..300 {
                let text = m.encode();
                let findings = value(
                    &text,
                    r#"egress_auditor_findings{rule="host-network",severity="high"} "#,
                );
                let scans = value(&text, r#"egress_auditor_scans_total{result="success"} "#);
                assert_eq!(findings, scans, "{text}");
            }
        });
    }

    #[test]
    fn findings_are_counted_and_fixed_ones_drop_to_zero() {
        let m = Metrics::new();
        m.set_findings(&[
            finding("host-network", Severity::High),
            finding("host-network", Severity::High),
            finding("privileged", Severity::Critical),
        ]);
        let text = m.encode();
        assert!(
            text.contains(r#"egress_auditor_findings{rule="host-network",severity="high"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"egress_auditor_findings{rule="privileged",severity="critical"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"egress_auditor_namespace_findings{finding_namespace="ns",rule="host-network",severity="high"} 2"#),
            "{text}"
        );
        m.set_findings(&[finding("privileged", Severity::Critical)]);
        let text = m.encode();
        assert!(
            text.contains(r#"egress_auditor_findings{rule="host-network",severity="high"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"egress_auditor_namespace_findings{finding_namespace="ns",rule="host-network",severity="high"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn counters_render_with_total_suffix() {
        let m = Metrics::new();
        m.api_error("pods", "429");
        m.sink_failure("webhook");
        m.scan_done(true, 3, std::time::Duration::from_millis(5));
        let text = m.encode();
        assert!(
            text.contains(r#"egress_auditor_api_errors_total{resource="pods",code="429"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"egress_auditor_sink_failures_total{sink="webhook"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"egress_auditor_scans_total{result="success"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("watch_pods_rejudged"), "{text}");
    }

    #[test]
    fn watch_counts_rejudged_pods() {
        let m = Metrics::for_watch();
        m.pods_rejudged(50_000, 0);
        m.pods_rejudged(1, 500);
        let text = m.encode();
        assert!(
            text.contains("egress_auditor_watch_pods_rejudged_total 50001\n"),
            "{text}"
        );
        assert!(
            text.contains("egress_auditor_watch_pods_context_rejudged_total 500\n"),
            "{text}"
        );
    }
}
