//! deploy/dashboards/egress-guard.json queries only series the code exports, with the labels they
//! really have, and shows every series there is:
//! - the filter's: the real `egress_filter.wasm` configured with examples/egress-policy.json
//!   (ALLOW, DENY, AUDIT and dry-run policies, rate limits) and with examples/tiers-policy.json
//!   (admin, namespace and baseline tiers, PASS) in the proxy-wasm host; its counter
//!   names go through the Envoy tag extractors of istio/mesh/egress-gateway-stats.yaml and
//!   Envoy's Prometheus naming for custom stat namespaces;
//! - the auditor's: its registry's OpenMetrics exposition after a judgement;
//! - the decision-log panel's fields (Loki): a real decision line of the filter.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde_json::Value;

use common::{built_filter_wasm, deploy_dir, istio_dir, repo_root};
use egress_sim::replay;
use egress_sim::{Deployment, Host, HostOptions, PluginConfig, VmConfig};

/// Labels Prometheus' Kubernetes scrape configuration adds to every series; not the code's.
const SCRAPE_LABELS: [&str; 5] = ["pod", "namespace", "instance", "job", "container"];

/// Metric name -> label names it is exported with.
type Series = BTreeMap<String, BTreeSet<String>>;

fn dashboard() -> Value {
    let path = deploy_dir().join("dashboards/egress-guard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every (datasource type, query) of the dashboard: panel targets (rows included) and template
/// variable queries.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    fn datasource_type(v: &Value) -> Option<String> {
        v.get("datasource")?
            .get("type")?
            .as_str()
            .map(str::to_string)
    }
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for panel in panels {
            let panel_type = datasource_type(panel);
            for target in panel["targets"].as_array().into_iter().flatten() {
                let kind = datasource_type(target)
                    .or_else(|| panel_type.clone())
                    .unwrap_or_else(|| panic!("{}: a target without datasource", panel["title"]));
                if let Some(expr) = target["expr"].as_str() {
                    out.push((kind, expr.to_string()));
                }
            }
            walk(panel["panels"].as_array().map_or(&[], Vec::as_slice), out);
        }
    }
    let mut out = Vec::new();
    walk(
        dashboard["panels"].as_array().map_or(&[], Vec::as_slice),
        &mut out,
    );
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let kind = datasource_type(variable).expect("a query variable has a datasource");
            let query = variable["query"]["query"]
                .as_str()
                .or_else(|| variable["query"].as_str())
                .expect("a query variable has a query");
            out.push((kind, query.to_string()));
        }
    }
    out
}

struct TagExtractor {
    name: String,
    regex: Regex,
}

fn tag_extractors() -> Vec<TagExtractor> {
    let path = istio_dir().join("mesh/egress-gateway-stats.yaml");
    let docs = egress_manifests::yaml::load_documents(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(docs.len(), 1, "{}: one ConfigMap", path.display());
    let config_map = &docs[0].value;
    assert_eq!(config_map["kind"], "ConfigMap");
    // Istio's bootstrapOverride reads this key of the named ConfigMap.
    let bootstrap = config_map["data"]["custom_bootstrap.json"]
        .as_str()
        .expect("data.custom_bootstrap.json");
    let bootstrap: Value = serde_json::from_str(bootstrap)
        .unwrap_or_else(|e| panic!("custom_bootstrap.json is not JSON: {e}"));
    let tags = bootstrap["stats_config"]["stats_tags"]
        .as_array()
        .expect("stats_config.stats_tags");
    let mut names = BTreeSet::new();
    tags.iter()
        .map(|tag| {
            let name = tag["tag_name"].as_str().expect("tag_name").to_string();
            assert!(names.insert(name.clone()), "tag_name {name} twice");
            // Istio's own tags (reporter, source_workload, ...) must not be redefined.
            assert!(
                name.starts_with("egress_"),
                "tag_name {name}: use the egress_ prefix"
            );
            let pattern = tag["regex"].as_str().expect("regex");
            let regex = Regex::new(pattern).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                regex.captures_len() >= 2,
                "{name}: the first capture group is what Envoy removes from the name"
            );
            TagExtractor { name, regex }
        })
        .collect()
}

/// What Envoy's Prometheus endpoint shows for one stat: tag extraction (every extractor sees the
/// whole name; the first group is removed, the second, or else the first, is the value), then
/// the custom stat namespace `wasmcustom.` dropped with no `envoy_` prefix, and every character
/// outside `[a-zA-Z0-9_]` turned into `_`.
fn prometheus_series(
    stat: &str,
    extractors: &[TagExtractor],
    used: &mut BTreeSet<String>,
) -> (String, BTreeMap<String, String>) {
    let mut removed = vec![false; stat.len()];
    let mut tags = BTreeMap::new();
    for extractor in extractors {
        let Some(captures) = extractor.regex.captures(stat) else {
            continue;
        };
        let whole = captures
            .get(1)
            .expect("group 1 is there when the regex matches");
        let value = captures.get(2).unwrap_or(whole);
        removed[whole.range()].iter_mut().for_each(|r| *r = true);
        tags.insert(extractor.name.clone(), value.as_str().to_string());
        used.insert(extractor.name.clone());
    }
    let extracted: String = stat
        .char_indices()
        .filter(|(i, _)| !removed[*i])
        .map(|(_, c)| c)
        .collect();
    let name = extracted
        .strip_prefix("wasmcustom.")
        .unwrap_or_else(|| panic!("{stat}: custom stats are in the wasmcustom namespace"));
    let name = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (name, tags)
}

/// The example configurations whose counters the dashboard shows: plain `policies`, and `tiers`.
const EXAMPLE_CONFIGS: [&str; 2] = ["examples/egress-policy.json", "examples/tiers-policy.json"];

/// The real filter with one example configuration, HTTP and network plugins, one worker.
fn example_deployment(config: &str) -> Deployment {
    let path = repo_root().join(config);
    let config = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let host = Host::from_file(
        &built_filter_wasm(),
        VmConfig::default(),
        HostOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    host.start(
        vec![
            PluginConfig::http("egress-guard", "egress-guard", config.clone()),
            PluginConfig::network("egress-guard-tcp", "egress-guard-tcp", config),
        ],
        1,
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", e.logs()))
}

/// The filter's series as Prometheus shows them, with their label values (to assert on).
fn filter_series() -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut stats: Vec<String> = Vec::new();
    for config in EXAMPLE_CONFIGS {
        let deployment = example_deployment(config);
        let defined: Vec<String> = deployment
            .host()
            .shared()
            .metrics
            .snapshot()
            .into_iter()
            .map(|m| m.full_name)
            .collect();
        assert!(
            defined.iter().any(|s| s.contains("policy.")),
            "{config}: the filter defined no policy counters: {defined:?}"
        );
        stats.extend(defined);
    }
    stats.sort();
    stats.dedup();
    let extractors = tag_extractors();
    let mut used = BTreeSet::new();
    let mut series: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for stat in &stats {
        let (name, tags) = prometheus_series(stat, &extractors, &mut used);
        series.entry(name).or_default().push(tags);
    }
    let unused: Vec<&str> = extractors
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| !used.contains(*n))
        .collect();
    assert!(
        unused.is_empty(),
        "tag extractors that match no counter the filter defines: {unused:?}"
    );
    series
}

fn auditor_series() -> Series {
    use egress_auditor::finding::{Finding, Severity};
    let metrics = egress_auditor::metrics::Metrics::new();
    let finding = Finding {
        rule: "host-network".into(),
        severity: Severity::High,
        kind: "Pod".into(),
        namespace: Some("shop".into()),
        name: "web".into(),
        container: None,
        message: String::new(),
        evidence: serde_json::json!({}),
    };
    metrics.judged(&[finding], true, 1, std::time::Duration::from_millis(5));
    metrics.api_error("pods", "500");
    metrics.sink_failure("events");
    let mut series = Series::new();
    for line in metrics.encode().lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, labels) = match line.split_once('{') {
            Some((name, rest)) => (name, rest.split_once('}').expect("labels end").0),
            None => (line.split_whitespace().next().expect("a sample name"), ""),
        };
        let entry = series.entry(name.to_string()).or_default();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            entry.insert(pair.split_once('=').expect("label=value").0.to_string());
        }
    }
    series
}

/// Metric names and the labels each expression uses: `name{label...}` selectors, and
/// `by (...)`/`without (...)` groupings (checked against every metric of the expression).
struct Used {
    selectors: Vec<(String, BTreeSet<String>)>,
    groupings: BTreeSet<String>,
}

fn used_in(expr: &str) -> Used {
    // Label names (egress_kind, ...) share the prefix; metric names are egress_<component>_*.
    let selector =
        Regex::new(r"\b(egress_(?:filter|auditor)_[a-z0-9_]+)\s*(\{([^}]*)\})?").unwrap();
    let label = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*""#).unwrap();
    let grouping = Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").unwrap();
    let function_argument =
        Regex::new(r"label_values\(\s*egress_[a-z0-9_]+\s*,\s*([a-z_]+)\s*\)").unwrap();
    let selectors = selector
        .captures_iter(expr)
        .map(|c| {
            let labels = c
                .get(3)
                .map(|m| {
                    label
                        .captures_iter(m.as_str())
                        .map(|l| l[1].to_string())
                        .collect()
                })
                .unwrap_or_default();
            (c[1].to_string(), labels)
        })
        .collect();
    let mut groupings: BTreeSet<String> = grouping
        .captures_iter(expr)
        .flat_map(|c| {
            c[1].split(',')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    groupings.extend(
        function_argument
            .captures_iter(expr)
            .map(|c| c[1].to_string()),
    );
    Used {
        selectors,
        groupings,
    }
}

#[test]
fn the_filter_counters_become_labelled_series() {
    let series = filter_series();
    let names: BTreeSet<&str> = series.keys().map(String::as_str).collect();
    // Every name reduced to a family: nothing from the configuration (a policy or limit name)
    // is left in a metric name.
    assert_eq!(
        names,
        BTreeSet::from([
            "egress_filter_admin_policy",
            "egress_filter_baseline_policy",
            "egress_filter_decision",
            "egress_filter_namespace_policy",
            "egress_filter_policy",
            "egress_filter_policy_dry_run",
            "egress_filter_protocol_denied",
            "egress_filter_ratelimit_limited",
            "egress_filter_ratelimited",
            "egress_filter_reason",
            "egress_filter_tier",
        ]),
    );
    let has = |name: &str, tags: &[(&str, &str)]| {
        series[name].iter().any(|t| {
            t.len() == tags.len()
                && tags
                    .iter()
                    .all(|(k, v)| t.get(*k).map(String::as_str) == Some(*v))
        })
    };
    assert!(has(
        "egress_filter_decision",
        &[("egress_kind", "tcp"), ("egress_outcome", "deny")]
    ));
    assert!(has(
        "egress_filter_policy",
        &[
            ("egress_policy", "allow-ci-github"),
            ("egress_outcome", "allow")
        ]
    ));
    assert!(has(
        "egress_filter_policy",
        &[
            ("egress_policy", "audit-payment-writes"),
            ("egress_outcome", "audit")
        ]
    ));
    assert!(has(
        "egress_filter_policy_dry_run",
        &[
            ("egress_policy", "restrict-ci-to-acme-repos"),
            ("egress_outcome", "deny")
        ]
    ));
    assert!(has(
        "egress_filter_reason",
        &[("egress_reason", "cannot_evaluate")]
    ));
    assert!(has(
        "egress_filter_ratelimit_limited",
        &[("egress_limit", "per-workload")]
    ));
    assert!(has("egress_filter_ratelimited", &[("egress_kind", "http")]));
    // With tiers: decisions by tier, PASSes of the admin tier, and each tier's policies.
    assert!(has(
        "egress_filter_tier",
        &[("egress_tier", "admin"), ("egress_outcome", "pass")]
    ));
    assert!(has(
        "egress_filter_tier",
        &[("egress_tier", "default"), ("egress_outcome", "deny")]
    ));
    assert!(has(
        "egress_filter_admin_policy",
        &[
            ("egress_policy", "delegate-to-teams"),
            ("egress_outcome", "pass")
        ]
    ));
    assert!(has(
        "egress_filter_namespace_policy",
        &[
            ("egress_namespace", "shop"),
            ("egress_policy", "audit-uploads"),
            ("egress_outcome", "audit")
        ]
    ));
    assert!(has(
        "egress_filter_baseline_policy",
        &[
            ("egress_policy", "package-mirror"),
            ("egress_outcome", "allow")
        ]
    ));
    assert!(has(
        "egress_filter_protocol_denied",
        &[("egress_kind", "tcp")]
    ));
}

#[test]
fn the_dashboard_queries_only_what_is_exported_and_shows_all_of_it() {
    let mut exported: Series = filter_series()
        .into_iter()
        .map(|(name, samples)| {
            (
                name,
                samples.into_iter().flat_map(|t| t.into_keys()).collect(),
            )
        })
        .collect();
    exported.extend(auditor_series());
    let dashboard = dashboard();
    let mut shown = BTreeSet::new();
    let mut problems = Vec::new();
    for (kind, expr) in queries(&dashboard) {
        if kind != "prometheus" {
            continue;
        }
        let used = used_in(&expr);
        let mut labels_here = BTreeSet::new();
        for (name, labels) in &used.selectors {
            let Some(known) = exported.get(name) else {
                problems.push(format!("{name} is not exported (in `{expr}`)"));
                continue;
            };
            shown.insert(name.clone());
            labels_here.extend(known.iter().cloned());
            for label in labels {
                if !known.contains(label) && !SCRAPE_LABELS.contains(&label.as_str()) {
                    problems.push(format!("{name} has no label {label} (in `{expr}`)"));
                }
            }
        }
        for label in &used.groupings {
            if !labels_here.contains(label) && !SCRAPE_LABELS.contains(&label.as_str()) {
                problems.push(format!("no metric of `{expr}` has the label {label}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let unseen: Vec<&String> = exported.keys().filter(|n| !shown.contains(*n)).collect();
    assert!(
        unseen.is_empty(),
        "exported but not on the dashboard: {unseen:?}"
    );
}

#[test]
fn the_decision_log_panel_reads_fields_the_filter_logs() {
    let dashboard = dashboard();
    let loki: Vec<String> = queries(&dashboard)
        .into_iter()
        .filter(|(kind, _)| kind == "loki")
        .map(|(_, expr)| expr)
        .collect();
    assert!(!loki.is_empty(), "the dashboard has a decision-log panel");

    // A denied HTTP request and a denied TLS connection through the real filter.
    let mut deployment = example_deployment(EXAMPLE_CONFIGS[0]);
    use base64::Engine as _;
    let hello = base64::engine::general_purpose::STANDARD
        .encode(egress_sim::client_hello::client_hello("pastebin.com"));
    let requests = [
        r#"{"id":"paste","source":{"principal":"cluster.local/ns/shop/sa/web","ip":"10.1.0.2","port":40000},"destination":{"ip":"10.20.0.5","port":80},"http":{"method":"POST","authority":"pastebin.com","path":"/api","scheme":"http","protocol":"HTTP/1.1","headers":{}}}"#.to_string(),
        format!(
            r#"{{"id":"paste-tls","source":{{"principal":"cluster.local/ns/shop/sa/web","ip":"10.1.0.2","port":40001}},"destination":{{"ip":"10.20.0.5","port":443}},"sni":"pastebin.com","tcp":{{"data_base64":"{hello}"}}}}"#
        ),
    ];
    let items = replay::parse_requests(&requests.join("\n")).unwrap_or_else(|e| panic!("{e}"));
    let results = replay::run(&mut deployment, &items).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<String> = results
        .iter()
        .map(|r| {
            r.logs
                .iter()
                .map(|l| l.message.clone())
                .find(|m| m.contains(r#""event":"decision""#))
                .unwrap_or_else(|| panic!("{}: no decision line", r.id))
        })
        .collect();

    // `| json label="path"` stages: each path must resolve in the decision lines.
    let json_stage = Regex::new(r"\|\s*json\s+([^|]+)").unwrap();
    let field = Regex::new(r#"([a-z_]+)="((?:[^"\\]|\\.)*)""#).unwrap();
    let mut checked = 0;
    for expr in &loki {
        assert!(
            expr.contains(r#"|= `"event":"decision"`"#),
            "{expr}: filter on decision lines"
        );
        for stage in json_stage.captures_iter(expr) {
            for f in field.captures_iter(&stage[1]) {
                let path = f[2].replace("\\\"", "\"");
                let found = lines.iter().any(|line| {
                    let value: Value = serde_json::from_str(line).unwrap();
                    json_path(&value, &path).is_some_and(|v| !v.is_null())
                });
                assert!(
                    found,
                    "`{path}` ({}) is in no decision line: {lines:#?}",
                    &f[1]
                );
                checked += 1;
            }
        }
        // The panel keeps denies only; the filter says so in these words.
        assert!(expr.contains(r#"decision="deny""#), "{expr}");
    }
    assert!(checked >= 5, "json fields checked: {checked}");
    for line in &lines {
        let value: Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["decision"], "deny", "{line}");
    }
}

/// Loki's `json` stage paths: `a.b`, `a["b.c"]`.
fn json_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let step = Regex::new(r#"^(?:\.?([A-Za-z_][A-Za-z0-9_]*)|\["([^"]*)"\])"#).unwrap();
    let mut rest = path;
    let mut at = value;
    while !rest.is_empty() {
        let c = step.captures(rest)?;
        let key = c.get(1).or_else(|| c.get(2))?.as_str();
        at = at.get(key)?;
        rest = &rest[c.get(0)?.end()..];
    }
    Some(at)
}
