//! `egress-controller run` against the mock API server (real Kubernetes JSON over HTTP): policy
//! and Namespace changes reach the WasmPlugins, and the configuration written decides requests
//! through the real filter as the policies say; invalid policies hold the old configuration and
//! say why; API faults lose no update; of two replicas only the leader writes, and a leader that
//! is stopped (or gets SIGTERM) hands over at once.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, http_request, Gateway};
use egress_controller::compile::{self, BaseConfig, PolicySet};
use egress_controller::controller::{self, Handle, RunOptions, Target};
use egress_controller::lease::LeaseSettings;
use egress_sim::replay::Decision;
use kube_mock::{Fault, FaultAction, MockApi};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const LEASE_NAMESPACE: &str = "egress-guard";

fn wasmplugin(name: &str, kind: &str) -> Value {
    json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": name, "namespace": "istio-system"},
        "spec": {
            "selector": {"matchLabels": {"istio": "egressgateway"}},
            "url": "oci://ghcr.io/egress-guard/egress-filter:0.1.0",
            "sha256": "4c26bd5e7166816737c0b4a4303909dd023dea9c86f407ae874b8f66386148af",
            "type": kind,
            "phase": "AUTHZ",
            "failStrategy": "FAIL_CLOSE",
            "pluginConfig": {"policies": []},
        },
    })
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn cluster_policy(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "policy.egress-guard.dev/v1alpha1",
        "kind": "ClusterEgressPolicy",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn egress_policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "policy.egress-guard.dev/v1alpha1",
        "kind": "EgressPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

fn block_paste() -> Value {
    cluster_policy(
        "block-paste",
        json!({"tier": "Admin", "priority": 10, "rules": [
            {"name": "paste-sites", "action": "Deny", "to": [{"operation": {"hosts": ["pastebin.com"]}}]}
        ]}),
    )
}

fn ci_allowlist() -> Value {
    cluster_policy(
        "ci-allowlist",
        json!({"tier": "Admin", "priority": 100,
        "subject": {"namespaces": {"matchLabels": {"profile": "ci"}}},
        "rules": [
            {"name": "github", "action": "Allow", "to": [{"operation": {"hosts": ["*.github.com"]}}]},
            {"name": "nothing-else", "action": "Deny"}
        ]}),
    )
}

fn pass_to_teams() -> Value {
    cluster_policy(
        "pass-to-teams",
        json!({"tier": "Admin", "priority": 1000, "rules": [{"name": "teams", "action": "Pass"}]}),
    )
}

fn allow_hosts(namespace: &str, name: &str, hosts: &[&str]) -> Value {
    egress_policy(
        namespace,
        name,
        json!({"action": "ALLOW", "rules": [{"to": [{"operation": {"hosts": hosts}}]}]}),
    )
}

/// A mock cluster with the two WasmPlugins installed and the namespaces `ci-build` and `shop`.
async fn cluster() -> MockApi {
    let mock = MockApi::start().await;
    mock.apply_all([
        wasmplugin("egress-filter-http", "HTTP"),
        wasmplugin("egress-filter-network", "NETWORK"),
        namespace("ci-build", json!({"profile": "ci"})),
        namespace("shop", json!({"profile": "app"})),
        namespace(LEASE_NAMESPACE, json!({})),
    ]);
    mock
}

fn options(mock: &MockApi, dir: &Path, identity: Option<&str>) -> RunOptions {
    let targets = ["egress-filter-http", "egress-filter-network"]
        .into_iter()
        .map(|name| Target {
            namespace: "istio-system".into(),
            name: name.into(),
            base: BaseConfig::default(),
        })
        .collect();
    let mut options = RunOptions::new(targets, "127.0.0.1:0".parse().unwrap());
    options.kubeconfig = Some(mock.write_kubeconfig(dir));
    options.debounce = Duration::from_millis(50);
    options.resync = Duration::from_secs(60);
    options.retry_backoff = Duration::from_millis(100);
    options.lease = identity.map(|id| {
        let mut lease = LeaseSettings::new(LEASE_NAMESPACE, id);
        lease.lease_duration = Duration::from_secs(3);
        lease.renew_deadline = Duration::from_secs(2);
        lease.retry_period = Duration::from_millis(200);
        lease
    });
    options
}

async fn start(mock: &MockApi, dir: &Path, identity: Option<&str>) -> Handle {
    // The controller's log, shown for a failing test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "egress_controller=debug,kube=info",
        ))
        .with_test_writer()
        .try_init();
    controller::start(options(mock, dir, identity))
        .await
        .unwrap_or_else(|e| panic!("controller did not start: {e}"))
}

fn plugin_config(mock: &MockApi, name: &str) -> Value {
    mock.object("wasmplugins", Some("istio-system"), name)
        .map(|o| o["spec"]["pluginConfig"].clone())
        .unwrap_or(Value::Null)
}

/// What the compiler makes of the objects the mock holds now.
fn expected_config(mock: &MockApi) -> Result<Value, String> {
    let typed = |plural: &str| -> Vec<Value> { mock.objects(plural) };
    let set = PolicySet {
        cluster_policies: typed("clusteregresspolicies")
            .into_iter()
            .map(|o| serde_json::from_value(o).unwrap())
            .collect(),
        egress_policies: typed("egresspolicies")
            .into_iter()
            .map(|o| serde_json::from_value(o).unwrap())
            .collect(),
        namespaces: typed("namespaces")
            .into_iter()
            .map(|o| serde_json::from_value(o).unwrap())
            .collect(),
    };
    compile::compile(&set, &BaseConfig::default())
        .map(|c| c.plugin_config)
        .map_err(|e| e.to_string())
}

/// Waits until both WasmPlugins hold exactly the compilation of the objects the mock holds.
async fn converged(mock: &MockApi) -> Value {
    eventually(
        "the WasmPlugins to hold the current compilation",
        WAIT,
        || {
            let want = expected_config(mock)?;
            for name in ["egress-filter-http", "egress-filter-network"] {
                let got = plugin_config(mock, name);
                if got != want {
                    return Err(format!("{name}: {got}"));
                }
            }
            Ok(want)
        },
    )
    .await
}

fn condition(object: &Value, type_: &str) -> Option<Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// Waits until the object's status describes its current generation with `type_` = `status`,
/// and returns that condition.
async fn status_is(
    mock: &MockApi,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
    type_: &str,
    status: &str,
) -> Value {
    eventually(&format!("{plural} {name}: {type_}={status}"), WAIT, || {
        let object = mock
            .object(plural, namespace, name)
            .ok_or_else(|| "no object".to_string())?;
        let generation = &object["metadata"]["generation"];
        let c = condition(&object, type_).ok_or_else(|| object["status"].to_string())?;
        if object["status"]["observedGeneration"] == *generation
            && c["observedGeneration"] == *generation
            && c["status"] == status
        {
            Ok(c)
        } else {
            Err(object["status"].to_string())
        }
    })
    .await
}

fn decide(config: &Value, namespace: &str, host: &str) -> Decision {
    let mut gateway = Gateway::new(config.to_string().as_bytes());
    gateway
        .one(&http_request("probe", namespace, "GET", host, "/"))
        .decision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_namespace_changes_reach_the_gateway() {
    let mock = cluster().await;
    mock.apply_all([block_paste(), ci_allowlist(), pass_to_teams()]);
    mock.apply(allow_hosts("shop", "payments", &["api.stripe.com"]));
    let dir = tempfile::tempdir().unwrap();
    let handle = start(&mock, dir.path(), None).await;

    let config = converged(&mock).await;
    assert_eq!(decide(&config, "shop", "api.stripe.com"), Decision::Allow);
    assert_eq!(decide(&config, "shop", "pastebin.com"), Decision::Deny);
    assert_eq!(
        decide(&config, "ci-build", "api.github.com"),
        Decision::Allow
    );
    assert_eq!(
        decide(&config, "ci-build", "api.stripe.com"),
        Decision::Deny
    );
    let plugin = mock
        .object("wasmplugins", Some("istio-system"), "egress-filter-http")
        .unwrap();
    assert_eq!(
        plugin["spec"]["url"], "oci://ghcr.io/egress-guard/egress-filter:0.1.0",
        "the rest of the WasmPlugin is left alone"
    );
    let applies: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/wasmplugins/"))
        .collect();
    assert!(!applies.is_empty());
    for r in &applies {
        assert_eq!(
            r.query_param("fieldManager").as_deref(),
            Some("egress-controller")
        );
        let body = r.body.as_ref().unwrap();
        assert_eq!(
            body["spec"].as_object().unwrap().len(),
            1,
            "only pluginConfig: {body}"
        );
        match r.content_type.as_deref() {
            Some("application/apply-patch+yaml") => {
                assert_eq!(r.query_param("force").as_deref(), Some("true"))
            }
            // The installed `policies` key is removed in the same patch that sets `tiers`.
            Some("application/merge-patch+json") => {
                assert!(body["spec"]["pluginConfig"]["policies"].is_null());
                assert!(body["spec"]["pluginConfig"].get("policies").is_some());
                assert!(body["metadata"]["resourceVersion"].is_string());
            }
            other => panic!("unexpected patch type {other:?}"),
        }
    }
    for (plural, namespace, name) in [
        ("clusteregresspolicies", None, "block-paste"),
        ("clusteregresspolicies", None, "ci-allowlist"),
        ("egresspolicies", Some("shop"), "payments"),
    ] {
        status_is(&mock, plural, namespace, name, "Accepted", "True").await;
        let ready = status_is(&mock, plural, namespace, name, "Ready", "True").await;
        assert!(ready["message"]
            .as_str()
            .unwrap()
            .contains("istio-system/egress-filter-network"));
        status_is(&mock, plural, namespace, name, "Shadowed", "False").await;
    }

    // The shop team changes provider. The foreign key is gone: server-side apply from now on.
    mock.clear_requests();
    mock.apply(allow_hosts("shop", "payments", &["api.paypal.com"]));
    let config = converged(&mock).await;
    let types: Vec<Option<String>> = mock
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/wasmplugins/"))
        .map(|r| r.content_type)
        .collect();
    let ssa = Some("application/apply-patch+yaml".to_string());
    assert_eq!(types, [ssa.clone(), ssa]);
    assert_eq!(decide(&config, "shop", "api.stripe.com"), Decision::Deny);
    assert_eq!(decide(&config, "shop", "api.paypal.com"), Decision::Allow);
    let accepted = status_is(
        &mock,
        "egresspolicies",
        Some("shop"),
        "payments",
        "Accepted",
        "True",
    )
    .await;
    assert_eq!(accepted["observedGeneration"], 2);

    // shop gets the CI label: the CI allowlist now applies to it.
    mock.apply(namespace("shop", json!({"profile": "ci"})));
    let config = converged(&mock).await;
    assert_eq!(
        config["tiers"]["admin"][1]["subject"]["namespaces"],
        json!(["ci-build", "shop"])
    );
    assert_eq!(decide(&config, "shop", "api.paypal.com"), Decision::Deny);
    // ...so its paypal rule can no longer decide anything.
    let shadowed = status_is(
        &mock,
        "egresspolicies",
        Some("shop"),
        "payments",
        "Shadowed",
        "True",
    )
    .await;
    assert_eq!(
        shadowed["message"],
        "rule rules[0] (spec.rules[0]) is unreachable: denied first by ClusterEgressPolicy ci-allowlist priority 100, rule nothing-else"
    );
    mock.apply(namespace("shop", json!({"profile": "app"})));
    let config = converged(&mock).await;
    assert_eq!(decide(&config, "shop", "api.paypal.com"), Decision::Allow);
    status_is(
        &mock,
        "egresspolicies",
        Some("shop"),
        "payments",
        "Shadowed",
        "False",
    )
    .await;

    // An invalid policy: nothing is written, it says why, the others say they are held.
    let before = plugin_config(&mock, "egress-filter-http");
    mock.apply(egress_policy(
        "ci-build",
        "broken",
        json!({"rules": [{"when": [{"key": "request.body", "values": ["x"]}]}]}),
    ));
    let invalid = status_is(
        &mock,
        "egresspolicies",
        Some("ci-build"),
        "broken",
        "Accepted",
        "False",
    )
    .await;
    assert_eq!(invalid["reason"], "Invalid");
    assert!(
        invalid["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.rules[0].when[0].key: "),
        "{invalid}"
    );
    let held = status_is(
        &mock,
        "egresspolicies",
        Some("shop"),
        "payments",
        "Ready",
        "False",
    )
    .await;
    assert_eq!(held["reason"], "ConfigurationHeld");
    assert!(held["message"]
        .as_str()
        .unwrap()
        .contains("EgressPolicy ci-build/broken"));
    assert_eq!(
        plugin_config(&mock, "egress-filter-http"),
        before,
        "old configuration kept"
    );
    // Fixed: written again.
    mock.apply(egress_policy(
        "ci-build",
        "broken",
        json!({"rules": [{"when": [{"key": "request.headers[x-build]", "values": ["1"]}]}]}),
    ));
    converged(&mock).await;
    status_is(
        &mock,
        "egresspolicies",
        Some("ci-build"),
        "broken",
        "Ready",
        "True",
    )
    .await;

    // Deleted: shop has no EgressPolicy left, what the Admin tier passes on meets the default.
    assert!(mock.delete("egresspolicies", Some("shop"), "payments"));
    let config = converged(&mock).await;
    assert!(
        config["tiers"]["namespaces"].get("shop").is_none(),
        "{config}"
    );
    assert_eq!(decide(&config, "shop", "api.paypal.com"), Decision::Deny);

    let metrics = reqwest::get(format!("http://{}/metrics", handle.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(&metrics, "egress_controller_compiles_total") >= 6.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "egress_controller_compile_errors_total") >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "egress_controller_policies{tier=\"admin\"}"),
        3.0
    );
    assert!(
        metric(
            &metrics,
            "egress_controller_last_successful_compile_timestamp_seconds"
        ) > 1.7e9
    );
    let health = reqwest::get(format!("http://{}/healthz", handle.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    handle.shutdown().await;
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.trim().parse().ok()))
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_faults_lose_no_update() {
    let mock = cluster().await;
    mock.apply_all([block_paste(), pass_to_teams()]);
    mock.apply(allow_hosts("shop", "payments", &["api.stripe.com"]));
    // Faults for the first round: the namespace list throttled and failing, the first status
    // writes conflicting, the WasmPlugin read failing, its apply throttled.
    mock.inject(Fault::new("/api/v1/namespaces", 2, FaultAction::Status(429)).query("limit"));
    mock.inject(Fault::new(
        "/api/v1/namespaces",
        1,
        FaultAction::Status(503),
    ));
    mock.inject(Fault::new("/status", 3, FaultAction::Status(409)));
    mock.inject(Fault::new(
        "/wasmplugins/egress-filter-http",
        1,
        FaultAction::Status(500),
    ));
    mock.inject(
        Fault::new(
            "/wasmplugins/egress-filter-network",
            2,
            FaultAction::Status(429),
        )
        .method(axum::http::Method::PATCH),
    );
    let dir = tempfile::tempdir().unwrap();
    let handle = start(&mock, dir.path(), None).await;
    converged(&mock).await;
    status_is(
        &mock,
        "egresspolicies",
        Some("shop"),
        "payments",
        "Ready",
        "True",
    )
    .await;
    status_is(
        &mock,
        "clusteregresspolicies",
        None,
        "block-paste",
        "Ready",
        "True",
    )
    .await;

    // A watch that ends with 410 Gone while changes happen: the controller lists again and
    // misses none of them.
    mock.inject(Fault::new("/egresspolicies", 1, FaultAction::WatchGone).query("watch=true"));
    mock.inject(
        Fault::new("/clusteregresspolicies", 1, FaultAction::WatchGone).query("watch=true"),
    );
    for i in 0..5 {
        mock.apply(allow_hosts(
            "shop",
            "payments",
            &[&format!("api{i}.stripe.com")],
        ));
        if i == 1 {
            mock.expire_watches("egresspolicies");
            mock.expire_watches("clusteregresspolicies");
        }
    }
    mock.apply(allow_hosts("shop", "refunds", &["refunds.stripe.com"]));
    mock.inject(Fault::new("/status", 2, FaultAction::Status(409)));
    mock.inject(Fault::new("/status", 1, FaultAction::Status(500)));
    mock.apply(cluster_policy(
        "block-paste",
        json!({"tier": "Admin", "priority": 10, "rules": [
            {"name": "paste-sites", "action": "Deny", "to": [{"operation": {"hosts": ["pastebin.com", "paste.ee"]}}]}
        ]}),
    ));
    let config = converged(&mock).await;
    assert_eq!(decide(&config, "shop", "api4.stripe.com"), Decision::Allow);
    assert_eq!(decide(&config, "shop", "api3.stripe.com"), Decision::Deny);
    assert_eq!(
        decide(&config, "shop", "refunds.stripe.com"),
        Decision::Allow
    );
    assert_eq!(decide(&config, "shop", "paste.ee"), Decision::Deny);
    for (plural, namespace, name) in [
        ("egresspolicies", Some("shop"), "payments"),
        ("egresspolicies", Some("shop"), "refunds"),
        ("clusteregresspolicies", None, "block-paste"),
        ("clusteregresspolicies", None, "pass-to-teams"),
    ] {
        status_is(&mock, plural, namespace, name, "Ready", "True").await;
    }
    let payments = mock
        .object("egresspolicies", Some("shop"), "payments")
        .unwrap();
    assert_eq!(payments["metadata"]["generation"], 6);
    // Every injected fault was met.
    let answered = |code: u16, path: &str| {
        mock.requests()
            .iter()
            .filter(|r| r.status == code && r.path.contains(path))
            .count()
    };
    // Injected conflicts, and real ones (a status computed from an object that moved on).
    assert!(answered(409, "/status") >= 5);
    assert_eq!(answered(500, "/wasmplugins/"), 1);
    assert_eq!(answered(429, "/wasmplugins/"), 2);
    assert_eq!(answered(429, "/api/v1/namespaces"), 2);
    // The open watches ended with 410, and so did the next two watch starts: listed again.
    let gone_watches = mock
        .requests()
        .iter()
        .filter(|r| r.query.contains("watch=true") && r.path.contains("egresspolicies"))
        .count();
    assert!(gone_watches >= 4, "{gone_watches} watch requests");
    // Status writes carried the resourceVersion they were computed for.
    assert!(mock
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/status"))
        .all(|r| r
            .body
            .as_ref()
            .is_some_and(|b| b["metadata"]["resourceVersion"].is_string())));
    handle.shutdown().await;
}

fn lease_holder(mock: &MockApi) -> Option<String> {
    mock.object("leases", Some(LEASE_NAMESPACE), "egress-controller")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

async fn metrics_of(handle: &Handle) -> String {
    reqwest::get(format!("http://{}/metrics", handle.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_leader_writes_and_a_stopped_leader_hands_over() {
    let mock = cluster().await;
    mock.apply_all([block_paste(), pass_to_teams()]);
    let dir = tempfile::tempdir().unwrap();
    let a = start(&mock, &dir.path().join("a"), Some("replica-a")).await;
    let b = start(&mock, &dir.path().join("b"), Some("replica-b")).await;
    let first = eventually("a leader", WAIT, || {
        lease_holder(&mock).ok_or("none".to_string())
    })
    .await;
    converged(&mock).await;
    let (leader, follower) = if first == "replica-a" { (a, b) } else { (b, a) };
    // The follower is ready (it compiles) but writes nothing.
    let ready = reqwest::get(format!("http://{}/readyz", follower.addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    mock.apply(allow_hosts("shop", "payments", &["api.stripe.com"]));
    converged(&mock).await;
    let follower_metrics = metrics_of(&follower).await;
    assert_eq!(metric(&follower_metrics, "egress_controller_leader"), 0.0);
    assert!(metric(&follower_metrics, "egress_controller_compiles_total") >= 1.0);
    assert!(
        !follower_metrics.contains("egress_controller_wasmplugin_writes_total{"),
        "{follower_metrics}"
    );
    assert!(
        !follower_metrics.contains("egress_controller_status_writes_total{"),
        "{follower_metrics}"
    );
    let leader_metrics = metrics_of(&leader).await;
    assert_eq!(metric(&leader_metrics, "egress_controller_leader"), 1.0);

    // The leader stops: it releases the Lease and the follower takes over well before the lease
    // duration would have run out.
    leader.shutdown().await;
    let next = eventually("the other replica to lead", WAIT, || {
        match lease_holder(&mock) {
            Some(h) if h != first => Ok(h),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_ne!(next, first);
    let released = mock
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/leases/egress-controller"))
        .any(|r| {
            r.body
                .as_ref()
                .is_some_and(|b| b["spec"]["holderIdentity"].is_null())
        });
    assert!(released, "the stopped leader cleared holderIdentity");
    mock.apply(allow_hosts("shop", "payments", &["api.paypal.com"]));
    let config = converged(&mock).await;
    assert_eq!(decide(&config, "shop", "api.paypal.com"), Decision::Allow);
    status_is(
        &mock,
        "egresspolicies",
        Some("shop"),
        "payments",
        "Ready",
        "True",
    )
    .await;
    let metrics = metrics_of(&follower).await;
    assert_eq!(metric(&metrics, "egress_controller_leader"), 1.0);
    assert!(metrics.contains("egress_controller_wasmplugin_writes_total{result=\"applied\"}"));
    follower.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease() {
    let mock = cluster().await;
    mock.apply_all([block_paste(), pass_to_teams()]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = mock.write_kubeconfig(dir.path());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_egress-controller"))
        .args(["run", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--leader-elect",
            "--identity",
            "pod-1",
            "--lease-namespace",
            LEASE_NAMESPACE,
            "--lease-duration",
            "30s",
            "--renew-deadline",
            "20s",
            "--retry-period",
            "200ms",
            "--debounce",
            "50ms",
            "--listen",
            "127.0.0.1:0",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("pod-1 to lead", WAIT, || match lease_holder(&mock) {
        Some(h) if h == "pod-1" => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;
    converged(&mock).await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        lease_holder(&mock),
        None,
        "holderIdentity cleared on SIGTERM"
    );
}
