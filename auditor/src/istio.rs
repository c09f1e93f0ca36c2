//! Names and facts Istio's sidecar injection leaves on a pod, and how to read them.
//!
//! Everything here is read from the pod itself (annotations, labels, containers); nothing is
//! guessed from images. The injection template and `pkg/kube/inject` in istio/istio are the source.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The proxy container Istio injects (a regular container or a native sidecar).
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// The init container that programs iptables when istio-cni is not used.
pub const INIT_CONTAINER: &str = "istio-init";
/// The init container istio-cni uses to check that the CNI plugin did program the pod.
pub const VALIDATION_CONTAINER: &str = "istio-validation";

/// Annotation the injector writes on every pod it injects.
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// Per-pod injection switch; as a label it wins over the (deprecated) annotation.
pub const INJECT_KEY: &str = "sidecar.istio.io/inject";
/// Namespace label that turns injection on (`enabled`) or off (`disabled`).
pub const NAMESPACE_INJECTION_LABEL: &str = "istio-injection";
/// Revision label; on a namespace (or pod) it selects a revision's injector.
pub const REVISION_LABEL: &str = "istio.io/rev";
/// Ambient enrolment label on a namespace or pod (`ambient` or `none`).
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// Pod annotation choosing REDIRECT, TPROXY or NONE.
pub const INTERCEPTION_MODE_ANNOTATION: &str = "sidecar.istio.io/interceptionMode";
/// Multus network attachment annotation; istio-cni setups on OpenShift list `istio-cni` there.
pub const CNI_NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";

/// `traffic.sidecar.istio.io/*` annotations, read by istio-cni (and turned into istio-init args).
pub mod traffic {
    pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
    pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
    pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
    pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
    pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
    pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
    pub const EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
    pub const KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
    pub const REROUTE_VIRTUAL_INTERFACES: &str = "istio.io/reroute-virtual-interfaces";
}

/// Names and values of Istio's ambient mode (`pkg/config/constants/constants.go`, the label and
/// annotation registries of istio/api, `cni/pkg/util/podutil.go`, `cni/pkg/nodeagent/net.go`).
pub mod ambient {
    /// `istio.io/dataplane-mode` value that enrols a namespace or pod.
    pub const MODE_AMBIENT: &str = "ambient";
    /// `istio.io/dataplane-mode` value with which a pod opts out of an ambient namespace.
    pub const MODE_NONE: &str = "none";
    /// Set by istio-cni once the pod's in-pod redirection is in place: `enabled`, or `pending`
    /// (rules written, no ztunnel has taken the pod yet); removed when the pod leaves ambient.
    /// Pod metadata a user can also write: a claim, which only the rules in the pod prove.
    pub const REDIRECTION_ANNOTATION: &str = "ambient.istio.io/redirection";
    pub const REDIRECTION_ENABLED: &str = "enabled";
    pub const REDIRECTION_PENDING: &str = "pending";
    /// Per-pod switch of ztunnel's DNS capture (boolean; the install's `dnsCapture` otherwise).
    pub const DNS_CAPTURE_ANNOTATION: &str = "ambient.istio.io/dns-capture";
    /// Per-pod switch that leaves inbound traffic uncaptured (outbound still is).
    pub const BYPASS_INBOUND_ANNOTATION: &str = "ambient.istio.io/bypass-inbound-capture";
    /// Namespaces istio-cni skips by default (`cni.excludeNamespaces`).
    pub const DEFAULT_CNI_EXCLUDED_NAMESPACES: [&str; 1] = ["kube-system"];
    /// ztunnel's own pods: `app=ztunnel` in Istio's system namespace (`IsZtunnelPod`).
    pub const ZTUNNEL_APP_LABEL_VALUE: &str = "ztunnel";
    /// Waypoint binding on a Namespace, Service, Pod or ServiceEntry: a waypoint name, or `none`.
    pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
    /// The waypoint's namespace when it is not the labelled object's own.
    pub const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";
    /// What a waypoint handles: `service` (the default), `workload`, `all` or `none`.
    pub const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";
    pub const WAYPOINT_FOR_DEFAULT: &str = "service";
    /// `gatewayClassName` of Istio's waypoints.
    pub const WAYPOINT_GATEWAY_CLASS: &str = "istio-waypoint";
    /// The in-pod rules' marks (`cni/pkg/iptables/iptables.go`): ztunnel's sockets carry
    /// `InpodMark` 1337 (0x539), connections ztunnel accepted carry `InpodTProxyMark` 0x111; both
    /// compared under the mask 0xfff.
    pub const INPOD_MARK: u32 = 0x539;
    pub const INPOD_TPROXY_MARK: u32 = 0x111;
    pub const INPOD_MASK: u32 = 0xfff;
    /// ztunnel's in-pod listeners.
    pub const ZTUNNEL_OUTBOUND_PORT: u16 = 15001;
    pub const ZTUNNEL_HBONE_PORT: u16 = 15008;
    pub const ZTUNNEL_DNS_PORT: u16 = 15053;
    /// The source address kubelet probes are SNATed to on the node, which the pod's rules let
    /// through (`DefaultHostProbeSNATIP`, `DefaultHostProbeSNATIPV6` in `cni/pkg/nodeagent`).
    pub const DEFAULT_HOST_PROBE_SNAT_IP: &str = "169.254.7.127";
    pub const DEFAULT_HOST_PROBE_SNAT_IPV6: &str = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff";
}

/// Namespaces Istio's injector never injects (`pkg/kube/inject/initializer.go`).
pub const IGNORED_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// The role the proxy plays, from its args (`proxy sidecar`, or `proxy router` / `proxy
/// waypoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProxyRole {
    /// Captures the pod's traffic through iptables/nftables.
    Sidecar,
    /// A gateway or an ambient waypoint: the pod *is* the proxy, nothing to capture.
    Gateway,
}

/// Where the pod's `istio-proxy` sits.
#[derive(Debug, Clone, Copy)]
pub struct ProxyContainer<'a> {
    pub container: &'a Container,
    /// True when it is an init container with `restartPolicy: Always` (Kubernetes native sidecar).
    pub native: bool,
    /// None when the args are not Istio's `proxy sidecar|router`.
    pub role: Option<ProxyRole>,
}

/// The container lists Istio recorded in `sidecar.istio.io/status` when it injected the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectionStatus {
    #[serde(default)]
    pub init_containers: Option<Vec<String>>,
    #[serde(default)]
    pub containers: Option<Vec<String>>,
    #[serde(default)]
    pub revision: Option<String>,
}

impl InjectionStatus {
    /// Parses the annotation value. `None` when it is not the JSON Istio writes.
    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_str(value).ok()
    }

    /// Whether the injector says it added a container (or init container) with this name.
    pub fn lists(&self, name: &str) -> bool {
        let has = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| v.iter().any(|n| n == name));
        has(&self.init_containers) || has(&self.containers)
    }
}

pub fn annotations(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    meta.annotations.as_ref().unwrap_or(&EMPTY)
}

pub fn labels(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&EMPTY)
}

pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    annotations(meta).get(key).map(String::as_str)
}

pub fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    labels(meta).get(key).map(String::as_str)
}

/// All init containers, empty when unset.
pub fn init_containers(spec: &PodSpec) -> &[Container] {
    spec.init_containers.as_deref().unwrap_or(&[])
}

/// Finds `istio-proxy`: a regular container, or a native sidecar init container. An init container
/// named `istio-proxy` without `restartPolicy: Always` is not a sidecar (it would have to exit
/// before the app starts), so it is not returned.
pub fn find_proxy(spec: &PodSpec) -> Option<ProxyContainer<'_>> {
    let role_of = |c: &Container| {
        let args = c.args.as_deref().unwrap_or(&[]);
        match (
            args.first().map(String::as_str),
            args.get(1).map(String::as_str),
        ) {
            (Some("proxy"), Some("sidecar")) => Some(ProxyRole::Sidecar),
            (Some("proxy"), Some("router" | "waypoint")) => Some(ProxyRole::Gateway),
            _ => None,
        }
    };
    if let Some(c) = spec.containers.iter().find(|c| c.name == PROXY_CONTAINER) {
        return Some(ProxyContainer {
            container: c,
            native: false,
            role: role_of(c),
        });
    }
    init_containers(spec)
        .iter()
        .find(|c| c.name == PROXY_CONTAINER && c.restart_policy.as_deref() == Some("Always"))
        .map(|c| ProxyContainer {
            container: c,
            native: true,
            role: role_of(c),
        })
}

pub fn find_init_container<'a>(spec: &'a PodSpec, name: &str) -> Option<&'a Container> {
    init_containers(spec).iter().find(|c| c.name == name)
}

/// The pod's injection status annotation, parsed. `Some(Default)` when present but unreadable.
pub fn injection_status(meta: &ObjectMeta) -> Option<InjectionStatus> {
    annotation(meta, STATUS_ANNOTATION).map(|v| InjectionStatus::parse(v).unwrap_or_default())
}

/// Istio's reading of an inject switch (`injectRequired` in `pkg/kube/inject/inject.go`):
/// `y`, `yes`, `true`, `on` (any case) inject, the empty string defers to the namespace, and any
/// other value turns injection off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectSwitch {
    On,
    Off,
    Default,
}

/// The pod's `sidecar.istio.io/inject` switch, label first, with where it came from.
pub fn pod_inject_switch(meta: &ObjectMeta) -> (InjectSwitch, Option<(&'static str, &str)>) {
    inject_switch(label(meta, INJECT_KEY), annotation(meta, INJECT_KEY))
}

/// [`pod_inject_switch`] from the label and annotation values.
pub fn inject_switch<'a>(
    label_value: Option<&'a str>,
    annotation_value: Option<&'a str>,
) -> (InjectSwitch, Option<(&'static str, &'a str)>) {
    let (source, value) = if let Some(v) = label_value {
        ("label", v)
    } else if let Some(v) = annotation_value {
        ("annotation", v)
    } else {
        return (InjectSwitch::Default, None);
    };
    let switch = match value.to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "on" => InjectSwitch::On,
        "" => InjectSwitch::Default,
        _ => InjectSwitch::Off,
    };
    (switch, Some((source, value)))
}

/// Whether the CNI plugin (rather than `istio-init`) programs this pod's capture. Signals: the
/// `istio-validation` init container, `istio-cni` in the Multus networks annotation, or an injected
/// pod carrying the interception-mode annotation the CNI injection template adds, with no
/// `istio-init`.
pub fn uses_cni(spec: &PodSpec, meta: &ObjectMeta) -> bool {
    if find_init_container(spec, INIT_CONTAINER).is_some() {
        return false;
    }
    if find_init_container(spec, VALIDATION_CONTAINER).is_some() {
        return true;
    }
    if annotation(meta, CNI_NETWORKS_ANNOTATION).is_some_and(|v| v.contains("istio-cni")) {
        return true;
    }
    annotation(meta, STATUS_ANNOTATION).is_some()
        && annotation(meta, INTERCEPTION_MODE_ANNOTATION).is_some_and(|m| m != "NONE")
}

/// Whether a container of this pod is one Istio injected (and so is judged against what Istio
/// injects rather than as an application container). Requires the status annotation; when that
/// annotation is readable it must also list the container.
pub fn is_istio_container(meta: &ObjectMeta, name: &str) -> bool {
    if !matches!(
        name,
        PROXY_CONTAINER | INIT_CONTAINER | VALIDATION_CONTAINER
    ) {
        return false;
    }
    match annotation(meta, STATUS_ANNOTATION) {
        None => false,
        Some(raw) => match InjectionStatus::parse(raw) {
            Some(status) => status.lists(name),
            // Unreadable status: fall back to the names Istio uses.
            None => true,
        },
    }
}
