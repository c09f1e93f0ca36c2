//! Parsers compared on the same generated pods (docs/BENCHMARKS.md, "Which parser"):
//!
//! `cargo run --release -p egress-auditor --example parse_compare -- FILE.yaml`
//!
//! FILE is one `pods-NNNN.yaml` of `generate_manifests` (100 pods). Each way of reading is run
//! over every document of the file, three rounds after one warm-up, and reported per pod. JSON
//! rows read the same pods converted to JSON first. The typed target is a Pod's `apiVersion`,
//! `kind`, `metadata`, `spec` and `status` as `k8s-openapi` types, as the scan reads them.

use std::time::Instant;

use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct PodDoc {
    kind: Option<String>,
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    metadata: Option<ObjectMeta>,
    spec: Option<PodSpec>,
    status: Option<PodStatus>,
}

fn saphyr_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.with_snippet = false;
    o.strict_booleans = true;
    o
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: parse_compare FILE.yaml")?;
    let text = std::fs::read_to_string(&path)?;
    let docs: Vec<&str> = text
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .collect();
    let mut json = Vec::with_capacity(docs.len());
    for d in &docs {
        let v: Value = serde_saphyr::from_str_with_options(d, saphyr_options())?;
        json.push(serde_json::to_string(&v)?);
    }
    let n = docs.len();
    let yaml_bytes: usize = docs.iter().map(|d| d.len()).sum();
    let json_bytes: usize = json.iter().map(String::len).sum();
    println!("{n} pods, {yaml_bytes} bytes of YAML, {json_bytes} bytes of JSON (compact)\n");
    println!("| way of reading | per pod | throughput |");
    println!("|---|---:|---:|");

    type Run<'a> = Box<dyn Fn() -> Result<(), String> + 'a>;
    let cases: Vec<(&str, usize, Run<'_>)> = vec![
        (
            "YAML, serde-saphyr → Value → typed (the general reader)",
            yaml_bytes,
            Box::new(|| {
                for d in &docs {
                    let v: Value = serde_saphyr::from_str_with_options(d, saphyr_options())
                        .map_err(|e| e.to_string())?;
                    let _: PodDoc =
                        serde_path_to_error::deserialize(v).map_err(|e| e.to_string())?;
                }
                Ok(())
            }),
        ),
        (
            "YAML, serde-saphyr → typed",
            yaml_bytes,
            Box::new(|| {
                for d in &docs {
                    let _: PodDoc = serde_saphyr::from_str_with_options(d, saphyr_options())
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }),
        ),
        (
            "YAML, serde-saphyr, parse only (IgnoredAny)",
            yaml_bytes,
            Box::new(|| {
                for d in &docs {
                    let _: serde::de::IgnoredAny =
                        serde_saphyr::from_str_with_options(d, saphyr_options())
                            .map_err(|e| e.to_string())?;
                }
                Ok(())
            }),
        ),
        (
            "YAML, serde_yaml_ng (libyaml) → typed (the direct reader)",
            yaml_bytes,
            Box::new(|| {
                for d in &docs {
                    let _: PodDoc = serde_yaml_ng::from_str(d).map_err(|e| e.to_string())?;
                }
                Ok(())
            }),
        ),
        (
            "YAML, serde_yaml_ng, parse only (IgnoredAny)",
            yaml_bytes,
            Box::new(|| {
                for d in &docs {
                    let _: serde::de::IgnoredAny =
                        serde_yaml_ng::from_str(d).map_err(|e| e.to_string())?;
                }
                Ok(())
            }),
        ),
        (
            "JSON, serde_json → Value → typed (the general reader)",
            json_bytes,
            Box::new(|| {
                for d in &json {
                    let v: Value = serde_json::from_str(d).map_err(|e| e.to_string())?;
                    let _: PodDoc =
                        serde_path_to_error::deserialize(v).map_err(|e| e.to_string())?;
                }
                Ok(())
            }),
        ),
        (
            "JSON, serde_json → typed (the direct reader)",
            json_bytes,
            Box::new(|| {
                for d in &json {
                    let _: PodDoc = serde_json::from_str(d).map_err(|e| e.to_string())?;
                }
                Ok(())
            }),
        ),
    ];
    for (name, bytes, run) in cases {
        run()?;
        let rounds = 3;
        let started = Instant::now();
        for _ in 0..rounds {
            run()?;
        }
        let per_pod = started.elapsed().as_secs_f64() / (rounds * n) as f64;
        println!(
            "| {name} | {:.1} µs | {:.1} MB/s |",
            per_pod * 1e6,
            bytes as f64 / n as f64 / per_pod / 1e6
        );
    }
    Ok(())
}
