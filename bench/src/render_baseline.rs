//! The render pipeline against the renderer it wraps. The bare baseline renders and
//! PNG-encodes the same specs with the sidecar's own `Renderer` (same crates, same stages, no
//! Redis, no queue, no upload) on one thread per core, in the `bare-render` process, which has
//! the sidecar's allocator (mimalloc; this process keeps the system one); the job path submits
//! the same number of jobs to a release sidecar with as many render workers, over MCP
//! (`tools/call start_render` POSTs from 8 kept-alive HTTP/1.1 connections, as `load` sends
//! its calls: the load generator should cost the shared cores little), and
//! takes the first job's `created_at` to the last one's `finished_at` from the job records.
//! The two alternate, round by round, so drift on a shared machine hits both alike.
//!
//! The job path's figure is end to end on purpose: the MCP submissions, Redis and the
//! artifact writes share the same cores as the workers, as they would in production. The
//! bench waits for a batch by watching the artifact files, not by polling the sidecar. Each
//! round also records the CPU time every process spent per job (`/proc/<pid>/stat`), which
//! says where the job path's time goes and drifts less than jobs/s with the machine's speed.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use mcp_sidecar::render::spec::{MAX_DIMENSION, MAX_PIXELS};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    jobs::{SETTLE, call, connect, job_times, sidecar_env, small_chart, wait_for_pngs},
    load,
    processes::{Redis, Server, TempDir, cpu_ms, release_dir},
    stats::Spread,
};

#[derive(Debug, clap::Args)]
pub struct Counts {
    /// Alternating bare / job-path rounds (the median ratio is the verdict).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Small charts (the `jobs` benchmark's 320×200 bar chart) per round and way.
    #[arg(long, default_value_t = 600)]
    pub small_jobs: usize,
    /// Standard charts (a line chart at the spec's default 800×600, 4 series × 50 points) per
    /// round and way: the verdict's chart.
    #[arg(long, default_value_t = 300)]
    pub standard_jobs: usize,
    /// Large charts (1600×1000 line chart, 4 series × 500 points) per round and way.
    #[arg(long, default_value_t = 60)]
    pub large_jobs: usize,
}

#[derive(Debug, Serialize)]
pub struct ChartReport {
    pub chart: &'static str,
    pub jobs_per_round: usize,
    pub bare_jobs_per_second: Vec<f64>,
    pub job_path_jobs_per_second: Vec<f64>,
    /// Job path ÷ bare, per round (each ratio from the same round).
    pub ratio: Spread,
    pub bare: Spread,
    pub job_path: Spread,
    /// CPU ms per job, per round: the bare renderer (the `bare-render` process while it
    /// renders), and on the job path the sidecar, Redis and the submitting clients (this
    /// process: the HTTP clients and the look at the artifact folder that waits for the batch).
    pub bare_cpu_ms_per_job: Vec<f64>,
    pub sidecar_cpu_ms_per_job: Vec<f64>,
    pub redis_cpu_ms_per_job: Vec<f64>,
    pub client_cpu_ms_per_job: Vec<f64>,
    /// Sidecar CPU per job ÷ bare CPU per job, per round: what the job path costs the sidecar
    /// beyond the drawing itself, less sensitive than jobs/s to the machine's drift. Rounds
    /// whose bare CPU read 0 (under one 10 ms tick) are left out; none if all were.
    pub sidecar_cpu_ratio: Option<Spread>,
}

#[derive(Debug, Serialize)]
pub struct RenderBaselineReport {
    /// Bare threads = sidecar render workers = cores.
    pub workers: usize,
    pub rounds: usize,
    pub charts: Vec<ChartReport>,
    /// The largest chart a spec may ask for (MAX_DIMENSION wide, MAX_PIXELS in all).
    pub largest_image: String,
    /// A one-worker sidecar's peak RSS (VmHWM) when idle and after one largest-image job.
    pub one_worker_peak_rss_idle_kib: u64,
    pub one_worker_peak_rss_after_largest_kib: u64,
}

/// A chart measured: its label, how to make its spec from a seed, jobs a round.
type MeasuredChart = (&'static str, fn(usize) -> Value, usize);

/// Sidecar CPU ÷ bare CPU for one round; none if the bare side's CPU read 0 (`/proc` counts in
/// 10 ms ticks, so a round of a few small charts may not reach one).
fn cpu_ratio(sidecar_ms: f64, bare_ms: f64) -> Option<f64> {
    (bare_ms > 0.0).then(|| sidecar_ms / bare_ms)
}

/// A line chart of `width`×`height`, 4 series × `points` points.
#[allow(clippy::cast_precision_loss)]
fn line_chart(seed: usize, width: u32, height: u32, points: usize) -> Value {
    let series: Vec<Value> = (0..4)
        .map(|s| {
            let values: Vec<Value> = (0..points)
                .map(|i| json!([i, ((i * 37 + s * 11 + seed) % 101) as f64 / 3.0]))
                .collect();
            json!({"name": format!("s{s}"), "points": values})
        })
        .collect();
    json!({
        "kind": "chart", "width": width, "height": height,
        "chart": {"type": "line", "title": "bench line", "series": series}
    })
}

/// What a chart request looks like when it names no size: the spec's default 800×600.
fn standard_chart(seed: usize) -> Value {
    line_chart(seed, 800, 600, 50)
}

fn large_chart(seed: usize) -> Value {
    line_chart(seed, 1600, 1000, 500)
}

/// `count` specs made by `make`, rendered to PNG bytes on `threads` threads by the
/// `bare-render` process (the sidecar's renderer and allocator); jobs/s and that process's CPU
/// ms per job while rendering.
#[allow(clippy::cast_precision_loss)]
fn bare(make: fn(usize) -> Value, count: usize, threads: usize) -> anyhow::Result<(f64, f64)> {
    use std::io::{BufRead, BufReader, Write};
    let binary = release_dir().join("bare-render");
    let mut child = std::process::Command::new(&binary)
        .arg(threads.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut read_line = || -> anyhow::Result<String> {
        let mut line = String::new();
        if stdout.read_line(&mut line)? == 0 {
            bail!("bare-render ended early");
        }
        Ok(line)
    };
    // The specs are built and parsed before the clock starts, as the job path's are by its
    // clients.
    let specs: Vec<Value> = (0..count).map(make).collect();
    writeln!(stdin, "{}", serde_json::to_string(&specs)?)?;
    read_line()?;
    let cpu_before = cpu_ms(child.id())?;
    writeln!(stdin, "go")?;
    let line = read_line()?;
    let cpu = (cpu_ms(child.id())? - cpu_before) / count as f64;
    let result: Value = serde_json::from_str(&line)?;
    drop(stdin);
    let status = child.wait()?;
    if !status.success() {
        bail!("bare-render: {status}");
    }
    let rate = result["jobs_per_second"]
        .as_f64()
        .context("bare-render said no rate")?;
    Ok((rate, cpu))
}

/// CPU ms per job of each process on the job path.
struct JobPathCpu {
    sidecar: f64,
    redis: f64,
    clients: f64,
}

/// Submits `count` jobs from 8 clients at once, waits for all; jobs/s from the job records,
/// and the CPU each process spent meanwhile. The bench learns that the batch is done from the
/// artifact files appearing, as `redis-modes` does, so no status polling adds to the job
/// path's load (each poll was an MCP call on the same cores).
#[allow(clippy::cast_precision_loss)]
async fn job_path(
    sidecar: &Server,
    redis: &Redis,
    artifacts: &TempDir,
    prefix: &str,
    make: fn(usize) -> Value,
    count: usize,
    seed: usize,
) -> anyhow::Result<(f64, JobPathCpu)> {
    let own = std::process::id();
    // Each client's requests are made before anything is measured: the clients' CPU below is
    // what sending them and reading the answers costs.
    let per_client = count.div_ceil(8);
    let mut batches = vec![];
    for client_index in 0..8 {
        let bodies: Vec<Bytes> = (0..per_client)
            .map(|i| client_index * per_client + i)
            .take_while(|&index| index < count)
            .map(|index| {
                let call = json!({
                    "jsonrpc": "2.0",
                    "id": index + 1,
                    "method": "tools/call",
                    "params": {"name": "start_render", "arguments": {"spec": make(seed + index)}},
                });
                Bytes::from(call.to_string())
            })
            .collect();
        batches.push((load::connect(sidecar.addr).await?, bodies));
    }
    let cpu_before = (cpu_ms(sidecar.pid())?, cpu_ms(redis.pid())?, cpu_ms(own)?);
    let mut submitters = tokio::task::JoinSet::new();
    let addr = sidecar.addr;
    for (mut sender, bodies) in batches {
        submitters.spawn(async move {
            let mut ids = vec![];
            for body in bodies {
                let request = load::request(addr, "/mcp", body, None, None)?;
                let (status, answer, _) = load::send(&mut sender, request).await?;
                ids.push(job_id(status, &answer)?);
            }
            anyhow::Ok(ids)
        });
    }
    let mut ids = vec![];
    while let Some(joined) = submitters.join_next().await {
        ids.extend(joined??);
    }
    wait_for_pngs(&artifacts.0, &ids).await?;
    tokio::time::sleep(SETTLE).await;
    let per_job = |before: f64, pid: u32| -> anyhow::Result<f64> {
        Ok((cpu_ms(pid)? - before) / ids.len() as f64)
    };
    let cpu = JobPathCpu {
        sidecar: per_job(cpu_before.0, sidecar.pid())?,
        redis: per_job(cpu_before.1, redis.pid())?,
        clients: per_job(cpu_before.2, own)?,
    };
    let mut connection = redis.connection()?;
    let (mut first_created, mut last_finished) = (u64::MAX, 0);
    for id in &ids {
        let (created, finished) = job_times(&mut connection, prefix, id)?;
        first_created = first_created.min(created);
        last_finished = last_finished.max(finished);
    }
    // The artifacts stay until the run ends (see `wait_for_pngs`: deleting them would make
    // the next rounds' writes dearer on this file system).
    let rate =
        ids.len() as f64 / ((last_finished.saturating_sub(first_created)).max(1) as f64 / 1000.0);
    Ok((rate, cpu))
}

/// The job id in a stateless server's JSON answer to `tools/call start_render`.
fn job_id(status: u16, answer: &[u8]) -> anyhow::Result<String> {
    let text = || String::from_utf8_lossy(answer);
    if status != 200 {
        bail!("start_render answered HTTP {status}: {}", text());
    }
    let answer: Value = serde_json::from_slice(answer)
        .with_context(|| format!("start_render's answer is not JSON: {}", text()))?;
    let result = &answer["result"];
    if result["isError"] == true || result.is_null() {
        bail!("start_render failed: {answer}");
    }
    result["structuredContent"]["job_id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no job_id in {answer}"))
}

async fn wait_all(sidecar: &Server, ids: &[String]) -> anyhow::Result<()> {
    let client = connect(sidecar).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    for id in ids {
        loop {
            let status = call(&client, "get_render_status", json!({"job_id": id})).await?;
            match status["state"].as_str() {
                Some("succeeded") => break,
                Some("failed" | "cancelled") => bail!("job ended without a result: {status}"),
                _ if Instant::now() > deadline => bail!("jobs did not finish within 300 s"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    Ok(())
}

#[allow(clippy::cast_precision_loss)]
pub async fn run(counts: Counts) -> anyhow::Result<RenderBaselineReport> {
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let redis = Redis::start()?;
    let artifacts = TempDir::new("render-baseline")?;
    let prefix = "bench:";
    let binary = release_dir().join("mcp-sidecar");
    let sidecar = Server::start(
        &binary,
        &sidecar_env(redis.url(), &artifacts, prefix, workers),
    )?;

    let kinds: [MeasuredChart; 3] = [
        ("small 320×200 bar", small_chart, counts.small_jobs),
        (
            "standard 800×600 line, 4×50 points",
            standard_chart,
            counts.standard_jobs,
        ),
        (
            "large 1600×1000 line, 4×500 points",
            large_chart,
            counts.large_jobs,
        ),
    ];
    // Warm both ways (page cache, connections, allocator) before anything is measured.
    for (_, make, _) in kinds {
        tokio::task::spawn_blocking(move || bare(make, 8, workers)).await??;
        job_path(&sidecar, &redis, &artifacts, prefix, make, 8, 1_000_000).await?;
    }

    let mut charts = vec![];
    for (chart, make, count) in kinds {
        let (mut bare_rates, mut job_rates) = (vec![], vec![]);
        let (mut bare_cpu, mut sidecar_cpu, mut redis_cpu, mut client_cpu) =
            (vec![], vec![], vec![], vec![]);
        for round in 0..counts.rounds {
            // Alternate which way goes first, so neither always follows the other.
            let bare_first = round % 2 == 0;
            let mut bare_way = (0.0, 0.0);
            let mut job_way = (0.0, None);
            for way in 0..2 {
                if (way == 0) == bare_first {
                    bare_way =
                        tokio::task::spawn_blocking(move || bare(make, count, workers)).await??;
                } else {
                    let (rate, cpu) = job_path(
                        &sidecar,
                        &redis,
                        &artifacts,
                        prefix,
                        make,
                        count,
                        round * 100_000,
                    )
                    .await?;
                    job_way = (rate, Some(cpu));
                }
            }
            let ((bare_rate, bare_ms), (job_rate, Some(job_cpu))) = (bare_way, job_way) else {
                bail!("a round ran only one way");
            };
            eprintln!(
                "{chart} round {round}: bare {bare_rate:.1}/s, job path {job_rate:.1}/s ({:.1}%); \
                 CPU ms a job: bare {bare_ms:.2}, sidecar {:.2} ({}), Redis {:.2}, clients {:.2}",
                100.0 * job_rate / bare_rate,
                job_cpu.sidecar,
                cpu_ratio(job_cpu.sidecar, bare_ms)
                    .map_or_else(|| "—".to_owned(), |ratio| format!("{ratio:.2}×")),
                job_cpu.redis,
                job_cpu.clients,
            );
            bare_rates.push(bare_rate);
            job_rates.push(job_rate);
            bare_cpu.push(bare_ms);
            sidecar_cpu.push(job_cpu.sidecar);
            redis_cpu.push(job_cpu.redis);
            client_cpu.push(job_cpu.clients);
        }
        let ratios: Vec<f64> = job_rates
            .iter()
            .zip(&bare_rates)
            .map(|(job, bare)| job / bare)
            .collect();
        charts.push(ChartReport {
            chart,
            jobs_per_round: count,
            ratio: Spread::of(&ratios),
            bare: Spread::of(&bare_rates),
            job_path: Spread::of(&job_rates),
            bare_jobs_per_second: bare_rates,
            job_path_jobs_per_second: job_rates,
            sidecar_cpu_ratio: {
                let ratios: Vec<f64> = sidecar_cpu
                    .iter()
                    .zip(&bare_cpu)
                    .filter_map(|(&sidecar, &bare)| cpu_ratio(sidecar, bare))
                    .collect();
                (!ratios.is_empty()).then(|| Spread::of(&ratios))
            },
            bare_cpu_ms_per_job: bare_cpu,
            sidecar_cpu_ms_per_job: sidecar_cpu,
            redis_cpu_ms_per_job: redis_cpu,
            client_cpu_ms_per_job: client_cpu,
        });
    }
    drop(sidecar);

    // Peak memory of one worker drawing the largest image a spec may ask for.
    let height = u32::try_from(MAX_PIXELS / u64::from(MAX_DIMENSION))?.min(MAX_DIMENSION);
    let one = Server::start(&binary, &sidecar_env(redis.url(), &artifacts, prefix, 1))?;
    let client = connect(&one).await?;
    // One small job first, so the idle figure includes a worker that has run once.
    let warm = call(&client, "start_render", json!({"spec": small_chart(1)})).await?;
    wait_all(
        &one,
        &[warm["job_id"].as_str().context("job_id")?.to_owned()],
    )
    .await?;
    let (_, idle_peak) = one.memory_kib()?;
    let largest = line_chart(7, MAX_DIMENSION, height, 500);
    let job = call(&client, "start_render", json!({"spec": largest})).await?;
    wait_all(
        &one,
        &[job["job_id"].as_str().context("job_id")?.to_owned()],
    )
    .await?;
    let (_, largest_peak) = one.memory_kib()?;

    Ok(RenderBaselineReport {
        workers,
        rounds: counts.rounds,
        charts,
        largest_image: format!("{MAX_DIMENSION}×{height} line chart, 4×500 points, PNG"),
        one_worker_peak_rss_idle_kib: idle_peak,
        one_worker_peak_rss_after_largest_kib: largest_peak,
    })
}

#[allow(clippy::cast_precision_loss)]
pub fn markdown(report: &RenderBaselineReport) -> String {
    let mut out = format!(
        "| chart ({} workers = bare threads, {} alternating rounds) | bare jobs/s min / median / max | job path jobs/s min / median / max | job path ÷ bare min / median / max |\n|---|---|---|---|\n",
        report.workers, report.rounds
    );
    for chart in &report.charts {
        out += &format!(
            "| {} ({} jobs a round) | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:.1}% / **{:.1}%** / {:.1}% |\n",
            chart.chart,
            chart.jobs_per_round,
            chart.bare.min,
            chart.bare.median,
            chart.bare.max,
            chart.job_path.min,
            chart.job_path.median,
            chart.job_path.max,
            100.0 * chart.ratio.min,
            100.0 * chart.ratio.median,
            100.0 * chart.ratio.max,
        );
    }
    out += "\n| chart: CPU ms a job, medians of the rounds | bare renderer | job path: sidecar | sidecar ÷ bare min / median / max | Redis | submitting clients |\n|---|---|---|---|---|---|\n";
    for chart in &report.charts {
        out += &format!(
            "| {} | {:.2} | {:.2} | {} | {:.2} | {:.2} |\n",
            chart.chart,
            crate::stats::median(chart.bare_cpu_ms_per_job.clone()),
            crate::stats::median(chart.sidecar_cpu_ms_per_job.clone()),
            chart.sidecar_cpu_ratio.map_or_else(
                || "— (rounds too short to read the CPU time)".to_owned(),
                |ratio| format!(
                    "{:.2}× / **{:.2}×** / {:.2}×",
                    ratio.min, ratio.median, ratio.max
                )
            ),
            crate::stats::median(chart.redis_cpu_ms_per_job.clone()),
            crate::stats::median(chart.client_cpu_ms_per_job.clone()),
        );
    }
    out += &format!(
        "\nPeak RSS of a one-worker sidecar: {:.1} MiB idle (after one small job), {:.1} MiB after one {} ({:+.1} MiB).\n",
        report.one_worker_peak_rss_idle_kib as f64 / 1024.0,
        report.one_worker_peak_rss_after_largest_kib as f64 / 1024.0,
        report.largest_image,
        (report.one_worker_peak_rss_after_largest_kib as f64
            - report.one_worker_peak_rss_idle_kib as f64)
            / 1024.0,
    );
    out
}
