//! The HTTP client under the agent's MCP connections: rmcp's reqwest client, plus the W3C
//! `traceparent` header on every request that carries one in its `_meta`, and `Mcp-Name` on
//! `tasks/*` requests.
//!
//! rmcp sends requests from its own worker task, where the caller's tracing span is no longer
//! current, so the trace context travels inside the message (`_meta.traceparent`, set by
//! [`super::upstream::Upstream::call`]) and is copied into the HTTP header here, where any
//! server (or proxy, or Cloud Run itself) looks for it.
//!
//! The tasks extension asks a client to name the task of each `tasks/get`, `tasks/update` and
//! `tasks/cancel` in `Mcp-Name`, so load balancers can route it to where the task lives; rmcp
//! sets that header only on protocol versions with standard headers, so it is added here when
//! missing (and when the id can be a header value as it is).
//!
//! The reqwest client keeps connections alive and sets TCP_NODELAY: the agent and the sidecar
//! exchange small requests over loopback, where a fresh connection per call would cost more
//! than the call.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::{
    model::{ClientJsonRpcMessage, ClientRequest, GetMeta},
    transport::streamable_http_client::{
        StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    },
};
use sse_stream::{Error as SseError, Sse};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

#[derive(Clone)]
pub struct TracingHttpClient(reqwest::Client);

impl TracingHttpClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self(
            reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(60))
                // An MCP endpoint that redirects is misconfigured; say so instead of following.
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        ))
    }
}

/// Copies `_meta.traceparent` of a request into the HTTP headers, and names the task of a
/// `tasks/*` request in `Mcp-Name` when rmcp has not.
fn with_request_headers(
    message: &ClientJsonRpcMessage,
    mut headers: HashMap<HeaderName, HeaderValue>,
) -> HashMap<HeaderName, HeaderValue> {
    let ClientJsonRpcMessage::Request(request) = message else {
        return headers;
    };
    if let Some(value) = request
        .request
        .get_meta()
        .get("traceparent")
        .and_then(|value| value.as_str())
        .and_then(|value| HeaderValue::from_str(value).ok())
    {
        headers.insert(TRACEPARENT, value);
    }
    let task_id = match &request.request {
        ClientRequest::GetTaskRequest(request) => Some(request.params.task_id.as_str()),
        ClientRequest::CancelTaskRequest(request) => Some(request.params.task_id.as_str()),
        ClientRequest::UpdateTaskRequest(request) => Some(request.params.task_id.as_str()),
        _ => None,
    };
    if let Some(task_id) = task_id
        && !headers.contains_key(&MCP_NAME)
        // A value with surrounding blanks or non-ASCII would need the standard's Base64 form.
        && task_id.trim() == task_id
        && task_id.is_ascii()
        && let Ok(value) = HeaderValue::from_str(task_id)
    {
        headers.insert(MCP_NAME, value);
    }
    headers
}

type PostResult = Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>>;
type StreamResult =
    Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<reqwest::Error>>;

impl StreamableHttpClient for TracingHttpClient {
    type Error = reqwest::Error;

    fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = PostResult> + Send + '_ {
        let headers = with_request_headers(&message, custom_headers);
        self.0
            .post_message(uri, message, session_id, auth_header, headers)
    }

    fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> impl Future<Output = PostResult> + Send + '_ {
        let headers = with_request_headers(&message, custom_headers);
        self.0.post_message_with_max_sse_event_size(
            uri,
            message,
            session_id,
            auth_header,
            headers,
            max_sse_event_size,
        )
    }

    fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = Result<(), StreamableHttpError<reqwest::Error>>> + Send + '_ {
        self.0
            .delete_session(uri, session_id, auth_header, custom_headers)
    }

    fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = StreamResult> + Send + '_ {
        self.0
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
    }

    fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> impl Future<Output = StreamResult> + Send + '_ {
        self.0.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            max_sse_event_size,
        )
    }
}
