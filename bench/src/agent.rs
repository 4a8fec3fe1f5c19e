//! The agent's overhead per tool call: `POST /v1/tools/add` on the agent (REST → MCP →
//! sidecar) against the same `tools/call add` sent straight to the sidecar, one call at a time
//! over kept-alive connections, interleaved in one run so both see the same machine.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;

use crate::{
    processes::{Redis, Server, TempDir, free_port, release_dir},
    stats::Latency,
};

#[derive(Debug, Serialize)]
pub struct AgentOverheadReport {
    pub calls_each: usize,
    pub direct_to_sidecar: Latency,
    pub through_agent: Latency,
    /// through_agent − direct_to_sidecar, per percentile, in milliseconds.
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
}

/// The release agent in front of the release sidecar (no render workers) on its own Redis,
/// with `agent_env` added to the agent's environment.
pub(crate) struct AgentStack {
    pub agent: Server,
    pub sidecar_port: u16,
    _sidecar: Server,
    _artifacts: TempDir,
    _redis: Redis,
}

impl AgentStack {
    pub(crate) fn start(agent_env: &[(&str, String)]) -> anyhow::Result<Self> {
        let redis = Redis::start()?;
        let artifacts = TempDir::new("artifacts")?;
        let sidecar_port = free_port()?;
        let sidecar = Server::start(
            &release_dir().join("mcp-sidecar"),
            &[
                ("MCP_LISTEN_ADDR", format!("127.0.0.1:{sidecar_port}")),
                ("REDIS_URL", redis.url()),
                ("ARTIFACT_DIR", artifacts.0.display().to_string()),
                (
                    "ARTIFACT_SIGNING_KEY",
                    "bench-signing-key-0123456789".to_owned(),
                ),
                ("RENDER_WORKERS", "0".to_owned()),
            ],
        )?;
        let mut env = vec![
            ("PORT", "0".to_owned()),
            ("BIND_ADDR", "127.0.0.1".to_owned()),
            (
                "MCP_SERVER_URL",
                format!("http://127.0.0.1:{sidecar_port}/mcp"),
            ),
        ];
        env.extend(agent_env.iter().cloned());
        let agent = Server::start(&release_dir().join("agent"), &env)?;
        Ok(Self {
            agent,
            sidecar_port,
            _sidecar: sidecar,
            _artifacts: artifacts,
            _redis: redis,
        })
    }
}

pub async fn run(calls: usize) -> anyhow::Result<AgentOverheadReport> {
    let stack = AgentStack::start(&[])?;
    let (agent, sidecar_port) = (&stack.agent, stack.sidecar_port);
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let agent_url = format!("http://{}/v1/tools/add", agent.addr);
    let sidecar_url = format!("http://127.0.0.1:{sidecar_port}/mcp");

    // Wait until the agent has connected to the sidecar.
    let deadline = Instant::now() + Duration::from_secs(20);
    while http
        .post(&agent_url)
        .json(&json!({"a": 1, "b": 1}))
        .send()
        .await?
        .status()
        != 200
    {
        if Instant::now() > deadline {
            bail!("the agent never reached the sidecar");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let direct_body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                             "params": {"name": "add", "arguments": {"a": 2, "b": 3}}});
    let mut direct = Vec::with_capacity(calls);
    let mut through = Vec::with_capacity(calls);
    for index in 0..calls + 200 {
        let started = Instant::now();
        let response = http
            .post(&sidecar_url)
            .header("accept", "application/json, text/event-stream")
            .json(&direct_body)
            .send()
            .await?;
        let body: serde_json::Value = response.json().await?;
        let direct_elapsed = started.elapsed();
        if body["result"]["structuredContent"]["sum"] != 5 {
            bail!("unexpected direct answer: {body}");
        }
        let started = Instant::now();
        let response = http
            .post(&agent_url)
            .json(&json!({"a": 2, "b": 3}))
            .send()
            .await?;
        let body: serde_json::Value = response.json().await.context("agent answer")?;
        let through_elapsed = started.elapsed();
        if body["structuredContent"]["sum"] != 5 {
            bail!("unexpected agent answer: {body}");
        }
        // The first 200 of each warm connections and caches.
        if index >= 200 {
            direct.push(direct_elapsed);
            through.push(through_elapsed);
        }
    }
    let direct = Latency::of(direct);
    let through = Latency::of(through);
    Ok(AgentOverheadReport {
        calls_each: calls,
        overhead_p50_ms: through.p50_ms - direct.p50_ms,
        overhead_p99_ms: through.p99_ms - direct.p99_ms,
        direct_to_sidecar: direct,
        through_agent: through,
    })
}
