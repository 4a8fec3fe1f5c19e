//! `/v1/tasks/{id}`: MCP tasks (extension `io.modelcontextprotocol/tasks`) of any configured
//! server's tools, started with `POST /v1/tools/{name}` and `Prefer: respond-async`.
//!
//! - `GET /v1/tasks/{id}`: the task as `tasks/get` gives it (`taskId`, `status`,
//!   `statusMessage`, `createdAt`, `lastUpdatedAt`, `ttlMs`, `pollIntervalMs`, and `result` /
//!   `error` once ended), plus `server` and `links`.
//! - `GET /v1/tasks/{id}/events`: SSE, `progress` per change of status or message, `done` with
//!   the final task (see [`super::event_stream`]); `tasks/get` at the task's `pollIntervalMs`.
//! - `DELETE /v1/tasks/{id}`: `tasks/cancel`; 202 with the task as it is right after.
//!   Cancelling is cooperative: the task may still end otherwise.
//!
//! An id no server knows is 404; the task's server is remembered when the task is made, and
//! otherwise looked for (see `McpHub::get_task`).

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::request::Parts,
    http::{HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, Sse},
    },
};
use futures::Stream;
use rmcp::model::{DetailedTask, Task, TaskStatus};
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    ApiError, AppState,
    event_stream::{self, Sight, Subject, Watch},
    renders::MIN_TASK_POLL_INTERVAL,
};

/// The task's URL path: its id as one path segment, percent-encoded (ids are the server's, and
/// may hold any character). URL parsers resolve a `.` or `..` segment (encoded or not) away,
/// so ids that are only dots cannot be addressed; no server makes such ids.
pub fn task_path(task_id: &str) -> String {
    let mut path = String::from("/v1/tasks/");
    for byte in task_id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

/// A task (`Task` or `DetailedTask`) as the REST API shows it: the MCP fields, `server`, `links`.
pub fn task_view(server: &str, task_id: &str, task: &impl Serialize) -> Value {
    let mut view = match serde_json::to_value(task) {
        Ok(Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    let path = task_path(task_id);
    view.insert("server".to_owned(), server.into());
    view.insert(
        "links".to_owned(),
        json!({ "self": path, "events": format!("{path}/events") }),
    );
    Value::Object(view)
}

/// The answer to a call that became a task: 202, `Location`, `Preference-Applied`, the task.
pub fn accepted(server: &str, task: &Task) -> Response {
    let mut response = (
        StatusCode::ACCEPTED,
        Json(task_view(server, &task.task_id, task)),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&task_path(&task.task_id)) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(
        "preference-applied",
        HeaderValue::from_static("respond-async"),
    );
    response
}

/// The task id in the path. A segment that does not decode (e.g. `%FF`, not UTF-8) names no
/// task: 404 like any other unknown id, in JSON, rather than axum's plain-text 400.
pub struct TaskId(String);

impl<S: Send + Sync> FromRequestParts<S> for TaskId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Self(id))
            .map_err(|_| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no task with that id: the path segment is not a readable id",
                )
            })
    }
}

pub async fn status(
    State(state): State<Arc<AppState>>,
    TaskId(id): TaskId,
) -> Result<Json<Value>, ApiError> {
    let found = state.hub.get_task(&id).await?;
    Ok(Json(task_view(&found.server, &id, &found.task)))
}

/// `tasks/cancel`, then the task as `tasks/get` shows it.
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    TaskId(id): TaskId,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let server = state.hub.cancel_task(&id).await?;
    let task = state.hub.get_task_on(&server, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(task_view(&server, &id, &task))))
}

/// Follows one task on its server.
struct TaskWatch {
    state: Arc<AppState>,
    server: String,
    task_id: String,
    /// The task read when the stream was opened: the first look uses it.
    first: Option<DetailedTask>,
    /// Status and message last sent as a `progress` event.
    sent: Option<(TaskStatus, Option<String>)>,
    interval: Duration,
}

impl Watch for TaskWatch {
    async fn look(&mut self) -> Result<Sight, ApiError> {
        let task = match self.first.take() {
            Some(task) => task,
            None => {
                self.state
                    .hub
                    .get_task_on(&self.server, &self.task_id)
                    .await?
            }
        };
        if let Some(interval) = task.task.poll_interval_ms {
            self.interval = Duration::from_millis(interval).max(MIN_TASK_POLL_INTERVAL);
        }
        let view = task_view(&self.server, &self.task_id, &task);
        if task.status().is_terminal() {
            return Ok(Sight::Ended(view));
        }
        let shown = (task.status(), task.task.status_message.clone());
        if self.sent.as_ref() == Some(&shown) {
            return Ok(Sight::Unchanged);
        }
        self.sent = Some(shown);
        Ok(Sight::Changed(view))
    }

    fn interval(&self) -> Duration {
        self.interval
    }
}

/// SSE of one task until it ends (or the stream's time bound passes).
pub async fn events(
    State(state): State<Arc<AppState>>,
    TaskId(id): TaskId,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    // An unknown task, or its server away: a proper status code rather than an event.
    let found = state.hub.get_task(&id).await?;
    let watch = TaskWatch {
        state: state.clone(),
        server: found.server,
        task_id: id.clone(),
        first: Some(found.task),
        sent: None,
        interval: state.render_poll_interval,
    };
    let subject = Subject {
        key: "task_id",
        id,
        noun: "task",
    };
    Ok(event_stream::follow(state, subject, watch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_paths_escape_everything_but_unreserved_characters() {
        assert_eq!(task_path("0123abc-_.~"), "/v1/tasks/0123abc-_.~");
        assert_eq!(task_path("a/b c?é%"), "/v1/tasks/a%2Fb%20c%3F%C3%A9%25");
    }
}
