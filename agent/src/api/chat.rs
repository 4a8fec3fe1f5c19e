//! `POST /v1/chat`: the LLM tool loop. The model gets every MCP tool as a function; the agent
//! runs the calls it asks for, through MCP, until it answers (at most `LLM_MAX_TURNS` model
//! calls).
//!
//! Body: `{"messages": [{"role": "user"|"assistant", "content": "…"}]}` (or `{"message": "…"}`
//! for one user turn). Answer: `{"reply", "tool_calls": [{name, arguments, result}], "turns"}`.
//!
//! With `Accept: text/event-stream` the turn is streamed as it happens, as named events:
//! `delta` (`{"text"}`: the answer's text as the model produces it), `tool_call`
//! (`{"id", "name", "arguments"}`), `progress` (`{"id", "name", "message"}`: a render the model
//! started moved on), `tool_result` (`{"id", "name", "result"}`), then `done` (the same JSON
//! the non-streamed form answers) or `error` (`{"error", "status"}`). Closing the stream stops
//! the turn, and cancels a render it is waiting for.
//!
//! A tool that its server runs as a task (the sidecar's `render`) is followed to its end with
//! `tasks/get` at the interval the task asks for; its status messages are the `progress`
//! events, and the model reads the finished result.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::future::BoxFuture;
use rmcp::model::{CallToolResult, TaskPayload};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, AppState, JsonBody, event_stream::json_event, renders::MIN_TASK_POLL_INTERVAL,
    tools::object,
};
use crate::{
    llm::{
        ChatEvent, ChatMessage, LlmError, Role, ToolImage, ToolOutput, ToolProgress, ToolRunner,
        ToolSpec,
    },
    mcp::upstream::ToolAnswer,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    #[serde(default)]
    messages: Vec<ChatMessage>,
    #[serde(default)]
    message: Option<String>,
}

/// Runs the model's tool calls through the MCP hub.
struct HubRunner {
    state: Arc<AppState>,
}

/// What the model reads for a tool's answer: its structured result, or `{"error": …}`.
fn model_view(result: CallToolResult) -> Value {
    if result.is_error == Some(true) {
        let structured = result.structured_content.clone().unwrap_or_default();
        if structured.get("error").is_some() {
            structured
        } else {
            json!({ "error": "the tool reported an error", "content": result.content })
        }
    } else {
        match result.structured_content {
            Some(structured) => structured,
            None => json!({ "content": result.content }),
        }
    }
}

/// [`model_view`] with the images the result carries (a render's picture).
fn model_output(result: CallToolResult) -> ToolOutput {
    let images = result
        .content
        .iter()
        .filter_map(|block| block.as_image())
        .map(|image| ToolImage {
            mime_type: image.mime_type.clone(),
            data: image.data.clone(),
        })
        .collect();
    ToolOutput {
        result: model_view(result),
        images,
    }
}

impl ToolRunner for HubRunner {
    fn call<'a>(&'a self, name: &'a str, arguments: Value) -> BoxFuture<'a, Value> {
        Box::pin(async move {
            match self.state.hub.call(name, object(arguments)).await {
                Ok(result) => model_view(result),
                Err(error) => json!({ "error": error.to_string() }),
            }
        })
    }

    fn call_reporting<'a>(
        &'a self,
        name: &'a str,
        arguments: Value,
        progress: ToolProgress,
    ) -> BoxFuture<'a, ToolOutput> {
        Box::pin(async move {
            let answered = match self.state.hub.call_as_task(name, object(arguments)).await {
                Ok(answered) => answered,
                Err(error) => return json!({ "error": error.to_string() }).into(),
            };
            match answered.answer {
                ToolAnswer::Result(result) => model_output(result),
                ToolAnswer::Task(task) => {
                    let mut following = FollowedTask {
                        state: self.state.clone(),
                        server: answered.server,
                        task_id: task.task_id.clone(),
                        finished: false,
                    };
                    let interval = task.poll_interval_ms.map(Duration::from_millis);
                    following.until_done(interval, &progress).await
                }
            }
        })
    }
}

/// A task the chat waits for. Dropped before it finished (the client closed the stream, the
/// turn was stopped), it cancels the task on its server.
struct FollowedTask {
    state: Arc<AppState>,
    server: String,
    task_id: String,
    finished: bool,
}

impl FollowedTask {
    /// Polls until the task ends; reports each new status message; the model's view of how
    /// it ended.
    async fn until_done(
        &mut self,
        interval: Option<Duration>,
        progress: &ToolProgress,
    ) -> ToolOutput {
        let mut interval = interval
            .unwrap_or(self.state.render_poll_interval)
            .max(MIN_TASK_POLL_INTERVAL);
        let mut last_message = None;
        let mut failures = 0_u32;
        loop {
            tokio::time::sleep(interval).await;
            let task = match self
                .state
                .hub
                .get_task_on(&self.server, &self.task_id)
                .await
            {
                Ok(task) => task,
                // A blip: keep following, a few times.
                Err(error) if failures < 5 => {
                    failures += 1;
                    tracing::warn!(task = %self.task_id, %error, "cannot read the task; retrying");
                    continue;
                }
                Err(error) => {
                    self.finished = true;
                    return json!({ "error": error.to_string(), "task_id": self.task_id }).into();
                }
            };
            failures = 0;
            if let Some(millis) = task.task.poll_interval_ms {
                interval = Duration::from_millis(millis).max(MIN_TASK_POLL_INTERVAL);
            }
            if task.task.status_message != last_message {
                if let Some(message) = &task.task.status_message {
                    progress.report(message);
                }
                last_message.clone_from(&task.task.status_message);
            }
            match task.payload {
                TaskPayload::Working | TaskPayload::InputRequired { .. } => {}
                TaskPayload::Completed { result } => {
                    self.finished = true;
                    return match serde_json::from_value::<CallToolResult>(Value::Object(result)) {
                        Ok(result) => model_output(result),
                        Err(error) => json!({
                            "error": format!("the task's result is not a tool result: {error}"),
                        })
                        .into(),
                    };
                }
                TaskPayload::Failed { error } => {
                    self.finished = true;
                    return json!({
                        "error": error.get("message").cloned().unwrap_or(Value::Object(error)),
                    })
                    .into();
                }
                TaskPayload::Cancelled => {
                    self.finished = true;
                    return json!({ "error": "the task was cancelled" }).into();
                }
                // A status this agent does not know yet: keep following until a terminal one.
                _ => {}
            }
        }
    }
}

impl Drop for FollowedTask {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (state, task_id) = (self.state.clone(), self.task_id.clone());
        tracing::info!(task = %task_id, "the chat stopped: cancelling the task it waited for");
        tokio::spawn(async move {
            if let Err(error) = state.hub.cancel_task(&task_id).await {
                tracing::warn!(task = %task_id, %error, "could not cancel the task");
            }
        });
    }
}

impl From<LlmError> for ApiError {
    fn from(error: LlmError) -> Self {
        let status = match &error {
            LlmError::NotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            LlmError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            LlmError::Upstream(_) | LlmError::Malformed(_) | LlmError::TurnLimit(_) => {
                StatusCode::BAD_GATEWAY
            }
            LlmError::Credentials(_) | LlmError::InvalidConfig(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        ApiError::new(status, error.to_string())
    }
}

/// `GET /v1/chat`: whether a model is configured (and which), so a page can say so plainly
/// instead of offering a chat that can only fail.
pub async fn status(State(state): State<Arc<AppState>>) -> Json<Value> {
    let configured = state.model.is_configured();
    Json(json!({
        "configured": configured,
        "model": state.model.describe(),
        "message": if configured {
            Value::Null
        } else {
            LlmError::NotConfigured.to_string().into()
        },
    }))
}

/// Whether the client asked for the streamed form.
fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("text/event-stream"))
}

pub async fn chat(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<ChatRequest>,
) -> Result<Response, ApiError> {
    if !state.model.is_configured() {
        return Err(LlmError::NotConfigured.into());
    }
    let mut messages = request.messages;
    if let Some(message) = request.message {
        messages.push(ChatMessage {
            role: Role::User,
            content: message,
        });
    }
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "send {\"message\": \"…\"} or {\"messages\": [{\"role\": \"user\", \"content\": \"…\"}]}",
        ));
    }
    let tools: Vec<ToolSpec> = state
        .hub
        .tools()
        .await
        .into_iter()
        .map(|exposed| ToolSpec {
            name: exposed.name,
            description: exposed
                .tool
                .description
                .map(|d| d.to_string())
                .unwrap_or_default(),
            parameters: Value::Object((*exposed.tool.input_schema).clone()),
        })
        .collect();
    if wants_stream(&headers) {
        return Ok(streamed(state, messages, tools).into_response());
    }
    let runner = HubRunner {
        state: state.clone(),
    };
    let reply = state
        .model
        .chat(&messages, &tools, &runner, state.llm_max_turns)
        .await?;
    Ok(Json(serde_json::to_value(reply).unwrap_or_default()).into_response())
}

/// Aborts the turn's task when the stream is dropped (the client went away).
struct AbortOnDrop(tokio::task::JoinHandle<Result<crate::llm::ChatReply, LlmError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The turn as server-sent events; see the module docs.
fn streamed(
    state: Arc<AppState>,
    messages: Vec<ChatMessage>,
    tools: Vec<ToolSpec>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let turn = {
        let state = state.clone();
        tokio::spawn(async move {
            let runner = HubRunner {
                state: state.clone(),
            };
            state
                .model
                .chat_streamed(&messages, &tools, &runner, state.llm_max_turns, &sender)
                .await
            // `sender` drops here: the receiver then sees the end after the last event.
        })
    };
    struct Turn {
        receiver: tokio::sync::mpsc::UnboundedReceiver<ChatEvent>,
        task: Option<AbortOnDrop>,
        shutdown: tokio_util::sync::CancellationToken,
    }
    let heartbeat = state.sse_heartbeat;
    let start = Turn {
        receiver,
        task: Some(AbortOnDrop(turn)),
        shutdown: state.shutdown.clone(),
    };
    let stream = futures::stream::unfold(start, |mut turn| async move {
        let task = turn.task.as_mut()?;
        let event = tokio::select! {
            event = turn.receiver.recv() => match event {
                Some(event) => json_event(event.name(), &event.data()),
                None => {
                    let ended = (&mut task.0).await;
                    turn.task = None;
                    match ended {
                        Ok(Ok(reply)) => json_event(
                            "done",
                            &serde_json::to_value(reply).unwrap_or_default(),
                        ),
                        Ok(Err(error)) => {
                            let error = ApiError::from(error);
                            tracing::warn!(error = %error.message, "streamed chat failed");
                            json_event(
                                "error",
                                &json!({ "error": error.message, "status": error.status.as_u16() }),
                            )
                        }
                        Err(join) => json_event(
                            "error",
                            &json!({ "error": format!("the chat turn stopped: {join}"), "status": 500 }),
                        ),
                    }
                }
            },
            () = turn.shutdown.cancelled() => {
                turn.task = None;
                json_event(
                    "error",
                    &json!({
                        "error": "this agent instance is shutting down; send the message again",
                        "status": 503,
                    }),
                )
            }
        };
        Some((Ok(event), turn))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text("keep-alive"))
}
