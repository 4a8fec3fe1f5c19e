//! `POST /v1/chat`: the LLM tool loop. The model gets every MCP tool as a function; the agent
//! runs the calls it asks for, through MCP, until it answers (at most `LLM_MAX_TURNS` model
//! calls).
//!
//! Body: `{"messages": [{"role": "user"|"assistant", "content": "…"}]}` (or `{"message": "…"}`
//! for one user turn). Answer: `{"reply", "tool_calls": [{name, arguments, result}], "turns"}`.

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, JsonBody, tools::object};
use crate::llm::{ChatMessage, LlmError, Role, ToolRunner, ToolSpec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    #[serde(default)]
    messages: Vec<ChatMessage>,
    #[serde(default)]
    message: Option<String>,
}

/// Runs the model's tool calls through the MCP hub.
struct HubRunner<'a> {
    state: &'a AppState,
}

impl ToolRunner for HubRunner<'_> {
    fn call<'a>(&'a self, name: &'a str, arguments: Value) -> BoxFuture<'a, Value> {
        Box::pin(async move {
            match self.state.hub.call(name, object(arguments)).await {
                Ok(result) if result.is_error == Some(true) => {
                    let structured = result.structured_content.clone().unwrap_or_default();
                    if structured.get("error").is_some() {
                        structured
                    } else {
                        json!({ "error": "the tool reported an error", "content": result.content })
                    }
                }
                Ok(result) => match result.structured_content {
                    Some(structured) => structured,
                    None => json!({ "content": result.content }),
                },
                Err(error) => json!({ "error": error.to_string() }),
            }
        })
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

pub async fn chat(
    State(state): State<Arc<AppState>>,
    JsonBody(request): JsonBody<ChatRequest>,
) -> Result<Json<Value>, ApiError> {
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
    let runner = HubRunner { state: &state };
    let reply = state
        .model
        .chat(&messages, &tools, &runner, state.llm_max_turns)
        .await?;
    Ok(Json(serde_json::to_value(reply).unwrap_or_default()))
}
