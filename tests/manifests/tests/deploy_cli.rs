//! The command lines in deploy/ are ones the auditor accepts: each container's args, followed by
//! `--help`, must parse (clap rejects an unknown flag or a bad value before it reaches `--help`).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use common::{built_egress_auditor, deploy_dir, object_name, render_kustomization, run};

fn pod_spec(object: &Value) -> Option<&Value> {
    match object["kind"].as_str()? {
        "Deployment" | "DaemonSet" => Some(&object["spec"]["template"]["spec"]),
        "CronJob" => Some(&object["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
}

#[test]
fn every_container_command_line_is_accepted_by_the_auditor() {
    let mut command_lines = BTreeSet::new();
    for overlay in ["cronjob", "watch", "node", "full"] {
        let Some(objects) = render_kustomization(&deploy_dir().join("overlays").join(overlay))
        else {
            return;
        };
        for object in &objects {
            let Some(pod) = pod_spec(object) else {
                continue;
            };
            for container in pod["containers"].as_array().unwrap() {
                assert!(
                    container["command"].is_null(),
                    "{}: the image's entrypoint is the auditor",
                    object_name(object)
                );
                let args: Vec<String> = container["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect();
                command_lines.insert((object_name(object), args));
            }
        }
    }
    assert_eq!(command_lines.len(), 3, "{command_lines:?}");

    let auditor = built_egress_auditor();
    let mut pending = Vec::new();
    for (workload, args) in &command_lines {
        let output = run(Command::new(&auditor).args(args).arg("--help"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() && stderr.contains("unrecognized subcommand") {
            // That mode of the auditor is not built yet; its flags are checked once it is.
            pending.push(format!("{workload}: `{}`", args[0]));
            continue;
        }
        assert!(
            output.status.success(),
            "{workload}: egress-auditor rejects `{}`:\n{stderr}",
            args.join(" ")
        );
    }
    if !pending.is_empty() {
        println!(
            "subcommands the auditor does not have yet: {}",
            pending.join(", ")
        );
    }
    assert!(
        pending.len() < command_lines.len(),
        "no command line could be checked"
    );
}
