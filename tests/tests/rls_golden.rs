//! The golden RLS messages under `tests/data/rls/`, written by prost from envoy-types (code
//! generated from Envoy's real `rls.proto`): an encoder independent of the filter's own, which
//! its unit tests compare against these bytes. This test fails when a file differs from what
//! prost writes; `EGRESS_SIM_BLESS=1` rewrites them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, Quota, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::{value, Duration, Struct, Value};
use prost::Message;

fn entry(key: &str, value: &str) -> Entry {
    Entry {
        key: key.into(),
        value: value.into(),
    }
}

fn descriptor(entries: Vec<Entry>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries,
        ..Default::default()
    }
}

fn header(key: &str, value: &str) -> HeaderValue {
    HeaderValue {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let basic = RateLimitRequest {
        domain: "egress".into(),
        descriptors: vec![descriptor(vec![
            entry("limit", "openai-per-namespace"),
            entry("source.namespace", "ml"),
            entry("destination.host", "api.openai.com"),
        ])],
        hits_addend: 1,
    };
    let edge = RateLimitRequest {
        domain: "d".into(),
        descriptors: vec![
            descriptor(vec![
                entry("source.principal", ""),
                entry("k", &"x".repeat(300)),
            ]),
            descriptor(vec![entry("limit", "b")]),
        ],
        hits_addend: 0,
    };
    let limitador = RateLimitResponse {
        overall_code: Code::OverLimit.into(),
        response_headers_to_add: vec![
            header("X-RateLimit-Limit", "2, 2;w=60;name=\"per-ns\""),
            header("X-RateLimit-Remaining", "0"),
            header("X-RateLimit-Reset", "59"),
        ],
        ..Default::default()
    };
    let statuses = RateLimitResponse {
        overall_code: Code::OverLimit.into(),
        statuses: vec![
            DescriptorStatus {
                code: Code::Ok.into(),
                current_limit: Some(RateLimit {
                    name: String::new(),
                    requests_per_unit: 1000,
                    unit: Unit::Hour.into(),
                }),
                limit_remaining: 998,
                duration_until_reset: Some(Duration {
                    seconds: 1200,
                    nanos: 0,
                }),
                quota: None,
            },
            DescriptorStatus {
                code: Code::OverLimit.into(),
                current_limit: Some(RateLimit {
                    name: "per-ip".into(),
                    requests_per_unit: 10,
                    unit: Unit::Minute.into(),
                }),
                limit_remaining: 0,
                duration_until_reset: Some(Duration {
                    seconds: 41,
                    nanos: 500_000_000,
                }),
                quota: None,
            },
        ],
        request_headers_to_add: vec![header("x-tier", "gold")],
        raw_body: b"slow down\n".to_vec(),
        // Fields the filter does not use: it must skip them.
        dynamic_metadata: Some(Struct {
            fields: BTreeMap::from([(
                "a".to_string(),
                Value {
                    kind: Some(value::Kind::StringValue("b".into())),
                },
            )])
            .into_iter()
            .collect(),
        }),
        quota: Some(Quota {
            requests: 5,
            id: "q".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ok = RateLimitResponse {
        overall_code: Code::Ok.into(),
        ..Default::default()
    };
    vec![
        ("request_basic.bin", basic.encode_to_vec()),
        ("request_edge.bin", edge.encode_to_vec()),
        ("response_limitador_over.bin", limitador.encode_to_vec()),
        ("response_statuses.bin", statuses.encode_to_vec()),
        ("response_ok.bin", ok.encode_to_vec()),
    ]
}

#[test]
fn golden_files_are_what_prost_writes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/rls");
    let bless = std::env::var_os("EGRESS_SIM_BLESS").is_some();
    for (name, bytes) in cases() {
        let path = dir.join(name);
        if bless {
            std::fs::write(&path, &bytes).unwrap();
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            stored, bytes,
            "{name} differs from prost's encoding (EGRESS_SIM_BLESS=1 rewrites it)"
        );
    }
}
