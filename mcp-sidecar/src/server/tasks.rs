//! Render jobs as MCP tasks (extension `io.modelcontextprotocol/tasks`, SEP-2663, spec
//! revision 2026-07-28).
//!
//! A task *is* a render job: the task id is the job id, and every answer is read from the
//! job's Redis record, so any sidecar of any instance answers for any task, through restarts
//! and crashes (the job tools keep working over the same records).
//!
//! | job state | task status | payload |
//! |---|---|---|
//! | `queued`, `running` | `working` | `statusMessage` is the stage, e.g. `[2/4] rasterizing` |
//! | `succeeded` | `completed` | `result`: the `render` tool's result (structured output, a `resource_link` to the signed URL, an inline `image` for a small PNG) |
//! | `failed`, the render's fault (a spec that cannot be rendered, over `RENDER_TIMEOUT`) | `completed` | `result` with `isError: true`, as the call itself would have answered |
//! | `failed`, the system's fault (upload failed, attempts ran out) | `failed` | `error`: JSON-RPC `-32603` with the reason |
//! | `cancelled` | `cancelled` | |
//!
//! The spec reserves `failed` for JSON-RPC errors and has a tool's own failure complete with
//! `isError: true`; the job record keeps which of the two a failure is (`failure`).

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use rmcp::{
    ErrorData as McpError, Peer, RoleServer,
    model::{
        CallToolResult, ContentBlock, CreateTaskResult, DetailedTask, ErrorCode as RpcErrorCode,
        JsonObject, ProgressNotificationParam, ProgressToken, Resource, Task, TaskPayload,
        TaskStatus,
    },
};
use serde_json::{Value, json};
use sidecar_contract::{ErrorCode, RenderOutput};

use super::{
    render::{RenderToolError, RenderTools, StartRenderInput},
    tool_error,
};
use crate::jobs::{
    events,
    model::{JobId, JobState},
    store::{Failure, JobSnapshot, StoreError},
};

/// How the task view is tuned.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    /// The `pollIntervalMs` clients are given.
    pub poll_interval: Duration,
    /// Largest PNG a result carries inline as an `image` block (0: none).
    pub inline_image_max_bytes: u64,
    /// How long a `render` call without the extension waits for its render.
    pub render_timeout: Duration,
}

/// While events flow, a waiting `render` call wakes on them; this is how often it reads the
/// job anyway, so it also ends while Redis pub/sub is down.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// Where a `render` call that waits reports its progress (`notifications/progress`).
pub struct ProgressSink {
    pub peer: Peer<RoleServer>,
    pub token: ProgressToken,
}

fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `tasks/*` on an id that names no task: `-32602`, as the extension requires.
fn unknown_task(id: &str) -> McpError {
    McpError::invalid_params(
        format!(
            "Failed to retrieve task: no task `{id}` (unknown, or finished long enough ago to \
             have expired)"
        ),
        None,
    )
}

fn task_error(id: &str, error: StoreError) -> McpError {
    match error {
        StoreError::NotFound(_) => unknown_task(id),
        other => McpError::internal_error(format!("task {id}: {other}"), None),
    }
}

fn parse_task_id(id: &str) -> Result<JobId, McpError> {
    id.parse().map_err(|_| unknown_task(id))
}

impl RenderTools {
    /// The task's base fields from its job's record.
    fn task(&self, snapshot: &JobSnapshot) -> Task {
        let status = &snapshot.status;
        let task_status = match status.state {
            JobState::Queued | JobState::Running => TaskStatus::Working,
            JobState::Succeeded => TaskStatus::Completed,
            JobState::Cancelled => TaskStatus::Cancelled,
            JobState::Failed if snapshot.failure == Some(Failure::Internal) => TaskStatus::Failed,
            JobState::Failed => TaskStatus::Completed,
        };
        let ttl = millis(self.store.settings().finished_ttl);
        // A finished record expires JOB_TTL after it finished; `ttlMs` counts from creation.
        let ttl_ms = match snapshot.finished_at_ms {
            Some(finished) => finished
                .saturating_sub(snapshot.created_at_ms)
                .saturating_add(ttl),
            None => ttl,
        };
        let mut task = Task::new(
            status.job_id.as_str(),
            task_status,
            timestamp(snapshot.created_at_ms),
            timestamp(snapshot.updated_at_ms),
        )
        .with_ttl_ms(ttl_ms)
        .with_poll_interval_ms(millis(self.tasks.poll_interval).max(1));
        if !status.message.is_empty() {
            task = task.with_status_message(status.message.clone());
        }
        task
    }

    /// The task as `tasks/get` and `notifications/tasks` carry it.
    pub async fn detailed_task(&self, snapshot: &JobSnapshot) -> Result<DetailedTask, McpError> {
        let task = self.task(snapshot);
        let id = &snapshot.status.job_id;
        let payload = match (task.status, snapshot.status.state) {
            (TaskStatus::Working, _) => TaskPayload::Working,
            (TaskStatus::Cancelled, _) => TaskPayload::Cancelled,
            (TaskStatus::Failed, _) => {
                let message = snapshot
                    .status
                    .error
                    .clone()
                    .unwrap_or_else(|| "the render job failed".into());
                let mut error = JsonObject::new();
                error.insert("code".into(), json!(RpcErrorCode::INTERNAL_ERROR.0));
                error.insert("message".into(), Value::String(message));
                TaskPayload::Failed { error }
            }
            (_, _) => {
                let result = self.finished_result(snapshot).await.map_err(|error| {
                    McpError::internal_error(format!("task {id}: {error}"), None)
                })?;
                TaskPayload::Completed {
                    result: as_object(&result),
                }
            }
        };
        Ok(DetailedTask::new(task, payload))
    }

    /// What the `render` call answers for a job that has ended: the artifact, or the error a
    /// caller reads.
    async fn finished_result(&self, snapshot: &JobSnapshot) -> Result<CallToolResult, String> {
        let id = &snapshot.status.job_id;
        let error = || {
            snapshot
                .status
                .error
                .clone()
                .unwrap_or_else(|| "the render job failed".into())
        };
        match (snapshot.status.state, &snapshot.artifact) {
            (JobState::Succeeded, Some(record)) => {
                let signed = self
                    .artifacts
                    .signed_url(id, record, self.signed_url_ttl)
                    .await
                    .map_err(|error| {
                        format!("the job succeeded but its download URL could not be made: {error}")
                    })?;
                let output = RenderOutput {
                    job_id: id.clone(),
                    url: signed.url.clone(),
                    expires_at: humantime::format_rfc3339_seconds(signed.expires_at).to_string(),
                    content_type: record.content_type.clone(),
                    bytes: record.bytes,
                    sha256: record.sha256.clone(),
                };
                let value = serde_json::to_value(&output).map_err(|error| error.to_string())?;
                let mut result = CallToolResult::structured(value);
                let name = record.key.rsplit('/').next().unwrap_or(&record.key);
                result.content.push(ContentBlock::resource_link(
                    Resource::new(signed.url, name)
                        .with_mime_type(record.content_type.clone())
                        .with_size(record.bytes),
                ));
                let limit = self.tasks.inline_image_max_bytes;
                if record.content_type == "image/png" && limit > 0 && record.bytes <= limit {
                    // The link is the result; the picture is a courtesy, so a failed read
                    // leaves it out rather than failing the answer.
                    match self.artifacts.read(id, record, limit).await {
                        Ok(bytes) => result.content.push(ContentBlock::image(
                            base64::engine::general_purpose::STANDARD.encode(&bytes),
                            "image/png",
                        )),
                        Err(error) => {
                            tracing::warn!(job_id = %id, %error, "inline image left out");
                        }
                    }
                }
                Ok(result)
            }
            (JobState::Failed, _) => Ok(tool_error(
                match snapshot.failure {
                    Some(Failure::Internal) => ErrorCode::Internal,
                    _ => ErrorCode::InvalidArguments,
                },
                error(),
            )),
            (JobState::Cancelled, _) => Ok(tool_error(
                ErrorCode::Conflict,
                format!("render job {id} was cancelled before it finished"),
            )),
            (state, _) => Err(format!("job {id} has not ended (it is {})", state.as_str())),
        }
    }

    /// `tools/call render`: a task for a client that declared the extension (answered once the
    /// job is durable in Redis); otherwise the render's result, waited for.
    pub async fn render(
        &self,
        input: StartRenderInput,
        as_task: bool,
        progress: Option<ProgressSink>,
    ) -> Result<Rendered, RenderToolError> {
        let started = self.start(input).await?;
        let id = started.job_id;
        if as_task {
            return Ok(Rendered::Task(self.task_created(&id).await?));
        }
        Ok(Rendered::Result(self.wait_for_result(&id, progress).await))
    }

    /// The `CreateTaskResult` for a job already enqueued. The record is written by then
    /// (enqueue is one atomic script), so this read proves what the extension asks (a
    /// `tasks/get` for the id resolves) and gives the fields `tasks/get` will, for a new job
    /// and an idempotent repeat alike.
    pub async fn task_created(&self, id: &JobId) -> Result<CreateTaskResult, StoreError> {
        let snapshot = self.store.snapshot(id).await?;
        Ok(CreateTaskResult::new(self.task(&snapshot)))
    }

    /// Waits until the job ends (at most `RENDER_TIMEOUT`), reporting each recorded stage (see
    /// [`crate::jobs::worker::REPORT_AFTER`]) as progress.
    pub async fn wait_for_result(
        &self,
        id: &JobId,
        progress: Option<ProgressSink>,
    ) -> CallToolResult {
        let mut changes = self.events.subscribe();
        let deadline = tokio::time::Instant::now() + self.tasks.render_timeout;
        let mut reported = None;
        loop {
            let snapshot = match self.store.snapshot(id).await {
                Ok(snapshot) => snapshot,
                Err(error) => {
                    return tool_error(
                        ErrorCode::Unavailable,
                        format!(
                            "render job {id} was started, but following it failed: {error}; \
                             get_render_status and get_render_result follow it by id"
                        ),
                    );
                }
            };
            if snapshot.status.state.is_terminal() {
                return self
                    .finished_result(&snapshot)
                    .await
                    .unwrap_or_else(|error| {
                        tool_error(ErrorCode::Internal, format!("render job {id}: {error}"))
                    });
            }
            if let Some(sink) = &progress
                && reported != Some(snapshot.status.stage)
            {
                reported = Some(snapshot.status.stage);
                let status = &snapshot.status;
                let _ = sink
                    .peer
                    .notify_progress(
                        ProgressNotificationParam::new(sink.token.clone(), f64::from(status.stage))
                            .with_total(f64::from(status.total_stages))
                            .with_message(status.message.clone()),
                    )
                    .await;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return tool_error(
                    ErrorCode::Unavailable,
                    format!(
                        "render job {id} has not finished within {:?} (it is {}: {}); it goes \
                         on: get_render_status and get_render_result follow it by id",
                        self.tasks.render_timeout,
                        snapshot.status.state.as_str(),
                        snapshot.status.message
                    ),
                );
            }
            events::changed(
                &mut changes,
                id.as_str(),
                (deadline - now).min(FALLBACK_POLL),
            )
            .await;
        }
    }

    /// `tasks/get`: one `HMGET` (plus signing the URL of a completed render).
    pub async fn get_task(&self, task_id: &str) -> Result<DetailedTask, McpError> {
        let id = parse_task_id(task_id)?;
        let snapshot = self
            .store
            .snapshot(&id)
            .await
            .map_err(|error| task_error(task_id, error))?;
        self.detailed_task(&snapshot).await
    }

    /// `tasks/cancel`: ends a working render in `cancelled`; a finished one is left as it is.
    pub async fn cancel_task(&self, task_id: &str) -> Result<(), McpError> {
        let id = parse_task_id(task_id)?;
        self.store
            .cancel(&id)
            .await
            .map(drop)
            .map_err(|error| task_error(task_id, error))
    }

    /// `tasks/update`: a render never asks for input, so no key of `inputResponses` is ever
    /// outstanding. The extension has a server ignore responses to keys that are not
    /// outstanding and acknowledge the request, so a known task gets the empty ack (and
    /// nothing changes); an unknown one is `-32602`.
    pub async fn update_task(&self, task_id: &str) -> Result<(), McpError> {
        let id = parse_task_id(task_id)?;
        self.store
            .status(&id)
            .await
            .map(drop)
            .map_err(|error| task_error(task_id, error))
    }
}

/// What `render` answers.
pub enum Rendered {
    Task(CreateTaskResult),
    Result(CallToolResult),
}

fn as_object(result: &CallToolResult) -> JsonObject {
    match serde_json::to_value(result) {
        Ok(Value::Object(object)) => object,
        _ => JsonObject::new(),
    }
}
