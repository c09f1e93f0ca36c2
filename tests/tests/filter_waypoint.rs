//! The real `egress_filter.wasm` on an ambient waypoint, as Envoy runs it there: the filter sees
//! the connection carried inside the HBONE tunnel, which has no TLS of its own, so no peer
//! certificate; the caller's identity is the source workload's SPIFFE ID that Istio puts in
//! filter state `io.istio.peer_principal` from the tunnel's mutual TLS, and `source.address` is
//! the client pod's address. Policies on principals and namespaces, and rate limits keyed by
//! `source.principal`, must work the same as on the egress gateway.

mod common;

use std::net::SocketAddr;

use common::egress_filter;
use egress_sim::{
    Connection, Deployment, Host, HostOptions, HttpRequest, PluginConfig, StreamOutcome,
    StreamResult, TcpStream, VmConfig,
};
use serde_json::Value;

const CONFIG: &str = r#"{
  "policies": [
    {
      "name": "checkout-to-mirror",
      "action": "ALLOW",
      "rules": [{
        "from": [{"source": {"principals": ["cluster.local/ns/orders/sa/checkout"]}}],
        "to": [{"operation": {"hosts": ["deb.debian.org"], "methods": ["GET"]}}]
      }]
    },
    {
      "name": "orders-to-payments",
      "action": "ALLOW",
      "rules": [{
        "from": [{"source": {"namespaces": ["orders"]}}],
        "when": [{"key": "connection.sni", "values": ["api.stripe.com"]}]
      }]
    }
  ],
  "rateLimits": [
    {"name": "per-workload", "key": ["source.principal"], "maxTokens": 2, "tokensPerFill": 1, "fillInterval": "1h"}
  ]
}"#;

const CHECKOUT: &str = "cluster.local/ns/orders/sa/checkout";
const REPORTS: &str = "cluster.local/ns/analytics/sa/reports";

fn deploy() -> Deployment {
    let host = Host::from_file(
        &egress_filter(),
        VmConfig::default(),
        HostOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    host.start(
        vec![
            PluginConfig::http("egress-filter-http", "egress-filter-http", CONFIG),
            PluginConfig::network("egress-filter-network", "egress-filter-network", CONFIG),
        ],
        1,
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", e.logs()))
}

fn pod(ip: &str) -> SocketAddr {
    format!("{ip}:41234").parse().unwrap()
}

fn mirror_get(connection: Connection) -> HttpRequest {
    HttpRequest {
        connection,
        ..HttpRequest::get("deb.debian.org", "/debian/dists/stable/Release")
    }
}

fn tls_to(connection: Connection, sni: &str) -> TcpStream {
    TcpStream {
        connection: Connection {
            sni: Some(sni.into()),
            ..connection
        },
        downstream: vec![vec![0x16, 0x03, 0x01, 0, 0]],
        upstream: Vec::new(),
        ..TcpStream::default()
    }
}

/// The decision line's fields.
fn decision(outcome: &StreamOutcome) -> Value {
    outcome
        .logs
        .iter()
        .find_map(|l| {
            let v: Value = serde_json::from_str(&l.message).ok()?;
            (v["event"] == "decision").then_some(v)
        })
        .unwrap_or_else(|| panic!("no decision line in {:?}", outcome.logs))
}

#[test]
fn the_source_principal_comes_from_the_hbone_tunnel() {
    let mut deployment = deploy();
    let worker = deployment.worker(0);

    let outcome = worker
        .http(&mirror_get(Connection::via_waypoint(
            pod("10.8.1.17"),
            CHECKOUT,
        )))
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Continued);
    let d = decision(&outcome);
    assert_eq!(d["policy"], "checkout-to-mirror");
    assert_eq!(d["attributes"]["source.principal"], CHECKOUT);
    assert_eq!(d["attributes"]["source.namespace"], "orders");
    assert_eq!(d["attributes"]["source.ip"], "10.8.1.17", "the client pod");

    // Another workload through the same waypoint is another principal.
    let outcome = worker
        .http(&mirror_get(Connection::via_waypoint(
            pod("10.8.2.5"),
            REPORTS,
        )))
        .unwrap();
    assert_eq!(
        outcome.local_reply().map(|r| r.status),
        Some(403),
        "{:?}",
        outcome.logs
    );
    assert_eq!(
        decision(&outcome)["attributes"]["source.principal"],
        REPORTS
    );

    // Without the tunnel's identity (plain text, no certificate) there is no principal to allow.
    let outcome = worker
        .http(&mirror_get(Connection {
            source: pod("10.8.1.17"),
            ..Connection::default()
        }))
        .unwrap();
    assert_eq!(outcome.local_reply().map(|r| r.status), Some(403));
    assert!(decision(&outcome)["attributes"]["source.principal"].is_null());
}

#[test]
fn tls_connections_through_the_waypoint_are_judged_by_the_tunnel_identity() {
    let mut deployment = deploy();
    let worker = deployment.worker(0);

    let outcome = worker
        .tcp(&tls_to(
            Connection::via_waypoint(pod("10.8.1.17"), CHECKOUT),
            "api.stripe.com",
        ))
        .unwrap();
    assert_eq!(
        outcome.result,
        StreamResult::Continued,
        "{:?}",
        outcome.logs
    );
    assert_eq!(outcome.forwarded_bytes, [0x16, 0x03, 0x01, 0, 0]);
    assert_eq!(decision(&outcome)["policy"], "orders-to-payments");

    let outcome = worker
        .tcp(&tls_to(
            Connection::via_waypoint(pod("10.8.2.5"), REPORTS),
            "api.stripe.com",
        ))
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Closed);
    assert!(outcome.forwarded_bytes.is_empty());
}

#[test]
fn rate_limits_count_each_workload_behind_the_waypoint() {
    let mut deployment = deploy();
    let worker = deployment.worker(0);
    // All of them come from the same waypoint; the buckets follow the workload.
    let statuses: Vec<Option<u32>> = (0..3)
        .map(|_| {
            let outcome = worker
                .http(&mirror_get(Connection::via_waypoint(
                    pod("10.8.1.17"),
                    CHECKOUT,
                )))
                .unwrap();
            outcome.local_reply().map(|r| r.status)
        })
        .collect();
    assert_eq!(statuses, [None, None, Some(429)]);

    // A second checkout replica (another pod IP, the same identity) shares the bucket.
    let outcome = worker
        .http(&mirror_get(Connection::via_waypoint(
            pod("10.8.3.9"),
            CHECKOUT,
        )))
        .unwrap();
    assert_eq!(outcome.local_reply().map(|r| r.status), Some(429));
}
