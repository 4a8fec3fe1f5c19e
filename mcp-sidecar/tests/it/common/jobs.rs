//! Driving render jobs through an MCP client, as an agent would.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{McpClient, call, structured_ok, tool_error_message};

/// A small bar chart spec.
pub fn chart_spec(width: u32, height: u32, format: &str) -> Value {
    json!({
        "kind": "chart", "width": width, "height": height, "format": format,
        "chart": {
            "type": "bar", "title": "Quarterly revenue", "x_label": "quarter", "y_label": "EUR k",
            "series": [
                {"name": "2025", "points": [[1, 120], [2, 135], [3, 150], [4, 160]]},
                {"name": "2026", "points": [[1, 130], [2, 149], [3, 171], [4, 190]]}
            ]
        }
    })
}

/// Starts a render and returns its job id.
pub async fn start(client: &McpClient, spec: Value) -> String {
    let started = structured_ok(&call(client, "start_render", json!({ "spec": spec })).await);
    assert_eq!(started["state"], "queued", "{started}");
    started["job_id"].as_str().expect("job_id").to_owned()
}

pub async fn status(client: &McpClient, job_id: &str) -> Value {
    structured_ok(&call(client, "get_render_status", json!({ "job_id": job_id })).await)
}

/// Polls the status until the job is terminal; returns the final status and every distinct
/// status message seen on the way.
pub async fn wait_terminal(
    client: &McpClient,
    job_id: &str,
    limit: Duration,
) -> (Value, Vec<String>) {
    let deadline = Instant::now() + limit;
    let mut messages: Vec<String> = vec![];
    loop {
        let status = status(client, job_id).await;
        let message = status["message"].as_str().unwrap_or_default().to_owned();
        if messages.last() != Some(&message) {
            messages.push(message);
        }
        if matches!(
            status["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return (status, messages);
        }
        assert!(
            Instant::now() < deadline,
            "job {job_id} still {status} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Follows every job to a terminal status and returns the statuses, in `jobs`' order. Fails
/// only when progress stops: no job became terminal for `stall` (see
/// `Cluster::wait_finished` for why progress, not a wall-clock total, bounds the wait).
pub async fn wait_all_terminal(client: &McpClient, jobs: &[String], stall: Duration) -> Vec<Value> {
    let mut finished: Vec<Option<Value>> = vec![None; jobs.len()];
    let mut progressed_at = Instant::now();
    loop {
        let mut progressed = false;
        for (job, slot) in jobs.iter().zip(finished.iter_mut()) {
            if slot.is_none() {
                let status = status(client, job).await;
                if matches!(
                    status["state"].as_str(),
                    Some("succeeded" | "failed" | "cancelled")
                ) {
                    *slot = Some(status);
                    progressed = true;
                }
            }
        }
        let left = finished.iter().filter(|slot| slot.is_none()).count();
        if left == 0 {
            return finished.into_iter().flatten().collect();
        }
        if progressed {
            progressed_at = Instant::now();
        }
        assert!(
            progressed_at.elapsed() < stall,
            "no job finished for {stall:?}; {left} of {} still unfinished",
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn result(client: &McpClient, job_id: &str) -> Value {
    structured_ok(&call(client, "get_render_result", json!({ "job_id": job_id })).await)
}

/// Downloads a result's URL and checks size and digest against what the result claims.
pub async fn download(result: &Value) -> Vec<u8> {
    let url = result["url"].as_str().expect("a url when ready");
    let response = reqwest::get(url).await.expect("download");
    assert_eq!(response.status(), 200, "GET {url}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, result["content_type"].as_str().unwrap());
    let bytes = response.bytes().await.expect("body").to_vec();
    assert_eq!(bytes.len() as u64, result["bytes"].as_u64().unwrap());
    let digest = mcp_sidecar::digest::sha256_hex(&bytes);
    assert_eq!(digest, result["sha256"].as_str().unwrap());
    bytes
}

/// Decodes PNG bytes into pixels (panics if they are not a PNG).
pub fn decode_png(bytes: &[u8]) -> resvg::tiny_skia::Pixmap {
    resvg::tiny_skia::Pixmap::decode_png(bytes).expect("the bytes decode as a PNG")
}

/// Asserts `start_render` refuses `spec` with a message containing `expected`.
pub async fn assert_refused(client: &McpClient, spec: Value, expected: &str) {
    let message = tool_error_message(&call(client, "start_render", json!({ "spec": spec })).await);
    assert!(
        message.contains(expected),
        "expected `{expected}` in `{message}`"
    );
}
