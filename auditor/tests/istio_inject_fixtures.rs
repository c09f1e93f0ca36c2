//! Istio's own sidecar-injection golden data (`istio/inject/` under the shared fixtures, see its
//! INDEX.md). Every injected workload is placed in an injected namespace (with a REGISTRY_ONLY
//! mesh and an egress NetworkPolicy, so only the workload's own settings matter) and must get
//! exactly the findings its settings imply. The un-injected inputs, judged as the pods Istio will
//! make of them, must get the same findings as Istio's actual output.
//!
//! The fixtures are found through `EGRESS_GUARD_FIXTURES` (default: `../shared/fixtures` next to
//! the repository); when absent, the tests print why and pass without checking.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use egress_auditor::capture::{CaptureConfig, CaptureSource, InterceptionMode};
use egress_auditor::checks::{check_all, CheckOptions};
use egress_auditor::sources::files::{load_paths, load_str};

fn inject_dir() -> Option<PathBuf> {
    let root = match std::env::var_os("EGRESS_GUARD_FIXTURES") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"),
    };
    let dir = root.join("istio/inject");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "skipping: {} not found (set EGRESS_GUARD_FIXTURES)",
            dir.display()
        );
        None
    }
}

/// Namespaces used by the fixtures (most have none and land in `default`).
const NAMESPACES: [&str; 4] = ["default", "test", "test-ns", "sample"];

fn context_yaml() -> String {
    let mut out = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n",
    );
    for ns in NAMESPACES {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{istio-injection: enabled}}}}\n\
             ---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: egress, namespace: {ns}}}\n\
             spec: {{podSelector: {{}}, policyTypes: [Egress]}}\n"
        ));
    }
    out
}

/// Scans one fixture in the injected context; returns `rule:severity` for each finding.
fn findings_for(dir: &Path, file: &str) -> Vec<String> {
    let ctx_dir = tempfile::tempdir().unwrap();
    let ctx = ctx_dir.path().join("context.yaml");
    std::fs::write(&ctx, context_yaml()).unwrap();
    let loaded = load_paths(&[ctx, dir.join(file)]).unwrap_or_else(|e| panic!("{file}: {e:?}"));
    assert!(
        !loaded.snapshot.workloads.is_empty(),
        "{file}: no workload read"
    );
    check_all(&loaded.snapshot, &CheckOptions::default())
        .iter()
        .map(|f| format!("{}:{}", f.rule, f.severity))
        .collect()
}

/// What each injected output implies (file -> findings as `rule:severity`).
fn injected_expectations() -> BTreeMap<&'static str, Vec<&'static str>> {
    let none: Vec<&str> = Vec::new();
    let mut m = BTreeMap::new();
    for clean in [
        "daemonset.yaml.injected",
        "explicit-security-context.yaml.injected",
        "gateway.yaml.injected",
        "hello-namespace.yaml.injected",
        "hello-old-version.yaml.injected",
        "hello-openshift.yaml.injected",
        "hello-tproxy.yaml.injected",
        "hello.proxyHoldsApplication.yaml.injected",
        "hello.yaml.cni.injected",
        "hello.yaml.injected",
        "job.yaml.injected",
        "kubevirtInterfaces.yaml.injected",
        "multi-container.yaml.injected",
        "multi-init.yaml.injected",
        "native-sidecar-old-version.yaml.injected",
        "native-sidecar-opt-in.yaml.injected",
        "native-sidecar-opt-out.yaml.injected",
        "native-sidecar.yaml.injected",
        "only-proxy-container.yaml.injected",
        "pod.yaml.injected",
        "proxy-override-runas.yaml.cni.injected",
        "proxy-override-runas.yaml.injected",
        "proxy-override-runas.yaml.tproxy.injected",
        "reroute-virtual-interfaces.yaml.injected",
        "status_annotations.yaml.injected",
    ] {
        m.insert(clean, none.clone());
    }
    // hostNetwork: Istio skipped injection.
    m.insert(
        "hello-host-network.yaml.injected",
        vec!["host-network:high"],
    );
    m.insert(
        "hello-host-network-with-ns.yaml.injected",
        vec!["host-network:high"],
    );
    // sidecar.istio.io/inject: "false".
    m.insert("hello-ignore.yaml.injected", vec!["sidecar-opt-out:medium"]);
    // interceptionMode NONE: nothing captured.
    m.insert(
        "init-no-intercept-no-native-sidecar.yaml.injected",
        vec!["capture-exclusion:critical"],
    );
    // The user replaced istio-init's args ("my custom args"): capture cannot be vouched for.
    m.insert(
        "proxy-override.yaml.injected",
        vec!["capture-exclusion:high"],
    );
    // The user replaced the proxy command with plain `envoy -c my-config.yaml`: not Istio's sidecar.
    m.insert(
        "proxy-override-args.yaml.injected",
        vec!["sidecar-missing:high"],
    );
    // -i lists only 127.0.0.1/24,10.96.0.1/24 (+ -x, -o 7,8,9): everything else goes out directly.
    m.insert(
        "traffic-annotations.yaml.injected",
        vec!["capture-exclusion:critical"],
    );
    // -i "": no outbound capture by address.
    m.insert(
        "traffic-annotations-empty-includes.yaml.injected",
        vec!["capture-exclusion:critical"],
    );
    // -i * with -x of two private /24s.
    m.insert(
        "traffic-annotations-wildcards.yaml.injected",
        vec!["capture-exclusion:low"],
    );
    // values.global.proxy.includeIPRanges narrows -i to two ranges.
    m.insert(
        "traffic-params.yaml.injected",
        vec!["capture-exclusion:critical"],
    );
    m
}

#[test]
fn every_injected_workload_gets_exactly_its_findings() {
    let Some(dir) = inject_dir() else { return };
    let expectations = injected_expectations();
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if !name.ends_with(".injected") {
            continue;
        }
        let Some(want) = expectations.get(name.as_str()) else {
            failures.push(format!("{name}: no expectation written for this fixture"));
            continue;
        };
        seen.insert(name.clone());
        let mut got = findings_for(&dir, &name);
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        if got != want {
            failures.push(format!("{name}: expected {want:?}, got {got:?}"));
        }
    }
    for name in expectations.keys() {
        if !seen.contains(*name) {
            failures.push(format!("{name}: listed but not found in {}", dir.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The inputs have not met the injector: they are judged as the pod Istio will make of them. For
/// each input whose settings are its own (annotations, its own istio-init/istio-proxy fields) that
/// must give the same findings as Istio's actual output for it.
#[test]
fn uninjected_inputs_are_judged_as_istio_will_inject_them() {
    let Some(dir) = inject_dir() else { return };
    let injected = injected_expectations();
    let mut failures = Vec::new();
    let mut compared = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if !name.ends_with(".yaml") {
            continue;
        }
        let mut got = findings_for(&dir, &name);
        got.sort();
        let want: Vec<String> = if name.starts_with("traffic-annotations-bad-") {
            // The injector rejects these annotations.
            vec!["capture-exclusion:high".to_string()]
        } else if name == "traffic-params.yaml" {
            // Its narrowing comes from install values (values.global.proxy.includeIPRanges),
            // which a manifest does not show.
            Vec::new()
        } else {
            let output = format!("{name}.injected");
            let Some(w) = injected.get(output.as_str()) else {
                failures.push(format!("{name}: no injected output to compare with"));
                continue;
            };
            compared += 1;
            let mut w: Vec<String> = w.iter().map(|s| s.to_string()).collect();
            w.sort();
            w
        };
        if got != want {
            failures.push(format!("{name}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(
        compared >= 25,
        "only {compared} inputs compared with their injected output"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn capture_of(dir: &Path, file: &str) -> CaptureConfig {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let loaded = load_str(file, &text).unwrap();
    let w = &loaded.snapshot.workloads[0];
    CaptureConfig::from_pod(&w.spec, &w.meta)
        .unwrap()
        .unwrap_or_else(|| panic!("{file}: not seen as injected"))
}

#[test]
fn capture_model_matches_istio_injection() {
    let Some(dir) = inject_dir() else { return };

    let hello = capture_of(&dir, "hello.yaml.injected");
    assert_eq!(
        hello.source,
        CaptureSource::InitContainer {
            container: "istio-init".into()
        }
    );
    assert_eq!(
        (hello.proxy_uids.clone(), hello.proxy_gids.clone()),
        (vec![1337], vec![1337])
    );
    assert_eq!(hello.interception_mode, InterceptionMode::Redirect);
    assert_eq!(hello.exclude_inbound_ports, vec![15090, 15021, 15020]);
    assert!(hello.outbound_narrowings().is_empty());

    // The UID excluded from capture follows the proxy's runAsUser; -g defaults to -u.
    let runas = capture_of(&dir, "proxy-override-runas.yaml.injected");
    assert_eq!(
        (runas.proxy_uids, runas.proxy_gids),
        (vec![1234], vec![1234])
    );
    // With istio-cni, the proxy's runAsUser and runAsGroup.
    let cni = capture_of(&dir, "proxy-override-runas.yaml.cni.injected");
    assert_eq!(cni.source, CaptureSource::CniAnnotations);
    assert!(cni.cni);
    assert!(cni.run_validation);
    assert_eq!((cni.proxy_uids, cni.proxy_gids), (vec![1234], vec![4321]));
    let tproxy = capture_of(&dir, "proxy-override-runas.yaml.tproxy.injected");
    assert_eq!(tproxy.interception_mode, InterceptionMode::Tproxy);
    assert_eq!(tproxy.proxy_uids, vec![1234]);

    let openshift = capture_of(&dir, "hello-openshift.yaml.injected");
    assert_eq!(openshift.proxy_uids, vec![1000629999]);

    let kubevirt = capture_of(&dir, "kubevirtInterfaces.yaml.injected");
    assert_eq!(
        kubevirt.reroute_virtual_interfaces,
        vec!["net1".to_string()]
    );

    let traffic = capture_of(&dir, "traffic-annotations.yaml.injected");
    assert_eq!(traffic.exclude_outbound_ports, vec![7, 8, 9]);
    assert_eq!(traffic.exclude_outbound_ip_ranges.len(), 2);

    let none = capture_of(&dir, "init-no-intercept-no-native-sidecar.yaml.injected");
    assert_eq!(none.interception_mode, InterceptionMode::None);
    assert!(!none.captures_outbound());
}
