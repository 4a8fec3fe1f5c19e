//! Render jobs over REST: `POST /v1/renders` (202 with links), `GET /v1/renders/{id}`,
//! `DELETE /v1/renders/{id}` (cancel; 202 with the status after it) and
//! `GET /v1/renders/{id}/events`, an SSE stream of progress until the job ends (events as in
//! [`super::event_stream`]: `progress` carries the status, `done` the status with `result` when
//! it succeeded).
//!
//! Two ways to drive the sidecar, chosen per request by what it declares:
//!
//! - **MCP tasks** (the sidecar declares `io.modelcontextprotocol/tasks`): the render starts as
//!   a `render` call answered with a task (task id = job id), is followed with `tasks/get` at
//!   the task's `pollIntervalMs`, and is cancelled with `tasks/cancel`. A finished task carries
//!   the render's result, so no `get_render_result` is needed. The REST status keeps its
//!   fields: `stage`/`total_stages`/`running` are read from the task's `statusMessage`
//!   (`"[2/4] rasterizing"`, the job's own message); where it carries no stage counts
//!   (`queued`, `starting`, a failure or a cancel) the status comes from `get_render_status`,
//!   once per change the task shows, not once per poll.
//! - **Job tools** (a sidecar without the extension): `start_render`, `get_render_status`
//!   every `RENDER_POLL_INTERVAL`, `get_render_result`, `cancel_render`.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, Sse},
    },
};
use futures::Stream;
use rmcp::model::{DetailedTask, Task, TaskPayload, TaskStatus};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use sidecar_contract::{
    JobId, JobIdInput, JobResult, JobState, JobStatus, RenderOutput, StartRenderInput,
    StartRenderOutput, tool,
};

use super::{
    ApiError, AppState, JsonBody,
    event_stream::{self, Sight, Subject, Watch},
};
use crate::mcp::upstream::{ToolAnswer, UpstreamError};

/// Shortest wait between two `tasks/get` of one stream, whatever `pollIntervalMs` says.
pub const MIN_TASK_POLL_INTERVAL: Duration = Duration::from_millis(50);

fn links(job_id: &JobId) -> Value {
    json!({
        "self": format!("/v1/renders/{job_id}"),
        "events": format!("/v1/renders/{job_id}/events"),
    })
}

/// A value as the JSON object of a tool's arguments.
fn arguments_of(
    tool: &str,
    arguments: impl Serialize,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::to_value(arguments) {
        Ok(Value::Object(arguments)) => Ok(arguments),
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the arguments of {tool} could not be encoded as a JSON object"),
        )),
    }
}

fn off_contract(tool: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("the sidecar's answer to {tool} is not what the job contract says: {error}"),
    )
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
    let arguments = arguments_of(tool, arguments)?;
    let result = state.hub.call_sidecar(tool, arguments).await?;
    if result.is_error == Some(true) {
        return Err(ApiError::from_tool_failure(&result));
    }
    let content = result.structured_content.unwrap_or_default();
    serde_json::from_value(content).map_err(|error| off_contract(tool, error))
}

/// Whether the sidecar runs renders as tasks (connects to it if needed).
async fn sidecar_runs_tasks(state: &AppState) -> Result<bool, ApiError> {
    Ok(state.hub.sidecar().supports_tasks().await?)
}

/// Starts a render: as a task when the sidecar runs tasks, else through `start_render`; 202
/// with the job and its links.
pub async fn start(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<StartRenderInput>,
) -> Result<Response, ApiError> {
    let (job_id, job_state) = if sidecar_runs_tasks(&state).await? {
        start_as_task(&state, body).await?
    } else {
        let started: StartRenderOutput = call_job_tool(&state, tool::START_RENDER, body).await?;
        (started.job_id, started.state)
    };
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/renders/{job_id}")) {
        headers.insert(header::LOCATION, location);
    }
    let body = json!({
        "job_id": job_id,
        "state": job_state,
        "links": links(&job_id),
    });
    Ok((StatusCode::ACCEPTED, headers, Json(body)).into_response())
}

/// `render` declaring the tasks extension: the job id and its state from the task it answers.
async fn start_as_task(
    state: &AppState,
    body: StartRenderInput,
) -> Result<(JobId, JobState), ApiError> {
    let arguments = arguments_of(tool::RENDER, body)?;
    match state
        .hub
        .sidecar()
        .call_as_task(tool::RENDER, arguments)
        .await?
    {
        ToolAnswer::Task(task) => {
            let job_id: JobId = task.task_id.parse().map_err(|_| {
                off_contract(
                    tool::RENDER,
                    format_args!(
                        "its task id `{}` is not a job id",
                        task.task_id.chars().take(64).collect::<String>()
                    ),
                )
            })?;
            let job_state = match created_state(&task) {
                Some(job_state) => job_state,
                // An idempotent repeat of a job that has moved on: ask for its exact state.
                None => job_status(state, &job_id).await?.state,
            };
            Ok((job_id, job_state))
        }
        // The sidecar chose to answer with the render itself: it is done already.
        ToolAnswer::Result(result) => {
            if result.is_error == Some(true) {
                return Err(ApiError::from_tool_failure(&result));
            }
            let output: RenderOutput =
                serde_json::from_value(result.structured_content.unwrap_or_default())
                    .map_err(|error| off_contract(tool::RENDER, error))?;
            Ok((output.job_id, JobState::Succeeded))
        }
    }
}

/// The job state a new task shows without another read: `queued` (the common case).
fn created_state(task: &Task) -> Option<JobState> {
    let queued = task.status == TaskStatus::Working
        && task
            .status_message
            .as_deref()
            .is_some_and(|message| message.starts_with("queued"));
    queued.then_some(JobState::Queued)
}

/// A job id as the sidecar makes them: anything else cannot name a job.
fn checked_id(id: &str) -> Result<JobId, ApiError> {
    id.parse().map_err(|_| no_such_job(id))
}

fn no_such_job(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no render job `{}`",
            id.chars().take(64).collect::<String>()
        ),
    )
}

/// A `tasks/*` failure for a render: "invalid params" is the sidecar saying it has no such job.
fn render_task_error(job_id: &JobId, error: UpstreamError) -> ApiError {
    if error.is_invalid_params() {
        no_such_job(job_id.as_str())
    } else {
        error.into()
    }
}

async fn render_task(state: &AppState, job_id: &JobId) -> Result<DetailedTask, ApiError> {
    state
        .hub
        .sidecar()
        .get_task(job_id.as_str())
        .await
        .map_err(|error| render_task_error(job_id, error))
}

async fn job_status(state: &AppState, job_id: &JobId) -> Result<JobStatus, ApiError> {
    call_job_tool(state, tool::GET_RENDER_STATUS, JobIdInput::from(job_id)).await
}

/// `[2/4]` at the start of a job's message: stage 2 of 4.
fn stage_counts(message: &str) -> Option<(u32, u32)> {
    let (counts, _) = message.strip_prefix('[')?.split_once(']')?;
    let (stage, total) = counts.split_once('/')?;
    let (stage, total) = (stage.parse().ok()?, total.parse().ok()?);
    (total > 0 && stage <= total).then_some((stage, total))
}

fn is_error_result(result: &serde_json::Map<String, Value>) -> bool {
    result.get("isError") == Some(&Value::Bool(true))
}

/// The REST status a render's task shows by itself: a running stage (`[2/4] rasterizing`), or
/// success (`[4/4] done` with a result that is not an error). `None` when the task does not
/// say enough (queued, starting, failed, cancelled): then `get_render_status` says it.
fn status_from_task(job_id: &JobId, task: &DetailedTask) -> Option<JobStatus> {
    let message = task.task.status_message.as_deref()?;
    let (stage, total_stages) = stage_counts(message)?;
    let state = match &task.payload {
        TaskPayload::Working => JobState::Running,
        TaskPayload::Completed { result } if stage == total_stages && !is_error_result(result) => {
            JobState::Succeeded
        }
        _ => return None,
    };
    Some(JobStatus {
        job_id: job_id.clone(),
        state,
        stage,
        total_stages,
        message: message.to_owned(),
        error: None,
    })
}

/// The artifact a completed render task carries in its result.
fn output_from_task(job_id: &JobId, task: &DetailedTask) -> Option<RenderOutput> {
    let TaskPayload::Completed { result } = &task.payload else {
        return None;
    };
    if is_error_result(result) {
        return None;
    }
    let output: RenderOutput = serde_json::from_value(result.get("structuredContent")?.clone())
        .ok()
        .filter(|output: &RenderOutput| &output.job_id == job_id)?;
    Some(output)
}

/// The REST status of a render read through its task.
async fn status_through_task(
    state: &AppState,
    job_id: &JobId,
    task: &DetailedTask,
) -> Result<JobStatus, ApiError> {
    match status_from_task(job_id, task) {
        Some(status) => Ok(status),
        None => job_status(state, job_id).await,
    }
}

/// The status, plus `result` (url, expires_at, content_type, bytes, sha256) once succeeded:
/// from the finished task's result when there is one, else from `get_render_result`.
async fn full_status(
    state: &AppState,
    status: JobStatus,
    output: Option<RenderOutput>,
) -> Result<Value, ApiError> {
    let job_id = status.job_id.clone();
    let succeeded = status.state == JobState::Succeeded;
    let mut answer = serde_json::to_value(status).unwrap_or_default();
    if succeeded {
        answer["result"] = match output {
            Some(output) => json!({
                "url": output.url,
                "expires_at": output.expires_at,
                "content_type": output.content_type,
                "bytes": output.bytes,
                "sha256": output.sha256,
            }),
            None => {
                let result: JobResult =
                    call_job_tool(state, tool::GET_RENDER_RESULT, JobIdInput::from(&job_id))
                        .await?;
                json!({
                    "url": result.url,
                    "expires_at": result.expires_at,
                    "content_type": result.content_type,
                    "bytes": result.bytes,
                    "sha256": result.sha256,
                })
            }
        };
    }
    answer["links"] = links(&job_id);
    Ok(answer)
}

/// The full REST view of a render from its task.
async fn view_through_task(
    state: &AppState,
    job_id: &JobId,
    task: &DetailedTask,
) -> Result<Value, ApiError> {
    let status = status_through_task(state, job_id, task).await?;
    full_status(state, status, output_from_task(job_id, task)).await
}

pub async fn status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = checked_id(&id)?;
    if sidecar_runs_tasks(&state).await? {
        let task = render_task(&state, &id).await?;
        return Ok(Json(view_through_task(&state, &id, &task).await?));
    }
    let status = job_status(&state, &id).await?;
    Ok(Json(full_status(&state, status, None).await?))
}

/// Cancels a render (`tasks/cancel`, or `cancel_render` without tasks); 202 with its status
/// after the request. A render that has already ended keeps its state.
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = checked_id(&id)?;
    let view = if sidecar_runs_tasks(&state).await? {
        state
            .hub
            .sidecar()
            .cancel_task(id.as_str())
            .await
            .map_err(|error| render_task_error(&id, error))?;
        let task = render_task(&state, &id).await?;
        view_through_task(&state, &id, &task).await?
    } else {
        let status: JobStatus =
            call_job_tool(&state, tool::CANCEL_RENDER, JobIdInput::from(&id)).await?;
        full_status(&state, status, None).await?
    };
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Follows a render through its task: `tasks/get` at the task's `pollIntervalMs`.
struct TaskWatch {
    state: Arc<AppState>,
    job_id: JobId,
    /// The task read when the stream was opened: the first look uses it.
    first: Option<DetailedTask>,
    /// What the task showed at the last look: the status is built again only when it changes.
    seen: Option<(TaskStatus, Option<String>)>,
    /// The status last sent as a `progress` event.
    sent: Option<JobStatus>,
    interval: Duration,
}

impl Watch for TaskWatch {
    async fn look(&mut self) -> Result<Sight, ApiError> {
        let task = match self.first.take() {
            Some(task) => task,
            None => render_task(&self.state, &self.job_id).await?,
        };
        if let Some(interval) = task.task.poll_interval_ms {
            self.interval = Duration::from_millis(interval).max(MIN_TASK_POLL_INTERVAL);
        }
        if task.status().is_terminal() {
            let view = match view_through_task(&self.state, &self.job_id, &task).await {
                Ok(view) => view,
                // The end is known even if its details cannot be read now.
                Err(error) => json!({
                    "job_id": self.job_id,
                    "state": terminal_state(&task),
                    "message": task.task.status_message,
                    "error": error.message,
                    "links": links(&self.job_id),
                }),
            };
            return Ok(Sight::Ended(view));
        }
        let seen = (task.status(), task.task.status_message.clone());
        if self.seen.as_ref() == Some(&seen) {
            return Ok(Sight::Unchanged);
        }
        let status = status_through_task(&self.state, &self.job_id, &task).await?;
        self.seen = Some(seen);
        Ok(changed(&mut self.sent, status))
    }

    fn interval(&self) -> Duration {
        self.interval
    }
}

/// The job state of a task that has ended, as far as the task alone says.
fn terminal_state(task: &DetailedTask) -> JobState {
    match &task.payload {
        TaskPayload::Completed { result } if !is_error_result(result) => JobState::Succeeded,
        TaskPayload::Cancelled => JobState::Cancelled,
        _ => JobState::Failed,
    }
}

/// A `progress` sight when `status` differs (state, stage or message) from the one last sent.
fn changed(sent: &mut Option<JobStatus>, status: JobStatus) -> Sight {
    let differs = sent.as_ref().is_none_or(|last| {
        last.state != status.state || last.stage != status.stage || last.message != status.message
    });
    if !differs {
        return Sight::Unchanged;
    }
    let view = serde_json::to_value(&status).unwrap_or_default();
    *sent = Some(status);
    Sight::Changed(view)
}

/// Follows a render through the job tools: `get_render_status` every `RENDER_POLL_INTERVAL`.
struct JobToolsWatch {
    state: Arc<AppState>,
    job_id: JobId,
    /// The status last sent as a `progress` event.
    sent: Option<JobStatus>,
}

impl Watch for JobToolsWatch {
    async fn look(&mut self) -> Result<Sight, ApiError> {
        let status = job_status(&self.state, &self.job_id).await?;
        if status.state.is_terminal() {
            let fallback = serde_json::to_value(&status).unwrap_or_default();
            let done = full_status(&self.state, status, None)
                .await
                .unwrap_or(fallback);
            return Ok(Sight::Ended(done));
        }
        Ok(changed(&mut self.sent, status))
    }

    fn interval(&self) -> Duration {
        self.state.render_poll_interval
    }
}

/// One of the two ways of following, chosen when the stream opens.
enum RenderWatch {
    /// Boxed: a task watch holds the first task read, much larger than the other.
    Task(Box<TaskWatch>),
    JobTools(JobToolsWatch),
}

impl Watch for RenderWatch {
    async fn look(&mut self) -> Result<Sight, ApiError> {
        match self {
            Self::Task(watch) => watch.look().await,
            Self::JobTools(watch) => watch.look().await,
        }
    }

    fn interval(&self) -> Duration {
        match self {
            Self::Task(watch) => watch.interval(),
            Self::JobTools(watch) => watch.interval(),
        }
    }
}

/// SSE progress of one job until it ends (or the stream's time bound passes).
pub async fn events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let id = checked_id(&id)?;
    // Fail before the stream starts when the job is unknown or the sidecar is away, so the
    // caller gets a proper status code rather than an event.
    let watch = if sidecar_runs_tasks(&state).await? {
        let task = render_task(&state, &id).await?;
        RenderWatch::Task(Box::new(TaskWatch {
            state: state.clone(),
            job_id: id.clone(),
            first: Some(task),
            seen: None,
            sent: None,
            interval: state.render_poll_interval,
        }))
    } else {
        job_status(&state, &id).await?;
        RenderWatch::JobTools(JobToolsWatch {
            state: state.clone(),
            job_id: id.clone(),
            sent: None,
        })
    };
    let subject = Subject {
        key: "job_id",
        id: id.to_string(),
        noun: "job",
    };
    Ok(event_stream::follow(state, subject, watch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_counts_are_read_from_the_start_of_a_message_only() {
        assert_eq!(stage_counts("[2/4] rasterizing"), Some((2, 4)));
        assert_eq!(stage_counts("[4/4] done"), Some((4, 4)));
        for message in [
            "queued",
            "starting",
            "failed: [1/2]",
            "[5/4] x",
            "[1/0] x",
            "[a/4] x",
            "[2/4",
            "",
        ] {
            assert_eq!(stage_counts(message), None, "{message}");
        }
    }

    fn task(fields: Value) -> DetailedTask {
        let mut task = json!({
            "taskId": "0123456789abcdef0123456789abcdef",
            "createdAt": "2026-01-01T00:00:00Z",
            "lastUpdatedAt": "2026-01-01T00:00:01Z",
            "ttlMs": 1000,
        });
        for (key, value) in fields.as_object().into_iter().flatten() {
            task[key] = value.clone();
        }
        serde_json::from_value(task).unwrap()
    }

    #[test]
    fn a_task_gives_the_status_only_when_its_message_has_the_stage() {
        let id: JobId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        let output = json!({"job_id": id, "url": "http://x/files/a", "expires_at": "2026-01-01T01:00:00Z",
                            "content_type": "image/png", "bytes": 3, "sha256": "ab"});
        let running = task(json!({"status": "working", "statusMessage": "[2/4] rasterizing"}));
        let status = status_from_task(&id, &running).unwrap();
        assert_eq!(
            (status.state, status.stage, status.total_stages),
            (JobState::Running, 2, 4)
        );
        let done = task(json!({"status": "completed", "statusMessage": "[4/4] done",
            "result": {"content": [], "structuredContent": output, "isError": false}}));
        assert_eq!(
            status_from_task(&id, &done).unwrap().state,
            JobState::Succeeded
        );
        assert_eq!(output_from_task(&id, &done).unwrap().bytes, 3);

        let refused = task(
            json!({"status": "completed", "statusMessage": "failed: bad svg",
            "result": {"content": [], "structuredContent": {"error": "bad svg"}, "isError": true}}),
        );
        for unsaid in [
            task(json!({"status": "working", "statusMessage": "queued"})),
            task(json!({"status": "working"})),
            task(json!({"status": "cancelled", "statusMessage": "cancelled"})),
            task(
                json!({"status": "failed", "statusMessage": "[3/4] encoding",
                        "error": {"code": -32603, "message": "upload failed"}}),
            ),
            refused.clone(),
        ] {
            assert!(status_from_task(&id, &unsaid).is_none(), "{unsaid:?}");
        }
        assert!(output_from_task(&id, &refused).is_none());
        assert_eq!(terminal_state(&refused), JobState::Failed);
    }
}
