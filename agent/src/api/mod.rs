//! The agent's HTTP surface: REST + SSE under `/v1`, the web page, the `/files` proxy and the
//! probes. `router(state)` does no I/O, so tests can drive it in-process.
//!
//! Errors are JSON `{"error": "<clear message>", "code"?: "<kind>"}` with the status that says
//! what happened: 400 bad request body, 404 unknown tool, job or task, 409 conflict, 422 arguments
//! the tool refused, 503 the sidecar (or another MCP server) is unavailable, 504 it did not
//! answer in time, 502 it answered something unusable. 4xx are the caller's to fix and are not
//! logged as errors; 5xx are logged once.

mod chat;
mod event_stream;
mod files;
pub mod mcp_endpoint;
mod renders;
mod tasks;
mod tools;
mod web;

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{FromRequest, Request, State, rejection::BytesRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use rmcp::model::CallToolResult;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use service_core::body::{BodyError, BodyLimits};
use sidecar_contract::{ErrorCode, ToolError};

use crate::{
    llm::ChatModel,
    mcp::{HubError, McpHub, upstream::UpstreamError},
};

/// What every handler shares.
pub struct AppState {
    pub hub: Arc<McpHub>,
    pub http: reqwest::Client,
    /// `http://host:port` of the sidecar, for the `/files` proxy.
    pub sidecar_origin: String,
    pub model: ChatModel,
    pub llm_max_turns: u32,
    pub render_poll_interval: Duration,
    pub sse_heartbeat: Duration,
    pub sse_max_duration: Duration,
    /// Cancelled on SIGTERM: open SSE streams end at once so the drain is not held up.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// `/mcp`: every server's tools as one MCP server, for IDE clients.
    pub mcp_endpoint: mcp_endpoint::McpEndpoint,
}

pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(web::index))
        .route("/assets/{file}", get(web::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/tools", get(tools::list))
        .route("/v1/tools/{name}", post(tools::call))
        .route("/v1/renders", post(renders::start))
        .route(
            "/v1/renders/{id}",
            get(renders::status).delete(renders::cancel),
        )
        .route("/v1/renders/{id}/events", get(renders::events))
        .route("/v1/tasks/{id}", get(tasks::status).delete(tasks::cancel))
        .route("/v1/tasks/{id}/events", get(tasks::events))
        .route("/v1/chat", get(chat::status).post(chat::chat))
        .route("/files/{job_id}", get(files::proxy))
        .route("/mcp", axum::routing::any(mcp_endpoint::serve))
        .route_layer(axum::middleware::from_fn(trace_request))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /v1/tools, /v1/renders, /v1/tasks, /v1/chat",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            BodyLimits::new(max_body_bytes),
            bound_request_body,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Reads every request body under the limit before any handler sees it. An oversized body
/// is drained rather than cut off (`service_core::body`), so the client's kept-alive
/// connection survives and it reads the 413; past the drain bound the 413 closes the
/// connection.
async fn bound_request_body(
    State(limits): State<BodyLimits>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match service_core::body::read_bounded(&parts.headers, body, limits, |_| {}).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(BodyError::TooLarge(oversized)) => {
            let mut response = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body {}exceeds the limit of {} bytes; send less data (for a \
                     render: fewer or coarser chart points, or a smaller SVG)",
                    oversized.size_phrase(),
                    oversized.limit
                ),
            )
            .into_response();
            if !oversized.drained {
                response.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            response
        }
        Err(BodyError::Unreadable(error)) => {
            ApiError::bad_request(format!("cannot read the request body: {error}")).into_response()
        }
    }
}

/// One server span per request, `<METHOD> <route>`, a child of the caller's trace when the
/// request carries `traceparent` (or Cloud Run's `X-Cloud-Trace-Context`). Only while spans
/// are exported.
async fn trace_request(request: Request, next: axum::middleware::Next) -> Response {
    if !service_core::telemetry::exporting_traces() {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(
            || request.uri().path().to_owned(),
            |path| path.as_str().to_owned(),
        );
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(parent) =
        service_core::telemetry::propagation::context_from_headers(request.headers())
    {
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
    }
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

async fn healthz() -> Json<Value> {
    Json(json!({ "ok": true }))
}

/// 200 once the sidecar is connected; the other servers are reported but do not gate it.
async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let mut servers = serde_json::Map::new();
    for upstream in state.hub.upstreams() {
        let status = if upstream.is_connected().await {
            "connected".to_owned()
        } else {
            upstream
                .last_error()
                .await
                .unwrap_or_else(|| "connecting".to_owned())
        };
        servers.insert(upstream.name.clone(), status.into());
    }
    let ready = state.hub.sidecar().is_connected().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ok": ready, "servers": servers })))
}

/// An error answer: status, message, and an optional machine-readable code and details.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    code: Option<String>,
    details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            code: None,
            details: None,
        }
    }

    fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The error for a tool result with `isError: true`: the status follows the result's
    /// `code` when it has one (the sidecar's do), else 422.
    pub fn from_tool_failure(result: &CallToolResult) -> Self {
        let failure = ToolError::from_structured_content(result.structured_content.as_ref());
        let message = failure
            .as_ref()
            .map(|failure| failure.error.clone())
            .or_else(|| {
                result
                    .content
                    .iter()
                    .find_map(|content| content.as_text().map(|text| text.text.clone()))
            })
            .unwrap_or_else(|| "the tool reported an error".to_owned());
        // The status follows the codes the contract names; any code is passed on as it came
        // (another MCP server may have codes of its own).
        let code_text = result
            .structured_content
            .as_ref()
            .and_then(|content| content.get("code"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let code = failure.and_then(|failure| failure.code);
        let status = match code {
            Some(ErrorCode::NotFound) => StatusCode::NOT_FOUND,
            Some(ErrorCode::Conflict) => StatusCode::CONFLICT,
            Some(ErrorCode::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
            Some(ErrorCode::Internal) => StatusCode::BAD_GATEWAY,
            Some(ErrorCode::InvalidArguments) | None => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let mut error = Self::new(status, message);
        if let Some(code) = code_text {
            error = error.with_code(code);
        }
        error.with_details(serde_json::to_value(result).unwrap_or_default())
    }
}

impl From<UpstreamError> for ApiError {
    fn from(error: UpstreamError) -> Self {
        let status = match &error {
            UpstreamError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            // Invalid params: the arguments did not fit the tool's schema.
            UpstreamError::Refused { code: -32602, .. } => StatusCode::BAD_REQUEST,
            UpstreamError::Refused { .. } | UpstreamError::Unexpected { .. } => {
                StatusCode::BAD_GATEWAY
            }
        };
        Self::new(status, error.to_string())
    }
}

impl From<HubError> for ApiError {
    fn from(error: HubError) -> Self {
        match error {
            HubError::UnknownTool(_) | HubError::UnknownTask(_) => {
                Self::new(StatusCode::NOT_FOUND, error.to_string())
            }
            HubError::Upstream(error) => error.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.message, "request failed");
        }
        let mut body = json!({ "error": self.message });
        if let Some(code) = self.code {
            body["code"] = code.into();
        }
        if let Some(details) = self.details {
            body["details"] = details;
        }
        (self.status, Json(body)).into_response()
    }
}

/// A JSON request body whose problems come back as [`ApiError`]s (JSON, with a clear message)
/// rather than axum's plain-text rejections. An empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = bytes::Bytes::from_request(request, state).await.map_err(
            |rejection: BytesRejection| {
                ApiError::new(
                    rejection.status(),
                    format!("cannot read the request body: {}", rejection.body_text()),
                )
            },
        )?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|error| {
                ApiError::bad_request(format!("the request body is not valid: {error}"))
            })
    }
}
