//! The SSE streams that follow something until it ends: a render job
//! (`/v1/renders/{id}/events`) or a task (`/v1/tasks/{id}/events`). One loop serves both: look,
//! wait the interval the followed thing asks for, look again.
//!
//! Events: `progress` (data: the current view) once per change; `done` once, at the end (data:
//! the final view); `warning` if the server could not be asked for a while (the stream keeps
//! trying); `timeout` if the followed thing outlives `SSE_MAX_DURATION`; `shutdown` if the agent
//! is stopping (the work goes on: GET it or open a new stream on the next instance). Keep-alive
//! comments flow every `SSE_HEARTBEAT` so proxies (Cloud Run's front end included) keep a quiet
//! stream open.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{ApiError, AppState};

/// What one look at the followed thing saw.
pub enum Sight {
    /// It changed since the last look: a `progress` event with this view.
    Changed(Value),
    /// Nothing new.
    Unchanged,
    /// It ended: a `done` event with this view, and the stream ends.
    Ended(Value),
}

/// Something a stream follows.
pub trait Watch: Send + 'static {
    /// Looks once (the first look happens at once, each later one after [`Watch::interval`]).
    fn look(&mut self) -> impl Future<Output = Result<Sight, ApiError>> + Send;
    /// How long to wait before the next look.
    fn interval(&self) -> Duration;
}

/// What a stream follows, as its `timeout` and `shutdown` events name it.
pub struct Subject {
    /// The id's field name in those events: `job_id` or `task_id`.
    pub key: &'static str,
    pub id: String,
    /// `job` or `task`, for their messages.
    pub noun: &'static str,
}

struct Following<W> {
    state: Arc<AppState>,
    subject: Subject,
    watch: W,
    looked: bool,
    started: Instant,
    finished: bool,
    warned: bool,
}

impl<W: Watch> Following<W> {
    /// The next event, waiting (looking again at the watch's interval) until there is one.
    async fn next_event(&mut self) -> Event {
        let deadline = self.started + self.state.sse_max_duration;
        loop {
            if self.looked {
                // Never sleep past the stream's own deadline, however long the interval asked.
                let wait = self
                    .watch
                    .interval()
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(wait).await;
            }
            if Instant::now() >= deadline {
                self.finished = true;
                let noun = self.subject.noun;
                return self.subject_event(
                    "timeout",
                    format!(
                        "the {noun} did not finish while this stream was open; GET the {noun} to \
                         see it later"
                    ),
                );
            }
            self.looked = true;
            match self.watch.look().await {
                Ok(Sight::Changed(view)) => {
                    self.warned = false;
                    return json_event("progress", &view);
                }
                Ok(Sight::Unchanged) => self.warned = false,
                Ok(Sight::Ended(view)) => {
                    self.finished = true;
                    return json_event("done", &view);
                }
                Err(error) => {
                    // Keep waiting through a server blip; say so once.
                    if !self.warned {
                        self.warned = true;
                        return json_event("warning", &json!({ "error": error.message }));
                    }
                }
            }
        }
    }

    fn subject_event(&self, name: &str, error: String) -> Event {
        let mut data = serde_json::Map::new();
        data.insert(self.subject.key.to_owned(), self.subject.id.clone().into());
        data.insert("error".to_owned(), error.into());
        json_event(name, &Value::Object(data))
    }
}

pub fn json_event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// The SSE stream of `watch` until it ends, its time bound passes or the agent stops.
pub fn follow<W: Watch>(
    state: Arc<AppState>,
    subject: Subject,
    watch: W,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let heartbeat = state.sse_heartbeat;
    let following = Following {
        state,
        subject,
        watch,
        looked: false,
        started: Instant::now(),
        finished: false,
        warned: false,
    };
    let stream = futures::stream::unfold(following, |mut following| async move {
        if following.finished {
            return None;
        }
        let shutdown = following.state.shutdown.clone();
        // On SIGTERM the stream ends with a `shutdown` event, so graceful shutdown is not held
        // up for SSE_MAX_DURATION by streams still open.
        let event = tokio::select! {
            event = following.next_event() => event,
            () = shutdown.cancelled() => {
                following.finished = true;
                let noun = following.subject.noun;
                following.subject_event(
                    "shutdown",
                    format!(
                        "this agent instance is shutting down; the {noun} goes on: GET it or open \
                         a new stream"
                    ),
                )
            }
        };
        Some((Ok(event), following))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text("keep-alive"))
}
