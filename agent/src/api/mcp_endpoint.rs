//! `/mcp`: the agent as one MCP server (Streamable HTTP) for IDE clients such as Gemini CLI and
//! Claude Code. On Cloud Run only the agent is reachable, so this endpoint offers every tool of
//! every MCP server the agent is connected to, under the names `GET /v1/tools` lists (a name two
//! servers share becomes `{server}__{tool}`), with the servers' own descriptions and schemas.
//!
//! - `tools/call` is forwarded to the server that owns the tool, and its `CallToolResult` comes
//!   back as it is (`content`, `structuredContent`, `isError`). A call whose request declares
//!   the tasks extension (`io.modelcontextprotocol/tasks`) is forwarded declaring it too, so a
//!   task-capable tool (the sidecar's `render`) answers with a task; `tasks/get`,
//!   `tasks/update` and `tasks/cancel` go to the server that runs the task (see
//!   `McpHub::get_task`).
//! - An unknown tool is a JSON-RPC error (`-32602`), as MCP asks; a server that is away or too
//!   slow is a tool result with `isError: true` and `{"error", "code": "unavailable"}`, so a
//!   model reads why; a server's own JSON-RPC refusal is passed on with its code.
//! - Stateless mode with JSON responses, as the sidecar's default: every POST stands alone, so
//!   any instance answers any request and nothing is lost when one goes away.
//!
//! The edge does what rmcp leaves to the embedder. The Host header is checked here, against
//! [`AllowedHosts`] (loopback names plus, by default, `*.run.app`: rmcp has no wildcard
//! entries); rmcp checks a present Origin against the loopback names and the listed exact
//! names. On Cloud Run the Host is the service's run.app name, also through `gcloud run
//! services proxy`, which rewrites it; a web page that rebinds its name to the proxy's
//! loopback port keeps its own Origin, which is refused. A `tasks/*` request without
//! `Mcp-Name` gets the body's `taskId` as that header, as the sidecar's edge does (FastMCP's
//! client omits it; rmcp refuses a 2026-07-28 request without it). Cloud Run IAM guards the
//! endpoint like the rest of the agent; the body-size bound of the router applies.

use std::{str::FromStr, sync::Arc};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams,
        CreateTaskResult, CustomRequest, CustomResult, ErrorCode as RpcErrorCode, GetTaskParams,
        GetTaskResult, Implementation, ListToolsResult, PaginatedRequestParams, ResultType,
        ServerCapabilities, ServerConfig, UpdateTaskParams,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager,
    },
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sidecar_contract::{ErrorCode, ToolError};
use tracing::Instrument;

use super::AppState;
use crate::mcp::{HubError, McpHub, upstream::ToolAnswer, upstream::UpstreamError};

/// Host names always accepted, with any port.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// What the agent tells a client about itself at `initialize` / `server/discover`.
const INSTRUCTIONS: &str = "The tools of every MCP server behind this agent: its sidecar's \
(exact arithmetic with add and subtract, echo, and rendering charts and SVG to PNG with render \
or the start_render/get_render_status/get_render_result job tools) and any other configured \
server's. A name two servers share is prefixed with the server's name, as in sidecar__echo. \
Results come back as each server gives them: JSON in structuredContent, and on failure isError \
true with an `error` message explaining what to change.";

/// `/mcp`, on every method (rmcp answers those it does not serve).
pub async fn serve(State(state): State<Arc<AppState>>, request: Request) -> Response {
    state.mcp_endpoint.handle(request).await
}

/// rmcp's Streamable HTTP service over the hub, and the Host rules in front of it.
#[derive(Clone)]
pub struct McpEndpoint {
    service: StreamableHttpService<HubServer, NeverSessionManager>,
    allowed_hosts: AllowedHosts,
}

impl McpEndpoint {
    /// Builds the endpoint (no I/O). `max_body_bytes` is the router's bound, which has already
    /// been enforced by the time rmcp reads a body; it is passed on so the two agree.
    pub fn new(hub: Arc<McpHub>, allowed_hosts: AllowedHosts, max_body_bytes: usize) -> Self {
        let config = StreamableHttpServerConfig::default()
            // The Host check is ours (it knows `*.domain` entries); rmcp checks the Origin.
            .disable_allowed_hosts()
            .with_allowed_origins(allowed_hosts.origin_patterns())
            .enforce_origin_validation()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_keep_alive(None)
            // rmcp's own cancellation token is left alone: stateless JSON mode holds no streams
            // to end at SIGTERM, and calls in flight should finish within the drain.
            .with_max_request_body_bytes(max_body_bytes);
        let service = StreamableHttpService::new(
            move || Ok(HubServer { hub: hub.clone() }),
            Arc::new(NeverSessionManager::default()),
            config,
        );
        Self {
            service,
            allowed_hosts,
        }
    }

    async fn handle(&self, request: Request) -> Response {
        if let Some(refusal) = self.allowed_hosts.refusal(request.headers()) {
            return refusal.into_response();
        }
        let (mut parts, body) = request.into_parts();
        let body = if lacks_task_name(&parts.headers) {
            // The router has read the body already (its size bound), so this only collects it.
            match axum::body::to_bytes(body, usize::MAX).await {
                Ok(bytes) => {
                    name_the_task(&mut parts.headers, &bytes);
                    Body::from(bytes)
                }
                Err(error) => {
                    return (
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the request body: {error}"),
                    )
                        .into_response();
                }
            }
        } else {
            body
        };
        // rmcp runs the handler in a task of its own: the request's span goes along in the
        // request parts it hands over, so forwarded calls are children of `POST /mcp`.
        parts
            .extensions
            .insert(RequestSpan(tracing::Span::current()));
        self.service
            .handle(Request::from_parts(parts, body))
            .await
            .map(Body::new)
    }
}

/// The span of the HTTP request a handler serves.
#[derive(Clone)]
struct RequestSpan(tracing::Span);

fn request_span(context: &RequestContext<RoleServer>) -> tracing::Span {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<RequestSpan>())
        .map_or_else(tracing::Span::none, |span| span.0.clone())
}

/// Whether the request is a `tasks/*` without `Mcp-Name` (by its `Mcp-Method` header, which a
/// 2026-07-28 client sends on every request and rmcp checks against the body).
fn lacks_task_name(headers: &HeaderMap) -> bool {
    !headers.contains_key("mcp-name")
        && headers
            .get("mcp-method")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|method| matches!(method, "tasks/get" | "tasks/update" | "tasks/cancel"))
}

/// The tasks extension says a client MUST send `Mcp-Name: <taskId>` on `tasks/*`, and says
/// nothing of a server's duty when it is missing; clients that exist omit it (FastMCP's), while
/// rmcp refuses such a request with `-32020`. A missing `Mcp-Name` is therefore taken to be the
/// body's `taskId`; one that is present is left for rmcp to check against the body.
fn name_the_task(headers: &mut HeaderMap, body: &[u8]) {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let method = headers
        .get("mcp-method")
        .and_then(|value| value.to_str().ok());
    if request.get("method").and_then(Value::as_str) != method {
        return;
    }
    if let Some(value) = request
        .pointer("/params/taskId")
        .and_then(Value::as_str)
        .and_then(|task_id| HeaderValue::from_str(task_id).ok())
    {
        headers.insert("mcp-name", value);
    }
}

/// The MCP handler: one per request (stateless mode), a handle on the hub.
#[derive(Clone)]
struct HubServer {
    hub: Arc<McpHub>,
}

impl ServerHandler for HubServer {
    // `enable_logging` is deprecated with SEP-2577; see `set_level`.
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                // Forwarded to the servers that run tasks (the sidecar's `render` does).
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
    }

    /// The hub's tools under their exposed names. While the sidecar is away its tools are
    /// unknown: an error then rather than a short list a client would keep (stateless mode has
    /// no `list_changed` notification to correct it).
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        if !self.hub.sidecar().is_connected().await {
            return Err(McpError::internal_error(
                "the agent's sidecar is not connected yet, so its tools are unknown; \
                 try again shortly (GET /readyz says when it is connected)",
                None,
            ));
        }
        let tools = self
            .hub
            .tools()
            .await
            .into_iter()
            .map(|exposed| {
                let mut tool = exposed.tool;
                tool.name = exposed.name.into();
                tool
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name;
        let arguments = request.arguments.unwrap_or_default();
        let as_task = context
            .client_capabilities()
            .is_some_and(|capabilities| capabilities.supports_tasks());
        let forwarded = async {
            let result = if as_task {
                match self.hub.call_as_task(&name, arguments).await?.answer {
                    ToolAnswer::Task(task) => {
                        return Ok(CallToolResponse::Task(CreateTaskResult::new(task)));
                    }
                    ToolAnswer::Result(result) => result,
                }
            } else {
                self.hub.call(&name, arguments).await?
            };
            Ok::<_, HubError>(complete(result).into())
        }
        .instrument(request_span(&context))
        .await;
        forwarded.or_else(|error| tool_call_failure(&name, error))
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let found = self
            .hub
            .get_task(&request.task_id)
            .instrument(request_span(&context))
            .await
            .map_err(task_failure)?;
        Ok(GetTaskResult::new(found.task))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.hub
            .cancel_task(&request.task_id)
            .instrument(request_span(&context))
            .await
            .map(|_server| ())
            .map_err(task_failure)
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.hub
            .update_task(&request.task_id, request.input_responses)
            .instrument(request_span(&context))
            .await
            .map_err(task_failure)
    }

    /// rmcp hands over a request it could not parse as a known method: a method it does not
    /// know, or a known one whose params do not fit (a `tools/call` without `name`, a
    /// `tasks/get` without a string `taskId`). The second is `-32602` saying what is wrong,
    /// not the `-32601` rmcp answers by default.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        fn problem<T: DeserializeOwned>(params: Value) -> String {
            serde_json::from_value::<T>(params).err().map_or_else(
                || "they do not fit the method".into(),
                |error| error.to_string(),
            )
        }
        let params = request.params.unwrap_or(Value::Null);
        let problem = match request.method.as_str() {
            "tools/call" => problem::<CallToolRequestParams>(params),
            "tasks/get" => problem::<GetTaskParams>(params),
            "tasks/cancel" => problem::<CancelTaskParams>(params),
            "tasks/update" => problem::<UpdateTaskParams>(params),
            method => {
                return Err(McpError::new(
                    RpcErrorCode::METHOD_NOT_FOUND,
                    format!("method `{method}` not found"),
                    None,
                ));
            }
        };
        Err(McpError::invalid_params(
            format!("invalid params of {}: {problem}", request.method),
            None,
        ))
    }

    /// The agent sends no `notifications/message` (its logs go to stdout and Cloud Logging),
    /// so any level is honoured trivially; accepting it keeps clients that set one working.
    #[allow(deprecated)]
    async fn set_level(
        &self,
        _request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Ok(())
    }
}

/// A server's result as a complete one. A server on a protocol before 2026-07-28 sends no
/// `resultType`, which a 2026-07-28 client requires; rmcp removes it again for older clients.
fn complete(mut result: CallToolResult) -> CallToolResult {
    result.result_type.get_or_insert(ResultType::COMPLETE);
    result
}

/// The answer to a `tools/call` the hub could not forward or the server did not answer.
fn tool_call_failure(name: &str, error: HubError) -> Result<CallToolResponse, McpError> {
    match error {
        HubError::UnknownTool(_) | HubError::UnknownTask(_) => Err(McpError::invalid_params(
            format!("unknown tool `{name}`; tools/list gives the available tools"),
            None,
        )),
        HubError::Upstream(
            error @ (UpstreamError::Unavailable { .. } | UpstreamError::Timeout { .. }),
        ) => {
            // The tool could not run: a tool result, so the model reads why and may retry.
            let failure = ToolError::new(ErrorCode::Unavailable, &error);
            let content = serde_json::to_value(&failure).unwrap_or(Value::String(failure.error));
            Ok(CallToolResult::structured_error(content).into())
        }
        HubError::Upstream(error) => Err(upstream_refusal(error)),
    }
}

/// The answer to a `tasks/*` request the hub could not serve: an unknown task is "invalid
/// params", as the extension says.
fn task_failure(error: HubError) -> McpError {
    match error {
        HubError::UnknownTask(_) | HubError::UnknownTool(_) => {
            McpError::invalid_params(error.to_string(), None)
        }
        HubError::Upstream(error) => upstream_refusal(error),
    }
}

/// A server's JSON-RPC refusal keeps its code and data (a `-32021` names the capability the
/// client must declare); anything else is an internal error.
fn upstream_refusal(error: UpstreamError) -> McpError {
    match &error {
        UpstreamError::Refused { code, data, .. } => {
            McpError::new(RpcErrorCode(*code), error.to_string(), data.clone())
        }
        _ => McpError::internal_error(error.to_string(), None),
    }
}

/// The Host names `/mcp` accepts besides [`LOOPBACK_HOSTS`] (`MCP_ALLOWED_HOSTS`): a
/// comma-separated list of `name`, `name:port` and `*.domain` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts(Vec<HostPattern>);

/// One entry of [`AllowedHosts`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// A host name or IP address, lowercase, without brackets; with a port, only that port.
    Exact { host: String, port: Option<u16> },
    /// `*.domain`: any name ending in `.domain` (kept with its leading dot), any port.
    Subdomains { suffix: String },
}

/// Why an `MCP_ALLOWED_HOSTS` entry is not one.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a host name, name:port, IP address or *.domain")]
pub struct InvalidHostPattern(String);

impl FromStr for AllowedHosts {
    type Err = InvalidHostPattern;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(HostPattern::from_str)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl FromStr for HostPattern {
    type Err = InvalidHostPattern;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidHostPattern(entry.to_owned());
        if let Some(domain) = entry.strip_prefix("*.") {
            let valid = !domain.is_empty()
                && !domain.starts_with('.')
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            return valid
                .then(|| Self::Subdomains {
                    suffix: format!(".{}", domain.to_ascii_lowercase()),
                })
                .ok_or_else(invalid);
        }
        // A bare IPv6 address (`fd00::1`) is not an authority; it has no port.
        if entry.matches(':').count() > 1 && !entry.starts_with('[') {
            return entry
                .parse::<std::net::Ipv6Addr>()
                .map(|_| Self::Exact {
                    host: entry.to_ascii_lowercase(),
                    port: None,
                })
                .map_err(|_| invalid());
        }
        let authority = http::uri::Authority::from_str(entry).map_err(|_| invalid())?;
        if entry.contains(['@', '*']) {
            return Err(invalid());
        }
        Ok(Self::Exact {
            host: normalize_host(authority.host()),
            port: authority.port_u16(),
        })
    }
}

/// A Host's name as compared: lowercase, an IPv6 address without its brackets.
fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

impl HostPattern {
    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        match self {
            Self::Exact {
                host: allowed,
                port: allowed_port,
            } => allowed == host && allowed_port.is_none_or(|allowed| port == Some(allowed)),
            Self::Subdomains { suffix } => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

impl AllowedHosts {
    /// Whether a Host header of `host` (a name or address, and maybe a port) is accepted.
    pub fn accepts(&self, authority: &str) -> bool {
        let Ok(authority) = http::uri::Authority::from_str(authority) else {
            return false;
        };
        let host = normalize_host(authority.host());
        let port = authority.port_u16();
        LOOPBACK_HOSTS.contains(&host.as_str())
            || self.0.iter().any(|pattern| pattern.matches(&host, port))
    }

    /// Why a request's Host is refused, as the status and rmcp's words for it; `None` when
    /// it is accepted.
    fn refusal(&self, headers: &HeaderMap) -> Option<(StatusCode, &'static str)> {
        // HTTP/1.1 requires Host; the agent serves HTTP/1 only.
        let Some(host) = headers.get(header::HOST) else {
            return Some((StatusCode::BAD_REQUEST, "Bad Request: missing Host header"));
        };
        let Ok(host) = host.to_str() else {
            return Some((
                StatusCode::BAD_REQUEST,
                "Bad Request: Invalid Host header encoding",
            ));
        };
        if http::uri::Authority::from_str(host).is_err() {
            return Some((StatusCode::BAD_REQUEST, "Bad Request: Invalid Host header"));
        }
        if self.accepts(host) {
            return None;
        }
        tracing::warn!(
            host,
            "refused /mcp request with a Host that is not allowed (possible DNS rebinding); \
             see MCP_ALLOWED_HOSTS"
        );
        Some((
            StatusCode::FORBIDDEN,
            "Forbidden: Host header is not allowed",
        ))
    }

    /// The Origins a browser may send, as rmcp's allow-list entries: `http` and `https` on each
    /// loopback name and each exact entry (a bare name any port, `name:port` only that port).
    /// `*.domain` entries give none: anyone can serve a page from some name under a shared
    /// domain such as run.app. `null` is not among them, so `Origin: null` is refused.
    fn origin_patterns(&self) -> Vec<String> {
        let loopback = LOOPBACK_HOSTS.iter().map(|host| ((*host).to_owned(), None));
        let exact = self.0.iter().filter_map(|pattern| match pattern {
            HostPattern::Exact { host, port } => Some((host.clone(), *port)),
            HostPattern::Subdomains { .. } => None,
        });
        loopback
            .chain(exact)
            .flat_map(|(host, port)| {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                let port = port.map_or_else(|| ":*".to_owned(), |port| format!(":{port}"));
                ["http", "https"].map(|scheme| format!("{scheme}://{host}{port}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &str) -> AllowedHosts {
        list.parse().unwrap()
    }

    #[test]
    fn loopback_names_are_always_accepted_and_the_default_accepts_run_app_names() {
        let default = hosts("*.run.app");
        for accepted in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:3000",
            "[::1]:8080",
            "agent-abc123-uc.a.run.app",
            "agent-123456789.us-central1.run.app",
            "AGENT-ABC-UC.A.RUN.APP:443",
        ] {
            assert!(default.accepts(accepted), "{accepted}");
        }
        for refused in [
            "run.app",
            "evil.example",
            "evil.run.app.example",
            "notrun.app",
            "10.0.0.7:8080",
        ] {
            assert!(!default.accepts(refused), "{refused}");
        }
        assert!(hosts("").accepts("localhost:1"));
        assert!(!hosts("").accepts("agent-abc-uc.a.run.app"));
    }

    #[test]
    fn exact_entries_follow_their_port_rules() {
        let list = hosts(" app.example.com:8443, mcp.example.org ,fd00::1,[fd00::2]:9000");
        assert!(list.accepts("app.example.com:8443"));
        assert!(!list.accepts("app.example.com"));
        assert!(!list.accepts("app.example.com:443"));
        assert!(list.accepts("mcp.example.org"));
        assert!(list.accepts("mcp.example.org:1234"));
        assert!(list.accepts("[fd00::1]:80"));
        assert!(list.accepts("[fd00::2]:9000"));
        assert!(!list.accepts("[fd00::2]:9001"));
    }

    #[test]
    fn entries_that_are_not_hosts_are_refused_with_the_entry() {
        for bad in [
            "*",
            "*.",
            "*..run.app",
            "a*.run.app",
            "*.run.app:443",
            "user@host",
            "fd00::zz",
        ] {
            let error = bad.parse::<AllowedHosts>().unwrap_err();
            assert!(error.to_string().contains(bad), "{bad}: {error}");
        }
    }

    #[test]
    fn origins_are_loopback_and_exact_entries_never_wildcards() {
        assert_eq!(
            hosts("*.run.app, app.example.com:8443, fd00::1").origin_patterns(),
            [
                "http://localhost:*",
                "https://localhost:*",
                "http://127.0.0.1:*",
                "https://127.0.0.1:*",
                "http://[::1]:*",
                "https://[::1]:*",
                "http://app.example.com:8443",
                "https://app.example.com:8443",
                "http://[fd00::1]:*",
                "https://[fd00::1]:*",
            ]
        );
    }

    #[test]
    fn a_tasks_request_without_mcp_name_is_named_after_its_task() {
        let mut headers = HeaderMap::new();
        headers.insert("mcp-method", HeaderValue::from_static("tasks/get"));
        assert!(lacks_task_name(&headers));
        name_the_task(
            &mut headers,
            br#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t-1"}}"#,
        );
        assert_eq!(headers["mcp-name"], "t-1");
        assert!(!lacks_task_name(&headers));

        // A body whose method differs from the header is left for rmcp to refuse.
        let mut headers = HeaderMap::new();
        headers.insert("mcp-method", HeaderValue::from_static("tasks/cancel"));
        name_the_task(
            &mut headers,
            br#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t-1"}}"#,
        );
        assert!(!headers.contains_key("mcp-name"));
    }
}
