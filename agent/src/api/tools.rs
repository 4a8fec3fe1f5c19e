//! `GET /v1/tools` and `POST /v1/tools/{name}`: every MCP server's tools, listed together and
//! callable with a JSON object of arguments.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
};
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, JsonBody};

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

/// Calls a tool with the body as its arguments; answers with the MCP tool result
/// (`content`, `structuredContent`, `isError: false`), or an error whose status follows the
/// failure.
pub async fn call(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    JsonBody(arguments): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let Value::Object(arguments) = arguments else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object of the tool's arguments",
        ));
    };
    let result = state.hub.call(&name, arguments).await?;
    if result.is_error == Some(true) {
        return Err(ApiError::from_tool_failure(&result));
    }
    Ok(Json(serde_json::to_value(result).unwrap_or_default()))
}

/// Arguments for a sidecar tool, as a JSON object.
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
