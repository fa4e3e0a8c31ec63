//! Capacity alerts received as webhooks (Alertmanager, Grafana) (being written).

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use crate::api::{ApiError, AppState};

/// How squall receives one alert sender's webhooks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertReceiverConfig {}

pub async fn handle(
    _state: &AppState,
    source: &str,
    _headers: &HeaderMap,
    _body: &Bytes,
) -> Result<Response, ApiError> {
    Err(ApiError::new(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        format!("{source} webhooks are not built yet"),
    ))
}
