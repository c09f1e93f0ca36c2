//! `ShouldRateLimit`, mapped to limitador as `limitador-server` maps it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use limitador::counter::Counter;
use limitador::limit::Context;
use limitador::storage::redis::AsyncRedisStorage;
use limitador::AsyncRateLimiter;
use tonic::{Request, Response, Status};

use crate::{AnswerStyle, RlsOptions, Stats};

pub(crate) struct Rls {
    limiter: Arc<AsyncRateLimiter>,
    style: AnswerStyle,
    /// Held around a check when checks are serialised.
    serial: Option<tokio::sync::Mutex<()>>,
    stats: Arc<Stats>,
}

impl Rls {
    pub async fn new(options: &RlsOptions, stats: Arc<Stats>) -> anyhow::Result<Rls> {
        let storage = AsyncRedisStorage::new(&options.redis_url)
            .await
            .with_context(|| format!("connecting to Redis at {}", options.redis_url))?;
        let limiter = AsyncRateLimiter::new_with_storage(Box::new(storage));
        limiter
            .configure_with(options.limits.iter().cloned())
            .await
            .map_err(|e| anyhow::anyhow!("loading the limits: {e}"))?;
        Ok(Rls {
            limiter: Arc::new(limiter),
            style: options.style,
            serial: options.serialize.then(|| tokio::sync::Mutex::new(())),
            stats,
        })
    }

    pub fn into_server(self) -> RateLimitServiceServer<Rls> {
        RateLimitServiceServer::new(self)
    }
}

/// `RateLimit.Unit` of a window, when it is one.
fn unit_of(seconds: u64) -> Unit {
    match seconds {
        1 => Unit::Second,
        60 => Unit::Minute,
        3600 => Unit::Hour,
        86_400 => Unit::Day,
        604_800 => Unit::Week,
        _ => Unit::Unknown,
    }
}

/// envoyproxy/ratelimit's answer for one descriptor, from the most restrictive counter.
fn status_of(limited: bool, counter: Option<&Counter>) -> DescriptorStatus {
    let code = if limited { Code::OverLimit } else { Code::Ok };
    DescriptorStatus {
        code: code.into(),
        current_limit: counter.map(|c| RateLimit {
            name: c.limit().name().unwrap_or_default().to_string(),
            requests_per_unit: u32::try_from(c.max_value()).unwrap_or(u32::MAX),
            unit: unit_of(c.window().as_secs()).into(),
        }),
        limit_remaining: counter
            .and_then(|c| c.remaining())
            .map_or(0, |r| u32::try_from(r).unwrap_or(u32::MAX)),
        duration_until_reset: counter.and_then(|c| c.expires_in()).map(|d| PbDuration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        }),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl RateLimitService for Rls {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let delay = self.stats.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let request = request.into_inner();
        if request.domain.is_empty() {
            return Ok(Response::new(RateLimitResponse {
                overall_code: Code::Unknown.into(),
                ..Default::default()
            }));
        }
        let descriptors: Vec<HashMap<String, String>> = request
            .descriptors
            .iter()
            .map(|d| {
                d.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect()
            })
            .collect();
        let count = descriptors.len();
        let hits = u64::from(request.hits_addend.max(1));
        let namespace = request.domain.into();
        let limiter = Arc::clone(&self.limiter);
        let checked = {
            let _serial = match &self.serial {
                Some(lock) => Some(lock.lock().await),
                None => None,
            };
            // limitador panics on a condition that indexes a missing descriptor or is not a
            // boolean; in a task of its own the panic fails this call, not the service.
            tokio::spawn(async move {
                let mut ctx = Context::default();
                ctx.list_binding("descriptors".to_string(), descriptors);
                limiter
                    .check_rate_limited_and_update(&namespace, &ctx, hits)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
        };
        let mut result = match checked {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                // As limitador-server: not UNKNOWN, so the client's failure mode decides.
                return Err(Status::unavailable("Service unavailable"));
            }
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return Err(Status::internal("evaluating the limits failed"));
            }
        };
        if result.limited {
            self.stats.over_limit.fetch_add(1, Ordering::Relaxed);
        }
        let code = if result.limited {
            Code::OverLimit
        } else {
            Code::Ok
        };
        let mut response = RateLimitResponse {
            overall_code: code.into(),
            ..Default::default()
        };
        match self.style {
            AnswerStyle::Limitador => {
                let mut headers: Vec<HeaderValue> = result
                    .response_header()
                    .into_iter()
                    .map(|(key, value)| HeaderValue {
                        key,
                        value,
                        ..Default::default()
                    })
                    .collect();
                headers.sort_by(|a, b| a.key.cmp(&b.key));
                response.response_headers_to_add = headers;
            }
            AnswerStyle::Statuses => {
                // `response_header` sorts the counters: the most restrictive comes first.
                let _ = result.response_header();
                let status = status_of(result.limited, result.counters.first());
                response.statuses = vec![status; count];
            }
        }
        Ok(Response::new(response))
    }
}
