//! `egress-controller compile`: the worked example compiles to its golden, byte for byte and
//! whatever the order of the input; bad input exits 2 naming file, document and field; the golden
//! decides the example's requests through the real filter as docs/policies.md says.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{examples, Gateway};
use egress_sim::replay::Decision;
use serde_json::Value;

fn compile(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_egress-controller"))
        .arg("compile")
        .args(args)
        .output()
        .expect("run egress-controller")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn golden() -> String {
    std::fs::read_to_string(examples().join("compiled.json")).unwrap()
}

#[test]
fn worked_example_compiles_to_the_golden() {
    let input = examples();
    let out = stdout(&compile(&["--input", input.to_str().unwrap()]));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(examples().join("compiled.json"), &out).unwrap();
    }
    assert_eq!(
        out,
        golden(),
        "examples/policies/compiled.json is stale: run with UPDATE_GOLDEN=1 and review the diff"
    );
}

/// Every document of the example, reversed and spread over differently named files: the same
/// bytes come out.
#[test]
fn the_order_of_files_and_documents_does_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let mut documents = Vec::new();
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            documents.extend(text.split("\n---\n").map(str::to_string));
        }
    }
    assert!(documents.len() >= 10, "{}", documents.len());
    documents.reverse();
    for (i, chunk) in documents.chunks(3).enumerate() {
        std::fs::write(
            dir.path().join(format!("{:02}-part.yaml", 99 - i)),
            chunk.join("\n---\n"),
        )
        .unwrap();
    }
    let out = stdout(&compile(&["--input", dir.path().to_str().unwrap()]));
    assert_eq!(out, golden());
}

#[test]
fn wasmplugin_output_holds_the_same_configuration() {
    let input = examples();
    let out = stdout(&compile(&[
        "--input",
        input.to_str().unwrap(),
        "--wasmplugin",
        "egress-filter-http",
        "--namespace",
        "istio-system",
    ]));
    let plugin: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plugin["kind"], "WasmPlugin");
    assert_eq!(plugin["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(plugin["metadata"]["name"], "egress-filter-http");
    assert_eq!(plugin["metadata"]["namespace"], "istio-system");
    let golden: Value = serde_json::from_str(&golden()).unwrap();
    assert_eq!(plugin["spec"]["pluginConfig"], golden);
    let hash = plugin["metadata"]["annotations"]["policy.egress-guard.dev/config-sha256"]
        .as_str()
        .unwrap();
    assert_eq!(hash.len(), 64);
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const NAMESPACE: &str =
    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ci-a\n  labels:\n    profile: ci\n";

#[test]
fn invalid_input_exits_2_naming_file_document_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: policy.egress-guard.dev/v1alpha1\nkind: ClusterEgressPolicy\nmetadata:\n  name: late\nspec:\n  tier: Baseline\n  priority: 5\n  rules:\n  - name: hand-on\n    action: Pass\n",
            "bad.yaml:2: spec.rules[0].action: Pass is only allowed in the Admin tier",
        ),
        (
            "apiVersion: policy.egress-guard.dev/v1alpha1\nkind: ClusterEgressPolicy\nmetadata:\n  name: typo\nspec:\n  tier: Admin\n  priority: 5\n  rules:\n  - name: r\n    action: Deny\n    too: []\n",
            "bad.yaml:2: spec.rules[0].too: unknown field `too`",
        ),
        (
            "apiVersion: policy.egress-guard.dev/v1alpha1\nkind: ClusterEgressPolicy\nmetadata:\n  name: far\nspec:\n  tier: Admin\n  priority: 5000\n  rules:\n  - name: r\n    action: Deny\n",
            "bad.yaml:2: spec.priority: 5000 is outside 0..=1000",
        ),
        (
            "apiVersion: policy.egress-guard.dev/v1alpha1\nkind: ClusterEgressPolicy\nmetadata:\n  name: sel\nspec:\n  tier: Admin\n  priority: 5\n  subject:\n    namespaces:\n      matchExpressions:\n      - key: profile\n        operator: Equals\n        values: [ci]\n  rules:\n  - name: r\n    action: Deny\n",
            "bad.yaml:2: spec.subject.namespaces.matchExpressions[0].operator: \"Equals\" is not one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            "apiVersion: policy.egress-guard.dev/v1alpha1\nkind: EgressPolicy\nmetadata:\n  name: keys\n  namespace: ci-a\nspec:\n  rules:\n  - when:\n    - key: request.body\n      values: [x]\n",
            "bad.yaml:2: spec.rules[0].when[0].key: unknown attribute \"request.body\"",
        ),
        (
            "apiVersion: policy.egress-guard.dev/v1alpha1\nkind: EgressPolicy\nmetadata:\n  name: Upper.Case\n  namespace: ci-a\nspec: {}\n",
            "bad.yaml:2: metadata.name: name \"Upper.Case\" must be a DNS label",
        ),
        (
            "apiVersion: policy.egress-guard.dev/v1alpha1\nkind: EgressPolicy\nmetadata:\n  name: nowhere\nspec: {}\n",
            "bad.yaml:2: metadata.namespace: an EgressPolicy governs the sources of its own namespace",
        ),
    ];
    for (document, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "bad.yaml",
            &format!("{NAMESPACE}---\n{document}"),
        );
        let output = compile(&["--input", dir.path().to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(2), "{expected}: {stderr}");
        assert!(output.stdout.is_empty(), "nothing printed on error");
        let first = stderr
            .lines()
            .find(|l| !l.starts_with("skipped"))
            .unwrap_or("");
        let first = first
            .strip_prefix(&format!("{}/", dir.path().display()))
            .unwrap_or(first);
        assert!(
            first.starts_with(expected),
            "expected {expected:?}, got {stderr:?}"
        );
    }
}

#[test]
fn a_duplicate_object_and_a_broken_base_configuration_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "apiVersion: policy.egress-guard.dev/v1alpha1\nkind: ClusterEgressPolicy\nmetadata:\n  name: twice\nspec:\n  tier: Admin\n  priority: 1\n  rules:\n  - name: r\n    action: Deny\n";
    write(dir.path(), "a.yaml", policy);
    write(dir.path(), "b.yaml", policy);
    let output = compile(&["--input", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("b.yaml:1: metadata.name: ClusterEgressPolicy twice is already defined at"),
        "{stderr}"
    );

    let inputs = tempfile::tempdir().unwrap();
    write(inputs.path(), "p.yaml", policy);
    let base = dir.path().join("base.json");
    for (text, expected) in [
        (
            r#"{"policies": []}"#,
            "base.json: policies: not a base setting",
        ),
        (
            r#"{"tiers": {"admin": []}}"#,
            "base.json: tiers.admin: only `default` may be set here",
        ),
        (
            r#"{"rateLimits": [{"name": "x", "maxTokens": 0, "fillInterval": "1s"}]}"#,
            "base.json: rateLimits[0].maxTokens",
        ),
        (
            r#"{"log": {"allowed": 1}}"#,
            "base.json: log.allowed: expected a boolean",
        ),
    ] {
        std::fs::write(&base, text).unwrap();
        let output = compile(&[
            "--input",
            inputs.path().to_str().unwrap(),
            "--base-config",
            base.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
    }
}

#[test]
fn the_base_configuration_sets_what_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "apiVersion: policy.egress-guard.dev/v1alpha1\nkind: ClusterEgressPolicy\nmetadata:\n  name: deny-all\nspec:\n  tier: Admin\n  priority: 1\n  rules:\n  - name: r\n    action: Deny\n";
    write(dir.path(), "p.yaml", policy);
    let base = dir.path().join("base.json");
    std::fs::write(&base, r#"{"log": {"allowed": false}}"#).unwrap();
    let output = compile(&[
        "--input",
        dir.path().join("p.yaml").to_str().unwrap(),
        "--base-config",
        base.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        config["log"],
        serde_json::json!({"allowed": false}),
        "{stdout}"
    );
}

/// The golden decides the worked example's requests as docs/policies.md explains: (id, decision,
/// tier, policy, rule).
#[test]
fn golden_replays_through_the_filter() {
    let mut gateway = Gateway::new(golden().as_bytes());
    let requests = std::fs::read_to_string(examples().join("traffic.jsonl")).unwrap();
    let seen = gateway.run(&requests);
    let expected: &[(&str, Decision, &str, &str, &str)] = &[
        (
            "ci-pastebin",
            Decision::Deny,
            "admin",
            "block-paste",
            "paste-sites",
        ),
        (
            "ci-github-api",
            Decision::Allow,
            "admin",
            "ci-allowlist",
            "github-and-pypi",
        ),
        (
            "ci-pypi",
            Decision::Allow,
            "admin",
            "ci-allowlist",
            "github-and-pypi",
        ),
        (
            "ci-npm",
            Decision::Deny,
            "admin",
            "ci-allowlist",
            "nothing-else",
        ),
        ("shop-stripe", Decision::Allow, "namespace", "payments", "0"),
        ("shop-debian", Decision::Deny, "namespace", "", ""),
        ("data-s3-read", Decision::Allow, "namespace", "s3-read", "0"),
        (
            "data-s3-write",
            Decision::Deny,
            "namespace",
            "no-s3-writes",
            "0",
        ),
        (
            "tools-debian",
            Decision::Allow,
            "baseline",
            "os-packages",
            "debian-mirror",
        ),
        ("tools-elsewhere", Decision::Deny, "default", "", ""),
        ("plaintext-debian", Decision::Deny, "default", "", ""),
        (
            "shop-pastebin",
            Decision::Deny,
            "admin",
            "block-paste",
            "paste-sites",
        ),
    ];
    assert_eq!(seen.len(), expected.len(), "{seen:#?}");
    for ((id, s), (want_id, decision, tier, policy, rule)) in seen.iter().zip(expected) {
        assert_eq!(id, want_id);
        assert_eq!(s.decision, *decision, "{id}: {:?}", s.line);
        assert_eq!(s.field("tier"), *tier, "{id}: {:?}", s.line);
        if !policy.is_empty() {
            assert_eq!(s.field("policy"), *policy, "{id}: {:?}", s.line);
        }
        if !rule.is_empty() {
            let got = match s.line.get("rule") {
                Some(Value::String(r)) => r.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            assert_eq!(got, *rule, "{id}: {:?}", s.line);
        }
    }
}
