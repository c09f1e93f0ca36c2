//! Every Istio object in istio/ is valid for the CRD schemas Istio ships (crd-all.gen.yaml), and
//! the validator that says so rejects what the API server would reject or silently prune.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use egress_manifests::schema::CrdSchemas;
use egress_manifests::yaml;
use serde_json::{json, Value};

use common::{istio_dir, manifest_documents, object_name};

fn istio_crds() -> Option<CrdSchemas> {
    let path = common::fixtures_dir()?.join("istio/crds/crd-all.gen.yaml");
    let documents = yaml::load_documents(&path).unwrap_or_else(|e| panic!("{e}"));
    let values: Vec<Value> = documents.into_iter().map(|d| d.value).collect();
    let schemas = CrdSchemas::from_documents(&values).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        schemas.len() >= 30,
        "only {} CRD versions read",
        schemas.len()
    );
    Some(schemas)
}

fn is_istio_kind(object: &Value) -> bool {
    object["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/'))
        .is_some_and(|(group, _)| group.ends_with(".istio.io") && group != "install.istio.io")
}

fn violations_of(schemas: &CrdSchemas, object: &Value) -> Vec<String> {
    schemas
        .validate(object)
        .unwrap_or_else(|e| panic!("{}: {e}", object_name(object)))
        .violations
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn every_istio_object_in_istio_dir_matches_its_crd_schema() {
    let Some(schemas) = istio_crds() else { return };
    let mut kinds = BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    let mut unevaluated_rules = 0;
    for document in manifest_documents(&istio_dir()) {
        if !is_istio_kind(&document.value) {
            continue;
        }
        *kinds.entry(document.kind().to_string()).or_default() += 1;
        match schemas.validate(&document.value) {
            Ok(report) => {
                unevaluated_rules += report.unevaluated_rules.len();
                for violation in report.violations {
                    failures.push(format!("{}: {violation}", document.describe()));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", document.describe())),
        }
    }
    assert!(
        failures.is_empty(),
        "schema violations:\n{}",
        failures.join("\n")
    );
    // ambient/ adds three ServiceEntries and three WasmPlugins (its Gateways are Gateway API
    // objects, checked in ambient_manifests.rs); the rate limit service adds a DestinationRule.
    let expected = [
        ("DestinationRule", 2),
        ("EnvoyFilter", 1),
        ("Gateway", 1),
        ("ServiceEntry", 5),
        ("VirtualService", 2),
        ("WasmPlugin", 5),
    ];
    for (kind, count) in expected {
        assert_eq!(
            kinds.get(kind),
            Some(&count),
            "{kind} objects in istio/: {kinds:?}"
        );
    }
    println!("validated {kinds:?}; {unevaluated_rules} CEL rules applied and were not evaluated");
}

/// The validator must not reject what Istio itself documents as valid.
#[test]
fn istio_example_configs_pass_the_validator() {
    let Some(schemas) = istio_crds() else { return };
    let Some(fixtures) = common::fixtures_dir() else {
        return;
    };
    let egress = fixtures.join("istio/egress");
    let mut checked = 0;
    for name in [
        "docs-egress-gateway-http.yaml",
        "docs-egress-gateway-tls-passthrough.yaml",
        "api-envoyfilter-wasm-ecds-example.yaml",
        "tests_testdata_config_egressgateway.yaml",
        "tests_testdata_config_rule-route-via-egressgateway.yaml",
        "samples_bookinfo_networking_egress-rule-google-apis.yaml",
    ] {
        for document in yaml::load_documents(&egress.join(name)).unwrap_or_else(|e| panic!("{e}")) {
            let violations = violations_of(&schemas, &document.value);
            assert!(
                violations.is_empty(),
                "{}: {violations:?}",
                document.describe()
            );
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} example objects checked");
}

/// Takes a real manifest from istio/, applies one mistake, and expects a violation at `path`.
fn assert_rejected(
    schemas: &CrdSchemas,
    target: &str,
    mistake: &str,
    edit: impl FnOnce(&mut Value),
    path: &str,
    message: &str,
) {
    // `ambient/Kind/name` is an object of istio/ambient/, `Kind/name` one of the rest of istio/
    // (the ambient install reuses some names).
    let ambient = istio_dir().join("ambient");
    let (target, in_ambient) = match target.strip_prefix("ambient/") {
        Some(target) => (target, true),
        None => (target, false),
    };
    let mut object = manifest_documents(&istio_dir())
        .into_iter()
        .filter(|d| d.path.starts_with(&ambient) == in_ambient)
        .map(|d| d.value)
        .find(|v| {
            format!(
                "{}/{}",
                v["kind"].as_str().unwrap_or(""),
                v["metadata"]["name"].as_str().unwrap_or("")
            ) == target
        })
        .unwrap_or_else(|| panic!("no {target} in istio/"));
    assert!(
        violations_of(schemas, &object).is_empty(),
        "{target} must start valid"
    );
    edit(&mut object);
    let violations = violations_of(schemas, &object);
    assert!(
        violations
            .iter()
            .any(|v| v.starts_with(&format!("{path}: ")) && v.contains(message)),
        "{target} with {mistake}: expected {path}: …{message}… in {violations:?}"
    );
}

#[test]
fn validator_rejects_broken_istio_manifests() {
    let Some(schemas) = istio_crds() else { return };
    let s = &schemas;
    assert_rejected(
        s,
        "WasmPlugin/egress-filter-http",
        "a misspelt enum value",
        |o| o["spec"]["failStrategy"] = json!("FAIL_CLOSED"),
        "spec.failStrategy",
        "is not one of",
    );
    assert_rejected(
        s,
        "WasmPlugin/egress-filter-http",
        "a misspelt field",
        |o| {
            let sha = o["spec"]["sha256"].take();
            o["spec"]["sha265"] = sha;
        },
        "spec.sha265",
        "unknown field",
    );
    assert_rejected(
        s,
        "WasmPlugin/egress-filter-http",
        "a digest with upper case",
        |o| o["spec"]["sha256"] = json!("A".repeat(64)),
        "spec.sha256",
        "does not match pattern",
    );
    assert_rejected(
        s,
        "WasmPlugin/egress-filter-http",
        "an unquoted all-digit digest read as a number",
        |o| o["spec"]["sha256"] = json!(1234),
        "spec.sha256",
        "expected string",
    );
    assert_rejected(
        s,
        "WasmPlugin/egress-filter-network",
        "a duplicated match port",
        |o| o["spec"]["match"][0]["ports"] = json!([{"number": 443}, {"number": 443}]),
        "spec.match[0].ports[1]",
        "duplicate key",
    );
    assert_rejected(
        s,
        "WasmPlugin/egress-filter-http",
        "no url",
        |o| {
            o["spec"].as_object_mut().unwrap().remove("url");
        },
        "spec",
        "required field \"url\"",
    );
    assert_rejected(
        s,
        "Gateway/egress-gateway",
        "a port number written as a string",
        |o| o["spec"]["servers"][0]["port"]["number"] = json!("80"),
        "spec.servers[0].port.number",
        "expected integer",
    );
    assert_rejected(
        s,
        "Gateway/egress-gateway",
        "a misspelt TLS mode",
        |o| o["spec"]["servers"][1]["tls"]["mode"] = json!("PASS_THROUGH"),
        "spec.servers[1].tls.mode",
        "is not one of",
    );
    assert_rejected(
        s,
        "VirtualService/debian-mirror-via-egress-gateway",
        "a route without its destination host",
        |o| {
            o["spec"]["http"][1]["route"][0]["destination"]
                .as_object_mut()
                .unwrap()
                .remove("host");
        },
        "spec.http[1].route[0].destination",
        "required field \"host\"",
    );
    assert_rejected(
        s,
        "Gateway/egress-gateway",
        "a negative port",
        |o| o["spec"]["servers"][0]["port"]["number"] = json!(-80),
        "spec.servers[0].port.number",
        "below the minimum",
    );
    assert_rejected(
        s,
        "ServiceEntry/debian-mirror",
        "a lower-case resolution",
        |o| o["spec"]["resolution"] = json!("dns"),
        "spec.resolution",
        "is not one of",
    );
    assert_rejected(
        s,
        "DestinationRule/egress-gateway",
        "a field at the wrong level",
        |o| o["spec"]["subsets"][0]["tls"] = json!({"mode": "ISTIO_MUTUAL"}),
        "spec.subsets[0].tls",
        "unknown field",
    );
    assert_rejected(
        s,
        "EnvoyFilter/egress-filter-ecds",
        "a misspelt patch operation",
        |o| o["spec"]["configPatches"][1]["patch"]["operation"] = json!("INSERT_BEFOR"),
        "spec.configPatches[1].patch.operation",
        "is not one of",
    );
    assert_rejected(
        s,
        "ambient/WasmPlugin/egress-filter-http",
        "a target without its name",
        |o| {
            o["spec"]["targetRefs"][0]
                .as_object_mut()
                .unwrap()
                .remove("name");
        },
        "spec.targetRefs[0]",
        "required field \"name\"",
    );
    assert_rejected(
        s,
        "ambient/WasmPlugin/egress-filter-network",
        "targetRefs written as one object",
        |o| o["spec"]["targetRefs"] = o["spec"]["targetRefs"][0].clone(),
        "spec.targetRefs",
        "expected array",
    );
    assert_rejected(
        s,
        "ambient/ServiceEntry/payments-api",
        "a misspelt location",
        |o| o["spec"]["location"] = json!("EXTERNAL"),
        "spec.location",
        "is not one of",
    );
    assert_rejected(
        s,
        "EnvoyFilter/egress-filter-ecds",
        "null where the API server drops it",
        |o| o["spec"]["workloadSelector"] = Value::Null,
        "spec.workloadSelector",
        "not nullable",
    );
}

/// `kubectl apply -k istio/` installs exactly the files it lists, all valid.
#[test]
fn istio_kustomization_renders_the_istio_objects() {
    let Some(rendered) = common::render_kustomization(&istio_dir()) else {
        return;
    };
    let names: BTreeSet<String> = rendered.iter().map(object_name).collect();
    for expected in [
        "Gateway istio-system/egress-gateway",
        "DestinationRule istio-system/egress-gateway",
        "ServiceEntry istio-system/debian-mirror",
        "ServiceEntry istio-system/tls-destinations",
        "VirtualService istio-system/debian-mirror-via-egress-gateway",
        "VirtualService istio-system/tls-via-egress-gateway",
        "WasmPlugin istio-system/egress-filter-http",
        "WasmPlugin istio-system/egress-filter-network",
        "DestinationRule istio-system/limitador",
        "Telemetry istio-system/egress-gateway-decisions",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    assert_eq!(names.len(), 10, "{names:?}");
    if let Some(schemas) = istio_crds() {
        for object in &rendered {
            let violations = violations_of(&schemas, object);
            assert!(
                violations.is_empty(),
                "{}: {violations:?}",
                object_name(object)
            );
        }
    }
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn find<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} not found in istio/"))
}

/// The routing objects agree with each other: a host declared in one place and forgotten in
/// another would be dropped by REGISTRY_ONLY or routed nowhere.
#[test]
fn egress_routing_objects_agree() {
    let ambient = istio_dir().join("ambient");
    let documents: Vec<Value> = manifest_documents(&istio_dir())
        .into_iter()
        .filter(|d| !d.path.starts_with(&ambient))
        .map(|d| d.value)
        .collect();
    let gateway = find(&documents, "Gateway", "egress-gateway");
    let gateway_hosts = |tls_mode: &str| -> BTreeSet<String> {
        gateway["spec"]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["tls"]["mode"] == tls_mode)
            .flat_map(|s| strings(&s["hosts"]))
            .collect()
    };
    let subsets: BTreeSet<String> = find(&documents, "DestinationRule", "egress-gateway")["spec"]
        ["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str().map(String::from))
        .collect();

    // TLS passthrough: same hosts in the ServiceEntry, the Gateway, the VirtualService, the
    // mesh route's SNI list and one gateway route each; and the filter allows exactly them.
    let tls_hosts = strings(&find(&documents, "ServiceEntry", "tls-destinations")["spec"]["hosts"]);
    let tls_vs = find(&documents, "VirtualService", "tls-via-egress-gateway");
    assert_eq!(gateway_hosts("PASSTHROUGH"), tls_hosts);
    assert_eq!(strings(&tls_vs["spec"]["hosts"]), tls_hosts);
    let routes = tls_vs["spec"]["tls"].as_array().unwrap();
    let mut routed = BTreeSet::new();
    for route in routes {
        let from_mesh = strings(&route["match"][0]["gateways"]).contains("mesh");
        let sni = strings(&route["match"][0]["sniHosts"]);
        let destination = &route["route"][0]["destination"];
        if from_mesh {
            assert_eq!(
                sni, tls_hosts,
                "the mesh route must send every TLS host to the gateway"
            );
            assert!(subsets.contains(destination["subset"].as_str().unwrap()));
        } else {
            let host = destination["host"].as_str().unwrap().to_string();
            assert_eq!(
                sni,
                BTreeSet::from([host.clone()]),
                "gateway route for {host}"
            );
            routed.insert(host);
        }
    }
    assert_eq!(routed, tls_hosts, "one gateway route per TLS host");
    let network_plugin = find(&documents, "WasmPlugin", "egress-filter-network");
    let allowed_sni: BTreeSet<String> = network_plugin["spec"]["pluginConfig"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["action"] == "ALLOW")
        .flat_map(|p| p["rules"].as_array().unwrap().iter())
        .flat_map(|r| r["when"].as_array().unwrap().iter())
        .filter(|w| w["key"] == "connection.sni")
        .flat_map(|w| strings(&w["values"]))
        .collect();
    assert_eq!(
        allowed_sni, tls_hosts,
        "the network filter allows exactly the routed hosts"
    );

    // HTTP over mutual TLS: the gateway server, the ServiceEntry and the VirtualService name the
    // same hosts, and the DestinationRule subset sends the SNI the gateway's server expects.
    let http_hosts = strings(&find(&documents, "ServiceEntry", "debian-mirror")["spec"]["hosts"]);
    assert_eq!(gateway_hosts("ISTIO_MUTUAL"), http_hosts);
    let http_vs = find(
        &documents,
        "VirtualService",
        "debian-mirror-via-egress-gateway",
    );
    assert_eq!(strings(&http_vs["spec"]["hosts"]), http_hosts);
    let dr = find(&documents, "DestinationRule", "egress-gateway");
    let sni: BTreeSet<String> = dr["spec"]["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["trafficPolicy"]["portLevelSettings"][0]["tls"]["sni"].as_str())
        .map(String::from)
        .collect();
    assert_eq!(sni, http_hosts);
    for route in http_vs["spec"]["http"].as_array().unwrap() {
        if let Some(subset) = route["route"][0]["destination"]["subset"].as_str() {
            assert!(subsets.contains(subset), "subset {subset} is not defined");
        }
    }

    // Every WasmPlugin selects the gateway the Gateway object selects, and fails closed.
    for plugin in documents.iter().filter(|d| d["kind"] == "WasmPlugin") {
        assert_eq!(
            plugin["spec"]["selector"]["matchLabels"],
            gateway["spec"]["selector"]
        );
        assert_eq!(plugin["spec"]["failStrategy"], "FAIL_CLOSE");
        assert_eq!(plugin["spec"]["phase"], "AUTHZ");
    }
}
