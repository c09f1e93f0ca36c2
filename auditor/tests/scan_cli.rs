//! The `scan` command as a user runs it: the built binary, its exit codes, its located errors and
//! its output formats (JSON, table, SARIF, HTML).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_egress-auditor"))
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn scan(args: &[&str]) -> Output {
    bin()
        .arg("scan")
        .args(args)
        .output()
        .expect("run egress-auditor")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

const CLEAN_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: ok, namespace: plain}\nspec:\n  containers: [{name: app, image: app}]\n";

#[test]
fn broken_yaml_names_file_document_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "broken.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n   bad: indentation\nspec: {}\n",
    );
    let out = scan(&["--input", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:9: document 2: invalid YAML", f.display())),
        "{err}"
    );
    assert!(stdout(&out).is_empty(), "no report on bad input");
}

#[test]
fn pod_without_spec_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "nospec.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lonely, namespace: x}\n",
    );
    let out = scan(&["--input", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("nospec.yaml:1: document 1: Pod x/lonely: spec: Pod has no spec"),
        "{err}"
    );
}

#[test]
fn deployment_without_template_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "d.yaml",
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 1\n",
    );
    let out = scan(&["--input", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("Deployment d: spec.template: Deployment has no spec.template"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn wrong_types_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "types.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        securityContext:\n          runAsUser: root\n",
    );
    let out = scan(&["--input", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("Deployment shop/web: spec.template.spec.containers[0].securityContext.runAsUser: invalid type: string \"root\""),
        "{err}"
    );

    // Labels must be strings, as kubectl insists.
    let g = write(
        dir.path(),
        "labels.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {sidecar.istio.io/inject: false}\nspec:\n  containers: [{name: a}]\n",
    );
    let out = scan(&["--input", g.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("metadata.labels.sidecar.istio.io/inject"),
        "{}",
        stderr(&out)
    );

    // A list where a mapping belongs.
    let h = write(
        dir.path(),
        "containers.json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":{"name":"a"}}}"#,
    );
    let out = scan(&["--input", h.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .contains("containers.json:1: document 1: Pod j: spec.containers: invalid type: map"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn broken_json_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "b.json",
        "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Pod\",\n  \"metadata\": {\"name\": \"x\"\n}\n",
    );
    let out = scan(&["--input", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("b.json:6: document 1: invalid JSON"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn directory_with_one_bad_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a/good.yaml", CLEAN_POD);
    write(dir.path(), "b/nested/bad.yml", "kind: Pod\nmetadata: {name: x}\nspec:\n  containers: [{name: c, securityContext: {privileged: maybe}}]\n");
    write(
        dir.path(),
        "c/good.json",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"plain"}}"#,
    );
    write(dir.path(), "notes.txt", "not a manifest: [");
    let out = scan(&["--input", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(
            "b/nested/bad.yml:1: document 1: Pod x: spec.containers[0].securityContext.privileged"
        ),
        "{err}"
    );
    assert!(!err.contains("good"), "{err}");
    assert!(!err.contains("notes.txt"), "{err}");
    assert!(err.contains("1 problem in 1 file"), "{err}");
}

#[test]
fn missing_path_and_bad_usage_exit_2() {
    let out = scan(&["--input", "/nonexistent/manifests"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/manifests"),
        "{}",
        stderr(&out)
    );

    let out = scan(&[
        "--input",
        data("base.yaml").to_str().unwrap(),
        "--format",
        "xml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = scan(&[
        "--input",
        data("base.yaml").to_str().unwrap(),
        "--fail-on",
        "severe",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown severity"),
        "{}",
        stderr(&out)
    );
    let out = scan(&[]);
    assert_eq!(out.status.code(), Some(2));

    let empty = tempfile::tempdir().unwrap();
    let out = scan(&["--input", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no .yaml, .yml or .json files"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exit_codes_follow_fail_on() {
    let base = data("base.yaml");
    let base = base.to_str().unwrap();
    let out = scan(&["--input", base]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // cases/privileges.yaml has high and critical findings.
    let case = data("cases/privileges.yaml");
    let case = case.to_str().unwrap();
    assert_eq!(scan(&["--input", base, case]).status.code(), Some(1));
    assert_eq!(
        scan(&["--input", base, case, "--fail-on", "critical"])
            .status
            .code(),
        Some(1)
    );
    // mesh-allow-any.yaml has a single high finding.
    let mesh = data("cases/mesh-allow-any.yaml");
    let mesh = mesh.to_str().unwrap();
    assert_eq!(
        scan(&["--input", mesh, "--fail-on", "critical"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        scan(&["--input", mesh, "--fail-on", "high"]).status.code(),
        Some(1)
    );
    assert_eq!(
        scan(&["--input", mesh, "--fail-on", "HIGH"]).status.code(),
        Some(1)
    );
}

#[test]
fn json_report_shape() {
    let out = scan(&[
        "--input",
        data("base.yaml").to_str().unwrap(),
        data("cases/sidecar.yaml").to_str().unwrap(),
        data("cases/mesh-allow-any.yaml").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = v["findings"].as_array().unwrap();
    let first = &findings[0];
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "rule",
        "severity",
        "kind",
        "namespace",
        "name",
        "container",
        "message",
        "evidence",
    ] {
        assert!(keys.contains(&k), "missing {k} in {first}");
    }
    let summary = &v["summary"];
    assert_eq!(
        summary["findings"].as_u64().unwrap() as usize,
        findings.len()
    );
    assert_eq!(summary["failOn"], "low");
    assert_eq!(summary["failed"], true);
    assert_eq!(summary["byRule"]["outbound-allow-any"], 1);
    // Two mesh ConfigMaps were read: the later one (ALLOW_ANY) wins; the injector ConfigMap is skipped.
    assert_eq!(summary["input"]["skippedKinds"]["ConfigMap"], 1);
    assert_eq!(summary["input"]["files"], 3);
    let opt_out = findings
        .iter()
        .find(|f| f["rule"] == "sidecar-opt-out" && f["name"] == "opt-out-label")
        .unwrap();
    assert_eq!(opt_out["kind"], "StatefulSet");
    assert_eq!(opt_out["namespace"], "mesh");
    assert_eq!(opt_out["container"], serde_json::Value::Null);
}

#[test]
fn namespace_findings_have_null_namespace() {
    let out = scan(&["--input", data("cases/netpol.yaml").to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ns = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "egress-networkpolicy-missing")
        .unwrap();
    assert_eq!(ns["kind"], "Namespace");
    assert_eq!(ns["namespace"], serde_json::Value::Null);
}

#[test]
fn lists_kubectl_output_and_unknown_kinds() {
    let dir = tempfile::tempdir().unwrap();
    // `kubectl get pods -o json` style.
    let json = write(
        dir.path(),
        "pods.json",
        r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[
  {"apiVersion":"v1","kind":"Pod","metadata":{"name":"p1","namespace":"mesh"},"spec":{"containers":[{"name":"app","image":"a"}]},"status":{"phase":"Running"}},
  {"apiVersion":"v1","kind":"Service","metadata":{"name":"svc","namespace":"mesh"},"spec":{"ports":[{"port":80}]}}
]}"#,
    );
    // `kubectl get deploy -o yaml` style (typed list) plus unknown kinds and a kind-less document.
    let yaml = write(
        dir.path(),
        "deploys.yaml",
        "apiVersion: apps/v1\nkind: DeploymentList\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d1, namespace: mesh}\n  spec:\n    template:\n      spec:\n        containers: [{name: app, image: a, securityContext: {privileged: true}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\nresources: [a.yaml]\n---\napiVersion: example.com/v1\nkind: Pod\nmetadata: {name: custom}\n",
    );
    let out = scan(&[
        "--input",
        data("base.yaml").to_str().unwrap(),
        json.to_str().unwrap(),
        yaml.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let input = &v["summary"]["input"];
    assert_eq!(input["workloads"], 2);
    assert_eq!(input["skippedKinds"]["Service"], 1);
    assert_eq!(input["skippedKinds"]["Secret"], 1);
    assert_eq!(input["skippedKinds"]["(no kind)"], 1);
    assert_eq!(input["skippedKinds"]["example.com/v1/Pod"], 1);
    let names: Vec<(&str, &str)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["rule"].as_str().unwrap(), f["name"].as_str().unwrap()))
        .collect();
    assert!(names.contains(&("sidecar-missing", "p1")), "{names:?}");
    // A Deployment's template gets its sidecar when pods are created: not missing.
    assert!(!names.contains(&("sidecar-missing", "d1")), "{names:?}");
    assert!(names.contains(&("privileged", "d1")), "{names:?}");
}

#[test]
fn flow_style_yaml_and_json_without_extension_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(
        dir.path(),
        "flow.yaml",
        "{apiVersion: v1, kind: Pod, metadata: {name: f, namespace: n}, spec: {hostNetwork: true, containers: [{name: a}]}}\n",
    );
    let json = write(
        dir.path(),
        "pod.manifest",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j","namespace":"n"},"spec":{"hostNetwork":true,"containers":[{"name":"a"}]}}"#,
    );
    let out = scan(&["--input", flow.to_str().unwrap(), json.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["f", "j"]);
}

#[test]
fn reads_standard_input() {
    use std::io::Write;
    let mut child = bin()
        .args(["scan", "--input", "-", "--format", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: v1\nkind: Pod\nmetadata: {name: h}\nspec:\n  hostNetwork: true\n  containers: [{name: a}]\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"][0]["rule"], "host-network");
    assert_eq!(v["findings"][0]["namespace"], "default");
}

#[test]
fn table_groups_by_namespace_without_colour_when_piped() {
    let out = scan(&[
        "--input",
        data("base.yaml").to_str().unwrap(),
        data("cases/host-network.yaml").to_str().unwrap(),
        data("cases/privileges.yaml").to_str().unwrap(),
        "--format",
        "table",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(!text.contains('\x1b'), "colour on a pipe: {text}");
    let mesh = text.find("namespace mesh\n").expect(&text);
    let monitoring = text.find("namespace monitoring\n").expect(&text);
    let plain = text.find("namespace plain\n").expect(&text);
    assert!(mesh < monitoring && monitoring < plain, "{text}");
    assert!(text.contains("HIGH      host-network"), "{text}");
    assert!(text.contains("Pod/priv[debugger]"), "{text}");
    // One line per finding, plus headers, blank separators and the summary.
    let v = scan(&[
        "--input",
        data("base.yaml").to_str().unwrap(),
        data("cases/host-network.yaml").to_str().unwrap(),
        data("cases/privileges.yaml").to_str().unwrap(),
    ]);
    let n = serde_json::from_slice::<serde_json::Value>(&v.stdout).unwrap()["findings"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(text.lines().filter(|l| l.starts_with("  ")).count(), n);
    assert!(text.contains(&format!("{n} findings")), "{text}");

    let coloured = scan(&[
        "--input",
        data("cases/mesh-unset.yaml").to_str().unwrap(),
        "--format",
        "table",
        "--color",
        "always",
    ]);
    assert!(
        stdout(&coloured).contains("\x1b[31mHIGH"),
        "{}",
        stdout(&coloured)
    );
}

#[test]
fn sarif_points_at_the_manifest() {
    let case = data("cases/proxy-uid.yaml");
    let out = scan(&[
        "--input",
        data("base.yaml").to_str().unwrap(),
        case.to_str().unwrap(),
        "--format",
        "sarif",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "egress-auditor");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r["id"] == "proxy-uid"));
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 9);
    let first = results
        .iter()
        .find(|r| r["properties"]["name"] == "pod-level")
        .unwrap();
    assert_eq!(first["ruleId"], "proxy-uid");
    assert_eq!(first["level"], "error");
    let rule_index = first["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(rules[rule_index]["id"], "proxy-uid");
    let loc = &first["locations"][0]["physicalLocation"];
    assert_eq!(loc["artifactLocation"]["uri"], case.to_str().unwrap());
    // The Deployment pod-level's document content starts on line 20 (after the `---` marker and
    // a comment).
    assert_eq!(loc["region"]["startLine"], 20);
}

#[test]
fn html_report_is_one_self_contained_page_with_names_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "hostile.yaml",
        concat!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n---\n",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: \"<script>alert(1)</script>\"\n  namespace: shop\n",
            "spec:\n  hostNetwork: true\n  containers: [{name: \"<img src=x onerror=alert(2)>\", image: app}]\n",
        ),
    );
    let out = scan(&["--input", f.to_str().unwrap(), "--format", "html"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let html = stdout(&out);
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains("Pod uses the node&#39;s network namespace"),
        "{html}"
    );
    assert!(html.contains("Drop hostNetwork: true"), "the fix: {html}");
    for fetch in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "url(http",
        "@import",
    ] {
        assert!(!html.contains(fetch), "fetches something: {fetch}");
    }
    assert!(html.contains("default-src 'none'"));
}
