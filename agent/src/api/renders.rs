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
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use sidecar_contract::{
    JobId, JobIdInput, JobResult, JobState, JobStatus, StartRenderInput, StartRenderOutput, tool,
};

use super::{ApiError, AppState, JsonBody};

fn links(job_id: &JobId) -> Value {
    json!({
        "self": format!("/v1/renders/{job_id}"),
        "events": format!("/v1/renders/{job_id}/events"),
    })
}

/// Calls one of the sidecar's job tools and reads its answer as the contract types it.
///
/// A failed call becomes the error its code says; an answer that is not the contract's type
/// (a sidecar of another version, a bug) is a 502 naming the tool, never a half-read value.
async fn call_job_tool<Output: DeserializeOwned>(
    state: &AppState,
    tool: &str,
    arguments: impl Serialize,
) -> Result<Output, ApiError> {
    let arguments = match serde_json::to_value(arguments) {
        Ok(Value::Object(arguments)) => arguments,
        _ => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the arguments of {tool} could not be encoded as a JSON object"),
            ));
        }
    };
    let result = state.hub.call_sidecar(tool, arguments).await?;
    if result.is_error == Some(true) {
        return Err(ApiError::from_tool_failure(&result));
    }
    let content = result.structured_content.unwrap_or_default();
    serde_json::from_value(content).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the sidecar's answer to {tool} is not what the job contract says: {error}"),
        )
    })
}

/// Starts a render through the sidecar's `start_render`; 202 with the job and its links.
pub async fn start(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<StartRenderInput>,
) -> Result<Response, ApiError> {
    let started: StartRenderOutput = call_job_tool(&state, tool::START_RENDER, body).await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/renders/{}", started.job_id)) {
        headers.insert(header::LOCATION, location);
    }
    let body = json!({
        "job_id": started.job_id,
        "state": started.state,
        "links": links(&started.job_id),
    });
    Ok((StatusCode::ACCEPTED, headers, Json(body)).into_response())
}

/// A job id as the sidecar makes them: anything else cannot name a job.
fn checked_id(id: &str) -> Result<JobId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no render job `{}`",
                id.chars().take(64).collect::<String>()
            ),
        )
    })
}

async fn job_status(state: &AppState, job_id: &JobId) -> Result<JobStatus, ApiError> {
    call_job_tool(state, tool::GET_RENDER_STATUS, JobIdInput::from(job_id)).await
}

/// The status, plus `result` (url, expires_at, content_type, bytes, sha256) once succeeded.
async fn full_status(state: &AppState, status: JobStatus) -> Result<Value, ApiError> {
    let job_id = status.job_id.clone();
    let succeeded = status.state == JobState::Succeeded;
    let mut answer = serde_json::to_value(status).unwrap_or_default();
    if succeeded {
        let result: JobResult =
            call_job_tool(state, tool::GET_RENDER_RESULT, JobIdInput::from(&job_id)).await?;
        answer["result"] = json!({
            "url": result.url,
            "expires_at": result.expires_at,
            "content_type": result.content_type,
            "bytes": result.bytes,
            "sha256": result.sha256,
        });
    }
    answer["links"] = links(&job_id);
    Ok(answer)
}

pub async fn status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = checked_id(&id)?;
    let status = job_status(&state, &id).await?;
    Ok(Json(full_status(&state, status).await?))
}

/// What the stream remembers between polls.
struct Progress {
    state: Arc<AppState>,
    job_id: JobId,
    /// The status last sent as a `progress` event.
    last: Option<JobStatus>,
    /// Whether the sidecar has been asked yet: every later poll waits its interval first.
    polled: bool,
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
            if self.polled {
                tokio::time::sleep(self.state.render_poll_interval).await;
            }
            self.polled = true;
            let status = match job_status(&self.state, &self.job_id).await {
                Ok(status) => {
                    self.warned = false;
                    status
                }
                Err(error) => {
                    // Keep waiting through a sidecar blip; say so once.
                    if !self.warned {
                        self.warned = true;
                        return Some(json_event("warning", &json!({ "error": error.message })));
                    }
                    continue;
                }
            };
            if status.state.is_terminal() {
                self.finished = true;
                let fallback = serde_json::to_value(&status).unwrap_or_default();
                let done = full_status(&self.state, status).await.unwrap_or(fallback);
                return Some(json_event("done", &done));
            }
            let changed = self.last.as_ref().is_none_or(|last| {
                last.state != status.state
                    || last.stage != status.stage
                    || last.message != status.message
            });
            if changed {
                let event = json_event(
                    "progress",
                    &serde_json::to_value(&status).unwrap_or_default(),
                );
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
    let id = checked_id(&id)?;
    // Fail before the stream starts when the job is unknown or the sidecar is away, so the
    // caller gets a proper status code rather than an event.
    job_status(&state, &id).await?;
    let heartbeat = state.sse_heartbeat;
    let progress = Progress {
        state,
        job_id: id,
        last: None,
        polled: false,
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
