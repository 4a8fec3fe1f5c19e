//! The agent's overhead on a streamed chat turn: time to the first streamed byte of the answer
//! at a client of `POST /v1/chat` (`Accept: text/event-stream`) against the same model's own
//! first byte, the model being a local server in this process that streams an
//! OpenAI-compatible reply (`stream: true`, the first chunk at once, the rest `PIECE_GAP`
//! apart). Rounds alternate: a turn straight to the model, then one through the agent, so both
//! see the same machine.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use axum::{Router, response::IntoResponse, routing::post};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use crate::{agent::AgentStack, stats::Latency};

/// The gap between the answer's later pieces: long enough that the first byte is clearly the
/// first piece, short enough that a round is quick.
const PIECE_GAP: Duration = Duration::from_millis(20);

#[derive(Debug, Serialize)]
pub struct ChatOverheadReport {
    pub turns_each: usize,
    /// Request sent → first `data:` chunk read, straight from the model.
    pub model_first_byte: Latency,
    /// Request sent → first `delta` event read, through the agent (which first lists the MCP
    /// tools, then calls the model with `stream: true` and relays the chunk).
    pub agent_first_delta: Latency,
    /// agent_first_delta − model_first_byte, per percentile, in milliseconds.
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
    /// Request sent → `done` through the agent (the whole 3-piece answer).
    pub agent_whole_turn: Latency,
}

/// One streamed reply of three pieces.
fn reply() -> impl IntoResponse {
    let chunk = |text: &str, finish: Option<&str>| {
        Bytes::from(format!(
            "data: {}\n\n",
            json!({"object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]})
        ))
    };
    let pieces = vec![
        (Duration::ZERO, chunk("Hello", None)),
        (PIECE_GAP, chunk(", ", None)),
        (PIECE_GAP, chunk("world", Some("stop"))),
        (Duration::ZERO, Bytes::from_static(b"data: [DONE]\n\n")),
    ];
    let stream = futures::stream::iter(pieces).then(|(delay, bytes)| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, std::convert::Infallible>(bytes)
    });
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(stream),
    )
}

/// Reads an SSE response until `done(event_name, data)` says so; the time of that event.
async fn until_event(
    response: reqwest::Response,
    started: Instant,
    mut done: impl FnMut(&str, &str) -> bool,
) -> anyhow::Result<Duration> {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(bytes) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&bytes?));
        while let Some(cut) = buffer.find("\n\n") {
            let block: String = buffer.drain(..cut + 2).collect();
            let mut name = "message";
            let mut data = "";
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data = value.trim();
                }
            }
            if done(name, data) {
                return Ok(started.elapsed());
            }
        }
    }
    bail!("the stream ended before the awaited event")
}

pub async fn run(turns: usize) -> anyhow::Result<ChatOverheadReport> {
    let requests = Arc::new(Mutex::new(0_usize));
    let counted = requests.clone();
    let model = Router::new().route(
        "/chat/completions",
        post(move || {
            *counted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
            std::future::ready(reply())
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let model_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, model).await });

    let stack = AgentStack::start(&[
        ("LLM_PROVIDER", "openai".to_owned()),
        ("OPENAI_BASE_URL", format!("http://{model_addr}")),
        ("LLM_MODEL", "bench-model".to_owned()),
    ])?;
    let agent = &stack.agent;
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let agent_url = format!("http://{}/v1/chat", agent.addr);
    let model_url = format!("http://{model_addr}/chat/completions");

    // Wait until the agent is ready (connected to the sidecar, so the model gets its tools).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = http
            .get(format!("http://{}/readyz", agent.addr))
            .send()
            .await?;
        if ready.status() == 200 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the agent never became ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let model_body = json!({"model": "bench-model", "stream": true,
                            "messages": [{"role": "user", "content": "Say hello"}]});
    let chat_body = json!({"message": "Say hello"});
    let warmup = 20;
    let (mut direct, mut first_delta, mut whole) = (vec![], vec![], vec![]);
    for round in 0..turns + warmup {
        let started = Instant::now();
        let response = http.post(&model_url).json(&model_body).send().await?;
        let model_first = until_event(response, started, |_, data| data.contains("Hello")).await?;

        let started = Instant::now();
        let response = http
            .post(&agent_url)
            .header("accept", "text/event-stream")
            .json(&chat_body)
            .send()
            .await
            .context("streamed chat")?;
        if response.status() != 200 {
            bail!("the agent answered {}", response.status());
        }
        let mut delta_at = None;
        let turn = until_event(response, started, |name, _| {
            if name == "delta" && delta_at.is_none() {
                delta_at = Some(started.elapsed());
            }
            name == "done" || name == "error"
        })
        .await?;
        let delta_at = delta_at.context("no delta before the end of the turn")?;
        if round >= warmup {
            direct.push(model_first);
            first_delta.push(delta_at);
            whole.push(turn);
        }
    }
    let model_requests = *requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if model_requests != 2 * (turns + warmup) {
        bail!("the model got {model_requests} requests, expected one per turn of each kind");
    }
    let direct = Latency::of(direct);
    let first_delta = Latency::of(first_delta);
    Ok(ChatOverheadReport {
        turns_each: turns,
        overhead_p50_ms: first_delta.p50_ms - direct.p50_ms,
        overhead_p99_ms: first_delta.p99_ms - direct.p99_ms,
        model_first_byte: direct,
        agent_first_delta: first_delta,
        agent_whole_turn: Latency::of(whole),
    })
}
