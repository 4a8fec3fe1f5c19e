//! `GET /v1/tools` and `POST /v1/tools/{name}`: every MCP server's tools, listed together and
//! callable with a JSON object of arguments.
//!
//! A call with `Prefer: respond-async` (RFC 7240) declares the MCP tasks extension to a server
//! that runs tasks; if the server answers with a task, the answer is 202 with
//! `Location: /v1/tasks/{id}`, `Preference-Applied: respond-async` and the task (see
//! [`super::tasks`]). Otherwise, and without the preference, the answer is the tool's result.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use rmcp::model::CallToolResult;
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, JsonBody, tasks};
use crate::mcp::upstream::ToolAnswer;

/// The tools, with their schemas, as `{"tools": [{name, server, description, input_schema,
/// output_schema?}]}`.
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    if !state.hub.sidecar().is_connected().await {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the sidecar is not connected yet; its tools are unknown (see /readyz)",
        ));
    }
    let tools: Vec<Value> = state
        .hub
        .tools()
        .await
        .into_iter()
        .map(|exposed| {
            json!({
                "name": exposed.name,
                "server": exposed.server,
                "description": exposed.tool.description,
                "input_schema": exposed.tool.input_schema,
                "output_schema": exposed.tool.output_schema,
            })
        })
        .collect();
    Ok(Json(json!({ "tools": tools })))
}

/// Whether the request carries the `respond-async` preference (RFC 7240: `Prefer` headers are
/// comma-separated preferences, each `token[=value][; parameters]`, tokens case-insensitive).
fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|preference| {
            let token = preference.split(';').next().unwrap_or_default();
            token.split('=').next().unwrap_or_default().trim()
        })
        .any(|token| token.eq_ignore_ascii_case("respond-async"))
}

/// Calls a tool with the body as its arguments; answers with the MCP tool result
/// (`content`, `structuredContent`, `isError: false`), or an error whose status follows the
/// failure; with `Prefer: respond-async`, possibly with a task (202).
pub async fn call(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonBody(arguments): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let Value::Object(arguments) = arguments else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object of the tool's arguments",
        ));
    };
    if prefers_async(&headers) {
        let answered = state.hub.call_as_task(&name, arguments).await?;
        return match answered.answer {
            ToolAnswer::Task(task) => Ok(tasks::accepted(&answered.server, &task)),
            ToolAnswer::Result(result) => tool_result(result),
        };
    }
    tool_result(state.hub.call(&name, arguments).await?)
}

fn tool_result(result: CallToolResult) -> Result<Response, ApiError> {
    if result.is_error == Some(true) {
        return Err(ApiError::from_tool_failure(&result));
    }
    Ok(Json(serde_json::to_value(result).unwrap_or_default()).into_response())
}

/// Arguments for a sidecar tool, as a JSON object.
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("prefer", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn respond_async_is_found_among_other_preferences() {
        for values in [
            &["respond-async"][..],
            &["Respond-Async"],
            &["wait=10, respond-async"],
            &["return=minimal", "respond-async; foo=bar"],
        ] {
            assert!(prefers_async(&prefer(values)), "{values:?}");
        }
        for values in [
            &[][..],
            &["wait=10"],
            &["respond-asynchronously"],
            &["x=respond-async"],
        ] {
            assert!(!prefers_async(&prefer(values)), "{values:?}");
        }
    }
}
