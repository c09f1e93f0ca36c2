//! `egress-waypoint-missing`: in ambient mode L7 policy (and so the egress filter) runs only on a
//! waypoint, and traffic reaches a waypoint only when the destination binds one. ztunnel routes
//! traffic straight to the destination when nothing binds a waypoint, when the named waypoint
//! does not exist, or when it does not handle the traffic type (istio.io, *Use waypoints*:
//! "any Layer 7 policy that the waypoint would have enforced never takes effect").
//!
//! Judged: each `ServiceEntry` for external hosts (`location` MESH_EXTERNAL, the default) in an
//! ambient namespace, or bound to a waypoint anywhere, and each waypoint Gateway
//! (`gatewayClassName: istio-waypoint`) that external ServiceEntries are bound to: the egress
//! filter must be attached to it with `targetRefs` (waypoints ignore `selector`, istio/api
//! `extensions/v1alpha1/wasm.proto`).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::extensions::{loaders, FilterLoader, EGRESS_FILTER_MARKERS};
use super::injection::namespace_is_ambient;
use super::CheckOptions;
use crate::finding::{Finding, Severity};
use crate::istio::ambient;
use crate::rules::{rule, EGRESS_WAYPOINT_MISSING};
use crate::snapshot::{Snapshot, GATEWAY_API_GROUP, ISTIO_NETWORKING_GROUP, MESH_CONFIG_NAMESPACE};

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Where a ServiceEntry's traffic is bound, read as Istio reads it: the label on the
/// ServiceEntry wins over its namespace's, and the waypoint's namespace comes from the same
/// object's `istio.io/use-waypoint-namespace` (else that object's own namespace).
#[derive(Debug, Clone)]
struct Binding {
    waypoint: String,
    namespace: String,
    /// `ServiceEntry label` or `namespace label`.
    from: &'static str,
}

fn binding(
    se_labels: &BTreeMap<String, String>,
    se_ns: &str,
    ns_labels: &BTreeMap<String, String>,
) -> Option<Binding> {
    let pick = |labels: &BTreeMap<String, String>, from: &'static str| {
        labels.get(ambient::USE_WAYPOINT_LABEL).map(|w| Binding {
            waypoint: w.clone(),
            namespace: labels
                .get(ambient::USE_WAYPOINT_NAMESPACE_LABEL)
                .cloned()
                .unwrap_or_else(|| se_ns.to_string()),
            from,
        })
    };
    pick(se_labels, "ServiceEntry label").or_else(|| pick(ns_labels, "namespace label"))
}

fn finding(kind: &str, namespace: &str, name: &str, message: String, evidence: Value) -> Finding {
    Finding {
        rule: EGRESS_WAYPOINT_MISSING.to_string(),
        severity: rule(EGRESS_WAYPOINT_MISSING)
            .map(|r| r.severity)
            .unwrap_or(Severity::Medium),
        kind: kind.to_string(),
        namespace: Some(namespace.to_string()),
        name: name.to_string(),
        container: None,
        message,
        evidence,
    }
}

/// An external ServiceEntry bound to an existing waypoint.
struct Bound<'a> {
    namespace: &'a str,
    name: &'a str,
    hosts: Vec<String>,
    /// The plugin types its ports need: a waypoint runs HTTP plugins on HTTP ports (HTTP, HTTP2,
    /// GRPC, or no protocol: sniffed) and only NETWORK plugins on the others (TLS, HTTPS, TCP...),
    /// which get the TCP filter chain (`buildWaypointNetworkFilters`).
    needs: Vec<&'static str>,
}

fn plugin_types_needed(se: &Value) -> Vec<&'static str> {
    let mut http = false;
    let mut network = false;
    for port in se["spec"]["ports"].as_array().into_iter().flatten() {
        match port["protocol"]
            .as_str()
            .unwrap_or("")
            .to_ascii_uppercase()
            .as_str()
        {
            "" | "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => http = true,
            _ => network = true,
        }
    }
    let mut out = Vec::new();
    if http || !network {
        out.push("HTTP");
    }
    if network {
        out.push("NETWORK");
    }
    out
}

/// The WasmPlugin `type` (HTTP when unset).
fn plugin_type(l: &FilterLoader<'_>) -> &'static str {
    match l.object["spec"]["type"].as_str() {
        Some("NETWORK") => "NETWORK",
        _ => "HTTP",
    }
}

pub fn egress_waypoint_missing(snapshot: &Snapshot, opts: &CheckOptions) -> Vec<Finding> {
    let mut out = Vec::new();
    // Every Gateway API Gateway, by (namespace, name).
    let gateways: BTreeMap<(String, String), &Value> = snapshot
        .extra_objects(GATEWAY_API_GROUP, "Gateway")
        .filter_map(|g| {
            Some((
                (
                    str_at(g, &["metadata", "namespace"])?.to_string(),
                    str_at(g, &["metadata", "name"])?.to_string(),
                ),
                g,
            ))
        })
        .collect();
    let mut bound: BTreeMap<(String, String), Vec<Bound<'_>>> = BTreeMap::new();

    for se in snapshot.extra_objects(ISTIO_NETWORKING_GROUP, "ServiceEntry") {
        let (Some(ns), Some(name)) = (
            str_at(se, &["metadata", "namespace"]),
            str_at(se, &["metadata", "name"]),
        ) else {
            continue;
        };
        // MESH_EXTERNAL is the default location.
        if str_at(se, &["spec", "location"]).is_some_and(|l| l != "MESH_EXTERNAL") {
            continue;
        }
        let ns_labels = snapshot.namespace_labels(ns);
        let se_labels = labels(se);
        let ambient_ns =
            namespace_is_ambient(ns_labels) && !opts.cni_excluded_namespaces.contains(ns);
        let binding = binding(&se_labels, ns, ns_labels);
        if !ambient_ns && binding.is_none() {
            continue;
        }
        let hosts: Vec<String> = se["spec"]["hosts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let host_list = hosts.join(", ");
        let Some(b) = binding else {
            out.push(finding(
                "ServiceEntry",
                ns,
                name,
                format!(
                    "ServiceEntry for external hosts {host_list} in ambient namespace {ns} has no {} (on it or on its namespace): ztunnel sends this traffic straight out, no waypoint and no L7 egress policy sees it",
                    ambient::USE_WAYPOINT_LABEL
                ),
                json!({"reason": "no-waypoint", "hosts": hosts}),
            ));
            continue;
        };
        let evidence = |reason: &str| {
            json!({
                "reason": reason,
                "hosts": hosts,
                "useWaypoint": b.waypoint,
                "waypointNamespace": b.namespace,
                "boundBy": b.from,
            })
        };
        if b.waypoint == "none" {
            out.push(finding(
                "ServiceEntry",
                ns,
                name,
                format!(
                    "ServiceEntry for external hosts {host_list} sets {}=none ({}): no waypoint and no L7 egress policy sees this traffic",
                    ambient::USE_WAYPOINT_LABEL,
                    b.from
                ),
                evidence("waypoint-none"),
            ));
            continue;
        }
        let key = (b.namespace.clone(), b.waypoint.clone());
        match gateways.get(&key) {
            None => {
                // Only what the input shows can be judged: a waypoint namespace outside it is
                // not known to lack the Gateway.
                let namespace_known = snapshot.namespace(&b.namespace).is_some()
                    || gateways.keys().any(|(n, _)| *n == b.namespace);
                if namespace_known {
                    out.push(finding(
                        "ServiceEntry",
                        ns,
                        name,
                        format!(
                            "ServiceEntry for external hosts {host_list} names waypoint {}/{} ({}), which does not exist: ztunnel then sends the traffic straight to the destination",
                            b.namespace, b.waypoint, b.from
                        ),
                        evidence("waypoint-not-found"),
                    ));
                }
            }
            Some(gw) => {
                let class = str_at(gw, &["spec", "gatewayClassName"]).unwrap_or("");
                let serves = labels(gw)
                    .get(ambient::WAYPOINT_FOR_LABEL)
                    .cloned()
                    .unwrap_or_else(|| ambient::WAYPOINT_FOR_DEFAULT.to_string());
                if class != ambient::WAYPOINT_GATEWAY_CLASS {
                    out.push(finding(
                        "ServiceEntry",
                        ns,
                        name,
                        format!(
                            "ServiceEntry for external hosts {host_list} names Gateway {}/{} of class {class:?}, which is not an Istio waypoint ({}): the egress filter does not run there",
                            b.namespace,
                            b.waypoint,
                            ambient::WAYPOINT_GATEWAY_CLASS
                        ),
                        evidence("not-a-waypoint"),
                    ));
                } else if !matches!(serves.as_str(), "service" | "all") {
                    out.push(finding(
                        "ServiceEntry",
                        ns,
                        name,
                        format!(
                            "ServiceEntry for external hosts {host_list} names waypoint {}/{}, whose {}={serves} does not take service traffic: ztunnel sends it straight to the destination",
                            b.namespace,
                            b.waypoint,
                            ambient::WAYPOINT_FOR_LABEL
                        ),
                        evidence("waypoint-not-for-service"),
                    ));
                } else {
                    bound.entry(key).or_default().push(Bound {
                        namespace: ns,
                        name,
                        hosts,
                        needs: plugin_types_needed(se),
                    });
                }
            }
        }
    }

    let markers: Vec<String> = EGRESS_FILTER_MARKERS
        .iter()
        .map(|m| m.to_string())
        .collect();
    let loaders = loaders(snapshot, &markers);
    for ((gw_ns, gw_name), entries) in &bound {
        let attached = |l: &FilterLoader<'_>, se: Option<&Bound<'_>>| -> bool {
            l.kind == "WasmPlugin"
                && l.target_refs().iter().any(|r| {
                    let kind = r["kind"].as_str().unwrap_or("");
                    let group = r["group"].as_str().unwrap_or("");
                    let target = r["name"].as_str().unwrap_or("");
                    match (kind, se) {
                        ("Gateway", None) => {
                            group == GATEWAY_API_GROUP && l.namespace == gw_ns && target == gw_name
                        }
                        ("GatewayClass", None) => {
                            group == GATEWAY_API_GROUP
                                && l.namespace == MESH_CONFIG_NAMESPACE
                                && target == ambient::WAYPOINT_GATEWAY_CLASS
                        }
                        ("ServiceEntry", Some(se)) => {
                            group == ISTIO_NETWORKING_GROUP
                                && l.namespace == se.namespace
                                && target == se.name
                        }
                        _ => false,
                    }
                })
        };
        let on_gateway: Vec<&FilterLoader<'_>> =
            loaders.iter().filter(|l| attached(l, None)).collect();
        let mut uncovered: Vec<String> = Vec::new();
        let mut fail_open: Vec<String> = Vec::new();
        for se in entries {
            let on_se: Vec<&FilterLoader<'_>> =
                loaders.iter().filter(|l| attached(l, Some(se))).collect();
            let mut missing: Vec<&str> = Vec::new();
            for needed in &se.needs {
                let of_type: Vec<&&FilterLoader<'_>> = on_gateway
                    .iter()
                    .chain(on_se.iter())
                    .filter(|l| plugin_type(l) == *needed)
                    .collect();
                if of_type.iter().any(|l| !l.fail_open) {
                    continue;
                }
                fail_open.extend(of_type.iter().map(|l| l.reference()));
                missing.push(needed);
            }
            if missing.is_empty() {
                continue;
            }
            uncovered.push(format!(
                "ServiceEntry {}/{} ({}; needs a {} plugin)",
                se.namespace,
                se.name,
                se.hosts.join(", "),
                missing.join(" and a ")
            ));
        }
        if uncovered.is_empty() {
            continue;
        }
        fail_open.sort();
        fail_open.dedup();
        // Plugins that select by labels are ignored on waypoints: name them, so the fix is clear.
        let ignored: Vec<String> = loaders
            .iter()
            .filter(|l| {
                l.kind == "WasmPlugin"
                    && l.target_refs().is_empty()
                    && (l.namespace == gw_ns || l.namespace == MESH_CONFIG_NAMESPACE)
            })
            .map(|l| l.reference())
            .collect();
        let why = if fail_open.is_empty() {
            "no WasmPlugin loading the egress filter is attached to it with targetRefs".to_string()
        } else {
            format!(
                "the egress filter is attached only FAIL_OPEN ({})",
                fail_open.join(", ")
            )
        };
        out.push(finding(
            "Gateway",
            gw_ns,
            gw_name,
            format!(
                "waypoint {gw_ns}/{gw_name} carries traffic for external hosts ({}) but {why}: that egress is not filtered",
                uncovered.join("; ")
            ),
            json!({
                "reason": if fail_open.is_empty() { "no-filter" } else { "fail-open" },
                "serviceEntries": uncovered,
                "failOpen": fail_open,
                "ignoredSelectorPlugins": ignored,
                "filterMarkers": markers,
            }),
        ));
    }
    out
}
