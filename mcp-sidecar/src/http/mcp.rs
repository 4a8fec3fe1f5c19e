//! `/mcp`: rmcp's Streamable HTTP service behind our edge. The edge does what rmcp leaves to
//! the embedder:
//! - optional bearer auth, checked before the body is read (`auth`);
//! - a body-size bound enforced while reading, so an oversized request costs at most the bound
//!   in memory; its answer is made in `oversized`;
//! - JSON-RPC errors for bodies that are not JSON-RPC. rmcp answers those with a plain-text
//!   415; a JSON-RPC client expects `-32700 Parse error` / `-32600 Invalid Request`, so we keep
//!   the bytes we already buffered and rewrite that one response;
//! - a session DELETE answered 204 rather than rmcp's 202;
//! - a fast path for plain requests (`fast`): the same handler and model types, without
//!   rmcp's per-request service (stateless) or session worker (stateful);
//! - bookkeeping for shutdown: requests in progress are counted ([`InFlight`]), and a session's
//!   GET stream ends at SIGTERM.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{
    Json,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use rmcp::transport::streamable_http_server::{
    StreamableHttpService,
    session::{local::LocalSessionManager, never::NeverSessionManager},
};
use serde_json::{Value, json};
use service_core::body::BodyError;

use super::{
    HttpState,
    auth::{bearer_token_matches, unauthorized},
    envelope::EnvelopeScanner,
    fast::FastPath,
    oversized::oversized_answer,
};
use crate::server::McpServer;

/// The rmcp service in either session mode, behind one type, with the fast path that answers
/// its plain requests without rmcp's per-request service or session worker (`fast`).
#[derive(Clone)]
pub enum McpService {
    Stateless(
        StreamableHttpService<McpServer, NeverSessionManager>,
        Arc<FastPath>,
    ),
    Stateful(
        StreamableHttpService<McpServer, LocalSessionManager>,
        Arc<FastPath>,
    ),
}

impl McpService {
    pub(super) async fn handle(&self, request: http::Request<Full<Bytes>>) -> Response {
        match self {
            Self::Stateless(service, _) => service.handle(request).await.map(Body::new),
            Self::Stateful(service, _) => service.handle(request).await.map(Body::new),
        }
    }

    fn fast_path(&self) -> &FastPath {
        match self {
            Self::Stateless(_, fast) | Self::Stateful(_, fast) => fast,
        }
    }
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

/// `/mcp`: the edge's checks, then rmcp, then the rewrites of its answer described above.
pub(super) async fn mcp_endpoint(
    State(state): State<Arc<HttpState>>,
    request: Request,
) -> Response {
    if let Some(expected) = &state.bearer_token_digest
        && !bearer_token_matches(request.headers(), expected)
    {
        return unauthorized();
    }

    // A session's GET stream lasts as long as the session; shutdown closes it.
    let mut in_flight = (request.method() != Method::GET).then(|| state.in_flight.enter());
    let (mut parts, body) = request.into_parts();
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

    // Two requests of the tasks extension need the edge; a client on 2026-07-28 names every
    // request's method in `Mcp-Method` (rmcp refuses it missing or unlike the body's), so only
    // requests saying these methods have their body parsed here.
    let method = parts
        .headers
        .get("mcp-method")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    match method.as_deref() {
        Some("subscriptions/listen") => {
            if let Ok(request) = serde_json::from_slice::<Value>(&body)
                && request.get("method").and_then(Value::as_str) == Some("subscriptions/listen")
                && super::listen::requested_task_ids(&request).is_some()
            {
                // Lasts until the client goes; ends at shutdown without holding up the drain.
                drop(in_flight.take());
                return super::listen::listen(&state, parts, request).await;
            }
        }
        Some(method @ ("tasks/get" | "tasks/update" | "tasks/cancel")) => {
            name_the_task(&mut parts.headers, method, &body);
        }
        _ => {}
    }

    let fast = state.mcp.fast_path();
    if let Some(accepted) = fast.accepts(&parts, &body) {
        return fast.serve(accepted, parts).await;
    }

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

/// The tasks extension says a *client* MUST send `Mcp-Name: <taskId>` on `tasks/*`, and says
/// nothing of a server's duty when it is missing; the clients that exist omit it (FastMCP's
/// with fastmcp-tasks 4.1.4, the MCP Inspector), while rmcp refuses such a request with
/// `-32020`. A missing `Mcp-Name` is therefore taken to be the body's `taskId`; one that is
/// present is left for rmcp to check against the body (a mismatch is still refused).
fn name_the_task(headers: &mut HeaderMap, method: &str, body: &[u8]) {
    if headers.contains_key("mcp-name") {
        return;
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    if request.get("method").and_then(Value::as_str) != Some(method) {
        return;
    }
    if let Some(value) = request
        .pointer("/params/taskId")
        .and_then(Value::as_str)
        .and_then(|task_id| header::HeaderValue::from_str(task_id).ok())
    {
        headers.insert("mcp-name", value);
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

pub(super) fn jsonrpc_error_response(
    status: StatusCode,
    id: Value,
    code: i64,
    message: &str,
) -> Response {
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
