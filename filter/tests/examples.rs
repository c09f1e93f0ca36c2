//! The bundled example (examples/egress-policy.json + examples/traffic.jsonl) replayed through
//! the engine natively, with each line's properties presented the way the proxy reports them,
//! and the decision log line checked for every request.

use std::collections::HashMap;

use egress_filter::gather::{gather_connection, gather_http, HeaderList, HostStatus, ProxyFacts};
use egress_filter::log::decision_line;
use egress_filter::{CompiledConfig, TrafficKind};
use serde_json::Value;

/// One replay line presented as Envoy properties and request headers.
struct ReplayedStream {
    properties: HashMap<String, Vec<u8>>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ProxyFacts for ReplayedStream {
    fn property(&self, path: &str) -> Result<Option<Vec<u8>>, HostStatus> {
        Ok(self.properties.get(&path.replace('\0', ".")).cloned())
    }
    fn request_headers(&self) -> Result<HeaderList, HostStatus> {
        Ok(HeaderList::from_pairs(&self.headers))
    }
}

fn stream(line: &Value) -> ReplayedStream {
    let mut properties = HashMap::new();
    let mut put = |k: &str, v: Vec<u8>| {
        properties.insert(k.to_string(), v);
    };
    let source = &line["source"];
    if let Some(principal) = source["principal"].as_str() {
        put(
            "connection.uri_san_peer_certificate",
            format!("spiffe://{principal}").into_bytes(),
        );
        put("connection.mtls", vec![1]);
    } else {
        put("connection.mtls", vec![0]);
    }
    if let (Some(ip), Some(port)) = (source["ip"].as_str(), source["port"].as_i64()) {
        put("source.address", format!("{ip}:{port}").into_bytes());
        put("source.port", port.to_le_bytes().to_vec());
    }
    let destination = &line["destination"];
    if let (Some(ip), Some(port)) = (destination["ip"].as_str(), destination["port"].as_i64()) {
        put("destination.address", format!("{ip}:{port}").into_bytes());
        put("destination.port", port.to_le_bytes().to_vec());
    }
    if let Some(sni) = line["sni"].as_str() {
        put("connection.requested_server_name", sni.as_bytes().to_vec());
    }
    let mut headers = Vec::new();
    if let Some(http) = line.get("http") {
        if let Some(protocol) = http["protocol"].as_str() {
            put("request.protocol", protocol.as_bytes().to_vec());
        }
        for (name, key) in [
            (":authority", "authority"),
            (":method", "method"),
            (":path", "path"),
            (":scheme", "scheme"),
        ] {
            if let Some(value) = http[key].as_str() {
                headers.push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
            }
        }
        if let Some(map) = http["headers"].as_object() {
            for (name, value) in map {
                headers.push((
                    name.as_bytes().to_vec(),
                    value.as_str().unwrap_or("").as_bytes().to_vec(),
                ));
            }
        }
    }
    ReplayedStream {
        properties,
        headers,
    }
}

fn repo_file(name: &str) -> String {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// (decision, deciding policy, audit, dry-run policies with their would-be decision)
type Expected = (
    &'static str,
    Option<&'static str>,
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

fn expected() -> HashMap<&'static str, Expected> {
    HashMap::from([
        // The policy decision of the lines that show rate limits and protocol checks (which come
        // after it; tests/tests/filter_examples.rs covers them through the real .wasm).
        (
            "payments-burst-1",
            (
                "allow",
                Some("allow-payments-stripe"),
                &["audit-payment-writes"][..],
                &[][..],
            ),
        ),
        (
            "payments-burst-2",
            (
                "allow",
                Some("allow-payments-stripe"),
                &["audit-payment-writes"],
                &[],
            ),
        ),
        (
            "payments-burst-3",
            (
                "allow",
                Some("allow-payments-stripe"),
                &["audit-payment-writes"],
                &[],
            ),
        ),
        (
            "payments-burst-4",
            (
                "allow",
                Some("allow-payments-stripe"),
                &["audit-payment-writes"],
                &[],
            ),
        ),
        (
            "app-fronted-sni",
            ("allow", Some("allow-package-mirror"), &[], &[]),
        ),
        (
            "app-ssh-over-443",
            ("allow", Some("allow-package-mirror"), &[], &[]),
        ),
        (
            "ci-clone-acme",
            ("allow", Some("allow-ci-github"), &[], &[]),
        ),
        (
            "ci-clone-foreign",
            (
                "allow",
                Some("allow-ci-github"),
                &[],
                &[("restrict-ci-to-acme-repos", "deny")],
            ),
        ),
        (
            "ci-raw-script",
            ("allow", Some("allow-ci-github"), &[], &[]),
        ),
        (
            "ci-dotdot-trick",
            (
                "allow",
                Some("allow-ci-github"),
                &[],
                &[("restrict-ci-to-acme-repos", "deny")],
            ),
        ),
        (
            "ci-tls-github",
            ("allow", Some("allow-ci-github"), &[], &[]),
        ),
        ("ci-tls-stripe", ("deny", None, &[], &[])),
        (
            "payments-create-intent",
            (
                "allow",
                Some("allow-payments-stripe"),
                &["audit-payment-writes"],
                &[],
            ),
        ),
        (
            "payments-read-charge",
            ("allow", Some("allow-payments-stripe"), &[], &[]),
        ),
        ("payments-delete-customer", ("deny", None, &[], &[])),
        (
            "payments-tls-stripe",
            ("allow", Some("allow-payments-stripe"), &[], &[]),
        ),
        (
            "app-mirror-download",
            ("allow", Some("allow-package-mirror"), &[], &[]),
        ),
        ("app-mirror-upload", ("deny", None, &[], &[])),
        (
            "app-mirror-admin-trick",
            ("deny", Some("deny-mirror-admin"), &[], &[]),
        ),
        (
            "app-evil-host-port",
            ("deny", Some("block-exfiltration-sites"), &[], &[]),
        ),
        (
            "app-pastebin-trailing-dot",
            ("deny", Some("block-exfiltration-sites"), &[], &[]),
        ),
        ("app-unlisted-api", ("deny", None, &[], &[])),
        (
            "plaintext-client",
            ("deny", Some("require-mesh-identity"), &[], &[]),
        ),
        (
            "app-tls-mirror",
            ("allow", Some("allow-package-mirror"), &[], &[]),
        ),
        (
            "app-tls-transfer-sh",
            ("deny", Some("block-exfiltration-sites"), &[], &[]),
        ),
        (
            "app-tls-evil-sni-case",
            ("deny", Some("block-exfiltration-sites"), &[], &[]),
        ),
        ("app-tls-no-sni", ("deny", None, &[], &[])),
        (
            "plaintext-tls-mirror",
            ("deny", Some("require-mesh-identity"), &[], &[]),
        ),
    ])
}

#[test]
fn example_traffic_gets_the_documented_decisions() {
    let config = CompiledConfig::from_json(repo_file("egress-policy.json").as_bytes())
        .expect("example config");
    let expected = expected();
    let traffic = repo_file("traffic.jsonl");
    let mut seen = 0;
    let (mut allowed, mut denied) = (0, 0);
    for line in traffic.lines().filter(|l| !l.trim().is_empty()) {
        let line: Value = serde_json::from_str(line).expect("traffic line is JSON");
        let id = line["id"].as_str().expect("id");
        let facts = stream(&line);
        let (kind, attrs) = if line.get("http").is_some() {
            (
                TrafficKind::Http,
                gather_http(&facts, config.policy.header_names()),
            )
        } else {
            (TrafficKind::Tcp, gather_connection(&facts))
        };
        let attrs = attrs.unwrap_or_else(|e| panic!("{id}: {e}"));
        let decision = config.policy.evaluate(&attrs);
        let log: Value = serde_json::from_str(&decision_line(kind, &decision, Some(&attrs)))
            .expect("log line is JSON");

        let (verdict, policy, audit, dry_run) = expected
            .get(id)
            .unwrap_or_else(|| panic!("no expectation for {id}"));
        assert_eq!(log["decision"], *verdict, "{id}: {log}");
        assert_eq!(log["policy"].as_str(), *policy, "{id}: {log}");
        let got_audit: Vec<&str> = log["audit"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(got_audit, audit.to_vec(), "{id}: {log}");
        let got_dry: Vec<(&str, &str)> = log["dryRun"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["policy"].as_str().unwrap(),
                    h["wouldBe"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(got_dry, dry_run.to_vec(), "{id}: {log}");
        assert_eq!(log["event"], "decision");
        assert_eq!(log["kind"], kind.as_str());
        match *verdict {
            "allow" => allowed += 1,
            _ => denied += 1,
        }
        seen += 1;
    }
    assert_eq!(seen, expected.len(), "every expectation has a traffic line");
    assert!(
        allowed >= 5 && denied >= 5,
        "{allowed} allowed, {denied} denied"
    );
}
