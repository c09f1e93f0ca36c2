//! Shared by the manifest tests: where things are, the tools they need, the built artefacts.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod k8s;
pub mod rbac;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

use egress_manifests::yaml::{self, Document};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the crate lives two levels below the repository root")
}

pub fn istio_dir() -> PathBuf {
    repo_root().join("istio")
}

pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// The shared fixtures, or `None` (with the reason printed) when they are not there.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("EGRESS_GUARD_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("../shared/fixtures"),
    };
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: fixtures not found at {} (set EGRESS_GUARD_FIXTURES)",
            dir.display()
        );
        None
    }
}

/// Finds an external tool on PATH. Missing outside CI: print why and return `None` (the test
/// skips). Missing in CI (`CI` set): fail, because `.ci/install-tools.sh` must have installed it
/// and a silent skip would hide that.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let message = format!("{name} is not installed (bash .ci/install-tools.sh installs it)");
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("skipped: {message}");
    }
    found
}

pub fn run(command: &mut Command) -> Output {
    let description = format!("{command:?}");
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {description}: {e}"))
}

/// Runs and requires exit 0; returns stdout.
pub fn run_ok(command: &mut Command) -> String {
    let description = format!("{command:?}");
    let output = run(command);
    assert!(
        output.status.success(),
        "{description} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(repo_root());
    command
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// The release `.wasm` of the filter, built from this tree (a no-op when it is up to date), so
/// digests are never compared against a stale module. Built and shrunk with wasm-opt as the test
/// command does (`filter/build.sh`, with the no-op filter: another package selection unifies
/// features differently and rebuilds).
pub fn built_filter_wasm() -> PathBuf {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        // `filter/build.sh` builds and optimises it as the test command does (cargo from $CARGO).
        run_ok(Command::new("bash").arg(repo_root().join("filter/build.sh")));
        let path = target_dir().join("wasm32-wasip1/release/egress_filter.wasm");
        assert!(path.is_file(), "{} was not built", path.display());
        path
    })
    .clone()
}

/// Builds the workspace's binaries the way the test command does (`--workspace --tests`: the
/// same features, so after the tests' own build this is a no-op; `-p <package>` alone would
/// unify features differently and build wasmtime and kube once more).
fn build_workspace_binaries() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        run_ok(cargo().args(["build", "--workspace", "--tests"]));
    });
}

/// The `egress-sim` binary (the proxy-wasm host), built from this tree.
pub fn built_egress_sim() -> PathBuf {
    static SIM: OnceLock<PathBuf> = OnceLock::new();
    SIM.get_or_init(|| {
        build_workspace_binaries();
        let path = target_dir().join("debug/egress-sim");
        assert!(path.is_file(), "{} was not built", path.display());
        path
    })
    .clone()
}

/// The `egress-auditor` binary, built from this tree.
pub fn built_egress_auditor() -> PathBuf {
    static AUDITOR: OnceLock<PathBuf> = OnceLock::new();
    AUDITOR
        .get_or_init(|| {
            build_workspace_binaries();
            let path = target_dir().join("debug/egress-auditor");
            assert!(path.is_file(), "{} was not built", path.display());
            path
        })
        .clone()
}

/// Every document of every YAML file under `dir`, except kustomizations.
pub fn manifest_documents(dir: &Path) -> Vec<Document> {
    yaml::yaml_files(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .flat_map(|path| yaml::load_documents(&path).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// `kubectl kustomize DIR` (or `kustomize build DIR`), parsed; `None` when neither is installed
/// outside CI.
pub fn render_kustomization(dir: &Path) -> Option<Vec<Value>> {
    let output = if let Some(kubectl) = require_tool_quietly("kubectl") {
        run_ok(Command::new(kubectl).arg("kustomize").arg(dir))
    } else {
        let kustomize = require_tool("kustomize")?;
        run_ok(Command::new(kustomize).arg("build").arg(dir))
    };
    let documents = yaml::parse_documents(dir, &output).unwrap_or_else(|e| panic!("{e}"));
    Some(documents.into_iter().map(|d| d.value).collect())
}

fn require_tool_quietly(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// `Kind namespace/name` of an object, for messages.
pub fn object_name(object: &Value) -> String {
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["namespace"].as_str().unwrap_or(""),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}
