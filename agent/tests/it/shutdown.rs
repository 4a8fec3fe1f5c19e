//! Graceful shutdown of the agent, a real process in front of the real sidecar and Redis: on
//! SIGTERM (what Cloud Run sends before it stops an instance) requests in flight finish, open
//! SSE streams end with a `shutdown` event instead of holding the drain up for
//! `SSE_MAX_DURATION`, and the process exits 0 well within Cloud Run's 10 s grace period.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::common::{Stack, read_events, start_render_with_events};
use reqwest::StatusCode;
use serde_json::json;

/// Concurrent REST clients calling a tool while the agent stops.
const CLIENTS: usize = 16;
/// How long the agent may take from SIGTERM to its exit (Cloud Run waits 10 s, then SIGKILLs).
const DRAIN_LIMIT: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_rest_load_with_an_open_sse_stream_drains_and_exits_zero() {
    // No render workers: the job stays queued, so its stream would stay open for the whole
    // SSE_MAX_DURATION (10 min by default) if shutdown did not end it.
    let mut stack = Stack::start_with("stateless", &[("RENDER_WORKERS", "0")], &[]);
    let http = reqwest::Client::new();

    let (job, stream) = start_render_with_events(
        &http,
        &stack,
        json!({"kind": "chart", "width": 64, "height": 64, "chart": {
            "type": "bar", "series": [{"name": "a", "points": [[1, 2]]}]}}),
    )
    .await;
    let events = tokio::spawn(read_events(stream, Duration::from_secs(30)));

    // REST load: each client calls `add` until the agent stops answering. Every answer that
    // comes back must be a 200 with the right sum; after SIGTERM the listener is closed, so a
    // client ends at its first transport error (refused or closed connection).
    let stopping = Arc::new(AtomicBool::new(false));
    let (ok, ok_after_sigterm, bad) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let url = stack.url("/v1/tools/add");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (http, url) = (http.clone(), url.clone());
            let (stopping, ok, ok_after_sigterm, bad) = (
                stopping.clone(),
                ok.clone(),
                ok_after_sigterm.clone(),
                bad.clone(),
            );
            tokio::spawn(async move {
                for call in 0u64.. {
                    let sent = http
                        .post(&url)
                        .json(&json!({"a": client, "b": call}))
                        .timeout(Duration::from_secs(20))
                        .send()
                        .await;
                    let Ok(response) = sent else { return };
                    let status = response.status();
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    let sum = u64::try_from(client).unwrap() + call;
                    if status == StatusCode::OK && body["structuredContent"] == json!({"sum": sum})
                    {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if stopping.load(Ordering::Relaxed) {
                            ok_after_sigterm.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        eprintln!("client {client}: {status} {body}");
                        bad.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(750)).await;
    let before = ok.load(Ordering::Relaxed);
    assert!(before > 0, "the load got no answers before SIGTERM");

    let signalled = Instant::now();
    stopping.store(true, Ordering::Relaxed);
    stack.agent.send_sigterm();
    let events = events.await.unwrap();
    let stream_ended = signalled.elapsed();
    let status = tokio::task::block_in_place(|| stack.agent.wait_exit(DRAIN_LIMIT));
    let exited = signalled.elapsed();
    for client in clients {
        tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .expect("every client ends once the agent is gone")
            .unwrap();
    }
    println!(
        "{before} calls before SIGTERM, {} answered while draining, {} bad; SSE stream ended \
         after {stream_ended:.2?}; exit {status:?} after {exited:.2?}",
        ok_after_sigterm.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
    );

    let status = status.expect("the agent exits within the drain limit after SIGTERM");
    assert!(
        status.success(),
        "the agent exits 0 after SIGTERM: {status}"
    );
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "every answer was a correct 200"
    );
    let last = events.last().expect("the stream carried events");
    assert_eq!(
        last.event, "shutdown",
        "the stream ends with `shutdown`: {events:?}"
    );
    assert_eq!(last.data["job_id"], job.as_str());
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|event| event.event == "progress"),
        "{events:?}"
    );
    assert!(
        stream_ended < DRAIN_LIMIT,
        "the stream ended after {stream_ended:?}"
    );

    // The job goes on: the sidecar still has it, queued for a worker.
    let mut redis = stack.redis.connection();
    let queued: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis).unwrap();
    assert!(
        queued.iter().any(|key| key.contains(&job)),
        "the job's record is still in Redis: {queued:?}"
    );
}
