//! Render jobs over REST: `POST /v1/renders` (202 with links), `GET /v1/renders/{id}`, and
//! `GET /v1/renders/{id}/events`, an SSE stream of progress until the job ends.
//!
//! Events: `progress` (data: the status JSON) once per change of state, stage or message;
//! `done` once, at the end (data: the status with `result` when it succeeded); `warning` if
//! the sidecar could not be asked for a while (the stream keeps trying); `timeout` if the job
//! outlives `SSE_MAX_DURATION`; `shutdown` if the agent is stopping (the job goes on: GET it
//! or open a new stream on the next instance). Keep-alive comments flow every `SSE_HEARTBEAT`
//! so proxies (Cloud Run's front end included) keep a quiet stream open.

use std::{convert::Infallible, sync::Arc, time::Instant};

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, JsonBody, tools::object};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRender {
    spec: Value,
    #[serde(default)]
    idempotency_key: Option<String>,
}

fn links(job_id: &str) -> Value {
    json!({
        "self": format!("/v1/renders/{job_id}"),
        "events": format!("/v1/renders/{job_id}/events"),
    })
}

/// Starts a render through the sidecar's `start_render`; 202 with the job and its links.
pub async fn start(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<StartRender>,
) -> Result<Response, ApiError> {
    let mut arguments = json!({ "spec": body.spec });
    if let Some(key) = body.idempotency_key {
        arguments["idempotency_key"] = key.into();
    }
    let result = state
        .hub
        .call_sidecar("start_render", object(arguments))
        .await?;
    if result.is_error == Some(true) {
        return Err(ApiError::from_tool_failure(&result));
    }
    let started = result.structured_content.unwrap_or_default();
    let job_id = started["job_id"].as_str().unwrap_or_default().to_owned();
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/renders/{job_id}")) {
        headers.insert(header::LOCATION, location);
    }
    let body = json!({ "job_id": job_id, "state": started["state"], "links": links(&job_id) });
    Ok((StatusCode::ACCEPTED, headers, Json(body)).into_response())
}

/// A job id as the sidecar makes them: anything else cannot name a job.
fn checked_id(id: &str) -> Result<&str, ApiError> {
    let valid = id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if valid {
        Ok(id)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no render job `{}`",
                id.chars().take(64).collect::<String>()
            ),
        ))
    }
}

async fn sidecar_tool(state: &AppState, tool: &str, job_id: &str) -> Result<Value, ApiError> {
    let result = state
        .hub
        .call_sidecar(tool, object(json!({ "job_id": job_id })))
        .await?;
    if result.is_error == Some(true) {
        return Err(ApiError::from_tool_failure(&result));
    }
    Ok(result.structured_content.unwrap_or_default())
}

/// The status, plus `result` (url, expires_at, content_type, bytes, sha256) once succeeded.
async fn full_status(state: &AppState, job_id: &str) -> Result<Value, ApiError> {
    let mut status = sidecar_tool(state, "get_render_status", job_id).await?;
    if status["state"] == "succeeded" {
        let result = sidecar_tool(state, "get_render_result", job_id).await?;
        status["result"] = json!({
            "url": result["url"],
            "expires_at": result["expires_at"],
            "content_type": result["content_type"],
            "bytes": result["bytes"],
            "sha256": result["sha256"],
        });
    }
    status["links"] = links(job_id);
    Ok(status)
}

pub async fn status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = checked_id(&id)?;
    Ok(Json(full_status(&state, id).await?))
}

fn is_terminal(status: &Value) -> bool {
    matches!(status["state"].as_str(), Some("succeeded" | "failed"))
}

/// What the stream remembers between polls.
struct Progress {
    state: Arc<AppState>,
    job_id: String,
    last: Option<Value>,
    started: Instant,
    finished: bool,
    warned: bool,
}

impl Progress {
    /// The next event, waiting (polling the sidecar) until there is one.
    async fn next_event(&mut self) -> Option<Event> {
        if self.finished {
            return None;
        }
        loop {
            if self.started.elapsed() > self.state.sse_max_duration {
                self.finished = true;
                return Some(json_event(
                    "timeout",
                    &json!({
                        "job_id": self.job_id,
                        "error": "the job did not finish while this stream was open; GET the job to see it later",
                    }),
                ));
            }
            if self.last.is_some() {
                tokio::time::sleep(self.state.render_poll_interval).await;
            }
            let status = match sidecar_tool(&self.state, "get_render_status", &self.job_id).await {
                Ok(status) => {
                    self.warned = false;
                    status
                }
                Err(error) => {
                    // Keep waiting through a sidecar blip; say so once.
                    if self.last.is_none() {
                        self.last = Some(Value::Null);
                    }
                    if !self.warned {
                        self.warned = true;
                        return Some(json_event("warning", &json!({ "error": error.message })));
                    }
                    continue;
                }
            };
            if is_terminal(&status) {
                self.finished = true;
                let done = full_status(&self.state, &self.job_id)
                    .await
                    .unwrap_or(status);
                return Some(json_event("done", &done));
            }
            let changed = self.last.as_ref().is_none_or(|last| {
                last["state"] != status["state"]
                    || last["stage"] != status["stage"]
                    || last["message"] != status["message"]
            });
            if changed {
                let event = json_event("progress", &status);
                self.last = Some(status);
                return Some(event);
            }
        }
    }
}

fn json_event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// SSE progress of one job until it ends (or the stream's time bound passes).
pub async fn events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = checked_id(&id)?.to_owned();
    // Fail before the stream starts when the job is unknown or the sidecar is away, so the
    // caller gets a proper status code rather than an event.
    sidecar_tool(&state, "get_render_status", &id).await?;
    let heartbeat = state.sse_heartbeat;
    let progress = Progress {
        state,
        job_id: id,
        last: None,
        started: Instant::now(),
        finished: false,
        warned: false,
    };
    let stream = futures::stream::unfold(progress, |mut progress| async move {
        if progress.finished {
            return None;
        }
        let shutdown = progress.state.shutdown.clone();
        // On SIGTERM the stream ends with a `shutdown` event, so graceful shutdown is not held
        // up for SSE_MAX_DURATION by streams still open.
        let event = tokio::select! {
            event = progress.next_event() => event?,
            () = shutdown.cancelled() => {
                progress.finished = true;
                json_event(
                    "shutdown",
                    &json!({
                        "job_id": progress.job_id,
                        "error": "this agent instance is shutting down; the job goes on: GET it or open a new stream",
                    }),
                )
            }
        };
        Some((Ok(event), progress))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text("keep-alive")))
}
