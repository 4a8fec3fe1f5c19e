//! The answer to an `/mcp` request whose body exceeded the limit.
//!
//! The body is read to its end and discarded (up to a bound, `service_core::body`) rather than
//! cut off, so the client's kept-alive connection survives and it gets the answer; on the way
//! past, [`EnvelopeScanner`](super::envelope::EnvelopeScanner) picks out the request's id,
//! method and tool, so the answer is for the very request the client is waiting for.

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use rmcp::model::{ProtocolVersion, ServerResult};
use serde_json::{Value, json};
use service_core::body::Oversized;

use super::{envelope::Envelope, mcp::jsonrpc_error_response};
use crate::server::{ErrorCode, tool_error};

/// The answer to a request whose body exceeded the limit, which was read (drained) rather
/// than kept. A `tools/call` whose id was found gets an ordinary tool result with
/// `isError: true` (what a model reads and can act on: send less); anything else a JSON-RPC
/// error with HTTP 413, carrying the request's id when it had one. When the body was not
/// drained to its end, the answer closes the connection, which cannot carry another request.
pub(super) fn oversized_answer(
    headers: &HeaderMap,
    oversized: Oversized,
    envelope: &Envelope,
) -> Response {
    let limit = oversized.limit;
    let size = oversized.size_phrase();
    let mut response = match (&envelope.id, envelope.method.as_deref(), oversized.drained) {
        (Some(id), Some("tools/call"), true) => {
            let tool = envelope.tool.as_deref().unwrap_or("the tool");
            let message = format!(
                "the request {size}exceeds the sidecar's limit of {limit} bytes, so {tool} was \
                 not run. Send less data: fewer or coarser chart points (at most 50,000 in all), \
                 a smaller or simpler SVG, or split the work into several calls"
            );
            let mut result =
                ServerResult::CallToolResult(tool_error(ErrorCode::InvalidArguments, message));
            if !speaks_2026_07_28(headers) {
                result.strip_result_type_for_legacy_peer();
            }
            (
                StatusCode::OK,
                Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })),
            )
                .into_response()
        }
        _ => {
            let mut message =
                format!("request body {size}exceeds the limit of {limit} bytes; send less data");
            if !oversized.drained {
                message.push_str(" (the rest of the body was not read; the connection is closed)");
            }
            jsonrpc_error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                envelope.id.clone().unwrap_or(Value::Null),
                -32600,
                &message,
            )
        }
    };
    if !oversized.drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether the request is on protocol revision 2026-07-28 or later (its results carry
/// `resultType`).
fn speaks_2026_07_28(headers: &HeaderMap) -> bool {
    headers
        .get("mcp-protocol-version")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|version| version >= ProtocolVersion::V_2026_07_28.as_str())
}
