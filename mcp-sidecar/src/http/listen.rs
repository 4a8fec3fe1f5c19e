//! `subscriptions/listen` for task ids: `notifications/tasks` pushed to a client on any
//! instance, whichever instance's worker runs the task.
//!
//! rmcp 3.x has no `taskIds` in its subscription filter, so a listen request that asks for
//! task ids (`params.notifications.taskIds`) is answered here, before rmcp:
//! 1. the Host/Origin checks are rmcp's own, run on a probe (see [`listen`]);
//! 2. the request must declare the tasks extension in its `_meta` client capabilities, else
//!    `-32021` with the required capability, as the extension says;
//! 3. the answer is an SSE stream: `notifications/subscriptions/acknowledged` first, echoing
//!    the accepted ids (those that name a task, at most [`MAX_TASK_IDS`]); then each task's
//!    current state, so a listener that (re)connects never misses a terminal state; then
//!    every change, as `tasks/get` would return it, each with the stream's subscription id
//!    in `_meta`. Changes come from Redis pub/sub ([`crate::jobs::events`]).
//! 4. The stream lasts until the client goes away; at shutdown it ends with the listen
//!    request's result (`resultType: "complete"`), so the client listens again elsewhere.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::{SinkExt, channel::mpsc};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::{HttpState, mcp::jsonrpc_error_response};
use crate::jobs::{events::TaskEvent, model::JobId, store::JobSnapshot};

/// Most task ids one listen request may follow; ids beyond it are not acknowledged.
pub const MAX_TASK_IDS: usize = 100;
const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";
const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
/// An SSE comment this often keeps idle proxies from closing the stream, and finds out when
/// the client has gone.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The task ids a `subscriptions/listen` request asks for, if it asks for any.
pub(super) fn requested_task_ids(request: &Value) -> Option<&Vec<Value>> {
    request
        .get("params")?
        .get("notifications")?
        .get("taskIds")?
        .as_array()
}

/// Answers a `subscriptions/listen` request that asks for task ids (`request`, already parsed).
pub(super) async fn listen(
    state: &Arc<HttpState>,
    parts: http::request::Parts,
    request: Value,
) -> Response {
    // The DNS-rebinding checks (Host, Origin) are rmcp's, configured once: a notification
    // with this request's headers goes through them. Only their refusal (403) matters here;
    // whatever else rmcp would say of a bare notification does not apply to this request.
    let probe = http::Request::from_parts(
        parts,
        Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        )),
    );
    let probed = state.mcp.handle(probe).await;
    if probed.status() == StatusCode::FORBIDDEN {
        return probed;
    }

    let id = match request.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => {
            return jsonrpc_error_response(
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32600,
                "Invalid Request: subscriptions/listen is a request and needs an id",
            );
        }
    };
    let declared = request
        .pointer(&format!(
            "/params/_meta/{}",
            CLIENT_CAPABILITIES.replace('/', "~1")
        ))
        .and_then(|capabilities| capabilities.get("extensions"))
        .and_then(|extensions| extensions.get(TASKS_EXTENSION))
        .is_some();
    if !declared {
        // A missing capability is HTTP 400 on Streamable HTTP (SEP-2575), as rmcp answers it.
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {
                    "code": -32021,
                    "message": "Missing required client capability: task notifications need \
                                the io.modelcontextprotocol/tasks extension declared in the \
                                request's _meta client capabilities",
                    "data": {
                        "requiredCapabilities": { "extensions": { TASKS_EXTENSION: {} } }
                    }
                }
            })),
        )
            .into_response();
    }

    let requested: Vec<String> = requested_task_ids(&request)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    // Subscribe before the first read, so no change between the two is missed.
    let changes = state.render.events.subscribe();
    let mut followed: HashMap<String, Followed> = HashMap::new();
    let mut accepted = Vec::new();
    for task_id in requested {
        if followed.len() == MAX_TASK_IDS || followed.contains_key(&task_id) {
            continue;
        }
        let Ok(job) = task_id.parse::<JobId>() else {
            continue;
        };
        if let Ok(snapshot) = state.store.snapshot(&job).await {
            accepted.push(task_id.clone());
            followed.insert(
                task_id,
                Followed {
                    job,
                    first: Some(snapshot),
                    sent: None,
                },
            );
        }
    }

    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let stream = Stream {
        state: state.clone(),
        subscription: id,
        sender,
    };
    tokio::spawn(stream.run(accepted, followed, changes));
    let mut response = Body::from_stream(receiver).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A task the stream follows.
struct Followed {
    job: JobId,
    /// The state read when the stream was set up, sent right after the acknowledgement.
    first: Option<JobSnapshot>,
    /// What was last sent: state, stage and last update, so an unchanged task is not re-sent.
    sent: Option<(crate::jobs::model::JobState, u32, u64)>,
}

struct Stream {
    state: Arc<HttpState>,
    /// The listen request's id, which every message of the stream names.
    subscription: Value,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

/// Why a stream stopped.
enum Ended {
    ClientGone,
    Shutdown,
}

impl Stream {
    async fn run(
        mut self,
        accepted: Vec<String>,
        mut followed: HashMap<String, Followed>,
        mut changes: tokio::sync::broadcast::Receiver<TaskEvent>,
    ) {
        let ended = async {
            self.send(json!({
                "jsonrpc": "2.0",
                "method": "notifications/subscriptions/acknowledged",
                "params": {
                    "_meta": { SUBSCRIPTION_ID: self.subscription },
                    "notifications": { "taskIds": accepted },
                }
            }))
            .await?;
            if followed.is_empty() {
                return Ok::<Ended, Ended>(Ended::Shutdown);
            }
            for (task_id, task) in &mut followed {
                if let Some(snapshot) = task.first.take() {
                    self.send_task(task_id, task, snapshot).await?;
                }
            }
            let shutdown = self.state.shutdown.clone();
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return Ok(Ended::Shutdown),
                    event = tokio::time::timeout(KEEP_ALIVE, changes.recv()) => event,
                };
                match event {
                    Err(_) => {
                        self.send_bytes(Bytes::from_static(b": keep-alive\n\n"))
                            .await?
                    }
                    Ok(Ok(TaskEvent::Changed(id))) => {
                        if let Some(task) = followed.get_mut(&*id) {
                            self.refresh(&id, task).await?;
                        }
                    }
                    Ok(Ok(TaskEvent::Resync) | Err(RecvError::Lagged(_))) => {
                        for (task_id, task) in &mut followed {
                            self.refresh(task_id, task).await?;
                        }
                    }
                    Ok(Err(RecvError::Closed)) => return Ok(Ended::Shutdown),
                }
            }
        };
        if let Ok(Ended::Shutdown) = ended.await {
            let _ = self
                .send(json!({
                    "jsonrpc": "2.0",
                    "id": self.subscription,
                    "result": {
                        "resultType": "complete",
                        "_meta": { SUBSCRIPTION_ID: self.subscription },
                    }
                }))
                .await;
        }
    }

    /// Reads a followed task again and sends it if it changed.
    async fn refresh(&mut self, task_id: &str, task: &mut Followed) -> Result<(), Ended> {
        match self.state.store.snapshot(&task.job).await {
            Ok(snapshot) => self.send_task(task_id, task, snapshot).await,
            // Expired, or Redis is away: nothing to say now; a resync reads it again.
            Err(error) => {
                tracing::debug!(task_id, %error, "listen: task not read");
                Ok(())
            }
        }
    }

    async fn send_task(
        &mut self,
        task_id: &str,
        task: &mut Followed,
        snapshot: JobSnapshot,
    ) -> Result<(), Ended> {
        let key = (
            snapshot.status.state,
            snapshot.status.stage,
            snapshot.updated_at_ms,
        );
        if task.sent == Some(key) {
            return Ok(());
        }
        let detailed = match self.state.render.detailed_task(&snapshot).await {
            Ok(detailed) => detailed,
            Err(error) => {
                tracing::warn!(task_id, error = %error.message, "listen: task not sent");
                return Ok(());
            }
        };
        let mut params = serde_json::to_value(&detailed).unwrap_or_else(|_| json!({}));
        if let Value::Object(params) = &mut params {
            params.insert(
                "_meta".into(),
                json!({ SUBSCRIPTION_ID: self.subscription }),
            );
        }
        self.send(json!({
            "jsonrpc": "2.0",
            "method": "notifications/tasks",
            "params": params,
        }))
        .await?;
        task.sent = Some(key);
        Ok(())
    }

    async fn send(&mut self, message: Value) -> Result<(), Ended> {
        self.send_bytes(Bytes::from(format!("data: {message}\n\n")))
            .await
    }

    async fn send_bytes(&mut self, bytes: Bytes) -> Result<(), Ended> {
        self.sender
            .send(Ok(bytes))
            .await
            .map_err(|_| Ended::ClientGone)
    }
}
