//! One MCP server the agent talks to: its connection, kept alive and re-made as needed.
//!
//! A connection is an rmcp client that has done `initialize` and listed the server's tools.
//! It is made on first use, by the supervisor (for the sidecar: at start, with backoff), and
//! again whenever a call finds the transport gone or the ID token changed (the credentials
//! refreshed it: the connection sends the token it was made with). With a stateful server,
//! rmcp itself re-initializes when the server answers 404 for an expired session (a restart);
//! with a stateless one, a restarted server simply answers.
//!
//! Each upstream has one HTTP client for its whole life, so reconnects reuse its pool (and a
//! server's kept-alive connections) instead of building a client, and its TLS set-up, each time.
//!
//! MCP tasks (extension `io.modelcontextprotocol/tasks`): the agent declares the extension per
//! request, in the request's `_meta` client capabilities, and only on the requests whose task
//! it will follow ([`Upstream::call_as_task`], `tasks/get`, `tasks/cancel`). A server may answer
//! a declaring `tools/call` with a task, and must not answer any other call with one, so every
//! other call (the model's tool loop, a plain `POST /v1/tools/{name}`) keeps getting results.
//! The declaration goes in the request options' metadata, which rmcp merges last: on protocol
//! 2026-07-28 it would otherwise overwrite the request's `_meta` capabilities with the
//! connection's.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use rmcp::{
    ServiceExt,
    model::{
        CallToolRequest, CallToolRequestParams, CallToolResult, CancelTaskParams,
        CancelTaskRequest, ClientCapabilities, ClientConfig, ClientRequest, DetailedTask,
        GetTaskParams, GetTaskRequest, Implementation, InputResponses, JsonObject,
        RequestMetaObject, ServerResult, TASKS_EXTENSION_ID, Task, Tool, UpdateTaskParams,
        UpdateTaskRequest,
    },
    service::{PeerRequestOptions, RunningService, ServiceError},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use service_core::telemetry::propagation;
use tokio::sync::{Mutex, RwLock};
use tracing::Instrument;

use super::{id_token::IdTokenSource, server_url::ServerUrl, transport::TracingHttpClient};

pub type Client = RunningService<rmcp::RoleClient, ClientConfig>;

impl UpstreamError {
    /// The error without the server's name: what `/readyz` shows next to that name.
    pub fn reason(&self) -> String {
        match self {
            Self::Unavailable { reason, .. } => reason.clone(),
            Self::Timeout { timeout, .. } => format!("no answer within {timeout:?}"),
            Self::Refused { message, .. } => message.clone(),
            Self::Unexpected { what, .. } => what.clone(),
        }
    }
}

/// The capabilities the agent declares when it connects: none beyond the protocol's basics.
fn agent_capabilities() -> ClientCapabilities {
    ClientCapabilities::default()
}

/// The agent's capabilities plus the tasks extension: the `_meta` declaration of a request
/// whose task the agent will follow.
fn capabilities_with_tasks() -> ClientCapabilities {
    let mut capabilities = agent_capabilities();
    capabilities
        .extensions
        .get_or_insert_with(Default::default)
        .insert(TASKS_EXTENSION_ID.to_owned(), JsonObject::new());
    capabilities
}

/// What a `tools/call` that declared the tasks extension got back.
#[derive(Debug)]
pub enum ToolAnswer {
    /// The tool's result, as without the extension.
    Result(CallToolResult),
    /// A task that will produce the result: follow it with `tasks/get`.
    Task(Task),
}

/// Why a call to a server did not produce a tool result.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the MCP server `{server}` is unavailable: {reason}")]
    Unavailable { server: String, reason: String },
    #[error("the MCP server `{server}` did not answer within {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    /// The server answered with a JSON-RPC error (e.g. -32602 for bad params).
    #[error("the MCP server `{server}` refused the call: {message}")]
    Refused {
        server: String,
        code: i32,
        message: String,
        /// The error's `data` as the server sent it (e.g. the capability a `-32021` names), for
        /// a caller that passes the refusal on (the agent's own `/mcp`).
        data: Option<serde_json::Value>,
    },
    /// The server answered with something the request cannot have (e.g. a task to a call that
    /// did not declare the extension).
    #[error("the MCP server `{server}` answered with something unusable: {what}")]
    Unexpected { server: String, what: String },
}

impl UpstreamError {
    /// JSON-RPC "invalid params": for `tasks/*`, how the extension says "no such task".
    pub const INVALID_PARAMS: i32 = -32602;

    /// Whether the server refused with "invalid params".
    pub fn is_invalid_params(&self) -> bool {
        matches!(
            self,
            Self::Refused {
                code: Self::INVALID_PARAMS,
                ..
            }
        )
    }
}

struct Connection {
    client: Arc<Client>,
    tools: Vec<Tool>,
    /// The ID token every request of this connection carries.
    token: Option<String>,
}

impl Connection {
    /// Whether this connection can serve a request that must carry `token`.
    fn serves(&self, token: Option<&str>) -> bool {
        !self.client.is_transport_closed() && self.token.as_deref() == token
    }
}

pub struct Upstream {
    pub name: String,
    url: ServerUrl,
    headers: BTreeMap<String, String>,
    id_tokens: Option<IdTokenSource>,
    /// Built once, shared by every connection this upstream makes.
    http: TracingHttpClient,
    timeout: Duration,
    connection: RwLock<Option<Connection>>,
    /// Serialises (re)connects so a burst of calls makes one connection, not many.
    connecting: Mutex<()>,
    last_error: RwLock<Option<String>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the upstream and its HTTP client; connects only when first used.
    pub fn new(
        name: String,
        url: ServerUrl,
        headers: BTreeMap<String, String>,
        id_tokens: Option<IdTokenSource>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            name,
            url,
            headers,
            id_tokens,
            http: TracingHttpClient::new()?,
            timeout,
            connection: RwLock::new(None),
            connecting: Mutex::new(()),
            last_error: RwLock::new(None),
        })
    }

    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// True while a connection is held and its transport is open.
    pub async fn is_connected(&self) -> bool {
        self.connection
            .read()
            .await
            .as_ref()
            .is_some_and(|connection| !connection.client.is_transport_closed())
    }

    pub async fn last_error(&self) -> Option<String> {
        self.last_error.read().await.clone()
    }

    /// The server's tools as of the last (re)connect; empty while disconnected.
    pub async fn tools(&self) -> Vec<Tool> {
        self.connection
            .read()
            .await
            .as_ref()
            .map(|connection| connection.tools.clone())
            .unwrap_or_default()
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> UpstreamError {
        UpstreamError::Unavailable {
            server: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    /// [`Self::unavailable`] for a transport failure, worded for a caller: rmcp's messages
    /// name its generic wrapper types (`Transport [rmcp::transport::worker::…]`), which say
    /// nothing to someone reading an API error, so those parts are left out.
    fn unavailable_because(&self, error: &dyn std::fmt::Display) -> UpstreamError {
        let text = error.to_string();
        let mut concise = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(start) = rest.find(" [") {
            let Some(length) = rest[start..].find("] ") else {
                break;
            };
            let inside = &rest[start + 2..start + length];
            concise.push_str(&rest[..start]);
            if !inside.contains("::") {
                concise.push_str(&rest[start..start + length + 1]);
            }
            rest = &rest[start + length + 1..];
        }
        concise.push_str(rest);
        self.unavailable(concise)
    }

    /// A live client carrying the current ID token: the current one, or a new connection.
    async fn client(&self) -> Result<Arc<Client>, UpstreamError> {
        let token = match self.id_token().await {
            Ok(token) => token,
            Err(error) => {
                *self.last_error.write().await = Some(error.reason());
                self.disconnect().await;
                return Err(error);
            }
        };
        if let Some(connection) = self.connection.read().await.as_ref()
            && connection.serves(token.as_deref())
        {
            return Ok(connection.client.clone());
        }
        self.connect(token).await
    }

    /// The ID token requests must carry now (none without ID-token auth), bounded by the call
    /// timeout: the first one is fetched while the caller waits.
    async fn id_token(&self) -> Result<Option<String>, UpstreamError> {
        let Some(source) = &self.id_tokens else {
            return Ok(None);
        };
        match tokio::time::timeout(self.timeout, source.token()).await {
            Ok(Ok(token)) => Ok(Some(token)),
            Ok(Err(error)) => Err(self.unavailable(error)),
            Err(_) => Err(self.unavailable(format!("no ID token within {:?}", self.timeout))),
        }
    }

    /// Makes a new connection with `token` (unless another task just did) and lists the tools.
    async fn connect(&self, token: Option<String>) -> Result<Arc<Client>, UpstreamError> {
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(connection) = self.connection.read().await.as_ref()
            && connection.serves(token.as_deref())
        {
            return Ok(connection.client.clone());
        }
        let result = tokio::time::timeout(self.timeout, self.open(token))
            .await
            .unwrap_or_else(|_| {
                Err(self.unavailable(format!("no answer within {:?}", self.timeout)))
            });
        match result {
            Ok(connection) => {
                let client = connection.client.clone();
                tracing::info!(server = %self.name, tools = connection.tools.len(), "connected to MCP server");
                let previous = self.connection.write().await.replace(connection);
                *self.last_error.write().await = None;
                if let Some(previous) = previous {
                    previous.client.cancellation_token().cancel();
                }
                Ok(client)
            }
            Err(error) => {
                *self.last_error.write().await = Some(error.reason());
                self.disconnect().await;
                Err(error)
            }
        }
    }

    async fn open(&self, token: Option<String>) -> Result<Connection, UpstreamError> {
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.url.as_str());
        config.reinit_on_expired_session = true;
        for (name, value) in &self.headers {
            let header_name = http::HeaderName::try_from(name.as_str())
                .map_err(|error| self.unavailable(format!("header {name}: {error}")))?;
            let header_value = http::HeaderValue::try_from(value.as_str())
                .map_err(|error| self.unavailable(format!("header {name}: {error}")))?;
            config.custom_headers.insert(header_name, header_value);
        }
        if let Some(token) = &token {
            if config
                .custom_headers
                .contains_key(&http::header::AUTHORIZATION)
            {
                // The server's own Authorization is taken: Cloud Run also accepts the ID token
                // in X-Serverless-Authorization, and strips it before the request reaches it.
                let value = http::HeaderValue::try_from(format!("Bearer {token}"))
                    .map_err(|error| self.unavailable(format!("ID token: {error}")))?;
                config.custom_headers.insert(
                    http::HeaderName::from_static("x-serverless-authorization"),
                    value,
                );
            } else {
                config.auth_header = Some(token.clone());
            }
        }
        let client = ClientConfig::new(
            agent_capabilities(),
            Implementation::new("agent", env!("CARGO_PKG_VERSION")),
        )
        .serve(StreamableHttpClientTransport::with_client(
            self.http.clone(),
            config,
        ))
        .await
        .map_err(|error| self.unavailable_because(&error))?;
        let tools = client
            .list_all_tools()
            .await
            .map_err(|error| self.unavailable_because(&error))?;
        Ok(Connection {
            client: Arc::new(client),
            tools,
            token,
        })
    }

    /// Drops the connection; the next use makes a new one.
    pub async fn disconnect(&self) {
        if let Some(connection) = self.connection.write().await.take() {
            connection.client.cancellation_token().cancel();
        }
    }

    /// Checks the connection with a cheap request (and refreshes the tool list), reconnecting
    /// if needed. Used by the supervisor.
    pub async fn probe(&self) -> Result<(), UpstreamError> {
        let client = self.client().await?;
        match tokio::time::timeout(
            self.timeout.min(Duration::from_secs(5)),
            client.list_all_tools(),
        )
        .await
        {
            Ok(Ok(tools)) => {
                if let Some(connection) = self.connection.write().await.as_mut() {
                    connection.tools = tools;
                }
                Ok(())
            }
            Ok(Err(error)) => {
                self.disconnect().await;
                let error = self.unavailable_because(&error);
                *self.last_error.write().await = Some(error.reason());
                Err(error)
            }
            Err(_) => {
                self.disconnect().await;
                Err(UpstreamError::Timeout {
                    server: self.name.clone(),
                    timeout: self.timeout,
                })
            }
        }
    }

    /// Whether the server runs tasks (declares the tasks extension in its capabilities), as of
    /// the current connection; connects if needed.
    pub async fn supports_tasks(&self) -> Result<bool, UpstreamError> {
        Ok(runs_tasks(&*self.client().await?))
    }

    /// A client span for one MCP request (`tools/call <tool>`, `tasks/get`, …), only while spans
    /// are exported.
    fn client_span(&self, method: &'static str, tool: Option<&str>) -> tracing::Span {
        if !service_core::telemetry::exporting_traces() {
            return tracing::Span::none();
        }
        let name = match tool {
            Some(tool) => format!("{method} {tool}"),
            None => method.to_owned(),
        };
        tracing::info_span!(
            "mcp.client",
            otel.name = %name,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            mcp.method.name = method,
            gen_ai.tool.name = tool,
            mcp.server = %self.name,
        )
    }

    /// Calls `tool` with `arguments`, bounded by the call timeout, in a client span
    /// (`tools/call <tool>`) whose context goes along as `_meta.traceparent` (and from there
    /// into the HTTP `traceparent` header, see [`super::transport`]).
    pub async fn call(
        &self,
        tool: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<CallToolResult, UpstreamError> {
        let span = self.client_span("tools/call", Some(tool));
        let result = self
            .call_in_span(tool, arguments)
            .instrument(span.clone())
            .await;
        let failed = match &result {
            Ok(result) => result.is_error == Some(true),
            Err(_) => true,
        };
        if failed {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    async fn call_in_span(
        &self,
        tool: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<CallToolResult, UpstreamError> {
        let client = self.client().await?;
        let mut request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        if let Some(traceparent) = propagation::current_traceparent() {
            let mut meta = RequestMetaObject::default();
            meta.insert("traceparent".to_owned(), traceparent.into());
            request.meta = Some(meta);
        }
        match tokio::time::timeout(self.timeout, client.call_tool(request)).await {
            Err(_) => Err(UpstreamError::Timeout {
                server: self.name.clone(),
                timeout: self.timeout,
            }),
            Ok(Ok(result)) => Ok(result),
            Ok(Err(error)) => Err(self.failed(error).await),
        }
    }

    /// Calls `tool` declaring the tasks extension when the server runs tasks, so it may answer
    /// with a task; otherwise (or when the server chooses to) the answer is the tool's result.
    pub async fn call_as_task(
        &self,
        tool: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<ToolAnswer, UpstreamError> {
        if !self.supports_tasks().await? {
            return self.call(tool, arguments).await.map(ToolAnswer::Result);
        }
        let span = self.client_span("tools/call", Some(tool));
        let answer = async {
            let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
            let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
            match self.request_declaring_tasks(request).await? {
                ServerResult::CallToolResult(result) => Ok(ToolAnswer::Result(result)),
                ServerResult::CreateTaskResult(created) => Ok(ToolAnswer::Task(created.task)),
                // A result with nothing in it (`{}`), as rmcp's own `call_tool` reads one.
                ServerResult::EmptyResult(_) => Ok(ToolAnswer::Result(CallToolResult::default())),
                other => Err(self.unexpected("tools/call", &other)),
            }
        }
        .instrument(span.clone())
        .await;
        let failed = match &answer {
            Ok(ToolAnswer::Result(result)) => result.is_error == Some(true),
            Ok(ToolAnswer::Task(_)) => false,
            Err(_) => true,
        };
        if failed {
            span.record("otel.status_code", "ERROR");
        }
        answer
    }

    /// `tasks/get`: the task's state now, with its result or error once it has ended.
    pub async fn get_task(&self, task_id: &str) -> Result<DetailedTask, UpstreamError> {
        let span = self.client_span("tasks/get", None);
        let request =
            ClientRequest::GetTaskRequest(GetTaskRequest::new(GetTaskParams::new(task_id)));
        let answer = async {
            match self.request_declaring_tasks(request).await? {
                ServerResult::GetTaskResult(result) => Ok(result.task),
                other => Err(self.unexpected("tasks/get", &other)),
            }
        }
        .instrument(span.clone())
        .await;
        if answer.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        answer
    }

    /// `tasks/cancel`: asks the server to cancel the task. Cancelling is cooperative: the
    /// acknowledgement does not say the task has stopped (`tasks/get` does).
    pub async fn cancel_task(&self, task_id: &str) -> Result<(), UpstreamError> {
        let span = self.client_span("tasks/cancel", None);
        let request = ClientRequest::CancelTaskRequest(CancelTaskRequest::new(
            CancelTaskParams::new(task_id),
        ));
        let answer = async {
            match self.request_declaring_tasks(request).await? {
                ServerResult::TaskAckResult(_) | ServerResult::EmptyResult(_) => Ok(()),
                other => Err(self.unexpected("tasks/cancel", &other)),
            }
        }
        .instrument(span.clone())
        .await;
        if answer.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        answer
    }

    /// `tasks/update`: the answers to a task's outstanding input requests (a task in
    /// `input_required`).
    pub async fn update_task(
        &self,
        task_id: &str,
        input_responses: InputResponses,
    ) -> Result<(), UpstreamError> {
        let span = self.client_span("tasks/update", None);
        let request = ClientRequest::UpdateTaskRequest(UpdateTaskRequest::new(
            UpdateTaskParams::new(task_id, input_responses),
        ));
        let answer = async {
            match self.request_declaring_tasks(request).await? {
                ServerResult::TaskAckResult(_) | ServerResult::EmptyResult(_) => Ok(()),
                other => Err(self.unexpected("tasks/update", &other)),
            }
        }
        .instrument(span.clone())
        .await;
        if answer.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        answer
    }

    /// Sends one request whose `_meta` declares the tasks extension (and carries the trace
    /// context), bounded by the call timeout.
    async fn request_declaring_tasks(
        &self,
        request: ClientRequest,
    ) -> Result<ServerResult, UpstreamError> {
        let client = self.client().await?;
        let mut meta = RequestMetaObject::default();
        meta.set_client_capabilities(capabilities_with_tasks());
        if let Some(traceparent) = propagation::current_traceparent() {
            meta.insert("traceparent".to_owned(), traceparent.into());
        }
        let options = PeerRequestOptions::with_timeout(self.timeout).with_meta(meta);
        let sent = match client
            .peer()
            .send_request_with_option(request, options)
            .await
        {
            Ok(handle) => handle.await_response().await,
            Err(error) => Err(error),
        };
        match sent {
            Ok(result) => Ok(result),
            Err(ServiceError::Timeout { .. }) => Err(UpstreamError::Timeout {
                server: self.name.clone(),
                timeout: self.timeout,
            }),
            Err(error) => Err(self.failed(error).await),
        }
    }

    /// The error for a request that got no usable answer: the server's own refusal as it is;
    /// a transport failure drops the connection, so the next use makes a new one.
    async fn failed(&self, error: ServiceError) -> UpstreamError {
        match error {
            ServiceError::McpError(error) => UpstreamError::Refused {
                server: self.name.clone(),
                code: error.code.0,
                message: error.message.to_string(),
                data: error.data,
            },
            ServiceError::UnexpectedResponse => UpstreamError::Unexpected {
                server: self.name.clone(),
                what: "an answer of the wrong kind for the request".to_owned(),
            },
            error => {
                self.disconnect().await;
                let error = self.unavailable_because(&error);
                *self.last_error.write().await = Some(error.reason());
                error
            }
        }
    }

    fn unexpected(&self, method: &str, answer: &ServerResult) -> UpstreamError {
        let kind = match serde_json::to_value(answer) {
            Ok(serde_json::Value::Object(fields)) => fields
                .keys()
                .take(8)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            _ => String::new(),
        };
        UpstreamError::Unexpected {
            server: self.name.clone(),
            what: format!(
                "its answer to {method} is not one that request can have (fields: {kind})"
            ),
        }
    }
}

/// Whether the server behind `client` declared the tasks extension.
fn runs_tasks(client: &Client) -> bool {
    client
        .peer()
        .peer_info()
        .is_some_and(|info| info.capabilities.supports_tasks())
}
