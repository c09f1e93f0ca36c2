//! The controller's HTTP endpoints: `/healthz` (the process serves), `/readyz` (every watch has
//! listed and the first compilation is done) and `/metrics` (OpenMetrics text).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::controller::Context;
use crate::metrics::CONTENT_TYPE;

pub(crate) fn spawn(
    listener: tokio::net::TcpListener,
    context: Arc<Context>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(context);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    })
}

async fn readyz(State(context): State<Arc<Context>>) -> impl IntoResponse {
    if context.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the watches to list and the first compilation\n",
        )
    }
}

async fn metrics(State(context): State<Arc<Context>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        context.metrics.encode(),
    )
}
