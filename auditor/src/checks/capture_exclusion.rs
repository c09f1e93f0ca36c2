//! `capture-exclusion`: outbound capture narrowed by istio-init args, istio-cni annotations or
//! interception mode NONE. One finding per workload, graded by the broadest narrowing.

use serde_json::json;

use super::workload_finding;
use crate::capture::{CaptureConfig, CaptureError, CaptureSource, Cidr, Narrowing};
use crate::finding::{Finding, Severity};
use crate::rules::CAPTURE_EXCLUSION;
use crate::snapshot::Workload;

/// Destination ports that carry most internet egress: excluding them lets nearly all of it out.
const BULK_EGRESS_PORTS: [u16; 2] = [443, 80];

/// The primary pod interface: excluding it excludes everything.
const PRIMARY_INTERFACE: &str = "eth0";

/// How bad one narrowing is, and a sentence saying what escapes.
pub fn grade(n: &Narrowing) -> (Severity, String) {
    match n {
        Narrowing::NoInterception => (
            Severity::Critical,
            "interception mode NONE: no traffic is sent to the sidecar".to_string(),
        ),
        Narrowing::RulesNotApplied { flags } => (
            Severity::Critical,
            format!(
                "istio-init runs with {}: no capture rules are written",
                flags.join(" ")
            ),
        ),
        Narrowing::IncludedRangesOnly {
            ranges,
            still_captured_ports,
        } => {
            let v4_all = ranges.iter().any(|c| c.is_everything() && c.is_ipv4());
            let ports = if still_captured_ports.is_empty() {
                String::new()
            } else {
                format!(" (except ports {})", join(still_captured_ports))
            };
            if ranges.is_empty() {
                (
                    Severity::Critical,
                    format!("no outbound address range is captured (-i \"\"){ports}"),
                )
            } else if v4_all {
                (
                    Severity::Medium,
                    format!(
                        "only {} is captured: IPv6 destinations go out directly{ports}",
                        join(ranges)
                    ),
                )
            } else {
                (
                    Severity::Critical,
                    format!(
                        "only {} is captured: every other destination goes out directly{ports}",
                        join(ranges)
                    ),
                )
            }
        }
        Narrowing::ExcludedRanges { ranges } => {
            let severity = ranges
                .iter()
                .map(range_severity)
                .max()
                .unwrap_or(Severity::Low);
            (
                severity,
                format!("destinations {} are excluded from capture", join(ranges)),
            )
        }
        Narrowing::ExcludedPorts { ports } => {
            let severity = if ports.iter().any(|p| BULK_EGRESS_PORTS.contains(p)) {
                Severity::Critical
            } else {
                Severity::High
            };
            (
                severity,
                format!(
                    "destination ports {} are excluded from capture, to any host",
                    join(ports)
                ),
            )
        }
        Narrowing::ExcludedInterfaces { interfaces } => {
            let severity = if interfaces.iter().any(|i| i == PRIMARY_INTERFACE) {
                Severity::Critical
            } else {
                Severity::High
            };
            (
                severity,
                format!(
                    "traffic through interfaces {} is not captured",
                    interfaces.join(", ")
                ),
            )
        }
        Narrowing::ExcludedOwnerGroups { groups } => (
            Severity::High,
            format!(
                "processes in groups {} are not captured (ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE)",
                groups.join(", ")
            ),
        ),
        Narrowing::IncludedOwnerGroupsOnly { groups } => (
            Severity::Critical,
            format!(
                "only processes in groups {} are captured (ISTIO_OUTBOUND_OWNER_GROUPS)",
                groups.join(", ")
            ),
        ),
    }
}

/// An excluded range: all addresses is critical, a wide public range high, a narrow public range
/// medium, private/loopback/link-local space low.
fn range_severity(c: &Cidr) -> Severity {
    if c.is_everything() {
        Severity::Critical
    } else if c.is_non_public() {
        Severity::Low
    } else if (c.is_ipv4() && c.prefix() <= 8) || (!c.is_ipv4() && c.prefix() <= 32) {
        Severity::High
    } else {
        Severity::Medium
    }
}

/// Comma-joined, each value once (two CIDRs can mask to the same network).
fn join<T: ToString>(items: &[T]) -> String {
    let mut seen = Vec::new();
    for s in items.iter().map(ToString::to_string) {
        if !seen.contains(&s) {
            seen.push(s);
        }
    }
    seen.join(",")
}

fn source_description(cfg: &CaptureConfig) -> (Option<String>, String) {
    match &cfg.source {
        CaptureSource::InitContainer { container } => (
            Some(container.clone()),
            format!("{container} (istio-iptables args and environment)"),
        ),
        CaptureSource::CniAnnotations => (
            None,
            "traffic.sidecar.istio.io annotations (istio-cni)".to_string(),
        ),
        CaptureSource::InterceptionDisabled => (
            None,
            "annotation sidecar.istio.io/interceptionMode: NONE".to_string(),
        ),
        CaptureSource::Gateway => (None, "gateway".to_string()),
        CaptureSource::Predicted {
            init_container: Some(c),
        } => (
            Some(c.clone()),
            format!("the pod's own {c} args, which the injector keeps"),
        ),
        CaptureSource::Predicted {
            init_container: None,
        } => (
            None,
            "the pod's traffic.sidecar.istio.io annotations".to_string(),
        ),
    }
}

pub fn capture_exclusion(w: &Workload) -> Option<Finding> {
    capture_exclusion_from(w, CaptureConfig::from_pod(&w.spec, &w.meta))
}

/// capture-exclusion on the pod Istio will make of a pod it has not injected yet.
pub fn predicted_capture_exclusion(w: &Workload) -> Option<Finding> {
    capture_exclusion_from(w, CaptureConfig::predict(&w.spec, &w.meta).map(Some))
}

fn capture_exclusion_from(
    w: &Workload,
    capture: Result<Option<CaptureConfig>, CaptureError>,
) -> Option<Finding> {
    let predicted =
        matches!(&capture, Ok(Some(c)) if matches!(c.source, CaptureSource::Predicted { .. }));
    match capture {
        Ok(None) => None,
        Err(e) => {
            let what = if matches!(e, CaptureError::BadAnnotation { .. }) {
                "capture annotations are invalid (the injector and istio-cni reject them)"
            } else {
                "capture settings cannot be read, so what the sidecar sees is unknown"
            };
            Some(workload_finding(
                CAPTURE_EXCLUSION,
                Severity::High,
                w,
                e.container(),
                format!("{what}: {e}"),
                json!({"unparsable": true, "error": e.to_string()}),
            ))
        }
        Ok(Some(cfg)) => {
            let narrowings = cfg.outbound_narrowings();
            if narrowings.is_empty() {
                return None;
            }
            let graded: Vec<(Severity, String)> = narrowings.iter().map(grade).collect();
            let severity = graded
                .iter()
                .map(|(s, _)| *s)
                .max()
                .unwrap_or(Severity::Low);
            let (container, from) = source_description(&cfg);
            let message = format!(
                "{} by {from}: {}",
                if predicted {
                    "once injected, outbound capture will be narrowed"
                } else {
                    "outbound capture is narrowed"
                },
                graded
                    .iter()
                    .map(|(_, m)| m.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            let detail: Vec<serde_json::Value> = narrowings
                .iter()
                .zip(&graded)
                .map(|(n, (s, _))| {
                    let mut v = serde_json::to_value(n).unwrap_or(serde_json::Value::Null);
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("severity".into(), json!(s));
                    }
                    v
                })
                .collect();
            Some(workload_finding(
                CAPTURE_EXCLUSION,
                severity,
                w,
                container.as_deref(),
                message,
                json!({
                    "source": cfg.source,
                    "narrowings": detail,
                    "interceptionMode": cfg.interception_mode,
                }),
            ))
        }
    }
}
