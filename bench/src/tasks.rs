//! Render jobs as MCP tasks against the job-tool flow, side by side in one run with real Redis:
//! - time from the first call to the client knowing the render succeeded, for
//!   1. the job tools: `start_render`, then `get_render_status` every 200 ms (how the agent
//!      and a model followed renders before tasks),
//!   2. a task-augmented `tools/call render`, then `tasks/get` every `pollIntervalMs`,
//!   3. a task-augmented `tools/call render`, then a `subscriptions/listen` stream (push);
//!
//!   the three flows take turns, round by round, so the machine's noise falls on all alike;
//! - `tasks/get` calls per second (one client, sequential; and 8 clients at once) and the
//!   Redis commands each call costs;
//! - `tasks/get` against `get_render_status` on the same queued job (a sidecar without
//!   workers, so it stays queued), one client, sequential, in alternating rounds: what the
//!   task form costs over the job tool for the same status read.
//!
//! The requests are raw HTTP in the 2026-07-28 dialect (stateless, `_meta` per request), as
//! the clients that speak tasks today send them.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    jobs::{command_deltas, command_stats, sidecar_env, small_chart},
    processes::{Redis, Server, TempDir, release_dir},
    stats::{Latency, Spread},
};

/// The poll interval of both polling flows, so that they differ only in what they poll.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Serialize)]
pub struct TasksReport {
    pub rounds: usize,
    pub poll_interval_ms: u64,
    /// start_render, then get_render_status every 200 ms, until succeeded.
    pub job_tools_polled: Latency,
    /// tools/call render as a task, then tasks/get every pollIntervalMs, until completed.
    pub task_polled: Latency,
    /// tools/call render as a task, then subscriptions/listen, until completed is pushed.
    pub task_pushed: Latency,
    /// Median of the job-tool flow over the median of each task flow.
    pub speedup_polled: f64,
    pub speedup_pushed: f64,
    pub tasks_get_sequential_calls: u64,
    pub tasks_get_sequential_per_second: f64,
    pub tasks_get_concurrent_clients: usize,
    pub tasks_get_concurrent_calls: u64,
    pub tasks_get_concurrent_per_second: f64,
    /// Redis commands per tasks/get of a completed task, by command.
    pub redis_commands_per_tasks_get: f64,
    pub redis_commands_seen: Vec<(String, u64)>,
    /// Same job, one client, sequential, alternating rounds: per round, calls/s of each.
    pub status_reads: StatusReads,
}

#[derive(Debug, Serialize)]
pub struct StatusReads {
    pub calls_per_round: u64,
    pub tasks_get_per_second: Vec<f64>,
    pub get_render_status_per_second: Vec<f64>,
    /// tasks/get calls/s ÷ get_render_status calls/s, per round.
    pub ratio: Spread,
    pub tasks_get_p50_ms: f64,
    pub get_render_status_p50_ms: f64,
}

/// `calls` sequential reads of a queued job's status each way, alternating which goes first.
#[allow(clippy::cast_precision_loss)]
async fn status_reads(
    mcp: &Mcp,
    job_id: &str,
    calls: u64,
    rounds: usize,
) -> anyhow::Result<StatusReads> {
    let (mut task_rates, mut tool_rates) = (vec![], vec![]);
    let (mut task_times, mut tool_times) = (vec![], vec![]);
    for round in 0..rounds {
        for way in 0..2 {
            let task_way = (way == 0) == (round % 2 == 0);
            let started = Instant::now();
            for _ in 0..calls {
                let call = Instant::now();
                if task_way {
                    let task = mcp.get_task(job_id).await?;
                    if task["status"] != "working" {
                        bail!("the queued task is not working: {task}");
                    }
                    task_times.push(call.elapsed());
                } else {
                    let status = mcp
                        .tool("get_render_status", json!({"job_id": job_id}))
                        .await?;
                    if status["structuredContent"]["state"] != "queued" {
                        bail!("the job is not queued: {status}");
                    }
                    tool_times.push(call.elapsed());
                }
            }
            let rate = calls as f64 / started.elapsed().as_secs_f64();
            if task_way {
                task_rates.push(rate);
            } else {
                tool_rates.push(rate);
            }
        }
    }
    let ratios: Vec<f64> = task_rates
        .iter()
        .zip(&tool_rates)
        .map(|(task, tool)| task / tool)
        .collect();
    Ok(StatusReads {
        calls_per_round: calls,
        ratio: Spread::of(&ratios),
        tasks_get_p50_ms: Latency::of(task_times).p50_ms,
        get_render_status_p50_ms: Latency::of(tool_times).p50_ms,
        tasks_get_per_second: task_rates,
        get_render_status_per_second: tool_rates,
    })
}

/// A client of the sidecar's `/mcp` in the 2026-07-28 stateless dialect.
#[derive(Clone)]
struct Mcp {
    http: reqwest::Client,
    url: String,
}

impl Mcp {
    fn new(server: &Server) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: format!("http://{}/mcp", server.addr),
        }
    }

    fn request(
        &self,
        method: &str,
        name: Option<&str>,
        mut params: Value,
    ) -> reqwest::RequestBuilder {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {
                "extensions": {"io.modelcontextprotocol/tasks": {}}
            },
        });
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method);
        if let Some(name) = name {
            request = request.header("mcp-name", name);
        }
        request.json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
    }

    /// One request whose answer is a single JSON-RPC message; returns its `result`.
    async fn call(&self, method: &str, name: Option<&str>, params: Value) -> anyhow::Result<Value> {
        let text = self
            .request(method, name, params)
            .send()
            .await?
            .text()
            .await?;
        // A JSON answer, or an SSE answer whose last data line is the response.
        let message = text
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("data: "))
            .unwrap_or(&text);
        let message: Value = serde_json::from_str(message).context("a JSON-RPC answer")?;
        if let Some(error) = message.get("error") {
            bail!("{method}: {error}");
        }
        Ok(message["result"].clone())
    }

    async fn tool(&self, tool: &str, arguments: Value) -> anyhow::Result<Value> {
        let result = self
            .call(
                "tools/call",
                Some(tool),
                json!({"name": tool, "arguments": arguments}),
            )
            .await?;
        if result["isError"] == true {
            bail!("{tool}: {}", result["structuredContent"]);
        }
        Ok(result)
    }

    async fn create_task(&self, seed: usize) -> anyhow::Result<String> {
        let created = self
            .tool("render", json!({"spec": small_chart(seed)}))
            .await?;
        if created["resultType"] != "task" {
            bail!("render did not answer with a task: {created}");
        }
        Ok(created["taskId"].as_str().context("taskId")?.to_owned())
    }

    async fn get_task(&self, task_id: &str) -> anyhow::Result<Value> {
        self.call("tasks/get", Some(task_id), json!({"taskId": task_id}))
            .await
    }
}

fn ended(status: &Value) -> anyhow::Result<bool> {
    match status.as_str() {
        Some("completed" | "succeeded") => Ok(true),
        Some("failed" | "cancelled") => bail!("the render ended without a result: {status}"),
        _ => Ok(false),
    }
}

async fn job_tools_flow(mcp: &Mcp, seed: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let job = mcp
        .tool("start_render", json!({"spec": small_chart(seed)}))
        .await?;
    let job_id = job["structuredContent"]["job_id"].clone();
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let status = mcp
            .tool("get_render_status", json!({"job_id": job_id}))
            .await?;
        if ended(&status["structuredContent"]["state"])? {
            return Ok(started.elapsed());
        }
    }
}

async fn task_polled_flow(mcp: &Mcp, seed: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let task_id = mcp.create_task(seed).await?;
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        if ended(&mcp.get_task(&task_id).await?["status"])? {
            return Ok(started.elapsed());
        }
    }
}

async fn task_pushed_flow(mcp: &Mcp, seed: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let task_id = mcp.create_task(seed).await?;
    let mut stream = mcp
        .request(
            "subscriptions/listen",
            None,
            json!({"notifications": {"taskIds": [task_id]}}),
        )
        .send()
        .await?;
    let mut buffered = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), stream.chunk())
            .await
            .context("no event within 30 s")??
        else {
            bail!("the listen stream ended before the task completed");
        };
        buffered.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffered.find("\n\n") {
            let event: String = buffered.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|line| line.strip_prefix("data: ")) else {
                continue;
            };
            let message: Value = serde_json::from_str(data)?;
            if message["method"] == "notifications/tasks" && ended(&message["params"]["status"])? {
                return Ok(started.elapsed());
            }
        }
    }
    bail!("no completed notification within 60 s")
}

pub async fn run(rounds: usize, get_calls: u64) -> anyhow::Result<TasksReport> {
    let redis = Redis::start()?;
    let artifacts = TempDir::new("artifacts")?;
    let prefix = "bench:".to_owned();
    let env = |workers: usize| {
        let mut env = sidecar_env(redis.url(), &artifacts, &prefix, workers);
        env.push((
            "TASK_POLL_INTERVAL",
            format!("{}ms", POLL_INTERVAL.as_millis()),
        ));
        env
    };
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let sidecar = Server::start(&release_dir().join("mcp-sidecar"), &env(workers))?;
    let mcp = Mcp::new(&sidecar);

    let (mut job_tools, mut polled, mut pushed) = (vec![], vec![], vec![]);
    // Two warm-up rounds, then the three flows in turn.
    for round in 0..rounds + 2 {
        let samples = [
            job_tools_flow(&mcp, round * 3).await?,
            task_polled_flow(&mcp, round * 3 + 1).await?,
            task_pushed_flow(&mcp, round * 3 + 2).await?,
        ];
        if round >= 2 {
            job_tools.push(samples[0]);
            polled.push(samples[1]);
            pushed.push(samples[2]);
        }
    }
    let (job_tools, polled, pushed) = (
        Latency::of(job_tools),
        Latency::of(polled),
        Latency::of(pushed),
    );

    // tasks/get of a completed task, on a sidecar with no workers so nothing else talks to
    // Redis; the completed answer carries the signed URL and the inline PNG.
    let task_id = mcp.create_task(0).await?;
    while !ended(&mcp.get_task(&task_id).await?["status"])? {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(sidecar);
    let quiet = Server::start(&release_dir().join("mcp-sidecar"), &env(0))?;
    let mcp = Mcp::new(&quiet);
    mcp.get_task(&task_id).await?;
    let before = command_stats(&redis)?;
    let started = Instant::now();
    for _ in 0..get_calls {
        mcp.get_task(&task_id).await?;
    }
    let sequential = started.elapsed();
    let after = command_stats(&redis)?;
    let seen = command_deltas(&before, &after);
    let total: u64 = seen.iter().map(|(_, delta)| delta).sum();

    let clients = 8;
    let per_client = get_calls.div_ceil(clients as u64);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let mcp = mcp.clone();
        let task_id = task_id.clone();
        set.spawn(async move {
            for _ in 0..per_client {
                mcp.get_task(&task_id).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = set.join_next().await {
        joined??;
    }
    let concurrent = started.elapsed();

    // A job nobody runs (this sidecar has no workers): read as a task and as a job.
    let queued = mcp.create_task(1).await?;
    let status_reads = status_reads(&mcp, &queued, get_calls / 2, 5).await?;

    #[allow(clippy::cast_precision_loss)]
    Ok(TasksReport {
        rounds,
        poll_interval_ms: u64::try_from(POLL_INTERVAL.as_millis()).unwrap_or(u64::MAX),
        speedup_polled: job_tools.p50_ms / polled.p50_ms.max(f64::MIN_POSITIVE),
        speedup_pushed: job_tools.p50_ms / pushed.p50_ms.max(f64::MIN_POSITIVE),
        job_tools_polled: job_tools,
        task_polled: polled,
        task_pushed: pushed,
        tasks_get_sequential_calls: get_calls,
        tasks_get_sequential_per_second: get_calls as f64 / sequential.as_secs_f64(),
        tasks_get_concurrent_clients: clients,
        tasks_get_concurrent_calls: per_client * clients as u64,
        tasks_get_concurrent_per_second: (per_client * clients as u64) as f64
            / concurrent.as_secs_f64(),
        redis_commands_per_tasks_get: total as f64 / get_calls as f64,
        redis_commands_seen: seen,
        status_reads,
    })
}
