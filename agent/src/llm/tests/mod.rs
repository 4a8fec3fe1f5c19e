//! Tests of the tool loop against local fake servers on 127.0.0.1 that speak
//! each provider's wire format and record what they receive. Nothing here
//! talks to a real Google or OpenAI endpoint.

mod images;
mod loop_bounds;
mod openai;
mod vertex;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

// Re-exported to the test modules below through their `use super::*`.
use super::{
    ChatMessage, ChatModel, ChatReply, LlmConfig, LlmError, Role, ToolCallRecord, ToolRunner,
    ToolSpec, VertexAuth,
};

/// Generous timeout for tests that are not about timeouts.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One request a fake server received.
#[derive(Clone, Debug)]
struct RecordedRequest {
    method: Method,
    path: String,
    headers: HeaderMap,
    /// The body as JSON (`Value::Null` when it was not JSON).
    body: Value,
}

impl RecordedRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// A canned HTTP reply.
#[derive(Clone, Debug)]
struct CannedReply {
    status: StatusCode,
    body: String,
    delay: Duration,
}

impl CannedReply {
    /// 200 with a JSON body.
    fn json(body: Value) -> Self {
        Self::raw(&body.to_string())
    }

    /// 200 with any body, JSON or not.
    fn raw(body: &str) -> Self {
        Self {
            status: StatusCode::OK,
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    /// An error status with a body.
    fn status(status: u16, body: &str) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            ..Self::raw(body)
        }
    }

    /// The same reply, sent only after `delay`.
    fn delayed(self, delay: Duration) -> Self {
        Self { delay, ..self }
    }
}

/// Requests received so far and the replies to give.
#[derive(Default)]
struct FakeModelState {
    /// The n-th request gets the n-th reply; the last one repeats forever.
    script: Vec<CannedReply>,
    requests: Vec<RecordedRequest>,
}

/// A fake model endpoint: answers any request from a script and records it.
struct FakeModel {
    base_url: String,
    state: Arc<Mutex<FakeModelState>>,
}

impl FakeModel {
    async fn start(script: Vec<CannedReply>) -> Self {
        assert!(!script.is_empty(), "a fake model needs at least one reply");
        let state = Arc::new(Mutex::new(FakeModelState {
            script,
            requests: Vec::new(),
        }));
        let router = Router::new()
            .fallback(answer_from_script)
            .with_state(Arc::clone(&state));
        Self {
            base_url: serve(router).await,
            state,
        }
    }

    fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }
}

async fn answer_from_script(
    State(state): State<Arc<Mutex<FakeModelState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut state = state.lock().unwrap();
        state.requests.push(record(method, &uri, headers, &body));
        let index = (state.requests.len() - 1).min(state.script.len() - 1);
        state.script[index].clone()
    };
    tokio::time::sleep(reply.delay).await;
    (
        reply.status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response()
}

/// The access token the fake metadata server hands out.
const METADATA_ACCESS_TOKEN: &str = "ya29.fake-metadata-token";

/// The metadata server's access-token path for the default service account.
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// A fake GCE / Cloud Run metadata server that hands out access tokens.
struct FakeMetadataServer {
    base_url: String,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl FakeMetadataServer {
    async fn start() -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new()
            .fallback(answer_metadata)
            .with_state(Arc::clone(&requests));
        Self {
            base_url: serve(router).await,
            requests,
        }
    }

    /// `host:port`, the form `GCE_METADATA_HOST` takes.
    fn host(&self) -> &str {
        self.base_url.trim_start_matches("http://")
    }

    fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Asserts that at least one well-formed access-token request arrived.
    fn assert_token_was_requested(&self) {
        let requests = self.requests();
        let token_request = requests
            .iter()
            .find(|request| request.path == METADATA_TOKEN_PATH)
            .unwrap_or_else(|| panic!("no access-token request; got {requests:?}"));
        assert_eq!(token_request.method, Method::GET);
        assert_eq!(token_request.header("metadata-flavor"), Some("Google"));
    }
}

async fn answer_metadata(
    State(requests): State<Arc<Mutex<Vec<RecordedRequest>>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let flavored = headers
        .get("metadata-flavor")
        .is_some_and(|value| value == "Google");
    requests
        .lock()
        .unwrap()
        .push(record(method, &uri, headers, &body));
    if uri.path() != METADATA_TOKEN_PATH {
        return StatusCode::NOT_FOUND.into_response();
    }
    if !flavored {
        return (StatusCode::FORBIDDEN, "missing Metadata-Flavor header").into_response();
    }
    axum::Json(json!({
        "access_token": METADATA_ACCESS_TOKEN,
        "expires_in": 3599,
        "token_type": "Bearer"
    }))
    .into_response()
}

fn record(method: Method, uri: &Uri, headers: HeaderMap, body: &[u8]) -> RecordedRequest {
    RecordedRequest {
        method,
        path: uri.path().to_owned(),
        headers,
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
    }
}

/// Serves `router` on an ephemeral loopback port; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

/// A tool runner that records its calls and always returns the same result.
struct RecordingRunner {
    result: Value,
    calls: Mutex<Vec<(String, Value)>>,
}

impl RecordingRunner {
    fn returning(result: Value) -> Self {
        Self {
            result,
            calls: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().unwrap().clone()
    }
}

impl ToolRunner for RecordingRunner {
    fn call<'a>(&'a self, name: &'a str, arguments: Value) -> BoxFuture<'a, Value> {
        self.calls
            .lock()
            .unwrap()
            .push((name.to_owned(), arguments));
        futures::future::ready(self.result.clone()).boxed()
    }
}

/// The `add` tool with a schema shaped like `schemars` output.
fn add_tool() -> ToolSpec {
    ToolSpec {
        name: "add".to_owned(),
        description: "Adds two numbers.".to_owned(),
        parameters: json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "AddArgs",
            "type": "object",
            "properties": {
                "a": { "$ref": "#/$defs/Operand" },
                "b": { "$ref": "#/$defs/Operand" }
            },
            "required": ["a", "b"],
            "$defs": { "Operand": { "type": "number", "description": "A summand." } }
        }),
    }
}

/// What [`add_tool`]'s schema must look like on the wire.
fn add_tool_model_schema() -> Value {
    json!({
        "title": "AddArgs",
        "type": "object",
        "properties": {
            "a": { "type": "number", "description": "A summand." },
            "b": { "type": "number", "description": "A summand." }
        },
        "required": ["a", "b"]
    })
}

/// Asks `chat_model` "What is 2 + 3?" with [`add_tool`], run by `runner` (which answers
/// `{"sum": 5}`), and checks the round trip: one `add {a: 2, b: 3}` call, run once, then the
/// model's "2 + 3 = 5" on the second turn.
async fn assert_adds_two_and_three(chat_model: &ChatModel, runner: &RecordingRunner) {
    let reply = chat_model
        .chat(&user_says("What is 2 + 3?"), &[add_tool()], runner, 4)
        .await
        .unwrap();
    assert_eq!(
        reply,
        ChatReply {
            reply: "2 + 3 = 5".to_owned(),
            tool_calls: vec![ToolCallRecord {
                name: "add".to_owned(),
                arguments: json!({ "a": 2, "b": 3 }),
                result: json!({ "sum": 5 }),
            }],
            turns: 2,
        }
    );
    assert_eq!(
        runner.calls(),
        vec![("add".to_owned(), json!({ "a": 2, "b": 3 }))]
    );
}

fn user_says(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage {
        role: Role::User,
        content: text.to_owned(),
    }]
}
