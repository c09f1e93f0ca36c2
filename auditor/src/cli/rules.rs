//! `egress-auditor rules --pod POD.yaml --dump FILE`: judges saved rule dumps against one pod,
//! the offline form of what the node agent does in each pod's network namespace.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Value};

use super::args::{parse_severity, ColorChoice, Format};
use super::pipeline::{exit_code, EXIT_BAD_INPUT};
use crate::capture::CaptureConfig;
use crate::checks::sort_findings;
use crate::finding::{Finding, Severity};
use crate::netfilter::dump::{self, DumpFormat};
use crate::netfilter::judge::{families_in, judge, JudgeContext, Subject};
use crate::netfilter::{IpFamily, Ruleset};
use crate::sinks::{self, SourceLocation, Summary};
use crate::sources::files;

/// Address family selector for `--family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FamilyArg {
    Ipv4,
    Ipv6,
}

impl From<FamilyArg> for IpFamily {
    fn from(f: FamilyArg) -> IpFamily {
        match f {
            FamilyArg::Ipv4 => IpFamily::V4,
            FamilyArg::Ipv6 => IpFamily::V6,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct RulesArgs {
    /// The pod whose capture settings the rules are judged against (YAML or JSON: one Pod, or one
    /// workload with a pod template).
    #[arg(long, value_name = "FILE")]
    pub pod: PathBuf,

    /// A rule dump: `iptables-save`/`ip6tables-save` output, `nft list ruleset` or
    /// `nft -j list ruleset` (format detected). Repeat to read several dumps of one namespace.
    #[arg(long, required = true, value_name = "FILE")]
    pub dump: Vec<PathBuf>,

    /// Judge only these address families (repeatable). Default: every family the dumps have
    /// tables for (IPv4 when they are empty).
    #[arg(long = "family", value_enum, value_name = "FAMILY")]
    pub families: Vec<FamilyArg>,

    /// Report format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Json)]
    pub format: Format,

    /// Exit 1 when any finding is at or above this severity (info, low, medium, high, critical).
    #[arg(long, default_value = "low", value_parser = parse_severity)]
    pub fail_on: Severity,

    /// Colour the table output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

fn bad_input(messages: &[String]) -> ExitCode {
    let mut stderr = std::io::stderr().lock();
    for m in messages {
        let _ = writeln!(stderr, "error: {m}");
    }
    ExitCode::from(EXIT_BAD_INPUT)
}

/// Runs the judge and writes the report to standard output.
pub fn run(args: RulesArgs) -> anyhow::Result<ExitCode> {
    let loaded = match files::load_paths(std::slice::from_ref(&args.pod)) {
        Ok(l) => l,
        Err(errors) => {
            return Ok(bad_input(
                &errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            ))
        }
    };
    let workload = match loaded.snapshot.workloads.as_slice() {
        [w] => w,
        [] => {
            return Ok(bad_input(&[format!(
                "{}: no Pod or workload with a pod template",
                args.pod.display()
            )]))
        }
        many => {
            return Ok(bad_input(&[format!(
                "{}: holds {} workloads; give exactly one",
                args.pod.display(),
                many.len()
            )]))
        }
    };

    let mut ruleset = Ruleset::default();
    let mut dumps = Vec::new();
    let mut errors = Vec::new();
    for path in &args.dump {
        let name = path.display().to_string();
        let text = match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    errors.push(format!("{name}: not UTF-8 text"));
                    continue;
                }
            },
            Err(e) => {
                errors.push(format!("{name}: {e}"));
                continue;
            }
        };
        match dump::parse(&text, &name, None) {
            Ok((format, rs)) => {
                dumps.push(json!({
                    "file": name,
                    "format": format.map(DumpFormat::as_str),
                    "tables": rs.tables.iter().map(|t| t.label()).collect::<Vec<_>>(),
                }));
                ruleset.extend(rs);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Ok(bad_input(&errors));
    }

    let cfg = match CaptureConfig::from_pod(&workload.spec, &workload.meta) {
        Ok(c) => c,
        Err(e) => {
            return Ok(bad_input(&[format!(
                "{}: {} {}/{}: cannot read its capture settings: {e}",
                args.pod.display(),
                workload.kind.as_str(),
                workload.namespace,
                workload.name
            )]))
        }
    };
    let families: Vec<IpFamily> = if args.families.is_empty() {
        families_in(&ruleset)
    } else {
        let mut f: Vec<IpFamily> = args.families.iter().map(|f| (*f).into()).collect();
        f.sort();
        f.dedup();
        f
    };
    let subject = Subject {
        namespace: &workload.namespace,
        name: &workload.name,
    };
    let pod_addrs = workload
        .status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().filter_map(|ip| ip.ip.parse().ok()).collect())
        .unwrap_or_default();
    let mut ctx = JudgeContext {
        pod_addrs,
        ..JudgeContext::default()
    };
    ctx.evidence.insert(
        "dumps".into(),
        Value::Array(
            args.dump
                .iter()
                .map(|p| json!(p.display().to_string()))
                .collect(),
        ),
    );

    let (mut findings, judged_note): (Vec<Finding>, Value) = match &cfg {
        None => {
            eprintln!(
                "warning: {} {}/{} is not injected with an Istio sidecar: nothing to judge the rules against",
                workload.kind.as_str(),
                workload.namespace,
                workload.name
            );
            (
                Vec::new(),
                json!({"judged": false, "reason": "not injected"}),
            )
        }
        Some(cfg) if !cfg.captures_outbound() => (
            Vec::new(),
            json!({"judged": false, "reason": "the pod's settings capture no outbound traffic"}),
        ),
        Some(cfg) => (
            judge(cfg, &ruleset, &families, subject, &ctx),
            json!({"judged": true}),
        ),
    };
    // A Deployment's pod template is judged as the Pod it describes; report it under its kind.
    for f in &mut findings {
        f.kind = workload.kind.as_str().to_string();
    }
    sort_findings(&mut findings);

    let mut input = json!({
        "pod": format!("{}/{}", workload.namespace, workload.name),
        "dumps": dumps,
        "families": families,
    });
    if let (Value::Object(m), Value::Object(n)) = (&mut input, judged_note) {
        m.extend(n);
    }
    let summary = Summary::new(&findings, args.fail_on, Some(input));
    let report = match args.format {
        Format::Json => sinks::json::render(&findings, &summary),
        Format::Table => sinks::table::render(&findings, &summary, args.color.enabled()),
        Format::Sarif => sinks::sarif::render(&findings, &summary, &locate_rule),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(report.as_bytes())
        .and_then(|_| stdout.flush())
        .context("writing the report")?;
    Ok(exit_code(&summary, false))
}

/// Points a finding at the dump line of the rule that let traffic out, when there is one.
fn locate_rule(f: &Finding) -> Option<SourceLocation> {
    let cause = f.evidence.get("cause")?;
    let uri = cause.get("source")?.as_str()?.to_string();
    let line = cause.get("line").and_then(Value::as_u64).unwrap_or(1) as usize;
    Some(SourceLocation { uri, line })
}
