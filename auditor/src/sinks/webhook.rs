//! `--sink webhook=URL`: POSTs the JSON findings document (the same document `--format json`
//! prints) to a URL, retrying throttling, server errors and timeouts.

use serde_json::Value;

use super::http::post_json;
use crate::kube_client::RetryPolicy;

pub async fn publish(
    http: &reqwest::Client,
    url: &str,
    document: &Value,
    retry: &RetryPolicy,
) -> Result<(), String> {
    post_json(http, url, document, retry).await.map(|_| ())
}
