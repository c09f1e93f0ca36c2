//! The service over real HTTP/2 with a tonic client, counting in a real Redis.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use rls_server::redis::{RedisError, RedisServer};
use rls_server::{load_limits, AnswerStyle, RlsOptions, RlsServer};

const LIMITS: &str = r#"
- namespace: egress
  name: per-ns
  max_value: 2
  seconds: 60
  conditions: ["size(descriptors) > 0 && descriptors[0]['limit'] == 'per-ns'"]
  variables: ["descriptors[0]['source.namespace']"]
"#;

fn redis() -> Option<RedisServer> {
    match RedisServer::start() {
        Ok(redis) => Some(redis),
        Err(RedisError::NotInstalled) => {
            eprintln!("skipping: {}", RedisError::NotInstalled);
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn request(domain: &str, namespace: &str) -> RateLimitRequest {
    let entry = |key: &str, value: &str| Entry {
        key: key.into(),
        value: value.into(),
    };
    RateLimitRequest {
        domain: domain.into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![
                entry("limit", "per-ns"),
                entry("source.namespace", namespace),
            ],
            ..Default::default()
        }],
        hits_addend: 1,
    }
}

fn call(
    server: &RlsServer,
    requests: Vec<RateLimitRequest>,
) -> Vec<Result<RateLimitResponse, tonic::Status>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = RateLimitServiceClient::connect(format!("http://{}", server.addr()))
            .await
            .unwrap();
        let mut out = Vec::new();
        for request in requests {
            out.push(
                client
                    .should_rate_limit(request)
                    .await
                    .map(|r| r.into_inner()),
            );
        }
        out
    })
}

fn headers(response: &RateLimitResponse) -> Vec<(String, String)> {
    response
        .response_headers_to_add
        .iter()
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

#[test]
fn counts_through_redis_and_answers_like_limitador() {
    let Some(redis) = redis() else { return };
    let server = RlsServer::start(RlsOptions {
        redis_url: redis.url(),
        limits: load_limits(LIMITS).unwrap(),
        style: AnswerStyle::Limitador,
        serialize: true,
    })
    .unwrap();
    let answers = call(
        &server,
        vec![
            request("egress", "ml"),
            request("egress", "ml"),
            request("egress", "ml"),
            request("egress", "web"),
            request("", "ml"),
            request("other", "ml"),
        ],
    );
    let codes: Vec<i32> = answers
        .iter()
        .map(|a| a.as_ref().unwrap().overall_code)
        .collect();
    let (ok, over, unknown) = (
        Code::Ok as i32,
        Code::OverLimit as i32,
        Code::Unknown as i32,
    );
    // One counter per namespace; an empty domain is UNKNOWN; no limit in another domain.
    assert_eq!(codes, [ok, ok, over, ok, unknown, ok]);
    let first = answers[0].as_ref().unwrap();
    assert!(first.statuses.is_empty());
    let h = headers(first);
    assert_eq!(
        h[0],
        (
            "X-RateLimit-Limit".into(),
            "2, 2;w=60;name=\"per-ns\"".into()
        )
    );
    assert_eq!(h[1], ("X-RateLimit-Remaining".into(), "1".into()));
    assert_eq!(h[2].0, "X-RateLimit-Reset");
    assert_eq!(headers(answers[2].as_ref().unwrap())[1].1, "0");
    assert_eq!(server.calls(), 6);
    assert_eq!(server.over_limit(), 1);
}

#[test]
fn statuses_style_and_storage_errors() {
    let Some(mut redis) = redis() else { return };
    let server = RlsServer::start(RlsOptions {
        redis_url: redis.url(),
        limits: load_limits(LIMITS).unwrap(),
        style: AnswerStyle::Statuses,
        serialize: false,
    })
    .unwrap();
    let answers = call(
        &server,
        vec![
            request("egress", "a"),
            request("egress", "a"),
            request("egress", "a"),
        ],
    );
    let last = answers[2].as_ref().unwrap();
    assert_eq!(last.overall_code, Code::OverLimit as i32);
    assert!(last.response_headers_to_add.is_empty());
    assert_eq!(last.statuses.len(), 1);
    let status = &last.statuses[0];
    assert_eq!(status.code, Code::OverLimit as i32);
    let limit = status.current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, limit.name.as_str()),
        (2, "per-ns")
    );
    assert!(status.duration_until_reset.as_ref().unwrap().seconds <= 60);

    redis.stop();
    let answers = call(&server, vec![request("egress", "a")]);
    let status = answers[0].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(server.errors(), 1);
}
