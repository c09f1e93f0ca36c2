//! The deploy/ overlays render offline with `kubectl kustomize`, and every object they render is a
//! valid Kubernetes object with the privileges, probes and limits it should have.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

use common::{deploy_dir, k8s, object_name, render_kustomization};
use egress_manifests::schema::CrdSchemas;
use egress_manifests::yaml;

const OVERLAYS: [&str; 5] = ["cronjob", "watch", "node", "full", "policy-controller"];

fn render(overlay: &str) -> Option<Vec<Value>> {
    render_kustomization(&deploy_dir().join("overlays").join(overlay))
}

fn names(objects: &[Value]) -> BTreeSet<String> {
    objects.iter().map(object_name).collect()
}

fn workload_pod_spec(object: &Value) -> Option<&Value> {
    match object["kind"].as_str()? {
        "Deployment" | "DaemonSet" => Some(&object["spec"]["template"]["spec"]),
        "CronJob" => Some(&object["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
}

#[test]
fn every_rendered_object_round_trips_through_k8s_openapi() {
    let mut checked = 0;
    for overlay in OVERLAYS
        .iter()
        .map(|o| format!("overlays/{o}"))
        .chain(["crds".to_string()])
    {
        let Some(objects) = render_kustomization(&deploy_dir().join(&overlay)) else {
            return;
        };
        assert!(!objects.is_empty(), "{overlay} rendered nothing");
        for object in &objects {
            k8s::check_object(object)
                .unwrap_or_else(|e| panic!("{overlay}: {}: {e}", object_name(object)));
            checked += 1;
        }
    }
    println!("{checked} rendered objects match their k8s-openapi types");
}

#[test]
fn overlays_install_what_their_names_say() {
    let Some(cronjob) = render("cronjob") else {
        return;
    };
    let Some(watch) = render("watch") else { return };
    let Some(node) = render("node") else { return };
    let Some(full) = render("full") else { return };
    let workloads = |objects: &[Value]| -> BTreeSet<String> {
        objects
            .iter()
            .filter(|o| workload_pod_spec(o).is_some())
            .map(object_name)
            .collect()
    };
    assert_eq!(
        workloads(&cronjob),
        BTreeSet::from(["CronJob egress-guard/egress-guard-scan".to_string()])
    );
    assert_eq!(
        workloads(&watch),
        BTreeSet::from(["Deployment egress-guard/egress-guard-watch".to_string()])
    );
    assert_eq!(
        workloads(&node),
        BTreeSet::from(["DaemonSet egress-guard/egress-guard-node".to_string()])
    );
    let union: BTreeSet<String> = names(&watch).union(&names(&node)).cloned().collect();
    assert_eq!(names(&full), union, "full = watch + node");
    for objects in [&cronjob, &watch, &node, &full] {
        for object in objects.iter() {
            let namespace = object["metadata"]["namespace"].as_str();
            let cluster_scoped = matches!(
                object["kind"].as_str(),
                Some("Namespace" | "ClusterRole" | "ClusterRoleBinding")
            );
            match namespace {
                None => assert!(cluster_scoped, "{} has no namespace", object_name(object)),
                Some("istio-system") => assert!(
                    matches!(object["kind"].as_str(), Some("Role" | "RoleBinding")),
                    "only the mesh-config Role lives in istio-system: {}",
                    object_name(object)
                ),
                Some(other) => assert_eq!(other, "egress-guard", "{}", object_name(object)),
            }
            assert_eq!(
                object["metadata"]["labels"]["app.kubernetes.io/part-of"],
                "egress-guard"
            );
        }
    }
}

fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod[*k].as_array())
        .flatten()
        .collect()
}

fn args(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

#[test]
fn scan_and_watch_pods_meet_the_restricted_pod_security_standard() {
    for overlay in ["cronjob", "watch"] {
        let Some(objects) = render(overlay) else {
            return;
        };
        for object in &objects {
            let Some(pod) = workload_pod_spec(object) else {
                continue;
            };
            let name = object_name(object);
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{name}"
            );
            for key in ["hostPID", "hostNetwork", "hostIPC"] {
                assert!(pod[key].is_null(), "{name}: {key}");
            }
            for container in containers(pod) {
                let security = &container["securityContext"];
                assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
                assert_eq!(security["capabilities"], json!({"drop": ["ALL"]}), "{name}");
                assert!(security["privileged"].is_null() || security["privileged"] == false);
            }
            assert!(pod["volumes"].is_null(), "{name}: no volumes needed");
        }
    }
}

#[test]
fn node_agent_gets_exactly_the_privileges_it_uses() {
    let Some(objects) = render("node") else {
        return;
    };
    let daemonset = objects
        .iter()
        .find(|o| o["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = workload_pod_spec(daemonset).unwrap();
    assert_eq!(
        pod["hostPID"], true,
        "other pods' /proc entries must be visible"
    );
    assert!(pod["hostNetwork"].is_null() && pod["hostIPC"].is_null());
    assert_eq!(
        pod["tolerations"],
        json!([{"operator": "Exists"}]),
        "runs on every node"
    );
    let [container] = containers(pod)[..] else {
        panic!("one container")
    };
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    let added: BTreeSet<&str> = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        added,
        BTreeSet::from(["NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE"])
    );
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["hostPath"].is_null()),
        "no host paths"
    );
    assert_eq!(args(container)[0], "node");
    assert!(
        container["image"]
            .as_str()
            .unwrap()
            .contains("egress-auditor-node:"),
        "the image with iptables and nft"
    );
    // $(NODE_NAME) is expanded by the kubelet from the env var set from the downward API.
    assert!(args(container).contains(&"$(NODE_NAME)"));
    // A DaemonSet's container must not exit: the agent repeats its pass, and delivers each one.
    let args = args(container);
    let interval = args
        .iter()
        .position(|a| *a == "--interval")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(interval.is_some_and(|s| s > 0), "{args:?}");
    let sinks: BTreeSet<&str> = args
        .windows(2)
        .filter(|w| w[0] == "--sink")
        .map(|w| w[1])
        .collect();
    assert_eq!(
        sinks,
        BTreeSet::from(["events", "policyreport"]),
        "{args:?}"
    );
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    let namespace = objects.iter().find(|o| o["kind"] == "Namespace").unwrap();
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
}

#[test]
fn workloads_have_resources_pinned_images_and_the_documented_commands() {
    for overlay in OVERLAYS {
        let Some(objects) = render(overlay) else {
            return;
        };
        for object in &objects {
            let Some(pod) = workload_pod_spec(object) else {
                continue;
            };
            let name = object_name(object);
            assert!(
                pod["serviceAccountName"]
                    .as_str()
                    .is_some_and(|sa| sa.starts_with("egress-guard-")),
                "{name}"
            );
            for container in containers(pod) {
                let image = container["image"].as_str().unwrap();
                let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
                assert!(
                    !tag.is_empty() && tag != "latest" && !tag.contains('/'),
                    "{name}: pin {image}"
                );
                let resources = &container["resources"];
                assert!(
                    resources["requests"]["cpu"].is_string()
                        && resources["requests"]["memory"].is_string(),
                    "{name}"
                );
                assert!(
                    resources["limits"]["memory"].is_string(),
                    "{name}: a memory limit"
                );
            }
        }
    }
    let Some(cronjob) = render("cronjob") else {
        return;
    };
    let job = cronjob.iter().find(|o| o["kind"] == "CronJob").unwrap();
    let pod = workload_pod_spec(job).unwrap();
    assert_eq!(
        args(&pod["containers"][0]),
        [
            "scan",
            "--cluster",
            "--sink",
            "policyreport",
            "--sink",
            "events",
            "--format",
            "json"
        ]
    );
    assert_eq!(job["spec"]["concurrencyPolicy"], "Forbid");
}

#[test]
fn watch_probes_and_metrics_point_at_the_listening_port() {
    let Some(objects) = render("watch") else {
        return;
    };
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let arguments = args(container);
    assert_eq!(arguments[0], "watch");
    let listen = arguments
        .iter()
        .position(|a| *a == "--listen")
        .map(|i| arguments[i + 1])
        .expect("--listen ADDR");
    let port: u64 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    let ports = container["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["containerPort"].as_u64(), Some(port));
    let port_name = ports[0]["name"].as_str().unwrap();
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": port_name})
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": port_name})
    );
    let service = objects.iter().find(|o| o["kind"] == "Service").unwrap();
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port_name);
    assert_eq!(
        service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"],
        "the Service selects the controller"
    );
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/port"],
        port.to_string()
    );
}

fn strip_descriptions(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "description")
                .map(|(k, v)| (k.clone(), strip_descriptions(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_descriptions).collect()),
        other => other.clone(),
    }
}

fn version<'a>(crd: &'a Value, name: &str) -> &'a Value {
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{} has no version {name}", crd["metadata"]["name"]))
}

/// deploy/crds is our own rendering of the PolicyReport CRDs: it must accept exactly what the
/// upstream wgpolicyk8s.io v1alpha2 schema accepts, so installing either is the same.
#[test]
fn policyreport_crds_match_upstream_v1alpha2() {
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    for (ours, upstream) in [
        ("policyreports.yaml", "wgpolicyk8s.io_policyreports.yaml"),
        (
            "clusterpolicyreports.yaml",
            "wgpolicyk8s.io_clusterpolicyreports.yaml",
        ),
    ] {
        let ours = &yaml::load_documents(&deploy_dir().join("crds").join(ours)).unwrap()[0].value;
        let upstream =
            &yaml::load_documents(&fixtures.join("policyreport").join(upstream)).unwrap()[0].value;
        k8s::check_object(ours).unwrap();
        assert_eq!(ours["spec"]["names"], upstream["spec"]["names"]);
        assert_eq!(ours["spec"]["scope"], upstream["spec"]["scope"]);
        assert_eq!(ours["spec"]["group"], upstream["spec"]["group"]);
        let (ours_v, upstream_v) = (version(ours, "v1alpha2"), version(upstream, "v1alpha2"));
        assert_eq!(
            strip_descriptions(&ours_v["schema"]),
            strip_descriptions(&upstream_v["schema"]),
            "{} v1alpha2 schema differs from upstream",
            ours["metadata"]["name"]
        );
        assert_eq!(
            ours_v["additionalPrinterColumns"],
            upstream_v["additionalPrinterColumns"]
        );
        assert_eq!(
            ours["spec"]["versions"].as_array().unwrap().len(),
            1,
            "only the version we write"
        );
    }
}

/// A report of the shape the policyreport sink writes is accepted by our CRD, and a wrong one
/// is not (the CRD is a real schema, not a pass-through).
#[test]
fn policyreport_crd_validates_reports() {
    let documents: Vec<Value> = ["policyreports.yaml", "clusterpolicyreports.yaml"]
        .iter()
        .flat_map(|f| yaml::load_documents(&deploy_dir().join("crds").join(f)).unwrap())
        .map(|d| d.value)
        .collect();
    let schemas = CrdSchemas::from_documents(&documents).unwrap();
    let mut report = json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {"name": "egress-guard", "namespace": "payments"},
        "summary": {"pass": 0, "fail": 1, "warn": 0, "error": 0, "skip": 0},
        "results": [{
            "source": "egress-guard", "policy": "egress-guard", "rule": "host-network",
            "severity": "high", "result": "fail", "scored": true,
            "message": "pod payments/api uses the host network",
            "timestamp": {"seconds": 1700000000, "nanos": 0},
            "properties": {"container": "api"},
            "resources": [{"apiVersion": "v1", "kind": "Pod", "namespace": "payments", "name": "api"}]
        }]
    });
    let report_violations = |r: &Value| schemas.validate(r).unwrap().violations;
    assert!(
        report_violations(&report).is_empty(),
        "{:?}",
        report_violations(&report)
    );
    report["results"][0]["severity"] = json!("severe");
    report["results"][0]["properties"]["replicas"] = json!(3);
    let paths: Vec<String> = report_violations(&report)
        .into_iter()
        .map(|v| v.path)
        .collect();
    assert_eq!(
        paths,
        ["results[0].properties.replicas", "results[0].severity"]
    );
}

#[test]
fn dockerfile_builds_both_images_the_manifests_use() {
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .filter_map(|l| l.split(" AS ").nth(1))
        .map(str::trim)
        .collect();
    for stage in ["build", "auditor", "auditor-node", "controller"] {
        assert!(stages.contains(&stage), "stage {stage} missing: {stages:?}");
    }
    assert!(dockerfile.contains("iptables") && dockerfile.contains("nftables"));
    assert!(dockerfile.contains("x86_64-unknown-linux-musl") || dockerfile.contains("-linux-musl"));
    assert!(Path::new(&deploy_dir().join("README.md")).is_file());
}

#[test]
fn policy_controller_runs_two_replicas_with_one_leader_and_the_restricted_standard() {
    let Some(objects) = render("policy-controller") else {
        return;
    };
    let kinds: BTreeSet<String> = objects.iter().map(object_name).collect();
    for expected in [
        "CustomResourceDefinition /clusteregresspolicies.policy.egress-guard.dev",
        "CustomResourceDefinition /egresspolicies.policy.egress-guard.dev",
        "Deployment egress-guard/egress-guard-policy-controller",
        "ServiceAccount egress-guard/egress-guard-policy-controller",
        "ConfigMap egress-guard/egress-guard-policy-controller-base",
        "Service egress-guard/egress-guard-policy-controller-metrics",
    ] {
        assert!(kinds.contains(expected), "{expected} missing: {kinds:#?}");
    }
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = workload_pod_spec(deployment).unwrap();
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let [container] = containers(pod)[..] else {
        panic!("one container")
    };
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"], json!({"drop": ["ALL"]}));
    assert!(container["image"]
        .as_str()
        .unwrap()
        .contains("/egress-controller:"));
    let arguments = args(container);
    assert_eq!(arguments[0], "run");
    assert!(arguments.contains(&"--leader-elect"));
    // The identity and the Lease namespace come from the downward API.
    let env: Vec<(&str, &str)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        env,
        [
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace")
        ]
    );
    // Each --wasmplugin base configuration is a key of the mounted ConfigMap, and compiles.
    let config_map = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    let targets: Vec<&str> = arguments
        .windows(2)
        .filter(|w| w[0] == "--wasmplugin")
        .map(|w| w[1])
        .collect();
    assert_eq!(targets.len(), 2, "{arguments:?}");
    for target in targets {
        let (_, file) = target.split_once('=').expect("a base configuration");
        let key = file.strip_prefix(&format!("{mount}/")).unwrap();
        let text = config_map["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing"));
        egress_controller::compile::BaseConfig::from_json(text.as_bytes())
            .unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    let listen = arguments
        .iter()
        .position(|a| *a == "--listen")
        .map(|i| arguments[i + 1])
        .unwrap();
    let port: u64 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(port));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
}
