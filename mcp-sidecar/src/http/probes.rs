//! The probes: `GET /healthz` says the process is alive (no I/O), `GET /readyz` says whether it
//! can do its work (Redis answers).

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use super::HttpState;

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "ok": true }))
}

/// 200 when Redis answers (the artifact store is configured at start-up, or the sidecar would
/// not have started); 503 with the reason otherwise.
pub(super) async fn readyz(State(state): State<Arc<HttpState>>) -> (StatusCode, Json<Value>) {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "ok": true, "redis": "ok", "artifacts": state.artifacts.describe() })),
        ),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ok": false, "redis": error.to_string() })),
        ),
    }
}
