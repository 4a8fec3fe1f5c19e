//! The HTTP surface, one module per concern:
//!
//! | route | what | module |
//! |---|---|---|
//! | `/mcp` (POST, GET, DELETE) | the MCP endpoint: rmcp's Streamable HTTP service behind our edge (bearer auth, body bound, JSON-RPC errors) | `mcp`, `auth`, `oversized`, `envelope` |
//! | `/mcp` POST `subscriptions/listen` with `taskIds` | task status notifications, pushed | `listen` |
//! | `/mcp` POST, stateless, plain requests | answered by our handler without rmcp's per-request service | `fast` |
//! | `GET /healthz` | liveness: `{"ok":true}`, no I/O | `probes` |
//! | `GET /readyz` | readiness: 200 when Redis answers, 503 with the reason otherwise | `probes` |
//! | `GET /files/{job_id}?expires=…&signature=…` | a `local`-store artifact, for a valid signed URL | `files` |
//! | anything else | 404 naming the MCP endpoint | here |
//!
//! Host- and Origin-header checking (DNS-rebinding protection) is rmcp's own, configured with
//! our allow-list (`Config::allowed_hosts` / `Config::allowed_origins`), so it guards `/mcp`
//! only: a foreign Host, a present Origin whose host is not allowed, `Origin: null` or an
//! unparsable Origin get a plain-text 403 before rmcp parses the message. The stateless fast
//! path (`fast`) repeats rmcp's Host rule only to decide whether it may answer, and leaves
//! every request with an Origin, or a Host it does not accept, to rmcp.

mod auth;
mod envelope;
mod fast;
mod files;
mod listen;
mod mcp;
mod oversized;
mod probes;

use std::sync::Arc;

use axum::{
    Json, Router,
    http::StatusCode,
    routing::{any, get},
};
use serde_json::{Value, json};
use service_core::body::BodyLimits;
use tokio_util::sync::CancellationToken;

pub use auth::token_digest;
pub use fast::FastPath;
pub use mcp::{InFlight, McpService};

use crate::{artifacts::ArtifactStore, jobs::store::JobStore, server::render::RenderTools};

/// Everything the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub mcp: McpService,
    /// The `/mcp` body limit and how much of an oversized body is drained.
    pub body_limits: BodyLimits,
    /// SHA-256 of the configured bearer token; `None` means `/mcp` needs no auth.
    pub bearer_token_digest: Option<[u8; 32]>,
    pub store: JobStore,
    pub artifacts: ArtifactStore,
    /// The render tools, for `subscriptions/listen` on tasks.
    pub render: RenderTools,
    pub in_flight: InFlight,
    /// Cancelled on SIGTERM: sessions' GET streams end then, so their connections can close.
    pub shutdown: CancellationToken,
}

/// Builds the router. No I/O happens here, so tests can drive it in-process.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/mcp", any(mcp::mcp_endpoint))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/files/{job_id}", get(files::download))
        .fallback(not_found)
        .with_state(state)
}

/// The answer for anything that is not a route, and for `/files` when there is no local store.
async fn not_found() -> (StatusCode, Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "not found; the MCP endpoint is /mcp" })),
    )
}
