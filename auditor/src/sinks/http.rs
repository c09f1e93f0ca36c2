//! Delivery over HTTP for the senders that post to other systems (Alertmanager, the webhook):
//! one client set-up and one retry loop.

use std::time::Instant;

use serde_json::Value;

use crate::kube_client::{ensure_crypto_provider, RetryPolicy};

/// The HTTP client of the senders: TLS provider installed, each request bounded by `retry`'s
/// request timeout.
pub(crate) fn client(retry: &RetryPolicy) -> Result<reqwest::Client, String> {
    ensure_crypto_provider();
    reqwest::Client::builder()
        .timeout(retry.request_timeout)
        .build()
        .map_err(|e| e.to_string())
}

/// POSTs JSON, retrying 429, 5xx, transport errors and timeouts with backoff until the deadline.
/// Returns the response body of the successful attempt.
pub(crate) async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    retry: &RetryPolicy,
) -> Result<Vec<u8>, String> {
    send_with_retry(retry, url, || {
        http.post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
    })
    .await
}

pub(crate) async fn send_with_retry(
    retry: &RetryPolicy,
    url: &str,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Vec<u8>, String> {
    let started = Instant::now();
    let mut backoff = retry.initial_backoff;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let (retryable, message) =
            match tokio::time::timeout(retry.request_timeout, request().send()).await {
                Err(_) => (
                    true,
                    format!(
                        "no answer within {:.1}s",
                        retry.request_timeout.as_secs_f64()
                    ),
                ),
                Ok(Err(e)) => (true, e.to_string()),
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    let bytes = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    if status.is_success() {
                        return Ok(bytes);
                    }
                    let text = String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(300)
                        .collect::<String>();
                    let retryable = status.as_u16() == 429 || status.is_server_error();
                    (retryable, format!("HTTP {status}: {}", text.trim()))
                }
            };
        if !retryable || started.elapsed() + backoff > retry.deadline {
            return Err(format!("{url}: {message} (after {attempts} attempt(s))"));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(retry.max_backoff);
    }
}
