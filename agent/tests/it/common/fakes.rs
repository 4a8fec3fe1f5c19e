//! Local servers speaking the documented wire formats of things a test cannot reach:
//!
//! - [`MetadataServer`]: the GCE/Cloud Run metadata server's identity endpoint
//!   (`/computeMetadata/v1/instance/service-accounts/default/identity`), which answers only
//!   requests carrying `Metadata-Flavor: Google` and returns a JWT;
//! - [`RemoteMcp`]: a remote MCP server (Streamable HTTP, stateless JSON responses) like one
//!   deployed as its own Cloud Run service, recording the credentials each request carried;
//! - [`FakeModel`]: Vertex AI's `generateContent` and an OpenAI-compatible
//!   `/chat/completions`, scripted to ask for a tool call and then answer, to never stop
//!   asking, to first get the arguments wrong, or to reply with something malformed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use serde_json::{Value, json};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr.to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What one identity request looked like.
#[derive(Debug, Clone)]
pub struct IdentityRequest {
    pub audience: String,
    pub format: Option<String>,
    pub flavor: Option<String>,
}

#[derive(Clone)]
pub struct MetadataServer {
    /// host:port, for GCE_METADATA_HOST.
    pub host: String,
    pub requests: Arc<Mutex<Vec<IdentityRequest>>>,
    /// Lifetime of the tokens it issues.
    pub token_lifetime: Arc<Mutex<Duration>>,
}

impl MetadataServer {
    pub async fn start(token_lifetime: Duration) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let token_lifetime = Arc::new(Mutex::new(token_lifetime));
        let state = (requests.clone(), token_lifetime.clone());
        let app = Router::new()
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/identity",
                get(identity),
            )
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                get(access_token),
            )
            .route(
                "/computeMetadata/v1/universe/universe-domain",
                get(|| async { "googleapis.com" }),
            )
            .with_state(state);
        Self {
            host: serve(app).await,
            requests,
            token_lifetime,
        }
    }

    /// The tokens issued so far are `token-1`, `token-2`, … inside the JWT's `sub`.
    pub fn issued(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

type MetadataState = (Arc<Mutex<Vec<IdentityRequest>>>, Arc<Mutex<Duration>>);

async fn identity(
    State((requests, lifetime)): State<MetadataState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let flavor = headers
        .get("metadata-flavor")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let audience = query.get("audience").cloned().unwrap_or_default();
    let issued = {
        let mut requests = requests.lock().unwrap();
        requests.push(IdentityRequest {
            audience: audience.clone(),
            format: query.get("format").cloned(),
            flavor: flavor.clone(),
        });
        requests.len()
    };
    if flavor.as_deref() != Some("Google") {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    }
    let encode =
        |value: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let lifetime = lifetime.lock().unwrap().as_secs();
    let token = format!(
        "{}.{}.c2lnbmF0dXJl",
        encode(json!({"alg": "RS256", "typ": "JWT"})),
        encode(
            json!({"aud": audience, "sub": format!("token-{issued}"), "exp": now() + lifetime, "iat": now()})
        ),
    );
    token.into_response()
}

/// An OAuth access token, as the metadata server gives the instance's service account one.
async fn access_token(headers: HeaderMap) -> Response {
    if header(&headers, "metadata-flavor").as_deref() != Some("Google") {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    }
    Json(json!({"access_token": "fake-access-token", "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

/// Decodes the claims of a JWT the fake metadata server issued (`Bearer ` optional).
pub fn token_claims(authorization: &str) -> Value {
    let token = authorization.trim_start_matches("Bearer ");
    let payload = token.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

/// The `sub` of a JWT the fake metadata server issued (`token-N`).
pub fn token_subject(authorization: &str) -> String {
    token_claims(authorization)["sub"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// What one MCP request to the remote server carried.
#[derive(Debug, Clone)]
pub struct RemoteRequest {
    pub method: String,
    pub authorization: Option<String>,
    pub serverless_authorization: Option<String>,
    pub api_key: Option<String>,
}

#[derive(Clone)]
pub struct RemoteMcp {
    pub url: String,
    pub requests: Arc<Mutex<Vec<RemoteRequest>>>,
}

impl RemoteMcp {
    /// Tools: `echo` (the same name as the sidecar's), `whoami` (returns the Authorization it
    /// got) and `slow` (answers after 3 s); called as a sidecar, `start_render` answers
    /// without a `job_id`.
    pub async fn start() -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/mcp", post(remote_mcp))
            .with_state(requests.clone());
        Self {
            url: format!("http://{}/mcp", serve(app).await),
            requests,
        }
    }

    pub fn calls(&self) -> Vec<RemoteRequest> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|request| request.method == "tools/call")
            .cloned()
            .collect()
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

async fn remote_mcp(
    State(requests): State<Arc<Mutex<Vec<RemoteRequest>>>>,
    headers: HeaderMap,
    Json(message): Json<Value>,
) -> Response {
    let method = message["method"].as_str().unwrap_or_default().to_owned();
    let authorization = header(&headers, "authorization");
    requests.lock().unwrap().push(RemoteRequest {
        method: method.clone(),
        authorization: authorization.clone(),
        serverless_authorization: header(&headers, "x-serverless-authorization"),
        api_key: header(&headers, "x-api-key"),
    });
    let Some(id) = message.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response(); // a notification
    };
    let result = match method.as_str() {
        "initialize" => json!({
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "remote", "version": "1.0.0"}
        }),
        "tools/list" => json!({"tools": [
            {"name": "echo", "description": "Echo, remotely.",
             "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
            {"name": "whoami", "description": "The Authorization header this server received.",
             "inputSchema": {"type": "object", "properties": {}}},
            {"name": "slow", "description": "Answers after three seconds.",
             "inputSchema": {"type": "object", "properties": {}}}
        ]}),
        "tools/call" => {
            let arguments = &message["params"]["arguments"];
            let structured = match message["params"]["name"].as_str() {
                Some("echo") => json!({"text": arguments["text"], "via": "remote"}),
                Some("whoami") => json!({"authorization": authorization}),
                // A sidecar of another version: its start_render answer lacks the job id.
                Some("start_render") => json!({"state": "queued"}),
                Some("slow") => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    json!({"slept": 3})
                }
                _ => {
                    return Json(json!({"jsonrpc": "2.0", "id": id,
                        "error": {"code": -32602, "message": "unknown tool"}}))
                    .into_response();
                }
            };
            json!({"content": [{"type": "text", "text": structured.to_string()}],
                   "structuredContent": structured, "isError": false})
        }
        "ping" => json!({}),
        _ => {
            return Json(json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": "method not found"}}))
            .into_response();
        }
    };
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

/// How [`FakeModel`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Ask for `add {a: 2, b: 3}`, then answer with the sum it was sent back.
    AddThenAnswer,
    /// Ask for `add` every time.
    NeverAnswer,
    /// Ask for `add` with `[2, 3]` as arguments (not an object), then, once a tool result came
    /// back, with `{a: 2, b: 3}`; then answer with the sum.
    ArrayArgumentsFirst,
    /// Reply with no candidates / choices.
    Malformed,
}

/// Every request body a [`FakeModel`] got, with its Authorization header.
pub type ModelRequests = Arc<Mutex<Vec<(Option<String>, Value)>>>;

#[derive(Clone)]
pub struct FakeModel {
    pub url: String,
    pub script: Arc<Mutex<Script>>,
    pub requests: ModelRequests,
}

type ModelState = (Arc<Mutex<Script>>, ModelRequests);

impl FakeModel {
    pub async fn start() -> Self {
        let script = Arc::new(Mutex::new(Script::AddThenAnswer));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/v1/projects/{project}/locations/{location}/publishers/google/models/{action}",
                post(vertex_generate),
            )
            .route("/chat/completions", post(openai_completions))
            .with_state((script.clone(), requests.clone()));
        Self {
            url: format!("http://{}", serve(app).await),
            script,
            requests,
        }
    }

    pub fn set(&self, script: Script) {
        *self.script.lock().unwrap() = script;
        self.requests.lock().unwrap().clear();
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| body.clone())
            .collect()
    }
}

/// Keeps the request (its `Authorization` and body) and returns the script to answer it by.
fn record_model_request(
    script: &Mutex<Script>,
    requests: &ModelRequests,
    headers: &HeaderMap,
    body: &Value,
) -> Script {
    requests
        .lock()
        .unwrap()
        .push((header(headers, "authorization"), body.clone()));
    *script.lock().unwrap()
}

async fn vertex_generate(
    State((script, requests)): State<ModelState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let script = record_model_request(&script, &requests, &headers, &body);
    // The function responses this request carries, in order.
    let answered: Vec<Value> = body["contents"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|content| content["parts"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part.get("functionResponse").cloned())
        .collect();
    let call = |args: Value| {
        json!({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "add", "args": args}}]}, "finishReason": "STOP"}]})
    };
    let answer = |response: &Value| {
        json!({"candidates": [{"content": {"role": "model",
        "parts": [{"text": format!("2 + 3 = {}", response["response"]["sum"])}]}, "finishReason": "STOP"}]})
    };
    Json(match (script, answered.as_slice()) {
        (Script::Malformed, _) => json!({"candidates": []}),
        (Script::NeverAnswer, _) | (Script::AddThenAnswer, []) => call(json!({"a": 2, "b": 3})),
        (Script::ArrayArgumentsFirst, []) => call(json!([2, 3])),
        (Script::ArrayArgumentsFirst, [_]) => call(json!({"a": 2, "b": 3})),
        (_, [.., last]) => answer(last),
    })
}

async fn openai_completions(
    State((script, requests)): State<ModelState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let script = record_model_request(&script, &requests, &headers, &body);
    // The tool results this request carries, in order.
    let answered: Vec<Value> = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|message| message["role"] == "tool")
        .cloned()
        .collect();
    let call = |id: &str, arguments: &str| {
        json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": null,
        "tool_calls": [{"id": id, "type": "function",
                        "function": {"name": "add", "arguments": arguments}}]}}]})
    };
    let answer = |tool: &Value| {
        let result: Value =
            serde_json::from_str(tool["content"].as_str().unwrap_or("{}")).unwrap_or_default();
        json!({"choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": format!("2 + 3 = {}", result["sum"])}}]})
    };
    Json(match (script, answered.as_slice()) {
        (Script::Malformed, _) => json!({"choices": []}),
        (Script::NeverAnswer, _) | (Script::AddThenAnswer, []) => {
            call("call_1", r#"{"a": 2, "b": 3}"#)
        }
        (Script::ArrayArgumentsFirst, []) => call("call_1", "[2, 3]"),
        (Script::ArrayArgumentsFirst, [_]) => call("call_2", r#"{"a": 2, "b": 3}"#),
        (_, [.., last]) => answer(last),
    })
}

/// One JSON-RPC request that went through an [`McpRecorder`].
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// `params.name` (a tool) or `params.taskId` (a task), when there is one.
    pub target: Option<String>,
    pub params: Value,
    /// The `Mcp-Name` header it carried.
    pub mcp_name: Option<String>,
    pub at: std::time::Instant,
}

impl RecordedRequest {
    /// Whether its `_meta` declares the MCP tasks extension.
    pub fn declares_tasks(&self) -> bool {
        self.params["_meta"]["io.modelcontextprotocol/clientCapabilities"]["extensions"]
            .get("io.modelcontextprotocol/tasks")
            .is_some()
    }
}

/// A loopback proxy in front of an MCP server (and its `/files`) that records every JSON-RPC
/// request passing through; with `hide_tasks`, it also removes the tasks extension from the
/// capabilities the server declares, so that clients see a server of the time before tasks.
#[derive(Clone)]
pub struct McpRecorder {
    /// The proxied MCP endpoint: `http://host:port/mcp`.
    pub url: String,
    pub requests: Arc<Mutex<Vec<RecordedRequest>>>,
}

#[derive(Clone)]
struct RecorderState {
    target: String,
    hide_tasks: bool,
    http: reqwest::Client,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl McpRecorder {
    /// Forwards everything to `target`, an origin such as `http://127.0.0.1:3000`.
    pub async fn start(target: String, hide_tasks: bool) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = RecorderState {
            target,
            hide_tasks,
            http: reqwest::Client::new(),
            requests: requests.clone(),
        };
        let app = Router::new().fallback(forward).with_state(state);
        Self {
            url: format!("http://{}/mcp", serve(app).await),
            requests,
        }
    }

    /// The requests of `method` (and, when given, for tool or task `target`).
    pub fn recorded(&self, method: &str, target: Option<&str>) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|request| {
                request.method == method
                    && target.is_none_or(|target| request.target.as_deref() == Some(target))
            })
            .cloned()
            .collect()
    }
}

async fn forward(
    State(state): State<RecorderState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let message: Value = serde_json::from_slice(&body).unwrap_or_default();
    let rpc_method = message["method"].as_str().unwrap_or_default().to_owned();
    if message.get("id").is_some() && !rpc_method.is_empty() {
        let params = message["params"].clone();
        let target = params["name"]
            .as_str()
            .or_else(|| params["taskId"].as_str())
            .map(str::to_owned);
        state.requests.lock().unwrap().push(RecordedRequest {
            method: rpc_method.clone(),
            target,
            params,
            mcp_name: header(&headers, "mcp-name"),
            at: std::time::Instant::now(),
        });
    }
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    let mut request = state
        .http
        .request(method, format!("{}{path}", state.target));
    for (name, value) in &headers {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            request = request.header(name, value);
        }
    }
    let Ok(answer) = request.body(body).send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let mut answer_headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            answer_headers.insert(name, value.clone());
        }
    }
    let mut bytes = answer.bytes().await.unwrap_or_default();
    if state.hide_tasks
        && rpc_method == "initialize"
        && let Ok(mut reply) = serde_json::from_slice::<Value>(&bytes)
        && let Some(extensions) = reply
            .pointer_mut("/result/capabilities/extensions")
            .and_then(Value::as_object_mut)
    {
        extensions.remove("io.modelcontextprotocol/tasks");
        bytes = reply.to_string().into();
    }
    (status, answer_headers, bytes).into_response()
}
