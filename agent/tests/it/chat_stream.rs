//! `POST /v1/chat` with `Accept: text/event-stream`: the turn streamed as it happens, end to
//! end (the agent process, the real sidecar, Redis), against a local server that streams in
//! each provider's own format: OpenAI-compatible `stream: true` (`chat.completion.chunk`s
//! with tool-call arguments spread over fragments, then `data: [DONE]`) and Vertex AI
//! `:streamGenerateContent?alt=sse` (one `GenerateContentResponse` per event). Streams that
//! break off, carry garbage or go quiet end in a clear `error` event, and nothing hangs.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use test_support::temp_dir;

use crate::common::{Stack, fakes::MetadataServer};

/// How the streaming fake model answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plot {
    /// Call `add {a: 2, b: 3}` (its arguments in three fragments), then answer "2 + 3 = 5"
    /// in three pieces, [`PIECE_GAP`] apart.
    AddThenAnswer,
    /// Call `render` on a small chart, then answer naming the URL it got.
    RenderThenAnswer,
    /// Call `render` on a slow SVG, then answer (a client stops before that).
    SlowRender,
    /// Call `render` on an SVG that takes a second or two, then answer naming the URL.
    BlurredRender,
    /// Call `render` on a pie chart of category slices, then answer naming the URL.
    PieRender,
    /// Two pieces of text, then the connection closes: no finish reason, no `[DONE]`.
    CutMidway,
    /// One piece of text, then an event that is not JSON.
    Garbage,
    /// One piece of text, then silence with the connection open.
    Stall,
    /// By the last user message: "slow" → [`Plot::SlowRender`], "blurred" →
    /// [`Plot::BlurredRender`], "pie" → [`Plot::PieRender`], "render" →
    /// [`Plot::RenderThenAnswer`], anything else → [`Plot::AddThenAnswer`] (for the page).
    ByMessage,
}

impl Plot {
    /// The plot to follow for a request whose last user message is `message`.
    fn resolve(self, message: &str) -> Self {
        match self {
            Self::ByMessage if message.contains("slow") => Self::SlowRender,
            Self::ByMessage if message.contains("blurred") => Self::BlurredRender,
            Self::ByMessage if message.to_lowercase().contains("pie") => Self::PieRender,
            Self::ByMessage if message.to_lowercase().contains("render") => Self::RenderThenAnswer,
            Self::ByMessage => Self::AddThenAnswer,
            plot => plot,
        }
    }
}

/// The gap between the pieces of a streamed answer.
const PIECE_GAP: Duration = Duration::from_millis(400);

#[derive(Clone)]
pub(crate) struct StreamingModel {
    pub(crate) url: String,
    plot: Arc<Mutex<Plot>>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

type ModelState = (Arc<Mutex<Plot>>, Arc<Mutex<Vec<Value>>>);

impl StreamingModel {
    pub(crate) async fn start() -> Self {
        let plot = Arc::new(Mutex::new(Plot::AddThenAnswer));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/v1/projects/{project}/locations/{location}/publishers/google/models/{action}",
                post(vertex_stream),
            )
            .route("/chat/completions", post(openai_stream))
            .with_state((plot.clone(), bodies.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}"),
            plot,
            bodies,
        }
    }

    pub(crate) fn set(&self, plot: Plot) {
        *self.plot.lock().unwrap() = plot;
        self.bodies.lock().unwrap().clear();
    }

    pub(crate) fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// One SSE event's bytes (`data:` only, as both providers send).
fn sse(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// What a streamed reply sends: each item after its delay; `then_hang` keeps the connection
/// open afterwards instead of closing it.
fn streamed(pieces: Vec<(Duration, Bytes)>, then_hang: bool) -> Response {
    let stream = futures::stream::iter(pieces)
        .then(|(delay, bytes)| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(bytes)
        })
        .chain(
            futures::stream::once(async move {
                if then_hang {
                    std::future::pending::<()>().await;
                }
                Ok(Bytes::new())
            })
            .filter(|bytes: &Result<Bytes, _>| {
                std::future::ready(bytes.as_ref().is_ok_and(|bytes| !bytes.is_empty()))
            }),
        );
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

fn chart_arguments() -> Value {
    json!({"spec": {"kind": "chart", "width": 200, "height": 120, "chart": {"type": "bar",
        "series": [{"name": "a", "points": [[1, 2], [2, 3]]}]}}})
}

/// A 480 × 320 pie of two labelled slices, as a model asked for "a pie chart of apples 3,
/// pears 5" would send it.
fn pie_arguments() -> Value {
    json!({"spec": {"kind": "chart", "width": 480, "height": 320, "chart": {"type": "pie",
        "title": "Fruit", "series": [{"name": "fruit", "points": [["apples", 3], ["pears", 5]]}]}}})
}

fn slow_arguments() -> Value {
    blurred_arguments(6)
}

/// An SVG of `layers` large blurred shapes: each takes a good part of a second to render in
/// a debug build.
fn blurred_arguments(layers: u32) -> Value {
    let mut svg = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1024" height="768"><defs><filter id="b"><feGaussianBlur stdDeviation="40"/></filter></defs>"#,
    );
    for layer in 0..layers {
        svg.push_str(&format!(
            r#"<g filter="url(#b)" opacity="0.6"><rect x="{}" y="40" width="600" height="500" fill="teal"/><circle cx="500" cy="400" r="300" fill="orange"/></g>"#,
            100 + layer * 37
        ));
    }
    svg.push_str("</svg>");
    json!({"spec": {"kind": "svg", "svg": svg, "width": 1024, "height": 768}})
}

/// The tool a plot calls first, with its arguments.
fn first_call(plot: Plot) -> Option<(&'static str, Value)> {
    match plot {
        Plot::AddThenAnswer => Some(("add", json!({"a": 2, "b": 3}))),
        Plot::RenderThenAnswer => Some(("render", chart_arguments())),
        Plot::SlowRender => Some(("render", slow_arguments())),
        Plot::BlurredRender => Some(("render", blurred_arguments(2))),
        Plot::PieRender => Some(("render", pie_arguments())),
        _ => None,
    }
}

/// The answer's pieces, once the tool result `result` came back.
fn answer_pieces(plot: Plot, result: &Value) -> Vec<String> {
    match plot {
        Plot::AddThenAnswer => vec!["2 + 3".into(), " = ".into(), result["sum"].to_string()],
        _ => vec![
            "Here is ".into(),
            "your chart: ".into(),
            result["url"].as_str().unwrap_or("(no url)").to_owned(),
        ],
    }
}

async fn openai_stream(
    State((plot, bodies)): State<ModelState>,
    Json(body): Json<Value>,
) -> Response {
    bodies.lock().unwrap().push(body.clone());
    let last_user = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|message| message["role"] == "user")
        .and_then(|message| message["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let plot = plot.lock().unwrap().resolve(&last_user);
    assert_eq!(body["stream"], true, "a streamed turn asks for a stream");
    let chunk = |delta: Value, finish: Option<&str>| {
        sse(&json!({"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string())
    };
    let tool_result = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|message| message["role"] == "tool")
        .map(|message| {
            serde_json::from_str::<Value>(message["content"].as_str().unwrap()).unwrap()
        });
    let now = Duration::ZERO;
    let pieces = match (plot, tool_result) {
        (Plot::CutMidway, _) => vec![
            (
                now,
                chunk(json!({"role": "assistant", "content": "Half an "}), None),
            ),
            (PIECE_GAP, chunk(json!({"content": "answer"}), None)),
        ],
        (Plot::Garbage, _) => vec![
            (now, chunk(json!({"content": "Well"}), None)),
            (PIECE_GAP, sse("{this is not json")),
        ],
        (Plot::Stall, _) => {
            return streamed(
                vec![(now, chunk(json!({"content": "Thinking"}), None))],
                true,
            );
        }
        (plot, None) => {
            let (name, arguments) = first_call(plot).unwrap();
            let text = arguments.to_string();
            let (head, tail) = text.split_at(text.len() / 2);
            vec![
                (
                    now,
                    chunk(
                        json!({"role": "assistant", "content": null, "tool_calls": [
                    {"index": 0, "id": "call_1", "type": "function",
                     "function": {"name": name, "arguments": ""}}]}),
                        None,
                    ),
                ),
                (
                    now,
                    chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": head}}]}),
                        None,
                    ),
                ),
                (
                    now,
                    chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": tail}}]}),
                        None,
                    ),
                ),
                (now, chunk(json!({}), Some("tool_calls"))),
                (now, sse("[DONE]")),
            ]
        }
        (plot, Some(result)) => {
            let mut pieces: Vec<(Duration, Bytes)> = answer_pieces(plot, &result)
                .into_iter()
                .map(|piece| (PIECE_GAP, chunk(json!({"content": piece}), None)))
                .collect();
            pieces[0].0 = now;
            pieces.push((now, chunk(json!({}), Some("stop"))));
            pieces.push((now, sse("[DONE]")));
            pieces
        }
    };
    streamed(pieces, false)
}

async fn vertex_stream(
    State((plot, bodies)): State<ModelState>,
    axum::extract::Path((_, _, action)): axum::extract::Path<(String, String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    Json(body): Json<Value>,
) -> Response {
    bodies.lock().unwrap().push(body.clone());
    let last_user = body["contents"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|content| content["role"] == "user" && content["parts"][0]["text"].is_string())
        .and_then(|content| content["parts"][0]["text"].as_str())
        .unwrap_or_default()
        .to_owned();
    let plot = plot.lock().unwrap().resolve(&last_user);
    assert!(action.ends_with(":streamGenerateContent"), "{action}");
    assert_eq!(query.as_deref(), Some("alt=sse"));
    let event = |parts: Value, finish: Option<&str>| {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}});
        if let Some(finish) = finish {
            candidate["finishReason"] = finish.into();
        }
        sse(&json!({"candidates": [candidate]}).to_string())
    };
    let tool_result = body["contents"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|content| content["parts"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part.get("functionResponse").cloned())
        .next_back()
        .map(|response| response["response"].clone());
    let now = Duration::ZERO;
    let pieces = match (plot, tool_result) {
        (Plot::CutMidway, _) => vec![
            (now, event(json!([{"text": "Half an "}]), None)),
            (PIECE_GAP, event(json!([{"text": "answer"}]), None)),
        ],
        (Plot::Garbage, _) => vec![
            (now, event(json!([{"text": "Well"}]), None)),
            (PIECE_GAP, sse("{this is not json")),
        ],
        (Plot::Stall, _) => {
            return streamed(
                vec![(now, event(json!([{"text": "Thinking"}]), None))],
                true,
            );
        }
        (plot, None) => {
            let (name, arguments) = first_call(plot).unwrap();
            vec![(
                now,
                event(
                    json!([{"functionCall": {"name": name, "args": arguments}}]),
                    Some("STOP"),
                ),
            )]
        }
        (plot, Some(result)) => {
            let texts = answer_pieces(plot, &result);
            let last = texts.len() - 1;
            texts
                .into_iter()
                .enumerate()
                .map(|(index, text)| {
                    let finish = (index == last).then_some("STOP");
                    let delay = if index == 0 { now } else { PIECE_GAP };
                    (delay, event(json!([{"text": text}]), finish))
                })
                .collect()
        }
    };
    streamed(pieces, false)
}

/// One event of the agent's stream, with when it arrived.
#[derive(Debug)]
struct Received {
    name: String,
    data: Value,
    at: Instant,
}

/// POSTs a streamed chat and reads the events until the stream ends (or `limit` passes, which
/// fails the test: nothing may hang). `stop_after` drops the stream after the first event of
/// that name.
async fn stream_chat(stack: &Stack, message: &str, stop_after: Option<&str>) -> Vec<Received> {
    let response = reqwest::Client::new()
        .post(stack.url("/v1/chat"))
        .header("accept", "text/event-stream")
        .json(&json!({"message": message}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream());
    let mut received = vec![];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let next = tokio::time::timeout_at(deadline.into(), events.next())
            .await
            .unwrap_or_else(|_| panic!("the stream hung; so far: {received:?}"));
        let Some(event) = next else { break };
        let event = event.unwrap();
        let (Some(name), Some(data)) = (event.event, event.data) else {
            continue;
        };
        let stop = stop_after == Some(name.as_str());
        received.push(Received {
            name,
            data: serde_json::from_str(&data).unwrap(),
            at: Instant::now(),
        });
        if stop {
            break;
        }
    }
    received
}

fn names(events: &[Received]) -> Vec<&str> {
    events.iter().map(|event| event.name.as_str()).collect()
}

fn only<'a>(events: &'a [Received], name: &str) -> Vec<&'a Received> {
    events.iter().filter(|event| event.name == name).collect()
}

/// The contract every provider's stream keeps.
async fn check_the_stream(stack: &Stack, model: &StreamingModel) {
    // Tool call, its result, then the answer in pieces that arrive before the turn ends.
    model.set(Plot::AddThenAnswer);
    let events = stream_chat(stack, "What is 2 + 3?", None).await;
    println!("{:?}", names(&events));
    let calls = only(&events, "tool_call");
    assert_eq!(calls.len(), 1, "{:?}", names(&events));
    assert_eq!(calls[0].data["name"], "add");
    assert_eq!(calls[0].data["arguments"], json!({"a": 2, "b": 3}));
    let results = only(&events, "tool_result");
    assert_eq!(results[0].data["result"], json!({"sum": 5}));
    assert_eq!(results[0].data["id"], calls[0].data["id"]);
    let deltas = only(&events, "delta");
    let text: String = deltas
        .iter()
        .map(|delta| delta.data["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "2 + 3 = 5");
    assert!(deltas.len() >= 3, "the answer came in pieces: {deltas:?}");
    let done = events.last().unwrap();
    assert_eq!(done.name, "done");
    assert!(
        done.at.duration_since(deltas[0].at) >= PIECE_GAP,
        "the first piece arrived while the model was still answering, not with the end"
    );
    assert_eq!(done.data["reply"], "2 + 3 = 5");
    assert_eq!(done.data["turns"], 2);
    assert_eq!(done.data["tool_calls"][0]["result"], json!({"sum": 5}));
    let order = names(&events);
    let position = |name: &str| order.iter().position(|n| *n == name).unwrap();
    assert!(position("tool_call") < position("tool_result"));
    assert!(position("tool_result") < position("delta"));

    // Cut mid-way, garbage, silence: each ends in an `error` event that says what happened.
    for (plot, expected) in [
        (Plot::CutMidway, "ended before the model finished"),
        (Plot::Garbage, "streamed"),
        (Plot::Stall, "did not answer"),
    ] {
        model.set(plot);
        let started = Instant::now();
        let events = stream_chat(stack, "Hello", None).await;
        let last = events.last().unwrap();
        assert_eq!(last.name, "error", "{plot:?}: {:?}", names(&events));
        let message = last.data["error"].as_str().unwrap();
        println!("{plot:?} → {message} after {:?}", started.elapsed());
        assert!(message.contains(expected), "{plot:?}: {message}");
        assert!(last.data["status"].as_u64().unwrap() >= 500);
        assert!(
            !only(&events, "delta").is_empty(),
            "{plot:?}: the text before the break was streamed"
        );
    }
}

fn vertex_stack(model: &StreamingModel, metadata: &MetadataServer) -> Stack {
    let home = temp_dir("empty-home");
    Stack::start(
        "stateless",
        &[
            ("LLM_PROVIDER", "vertex"),
            ("VERTEX_PROJECT", "test-project"),
            ("VERTEX_LOCATION", "europe-west1"),
            ("LLM_MODEL", "gemini-test"),
            ("VERTEX_ENDPOINT", model.url.as_str()),
            ("LLM_MAX_TURNS", "3"),
            ("LLM_TIMEOUT", "3s"),
            ("GCE_METADATA_HOST", metadata.host.as_str()),
            ("HOME", home.to_str().unwrap()),
        ],
    )
}

pub(crate) fn openai_stack(model: &StreamingModel) -> Stack {
    openai_stack_with(model, &[])
}

/// [`openai_stack`] with settings for the sidecar.
pub(crate) fn openai_stack_with(model: &StreamingModel, sidecar: &[(&str, &str)]) -> Stack {
    openai_stack_env(model, sidecar, &[])
}

/// [`openai_stack_with`] with more settings for the agent.
fn openai_stack_env(
    model: &StreamingModel,
    sidecar: &[(&str, &str)],
    agent: &[(&str, &str)],
) -> Stack {
    let mut env = vec![
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", model.url.as_str()),
        ("LLM_MODEL", "gpt-test"),
        ("LLM_MAX_TURNS", "3"),
        ("LLM_TIMEOUT", "3s"),
    ];
    env.extend_from_slice(agent);
    Stack::start_with("stateless", sidecar, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_streams_deltas_tool_calls_and_results_and_names_broken_streams() {
    let model = StreamingModel::start().await;
    let stack = openai_stack(&model);
    check_the_stream(&stack, &model).await;
    // The second request carried the result of the call whose arguments came in fragments.
    model.set(Plot::AddThenAnswer);
    stream_chat(&stack, "again", None).await;
    let bodies = model.bodies();
    let tool = bodies[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|message| message["role"] == "tool")
        .unwrap()
        .clone();
    assert_eq!(tool["tool_call_id"], "call_1");
    let assistant = bodies[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|message| message["role"] == "assistant")
        .unwrap()
        .clone();
    assert_eq!(
        serde_json::from_str::<Value>(
            assistant["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        )
        .unwrap(),
        json!({"a": 2, "b": 3}),
        "the fragments were put back together"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_stream_generate_content_streams_the_turn_and_names_broken_streams() {
    let model = StreamingModel::start().await;
    let metadata = MetadataServer::start(Duration::from_secs(3600)).await;
    let stack = vertex_stack(&model, &metadata);
    check_the_stream(&stack, &model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_in_chat_streams_its_progress_and_the_model_reads_the_finished_result() {
    let model = StreamingModel::start().await;
    // This model takes images: it sees the picture too.
    let stack = openai_stack_env(&model, &[], &[("LLM_TOOL_IMAGES", "on")]);
    model.set(Plot::RenderThenAnswer);
    let events = stream_chat(&stack, "Draw me a bar chart", None).await;
    println!(
        "{:?}",
        events
            .iter()
            .map(|event| format!("{} {}", event.name, event.data))
            .collect::<Vec<_>>()
    );
    let call = &only(&events, "tool_call")[0].data;
    assert_eq!(call["name"], "render");
    let progress = only(&events, "progress");
    assert!(!progress.is_empty(), "the render's progress was streamed");
    assert!(progress.iter().all(|event| event.data["id"] == call["id"]));
    let result = &only(&events, "tool_result")[0].data["result"];
    let url = result["url"].as_str().unwrap();
    assert!(url.contains("/files/"), "{result}");
    assert_eq!(result["content_type"], "image/png");
    let done = events.last().unwrap();
    assert_eq!(done.name, "done");
    assert_eq!(
        done.data["reply"].as_str().unwrap(),
        format!("Here is your chart: {url}"),
        "the model read the finished result"
    );
    // ... and saw the picture: a user message of image parts after the tool message.
    let second = &model.bodies()[1];
    let pictures = second["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(pictures["role"], "user", "{pictures}");
    let url = pictures["content"][1]["image_url"]["url"].as_str().unwrap();
    assert!(
        url.starts_with("data:image/png;base64,iVBORw0KGgo"),
        "{}",
        &url[..40]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_stream_stops_the_turn_and_cancels_its_render() {
    let model = StreamingModel::start().await;
    let stack = openai_stack(&model);
    model.set(Plot::SlowRender);
    // The client goes away as soon as the render has started.
    let events = stream_chat(&stack, "Draw something slow", Some("progress")).await;
    assert_eq!(
        events.last().unwrap().name,
        "progress",
        "{:?}",
        names(&events)
    );
    // The task is the render job: it ends cancelled, not rendered.
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let listed: Value = reqwest::Client::new()
            .post(stack.url("/v1/tools/list_renders"))
            .json(&json!({"limit": 1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let job = listed["structuredContent"]["jobs"][0].clone();
        if job["state"] == "cancelled" || Instant::now() > deadline {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(
        model.bodies().len(),
        1,
        "the turn stopped: no second model call"
    );
}
