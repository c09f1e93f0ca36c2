//! Writes a synthetic cluster of injected pods for the scan benchmark (docs/BENCHMARKS.md).
//!
//! `cargo run --release -p egress-auditor --example generate_manifests -- DIR PODS [PODS_PER_FILE] [--json]`
//!
//! DIR gets `cluster.yaml` (namespaces, mesh ConfigMap, egress NetworkPolicies) and
//! `pods-NNNN.yaml` files of multi-document YAML, or with `--json` `cluster.json` and
//! `pods-NNNN.json` files each holding one `List` as `kubectl get pods -A -o json` prints it
//! (PODS_PER_FILE = PODS gives one big List), each pod shaped like `kubectl get pod -o yaml` of
//! an Istio-injected pod (istio-init, native istio-proxy sidecar with its usual env, probes and
//! volumes). About one pod in twenty carries a bypass (opt-out, proxy UID, capture exclusion,
//! NET_ADMIN, hostNetwork, missing sidecar), so the scan has findings to report.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

const NAMESPACES: usize = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    args.retain(|a| a != "--json");
    let mut args = args.into_iter();
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: generate_manifests DIR PODS [PODS_PER_FILE] [--json]")?,
    );
    let pods: usize = args.next().ok_or("missing PODS")?.parse()?;
    let per_file: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    std::fs::create_dir_all(&dir)?;

    let mut cluster = String::new();
    cluster.push_str(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |-\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n",
    );
    for n in 0..NAMESPACES {
        let ns = format!("team-{n:03}");
        // Every tenth namespace lacks its egress NetworkPolicy.
        write!(
            cluster,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    istio-injection: enabled\n    kubernetes.io/metadata.name: {ns}\n"
        )?;
        if n % 10 != 0 {
            write!(
                cluster,
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: egress-via-mesh\n  namespace: {ns}\nspec:\n  podSelector: {{}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector:\n        matchLabels:\n          kubernetes.io/metadata.name: istio-system\n  - ports:\n    - protocol: UDP\n      port: 53\n"
            )?;
        }
    }
    if json {
        write_json_list(&dir.join("cluster.json"), &cluster)?;
    } else {
        std::fs::write(dir.join("cluster.yaml"), cluster)?;
    }

    let mut file_index = 0;
    let mut written = 0;
    while written < pods {
        let count = per_file.min(pods - written);
        let mut out = String::with_capacity(count * 6000);
        for i in written..written + count {
            out.push_str("---\n");
            out.push_str(&pod(i));
        }
        if json {
            write_json_list(&dir.join(format!("pods-{file_index:04}.json")), &out)?;
        } else {
            let path = dir.join(format!("pods-{file_index:04}.yaml"));
            std::fs::File::create(&path)?.write_all(out.as_bytes())?;
        }
        written += count;
        file_index += 1;
    }
    eprintln!(
        "wrote {pods} pods in {file_index} files to {}",
        dir.display()
    );
    Ok(())
}

/// Writes the documents of `yaml` as one `List`, indented as kubectl prints JSON.
fn write_json_list(path: &std::path::Path, yaml: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut items = Vec::new();
    for doc in yaml.split("---\n").filter(|d| !d.trim().is_empty()) {
        items.push(serde_saphyr::from_str::<serde_json::Value>(doc)?);
    }
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items});
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut writer = serde_json::Serializer::with_formatter(
        file,
        serde_json::ser::PrettyFormatter::with_indent(b"    "),
    );
    serde::Serialize::serialize(&list, &mut writer)?;
    writer.into_inner().flush()?;
    Ok(())
}

fn pod(i: usize) -> String {
    let ns = format!("team-{:03}", i % NAMESPACES);
    let app = format!("svc-{}", i / 7 % 500);
    let name = format!("{app}-{i:06}-x7k2p");
    // Variants every 20 pods.
    let variant = i % 20;
    let mut annotations = String::new();
    let mut labels = format!("    app: {app}\n    version: v1\n");
    let mut app_security =
        "      allowPrivilegeEscalation: false\n      runAsNonRoot: true\n      runAsUser: 10001\n"
            .to_string();
    let mut init_extra = String::new();
    let mut host_network = "";
    let injected = variant != 1 && variant != 6;
    match variant {
        1 => labels.push_str("    sidecar.istio.io/inject: \"false\"\n"),
        2 => app_security = "      runAsUser: 1337\n".to_string(),
        3 => {
            init_extra = "    - -o\n    - \"5432\"\n".to_string();
            annotations.push_str("    traffic.sidecar.istio.io/excludeOutboundPorts: \"5432\"\n");
        }
        4 => app_security = "      capabilities:\n        add:\n        - NET_ADMIN\n".to_string(),
        5 => {
            init_extra = "    - -x\n    - 10.0.0.0/8\n".to_string();
        }
        6 => host_network = "  hostNetwork: true\n",
        _ => {}
    }
    let mut s = String::with_capacity(6000);
    let _ = write!(
        s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  uid: 6f1c2a4e-{i:08x}\n  resourceVersion: \"{rv}\"\n  labels:\n{labels}    security.istio.io/tlsMode: istio\n    service.istio.io/canonical-name: {app}\n    service.istio.io/canonical-revision: v1\n  annotations:\n    kubectl.kubernetes.io/default-container: {app}\n    prometheus.io/path: /stats/prometheus\n    prometheus.io/port: \"15020\"\n    prometheus.io/scrape: \"true\"\n{annotations}",
        rv = 1_000_000 + i
    );
    if injected {
        s.push_str("    istio.io/rev: default\n    sidecar.istio.io/status: '{\"initContainers\":[\"istio-init\",\"istio-proxy\"],\"containers\":null,\"volumes\":[\"workload-socket\",\"credential-socket\",\"workload-certs\",\"istio-envoy\",\"istio-data\",\"istio-podinfo\",\"istio-token\",\"istiod-ca-cert\"],\"imagePullSecrets\":null,\"revision\":\"default\"}'\n");
    }
    let _ = write!(
        s,
        "  ownerReferences:\n  - apiVersion: apps/v1\n    kind: ReplicaSet\n    name: {app}-7d9f8b6c5\n    uid: 0b7e3c2d-{i:08x}\n    controller: true\nspec:\n{host_network}  serviceAccountName: {app}\n  containers:\n  - name: {app}\n    image: registry.example.com/{app}:1.4.2\n    ports:\n    - containerPort: 8080\n      name: http\n      protocol: TCP\n    resources:\n      limits:\n        cpu: 500m\n        memory: 256Mi\n      requests:\n        cpu: 100m\n        memory: 128Mi\n    readinessProbe:\n      httpGet:\n        path: /app-health/{app}/readyz\n        port: 15020\n    securityContext:\n{app_security}    volumeMounts:\n    - mountPath: /var/run/secrets/kubernetes.io/serviceaccount\n      name: kube-api-access\n      readOnly: true\n"
    );
    if injected {
        let _ = write!(
            s,
            "  initContainers:\n  - name: istio-init\n    image: docker.io/istio/proxyv2:1.27.1\n    args:\n    - istio-iptables\n    - -p\n    - \"15001\"\n    - -z\n    - \"15006\"\n    - -u\n    - \"1337\"\n    - -m\n    - REDIRECT\n    - -i\n    - '*'\n    - -x\n    - \"\"\n    - -b\n    - '*'\n    - -d\n    - 15090,15021,15020\n{init_extra}    - --log_output_level=default:info\n    resources:\n      limits:\n        cpu: \"2\"\n        memory: 1Gi\n      requests:\n        cpu: 100m\n        memory: 128Mi\n    securityContext:\n      allowPrivilegeEscalation: false\n      capabilities:\n        add:\n        - NET_ADMIN\n        - NET_RAW\n        drop:\n        - ALL\n      privileged: false\n      readOnlyRootFilesystem: false\n      runAsGroup: 0\n      runAsNonRoot: false\n      runAsUser: 0\n  - name: istio-proxy\n    image: docker.io/istio/proxyv2:1.27.1\n    restartPolicy: Always\n    args:\n    - proxy\n    - sidecar\n    - --domain\n    - $(POD_NAMESPACE).svc.cluster.local\n    - --proxyLogLevel=warning\n    - --proxyComponentLogLevel=misc:error\n    - --log_output_level=default:info\n    env:\n    - name: PILOT_CERT_PROVIDER\n      value: istiod\n    - name: CA_ADDR\n      value: istiod.istio-system.svc:15012\n    - name: POD_NAME\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.name\n    - name: POD_NAMESPACE\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.namespace\n    - name: INSTANCE_IP\n      valueFrom:\n        fieldRef:\n          fieldPath: status.podIP\n    - name: SERVICE_ACCOUNT\n      valueFrom:\n        fieldRef:\n          fieldPath: spec.serviceAccountName\n    - name: ISTIO_META_POD_PORTS\n      value: |-\n        [\n            {{\"name\":\"http\",\"containerPort\":8080,\"protocol\":\"TCP\"}}\n        ]\n    - name: ISTIO_META_APP_CONTAINERS\n      value: {app}\n    - name: ISTIO_META_CLUSTER_ID\n      value: Kubernetes\n    - name: ISTIO_META_INTERCEPTION_MODE\n      value: REDIRECT\n    - name: ISTIO_META_WORKLOAD_NAME\n      value: {app}\n    - name: ISTIO_META_OWNER\n      value: kubernetes://apis/apps/v1/namespaces/{ns}/deployments/{app}\n    - name: ISTIO_META_MESH_ID\n      value: cluster.local\n    - name: TRUST_DOMAIN\n      value: cluster.local\n    ports:\n    - containerPort: 15090\n      name: http-envoy-prom\n      protocol: TCP\n    readinessProbe:\n      failureThreshold: 4\n      httpGet:\n        path: /healthz/ready\n        port: 15021\n      periodSeconds: 15\n      timeoutSeconds: 3\n    startupProbe:\n      failureThreshold: 600\n      httpGet:\n        path: /healthz/ready\n        port: 15021\n      periodSeconds: 1\n      timeoutSeconds: 3\n    resources:\n      limits:\n        cpu: \"2\"\n        memory: 1Gi\n      requests:\n        cpu: 100m\n        memory: 128Mi\n    securityContext:\n      allowPrivilegeEscalation: false\n      capabilities:\n        drop:\n        - ALL\n      privileged: false\n      readOnlyRootFilesystem: true\n      runAsGroup: 1337\n      runAsNonRoot: true\n      runAsUser: 1337\n    volumeMounts:\n    - mountPath: /var/run/secrets/workload-spiffe-uds\n      name: workload-socket\n    - mountPath: /var/run/secrets/istio\n      name: istiod-ca-cert\n    - mountPath: /var/lib/istio/data\n      name: istio-data\n    - mountPath: /etc/istio/proxy\n      name: istio-envoy\n    - mountPath: /var/run/secrets/tokens\n      name: istio-token\n    - mountPath: /etc/istio/pod\n      name: istio-podinfo\n"
        );
    }
    let _ = write!(
        s,
        "  volumes:\n  - name: workload-socket\n    emptyDir: {{}}\n  - name: istio-envoy\n    emptyDir:\n      medium: Memory\n  - name: istio-data\n    emptyDir: {{}}\n  - name: istio-podinfo\n    downwardAPI:\n      items:\n      - fieldRef:\n          fieldPath: metadata.labels\n        path: labels\n      - fieldRef:\n          fieldPath: metadata.annotations\n        path: annotations\n  - name: istio-token\n    projected:\n      sources:\n      - serviceAccountToken:\n          audience: istio-ca\n          expirationSeconds: 43200\n          path: istio-token\n  - name: istiod-ca-cert\n    configMap:\n      name: istio-ca-root-cert\n  - name: kube-api-access\n    projected:\n      sources:\n      - serviceAccountToken:\n          expirationSeconds: 3607\n          path: token\nstatus:\n  phase: Running\n  podIP: 10.{a}.{b}.{c}\n",
        a = i / 65536 % 256,
        b = i / 256 % 256,
        c = i % 256
    );
    s
}
