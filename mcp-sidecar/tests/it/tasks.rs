//! Render jobs as MCP tasks (extension `io.modelcontextprotocol/tasks`): the task view over
//! the Redis job records, across sidecar processes sharing one Redis.
//!
//! Spoken as a 2026-07-28 client would, in raw HTTP ([`TaskClient`]): every request names its
//! method (and tool or task) in headers and carries its client capabilities in `_meta`, so a
//! test decides per request whether the tasks extension is declared.
// Helpers outside #[test] fns panic on purpose.
#![allow(clippy::unwrap_used)]
// The heavy-test guard is held for a whole test, on purpose, across awaits.
#![allow(clippy::await_holding_lock)]

use std::{
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use crate::common::{
    cluster::{Cluster, logged_successes},
    initialize_body,
    jobs::{chart_spec, decode_png, download},
    mcp_post, one_heavy_test_at_a_time, spawn_sidecar,
};

const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
const PROTOCOL_VERSION: &str = "2026-07-28";

// ---- a raw 2026-07-28 client ---------------------------------------------------------------

/// The HTTP status of an answer and every JSON-RPC message in it: one for a JSON answer, the
/// notifications and then the response for an SSE one.
struct Answer {
    status: u16,
    messages: Vec<Value>,
}

impl Answer {
    /// The JSON-RPC response (the message with an id).
    fn response(&self) -> &Value {
        self.messages
            .iter()
            .find(|message| message.get("id").is_some())
            .unwrap_or_else(|| panic!("no response among {:?}", self.messages))
    }

    /// The response's `result`; panics on an error.
    fn result(&self) -> &Value {
        let response = self.response();
        assert!(
            response.get("result").is_some(),
            "expected a result: HTTP {} {response}",
            self.status
        );
        &response["result"]
    }

    /// The response's `error`; panics on a result.
    fn error(&self) -> &Value {
        let response = self.response();
        assert!(
            response.get("error").is_some(),
            "expected an error: HTTP {} {response}",
            self.status
        );
        &response["error"]
    }

    /// The notifications named `method`, in the order they came.
    fn notifications(&self, method: &str) -> Vec<&Value> {
        self.messages
            .iter()
            .filter(|message| message["method"] == method && message.get("id").is_none())
            .collect()
    }
}

/// Whether a request declares the tasks extension in its `_meta` client capabilities.
#[derive(Clone, Copy, PartialEq)]
enum Extension {
    Declared,
    Undeclared,
}

/// What a request sends in `Mcp-Name`.
#[derive(Clone, Copy)]
enum McpName<'a> {
    /// What a conforming client sends: the tool name, or the task id for `tasks/*`.
    Conforming,
    Missing,
    Value(&'a str),
}

/// A raw-HTTP MCP client speaking 2026-07-28 (stateless: no `initialize`, no session).
pub(crate) struct TaskClient {
    url: String,
    http: reqwest::Client,
    next_id: AtomicU64,
}

impl TaskClient {
    pub(crate) fn new(mcp_url: &str) -> Self {
        Self {
            url: mcp_url.to_owned(),
            http: reqwest::Client::new(),
            next_id: AtomicU64::new(1),
        }
    }

    fn request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The `_meta` every 2026-07-28 request carries.
    fn meta(extension: Extension) -> Value {
        let capabilities = match extension {
            Extension::Declared => json!({ "extensions": { TASKS_EXTENSION: {} } }),
            Extension::Undeclared => json!({}),
        };
        json!({
            "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
            "io.modelcontextprotocol/clientInfo": { "name": "tasks-it", "version": "1" },
            "io.modelcontextprotocol/clientCapabilities": capabilities,
        })
    }

    /// The POST for a request `id` of `method`: 2026-07-28 headers and `params._meta` (merged
    /// with any `_meta` already in `params`).
    fn post(
        &self,
        id: Value,
        method: &str,
        mut params: Value,
        extension: Extension,
        name: McpName<'_>,
    ) -> reqwest::RequestBuilder {
        let conforming_name = match method {
            "tools/call" => params["name"].as_str().map(str::to_owned),
            "tasks/get" | "tasks/update" | "tasks/cancel" => {
                params["taskId"].as_str().map(str::to_owned)
            }
            _ => None,
        };
        let mut meta = Self::meta(extension);
        if let Some(Value::Object(extra)) = params.get("_meta") {
            for (key, value) in extra {
                meta[key] = value.clone();
            }
        }
        params["_meta"] = meta;
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .header("mcp-method", method);
        let name = match name {
            McpName::Conforming => conforming_name,
            McpName::Missing => None,
            McpName::Value(value) => Some(value.to_owned()),
        };
        if let Some(name) = name {
            request = request.header("mcp-name", name);
        }
        request.json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
    }

    /// Sends a request and reads its whole answer (JSON, or an SSE stream to its end).
    async fn send(
        &self,
        method: &str,
        params: Value,
        extension: Extension,
        name: McpName<'_>,
    ) -> Answer {
        let id = json!(self.request_id());
        let response = self
            .post(id, method, params, extension, name)
            .send()
            .await
            .unwrap_or_else(|error| panic!("{method}: {error}"));
        let status = response.status().as_u16();
        let streamed = is_event_stream(&response);
        let body = response.bytes().await.unwrap();
        let messages = if streamed {
            let mut events = SseEvents::default();
            events.feed(&body);
            events.ready.into_iter().collect()
        } else {
            vec![serde_json::from_slice(&body).unwrap_or_else(|error| {
                panic!(
                    "{method}: HTTP {status} body is not JSON ({error}): {}",
                    String::from_utf8_lossy(&body)
                )
            })]
        };
        Answer { status, messages }
    }

    /// `tools/call render` from a client that declares the extension: the `CreateTaskResult`.
    pub(crate) async fn call_render_as_task(&self, spec: Value) -> Value {
        let answer = self
            .send(
                "tools/call",
                json!({"name": "render", "arguments": {"spec": spec}}),
                Extension::Declared,
                McpName::Conforming,
            )
            .await;
        let created = answer.result().clone();
        assert_eq!(
            created["resultType"], "task",
            "a CreateTaskResult: {created}"
        );
        created
    }

    /// `tasks/get`, answered with a task (panics on an error).
    pub(crate) async fn get(&self, task_id: &str) -> Value {
        self.send(
            "tasks/get",
            json!({ "taskId": task_id }),
            Extension::Declared,
            McpName::Conforming,
        )
        .await
        .result()
        .clone()
    }

    /// `tasks/cancel`, answered with its acknowledgement (panics on an error).
    async fn cancel(&self, task_id: &str) -> Value {
        self.send(
            "tasks/cancel",
            json!({ "taskId": task_id }),
            Extension::Declared,
            McpName::Conforming,
        )
        .await
        .result()
        .clone()
    }

    /// Polls `tasks/get` (every `pollIntervalMs`) until the task's status is one of `wanted`.
    async fn wait_for(&self, task_id: &str, wanted: &[&str], limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let task = self.get(task_id).await;
            if wanted.contains(&task["status"].as_str().unwrap_or_default()) {
                return task;
            }
            assert!(
                Instant::now() < deadline,
                "task {task_id} not {wanted:?} after {limit:?}: {task}"
            );
            // As the extension asks of a client: poll no faster than the server suggests.
            let interval = task["pollIntervalMs"]
                .as_u64()
                .unwrap_or(500)
                .clamp(10, 1000);
            tokio::time::sleep(Duration::from_millis(interval)).await;
        }
    }

    /// Polls `tasks/get` until the task is terminal.
    pub(crate) async fn wait_terminal(&self, task_id: &str, limit: Duration) -> Value {
        self.wait_for(task_id, &["completed", "failed", "cancelled"], limit)
            .await
    }

    /// Opens `subscriptions/listen` for `task_ids` with request id `id`.
    pub(crate) async fn listen(&self, id: &str, task_ids: &[&str]) -> Listener {
        let response = self
            .post(
                json!(id),
                "subscriptions/listen",
                json!({ "notifications": { "taskIds": task_ids } }),
                Extension::Declared,
                McpName::Conforming,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "listen answered");
        assert!(is_event_stream(&response), "listen answers with SSE");
        Listener {
            body: Box::pin(response.bytes_stream()),
            events: SseEvents::default(),
        }
    }
}

fn is_event_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("content-type")
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"))
}

/// An SSE parser: bytes in, the JSON of each event's `data` out (comments ignored).
#[derive(Default)]
struct SseEvents {
    buffer: String,
    ready: std::collections::VecDeque<Value>,
}

impl SseEvents {
    fn feed(&mut self, bytes: &[u8]) {
        self.buffer
            .push_str(&String::from_utf8_lossy(bytes).replace("\r\n", "\n"));
        while let Some(end) = self.buffer.find("\n\n") {
            let event: String = self.buffer.drain(..end + 2).collect();
            let data: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|data| data.strip_prefix(' ').unwrap_or(data))
                .collect();
            if !data.is_empty() {
                let data = data.join("\n");
                self.ready.push_back(
                    serde_json::from_str(&data)
                        .unwrap_or_else(|error| panic!("SSE data is not JSON ({error}): {data}")),
                );
            }
        }
    }
}

/// An open `subscriptions/listen` stream.
pub(crate) struct Listener {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    events: SseEvents,
}

impl Listener {
    /// The next message, waiting at most `limit`.
    pub(crate) async fn next(&mut self, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(message) = self.events.ready.pop_front() {
                return message;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(bytes))) => self.events.feed(&bytes),
                Ok(Some(Err(error))) => panic!("listen stream broke: {error}"),
                Ok(None) => panic!("listen stream ended"),
                Err(_) => panic!("no message on the listen stream within {limit:?}"),
            }
        }
    }

    /// The next `notifications/tasks` for `task_id` (its params).
    async fn next_task(&mut self, task_id: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let message = self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await;
            assert_eq!(message["method"], "notifications/tasks", "{message}");
            if message["params"]["taskId"] == task_id {
                return message["params"].clone();
            }
        }
    }

    /// Reads `notifications/tasks` for `task_id` until one is terminal; returns them all.
    pub(crate) async fn until_terminal(&mut self, task_id: &str, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut seen = vec![];
        loop {
            let task = self
                .next_task(task_id, deadline.saturating_duration_since(Instant::now()))
                .await;
            let terminal = is_terminal(&task);
            seen.push(task);
            if terminal {
                return seen;
            }
        }
    }
}

fn is_terminal(task: &Value) -> bool {
    matches!(
        task["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}

pub(crate) fn task_id(task: &Value) -> String {
    task["taskId"].as_str().expect("taskId").to_owned()
}

/// An SVG whose render takes seconds in a debug build (large blurred layers), so a test can
/// act while it runs; `layers` scales the work.
pub(crate) fn slow_spec(layers: u32) -> Value {
    let mut svg = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1024" height="768"><defs><filter id="b"><feGaussianBlur stdDeviation="40"/></filter></defs>"#,
    );
    for layer in 0..layers {
        let x = 100 + layer * 37 % 600;
        svg.push_str(&format!(
            r#"<g filter="url(#b)" opacity="0.6"><rect x="{x}" y="40" width="600" height="500" fill="teal"/><circle cx="500" cy="400" r="300" fill="orange"/></g>"#
        ));
    }
    svg.push_str("</svg>");
    json!({"kind": "svg", "svg": svg, "width": 1024, "height": 768})
}

// ---- assertions ----------------------------------------------------------------------------

/// How long one wait of these tests may take: generous, since debug renders on a shared
/// 2-core machine are slow, but bounded.
pub(crate) const LIMIT: Duration = Duration::from_secs(90);

/// Asserts what every task carries: a job id as task id, RFC 3339 times (the last update not
/// before the creation), and positive integer `ttlMs` and `pollIntervalMs`.
fn assert_task_fields(task: &Value) {
    let id = task["taskId"].as_str().unwrap_or_default();
    assert!(
        id.len() == 32 && id.bytes().all(|byte| byte.is_ascii_hexdigit()),
        "taskId is a job id: {task}"
    );
    let time = |field: &str| {
        let text = task[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is a string: {task}"));
        humantime::parse_rfc3339(text)
            .unwrap_or_else(|error| panic!("{field} `{text}` is not RFC 3339 ({error}): {task}"))
    };
    assert!(time("lastUpdatedAt") >= time("createdAt"), "{task}");
    for field in ["ttlMs", "pollIntervalMs"] {
        assert!(
            task[field].as_u64().is_some_and(|value| value > 0),
            "{field} is a positive integer: {task}"
        );
    }
}

/// The default `TASK_INLINE_IMAGE_MAX_BYTES`: the largest PNG a result carries inline.
const INLINE_IMAGE_MAX_BYTES: u64 = 256 * 1024;

/// Checks a finished PNG render's `CallToolResult` and returns its structured content and the
/// bytes of its inline image: the text block mirrors the structured content, one
/// `resource_link` points at the signed URL, one `image` block carries the PNG itself when it
/// is at most [`INLINE_IMAGE_MAX_BYTES`], none when larger.
pub(crate) fn assert_png_render_result(result: &Value, job_id: &str) -> (Value, Option<Vec<u8>>) {
    assert_eq!(result["isError"], false, "{result}");
    let structured = result["structuredContent"].clone();
    assert_eq!(structured["job_id"], job_id, "{structured}");
    assert_eq!(structured["content_type"], "image/png", "{structured}");
    let url = structured["url"].as_str().expect("a url");
    let expires_at = structured["expires_at"].as_str().expect("expires_at");
    assert!(humantime::parse_rfc3339(expires_at).is_ok(), "{expires_at}");
    let bytes = structured["bytes"].as_u64().expect("bytes");
    let sha256 = structured["sha256"].as_str().expect("sha256");

    let blocks = result["content"].as_array().expect("content blocks");
    let of_type = |kind: &str| -> Vec<&Value> {
        blocks
            .iter()
            .filter(|block| block["type"] == kind)
            .collect()
    };
    let texts = of_type("text");
    assert_eq!(texts.len(), 1, "one text block: {result}");
    let text: Value = serde_json::from_str(texts[0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, structured, "the text block mirrors structuredContent");
    let links = of_type("resource_link");
    assert_eq!(links.len(), 1, "one resource_link: {result}");
    assert_eq!(links[0]["uri"], url, "the link is the download URL");
    assert_eq!(links[0]["mimeType"], "image/png");
    assert_eq!(links[0]["size"], bytes);
    let images = of_type("image");
    if bytes > INLINE_IMAGE_MAX_BYTES {
        assert!(
            images.is_empty(),
            "no inline image over the limit: {bytes} bytes"
        );
        return (structured, None);
    }
    assert_eq!(images.len(), 1, "one inline image: {result}");
    assert_eq!(images[0]["mimeType"], "image/png");
    let png = base64::engine::general_purpose::STANDARD
        .decode(images[0]["data"].as_str().expect("image data"))
        .expect("image data is base64");
    assert_eq!(png.len() as u64, bytes, "the inline image is the whole PNG");
    assert_eq!(mcp_sidecar::digest::sha256_hex(&png), sha256);
    (structured, Some(png))
}

/// Asserts a `-32021` naming the tasks extension as the capability to declare.
fn assert_missing_extension(answer: &Answer) {
    let error = answer.error();
    assert_eq!(error["code"], -32021, "{error}");
    assert_eq!(
        error["data"]["requiredCapabilities"]["extensions"][TASKS_EXTENSION],
        json!({}),
        "{error}"
    );
    assert_eq!(
        answer.status, 400,
        "-32021 is answered with HTTP 400: {error}"
    );
}

// ---- one sidecar: the protocol -------------------------------------------------------------

#[tokio::test]
async fn a_render_call_without_the_extension_reports_progress_then_answers_with_the_render() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = TaskClient::new(&sidecar.mcp_url());

    let answer = client
        .send(
            "tools/call",
            json!({"name": "render", "arguments": {"spec": chart_spec(320, 240, "png")},
                   "_meta": {"progressToken": "render-1"}}),
            Extension::Undeclared,
            McpName::Conforming,
        )
        .await;
    let quiet = client
        .send(
            "tools/call",
            json!({"name": "render", "arguments": {"spec": chart_spec(100, 80, "svg")}}),
            Extension::Undeclared,
            McpName::Conforming,
        )
        .await;

    assert_eq!(answer.status, 200);
    let result = answer.result();
    assert_eq!(result["resultType"], "complete", "not a task: {result}");
    let job = result["structuredContent"]["job_id"]
        .as_str()
        .expect("job_id");
    let (structured, png) = assert_png_render_result(result, job);
    let png = png.expect("a small PNG comes inline");
    let pixmap = decode_png(&png);
    assert_eq!((pixmap.width(), pixmap.height()), (320, 240));
    assert_eq!(download(&structured).await, png);
    let progress = answer.notifications("notifications/progress");
    assert!(!progress.is_empty(), "progress was reported");
    let mut last = -1.0;
    for notification in &progress {
        let params = &notification["params"];
        assert_eq!(params["progressToken"], "render-1", "{params}");
        assert_eq!(params["total"], 4.0, "{params}");
        assert!(params["message"].as_str().is_some_and(|m| !m.is_empty()));
        let value = params["progress"].as_f64().unwrap();
        assert!(value > last, "progress increases: {progress:?}");
        last = value;
    }
    // Without a progress token: the finished render, no notifications.
    assert!(quiet.notifications("notifications/progress").is_empty());
    let svg = quiet.result();
    assert_eq!(svg["isError"], false, "{svg}");
    assert_eq!(svg["structuredContent"]["content_type"], "image/svg+xml");
    let kinds: Vec<&str> = svg["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|block| block["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["text", "resource_link"],
        "no inline image for an SVG"
    );
    download(&svg["structuredContent"]).await;
}

#[tokio::test]
async fn tasks_requests_from_a_client_without_the_extension_are_refused_naming_it() {
    let sidecar = spawn_sidecar(|config| config.render_workers = Some(0)).await;
    let client = TaskClient::new(&sidecar.mcp_url());
    let task = task_id(&client.call_render_as_task(chart_spec(50, 50, "svg")).await);

    for (method, params) in [
        ("tasks/get", json!({ "taskId": task })),
        ("tasks/cancel", json!({ "taskId": task })),
        (
            "tasks/update",
            json!({ "taskId": task, "inputResponses": {} }),
        ),
    ] {
        let answer = client
            .send(method, params, Extension::Undeclared, McpName::Conforming)
            .await;
        assert_missing_extension(&answer);
    }

    // The refused cancel did nothing.
    assert_eq!(client.get(&task).await["status"], "working");
}

#[tokio::test]
async fn listening_for_tasks_without_the_extension_is_refused_naming_it() {
    let sidecar = spawn_sidecar(|config| config.render_workers = Some(0)).await;
    let client = TaskClient::new(&sidecar.mcp_url());
    let task = task_id(&client.call_render_as_task(chart_spec(50, 50, "svg")).await);

    let answer = client
        .send(
            "subscriptions/listen",
            json!({ "notifications": { "taskIds": [task] } }),
            Extension::Undeclared,
            McpName::Conforming,
        )
        .await;

    assert_missing_extension(&answer);
}

#[tokio::test]
async fn unknown_and_malformed_task_ids_are_invalid_params() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = TaskClient::new(&sidecar.mcp_url());
    let long = "a".repeat(1000);
    let ids = [
        "0123456789abcdef0123456789abcdef", // well-formed, never created
        "0123456789ABCDEF0123456789ABCDEF", // job ids are lower-case
        "bogus",
        "../../etc/passwd",
        long.as_str(),
    ];

    for id in ids {
        for (method, params) in [
            ("tasks/get", json!({ "taskId": id })),
            ("tasks/cancel", json!({ "taskId": id })),
            (
                "tasks/update",
                json!({ "taskId": id, "inputResponses": {} }),
            ),
        ] {
            let answer = client
                .send(method, params, Extension::Declared, McpName::Conforming)
                .await;
            let error = answer.error();
            assert_eq!(error["code"], -32602, "{method} {id:.40}: {error}");
            if method == "tasks/get" {
                assert!(
                    error["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("Failed to retrieve task"),
                    "{error}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_task_id_that_is_not_a_string_or_is_missing_is_invalid_params() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = TaskClient::new(&sidecar.mcp_url());
    let known = "0123456789abcdef0123456789abcdef";

    let mut answers = vec![];
    for (method, params, name) in [
        ("tasks/get", json!({ "taskId": 42 }), McpName::Value("42")),
        ("tasks/get", json!({}), McpName::Missing),
        ("tasks/cancel", json!({ "taskId": null }), McpName::Missing),
        (
            "tasks/update",
            json!({ "taskId": ["a"], "inputResponses": {} }),
            McpName::Missing,
        ),
        // `inputResponses` is required too.
        (
            "tasks/update",
            json!({ "taskId": known }),
            McpName::Conforming,
        ),
    ] {
        let answer = client
            .send(method, params.clone(), Extension::Declared, name)
            .await;
        answers.push(format!("{method} {params}: {}", answer.error()));
    }

    // The methods exist; their params are what is wrong.
    let wrong: Vec<&String> = answers
        .iter()
        .filter(|answer| !answer.contains(r#""code":-32602"#))
        .collect();
    assert!(wrong.is_empty(), "not -32602 (Invalid params): {wrong:#?}");
}

#[tokio::test]
async fn mcp_name_must_match_the_task_id_when_present_and_may_be_left_out() {
    let sidecar = spawn_sidecar(|config| config.render_workers = Some(0)).await;
    let client = TaskClient::new(&sidecar.mcp_url());
    let task = task_id(&client.call_render_as_task(chart_spec(50, 50, "svg")).await);
    let other = "0123456789abcdef0123456789abcdef";

    let mismatched_get = client
        .send(
            "tasks/get",
            json!({ "taskId": task }),
            Extension::Declared,
            McpName::Value(other),
        )
        .await;
    let mismatched_cancel = client
        .send(
            "tasks/cancel",
            json!({ "taskId": task }),
            Extension::Declared,
            McpName::Value(other),
        )
        .await;
    let unnamed_get = client
        .send(
            "tasks/get",
            json!({ "taskId": task }),
            Extension::Declared,
            McpName::Missing,
        )
        .await;
    let still_working = client.get(&task).await;
    let unnamed_cancel = client
        .send(
            "tasks/cancel",
            json!({ "taskId": task }),
            Extension::Declared,
            McpName::Missing,
        )
        .await;

    for mismatched in [&mismatched_get, &mismatched_cancel] {
        assert_eq!(mismatched.status, 400);
        assert_eq!(mismatched.error()["code"], -32020, "{}", mismatched.error());
    }
    assert_eq!(
        still_working["status"], "working",
        "the refused cancel did nothing"
    );
    assert_eq!(unnamed_get.status, 200);
    assert_eq!(unnamed_get.result()["taskId"], task.as_str());
    assert_eq!(unnamed_cancel.result(), &json!({"resultType": "complete"}));
    assert_eq!(client.get(&task).await["status"], "cancelled");
}

#[tokio::test]
async fn tasks_update_on_a_render_is_acknowledged_and_changes_nothing() {
    // A render never asks for input, so no `inputResponses` key is ever outstanding; the
    // extension has a server ignore such responses and acknowledge the request.
    let sidecar = spawn_sidecar(|config| config.render_workers = Some(0)).await;
    let client = TaskClient::new(&sidecar.mcp_url());
    let task = task_id(&client.call_render_as_task(chart_spec(50, 50, "svg")).await);
    let before = client.get(&task).await;

    let answer = client
        .send(
            "tasks/update",
            json!({ "taskId": task, "inputResponses": { "name": { "action": "accept" } } }),
            Extension::Declared,
            McpName::Conforming,
        )
        .await;

    assert_eq!(answer.result(), &json!({"resultType": "complete"}));
    assert_eq!(client.get(&task).await, before, "nothing changed");
}

#[tokio::test]
async fn server_discover_and_a_2025_11_25_initialize_both_advertise_the_tasks_extension() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = TaskClient::new(&sidecar.mcp_url());

    let discovered = client
        .send(
            "server/discover",
            json!({}),
            Extension::Declared,
            McpName::Conforming,
        )
        .await;
    let initialized: Value = mcp_post(&client.http, &client.url)
        .json(&initialize_body())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let discovered = discovered.result();
    assert_eq!(
        discovered["capabilities"]["extensions"][TASKS_EXTENSION],
        json!({}),
        "{discovered}"
    );
    assert!(
        discovered["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!(PROTOCOL_VERSION)),
        "{discovered}"
    );
    assert_eq!(initialized["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(
        initialized["result"]["capabilities"]["extensions"][TASKS_EXTENSION],
        json!({}),
        "{initialized}"
    );
}

#[tokio::test]
async fn a_render_that_fails_while_rendering_completes_with_is_error_as_the_call_would_answer() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = TaskClient::new(&sidecar.mcp_url());
    // Passes validation (a string that starts like SVG), fails when parsed for rendering.
    let spec = json!({"kind": "svg", "svg": "<svg xmlns='http://www.w3.org/2000/svg'><g></svg>",
                      "width": 40, "height": 40});

    let created = client.call_render_as_task(spec.clone()).await;
    let task = client.wait_terminal(&task_id(&created), LIMIT).await;
    let waited = client
        .send(
            "tools/call",
            json!({"name": "render", "arguments": {"spec": spec}}),
            Extension::Undeclared,
            McpName::Conforming,
        )
        .await;

    assert_eq!(created["status"], "working", "{created}");
    assert_task_fields(&created);
    assert_eq!(
        task["status"], "completed",
        "a tool error is not `failed`: {task}"
    );
    assert!(task.get("error").is_none(), "{task}");
    assert_task_fields(&task);
    let result = &task["result"];
    assert_eq!(result["isError"], true, "{result}");
    let message = result["structuredContent"]["error"].as_str().unwrap();
    assert!(message.contains("the SVG is not valid"), "{message}");
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, result["structuredContent"]);
    let waited = waited.result();
    assert_eq!(waited["isError"], true, "{waited}");
    assert_eq!(
        waited["structuredContent"], result["structuredContent"],
        "the task's result is what the call itself answers"
    );
}

// ---- several sidecar processes on one Redis ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_on_one_sidecar_completes_on_another_with_its_image_inline_and_downloadable()
{
    let cluster = Cluster::new();
    // Only A renders: B answers from Redis alone.
    let a = cluster.sidecar("2", &[]);
    let b = cluster.sidecar("0", &[]);
    let (on_a, on_b) = (TaskClient::new(&a.mcp_url()), TaskClient::new(&b.mcp_url()));

    let created = on_a.call_render_as_task(chart_spec(640, 480, "png")).await;
    let id = task_id(&created);
    let task = on_b.wait_terminal(&id, LIMIT).await;
    // Cancelling a finished task is acknowledged and changes nothing.
    let late_cancel = on_a.cancel(&id).await;
    let after_cancel = on_b.get(&id).await;

    assert_eq!(created["status"], "working", "{created}");
    assert_task_fields(&created);
    assert_eq!(task["resultType"], "complete", "{task}");
    assert_eq!(task["status"], "completed", "{task}");
    assert_task_fields(&task);
    assert_eq!(task["taskId"], created["taskId"]);
    assert_eq!(task["createdAt"], created["createdAt"]);
    let (structured, png) = assert_png_render_result(&task["result"], &id);
    let png = png.expect("a small PNG comes inline");
    let pixmap = decode_png(&png);
    assert_eq!((pixmap.width(), pixmap.height()), (640, 480));
    assert!(
        structured["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/files/{id}?", b.process.url(""))),
        "B signs a URL it serves: {structured}"
    );
    assert_eq!(
        download(&structured).await,
        png,
        "the download is the inline image"
    );
    assert_eq!(late_cancel, json!({"resultType": "complete"}));
    assert_eq!(
        unsigned(&after_cancel),
        unsigned(&task),
        "a completed task stays so"
    );
}

/// A task as a client compares it: without the envelope's `resultType` and `_meta`, and
/// without what each answer signs afresh (the URL and its expiry, wherever they appear).
fn unsigned(task: &Value) -> Value {
    let mut task = task.clone();
    let object = task.as_object_mut().unwrap();
    object.remove("resultType");
    object.remove("_meta");
    if let Some(result) = task.get_mut("result") {
        for field in ["url", "expires_at"] {
            result["structuredContent"][field] = json!("(signed)");
        }
        let structured = result["structuredContent"].clone();
        for block in result["content"].as_array_mut().into_iter().flatten() {
            match block["type"].as_str() {
                Some("text") => {
                    let mut text: Value =
                        serde_json::from_str(block["text"].as_str().unwrap()).unwrap();
                    for field in ["url", "expires_at"] {
                        text[field] = json!("(signed)");
                    }
                    assert_eq!(text, structured, "the text block mirrors structuredContent");
                    block["text"] = json!("(structuredContent)");
                }
                Some("resource_link") => block["uri"] = json!("(signed)"),
                _ => {}
            }
        }
    }
    task
}

/// Waits until the job behind `task` is running (read straight from Redis).
async fn wait_running(cluster: &Cluster, task: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let state = cluster.states(&[task.to_owned()]).remove(0).1;
        if state == "running" {
            return;
        }
        assert_eq!(state, "queued", "{task} ended before it was seen running");
        assert!(Instant::now() < deadline, "{task} never started running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_on_another_sidecar_gets_the_current_state_then_every_change_through_completed()
{
    let cluster = Cluster::new();
    let a = cluster.sidecar("1", &[]);
    let b = cluster.sidecar("0", &[]);
    let (on_a, on_b) = (TaskClient::new(&a.mcp_url()), TaskClient::new(&b.mcp_url()));
    let id = task_id(&on_a.call_render_as_task(slow_spec(1)).await);
    let unknown = "0123456789abcdef0123456789abcdef";

    let mut listener = on_b.listen("listen-1", &[&id, "bogus", unknown]).await;
    let ack = listener.next(LIMIT).await;
    let notifications = listener.until_terminal(&id, LIMIT).await;
    let polled = on_b.get(&id).await;
    // A listener that comes after the end still gets the terminal state.
    let mut late = on_b.listen("listen-2", &[&id]).await;
    let late_ack = late.next(LIMIT).await;
    let late_state = late.next(LIMIT).await;

    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"]["taskIds"],
        json!([id]),
        "only the id naming a task is accepted: {ack}"
    );
    assert_eq!(ack["params"]["_meta"][SUBSCRIPTION_ID], "listen-1", "{ack}");
    let statuses: Vec<&str> = notifications
        .iter()
        .map(|task| task["status"].as_str().unwrap())
        .collect();
    println!(
        "listen-1 saw: {:?}",
        notifications
            .iter()
            .map(|task| format!("{} {}", task["status"], task["statusMessage"]))
            .collect::<Vec<_>>()
    );
    assert!(statuses.len() >= 2, "{statuses:?}");
    assert!(
        statuses[..statuses.len() - 1]
            .iter()
            .all(|s| *s == "working")
            && statuses.last() == Some(&"completed"),
        "working until completed: {statuses:?}"
    );
    for (earlier, later) in notifications.iter().zip(&notifications[1..]) {
        assert_ne!(earlier, later, "no notification repeats the one before");
        assert!(
            humantime::parse_rfc3339(later["lastUpdatedAt"].as_str().unwrap()).unwrap()
                >= humantime::parse_rfc3339(earlier["lastUpdatedAt"].as_str().unwrap()).unwrap()
        );
    }
    for task in &notifications {
        assert_eq!(task["_meta"][SUBSCRIPTION_ID], "listen-1", "{task}");
        assert_task_fields(task);
    }
    let last = notifications.last().unwrap();
    assert_png_render_result(&last["result"], &id);
    assert_eq!(polled["status"], "completed");
    assert_eq!(
        unsigned(last),
        unsigned(&polled),
        "the notification is what tasks/get returns"
    );

    assert_eq!(late_ack["params"]["notifications"]["taskIds"], json!([id]));
    assert_eq!(late_ack["params"]["_meta"][SUBSCRIPTION_ID], "listen-2");
    assert_eq!(late_state["method"], "notifications/tasks");
    assert_eq!(late_state["params"]["_meta"][SUBSCRIPTION_ID], "listen-2");
    assert_eq!(unsigned(&late_state["params"]), unsigned(&polled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_sidecar_is_killed_mid_render_is_reclaimed_and_a_listener_elsewhere_sees_it_complete()
 {
    let _heavy = one_heavy_test_at_a_time();
    let cluster = Cluster::new(); // JOB_LEASE=2s
    let mut a = cluster.sidecar("1", &[]);
    let on_a = TaskClient::new(&a.mcp_url());
    let id = task_id(&on_a.call_render_as_task(slow_spec(2)).await);
    wait_running(&cluster, &id).await;
    // B starts while A renders, so the job is A's alone until A dies.
    let b = cluster.sidecar("2", &[]);
    let on_b = TaskClient::new(&b.mcp_url());
    let mut listener = on_b.listen("crash", &[&id]).await;
    let ack = listener.next(LIMIT).await;
    let before_kill = listener.next_task(&id, LIMIT).await;
    let attempts_before = cluster.attempts(std::slice::from_ref(&id))[&id];
    let state_before = cluster.states(std::slice::from_ref(&id)).remove(0).1;

    a.kill();
    let killed_at = Instant::now();
    let after_kill = listener.until_terminal(&id, LIMIT).await;
    let completed_after = killed_at.elapsed();
    let polled = on_b.get(&id).await;
    // A worker logs its success just after recording it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let successes_of_b = loop {
        let logged = logged_successes(&[&b]);
        if !logged.is_empty() || Instant::now() > deadline {
            break logged;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert_eq!(
        ack["params"]["notifications"]["taskIds"],
        json!([id]),
        "{ack}"
    );
    assert_eq!(before_kill["status"], "working", "{before_kill}");
    assert_eq!(
        (state_before.as_str(), attempts_before),
        ("running", 1),
        "A was still rendering when it was killed"
    );
    let last = after_kill.last().unwrap();
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["_meta"][SUBSCRIPTION_ID], "crash");
    assert_eq!(unsigned(last), unsigned(&polled));
    let (structured, _) = assert_png_render_result(&polled["result"], &id);
    download(&structured).await;
    assert_eq!(
        cluster.attempts(std::slice::from_ref(&id))[&id],
        2,
        "run again once"
    );
    assert_eq!(
        (logged_successes(&[&a]), successes_of_b),
        (vec![], vec![id.clone()]),
        "B finished it, once"
    );
    println!(
        "killed mid-render; completed {completed_after:.1?} after the kill; the listener saw {:?}",
        after_kill
            .iter()
            .map(|task| format!("{} {}", task["status"], task["statusMessage"]))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_on_one_sidecar_stops_the_render_running_on_another_and_the_task_stays_cancelled()
 {
    let cluster = Cluster::new();
    let a = cluster.sidecar("1", &[]);
    let b = cluster.sidecar("0", &[]);
    let (on_a, on_b) = (TaskClient::new(&a.mcp_url()), TaskClient::new(&b.mcp_url()));
    let id = task_id(&on_a.call_render_as_task(slow_spec(1)).await);
    wait_running(&cluster, &id).await;

    let ack = on_b.cancel(&id).await;
    let cancelled_at = Instant::now();
    let cancelled = on_b.get(&id).await;
    // A's worker hears of it at its next lease renewal (every JOB_LEASE/3).
    let deadline = Instant::now() + LIMIT;
    let stopped = loop {
        let stopped: Vec<Value> = a
            .logged("render job cancelled while running")
            .into_iter()
            .filter(|line| line["job_id"] == id.as_str())
            .collect();
        if !stopped.is_empty() {
            break stopped;
        }
        assert!(Instant::now() < deadline, "A's worker never stopped {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stopped_after = cancelled_at.elapsed();
    let again = on_b.cancel(&id).await;
    let after = on_a.get(&id).await;

    assert_eq!(
        ack,
        json!({"resultType": "complete"}),
        "an empty acknowledgement"
    );
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_task_fields(&cancelled);
    assert!(
        cancelled.get("result").is_none() && cancelled.get("error").is_none(),
        "{cancelled}"
    );
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(
        again, ack,
        "cancelling a terminal task is the same acknowledgement"
    );
    assert_eq!(
        unsigned(&after),
        unsigned(&cancelled),
        "a terminal task never changes"
    );
    assert!(
        !cluster.artifacts().iter().any(|name| name.starts_with(&id)),
        "no artifact for a cancelled render: {:?}",
        cluster.artifacts()
    );
    println!("A's worker stopped {stopped_after:.2?} after the cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_render_tasks_on_two_sidecars_all_complete_with_none_lost() {
    const TASKS: usize = 200;
    let _heavy = one_heavy_test_at_a_time();
    let cluster = Cluster::new();
    let a = cluster.sidecar("2", &[]);
    let b = cluster.sidecar("2", &[]);
    let clients = [TaskClient::new(&a.mcp_url()), TaskClient::new(&b.mcp_url())];
    let begun = Instant::now();

    let created: Vec<Value> = futures::future::join_all((0..TASKS).map(|index| {
        let format = if index % 4 == 0 { "svg" } else { "png" };
        let width = 160 + u32::try_from(index).unwrap();
        clients[index % 2].call_render_as_task(chart_spec(width, 120, format))
    }))
    .await;
    let acknowledged_in = begun.elapsed();
    let ids: Vec<String> = created.iter().map(task_id).collect();
    // Followed through the other sidecar than the one that created each, a few at a time.
    let finished: Vec<Value> = tokio::time::timeout(
        Duration::from_secs(300),
        futures::stream::iter(ids.iter().enumerate())
            .map(|(index, id)| clients[(index + 1) % 2].wait_terminal(id, Duration::from_secs(300)))
            .buffered(16)
            .collect(),
    )
    .await
    .expect("all tasks end within 5 minutes");
    let all_done = begun.elapsed();

    for task in &created {
        assert_task_fields(task);
        assert!(
            matches!(task["status"].as_str(), Some("working" | "completed")),
            "{task}"
        );
    }
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), TASKS, "every call made its own task");
    for (id, task) in ids.iter().zip(&finished) {
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(task["result"]["isError"], false, "{task}");
        assert_eq!(task["result"]["structuredContent"]["job_id"], id.as_str());
    }
    // A worker logs its success just after recording it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while logged_successes(&[&a, &b]).len() < TASKS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (from_a, from_b) = (logged_successes(&[&a]), logged_successes(&[&b]));
    let mut all: Vec<String> = from_a.iter().chain(&from_b).cloned().collect();
    all.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(all, expected, "each task rendered exactly once");
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "both sidecars rendered"
    );
    println!(
        "{TASKS} tasks acknowledged in {acknowledged_in:.1?}, all completed after {all_done:.1?} \
         (A rendered {}, B {})",
        from_a.len(),
        from_b.len()
    );
}
