//! Gemini on Vertex AI: the `generateContent` wire format and authentication.
//!
//! # Wire format
//!
//! `POST {endpoint}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`
//! ([REST reference](https://cloud.google.com/vertex-ai/generative-ai/docs/reference/rest/v1/projects.locations.endpoints/generateContent)):
//!
//! ```json
//! {"contents": [{"role": "user" | "model", "parts": [
//!     {"text": "..."} | {"functionCall": {"name": "...", "args": {...}}}
//!                     | {"functionResponse": {"name": "...", "response": {...}}}]}],
//!  "tools": [{"functionDeclarations": [
//!     {"name": "...", "description": "...", "parametersJsonSchema": {...}}]}]}
//! ```
//!
//! The reply's `candidates[0].content.parts[]` carry `text` and/or
//! `functionCall` parts. Function results go back as one `user`-role content
//! holding a `functionResponse` part per call, after the model's content.
//!
//! Decisions:
//! * Tool parameters use `parametersJsonSchema` (a `google.protobuf.Value`
//!   holding JSON Schema, present in the **v1** `FunctionDeclaration` and
//!   mutually exclusive with `parameters`), not `parameters`, whose OpenAPI 3.0
//!   subset rejects common MCP schema keywords such as `additionalProperties`.
//!   The schema still goes through [`model_schema`] so no `$ref`s remain.
//! * The model's content is sent back exactly as received, including parts
//!   and fields this module does not interpret (e.g. `thoughtSignature`, which
//!   Gemini requires to be echoed alongside function calls).
//! * `functionResponse.response` must be a JSON object: object results are
//!   sent as they are (so the runner's `{"error": ...}` lands under the
//!   documented `error` key); anything else is wrapped as `{"output": value}`.
//! * `functionCall.args` that are not a JSON object are the model's mistake,
//!   not a malformed reply: the call gets a tool error (see the tool loop in
//!   `super`).
//!
//! # Authentication
//!
//! Every request carries the headers produced by
//! [`Credentials::headers`](google_cloud_auth::credentials::Credentials::headers)
//! (`Authorization: Bearer <access token>`, plus `x-goog-user-project` when a
//! quota project is configured). By default the credentials are Application
//! Default Credentials, built on first use; on Cloud Run that resolves to the
//! metadata server, whose address `GCE_METADATA_HOST` overrides.

use std::sync::Arc;

use google_cloud_auth::credentials::{self, CacheableResource, Credentials};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use super::error::{LlmError, error_chain};
use super::transport::{HttpTransport, checked_base_url, excerpt};
use super::{
    CallArguments, ChatEvents, ChatMessage, ModelTurn, Provider, Role, ToolCallRequest,
    ToolOutcome, ToolSpec, model_schema,
};

/// Label used in error messages and logs.
const PROVIDER: &str = "vertex";

/// Where Vertex AI requests get their authentication headers.
#[derive(Clone, Debug, Default)]
pub enum VertexAuth {
    /// [Application Default Credentials], built on the first request
    /// (`GOOGLE_APPLICATION_CREDENTIALS`, the gcloud well-known file, or the
    /// metadata server on Cloud Run / GCE, overridable with `GCE_METADATA_HOST`).
    ///
    /// [Application Default Credentials]: https://cloud.google.com/docs/authentication/application-default-credentials
    #[default]
    ApplicationDefault,
    /// Credentials built by the caller, e.g. with
    /// `google_cloud_auth::credentials::mds::Builder::default().with_endpoint(..)`
    /// to target a specific metadata server.
    Credentials(Credentials),
}

/// The Vertex part of [`LlmConfig`](super::LlmConfig).
pub(super) struct VertexSettings {
    pub(super) project: String,
    pub(super) location: String,
    pub(super) model: String,
    pub(super) endpoint: Option<String>,
}

/// A Vertex AI Gemini model reachable over HTTP.
#[derive(Clone, Debug)]
pub(super) struct VertexClient {
    transport: HttpTransport,
    model: String,
    /// The full `:generateContent` URL.
    generate_content_url: String,
    /// Filled on first use for ADC; pre-filled for caller-provided credentials.
    credentials: Arc<OnceCell<Credentials>>,
}

impl VertexClient {
    /// Validates the settings and builds the URL. No network I/O.
    pub(super) fn new(
        transport: HttpTransport,
        settings: VertexSettings,
        auth: VertexAuth,
    ) -> Result<Self, LlmError> {
        let VertexSettings {
            project,
            location,
            model,
            endpoint,
        } = settings;
        let project = path_segment("VERTEX_PROJECT", &project)?;
        let location = path_segment("VERTEX_LOCATION", &location)?;
        let model = path_segment("LLM_MODEL", &model)?;

        let endpoint = match endpoint {
            Some(endpoint) => checked_base_url("Vertex endpoint", &endpoint)?,
            None if location == "global" => "https://aiplatform.googleapis.com".to_owned(),
            None => format!("https://{location}-aiplatform.googleapis.com"),
        };
        let generate_content_url = format!(
            "{endpoint}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent"
        );

        let credentials = match auth {
            VertexAuth::ApplicationDefault => OnceCell::new(),
            VertexAuth::Credentials(credentials) => OnceCell::from(credentials),
        };
        Ok(Self {
            transport,
            model: model.to_owned(),
            generate_content_url,
            credentials: Arc::new(credentials),
        })
    }

    pub(super) fn model(&self) -> &str {
        &self.model
    }

    /// The authentication headers for one request, fetching or refreshing the
    /// access token as needed (google-cloud-auth caches it). Bounded by the timeout.
    async fn auth_headers(&self) -> Result<HeaderMap, LlmError> {
        let credentials = self
            .credentials
            .get_or_try_init(|| async {
                credentials::Builder::default().build().map_err(|error| {
                    LlmError::Credentials(format!(
                        "cannot load Application Default Credentials: {}",
                        error_chain(&error)
                    ))
                })
            })
            .await?;
        let headers = self
            .transport
            .within(credentials.headers(http::Extensions::new()))
            .await?
            .map_err(|error| {
                LlmError::Credentials(format!(
                    "cannot get an access token: {}",
                    error_chain(&error)
                ))
            })?;
        match headers {
            CacheableResource::New { data, .. } => Ok(data),
            // Only returned when the request carried an entity tag, which ours never does.
            CacheableResource::NotModified => Err(LlmError::Credentials(
                "credentials answered NotModified to a request without an entity tag".to_owned(),
            )),
        }
    }
}

/// Checks a value interpolated into the request URL: non-empty and made of
/// characters that need no escaping (project ids, regions, model ids).
fn path_segment<'a>(variable: &str, value: &'a str) -> Result<&'a str, LlmError> {
    let value = value.trim();
    let acceptable = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@');
    if value.is_empty() || !value.chars().all(acceptable) {
        return Err(LlmError::InvalidConfig(format!(
            "{variable} must be a non-empty id of letters, digits, '-', '_', '.' or '@' (got {value:?})"
        )));
    }
    Ok(value)
}

/// The Vertex conversation: what is re-sent on every turn.
pub(super) struct Conversation {
    contents: Vec<Content>,
    tools: Vec<Tool>,
}

impl Provider for VertexClient {
    type Conversation = Conversation;

    fn start(&self, messages: &[ChatMessage], tools: &[ToolSpec]) -> Conversation {
        let contents = messages
            .iter()
            .map(|message| Content {
                role: Some(match message.role {
                    Role::User => ContentRole::User,
                    Role::Assistant => ContentRole::Model,
                }),
                parts: vec![Part::text(&message.content)],
            })
            .collect();
        let tools = if tools.is_empty() {
            Vec::new()
        } else {
            vec![Tool {
                function_declarations: tools
                    .iter()
                    .map(|tool| FunctionDeclaration {
                        name: tool.name.clone(),
                        description: tool.description.clone(),
                        parameters_json_schema: model_schema(&tool.parameters),
                    })
                    .collect(),
            }]
        };
        Conversation { contents, tools }
    }

    async fn next_turn(
        &self,
        conversation: &mut Conversation,
        deltas: Option<&ChatEvents>,
    ) -> Result<ModelTurn, LlmError> {
        let headers = self.auth_headers().await?;
        let request = GenerateContentRequest {
            contents: &conversation.contents,
            tools: &conversation.tools,
        };
        let response: GenerateContentResponse = match deltas {
            None => {
                self.transport
                    .post_json(PROVIDER, &self.generate_content_url, headers, &request)
                    .await?
            }
            Some(deltas) => {
                // `:streamGenerateContent?alt=sse`: each event is a GenerateContentResponse
                // carrying the next parts of the one candidate.
                let url = format!(
                    "{}?alt=sse",
                    self.generate_content_url
                        .replace(":generateContent", ":streamGenerateContent")
                );
                let mut assembly = StreamAssembly::default();
                self.transport
                    .post_sse(PROVIDER, &url, headers, &request, |data| {
                        assembly.add(data, deltas)
                    })
                    .await?;
                assembly.finish()?
            }
        };
        let (content, turn) = interpret(response)?;
        conversation.contents.push(content);
        Ok(turn)
    }

    fn add_tool_results(&self, conversation: &mut Conversation, outcomes: Vec<ToolOutcome>) {
        let mut parts = Vec::with_capacity(outcomes.len());
        let mut pictures = Vec::new();
        for ToolOutcome {
            call,
            result,
            images,
        } in outcomes
        {
            parts.push(Part {
                function_response: Some(FunctionResponse {
                    id: call.id,
                    name: call.name,
                    response: as_response_object(result),
                }),
                ..Part::default()
            });
            pictures.extend(images.into_iter().map(|image| {
                let mut part = Part::default();
                part.other.insert(
                    "inlineData".to_owned(),
                    json!({ "mimeType": image.mime_type, "data": image.data }),
                );
                part
            }));
        }
        // The pictures follow the responses in the same user turn.
        parts.extend(pictures);
        conversation.contents.push(Content {
            role: Some(ContentRole::User),
            parts,
        });
    }
}

/// Reads the first candidate: the content to keep in the conversation (with
/// its role normalised to `model`) and what it asks for.
fn interpret(response: GenerateContentResponse) -> Result<(Content, ModelTurn), LlmError> {
    let Some(candidate) = response.candidates.into_iter().next() else {
        let reason = response
            .prompt_feedback
            .and_then(|feedback| feedback.block_reason)
            .map_or_else(String::new, |reason| format!(" (prompt blocked: {reason})"));
        return Err(LlmError::Malformed(format!(
            "{PROVIDER}: reply has no candidates{reason}"
        )));
    };
    let finish = describe_finish(&candidate);
    let Some(mut content) = candidate
        .content
        .filter(|content| !content.parts.is_empty())
    else {
        return Err(LlmError::Malformed(format!(
            "{PROVIDER}: candidate has no content ({finish})"
        )));
    };
    content.role = Some(ContentRole::Model);

    let calls: Vec<ToolCallRequest> = content
        .parts
        .iter()
        .filter_map(|part| part.function_call.as_ref())
        .map(|call| ToolCallRequest {
            id: call.id.clone(),
            name: call.name.clone(),
            arguments: CallArguments::from_value(&call.name, call.args.clone()),
        })
        .collect();
    if !calls.is_empty() {
        return Ok((content, ModelTurn::ToolCalls(calls)));
    }

    // Thought summaries are not part of the answer.
    let mut answer_parts = content
        .parts
        .iter()
        .filter(|part| part.thought != Some(true))
        .filter_map(|part| part.text.as_deref())
        .peekable();
    if answer_parts.peek().is_none() {
        return Err(LlmError::Malformed(format!(
            "{PROVIDER}: candidate has neither text nor functionCall parts ({finish})"
        )));
    }
    let answer = answer_parts.collect::<String>();
    Ok((content, ModelTurn::Answer(answer)))
}

/// A streamed reply put back together: the parts of the candidate in the order they came
/// (text pieces and whole function calls), and its finish reason from the last event.
#[derive(Default)]
struct StreamAssembly {
    parts: Vec<Part>,
    finish_reason: Option<String>,
    finish_message: Option<String>,
    prompt_feedback: Option<PromptFeedback>,
    events: usize,
}

impl StreamAssembly {
    fn add(&mut self, data: &str, deltas: &ChatEvents) -> Result<bool, LlmError> {
        let chunk: GenerateContentResponse = serde_json::from_str(data).map_err(|error| {
            LlmError::Malformed(format!(
                "{PROVIDER}: a streamed event is not a GenerateContentResponse ({error}): {}",
                excerpt(data)
            ))
        })?;
        self.events += 1;
        if chunk.prompt_feedback.is_some() {
            self.prompt_feedback = chunk.prompt_feedback;
        }
        if let Some(candidate) = chunk.candidates.into_iter().next() {
            if let Some(content) = candidate.content {
                for part in content.parts {
                    if part.thought != Some(true)
                        && let Some(text) = &part.text
                    {
                        super::send_delta(Some(deltas), text);
                    }
                    self.parts.push(part);
                }
            }
            if candidate.finish_reason.is_some() {
                self.finish_reason = candidate.finish_reason;
                self.finish_message = candidate.finish_message;
            }
        }
        Ok(false)
    }

    /// The reply as a non-streamed one. A stream that ended without a finish reason (and not
    /// because the prompt was blocked) was cut off.
    fn finish(self) -> Result<GenerateContentResponse, LlmError> {
        let blocked = self
            .prompt_feedback
            .as_ref()
            .is_some_and(|feedback| feedback.block_reason.is_some());
        if self.finish_reason.is_none() && !blocked {
            return Err(LlmError::Upstream(format!(
                "{PROVIDER}: the reply stream ended before the model finished (no finishReason \
                 after {} events); the answer so far was cut off",
                self.events
            )));
        }
        let candidates = if self.parts.is_empty() && blocked {
            Vec::new()
        } else {
            vec![Candidate {
                content: Some(Content {
                    role: Some(ContentRole::Model),
                    parts: self.parts,
                }),
                finish_reason: self.finish_reason,
                finish_message: self.finish_message,
            }]
        };
        Ok(GenerateContentResponse {
            candidates,
            prompt_feedback: self.prompt_feedback,
        })
    }
}

/// `finishReason X[: finishMessage]`, for error messages.
fn describe_finish(candidate: &Candidate) -> String {
    let reason = candidate.finish_reason.as_deref().unwrap_or("unspecified");
    match candidate.finish_message.as_deref() {
        Some(message) => format!("finishReason {reason}: {}", excerpt(message)),
        None => format!("finishReason {reason}"),
    }
}

/// `functionResponse.response` must be an object; wrap anything else.
fn as_response_object(result: Value) -> Value {
    match result {
        Value::Object(_) => result,
        other => json!({ "output": other }),
    }
}

// ---- Wire types (field names as in the v1 REST reference) ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentRequest<'a> {
    contents: &'a [Content],
    #[serde(skip_serializing_if = "<[Tool]>::is_empty")]
    tools: &'a [Tool],
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<ContentRole>,
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ContentRole {
    User,
    Model,
}

/// A content part. Only the fields the loop reads are typed; everything else
/// (`thoughtSignature`, `inlineData`, ...) is kept in `other` and echoed back.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function_response: Option<FunctionResponse>,
    /// Marks thought summaries, which are not part of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thought: Option<bool>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

impl Part {
    fn text(text: &str) -> Self {
        Self {
            text: Some(text.to_owned()),
            ..Self::default()
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FunctionCall {
    /// Sent by newer API versions; echoed in the matching `functionResponse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    name: String,
    /// Absent for functions without parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    args: Option<Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FunctionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    name: String,
    response: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tool {
    function_declarations: Vec<FunctionDeclaration>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration {
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    parameters_json_schema: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
    /// Explains some finish reasons, e.g. `MALFORMED_FUNCTION_CALL`.
    #[serde(default)]
    finish_message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}
