//! The LLM tool loop: lets a chat model call MCP tools until it answers.
//!
//! # Design
//!
//! [`ChatModel::chat`] runs a provider-neutral loop:
//!
//! 1. send the conversation and the tool declarations to the model;
//! 2. if the reply asks for function calls, run each through the caller's
//!    [`ToolRunner`] (concurrently, results kept in call order), append the
//!    model's message and the results to the conversation, and go to 1;
//! 3. if the reply is text, return it with a record of every tool call.
//!
//! A call whose arguments are not a JSON object (or, from an OpenAI-compatible
//! model, not JSON at all) is not run: its result is `{"error": "…"}` saying
//! so, which goes back to the model like any failed call, so one slip of the
//! model costs a turn instead of the whole chat.
//!
//! At most `max_turns` model calls are made; a model that keeps calling tools
//! ends the loop with [`LlmError::TurnLimit`].
//!
//! Each provider lives in its own submodule, which owns its complete wire
//! format (request and reply types, field names, how tool results go back) and
//! implements the private `Provider` trait the loop is written against:
//!
//! * `vertex`: Vertex AI Gemini `generateContent`, authenticated with Google
//!   Cloud credentials (Application Default Credentials unless a
//!   [`VertexAuth`] says otherwise);
//! * `openai`: any OpenAI-compatible `/chat/completions` endpoint.
//!
//! Shared pieces: `transport` (one bounded JSON POST with uniform error
//! mapping), `schema` ([`model_schema`], which makes MCP input schemas
//! self-contained for both providers) and `error` ([`LlmError`]).
//!
//! Every HTTP exchange, including fetching a Vertex access token, is bounded by
//! the timeout given to [`ChatModel::new`]; the loop as a whole is bounded by
//! `max_turns` such exchanges plus the tool calls themselves, which are the
//! runner's responsibility.

mod error;
mod openai;
mod schema;
mod transport;
mod vertex;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use error::LlmError;
pub(crate) use error::error_chain;
pub use schema::model_schema;
pub use vertex::VertexAuth;

use transport::{HttpTransport, excerpt};

/// A tool the model may call (from the MCP servers' tool lists).
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    /// The name the model calls it by; must be unique across all tools given to one chat.
    pub name: String,
    /// What the tool does; the model reads this to decide when to call it.
    pub description: String,
    /// JSON Schema of the arguments (MCP `inputSchema`). Passed through
    /// [`model_schema`] before it is sent to the model.
    pub parameters: Value,
}

/// Runs a tool call for the loop; the agent implements it over MCP.
pub trait ToolRunner: Send + Sync {
    /// Returns the JSON the model should see: the tool's structured result, or
    /// `{"error": "..."}` for a failed call. It cannot fail: failures are
    /// results the model should read and react to.
    fn call<'a>(&'a self, name: &'a str, arguments: Value) -> BoxFuture<'a, Value>;

    /// [`call`](Self::call), reporting progress of a long call (a render) on `progress` as it
    /// goes, and giving any images the tool returned alongside its result (the model sees
    /// them when it takes images). Runners that cannot tell just call.
    fn call_reporting<'a>(
        &'a self,
        name: &'a str,
        arguments: Value,
        progress: ToolProgress,
    ) -> BoxFuture<'a, ToolOutput> {
        let _ = progress;
        self.call(name, arguments).map(ToolOutput::from).boxed()
    }
}

/// A tool's answer for the model: the JSON it reads and the images it may look at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolOutput {
    pub result: Value,
    pub images: Vec<ToolImage>,
}

impl From<Value> for ToolOutput {
    fn from(result: Value) -> Self {
        Self {
            result,
            images: Vec::new(),
        }
    }
}

/// An image a tool returned (an MCP `image` content block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolImage {
    /// E.g. `image/png`.
    pub mime_type: String,
    /// The image, base64-encoded as MCP carries it.
    pub data: String,
}

/// Most images from one turn's tool calls that go to the model, and their most bytes
/// (base64) in all: a model reads a few pictures, and each costs tokens and request size.
const MAX_TOOL_IMAGES_PER_TURN: usize = 4;
const MAX_TOOL_IMAGE_BYTES_PER_TURN: usize = 2 * 1024 * 1024;

/// What a streamed chat ([`ChatModel::chat_streamed`]) reports while the turn runs. The end
/// of the turn is the call's return value.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatEvent {
    /// Text of the answer, as the model produces it.
    Delta { text: String },
    /// The model called a tool (the call runs next).
    ToolCall {
        id: String,
        name: String,
        arguments: Value,
    },
    /// A tool call returned; `result` is what the model reads.
    ToolResult {
        id: String,
        name: String,
        result: Value,
    },
    /// A long tool call (a render) moved on.
    Progress {
        id: String,
        name: String,
        /// E.g. `"[2/4] rasterizing"`.
        message: String,
    },
}

impl ChatEvent {
    /// The SSE event name: `delta`, `tool_call`, `tool_result`, `progress`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Delta { .. } => "delta",
            Self::ToolCall { .. } => "tool_call",
            Self::ToolResult { .. } => "tool_result",
            Self::Progress { .. } => "progress",
        }
    }

    /// The event's data: its fields as a JSON object.
    #[must_use]
    pub fn data(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut tagged)) => tagged
                .remove(self.name())
                .unwrap_or(Value::Object(Map::new())),
            _ => Value::Object(Map::new()),
        }
    }
}

/// Where a streamed chat's events go.
pub type ChatEvents = tokio::sync::mpsc::UnboundedSender<ChatEvent>;

/// Reports a tool call's progress as [`ChatEvent::Progress`].
#[derive(Clone, Debug)]
pub struct ToolProgress {
    events: Option<ChatEvents>,
    id: String,
    name: String,
}

impl ToolProgress {
    pub fn report(&self, message: &str) {
        if let Some(events) = &self.events {
            // A closed receiver means nobody is listening any more: nothing to do.
            let _ = events.send(ChatEvent::Progress {
                id: self.id.clone(),
                name: self.name.clone(),
                message: message.to_owned(),
            });
        }
    }
}

/// Who said a [`ChatMessage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One message of the conversation the caller sends in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// A tool call the model made during [`ChatModel::chat`], with what it got back.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolCallRecord {
    pub name: String,
    /// A JSON object, unless the model sent something else (then as it was sent:
    /// the JSON value, or the text when it was not JSON) and the call was not run.
    pub arguments: Value,
    /// What the [`ToolRunner`] returned, or `{"error": "…"}` for arguments that
    /// were not a JSON object.
    pub result: Value,
}

/// The outcome of [`ChatModel::chat`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatReply {
    /// The model's final text answer.
    pub reply: String,
    /// Every tool call, in the order the model made them.
    pub tool_calls: Vec<ToolCallRecord>,
    /// How many model calls it took (1 when no tool was called).
    pub turns: u32,
}

/// Provider settings (the agent fills this from its configuration).
#[derive(Clone, Debug, Default)]
pub enum LlmConfig {
    /// No model: [`ChatModel::chat`] fails with [`LlmError::NotConfigured`].
    #[default]
    None,
    /// Gemini on Vertex AI.
    Vertex {
        /// Google Cloud project id (`VERTEX_PROJECT`).
        project: String,
        /// Region such as `us-central1`, or `global` (`VERTEX_LOCATION`).
        location: String,
        /// Model id such as `gemini-2.5-flash` (`LLM_MODEL`).
        model: String,
        /// Base URL override; the default is `https://{location}-aiplatform.googleapis.com`
        /// (`https://aiplatform.googleapis.com` for `global`).
        endpoint: Option<String>,
    },
    /// An OpenAI-compatible chat completions API.
    OpenAi {
        /// Base URL up to the API version, e.g. `https://api.openai.com/v1` (`OPENAI_BASE_URL`).
        base_url: String,
        /// Sent as `Authorization: Bearer ...` when present (`OPENAI_API_KEY`).
        api_key: Option<String>,
        /// Model id such as `gpt-4o-mini` (`LLM_MODEL`).
        model: String,
    },
}

/// A configured chat model that can run the tool loop. Cheap to clone.
#[derive(Clone)]
pub struct ChatModel {
    backend: Backend,
    /// Whether images tools return go to the model (see [`ChatModel::with_tool_images`]).
    tool_images: bool,
}

#[derive(Clone)]
enum Backend {
    None,
    Vertex(vertex::VertexClient),
    OpenAi(openai::OpenAiClient),
}

impl ChatModel {
    /// Builds the model from its settings. Does no network I/O: Vertex
    /// credentials come from Application Default Credentials, loaded on the
    /// first [`chat`](Self::chat). `timeout` bounds every HTTP exchange.
    ///
    /// # Errors
    ///
    /// [`LlmError::InvalidConfig`] for settings that cannot work (empty or
    /// unsafe ids, unusable URLs or API key).
    pub fn new(config: LlmConfig, timeout: Duration) -> Result<Self, LlmError> {
        Self::with_vertex_auth(config, timeout, VertexAuth::ApplicationDefault)
    }

    /// Like [`new`](Self::new), but Vertex requests authenticate with `auth`
    /// instead of Application Default Credentials. Ignored for other providers.
    ///
    /// # Errors
    ///
    /// As for [`new`](Self::new).
    pub fn with_vertex_auth(
        config: LlmConfig,
        timeout: Duration,
        auth: VertexAuth,
    ) -> Result<Self, LlmError> {
        let backend = match config {
            LlmConfig::None => Backend::None,
            LlmConfig::Vertex {
                project,
                location,
                model,
                endpoint,
            } => Backend::Vertex(vertex::VertexClient::new(
                HttpTransport::new(timeout)?,
                vertex::VertexSettings {
                    project,
                    location,
                    model,
                    endpoint,
                },
                auth,
            )?),
            LlmConfig::OpenAi {
                base_url,
                api_key,
                model,
            } => Backend::OpenAi(openai::OpenAiClient::new(
                HttpTransport::new(timeout)?,
                &base_url,
                api_key.as_deref(),
                &model,
            )?),
        };
        Ok(Self {
            backend,
            tool_images: false,
        })
    }

    /// Sends the images tools return (a render's picture) to the model with their results:
    /// Gemini gets them as `inlineData` parts beside the `functionResponse`s, an
    /// OpenAI-compatible model as `image_url` parts of a user message after the `tool`
    /// messages (tool messages carry only text). Off by default: a text-only model would
    /// refuse the request.
    #[must_use]
    pub fn with_tool_images(mut self, enabled: bool) -> Self {
        self.tool_images = enabled;
        self
    }

    /// Whether the provider is Vertex AI (whose Gemini models all take images).
    #[must_use]
    pub fn is_vertex(&self) -> bool {
        matches!(self.backend, Backend::Vertex(_))
    }

    /// Whether a provider is configured (i.e. [`chat`](Self::chat) can work).
    #[must_use]
    pub fn is_configured(&self) -> bool {
        !matches!(self.backend, Backend::None)
    }

    /// Provider and model for logs and status pages, e.g.
    /// `vertex:gemini-2.5-flash`, `openai:gpt-4o-mini` or `none`.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::None => "none".to_owned(),
            Backend::Vertex(client) => format!("vertex:{}", client.model()),
            Backend::OpenAi(client) => format!("openai:{}", client.model()),
        }
    }

    /// The tool loop: sends the conversation and the tools; while the model
    /// asks for function calls, runs each through `runner` and sends the
    /// results back; stops when the model answers with text.
    ///
    /// Makes at most `max_turns` model calls (`0` means none, which fails with
    /// `TurnLimit(0)`). Tool calls requested in one turn run concurrently.
    /// `messages` should be non-empty and normally end with a user message.
    ///
    /// # Errors
    ///
    /// * [`LlmError::NotConfigured`] when the config was [`LlmConfig::None`];
    /// * [`LlmError::Credentials`] when no Vertex access token can be had;
    /// * [`LlmError::Upstream`] / [`LlmError::Timeout`] when an HTTP exchange fails;
    /// * [`LlmError::Malformed`] when a model reply cannot be understood;
    /// * [`LlmError::TurnLimit`] when the model still calls tools after `max_turns` calls.
    ///
    /// Tool failures are not errors: they reach the model as results.
    pub async fn chat(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
        runner: &dyn ToolRunner,
        max_turns: u32,
    ) -> Result<ChatReply, LlmError> {
        self.run(messages, tools, runner, max_turns, None).await
    }

    /// [`chat`](Self::chat), streamed: the model is asked for a streamed reply, and
    /// `events` gets the answer's text as it arrives, each tool call as the model makes it,
    /// each result as it returns, and progress of long calls. The return value is the same
    /// as [`chat`](Self::chat)'s: the whole reply, or the error that ended the turn.
    ///
    /// # Errors
    ///
    /// As for [`chat`](Self::chat); a stream that breaks off or ends before the model
    /// finished is [`LlmError::Upstream`].
    pub async fn chat_streamed(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
        runner: &dyn ToolRunner,
        max_turns: u32,
        events: &ChatEvents,
    ) -> Result<ChatReply, LlmError> {
        self.run(messages, tools, runner, max_turns, Some(events))
            .await
    }

    async fn run(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
        runner: &dyn ToolRunner,
        max_turns: u32,
        events: Option<&ChatEvents>,
    ) -> Result<ChatReply, LlmError> {
        let settings = LoopSettings {
            max_turns,
            events,
            tool_images: self.tool_images,
        };
        match &self.backend {
            Backend::None => Err(LlmError::NotConfigured),
            Backend::Vertex(client) => {
                run_tool_loop(client, messages, tools, runner, settings).await
            }
            Backend::OpenAi(client) => {
                run_tool_loop(client, messages, tools, runner, settings).await
            }
        }
    }
}

impl std::fmt::Debug for ChatModel {
    /// Shows the provider and model only; never the API key.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ChatModel")
            .field("model", &self.describe())
            .finish()
    }
}

/// What one model call asked for.
#[derive(Debug)]
enum ModelTurn {
    /// The model answered in text; the loop ends.
    Answer(String),
    /// The model wants these tools run before it continues.
    ToolCalls(Vec<ToolCallRequest>),
}

/// A function call requested by the model.
#[derive(Clone, Debug)]
struct ToolCallRequest {
    /// Provider id pairing the call with its result (OpenAI `tool_calls[].id`,
    /// Gemini `functionCall.id` when the API sends one).
    id: Option<String>,
    name: String,
    arguments: CallArguments,
}

/// The arguments of a requested call, as the loop sees them.
#[derive(Clone, Debug, PartialEq)]
enum CallArguments {
    /// A JSON object: the call runs with it.
    Object(Value),
    /// Anything else: the call does not run, and the model reads `error` as its
    /// result, so it can correct itself.
    Invalid {
        /// What the model sent: its JSON, or the text when it was not JSON.
        sent: Value,
        error: String,
    },
}

impl CallArguments {
    /// Arguments the provider sent as a JSON value; absent or `null` mean none (`{}`).
    fn from_value(tool: &str, value: Option<Value>) -> Self {
        match value {
            None | Some(Value::Null) => Self::Object(Value::Object(Map::new())),
            Some(object @ Value::Object(_)) => Self::Object(object),
            Some(other) => Self::Invalid {
                error: not_an_object(tool, &other.to_string(), None),
                sent: other,
            },
        }
    }

    /// Arguments the provider sent as JSON text; empty text means none (`{}`).
    fn from_json_text(tool: &str, text: &str) -> Self {
        if text.trim().is_empty() {
            return Self::from_value(tool, None);
        }
        match serde_json::from_str::<Value>(text) {
            Ok(value) => Self::from_value(tool, Some(value)),
            Err(error) => Self::Invalid {
                error: not_an_object(tool, text, Some(&error)),
                sent: Value::String(text.to_owned()),
            },
        }
    }

    /// What the call record shows: the object, or what the model sent.
    fn as_sent(&self) -> &Value {
        match self {
            Self::Object(arguments) => arguments,
            Self::Invalid { sent, .. } => sent,
        }
    }
}

/// The tool error a model gets for arguments that are not a JSON object.
fn not_an_object(tool: &str, sent: &str, parse_error: Option<&serde_json::Error>) -> String {
    let sent = excerpt(sent);
    match parse_error {
        None => format!("the arguments of tool call `{tool}` must be a JSON object, got: {sent}"),
        Some(error) => format!(
            "the arguments of tool call `{tool}` must be a JSON object, got text that is not JSON ({error}): {sent}"
        ),
    }
}

/// A finished tool call, ready to go back to the model.
#[derive(Debug)]
struct ToolOutcome {
    call: ToolCallRequest,
    result: Value,
    /// Images for the model to see (empty unless images go to the model).
    images: Vec<ToolImage>,
}

/// How one run of the loop behaves.
struct LoopSettings<'a> {
    max_turns: u32,
    events: Option<&'a ChatEvents>,
    tool_images: bool,
}

/// Keeps the images of `outputs` that fit the per-turn bounds, in call order.
fn bounded_images(outputs: &mut [ToolOutput]) {
    let (mut count, mut bytes) = (0, 0);
    for output in outputs {
        output.images.retain(|image| {
            let fits = count < MAX_TOOL_IMAGES_PER_TURN
                && bytes + image.data.len() <= MAX_TOOL_IMAGE_BYTES_PER_TURN;
            if fits {
                count += 1;
                bytes += image.data.len();
            }
            fits
        });
    }
}

/// One provider's wire format, as the tool loop sees it.
trait Provider: Sync {
    /// The provider-native conversation: messages so far plus tool declarations.
    type Conversation: Send;

    /// Translates the caller's messages and tools into a new conversation.
    fn start(&self, messages: &[ChatMessage], tools: &[ToolSpec]) -> Self::Conversation;

    /// Sends the conversation to the model, appends the model's reply to it,
    /// and returns what the model asked for. With `deltas`, the reply is requested as a
    /// stream and its text goes to `deltas` as it arrives.
    fn next_turn(
        &self,
        conversation: &mut Self::Conversation,
        deltas: Option<&ChatEvents>,
    ) -> impl Future<Output = Result<ModelTurn, LlmError>> + Send;

    /// Appends the results of the calls from the last turn, in call order.
    fn add_tool_results(&self, conversation: &mut Self::Conversation, outcomes: Vec<ToolOutcome>);
}

/// Sends `text` as a [`ChatEvent::Delta`], when there is somewhere to send it.
fn send_delta(deltas: Option<&ChatEvents>, text: &str) {
    if let Some(deltas) = deltas
        && !text.is_empty()
    {
        let _ = deltas.send(ChatEvent::Delta {
            text: text.to_owned(),
        });
    }
}

/// Runs one call through `runner`, or answers it with the tool error when its
/// arguments are not a JSON object.
fn run_call<'a>(
    runner: &'a dyn ToolRunner,
    call: &'a ToolCallRequest,
    progress: ToolProgress,
) -> BoxFuture<'a, ToolOutput> {
    match &call.arguments {
        CallArguments::Object(arguments) => {
            runner.call_reporting(&call.name, arguments.clone(), progress)
        }
        CallArguments::Invalid { error, .. } => {
            tracing::debug!(tool = %call.name, "tool call arguments are not a JSON object");
            futures::future::ready(ToolOutput::from(json!({ "error": error }))).boxed()
        }
    }
}

/// The provider-neutral loop behind [`ChatModel::chat`].
async fn run_tool_loop<P: Provider>(
    provider: &P,
    messages: &[ChatMessage],
    tools: &[ToolSpec],
    runner: &dyn ToolRunner,
    settings: LoopSettings<'_>,
) -> Result<ChatReply, LlmError> {
    let LoopSettings {
        max_turns,
        events,
        tool_images,
    } = settings;
    let mut conversation = provider.start(messages, tools);
    let mut records = Vec::new();
    for turn in 1..=max_turns {
        match provider.next_turn(&mut conversation, events).await? {
            ModelTurn::Answer(reply) => {
                tracing::debug!(turn, tool_calls = records.len(), "model answered");
                return Ok(ChatReply {
                    reply,
                    tool_calls: records,
                    turns: turn,
                });
            }
            ModelTurn::ToolCalls(calls) => {
                let names: Vec<&str> = calls.iter().map(|call| call.name.as_str()).collect();
                tracing::debug!(turn, tools = ?names, "model requested tool calls");
                // Every call has an id for the events (the provider's, else made up here).
                let ids: Vec<String> = calls
                    .iter()
                    .enumerate()
                    .map(|(index, call)| {
                        call.id
                            .clone()
                            .unwrap_or_else(|| format!("call_{turn}_{index}"))
                    })
                    .collect();
                let progress = |index: usize, call: &ToolCallRequest| ToolProgress {
                    events: events.cloned(),
                    id: ids[index].clone(),
                    name: call.name.clone(),
                };
                if let Some(events) = events {
                    for (id, call) in ids.iter().zip(&calls) {
                        let _ = events.send(ChatEvent::ToolCall {
                            id: id.clone(),
                            name: call.name.clone(),
                            arguments: call.arguments.as_sent().clone(),
                        });
                    }
                }
                let results = join_all(calls.iter().enumerate().map(|(index, call)| {
                    let id = ids[index].clone();
                    let name = call.name.clone();
                    run_call(runner, call, progress(index, call)).map(move |output| {
                        if let Some(events) = events {
                            let _ = events.send(ChatEvent::ToolResult {
                                id,
                                name,
                                result: output.result.clone(),
                            });
                        }
                        output
                    })
                }))
                .await;
                let mut results = results;
                if tool_images {
                    bounded_images(&mut results);
                } else {
                    results.iter_mut().for_each(|output| output.images.clear());
                }
                let outcomes: Vec<ToolOutcome> = calls
                    .into_iter()
                    .zip(results)
                    .map(|(call, output)| ToolOutcome {
                        call,
                        result: output.result,
                        images: output.images,
                    })
                    .collect();
                records.extend(outcomes.iter().map(|outcome| ToolCallRecord {
                    name: outcome.call.name.clone(),
                    arguments: outcome.call.arguments.as_sent().clone(),
                    result: outcome.result.clone(),
                }));
                provider.add_tool_results(&mut conversation, outcomes);
            }
        }
    }
    Err(LlmError::TurnLimit(max_turns))
}
