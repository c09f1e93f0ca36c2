//! istio/ambient/: the waypoint Gateways are valid for the Gateway API schemas, the WasmPlugins
//! reach the waypoint through `targetRefs`, every external host is bound to a waypoint that
//! exists, the NetworkPolicies leave ambient pods only HBONE and DNS, and `egress-auditor` finds
//! nothing to report in the install. (The Istio objects are
//! checked against Istio's CRD schemas with the rest of istio/, in istio_schemas.rs.)

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use common::{istio_dir, k8s, manifest_documents, require_tool};

fn ambient_objects() -> Vec<Value> {
    manifest_documents(&istio_dir().join("ambient"))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn name_of(object: &Value) -> (&str, &str) {
    (
        object["metadata"]["namespace"].as_str().unwrap_or(""),
        object["metadata"]["name"].as_str().unwrap_or(""),
    )
}

/// The npm package with the Gateway API schemas, installed by .ci/install-tools.sh; `None` (the
/// test skips) outside CI when it is not installed.
fn gateway_api_package() -> Option<PathBuf> {
    let package = common::repo_root()
        .join("tests/manifests/tests/gateway_api/node_modules/@kubernetes-models/gateway-api");
    if package.join("package.json").is_file() {
        return Some(package);
    }
    let message = format!(
        "{} is not installed (bash .ci/install-tools.sh installs it)",
        package.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("skipped: {message}");
    None
}

/// Each object's violations of the Gateway API schemas, in order.
fn gateway_api_violations(objects: &[Value]) -> Option<Vec<Vec<String>>> {
    let node = require_tool("node")?;
    let package = gateway_api_package()?;
    let script = common::repo_root().join("tests/manifests/tests/gateway_api/validate.mjs");
    let mut child = Command::new(node)
        .arg(script)
        .arg(package)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(objects).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "validate.mjs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines.len(), objects.len(), "one result per object");
    Some(
        lines
            .iter()
            .map(|l| {
                l["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e.as_str().unwrap().to_string())
                    .collect()
            })
            .collect(),
    )
}

#[test]
fn waypoint_gateways_match_the_gateway_api_schemas() {
    let objects = ambient_objects();
    let gateways: Vec<Value> = of_kind(&objects, "Gateway").into_iter().cloned().collect();
    assert_eq!(
        gateways.len(),
        2,
        "the waypoint and the egress-gateway variant"
    );
    for gateway in &gateways {
        assert_eq!(gateway["apiVersion"], "gateway.networking.k8s.io/v1");
    }
    let Some(results) = gateway_api_violations(&gateways) else {
        return;
    };
    for (gateway, errors) in gateways.iter().zip(&results) {
        assert!(errors.is_empty(), "{:?}: {errors:?}", name_of(gateway));
    }
}

/// (what is wrong, the edit that makes it so, what the validator must say).
type Mistake = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);

/// The validator is not vacuous: it rejects what the API server rejects or prunes.
#[test]
fn gateway_api_validator_rejects_broken_gateways() {
    let objects = ambient_objects();
    let waypoint = of_kind(&objects, "Gateway")[0].clone();
    let mistakes: Vec<Mistake> = vec![
        (
            "a misspelt field",
            Box::new(|g| g["spec"]["listeners"][0]["protocl"] = json!("HBONE")),
            "spec.listeners[0].protocl: unknown field",
        ),
        (
            "port 0",
            Box::new(|g| g["spec"]["listeners"][0]["port"] = json!(0)),
            "port must be >= 1",
        ),
        (
            "no listeners",
            Box::new(|g| g["spec"]["listeners"] = json!([])),
            "listeners",
        ),
        (
            "no gatewayClassName",
            Box::new(|g| {
                g["spec"]
                    .as_object_mut()
                    .unwrap()
                    .remove("gatewayClassName");
            }),
            "gatewayClassName",
        ),
        (
            "a bad allowedRoutes value",
            Box::new(|g| {
                g["spec"]["listeners"][0]["allowedRoutes"] = json!({"namespaces": {"from": "Any"}})
            }),
            "allowedRoutes",
        ),
    ];
    let broken: Vec<Value> = mistakes
        .iter()
        .map(|(_, edit, _)| {
            let mut gateway = waypoint.clone();
            edit(&mut gateway);
            gateway
        })
        .collect();
    let Some(results) = gateway_api_violations(&broken) else {
        return;
    };
    for ((mistake, _, expected), errors) in mistakes.iter().zip(&results) {
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "waypoint with {mistake}: expected …{expected}… in {errors:?}"
        );
    }
}

/// Waypoints ignore `selector`: every plugin names a waypoint Gateway of its own namespace.
#[test]
fn wasmplugins_target_a_waypoint_gateway() {
    let objects = ambient_objects();
    let waypoints: BTreeSet<(&str, &str)> = of_kind(&objects, "Gateway")
        .into_iter()
        .filter(|g| g["spec"]["gatewayClassName"] == "istio-waypoint")
        .map(name_of)
        .collect();
    let plugins = of_kind(&objects, "WasmPlugin");
    assert_eq!(plugins.len(), 3);
    for plugin in plugins {
        let (namespace, name) = name_of(plugin);
        assert!(
            plugin["spec"]["selector"].is_null(),
            "{name}: selector is ignored on a waypoint"
        );
        assert_eq!(plugin["spec"]["failStrategy"], "FAIL_CLOSE", "{name}");
        let targets = plugin["spec"]["targetRefs"].as_array().expect("targetRefs");
        assert_eq!(targets.len(), 1, "{name}");
        let target = &targets[0];
        assert_eq!(target["kind"], "Gateway", "{name}");
        assert_eq!(target["group"], "gateway.networking.k8s.io", "{name}");
        let gateway = target["name"].as_str().unwrap();
        assert!(
            waypoints.contains(&(namespace, gateway)),
            "{namespace}/{name} targets {gateway}, not a waypoint of {namespace}: {waypoints:?}"
        );
    }
}

/// Every ServiceEntry is bound to a waypoint that exists and takes service traffic, through its
/// own labels or its namespace's: otherwise ztunnel sends the host's traffic straight out.
#[test]
fn every_service_entry_is_bound_to_an_existing_waypoint() {
    let objects = ambient_objects();
    let namespace_labels = |namespace: &str| -> Value {
        of_kind(&objects, "Namespace")
            .into_iter()
            .find(|n| n["metadata"]["name"] == namespace)
            .map(|n| n["metadata"]["labels"].clone())
            .unwrap_or(Value::Null)
    };
    let entries = of_kind(&objects, "ServiceEntry");
    assert_eq!(entries.len(), 3);
    for entry in entries {
        let (namespace, name) = name_of(entry);
        let labels = &entry["metadata"]["labels"];
        let (waypoint, waypoint_namespace) = match labels["istio.io/use-waypoint"].as_str() {
            Some(waypoint) => (
                waypoint.to_string(),
                labels["istio.io/use-waypoint-namespace"]
                    .as_str()
                    .unwrap_or(namespace)
                    .to_string(),
            ),
            None => (
                namespace_labels(namespace)["istio.io/use-waypoint"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{namespace}/{name} is bound to no waypoint"))
                    .to_string(),
                namespace.to_string(),
            ),
        };
        let gateway = of_kind(&objects, "Gateway")
            .into_iter()
            .find(|g| name_of(g) == (waypoint_namespace.as_str(), waypoint.as_str()))
            .unwrap_or_else(|| {
                panic!("{namespace}/{name}: no waypoint {waypoint_namespace}/{waypoint}")
            });
        assert_eq!(gateway["spec"]["gatewayClassName"], "istio-waypoint");
        let traffic = gateway["metadata"]["labels"]["istio.io/waypoint-for"]
            .as_str()
            .unwrap_or("service");
        assert!(
            matches!(traffic, "service" | "all"),
            "{namespace}/{name}: waypoint takes {traffic} traffic"
        );
        if waypoint_namespace != namespace {
            assert_eq!(
                gateway["spec"]["listeners"][0]["allowedRoutes"]["namespaces"]["from"], "All",
                "{waypoint}: must accept other namespaces"
            );
        }
        assert_eq!(entry["spec"]["location"], "MESH_EXTERNAL", "{name}");
    }
}

/// (peers, protocol/port) of every egress rule, peers as text.
fn egress_rules(policy: &Value) -> Vec<(String, String)> {
    let mut rules = Vec::new();
    for rule in policy["spec"]["egress"].as_array().unwrap() {
        for port in rule["ports"]
            .as_array()
            .expect("every rule names its ports")
        {
            rules.push((
                rule["to"].to_string(),
                format!("{}/{}", port["protocol"].as_str().unwrap(), port["port"]),
            ));
        }
    }
    rules.sort();
    rules
}

#[test]
fn app_namespace_policy_leaves_only_hbone_to_pods_and_dns() {
    let documents = manifest_documents(&istio_dir().join("ambient"));
    let policy = documents
        .iter()
        .find(|d| d.path.ends_with("networkpolicy-app-namespace.yaml"))
        .map(|d| d.value.clone())
        .unwrap();
    k8s::check_object(&policy).unwrap_or_else(|e| panic!("NetworkPolicy: {e}"));
    assert_eq!(policy["spec"]["podSelector"], json!({}));
    assert_eq!(policy["spec"]["policyTypes"], json!(["Egress"]));
    let dns = json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                      "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}])
    .to_string();
    let pods = json!([{"namespaceSelector": {}, "podSelector": {}}]).to_string();
    assert_eq!(
        egress_rules(&policy),
        [
            (dns.clone(), "TCP/53".to_string()),
            (dns, "UDP/53".to_string()),
            (pods, "TCP/15008".to_string()),
        ]
    );
}

#[test]
fn egress_namespace_lets_only_the_waypoint_out() {
    let objects = ambient_objects();
    let policies = of_kind(&objects, "NetworkPolicy");
    for policy in &policies {
        k8s::check_object(policy).unwrap_or_else(|e| panic!("{:?}: {e}", name_of(policy)));
    }
    let deny = policies
        .iter()
        .find(|p| name_of(p) == ("istio-egress", "default-deny-egress"))
        .unwrap();
    assert_eq!(deny["spec"]["podSelector"], json!({}));
    assert!(deny["spec"]["egress"].is_null(), "no egress allowed");
    let waypoint = policies
        .iter()
        .find(|p| name_of(p) == ("istio-egress", "waypoint-only-way-out"))
        .unwrap();
    assert_eq!(
        waypoint["spec"]["podSelector"]["matchLabels"]["gateway.networking.k8s.io/gateway-name"],
        "waypoint"
    );
    let internet: BTreeSet<String> = egress_rules(waypoint)
        .into_iter()
        .filter(|(peers, _)| peers.contains("0.0.0.0/0"))
        .map(|(_, port)| port)
        .collect();
    // Exactly the ports the ServiceEntries of the egress namespace declare.
    let declared: BTreeSet<String> = of_kind(&objects, "ServiceEntry")
        .into_iter()
        .filter(|e| e["metadata"]["namespace"] == "istio-egress")
        .flat_map(|e| e["spec"]["ports"].as_array().unwrap().clone())
        .map(|p| format!("TCP/{}", p["number"]))
        .collect();
    assert_eq!(internet, declared);
    assert_eq!(
        waypoint["spec"]["ingress"],
        json!([{"ports": [{"protocol": "TCP", "port": 15008}]}]),
        "the mesh reaches the waypoint over HBONE only"
    );
}

/// `kubectl apply -k` works on both kustomizations and renders what the files hold.
#[test]
fn ambient_kustomizations_render() {
    for (dir, expected) in [("ambient", 8), ("ambient/egress-gateway", 3)] {
        let Some(rendered) = common::render_kustomization(&istio_dir().join(dir)) else {
            return;
        };
        assert_eq!(rendered.len(), expected, "{dir}: {rendered:?}");
    }
}

/// `egress-auditor scan` over `inputs`: the findings as (rule, kind, name).
fn audit(inputs: &[PathBuf]) -> Vec<(String, String, String)> {
    let output = common::run(
        Command::new(common::built_egress_auditor())
            .arg("scan")
            .args(
                inputs
                    .iter()
                    .flat_map(|i| [std::ffi::OsStr::new("--input"), i.as_os_str()]),
            )
            .args(["--format", "json"]),
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["kind"].as_str().unwrap().to_string(),
                f["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The ambient application namespace of the egress-gateway variant, `orders`, with the policy
/// networkpolicy-app-namespace.yaml asks for.
fn orders_namespace(dir: &std::path::Path) -> PathBuf {
    let mut policy = manifest_documents(&istio_dir().join("ambient"))
        .into_iter()
        .find(|d| d.path.ends_with("networkpolicy-app-namespace.yaml"))
        .unwrap()
        .value;
    policy["metadata"]["namespace"] = json!("orders");
    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "orders", "labels": {"istio.io/dataplane-mode": "ambient"}},
    });
    let path = dir.join("orders.json");
    std::fs::write(
        &path,
        serde_json::to_vec(
            &json!({"apiVersion": "v1", "kind": "List", "items": [namespace, policy]}),
        )
        .unwrap(),
    )
    .unwrap();
    path
}

/// The auditor finds nothing to report in the ambient install, and reports the mistake the
/// variant's ServiceEntry warns about.
#[test]
fn the_auditor_passes_the_ambient_install_and_catches_a_lost_waypoint_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let orders = orders_namespace(dir.path());
    assert_eq!(
        audit(&[istio_dir().join("ambient"), orders.clone()]),
        [],
        "the ambient install with an ambient application namespace"
    );

    let mut entry = manifest_documents(&istio_dir().join("ambient/egress-gateway"))
        .into_iter()
        .find(|d| d.kind() == "ServiceEntry")
        .unwrap()
        .value;
    entry["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("istio.io/use-waypoint-namespace");
    let broken = dir.path().join("serviceentry.json");
    std::fs::write(&broken, serde_json::to_vec(&entry).unwrap()).unwrap();
    let ambient = istio_dir().join("ambient");
    let mut inputs: Vec<PathBuf> = [
        "namespace.yaml",
        "waypoint.yaml",
        "networkpolicy-egress-namespace.yaml",
        "egress-gateway/gateway.yaml",
        "egress-gateway/wasmplugin.yaml",
    ]
    .iter()
    .map(|f| ambient.join(f))
    .collect();
    inputs.extend([broken, orders]);
    assert_eq!(
        audit(&inputs),
        [(
            "egress-waypoint-missing".to_string(),
            "ServiceEntry".to_string(),
            "payments-api".to_string()
        )]
    );
}
