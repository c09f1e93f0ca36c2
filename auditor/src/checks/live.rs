//! Rules only a live cluster can answer: `sidecar-not-running` reads pod status, and
//! `egress-filter-missing` reads the WasmPlugin/EnvoyFilter objects and the egress gateway pods.
//!
//! Still pure functions of a [`Snapshot`]; "now" comes in through [`LiveCheckOptions`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};
use serde_json::{json, Value};

use super::workload_finding;
use crate::finding::{Finding, Severity};
use crate::istio::{self, ProxyRole};
use crate::rules::{EGRESS_FILTER_MISSING, SIDECAR_NOT_RUNNING};
use crate::snapshot::{Snapshot, Workload, WorkloadKind, MESH_CONFIG_NAMESPACE};

/// Label Gateway API puts on the pods of a Gateway (what a WasmPlugin `targetRef` selects).
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Settings of the live-only rules.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveCheckOptions {
    /// Labels every egress gateway pod carries (`istio=egressgateway` by default).
    pub egress_gateway_selector: BTreeMap<String, String>,
    /// Istio's root namespace: WasmPlugins and EnvoyFilters there apply mesh-wide.
    pub root_namespace: String,
    /// Substrings of a WasmPlugin `url`/`pluginName` (or of an EnvoyFilter patch) that identify
    /// the egress filter module.
    pub filter_markers: Vec<String>,
    /// A proxy that started less than this long ago may still be warming up: not yet reported
    /// as not ready.
    pub startup_grace: std::time::Duration,
    /// Whether "no egress gateway pod at all" is a finding. Off when the scan did not look where
    /// the gateway runs (a scan restricted to other namespaces).
    pub report_absent_gateway: bool,
    pub now: jiff::Timestamp,
}

impl Default for LiveCheckOptions {
    fn default() -> Self {
        LiveCheckOptions {
            egress_gateway_selector: [("istio".to_string(), "egressgateway".to_string())]
                .into_iter()
                .collect(),
            root_namespace: MESH_CONFIG_NAMESPACE.to_string(),
            filter_markers: vec!["egress-filter".into(), "egress_filter".into()],
            startup_grace: std::time::Duration::from_secs(60),
            report_absent_gateway: true,
            now: jiff::Timestamp::now(),
        }
    }
}

/// Parses `k=v,k2=v2` (the form of `--egress-gateway-selector`).
pub fn parse_selector(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (k, v) = term
            .split_once('=')
            .ok_or_else(|| format!("selector term {term:?} is not key=value"))?;
        if k.trim().is_empty() {
            return Err(format!("selector term {term:?} has an empty key"));
        }
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    if out.is_empty() {
        return Err("selector is empty".into());
    }
    Ok(out)
}

/// Both live-only rules over the snapshot.
pub fn check_live(snapshot: &Snapshot, opts: &LiveCheckOptions) -> Vec<Finding> {
    let mut out: Vec<Finding> = snapshot
        .workloads
        .iter()
        .filter_map(|w| sidecar_not_running(w, opts))
        .collect();
    out.extend(egress_filter_missing(snapshot, opts));
    out
}

fn container_status<'a>(
    statuses: &'a Option<Vec<ContainerStatus>>,
    name: &str,
) -> Option<&'a ContainerStatus> {
    statuses
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .find(|s| s.name == name)
}

fn is_running(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.running.is_some())
}

/// `sidecar-not-running`: the injected proxy is not ready, terminated or waiting (restarting)
/// while the pod's application containers run.
pub fn sidecar_not_running(w: &Workload, opts: &LiveCheckOptions) -> Option<Finding> {
    if w.kind != WorkloadKind::Pod {
        return None;
    }
    let status: &PodStatus = w.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let proxy = istio::find_proxy(&w.spec)?;
    // Gateways are the proxy itself; there is no application to run around it.
    if proxy.role == Some(ProxyRole::Gateway)
        || istio::annotation(&w.meta, istio::STATUS_ANNOTATION).is_none()
    {
        return None;
    }
    let running_apps: Vec<&str> = status
        .container_statuses
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter(|s| {
            !istio::is_istio_container(&w.meta, &s.name) && s.name != istio::PROXY_CONTAINER
        })
        .filter(|s| is_running(s))
        .map(|s| s.name.as_str())
        .collect();
    if running_apps.is_empty() {
        return None;
    }
    let proxy_status = if proxy.native {
        container_status(&status.init_container_statuses, istio::PROXY_CONTAINER)
    } else {
        container_status(&status.container_statuses, istio::PROXY_CONTAINER)
    };
    let (severity, problem, evidence) = match proxy_status {
        None => (
            Severity::High,
            "has no status at all".to_string(),
            json!({"proxyStatus": null}),
        ),
        Some(ps) => {
            let state = ps.state.as_ref();
            let evidence = json!({
                "ready": ps.ready,
                "restartCount": ps.restart_count,
                "state": serde_json::to_value(&ps.state).unwrap_or(Value::Null),
                "lastState": serde_json::to_value(&ps.last_state).unwrap_or(Value::Null),
            });
            if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
                (
                    Severity::High,
                    format!(
                        "is terminated (exit code {}{})",
                        t.exit_code,
                        t.reason
                            .as_deref()
                            .map(|r| format!(", {r}"))
                            .unwrap_or_default()
                    ),
                    evidence,
                )
            } else if let Some(wt) = state.and_then(|s| s.waiting.as_ref()) {
                (
                    Severity::High,
                    format!(
                        "is waiting{} after {} restart(s)",
                        wt.reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default(),
                        ps.restart_count
                    ),
                    evidence,
                )
            } else if let Some(r) = state.and_then(|s| s.running.as_ref()) {
                if ps.ready {
                    return None;
                }
                let started = r.started_at.as_ref().map(|t| t.0);
                let warming_up = started.is_some_and(|s| {
                    let age = opts.now.duration_since(s);
                    !age.is_negative() && age.unsigned_abs() < opts.startup_grace
                });
                if warming_up {
                    return None;
                }
                (
                    Severity::Medium,
                    format!("runs but is not ready ({} restart(s))", ps.restart_count),
                    evidence,
                )
            } else {
                (Severity::High, "has no known state".to_string(), evidence)
            }
        }
    };
    let mut evidence = evidence;
    evidence["runningContainers"] = json!(running_apps);
    evidence["nativeSidecar"] = json!(proxy.native);
    Some(workload_finding(
        SIDECAR_NOT_RUNNING,
        severity,
        w,
        Some(istio::PROXY_CONTAINER),
        format!(
            "istio-proxy {problem} while {} run{}: egress policy is not applied to this pod's traffic",
            running_apps.join(", "),
            if running_apps.len() == 1 { "s" } else { "" }
        ),
        evidence,
    ))
}

/// One WasmPlugin or EnvoyFilter that loads the egress filter.
struct FilterLoader<'a> {
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
    fail_open: bool,
    object: &'a Value,
}

impl FilterLoader<'_> {
    fn reference(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

fn contains_marker(text: &str, markers: &[String]) -> bool {
    markers
        .iter()
        .any(|m| !m.is_empty() && text.contains(m.as_str()))
}

/// Whether any string anywhere in `v` contains a marker.
fn mentions_marker(v: &Value, markers: &[String]) -> bool {
    match v {
        Value::String(s) => contains_marker(s, markers),
        Value::Array(a) => a.iter().any(|x| mentions_marker(x, markers)),
        Value::Object(o) => o
            .iter()
            .any(|(k, x)| contains_marker(k, markers) || mentions_marker(x, markers)),
        _ => false,
    }
}

/// Whether an Envoy Wasm config inside an EnvoyFilter patch lets traffic through when the
/// module fails (`fail_open: true` or `failure_policy: FAIL_OPEN`).
fn envoy_fail_open(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().any(envoy_fail_open),
        Value::Object(o) => o.iter().any(|(k, x)| {
            (matches!(k.as_str(), "fail_open" | "failOpen") && x.as_bool() == Some(true))
                || (matches!(k.as_str(), "failure_policy" | "failurePolicy")
                    && x.as_str() == Some("FAIL_OPEN"))
                || envoy_fail_open(x)
        }),
        _ => false,
    }
}

fn labels_subset(want: &Value, labels: &BTreeMap<String, String>) -> bool {
    match want.as_object() {
        None => true,
        Some(m) => m.iter().all(|(k, v)| {
            v.as_str()
                .is_some_and(|v| labels.get(k).map(String::as_str) == Some(v))
        }),
    }
}

fn loaders<'a>(snapshot: &'a Snapshot, opts: &LiveCheckOptions) -> Vec<FilterLoader<'a>> {
    let mut out = Vec::new();
    for obj in &snapshot.extra {
        let kind = obj["kind"].as_str().unwrap_or("");
        let namespace = obj["metadata"]["namespace"].as_str().unwrap_or("");
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        let spec = &obj["spec"];
        let (loads, fail_open) = match kind {
            "WasmPlugin" => {
                let url = spec["url"].as_str().unwrap_or("");
                let plugin = spec["pluginName"].as_str().unwrap_or("");
                (
                    contains_marker(url, &opts.filter_markers)
                        || contains_marker(plugin, &opts.filter_markers),
                    spec["failStrategy"].as_str() == Some("FAIL_OPEN"),
                )
            }
            "EnvoyFilter" => {
                let patches = &spec["configPatches"];
                (
                    mentions_marker(patches, &opts.filter_markers),
                    envoy_fail_open(patches),
                )
            }
            _ => continue,
        };
        if loads {
            out.push(FilterLoader {
                kind,
                namespace,
                name,
                fail_open,
                object: obj,
            });
        }
    }
    out
}

/// Whether a WasmPlugin/EnvoyFilter applies to a pod (Istio's selection rules: same namespace or
/// the root namespace; `selector`/`workloadSelector` labels, or a Gateway `targetRef`).
fn selects(loader: &FilterLoader<'_>, w: &Workload, root_namespace: &str) -> bool {
    let same_ns = loader.namespace == w.namespace;
    if !same_ns && loader.namespace != root_namespace {
        return false;
    }
    let spec = &loader.object["spec"];
    let labels = w.labels();
    match loader.kind {
        "WasmPlugin" => {
            let mut refs: Vec<&Value> = spec["targetRefs"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            if spec["targetRef"].is_object() {
                refs.push(&spec["targetRef"]);
            }
            if !refs.is_empty() {
                // A policy attachment only reaches objects in its own namespace.
                return same_ns
                    && refs.iter().any(|r| {
                        r["kind"].as_str() == Some("Gateway")
                            && r["name"].as_str().is_some_and(|n| {
                                labels.get(GATEWAY_NAME_LABEL).map(String::as_str) == Some(n)
                            })
                    });
            }
            labels_subset(&spec["selector"]["matchLabels"], labels)
        }
        "EnvoyFilter" => labels_subset(&spec["workloadSelector"]["labels"], labels),
        _ => false,
    }
}

/// `egress-filter-missing`: every egress gateway pod must be selected by a WasmPlugin (or
/// EnvoyFilter) that loads the egress filter and does not fail open.
pub fn egress_filter_missing(snapshot: &Snapshot, opts: &LiveCheckOptions) -> Vec<Finding> {
    let loaders = loaders(snapshot, opts);
    let selector_text = opts
        .egress_gateway_selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let gateways: Vec<&Workload> = snapshot
        .workloads
        .iter()
        .filter(|w| w.kind == WorkloadKind::Pod)
        .filter(|w| {
            !matches!(
                w.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter(|w| {
            let labels = w.labels();
            opts.egress_gateway_selector
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect();
    if gateways.is_empty() {
        if !opts.report_absent_gateway {
            return Vec::new();
        }
        return vec![Finding {
            rule: EGRESS_FILTER_MISSING.to_string(),
            severity: Severity::High,
            kind: "Cluster".to_string(),
            namespace: None,
            name: "cluster".to_string(),
            container: None,
            message: format!(
                "no pod matches the egress gateway selector {selector_text}: there is no gateway for the egress filter to run on"
            ),
            evidence: json!({
                "egressGatewaySelector": selector_text,
                "filterLoaders": loaders.iter().map(FilterLoader::reference).collect::<Vec<_>>(),
            }),
        }];
    }
    let mut out = Vec::new();
    for gw in gateways {
        let selecting: Vec<&FilterLoader<'_>> = loaders
            .iter()
            .filter(|l| selects(l, gw, &opts.root_namespace))
            .collect();
        let refs: Vec<String> = selecting.iter().map(|l| l.reference()).collect();
        if selecting.is_empty() {
            out.push(workload_finding(
                EGRESS_FILTER_MISSING,
                Severity::Critical,
                gw,
                None,
                "no WasmPlugin or EnvoyFilter loading the egress filter selects this egress gateway pod: egress traffic is not filtered".to_string(),
                json!({
                    "egressGatewaySelector": selector_text,
                    "filterMarkers": opts.filter_markers,
                    "filterLoadersElsewhere": loaders.iter().map(FilterLoader::reference).collect::<Vec<_>>(),
                }),
            ));
        } else if let Some(open) = selecting.iter().find(|l| l.fail_open) {
            out.push(workload_finding(
                EGRESS_FILTER_MISSING,
                Severity::High,
                gw,
                None,
                format!(
                    "{} loads the egress filter with FAIL_OPEN: when the module fails to load or crashes, egress traffic passes unfiltered",
                    open.reference()
                ),
                json!({"failOpen": open.reference(), "filterLoaders": refs}),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateWaiting, PodSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn opts() -> LiveCheckOptions {
        LiveCheckOptions {
            now: "2025-06-01T12:00:00Z".parse().unwrap(),
            ..LiveCheckOptions::default()
        }
    }

    fn container(name: &str, args: &[&str]) -> Container {
        Container {
            name: name.into(),
            args: Some(args.iter().map(|s| s.to_string()).collect()),
            ..Container::default()
        }
    }

    fn status(name: &str, ready: bool, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready,
            state: Some(state),
            ..ContainerStatus::default()
        }
    }

    fn running(at: &str) -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(at.parse().unwrap())),
            }),
            ..ContainerState::default()
        }
    }

    fn injected_pod(proxy: ContainerStatus, labels: &[(&str, &str)]) -> Workload {
        Workload {
            kind: WorkloadKind::Pod,
            namespace: "shop".into(),
            name: "web".into(),
            meta: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                annotations: Some(
                    [(istio::STATUS_ANNOTATION.to_string(), "{}".to_string())]
                        .into_iter()
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: PodSpec {
                containers: vec![
                    container("app", &[]),
                    container("istio-proxy", &["proxy", "sidecar"]),
                ],
                init_containers: Some(vec![container("istio-init", &["istio-iptables"])]),
                ..PodSpec::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                container_statuses: Some(vec![
                    status("app", true, running("2025-06-01T10:00:00Z")),
                    proxy,
                ]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn ready_proxy_is_fine() {
        let w = injected_pod(
            status("istio-proxy", true, running("2025-06-01T10:00:00Z")),
            &[],
        );
        assert!(sidecar_not_running(&w, &opts()).is_none());
    }

    #[test]
    fn crash_looping_proxy_is_reported() {
        let waiting = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                message: None,
            }),
            ..ContainerState::default()
        };
        let mut ps = status("istio-proxy", false, waiting);
        ps.restart_count = 7;
        let f = sidecar_not_running(&injected_pod(ps, &[]), &opts()).expect("finding");
        assert_eq!(f.rule, SIDECAR_NOT_RUNNING);
        assert_eq!(f.severity, Severity::High);
        assert!(f.message.contains("CrashLoopBackOff"), "{}", f.message);
        assert!(f.message.contains("7 restart"), "{}", f.message);
        assert_eq!(f.evidence["runningContainers"], json!(["app"]));
    }

    #[test]
    fn not_ready_proxy_gets_a_startup_grace() {
        let fresh = injected_pod(
            status("istio-proxy", false, running("2025-06-01T11:59:30Z")),
            &[],
        );
        assert!(sidecar_not_running(&fresh, &opts()).is_none());
        let old = injected_pod(
            status("istio-proxy", false, running("2025-06-01T11:00:00Z")),
            &[],
        );
        let f = sidecar_not_running(&old, &opts()).expect("finding");
        assert_eq!(f.severity, Severity::Medium);
    }

    #[test]
    fn no_finding_when_no_app_runs() {
        let mut w = injected_pod(
            status("istio-proxy", false, running("2025-06-01T11:00:00Z")),
            &[],
        );
        if let Some(st) = w.status.as_mut() {
            st.container_statuses.as_mut().unwrap()[0].state = Some(ContainerState::default());
        }
        assert!(sidecar_not_running(&w, &opts()).is_none());
    }

    fn gateway_snapshot(extra: Vec<Value>) -> Snapshot {
        let mut gw = injected_pod(
            status("istio-proxy", true, running("2025-06-01T10:00:00Z")),
            &[("istio", "egressgateway")],
        );
        gw.namespace = "istio-system".into();
        gw.name = "istio-egressgateway-1".into();
        gw.spec.containers = vec![container("istio-proxy", &["proxy", "router"])];
        let mut s = Snapshot::new();
        s.add_workload(gw);
        s.extra = extra;
        s
    }

    fn wasm_plugin(ns: &str, spec: Value) -> Value {
        json!({"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
               "metadata": {"name": "egress-filter", "namespace": ns}, "spec": spec})
    }

    #[test]
    fn gateway_without_filter_is_critical() {
        let s = gateway_snapshot(vec![wasm_plugin(
            "istio-system",
            json!({"url": "oci://reg/other:1", "selector": {"matchLabels": {"istio": "egressgateway"}}}),
        )]);
        let f = egress_filter_missing(&s, &opts());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(f[0].name, "istio-egressgateway-1");
    }

    #[test]
    fn selecting_plugin_satisfies_and_fail_open_does_not() {
        let good = wasm_plugin(
            "istio-system",
            json!({"url": "oci://reg/egress-filter:1", "selector": {"matchLabels": {"istio": "egressgateway"}}}),
        );
        assert!(egress_filter_missing(&gateway_snapshot(vec![good]), &opts()).is_empty());
        let open = wasm_plugin(
            "istio-system",
            json!({"url": "oci://reg/egress-filter:1", "failStrategy": "FAIL_OPEN"}),
        );
        let f = egress_filter_missing(&gateway_snapshot(vec![open]), &opts());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::High);
        assert!(f[0].message.contains("FAIL_OPEN"));
        let elsewhere = wasm_plugin("shop", json!({"url": "oci://reg/egress-filter:1"}));
        assert_eq!(
            egress_filter_missing(&gateway_snapshot(vec![elsewhere]), &opts())[0].severity,
            Severity::Critical
        );
        let other_labels = wasm_plugin(
            "istio-system",
            json!({"url": "oci://reg/egress-filter:1", "selector": {"matchLabels": {"istio": "ingressgateway"}}}),
        );
        assert_eq!(
            egress_filter_missing(&gateway_snapshot(vec![other_labels]), &opts()).len(),
            1
        );
    }

    #[test]
    fn envoy_filter_counts_and_fail_open_is_seen() {
        let ef = |fail_open: bool| {
            json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
                   "metadata": {"name": "ef", "namespace": "istio-system"},
                   "spec": {"workloadSelector": {"labels": {"istio": "egressgateway"}},
                            "configPatches": [{"applyTo": "HTTP_FILTER", "patch": {"value": {"name": "egress_filter",
                              "typed_config": {"config": {"fail_open": fail_open, "vm_config": {"code": {"local": {"filename": "/etc/egress_filter.wasm"}}}}}}}}]}})
        };
        assert!(egress_filter_missing(&gateway_snapshot(vec![ef(false)]), &opts()).is_empty());
        assert_eq!(
            egress_filter_missing(&gateway_snapshot(vec![ef(true)]), &opts())[0].severity,
            Severity::High
        );
    }

    #[test]
    fn no_gateway_at_all_is_reported_once() {
        let f = egress_filter_missing(&Snapshot::new(), &opts());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, "Cluster");
        assert!(f[0].message.contains("istio=egressgateway"));
        let restricted = LiveCheckOptions {
            report_absent_gateway: false,
            ..opts()
        };
        assert!(egress_filter_missing(&Snapshot::new(), &restricted).is_empty());
    }

    #[test]
    fn selector_parsing() {
        assert_eq!(
            parse_selector("istio=egressgateway, app=gw").unwrap().len(),
            2
        );
        assert!(parse_selector("istio").is_err());
        assert!(parse_selector("").is_err());
    }
}
