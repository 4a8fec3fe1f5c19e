//! `bench all`: every measurement of the performance issue in one run, on this machine, with
//! the reference servers side by side, written to `bench/results/all.json` and summarised in
//! `bench/RESULTS.md`.
//!
//! - Load: N concurrent MCP clients calling `tools/call add` (and one client, sequentially)
//!   against our sidecar (stateless and session mode), the FastMCP reference and a raw axum
//!   endpoint answering the same JSON-RPC request with a fixed body (the HTTP ceiling here).
//! - Cold start: exec to the first `/healthz` 200 and to the first successful MCP `initialize`
//!   (for the agent: to `/readyz` 200, i.e. its own MCP `initialize` of the sidecar done),
//!   median of several runs.
//! - Memory: RSS after start and peak RSS under the load, per server process.
//! - Jobs: small chart renders end to end with real Redis (see `jobs.rs`).
//! - Scale: `get_render_status` latency with 100,000 finished jobs in Redis vs 100.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::{
    jobs::{self, JobsReport},
    load::{self, Dialect, LoadReport},
    processes::{Redis, Server, TempDir, free_port, memory_kib, release_dir},
    stats::{Latency, median},
};

#[derive(Debug, Serialize)]
pub struct TargetReport {
    pub name: String,
    pub concurrent: LoadReport,
    pub sequential: LoadReport,
    pub rss_after_start_kib: u64,
    pub peak_rss_under_load_kib: u64,
}

#[derive(Debug, Serialize)]
pub struct ColdStart {
    pub name: String,
    pub runs: usize,
    /// Median ms from exec to the first `/healthz` 200 (first HTTP answer for FastMCP).
    pub to_health_ms: f64,
    /// Median ms from exec to the first successful MCP `initialize` (agent: `/readyz` 200).
    pub to_ready_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct ScaleReport {
    pub jobs_in_redis: usize,
    pub status_calls: usize,
    pub latency: Latency,
}

#[derive(Debug, Serialize)]
pub struct SuiteReport {
    pub machine: String,
    pub clients: usize,
    pub targets: Vec<TargetReport>,
    pub cold_starts: Vec<ColdStart>,
    pub jobs: JobsReport,
    pub scale: Vec<ScaleReport>,
    pub agent_rss_after_start_kib: u64,
    pub agent_peak_rss_under_load_kib: u64,
    pub ceiling_rounds: Vec<CeilingRound>,
}

/// One round of the alternating ceiling comparison: raw axum, the stateless sidecar and the
/// session sidecar, all already running, measured back to back (in an order that rotates
/// from round to round) so all see the same machine noise.
#[derive(Debug, Serialize)]
pub struct CeilingRound {
    pub raw_calls_per_second: f64,
    pub sidecar_calls_per_second: f64,
    pub ratio: f64,
    pub session_calls_per_second: f64,
    pub session_ratio: f64,
}

pub struct SuiteOptions {
    pub clients: usize,
    pub calls_each: usize,
    pub reference_calls_each: usize,
    pub sequential_calls: usize,
    pub cold_start_runs: usize,
    pub ceiling_rounds: usize,
    pub python: PathBuf,
}

fn sidecar_env(
    redis: &Redis,
    artifacts: &TempDir,
    addr: &str,
    mode: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("MCP_LISTEN_ADDR", addr.to_owned()),
        ("MCP_SESSION_MODE", mode.to_owned()),
        ("REDIS_URL", redis.url()),
        ("REDIS_KEY_PREFIX", "bench:".to_owned()),
        ("ARTIFACT_DIR", artifacts.0.display().to_string()),
        (
            "ARTIFACT_SIGNING_KEY",
            "bench-signing-key-0123456789".to_owned(),
        ),
        ("RENDER_WORKERS", "2".to_owned()),
    ]
}

fn fastmcp_command(python: &PathBuf, port: u16) -> Command {
    let mut command = Command::new(python);
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/reference/fastmcp_server.py"
        ))
        .env("PORT", port.to_string());
    command
}

async fn measure(
    name: &str,
    addr: SocketAddr,
    pid: u32,
    dialect: Dialect,
    clients: usize,
    calls_each: usize,
    sequential_calls: usize,
) -> anyhow::Result<TargetReport> {
    // Let start-up settle, then read the idle footprint.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_after_start_kib, _) = memory_kib(pid)?;
    // Warm up connections and caches.
    load::run(addr, "/mcp", dialect, clients.min(4), 50, false).await?;
    let sequential = load::run(addr, "/mcp", dialect, 1, sequential_calls, false).await?;
    let concurrent = load::run(addr, "/mcp", dialect, clients, calls_each, false).await?;
    let (_, peak_rss_under_load_kib) = memory_kib(pid)?;
    println!(
        "{name}: {:.0} calls/s with {clients} clients (p99 {:.3} ms), sequential p50 {:.3} ms, errors {}",
        concurrent.calls_per_second,
        concurrent.latency.p99_ms,
        sequential.latency.p50_ms,
        concurrent.errors
    );
    Ok(TargetReport {
        name: name.to_owned(),
        concurrent,
        sequential,
        rss_after_start_kib,
        peak_rss_under_load_kib,
    })
}

/// One raw HTTP exchange on a fresh connection; returns the status and body.
fn exchange(addr: SocketAddr, request: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    let status = reply.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, reply))
}

fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n"),
    )
    .map(|(status, _)| status)
}

fn initialize(addr: SocketAddr) -> bool {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
    let request = format!(
        "POST /mcp HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, &request)
        .is_some_and(|(status, reply)| status == 200 && reply.contains("\"result\""))
}

/// Starts `command` `runs` times; each time measures exec → `health` and exec → `ready`.
fn cold_start(
    name: &str,
    runs: usize,
    mut make: impl FnMut(u16) -> Command,
    health: impl Fn(SocketAddr) -> bool,
    ready: impl Fn(SocketAddr) -> bool,
) -> anyhow::Result<ColdStart> {
    let mut to_health = vec![];
    let mut to_ready = vec![];
    for _ in 0..runs {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut command = make(port);
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let started = Instant::now();
        let mut child = command.spawn().context("starting for cold start")?;
        let deadline = started + Duration::from_secs(30);
        let mut healthy = None;
        let mut readied = None;
        while readied.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{name} did not become ready in 30 s");
            }
            if healthy.is_none() && health(addr) {
                healthy = Some(started.elapsed());
            }
            if healthy.is_some() && ready(addr) {
                readied = Some(started.elapsed());
            }
            if readied.is_none() {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        to_health.push(healthy.unwrap_or_default().as_secs_f64() * 1000.0);
        to_ready.push(readied.unwrap_or_default().as_secs_f64() * 1000.0);
    }
    let report = ColdStart {
        name: name.to_owned(),
        runs,
        to_health_ms: median(to_health),
        to_ready_ms: median(to_ready),
    };
    println!(
        "cold start {name}: health {:.1} ms, ready {:.1} ms",
        report.to_health_ms, report.to_ready_ms
    );
    Ok(report)
}

/// Writes `count` finished job records (and their recent-list entries) straight into Redis.
fn populate_finished_jobs(
    redis: &Redis,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut connection = redis.connection()?;
    let mut ids = Vec::with_capacity(count);
    for chunk in 0..count.div_ceil(1000) {
        let mut pipeline = redis::pipe();
        for index in chunk * 1000..((chunk + 1) * 1000).min(count) {
            let id = format!("{:032x}", index + 1);
            pipeline
                .cmd("HSET")
                .arg(format!("{prefix}job:{id}"))
                .arg(&[
                    "state",
                    "succeeded",
                    "stage",
                    "4",
                    "total_stages",
                    "4",
                    "message",
                    "[4/4] done",
                ])
                .ignore()
                .cmd("ZADD")
                .arg(format!("{prefix}recent"))
                .arg(index)
                .arg(&id)
                .ignore();
            ids.push(id);
        }
        pipeline.query::<()>(&mut connection)?;
    }
    Ok(ids)
}

async fn status_latency(addr: SocketAddr, ids: &[String], calls: usize) -> anyhow::Result<Latency> {
    let mut sender = load::connect(addr).await?;
    let mut samples = Vec::with_capacity(calls);
    for call in 0..calls + 200 {
        let id = &ids[(call * 7919) % ids.len()];
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"get_render_status","arguments":{{"job_id":"{id}"}}}}}}"#
        );
        let request = hyper::Request::post("/mcp")
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
        let started = Instant::now();
        let (status, reply, _) = load::send(&mut sender, request).await?;
        if status != 200 || !reply.windows(11).any(|w| w == br#""succeeded""#) {
            bail!(
                "status call failed: {status} {}",
                String::from_utf8_lossy(&reply)
            );
        }
        if call >= 200 {
            samples.push(started.elapsed());
        }
    }
    Ok(Latency::of(samples))
}

pub async fn run(options: SuiteOptions) -> anyhow::Result<SuiteReport> {
    let redis = Redis::start()?;
    let artifacts = TempDir::new("artifacts")?;
    let sidecar_binary = release_dir().join("mcp-sidecar");
    let agent_binary = release_dir().join("agent");
    let mut targets = vec![];

    // Load and memory, one server at a time so none competes with another for the 2 cores.
    // The ceiling runs as its own process (this binary's `raw-server`), like the others.
    let raw_port = free_port()?;
    let mut raw_command = Command::new(std::env::current_exe()?);
    raw_command.args(["raw-server", "--port", &raw_port.to_string()]);
    let raw = Server::start_command(raw_command, ([127, 0, 0, 1], raw_port).into())?;
    targets.push(
        measure(
            "raw axum (ceiling)",
            raw.addr,
            raw.pid(),
            Dialect::Raw,
            options.clients,
            options.calls_each,
            options.sequential_calls,
        )
        .await?,
    );
    drop(raw);
    for (name, mode, dialect) in [
        ("mcp-sidecar stateless", "stateless", Dialect::Stateless),
        ("mcp-sidecar session", "stateful", Dialect::Session),
    ] {
        let server = Server::start(
            &sidecar_binary,
            &sidecar_env(&redis, &artifacts, "127.0.0.1:0", mode),
        )?;
        targets.push(
            measure(
                name,
                server.addr,
                server.pid(),
                dialect,
                options.clients,
                options.calls_each,
                options.sequential_calls,
            )
            .await?,
        );
    }
    let fastmcp_port = free_port()?;
    let fastmcp = Server::start_command(
        fastmcp_command(&options.python, fastmcp_port),
        ([127, 0, 0, 1], fastmcp_port).into(),
    )?;
    targets.push(
        measure(
            "FastMCP reference",
            fastmcp.addr,
            fastmcp.pid(),
            Dialect::Session,
            options.clients,
            options.reference_calls_each,
            options.sequential_calls.min(500),
        )
        .await?,
    );
    drop(fastmcp);

    // The ceiling ratio from one pass swings with machine noise (runs here have given 45% and
    // 56%), so it is also measured in alternating rounds with both servers up; the verdict
    // uses the median round.
    let mut ceiling_rounds = vec![];
    if options.ceiling_rounds > 0 {
        let raw_port = free_port()?;
        let mut raw_command = Command::new(std::env::current_exe()?);
        raw_command.args(["raw-server", "--port", &raw_port.to_string()]);
        let raw = Server::start_command(raw_command, ([127, 0, 0, 1], raw_port).into())?;
        let ours = Server::start(
            &sidecar_binary,
            &sidecar_env(&redis, &artifacts, "127.0.0.1:0", "stateless"),
        )?;
        let session = Server::start(
            &sidecar_binary,
            &sidecar_env(&redis, &artifacts, "127.0.0.1:0", "stateful"),
        )?;
        let contenders = [
            (raw.addr, Dialect::Raw),
            (ours.addr, Dialect::Stateless),
            (session.addr, Dialect::Session),
        ];
        for (addr, dialect) in contenders {
            load::run(addr, "/mcp", dialect, 4, 200, false).await?;
        }
        for round in 0..options.ceiling_rounds {
            let mut rates = [0.0; 3];
            for turn in 0..contenders.len() {
                let which = (round + turn) % contenders.len();
                let (addr, dialect) = contenders[which];
                rates[which] = load::run(
                    addr,
                    "/mcp",
                    dialect,
                    options.clients,
                    options.calls_each,
                    false,
                )
                .await?
                .calls_per_second;
            }
            let [raw_rate, stateless_rate, session_rate] = rates;
            println!(
                "ceiling round {}: raw {raw_rate:.0}/s, stateless {stateless_rate:.0}/s ({:.1}%), \
                 session {session_rate:.0}/s ({:.1}%)",
                round + 1,
                100.0 * stateless_rate / raw_rate,
                100.0 * session_rate / raw_rate,
            );
            ceiling_rounds.push(CeilingRound {
                raw_calls_per_second: raw_rate,
                sidecar_calls_per_second: stateless_rate,
                ratio: stateless_rate / raw_rate,
                session_calls_per_second: session_rate,
                session_ratio: session_rate / raw_rate,
            });
        }
    }

    // The agent's footprint, serving REST tool calls through the sidecar.
    let sidecar_port = free_port()?;
    let _sidecar = Server::start(
        &sidecar_binary,
        &sidecar_env(
            &redis,
            &artifacts,
            &format!("127.0.0.1:{sidecar_port}"),
            "stateless",
        ),
    )?;
    let agent = Server::start(
        &agent_binary,
        &[
            ("PORT", "0".to_owned()),
            ("BIND_ADDR", "127.0.0.1".to_owned()),
            (
                "MCP_SERVER_URL",
                format!("http://127.0.0.1:{sidecar_port}/mcp"),
            ),
        ],
    )?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (agent_rss_after_start_kib, _) = agent.memory_kib()?;
    {
        let http = reqwest::Client::new();
        let url = format!("http://{}/v1/tools/add", agent.addr);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..options.clients {
            let (http, url) = (http.clone(), url.clone());
            tasks.spawn(async move {
                for _ in 0..200 {
                    let _ = http
                        .post(&url)
                        .body(r#"{"a":2,"b":3}"#)
                        .header("content-type", "application/json")
                        .send()
                        .await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
    let (_, agent_peak_rss_under_load_kib) = agent.memory_kib()?;
    drop(agent);

    // Cold starts.
    let redis_url = redis.url();
    let artifact_dir = artifacts.0.display().to_string();
    let mut cold_starts = vec![];
    cold_starts.push(cold_start(
        "mcp-sidecar",
        options.cold_start_runs,
        |port| {
            let mut command = Command::new(&sidecar_binary);
            command
                .env("MCP_LISTEN_ADDR", format!("127.0.0.1:{port}"))
                .env("REDIS_URL", &redis_url)
                .env("ARTIFACT_DIR", &artifact_dir)
                .env("ARTIFACT_SIGNING_KEY", "bench-signing-key-0123456789")
                .env("LOG_FORMAT", "json");
            command
        },
        |addr| get(addr, "/healthz") == Some(200),
        initialize,
    )?);
    cold_starts.push(cold_start(
        "agent",
        options.cold_start_runs,
        |port| {
            let mut command = Command::new(&agent_binary);
            command
                .env("PORT", port.to_string())
                .env("BIND_ADDR", "127.0.0.1")
                .env(
                    "MCP_SERVER_URL",
                    format!("http://127.0.0.1:{sidecar_port}/mcp"),
                )
                .env("LOG_FORMAT", "json");
            command
        },
        |addr| get(addr, "/healthz") == Some(200),
        |addr| get(addr, "/readyz") == Some(200),
    )?);
    cold_starts.push(cold_start(
        "FastMCP reference",
        options.cold_start_runs.min(5),
        |port| fastmcp_command(&options.python, port),
        |addr| get(addr, "/mcp").is_some(),
        initialize,
    )?);

    // Jobs end to end.
    let jobs = jobs::run(200, 1000).await?;

    // Status latency against Redis size.
    let mut scale = vec![];
    for count in [100, 100_000] {
        let prefix = format!("scale{count}:");
        let ids = populate_finished_jobs(&redis, &prefix, count)?;
        let mut env = sidecar_env(&redis, &artifacts, "127.0.0.1:0", "stateless");
        env.retain(|(key, _)| *key != "REDIS_KEY_PREFIX" && *key != "RENDER_WORKERS");
        env.push(("REDIS_KEY_PREFIX", prefix.clone()));
        env.push(("RENDER_WORKERS", "0".to_owned()));
        let server = Server::start(&sidecar_binary, &env)?;
        let latency = status_latency(server.addr, &ids, 5000).await?;
        println!(
            "status with {count} jobs: p50 {:.3} ms, p99 {:.3} ms",
            latency.p50_ms, latency.p99_ms
        );
        scale.push(ScaleReport {
            jobs_in_redis: count,
            status_calls: 5000,
            latency,
        });
    }

    Ok(SuiteReport {
        machine: machine(),
        clients: options.clients,
        targets,
        cold_starts,
        jobs,
        scale,
        agent_rss_after_start_kib,
        agent_peak_rss_under_load_kib,
        ceiling_rounds,
    })
}

pub(crate) fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs ({model})")
}

fn mib(kib: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let value = kib as f64 / 1024.0;
    value
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

/// The Markdown summary: every figure, the ratios, and each target with its verdict.
pub fn markdown(report: &SuiteReport) -> String {
    use std::fmt::Write;
    let find = |name: &str| report.targets.iter().find(|t| t.name == name);
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmark results\n");
    let _ = writeln!(
        out,
        "Machine: {}. Load generator on the same machine. Written by `scripts/bench` \
         (`target/release/bench all`); raw numbers in `bench/results/all.json`.\n",
        report.machine
    );
    let _ = writeln!(out, "## tools/call `add`\n");
    let _ = writeln!(
        out,
        "| server | calls/s ({} clients) | p50 ms | p99 ms | p99.9 ms | errors | sequential p50 ms | sequential p99 ms | RSS after start MiB | peak RSS under load MiB |",
        report.clients
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for target in &report.targets {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {:.1} | {:.1} |",
            target.name,
            target.concurrent.calls_per_second,
            target.concurrent.latency.p50_ms,
            target.concurrent.latency.p99_ms,
            target.concurrent.latency.p999_ms,
            target.concurrent.errors,
            target.sequential.latency.p50_ms,
            target.sequential.latency.p99_ms,
            mib(target.rss_after_start_kib),
            mib(target.peak_rss_under_load_kib),
        );
    }
    let ours = find("mcp-sidecar stateless");
    let session = find("mcp-sidecar session");
    let reference = find("FastMCP reference");
    let ceiling = find("raw axum (ceiling)");
    let ratio = |a: Option<&TargetReport>, b: Option<&TargetReport>| match (a, b) {
        (Some(a), Some(b)) => a.concurrent.calls_per_second / b.concurrent.calls_per_second,
        _ => 0.0,
    };
    let _ = writeln!(
        out,
        "\nRatios: stateless sidecar ÷ FastMCP = **{:.1}×**; session sidecar ÷ FastMCP = {:.1}×; stateless sidecar ÷ raw axum = **{:.0}%**; session sidecar ÷ raw axum = {:.0}%.\n",
        ratio(ours, reference),
        ratio(session, reference),
        100.0 * ratio(ours, ceiling),
        100.0 * ratio(session, ceiling)
    );

    let ceiling_median = (!report.ceiling_rounds.is_empty()).then(|| {
        median(
            report
                .ceiling_rounds
                .iter()
                .map(|round| round.ratio)
                .collect(),
        )
    });
    let session_median = (!report.ceiling_rounds.is_empty()).then(|| {
        median(
            report
                .ceiling_rounds
                .iter()
                .map(|round| round.session_ratio)
                .collect(),
        )
    });
    if let (Some(ceiling_median), Some(session_median)) = (ceiling_median, session_median) {
        let _ = writeln!(
            out,
            "Ceiling ratio in alternating rounds (raw axum, the stateless sidecar and the session sidecar, all running, {} clients, the order rotating each round):\n",
            report.clients
        );
        let _ = writeln!(
            out,
            "| round | raw axum calls/s | stateless calls/s | stateless ÷ raw | session calls/s | session ÷ raw |\n|---|---|---|---|---|---|"
        );
        for (index, round) in report.ceiling_rounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {:.1}% | {:.0} | {:.1}% |",
                index + 1,
                round.raw_calls_per_second,
                round.sidecar_calls_per_second,
                100.0 * round.ratio,
                round.session_calls_per_second,
                100.0 * round.session_ratio,
            );
        }
        let _ = writeln!(
            out,
            "\nMedian: stateless **{:.1}%**, session **{:.1}%**.\n",
            100.0 * ceiling_median,
            100.0 * session_median
        );
    }

    let _ = writeln!(out, "## Cold start (median)\n");
    let _ = writeln!(
        out,
        "| process | runs | exec → /healthz 200 ms | exec → ready ms |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for cold in &report.cold_starts {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} |",
            cold.name, cold.runs, cold.to_health_ms, cold.to_ready_ms
        );
    }
    let _ = writeln!(
        out,
        "\n\"Ready\" is the first successful MCP `initialize` for the MCP servers and `/readyz` 200 (its own `initialize` of the sidecar done) for the agent; FastMCP has no /healthz, so its first column is its first HTTP answer.\n"
    );
    let _ = writeln!(
        out,
        "Agent RSS: {:.1} MiB after start, {:.1} MiB peak under {} concurrent REST tool-call clients.\n",
        mib(report.agent_rss_after_start_kib),
        mib(report.agent_peak_rss_under_load_kib),
        report.clients
    );

    let jobs = &report.jobs;
    let _ = writeln!(
        out,
        "## Render jobs (real Redis, {} workers)\n",
        jobs.render_workers
    );
    let _ = writeln!(out, "| measure | value |\n|---|---|");
    let _ = writeln!(
        out,
        "| start_render → succeeded, client polling every 1 ms: p50 / p99 | {:.2} / {:.2} ms |",
        jobs.client_latency.p50_ms, jobs.client_latency.p99_ms
    );
    let _ = writeln!(
        out,
        "| created → finished in the job record: p50 / p99 | {:.0} / {:.0} ms |",
        jobs.server_latency.p50_ms, jobs.server_latency.p99_ms
    );
    let _ = writeln!(
        out,
        "| sustained jobs/s ({} jobs) | {:.0} |",
        jobs.throughput_jobs, jobs.throughput_jobs_per_second
    );
    let _ = writeln!(
        out,
        "| Redis commands per get_render_status | {:.2} ({:?}) |\n",
        jobs.redis_commands_per_status_call, jobs.redis_commands_seen
    );

    let _ = writeln!(out, "## Status latency against Redis size\n");
    let _ = writeln!(
        out,
        "| finished jobs in Redis | calls | p50 ms | p99 ms |\n|---|---|---|---|"
    );
    for scale in &report.scale {
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {:.3} |",
            scale.jobs_in_redis, scale.status_calls, scale.latency.p50_ms, scale.latency.p99_ms
        );
    }

    let _ = writeln!(out, "\n## Targets\n");
    let _ = writeln!(out, "| target | measured | verdict |\n|---|---|---|");
    if let Some(ours) = ours {
        let against_reference = ratio(Some(ours), reference);
        let against_ceiling = ceiling_median.unwrap_or_else(|| ratio(Some(ours), ceiling));
        let _ = writeln!(
            out,
            "| tools/call ≥ 30× FastMCP | {against_reference:.1}× | {} |",
            verdict(against_reference >= 30.0)
        );
        let _ = writeln!(
            out,
            "| tools/call ≥ 50% of raw axum ({}) | {:.1}% | {} |",
            if ceiling_median.is_some() {
                "median of the rounds"
            } else {
                "single pass"
            },
            100.0 * against_ceiling,
            verdict(against_ceiling >= 0.5)
        );
        if let Some(session_median) = session_median {
            let _ = writeln!(
                out,
                "| session mode ≥ 40% of raw axum (median of the rounds) | {:.1}% | {} |",
                100.0 * session_median,
                verdict(session_median >= 0.4)
            );
        }
        let _ = writeln!(
            out,
            "| p99 ≤ 2 ms at {} clients | {:.3} ms | {} |",
            report.clients,
            ours.concurrent.latency.p99_ms,
            verdict(ours.concurrent.latency.p99_ms <= 2.0)
        );
        let _ = writeln!(
            out,
            "| sequential p50 ≤ 0.25 ms | {:.3} ms | {} |",
            ours.sequential.latency.p50_ms,
            verdict(ours.sequential.latency.p50_ms <= 0.25)
        );
        let _ = writeln!(
            out,
            "| sidecar RSS ≤ 15 MB idle, ≤ 50 MB under load | {:.1} / {:.1} MiB | {} |",
            mib(ours.rss_after_start_kib),
            mib(ours.peak_rss_under_load_kib),
            verdict(
                mib(ours.rss_after_start_kib) <= 15.0 && mib(ours.peak_rss_under_load_kib) <= 50.0
            )
        );
    }
    let _ = writeln!(
        out,
        "| agent RSS ≤ 15 MB idle, ≤ 50 MB under load | {:.1} / {:.1} MiB | {} |",
        mib(report.agent_rss_after_start_kib),
        mib(report.agent_peak_rss_under_load_kib),
        verdict(
            mib(report.agent_rss_after_start_kib) <= 15.0
                && mib(report.agent_peak_rss_under_load_kib) <= 50.0
        )
    );
    for cold in report
        .cold_starts
        .iter()
        .filter(|cold| cold.name != "FastMCP reference")
    {
        let _ = writeln!(
            out,
            "| {} cold start to ready ≤ 50 ms | {:.1} ms | {} |",
            cold.name,
            cold.to_ready_ms,
            verdict(cold.to_ready_ms <= 50.0)
        );
    }
    let _ = writeln!(
        out,
        "| status: one Redis round trip | {:.2} commands/call | {} |",
        report.jobs.redis_commands_per_status_call,
        verdict((report.jobs.redis_commands_per_status_call - 1.0).abs() < 0.01)
    );
    if let [small, large] = report.scale.as_slice() {
        let flat = large.latency.p50_ms <= small.latency.p50_ms * 1.25 + 0.02;
        let _ = writeln!(
            out,
            "| status latency flat from 100 to 100,000 jobs | p50 {:.3} → {:.3} ms | {} |",
            small.latency.p50_ms,
            large.latency.p50_ms,
            verdict(flat)
        );
    }
    out
}
