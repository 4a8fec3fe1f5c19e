//! OpenAI-compatible chat completions: the wire format.
//!
//! `POST {base_url}/chat/completions`, with `Authorization: Bearer {api_key}`
//! when a key is configured
//! ([reference](https://platform.openai.com/docs/api-reference/chat/create)):
//!
//! ```json
//! {"model": "...",
//!  "messages": [{"role": "user" | "assistant", "content": "..."},
//!               {"role": "assistant", "content": null, "tool_calls": [
//!                   {"id": "...", "type": "function", "function": {"name": "...", "arguments": "<JSON string>"}}]},
//!               {"role": "tool", "tool_call_id": "...", "content": "<JSON string>"}],
//!  "tools": [{"type": "function", "function": {"name": "...", "description": "...", "parameters": {...}}}]}
//! ```
//!
//! The reply's `choices[0].message` has `content` and/or `tool_calls`. When it
//! calls tools, the assistant message is appended as received (its content and
//! calls) followed by one `tool` message per call, in call order, each naming
//! its `tool_call_id` and carrying the result serialised as a JSON string.
//!
//! Leniency for "compatible" servers: empty `arguments` mean `{}`; a missing
//! call id is replaced by a generated one (used consistently in both the
//! echoed assistant message and the tool message); a `refusal` without
//! `content` counts as the answer. `arguments` that are not a JSON object are
//! the model's mistake, not a malformed reply: the call gets a tool error
//! (see the tool loop in `super`).

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::LlmError;
use super::transport::{HttpTransport, StreamEnd, checked_base_url, excerpt};
use super::{
    CallArguments, ChatEvents, ChatMessage, ModelTurn, Provider, Role, ToolCallRequest,
    ToolOutcome, ToolSpec, model_schema,
};

/// Label used in error messages and logs.
const PROVIDER: &str = "openai";

/// The `type` of function tools and tool calls.
const FUNCTION_TYPE: &str = "function";

/// An OpenAI-compatible chat completions endpoint.
#[derive(Clone, Debug)]
pub(super) struct OpenAiClient {
    transport: HttpTransport,
    model: String,
    /// `{base_url}/chat/completions`.
    completions_url: String,
    /// `Authorization` and anything else every request carries. Marked
    /// sensitive so it never shows up in `Debug` output.
    headers: HeaderMap,
}

impl OpenAiClient {
    /// Validates the settings. No network I/O.
    pub(super) fn new(
        transport: HttpTransport,
        base_url: &str,
        api_key: Option<&str>,
        model: &str,
    ) -> Result<Self, LlmError> {
        let base_url = checked_base_url("OPENAI_BASE_URL", base_url)?;
        let model = model.trim().to_owned();
        if model.is_empty() {
            return Err(LlmError::InvalidConfig(
                "LLM_MODEL must not be empty".to_owned(),
            ));
        }

        let mut headers = HeaderMap::new();
        if let Some(api_key) = api_key.map(str::trim).filter(|key| !key.is_empty()) {
            let mut value = HeaderValue::from_str(&format!("Bearer {api_key}")).map_err(|_| {
                LlmError::InvalidConfig(
                    "OPENAI_API_KEY contains characters not allowed in an HTTP header".to_owned(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(Self {
            transport,
            model,
            completions_url: format!("{base_url}/chat/completions"),
            headers,
        })
    }

    pub(super) fn model(&self) -> &str {
        &self.model
    }
}

/// The OpenAI conversation: what is re-sent on every turn.
pub(super) struct Conversation {
    messages: Vec<Message>,
    tools: Vec<ToolDefinition>,
    /// Counts assistant turns, to generate unique ids for calls that lack one.
    assistant_turns: usize,
}

impl Provider for OpenAiClient {
    type Conversation = Conversation;

    fn start(&self, messages: &[ChatMessage], tools: &[ToolSpec]) -> Conversation {
        let messages = messages
            .iter()
            .map(|message| match message.role {
                Role::User => Message::User {
                    content: message.content.clone(),
                },
                Role::Assistant => Message::Assistant {
                    content: Some(message.content.clone()),
                    tool_calls: Vec::new(),
                },
            })
            .collect();
        let tools = tools
            .iter()
            .map(|tool| ToolDefinition {
                kind: FUNCTION_TYPE,
                function: FunctionDefinition {
                    name: tool.name.clone(),
                    description: tool.description.clone(),
                    parameters: model_schema(&tool.parameters),
                },
            })
            .collect();
        Conversation {
            messages,
            tools,
            assistant_turns: 0,
        }
    }

    async fn next_turn(
        &self,
        conversation: &mut Conversation,
        deltas: Option<&ChatEvents>,
    ) -> Result<ModelTurn, LlmError> {
        let request = ChatCompletionRequest {
            model: &self.model,
            messages: &conversation.messages,
            tools: &conversation.tools,
            stream: deltas.is_some(),
        };
        let response: ChatCompletionResponse = match deltas {
            None => {
                self.transport
                    .post_json(
                        PROVIDER,
                        &self.completions_url,
                        self.headers.clone(),
                        &request,
                    )
                    .await?
            }
            Some(deltas) => {
                let mut assembly = StreamAssembly::default();
                let end = self
                    .transport
                    .post_sse(
                        PROVIDER,
                        &self.completions_url,
                        self.headers.clone(),
                        &request,
                        |data| assembly.add(data, deltas),
                    )
                    .await?;
                assembly.finish(end)?
            }
        };
        conversation.assistant_turns += 1;
        let (message, turn) = interpret(response, conversation.assistant_turns)?;
        conversation.messages.push(message);
        Ok(turn)
    }

    fn add_tool_results(&self, conversation: &mut Conversation, outcomes: Vec<ToolOutcome>) {
        let mut images = Vec::new();
        for ToolOutcome {
            call,
            result,
            images: returned,
        } in outcomes
        {
            // `interpret` gives every call an id.
            let tool_call_id = call.id.unwrap_or_default();
            if !returned.is_empty() {
                images.push(UserPart::Text {
                    text: format!(
                        "Images returned by tool call {tool_call_id} ({}):",
                        call.name
                    ),
                });
                images.extend(returned.into_iter().map(|image| UserPart::ImageUrl {
                    image_url: ImageUrl {
                        url: format!("data:{};base64,{}", image.mime_type, image.data),
                    },
                }));
            }
            conversation.messages.push(Message::Tool {
                tool_call_id,
                content: result.to_string(),
            });
        }
        // Tool messages carry text only: the pictures follow as the user's message.
        if !images.is_empty() {
            conversation
                .messages
                .push(Message::UserParts { content: images });
        }
    }
}

/// Reads the first choice: the assistant message to keep in the conversation
/// and what it asks for. `turn` makes generated call ids unique.
fn interpret(
    response: ChatCompletionResponse,
    turn: usize,
) -> Result<(Message, ModelTurn), LlmError> {
    if let Some(error) = response.error {
        // Some compatible servers report failures with a 200 status.
        return Err(LlmError::Upstream(format!(
            "{PROVIDER}: reply carries an error: {}",
            excerpt(&error.to_string())
        )));
    }
    let Some(choice) = response.choices.into_iter().next() else {
        return Err(LlmError::Malformed(format!(
            "{PROVIDER}: reply has no choices"
        )));
    };
    let finish_reason = choice.finish_reason.as_deref().unwrap_or("unspecified");
    let Some(message) = choice.message else {
        return Err(LlmError::Malformed(format!(
            "{PROVIDER}: choice has no message (finish_reason {finish_reason})"
        )));
    };
    let tool_calls = message.tool_calls.unwrap_or_default();

    if tool_calls.is_empty() {
        let Some(answer) = message.content.or(message.refusal) else {
            return Err(LlmError::Malformed(format!(
                "{PROVIDER}: message has neither content nor tool_calls (finish_reason {finish_reason})"
            )));
        };
        let kept = Message::Assistant {
            content: Some(answer.clone()),
            tool_calls: Vec::new(),
        };
        return Ok((kept, ModelTurn::Answer(answer)));
    }

    let mut echoed_calls = Vec::with_capacity(tool_calls.len());
    let mut requests = Vec::with_capacity(tool_calls.len());
    for (index, mut call) in tool_calls.into_iter().enumerate() {
        if call.kind != FUNCTION_TYPE {
            return Err(LlmError::Malformed(format!(
                "{PROVIDER}: tool call of unsupported type {:?}",
                call.kind
            )));
        }
        if call.id.is_empty() {
            call.id = format!("call_{turn}_{index}");
        }
        requests.push(ToolCallRequest {
            id: Some(call.id.clone()),
            name: call.function.name.clone(),
            arguments: CallArguments::from_json_text(&call.function.name, &call.function.arguments),
        });
        echoed_calls.push(call);
    }
    let kept = Message::Assistant {
        content: message.content,
        tool_calls: echoed_calls,
    };
    Ok((kept, ModelTurn::ToolCalls(requests)))
}

/// A streamed reply (`stream: true`) put back together: the text as it came, and each tool
/// call from the fragments that name it by `index` (its id and name in the first, its
/// arguments spread over many), so the result reads like the non-streamed reply.
#[derive(Default)]
struct StreamAssembly {
    content: String,
    refusal: String,
    calls: std::collections::BTreeMap<u64, ToolCall>,
    finish_reason: Option<String>,
    done: bool,
}

impl StreamAssembly {
    /// Takes one event's data; `true` at `[DONE]`.
    fn add(&mut self, data: &str, deltas: &ChatEvents) -> Result<bool, LlmError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(true);
        }
        let chunk: ChunkResponse = serde_json::from_str(data).map_err(|error| {
            LlmError::Malformed(format!(
                "{PROVIDER}: a streamed chunk is not what the chat completions stream sends \
                 ({error}): {}",
                excerpt(data)
            ))
        })?;
        if let Some(error) = chunk.error {
            return Err(LlmError::Upstream(format!(
                "{PROVIDER}: the stream carries an error: {}",
                excerpt(&error.to_string())
            )));
        }
        // Usage-only chunks have no choices.
        let Some(choice) = chunk.choices.into_iter().next() else {
            return Ok(false);
        };
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason);
        }
        let Some(delta) = choice.delta else {
            return Ok(false);
        };
        if let Some(text) = delta.content {
            super::send_delta(Some(deltas), &text);
            self.content.push_str(&text);
        }
        if let Some(text) = delta.refusal {
            self.refusal.push_str(&text);
        }
        for fragment in delta.tool_calls.unwrap_or_default() {
            let call = self
                .calls
                .entry(fragment.index)
                .or_insert_with(|| ToolCall {
                    id: String::new(),
                    kind: function_type(),
                    function: FunctionCall {
                        name: String::new(),
                        arguments: String::new(),
                    },
                });
            if let Some(id) = fragment.id.filter(|id| !id.is_empty()) {
                call.id = id;
            }
            if let Some(kind) = fragment.kind {
                call.kind = kind;
            }
            if let Some(function) = fragment.function {
                if let Some(name) = function.name {
                    call.function.name.push_str(&name);
                }
                if let Some(arguments) = function.arguments {
                    call.function.arguments.push_str(&arguments);
                }
            }
        }
        Ok(false)
    }

    /// The reply as a non-streamed one; an error for a stream that ended before the model
    /// said it was done (no `[DONE]` and no finish reason: the connection was cut).
    fn finish(self, end: StreamEnd) -> Result<ChatCompletionResponse, LlmError> {
        if end == StreamEnd::Closed && !self.done && self.finish_reason.is_none() {
            return Err(LlmError::Upstream(format!(
                "{PROVIDER}: the reply stream ended before the model finished (no finish_reason, \
                 no [DONE]); the answer so far was cut off"
            )));
        }
        let tool_calls: Vec<ToolCall> = self.calls.into_values().collect();
        let message = ResponseMessage {
            content: (!self.content.is_empty() || tool_calls.is_empty() && self.refusal.is_empty())
                .then_some(self.content),
            refusal: (!self.refusal.is_empty()).then_some(self.refusal),
            tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
        };
        Ok(ChatCompletionResponse {
            choices: vec![Choice {
                message: Some(message),
                finish_reason: self.finish_reason,
            }],
            error: None,
        })
    }
}

// ---- Wire types ----

#[derive(Serialize)]
struct ChatCompletionRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    /// Omitted when empty: the API rejects an empty `tools` array.
    #[serde(skip_serializing_if = "<[ToolDefinition]>::is_empty")]
    tools: &'a [ToolDefinition],
    /// `true` asks for the reply as server-sent `chat.completion.chunk`s.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

/// One `chat.completion.chunk` of a streamed reply.
#[derive(Deserialize)]
struct ChunkResponse {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<ChunkDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallFragment>>,
}

/// A piece of a tool call: `index` says which call it belongs to.
#[derive(Deserialize)]
struct ToolCallFragment {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    function: Option<FunctionFragment>,
}

#[derive(Deserialize)]
struct FunctionFragment {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum Message {
    User {
        content: String,
    },
    /// A user message of several parts (text and images).
    #[serde(rename = "user")]
    UserParts {
        content: Vec<UserPart>,
    },
    Assistant {
        /// `null` when the message only carries tool calls.
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        tool_call_id: String,
        /// The tool's result as a JSON string.
        content: String,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum UserPart {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Serialize)]
struct ImageUrl {
    /// A `data:` URL.
    url: String,
}

#[derive(Serialize)]
struct ToolDefinition {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionDefinition,
}

#[derive(Serialize)]
struct FunctionDefinition {
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    parameters: Value,
}

/// A tool call, read from the reply and echoed back in the assistant message.
#[derive(Debug, Serialize, Deserialize)]
struct ToolCall {
    #[serde(default)]
    id: String,
    #[serde(rename = "type", default = "function_type")]
    kind: String,
    function: FunctionCall,
}

fn function_type() -> String {
    FUNCTION_TYPE.to_owned()
}

#[derive(Debug, Serialize, Deserialize)]
struct FunctionCall {
    name: String,
    /// JSON-encoded arguments object.
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct ChatCompletionResponse {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<ResponseMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ResponseMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    /// `null`, absent or a list.
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}
