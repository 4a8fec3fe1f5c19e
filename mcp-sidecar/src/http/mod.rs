//! The HTTP surface: `/mcp` (rmcp's Streamable HTTP service behind our edge checks),
//! `/healthz` and `/readyz`.
//!
//! The edge in front of rmcp does four things rmcp leaves to the embedder:
//! - optional bearer auth, checked before the body is read;
//! - a body-size bound enforced while reading, so an oversized request costs at most the bound
//!   in memory;
//! - JSON-RPC errors for bodies that are not JSON-RPC. rmcp answers those with a plain-text
//!   415; a JSON-RPC client expects `-32700 Parse error` / `-32600 Invalid Request`, so we keep
//!   the bytes we already buffered and rewrite that one response;
//! - a session DELETE answered 204 rather than rmcp's 202 (see `mcp_endpoint`).
//!
//! An oversized body is read to its end and discarded (up to a bound) rather than cut off, so
//! the client's kept-alive connection survives and it gets the answer; a `tools/call` gets a
//! tool result saying how to send less (`service_core::body`, `envelope`).
//!
//! Host- and Origin-header checking (DNS-rebinding protection) is rmcp's own, configured with
//! our allow-list (`Config::allowed_hosts` / `Config::allowed_origins`): a foreign Host, a
//! present Origin whose host is not allowed, `Origin: null` or an unparsable Origin get a
//! plain-text 403 before rmcp parses the message.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use rmcp::model::{ProtocolVersion, ServerResult};
use rmcp::transport::streamable_http_server::{
    StreamableHttpService,
    session::{local::LocalSessionManager, never::NeverSessionManager},
};
use serde_json::{Value, json};
use service_core::body::{BodyError, BodyLimits, Oversized};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::{
    artifacts::{ArtifactStore, local::Refusal},
    jobs::store::JobStore,
    server::{Failure, McpServer, tool_error},
};

mod envelope;

use envelope::{Envelope, EnvelopeScanner};

/// The rmcp service in either session mode, behind one type.
#[derive(Clone)]
pub enum McpService {
    Stateless(StreamableHttpService<McpServer, NeverSessionManager>),
    Stateful(StreamableHttpService<McpServer, LocalSessionManager>),
}

impl McpService {
    async fn handle(&self, request: http::Request<Full<Bytes>>) -> Response {
        match self {
            Self::Stateless(service) => service.handle(request).await.map(Body::new),
            Self::Stateful(service) => service.handle(request).await.map(Body::new),
        }
    }
}

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
    pub in_flight: InFlight,
    /// Cancelled on SIGTERM: sessions' GET streams end then, so their connections can close.
    pub shutdown: CancellationToken,
}

/// Counts the `/mcp` exchanges in progress (every request but a session's GET stream), each
/// until its response body has been sent. Shutdown reports it when the grace runs out with
/// requests still unanswered.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// One exchange in progress; dropped when its response body is done (or abandoned).
struct InFlightGuard(InFlight);

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.clone())
    }

    /// How many exchanges are in progress.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Builds the router. No I/O happens here, so tests can drive it in-process.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/mcp", any(mcp_endpoint))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/files/{job_id}", get(download))
        .fallback(not_found)
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "ok": true }))
}

/// 200 when Redis answers (the artifact store is configured at start-up, or the sidecar would
/// not have started); 503 with the reason otherwise.
async fn readyz(State(state): State<Arc<HttpState>>) -> (StatusCode, Json<Value>) {
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

#[derive(serde::Deserialize)]
struct DownloadQuery {
    expires: Option<String>,
    signature: Option<String>,
}

/// `GET /files/{job_id}?expires=…&signature=…`: a local-store artifact, for a valid URL only.
async fn download(
    State(state): State<Arc<HttpState>>,
    axum::extract::Path(job_id): axum::extract::Path<String>,
    axum::extract::Query(query): axum::extract::Query<DownloadQuery>,
) -> Response {
    let ArtifactStore::Local(store) = &state.artifacts else {
        return not_found().await.into_response();
    };
    let (path, kind) = match store.authorize(
        &job_id,
        query.expires.as_deref(),
        query.signature.as_deref(),
    ) {
        Ok(found) => found,
        Err(Refusal::Forbidden) => {
            return (
                StatusCode::FORBIDDEN,
                Json(json!({ "error": "this download link is invalid or has expired; ask get_render_result for a new one" })),
            )
                .into_response();
        }
        Err(Refusal::NotFound) => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": "no such artifact" })),
            )
                .into_response();
        }
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, kind.content_type()),
                (header::CACHE_CONTROL, "private, max-age=300"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                // An SVG opened directly must not run anything, whatever it contains.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; sandbox",
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, path = %path.display(), "cannot read artifact");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": "internal error" })),
            )
                .into_response()
        }
    }
}

async fn not_found() -> (StatusCode, Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "not found; the MCP endpoint is /mcp" })),
    )
}

pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// True when `headers` carry `Authorization: Bearer <token>` for the configured token.
///
/// Both sides are hashed first so the comparison is constant-time in the token's content and
/// its length.
fn bearer_token_matches(headers: &HeaderMap, expected_digest: &[u8; 32]) -> bool {
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
    else {
        return false;
    };
    token_digest(presented).ct_eq(expected_digest).into()
}

async fn mcp_endpoint(State(state): State<Arc<HttpState>>, request: Request) -> Response {
    if let Some(expected) = &state.bearer_token_digest
        && !bearer_token_matches(request.headers(), expected)
    {
        return unauthorized();
    }

    // A session's GET stream lasts as long as the session; shutdown closes it.
    let in_flight = (request.method() != Method::GET).then(|| state.in_flight.enter());
    let (parts, body) = request.into_parts();
    // GET (SSE stream) and DELETE (end session) carry no body worth reading.
    let body = if parts.method == Method::POST {
        let mut envelope = EnvelopeScanner::default();
        match service_core::body::read_bounded(&parts.headers, body, state.body_limits, |chunk| {
            envelope.feed(chunk)
        })
        .await
        {
            Ok(bytes) => bytes,
            Err(BodyError::TooLarge(oversized)) => {
                return oversized_answer(&parts.headers, oversized, envelope.envelope());
            }
            Err(BodyError::Unreadable(error)) => {
                tracing::debug!(%error, "could not read request body");
                return jsonrpc_error_response(
                    StatusCode::BAD_REQUEST,
                    Value::Null,
                    -32600,
                    "the request body could not be read",
                );
            }
        }
    } else {
        Bytes::new()
    };

    let declares_json = is_json_content_type(&parts.headers);
    let is_delete = parts.method == Method::DELETE;
    let mut response = state
        .mcp
        .handle(http::Request::from_parts(parts, Full::new(body.clone())))
        .await;

    // rmcp checks the content type before parsing, so a 415 for a request that declared JSON
    // means the body itself did not deserialize as a JSON-RPC message.
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE && declares_json {
        return not_jsonrpc_response(&body);
    }
    // rmcp acknowledges a session DELETE with 202; clients (the Python SDK among them) expect
    // 200 or 204 for "session ended", so say it in the form they recognise.
    if is_delete && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    let streamed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    match in_flight {
        // An SSE answer (stateful mode) is still being written: counted until its body ends.
        // A JSON answer is complete here, so the guard can go now.
        Some(guard) if streamed => response.map(|body| {
            Body::new(body.map_frame(move |frame| {
                let _counted = &guard;
                frame
            }))
        }),
        // A session's GET stream lasts as long as the session, which outlives SIGTERM until
        // every request has been answered; the stream itself ends at SIGTERM (a client
        // reconnects it elsewhere), so that its connection does not hold up the drain.
        None if streamed => response.map(|body| {
            Body::from_stream(
                body.into_data_stream()
                    .take_until(state.shutdown.clone().cancelled_owned()),
            )
        }),
        _ => response,
    }
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The JSON-RPC answer to a body that is not a valid JSON-RPC message.
fn not_jsonrpc_response(body: &[u8]) -> Response {
    match serde_json::from_slice::<Value>(body) {
        Err(error) => jsonrpc_error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32700,
            &format!("Parse error: the body is not valid JSON ({error})"),
        ),
        Ok(message) => {
            // Echo the id when the message has a usable one, as JSON-RPC asks.
            let id = match message.get("id") {
                Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
                _ => Value::Null,
            };
            let detail = if message.is_array() {
                "batches are not supported; send one JSON-RPC message per request"
            } else {
                "expected a JSON-RPC 2.0 request, notification or response \
                 with \"jsonrpc\": \"2.0\" and a known method"
            };
            jsonrpc_error_response(
                StatusCode::BAD_REQUEST,
                id,
                -32600,
                &format!("Invalid Request: {detail}"),
            )
        }
    }
}

/// The answer to a request whose body exceeded the limit, which was read (drained) rather
/// than kept. A `tools/call` whose id was found gets an ordinary tool result with
/// `isError: true` (what a model reads and can act on: send less); anything else a JSON-RPC
/// error with HTTP 413, carrying the request's id when it had one. When the body was not
/// drained to its end, the answer closes the connection, which cannot carry another request.
fn oversized_answer(headers: &HeaderMap, oversized: Oversized, envelope: &Envelope) -> Response {
    let limit = oversized.limit;
    let size = oversized.size_phrase();
    let mut response = match (&envelope.id, envelope.method.as_deref(), oversized.drained) {
        (Some(id), Some("tools/call"), true) => {
            let tool = envelope.tool.as_deref().unwrap_or("the tool");
            let message = format!(
                "the request {size}exceeds the sidecar's limit of {limit} bytes, so {tool} was \
                 not run. Send less data: fewer or coarser chart points (at most 50,000 in all), \
                 a smaller or simpler SVG, or split the work into several calls"
            );
            let mut result =
                ServerResult::CallToolResult(tool_error(Failure::InvalidArguments, message));
            if !speaks_2026_07_28(headers) {
                result.strip_result_type_for_legacy_peer();
            }
            (
                StatusCode::OK,
                Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })),
            )
                .into_response()
        }
        _ => {
            let mut message =
                format!("request body {size}exceeds the limit of {limit} bytes; send less data");
            if !oversized.drained {
                message.push_str(" (the rest of the body was not read; the connection is closed)");
            }
            jsonrpc_error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                envelope.id.clone().unwrap_or(Value::Null),
                -32600,
                &message,
            )
        }
    };
    if !oversized.drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether the request is on protocol revision 2026-07-28 or later (its results carry
/// `resultType`).
fn speaks_2026_07_28(headers: &HeaderMap) -> bool {
    headers
        .get("mcp-protocol-version")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|version| version >= ProtocolVersion::V_2026_07_28.as_str())
}

fn jsonrpc_error_response(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": { "code": code, "message": message },
        })),
    )
        .into_response()
}

fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": "missing or invalid bearer token" })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
