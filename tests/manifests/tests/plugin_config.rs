//! Every filter configuration in istio/ is accepted by the filter itself: the built .wasm is
//! loaded in the proxy-wasm host (`egress-sim check-config`) and configured with it, exactly
//! as Envoy's `on_configure` would be.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use common::{built_egress_sim, built_filter_wasm, istio_dir, manifest_documents, run};

/// (where, configuration) for every WasmPlugin pluginConfig and EnvoyFilter Wasm configuration.
fn plugin_configs() -> Vec<(String, Value)> {
    let mut configs = Vec::new();
    for document in manifest_documents(&istio_dir()) {
        match document.kind() {
            "WasmPlugin" => {
                let config = document.value["spec"]["pluginConfig"].clone();
                assert!(
                    config.is_object(),
                    "{}: no pluginConfig",
                    document.describe()
                );
                configs.push((document.describe(), config));
            }
            "EnvoyFilter" => {
                for patch in document.value["spec"]["configPatches"].as_array().unwrap() {
                    let configuration =
                        &patch["patch"]["value"]["typed_config"]["config"]["configuration"];
                    if let Some(text) = configuration["value"].as_str() {
                        let config: Value = serde_json::from_str(text).unwrap_or_else(|e| {
                            panic!(
                                "{}: configuration.value is not JSON: {e}",
                                document.describe()
                            )
                        });
                        configs.push((document.describe(), config));
                    }
                }
            }
            _ => {}
        }
    }
    configs
}

/// Runs `egress-sim check-config` on one configuration; returns (success, combined output).
fn check_config(wasm: &Path, config: &Value) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugin-config.json");
    std::fs::write(&file, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let output = run(Command::new(built_egress_sim())
        .arg("check-config")
        .arg("--wasm")
        .arg(wasm)
        .arg("--config")
        .arg(&file));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn every_plugin_config_in_istio_is_accepted_by_the_built_filter() {
    let wasm = built_filter_wasm();
    let configs = plugin_configs();
    assert_eq!(
        configs.len(),
        6,
        "five WasmPlugins (two for the egress gateway, three for ambient waypoints) and one EnvoyFilter: {configs:?}"
    );
    for (place, config) in &configs {
        let (accepted, output) = check_config(&wasm, config);
        assert!(
            accepted,
            "{place}: the filter rejects its configuration:\n{output}"
        );
    }
}

/// The check above can fail: a configuration with one mistake is refused, with its location.
#[test]
fn a_broken_plugin_config_is_rejected_with_its_location() {
    let wasm = built_filter_wasm();
    let (_, mut config) = plugin_configs().into_iter().next().unwrap();
    config["policies"][1]["action"] = json!("PERMIT");
    let (accepted, output) = check_config(&wasm, &config);
    assert!(
        !accepted,
        "PERMIT is no action, yet the filter accepted it:\n{output}"
    );
    assert!(
        output.contains("policies[1]"),
        "the reason names the place:\n{output}"
    );
}

/// The EnvoyFilter alternative installs the same policies as the HTTP WasmPlugin.
#[test]
fn envoyfilter_alternative_carries_the_http_plugin_config() {
    let configs = plugin_configs();
    let http = configs
        .iter()
        .find(|(place, _)| place.contains("/istio/wasmplugin-http.yaml:"))
        .unwrap();
    let ecds = configs
        .iter()
        .find(|(place, _)| place.contains("EnvoyFilter"))
        .unwrap();
    assert_eq!(http.1, ecds.1, "{} and {} differ", http.0, ecds.0);
}

/// Lines that are not comments: the generated header names the file it was made from.
fn without_comments(yaml: &str) -> Vec<&str> {
    yaml.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect()
}

/// deploy/components/ratelimit/limits.yaml is what `egress-sim limits` prints for the
/// pluginConfig examples/global-ratelimit installs: the rate limit service counts exactly the
/// descriptors the filter sends.
#[test]
fn shipped_limits_file_matches_the_example() {
    let root = common::repo_root();
    let Some(objects) = common::render_kustomization(&root.join("examples/global-ratelimit"))
    else {
        return;
    };
    let plugin = objects
        .iter()
        .find(|o| o["kind"] == "WasmPlugin" && o["metadata"]["name"] == "egress-filter-http")
        .expect("examples/global-ratelimit renders the WasmPlugin egress-filter-http");
    let config = &plugin["spec"]["pluginConfig"];
    let globals = config["rateLimits"].as_array().map_or(0, |limits| {
        limits.iter().filter(|l| l.get("global").is_some()).count()
    });
    assert!(globals > 0, "the example has no global limit: {config}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugin-config.json");
    std::fs::write(&file, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let output = run(Command::new(built_egress_sim())
        .arg("limits")
        .arg("--wasm")
        .arg(built_filter_wasm())
        .arg("--config")
        .arg(&file));
    assert!(
        output.status.success(),
        "egress-sim limits: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let generated = String::from_utf8(output.stdout).unwrap();
    let shipped_path = root.join("deploy/components/ratelimit/limits.yaml");
    let shipped = std::fs::read_to_string(&shipped_path).unwrap();
    assert!(
        generated.contains("max_value"),
        "no limit generated:\n{generated}"
    );
    assert_eq!(
        without_comments(&shipped),
        without_comments(&generated),
        "{} is not what `egress-sim limits` prints for examples/global-ratelimit; regenerate it",
        shipped_path.display()
    );
}
