//! Malformed configurations are rejected by the real `egress_filter.wasm` the way Envoy sees it:
//! the canary's `proxy_on_configure` returns false, and the filter's log names the JSON path of
//! the offending value and says what is wrong. `egress-sim check-config` prints that reason and
//! exits 1.
//!
//! The cases live in `data/filter/bad-configs.jsonl` (one `{"name","config","path","message"}`
//! per line).

mod common;

use std::process::Command;

use common::{data, egress_filter};
use egress_sim::{Host, HostError, HostOptions, PluginConfig, VmConfig};

struct Case {
    name: String,
    config: String,
    path: String,
    message: String,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(data("filter/bad-configs.jsonl")).unwrap();
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(index, line)| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad-configs.jsonl line {}: {e}", index + 1));
            let field = |name: &str| {
                value[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("bad-configs.jsonl line {}: no {name}", index + 1))
                    .to_string()
            };
            Case {
                name: field("name"),
                config: field("config"),
                path: field("path"),
                message: field("message"),
            }
        })
        .collect()
}

#[test]
fn every_malformed_configuration_is_rejected_by_the_canary_with_its_location() {
    let cases = cases();
    assert!(cases.len() >= 20, "only {} cases", cases.len());
    let wasm = std::fs::read(egress_filter()).unwrap();
    let host = Host::new(&wasm, VmConfig::default(), HostOptions::default()).unwrap();

    let mut failures = Vec::new();
    for case in &cases {
        let plugin = PluginConfig::http("bad", "egress-guard", case.config.as_bytes().to_vec());
        match host.canary(&plugin) {
            Ok(_) => failures.push(format!("{}: accepted", case.name)),
            Err(HostError::ConfigRejected { logs, .. }) => {
                let expected = format!("invalid configuration: {}: ", case.path);
                let found = logs.iter().any(|log| {
                    log.message.contains(&expected) && log.message.contains(&case.message)
                });
                if !found {
                    let messages: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
                    failures.push(format!(
                        "{}: want `{expected}...{}`, logged {messages:?}",
                        case.name, case.message
                    ));
                }
            }
            Err(other) => failures.push(format!("{}: unexpected host error {other}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!(
        "{} malformed configurations rejected by the canary",
        cases.len()
    );
}

#[test]
fn check_config_prints_the_filters_reason_and_exits_1() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("filter_bad_configs");
    std::fs::create_dir_all(&dir).unwrap();
    // The CLI compiles the module on every run: a sample of the cases keeps this test quick,
    // the canary test above covers all of them. Text that is not JSON at all never reaches the
    // filter from a WasmPlugin (pluginConfig is a Struct): the CLI refuses it as a usage error.
    let json_cases: Vec<Case> = cases()
        .into_iter()
        .filter(|case| serde_json::from_str::<serde_json::Value>(&case.config).is_ok())
        .collect();
    assert!(
        json_cases.len() >= 20,
        "only {} JSON cases",
        json_cases.len()
    );
    for case in json_cases.iter().step_by(4) {
        let file = dir.join(format!("{}.json", case.name));
        std::fs::write(&file, &case.config).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_egress-sim"))
            .args(["check-config", "--wasm"])
            .arg(egress_filter())
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{}: {stdout}", case.name);
        assert!(
            stdout.contains(&format!("{}: ", case.path)) && stdout.contains(&case.message),
            "{}: want `{}: ...{}`, got {stdout}",
            case.name,
            case.path,
            case.message
        );
    }
}
