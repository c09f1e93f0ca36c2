//! The files in istio/ that are not Istio CRs: the mesh settings (IstioOperator and Helm values)
//! and the per-namespace NetworkPolicy.

mod common;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceSpec;
use serde::Deserialize;
use serde_json::Value;

use common::{istio_dir, k8s, manifest_documents};
use egress_manifests::yaml;

// The IstioOperator fields used in istio/mesh, modelled on istio/istio
// operator/pkg/apis/types.go (IstioOperatorSpec, IstioComponentSpec, GatewayComponentSpec,
// KubernetesResources); `k8s.service` is a core/v1 ServiceSpec there and is checked as one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IstioOperator {
    api_version: String,
    kind: String,
    metadata: Value,
    spec: IstioOperatorSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IstioOperatorSpec {
    mesh_config: MeshConfig,
    components: Components,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Components {
    egress_gateways: Vec<GatewayComponent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GatewayComponent {
    name: String,
    namespace: String,
    enabled: bool,
    label: BTreeMap<String, String>,
    k8s: KubernetesResources,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubernetesResources {
    pod_annotations: BTreeMap<String, String>,
    service: Value,
}

// MeshConfig (istio/api mesh/v1alpha1/config.proto): outboundTrafficPolicy, and the access log
// provider of the egress gateway.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MeshConfig {
    outbound_traffic_policy: OutboundTrafficPolicy,
    extension_providers: Vec<ExtensionProvider>,
}

// MeshConfig.ExtensionProvider with its envoyFileAccessLog form (EnvoyFileAccessLogProvider:
// path, logFormat with `labels` for JSON lines).
#[derive(Deserialize, PartialEq, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExtensionProvider {
    name: String,
    envoy_file_access_log: EnvoyFileAccessLog,
}

#[derive(Deserialize, PartialEq, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnvoyFileAccessLog {
    path: String,
    log_format: AccessLogFormat,
}

#[derive(Deserialize, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
struct AccessLogFormat {
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboundTrafficPolicy {
    mode: OutboundMode,
}

#[derive(Deserialize, PartialEq, Debug)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
enum OutboundMode {
    REGISTRY_ONLY,
    ALLOW_ANY,
    ALLOW_ANY_DYNAMIC_DNS,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IstiodValues {
    mesh_config: MeshConfig,
}

// Values of the istio/gateway chart, after its values.schema.json ($defs.values: labels,
// podAnnotations, service.type, service.ports[].{name, port, protocol, targetPort}).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GatewayChartValues {
    labels: BTreeMap<String, String>,
    pod_annotations: BTreeMap<String, String>,
    service: GatewayChartService,
}

// The fields of Istio's ProxyConfig (`proxy.istio.io/config`) set here (istio/api
// mesh/v1alpha1/proxy.proto `ProxyStatsMatcher`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProxyConfig {
    proxy_stats_matcher: ProxyStatsMatcher,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProxyStatsMatcher {
    inclusion_prefixes: Vec<String>,
}

/// The counters the filter defines, as Envoy names them (`wasmcustom.` + the filter's name).
const FILTER_STATS_PREFIX: &str = "wasmcustom.egress_filter";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayChartService {
    #[serde(rename = "type")]
    kind: String,
    ports: Vec<GatewayChartPort>,
}

#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GatewayChartPort {
    name: String,
    port: u16,
    target_port: u16,
    protocol: String,
}

fn single_document(path: &str) -> Value {
    let documents = yaml::load_documents(&istio_dir().join(path)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(documents.len(), 1, "{path}");
    documents.into_iter().next().unwrap().value
}

fn parse<T: for<'de> Deserialize<'de>>(path: &str, value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn istio_operator_sets_registry_only_and_the_egress_gateway() {
    let path = "mesh/istio-operator.yaml";
    let operator: IstioOperator = parse(path, single_document(path));
    assert_eq!(operator.api_version, "install.istio.io/v1alpha1");
    assert_eq!(operator.kind, "IstioOperator");
    assert!(operator.metadata["name"].is_string());
    assert_eq!(
        operator.spec.mesh_config.outbound_traffic_policy.mode,
        OutboundMode::REGISTRY_ONLY
    );
    let [gateway] = operator.spec.components.egress_gateways.as_slice() else {
        panic!("{path}: expected one egress gateway");
    };
    assert!(gateway.enabled);
    assert_eq!(
        (gateway.name.as_str(), gateway.namespace.as_str()),
        ("istio-egressgateway", "istio-system")
    );
    assert_eq!(
        gateway.label.get("istio").map(String::as_str),
        Some("egressgateway")
    );
    k8s::check_as::<ServiceSpec>(&gateway.k8s.service)
        .unwrap_or_else(|e| panic!("{path}: spec.components.egressGateways[0].k8s.service: {e}"));
}

/// The gateway's access log carries the filter's decision: the provider the Telemetry object
/// selects is in both install forms alike, and the filter state it prints is the one the real
/// filter sets on a stream.
#[test]
fn the_access_log_prints_the_decision_the_filter_sets() {
    let helm: IstiodValues = parse(
        "mesh/helm-values-istiod.yaml",
        single_document("mesh/helm-values-istiod.yaml"),
    );
    let operator: IstioOperator = parse(
        "mesh/istio-operator.yaml",
        single_document("mesh/istio-operator.yaml"),
    );
    assert_eq!(
        helm.mesh_config.extension_providers,
        operator.spec.mesh_config.extension_providers
    );
    let telemetry = single_document("telemetry-decision-log.yaml");
    let selected = telemetry["spec"]["accessLogging"][0]["providers"][0]["name"]
        .as_str()
        .unwrap_or_default();
    let provider = helm
        .mesh_config
        .extension_providers
        .iter()
        .find(|p| p.name == selected)
        .unwrap_or_else(|| panic!("no extension provider {selected:?} in the mesh settings"));
    assert_eq!(
        telemetry["spec"]["selector"]["matchLabels"]["istio"],
        "egressgateway"
    );
    let labels = &provider.envoy_file_access_log.log_format.labels;
    let operator_text = labels.get("egress_guard").expect("an egress_guard field");
    let key = operator_text
        .strip_prefix("%FILTER_STATE(")
        .and_then(|rest| rest.strip_suffix(":PLAIN)%"))
        .unwrap_or_else(|| panic!("not a plain FILTER_STATE operator: {operator_text}"));
    // Queries are kept out of the log, as the filter keeps them out of its own line.
    assert!(labels.values().all(|v| !v.contains(":PATH")), "{labels:?}");

    // The filter sets that key, for an allowed and for a denied request.
    let host = egress_sim::Host::from_file(
        &common::built_filter_wasm(),
        egress_sim::VmConfig::default(),
        egress_sim::HostOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = br#"{"log":{"allowed":false},"policies":[{"name":"allow-api","rules":[{"to":[{"operation":{"hosts":["api.example.com"]}}]}]}]}"#;
    let mut gateway = host
        .start(
            vec![egress_sim::PluginConfig::http(
                "egress-guard",
                "egress-guard",
                config.to_vec(),
            )],
            1,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    for (authority, decision) in [("api.example.com", "allow"), ("evil.example", "deny")] {
        let outcome = gateway
            .worker(0)
            .http(&egress_sim::HttpRequest::get(authority, "/"))
            .unwrap_or_else(|e| panic!("{e}"));
        let value = outcome
            .filter_state(key)
            .unwrap_or_else(|| panic!("{authority}: no {key} in {:?}", outcome.filter_state));
        assert!(
            value.contains(&format!(r#""decision":"{decision}""#)),
            "{authority}: {value}"
        );
    }
}

#[test]
fn helm_values_match_the_operator_form() {
    let istiod: IstiodValues = parse(
        "mesh/helm-values-istiod.yaml",
        single_document("mesh/helm-values-istiod.yaml"),
    );
    assert_eq!(
        istiod.mesh_config.outbound_traffic_policy.mode,
        OutboundMode::REGISTRY_ONLY
    );

    let gateway: GatewayChartValues = parse(
        "mesh/helm-values-egressgateway.yaml",
        single_document("mesh/helm-values-egressgateway.yaml"),
    );
    let operator = single_document("mesh/istio-operator.yaml");
    let operator_gateway = &operator["spec"]["components"]["egressGateways"][0];
    // Both install forms give the same gateway: same labels, same Service ports.
    let operator_labels: BTreeMap<String, String> =
        serde_json::from_value(operator_gateway["label"].clone()).unwrap();
    assert_eq!(gateway.labels, operator_labels);
    assert_eq!(gateway.service.kind, "ClusterIP");
    let operator_ports: Vec<GatewayChartPort> =
        serde_json::from_value(operator_gateway["k8s"]["service"]["ports"].clone()).unwrap();
    assert_eq!(gateway.service.ports, operator_ports);
}

/// Istio's bootstrap keeps only its own stats (`reporter=`, `component`, `istio`, ...): the
/// gateway's proxy config must include the filter's `wasmcustom.egress_filter` counters, in
/// both install forms alike.
#[test]
fn the_gateway_keeps_the_filters_counters() {
    let proxy_config = |path: &str, annotations: &BTreeMap<String, String>| -> ProxyConfig {
        let text = annotations
            .get("proxy.istio.io/config")
            .unwrap_or_else(|| panic!("{path}: no proxy.istio.io/config annotation"));
        let value: Value = serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{path}: {e}"));
        parse(path, value)
    };
    let path = "mesh/istio-operator.yaml";
    let operator: IstioOperator = parse(path, single_document(path));
    let operator_annotations = &operator.spec.components.egress_gateways[0]
        .k8s
        .pod_annotations;
    let config = proxy_config(path, operator_annotations);
    assert!(
        config
            .proxy_stats_matcher
            .inclusion_prefixes
            .iter()
            .any(|p| FILTER_STATS_PREFIX.starts_with(p.as_str())),
        "{path}: {:?}",
        config.proxy_stats_matcher.inclusion_prefixes
    );
    let path = "mesh/helm-values-egressgateway.yaml";
    let gateway: GatewayChartValues = parse(path, single_document(path));
    assert_eq!(&gateway.pod_annotations, operator_annotations);
}

/// The NetworkPolicy is a valid networking/v1 object and opens exactly DNS, istiod and the
/// gateway's pod ports (the Service targetPorts of both install forms).
#[test]
fn app_namespace_networkpolicy_allows_only_dns_istiod_and_gateway() {
    let documents = manifest_documents(&istio_dir());
    // ambient/ has its own policies (ambient_manifests.rs).
    let ambient = istio_dir().join("ambient");
    let policies: Vec<&Value> = documents
        .iter()
        .filter(|d| !d.path.starts_with(&ambient))
        .map(|d| &d.value)
        .filter(|v| v["kind"] == "NetworkPolicy")
        .collect();
    assert_eq!(policies.len(), 1);
    let policy = policies[0];
    k8s::check_object(policy).unwrap_or_else(|e| panic!("NetworkPolicy: {e}"));
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Egress"]));
    assert_eq!(
        policy["spec"]["podSelector"],
        serde_json::json!({}),
        "all pods of the namespace"
    );

    let mut allowed = Vec::new();
    for rule in policy["spec"]["egress"].as_array().unwrap() {
        let peers = rule["to"].as_array().expect("every rule names its peers");
        assert!(
            !peers.is_empty() && rule["ports"].is_array(),
            "no open-ended rule: {rule}"
        );
        for peer in peers {
            assert!(peer["ipBlock"].is_null(), "no ipBlock peers: {peer}");
            let namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                .as_str()
                .expect("peers name their namespace");
            let pods = peer["podSelector"]["matchLabels"].to_string();
            for port in rule["ports"].as_array().unwrap() {
                allowed.push(format!(
                    "{namespace} {pods} {}/{}",
                    port["protocol"].as_str().unwrap(),
                    port["port"]
                ));
            }
        }
    }
    allowed.sort();
    assert_eq!(
        allowed,
        [
            r#"istio-system {"app":"istiod"} TCP/15012"#,
            r#"istio-system {"istio":"egressgateway"} TCP/8080"#,
            r#"istio-system {"istio":"egressgateway"} TCP/8443"#,
            r#"kube-system {"k8s-app":"kube-dns"} TCP/53"#,
            r#"kube-system {"k8s-app":"kube-dns"} UDP/53"#,
        ]
    );
    let target_ports: Vec<u64> = single_document("mesh/istio-operator.yaml")["spec"]["components"]
        ["egressGateways"][0]["k8s"]["service"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["targetPort"].as_u64().unwrap())
        .collect();
    assert_eq!(target_ports, [8080, 8443]);
}

/// The object checks above are not vacuous: a misplaced field is caught.
#[test]
fn k8s_type_check_rejects_unknown_and_misplaced_fields() {
    let documents = manifest_documents(&istio_dir());
    let mut policy = documents
        .iter()
        .map(|d| d.value.clone())
        .find(|v| v["kind"] == "NetworkPolicy")
        .unwrap();
    policy["spec"]["egress"][0]["port"] = serde_json::json!(53);
    let error = k8s::check_object(&policy).unwrap_err();
    assert!(error.contains("spec.egress[0].port: dropped"), "{error}");

    let mut operator = single_document("mesh/istio-operator.yaml");
    operator["spec"]["components"]["egressGateways"][0]["k8s"]["service"]["ports"][0]
        ["targetport"] = serde_json::json!(8080);
    let service = &operator["spec"]["components"]["egressGateways"][0]["k8s"]["service"];
    assert!(k8s::check_as::<ServiceSpec>(service)
        .unwrap_err()
        .contains("targetport: dropped"));

    let mut values = single_document("mesh/helm-values-istiod.yaml");
    values["meshConfig"]["outboundTrafficPolicy"]["mode"] = serde_json::json!("REGISTRY-ONLY");
    assert!(serde_json::from_value::<IstiodValues>(values).is_err());
}
