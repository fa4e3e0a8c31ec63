//! The ceiling for webhook ingest benchmarks: a bare axum handler that answers 202 to any POST
//! under `/api/v1/webhooks/`, storing nothing. `scripts/bench-http` measures squall's durable
//! ingest side by side with it.
//!
//! Run: `cargo run --release -p squall-engine --example bare_webhook -- 127.0.0.1:9201`.

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9201".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = Router::new().route(
            "/api/v1/webhooks/{*url}",
            post(|body: axum::body::Bytes| async move {
                // Parse the body as squall does, so the comparison is about storing it.
                match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(_) => StatusCode::ACCEPTED,
                    Err(_) => StatusCode::BAD_REQUEST,
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        axum::serve(listener, app).await
    })
}
