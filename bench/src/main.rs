//! Benchmarks against real processes on this machine. Build first:
//! `cargo build --release --workspace`, then `target/release/bench <what>`.

mod agent;
mod chat;
mod jobs;
mod load;
mod processes;
mod redis_modes;
mod render_baseline;
mod stats;
mod suite;
mod tasks;
mod tracing_overhead;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Benchmarks of the sidecar and the agent (release binaries, real Redis, loopback only).
#[derive(Debug, Parser)]
#[command(name = "bench", version, about)]
struct Options {
    /// Where raw results (JSON) are written.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// The agent's overhead per tool call: REST → MCP → sidecar vs straight to the sidecar.
    AgentOverhead {
        /// Calls measured each way.
        #[arg(long, default_value_t = 5000)]
        calls: usize,
    },
    /// The agent's overhead on a streamed chat turn: the first `delta` at a client of
    /// /v1/chat vs the (local, streaming) model's own first byte.
    ChatOverhead {
        /// Turns measured each way.
        #[arg(long, default_value_t = 300)]
        turns: usize,
    },
    /// Everything below plus load, cold start and memory against the reference servers;
    /// writes results/all.json and bench/RESULTS.md.
    All {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Calls per client for our servers and the raw ceiling.
        #[arg(long, default_value_t = 2000)]
        calls_each: usize,
        /// Calls per client for the FastMCP reference (it is much slower).
        #[arg(long, default_value_t = 50)]
        reference_calls_each: usize,
        #[arg(long, default_value_t = 5000)]
        sequential_calls: usize,
        #[arg(long, default_value_t = 11)]
        cold_start_runs: usize,
        /// Alternating raw-axum / sidecar rounds for the ceiling ratio (median is the verdict).
        #[arg(long, default_value_t = 5)]
        ceiling_rounds: usize,
        /// Python with `fastmcp` installed (scripts/bench installs one).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../.tools/bench-venv/bin/python"))]
        python: PathBuf,
    },
    /// Load against a running server (for profiling): tools/call add from N clients.
    Load {
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 2000)]
        calls_each: usize,
        /// Open an MCP session per client (for a stateful server).
        #[arg(long)]
        session: bool,
    },
    /// Serves the raw axum ceiling endpoint (used by `all`; not a benchmark itself).
    RawServer {
        #[arg(long)]
        port: u16,
    },
    /// Tool-call throughput of a sidecar exporting spans over OTLP vs one that does not.
    TracingOverhead {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 1000)]
        calls_each: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Render jobs followed as MCP tasks (polled and pushed) vs the job tools polled every
    /// 200 ms, side by side; tasks/get calls/s and Redis commands per call.
    Tasks {
        /// Rounds of the three flows, taken in turn.
        #[arg(long, default_value_t = 30)]
        rounds: usize,
        /// tasks/get calls measured (sequential, then the same spread over 8 clients).
        #[arg(long, default_value_t = 2000)]
        get_calls: u64,
    },
    /// Render jobs on plain Redis, TLS + AUTH, a cluster, and each with WAIT for one replica,
    /// side by side in alternating rounds: jobs/s, start_render and get_render_status latency,
    /// and on plain the Redis commands and bytes per job. Writes results/redis-modes.json.
    RedisModes(redis_modes::Counts),
    /// The render pipeline vs the renderer it wraps: the same charts rendered in-process
    /// (no Redis, no queue, no upload) and as jobs with as many workers, in alternating rounds;
    /// plus a one-worker sidecar's peak RSS for the largest image. Writes
    /// results/render-baseline.json.
    RenderBaseline(render_baseline::Counts),
    /// Small chart jobs end to end: latency, sustained jobs/s, Redis commands per status call.
    Jobs {
        /// Jobs measured one at a time for latency.
        #[arg(long, default_value_t = 200)]
        latency_jobs: usize,
        /// Jobs submitted at once for throughput.
        #[arg(long, default_value_t = 1000)]
        throughput_jobs: usize,
    },
}

/// Where the generated part of bench/RESULTS.md ends: `all` keeps what follows it.
const KEPT_SECTIONS_MARKER: &str =
    "<!-- kept by `bench all`: sections below are not regenerated -->";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    std::fs::create_dir_all(&options.out).context("creating the results directory")?;
    match options.what {
        What::All {
            clients,
            calls_each,
            reference_calls_each,
            sequential_calls,
            cold_start_runs,
            ceiling_rounds,
            python,
        } => {
            let report = suite::run(suite::SuiteOptions {
                clients,
                calls_each,
                reference_calls_each,
                sequential_calls,
                cold_start_runs,
                ceiling_rounds,
                python,
            })
            .await?;
            std::fs::write(
                options.out.join("all.json"),
                serde_json::to_string_pretty(&report)?,
            )?;
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md");
            let mut markdown = suite::markdown(&report);
            // Sections written by hand or by the other subcommands (profiles, the render
            // baseline) live below the marker and survive a rerun of `all`.
            if let Ok(old) = std::fs::read_to_string(path)
                && let Some(at) = old.find(KEPT_SECTIONS_MARKER)
            {
                markdown.push('\n');
                markdown.push_str(&old[at..]);
            }
            std::fs::write(path, &markdown)?;
            println!("{markdown}");
        }
        What::RawServer { port } => load::serve_raw(port).await?,
        What::Load {
            addr,
            clients,
            calls_each,
            session,
        } => {
            let dialect = if session {
                load::Dialect::Session
            } else {
                load::Dialect::Stateless
            };
            let report = load::run(addr, "/mcp", dialect, clients, calls_each, false).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        What::TracingOverhead {
            clients,
            calls_each,
            rounds,
        } => {
            let report = tracing_overhead::run(clients, calls_each, rounds).await?;
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(options.out.join("tracing-overhead.json"), &json)?;
            println!("{json}");
        }
        What::AgentOverhead { calls } => {
            let report = agent::run(calls).await?;
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(options.out.join("agent-overhead.json"), &json)?;
            println!("{json}");
        }
        What::ChatOverhead { turns } => {
            let report = chat::run(turns).await?;
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(options.out.join("chat-overhead.json"), &json)?;
            println!("{json}");
        }
        What::Tasks { rounds, get_calls } => {
            let report = tasks::run(rounds, get_calls).await?;
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(options.out.join("tasks.json"), &json)?;
            println!("{json}");
        }
        What::RedisModes(counts) => {
            let report = redis_modes::run(counts).await?;
            std::fs::write(
                options.out.join("redis-modes.json"),
                serde_json::to_string_pretty(&report)?,
            )?;
            println!("{}", redis_modes::markdown(&report));
        }
        What::RenderBaseline(counts) => {
            let report = render_baseline::run(counts).await?;
            std::fs::write(
                options.out.join("render-baseline.json"),
                serde_json::to_string_pretty(&report)?,
            )?;
            println!("{}", render_baseline::markdown(&report));
        }
        What::Jobs {
            latency_jobs,
            throughput_jobs,
        } => {
            let report = jobs::run(latency_jobs, throughput_jobs).await?;
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(options.out.join("jobs.json"), &json)?;
            println!("{json}");
        }
    }
    Ok(())
}
