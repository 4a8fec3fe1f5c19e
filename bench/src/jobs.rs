//! Render jobs end to end with real Redis: latency of a small chart from `start_render` to
//! `succeeded`, sustained jobs per second with one worker per core, and Redis commands per
//! status call.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rmcp::{
    ServiceExt,
    model::{CallToolRequestParams, ClientConfig},
    service::RunningService,
    transport::StreamableHttpClientTransport,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    processes::{Redis, Server, TempDir, release_dir},
    stats::Latency,
};

pub(crate) type Client = RunningService<rmcp::RoleClient, ClientConfig>;

#[derive(Debug, Serialize)]
pub struct JobsReport {
    pub render_workers: usize,
    /// start_render → succeeded seen by a client polling every millisecond.
    pub client_latency: Latency,
    /// created_at → finished_at as the job record has it (ms resolution).
    pub server_latency: Latency,
    pub throughput_jobs: usize,
    pub throughput_jobs_per_second: f64,
    pub status_calls: u64,
    /// Redis commands per get_render_status call, by command.
    pub redis_commands_per_status_call: f64,
    pub redis_commands_seen: Vec<(String, u64)>,
}

pub(crate) fn small_chart(seed: usize) -> Value {
    json!({
        "kind": "chart", "width": 320, "height": 200,
        "chart": {"type": "bar", "title": "bench", "series": [
            {"name": "a", "points": [[1, seed % 7 + 1], [2, 3], [3, 5]]},
            {"name": "b", "points": [[1, 2], [2, seed % 5 + 1], [3, 4]]}
        ]}
    })
}

/// Calls `tool` and returns its structured content; a tool error or no answer within a minute
/// is an error.
pub(crate) async fn call(client: &Client, tool: &str, arguments: Value) -> anyhow::Result<Value> {
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        client.call_tool(
            CallToolRequestParams::new(tool.to_owned())
                .with_arguments(arguments.as_object().cloned().unwrap_or_default()),
        ),
    )
    .await
    .with_context(|| format!("{tool}: no answer within 60 s"))??;
    let content = result.structured_content.unwrap_or_default();
    if result.is_error == Some(true) {
        bail!("{tool}: {}", content["error"]);
    }
    Ok(content)
}

pub(crate) async fn connect(server: &Server) -> anyhow::Result<Client> {
    Ok(ClientConfig::default()
        .serve(StreamableHttpClientTransport::from_uri(format!(
            "http://{}/mcp",
            server.addr
        )))
        .await?)
}

/// A finished job's `created_at` and `finished_at` (ms), from its record under `prefix` (the
/// prefix as keys have it: with the hash tag in cluster mode).
pub(crate) fn job_times(
    connection: &mut dyn redis::ConnectionLike,
    prefix: &str,
    job: &str,
) -> anyhow::Result<(u64, u64)> {
    let (created, finished): (u64, u64) = redis::cmd("HMGET")
        .arg(format!("{prefix}job:{job}"))
        .arg("created_at")
        .arg("finished_at")
        .query(connection)?;
    Ok((created, finished))
}

pub(crate) fn command_stats(redis: &Redis) -> anyhow::Result<Vec<(String, u64)>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.connection()?)?;
    Ok(parse_command_stats(&info))
}

/// Calls so far by command, from an `INFO` answer with its `commandstats` section.
pub(crate) fn parse_command_stats(info: &str) -> Vec<(String, u64)> {
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// The commands run between two `command_stats` snapshots, by command.
pub(crate) fn command_deltas(
    before: &[(String, u64)],
    after: &[(String, u64)],
) -> Vec<(String, u64)> {
    let mut seen: Vec<(String, u64)> = after
        .iter()
        .map(|(name, calls)| {
            let earlier = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, c)| *c);
            // The first INFO itself is counted in the second snapshot.
            let own = u64::from(name == "info");
            (
                name.clone(),
                calls.saturating_sub(earlier).saturating_sub(own),
            )
        })
        .filter(|(_, delta)| *delta > 0)
        .collect();
    seen.sort();
    seen
}

/// A sidecar's environment for the job benchmarks: port 0, the Redis at `redis_url` and key
/// prefix, a shared artifact directory and signing key, `workers` render workers.
pub(crate) fn sidecar_env(
    redis_url: String,
    artifacts: &TempDir,
    prefix: &str,
    workers: usize,
) -> Vec<(&'static str, String)> {
    vec![
        ("MCP_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("REDIS_URL", redis_url),
        ("REDIS_KEY_PREFIX", prefix.to_owned()),
        ("ARTIFACT_DIR", artifacts.0.display().to_string()),
        (
            "ARTIFACT_SIGNING_KEY",
            "bench-signing-key-0123456789".to_owned(),
        ),
        ("RENDER_WORKERS", workers.to_string()),
    ]
}

pub async fn run(latency_jobs: usize, throughput_jobs: usize) -> anyhow::Result<JobsReport> {
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let redis = Redis::start()?;
    let artifacts = TempDir::new("artifacts")?;
    let prefix = "bench:".to_owned();
    let env = |workers: usize| sidecar_env(redis.url(), &artifacts, &prefix, workers);
    let sidecar = Server::start(&release_dir().join("mcp-sidecar"), &env(workers))?;
    let client = connect(&sidecar).await?;

    // Latency, one job at a time.
    let mut client_samples = vec![];
    let mut server_samples = vec![];
    for index in 0..latency_jobs + 5 {
        let started = Instant::now();
        let job = call(&client, "start_render", json!({"spec": small_chart(index)})).await?;
        let job_id = job["job_id"].as_str().context("job_id")?.to_owned();
        loop {
            let status = call(&client, "get_render_status", json!({"job_id": job_id})).await?;
            match status["state"].as_str() {
                Some("succeeded") => break,
                Some("failed" | "cancelled") => bail!("job ended without a result: {status}"),
                _ => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
        let elapsed = started.elapsed();
        // The first few warm caches and connections.
        if index >= 5 {
            client_samples.push(elapsed);
            let (created, finished) = job_times(&mut redis.connection()?, &prefix, &job_id)?;
            server_samples.push(Duration::from_millis(finished.saturating_sub(created)));
        }
    }

    // Throughput: submit everything at once from several clients, then wait for the last.
    let mut submitters = tokio::task::JoinSet::new();
    let per_client = throughput_jobs.div_ceil(8);
    for client_index in 0..8 {
        let address = sidecar.addr;
        submitters.spawn(async move {
            let client = ClientConfig::default()
                .serve(StreamableHttpClientTransport::from_uri(format!(
                    "http://{address}/mcp"
                )))
                .await?;
            let mut ids = vec![];
            for index in 0..per_client {
                let job = call(
                    &client,
                    "start_render",
                    json!({"spec": small_chart(client_index * 1000 + index)}),
                )
                .await?;
                ids.push(job["job_id"].as_str().unwrap_or_default().to_owned());
            }
            anyhow::Ok(ids)
        });
    }
    let mut ids = vec![];
    while let Some(joined) = submitters.join_next().await {
        ids.extend(joined??);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    for job_id in &ids {
        loop {
            let status = call(&client, "get_render_status", json!({"job_id": job_id})).await?;
            match status["state"].as_str() {
                Some("succeeded") => break,
                Some("failed" | "cancelled") => bail!("job ended without a result: {status}"),
                _ if Instant::now() > deadline => bail!("throughput run did not finish"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    let mut first_created = u64::MAX;
    let mut last_finished = 0;
    for job_id in &ids {
        let (created, finished) = job_times(&mut redis.connection()?, &prefix, job_id)?;
        first_created = first_created.min(created);
        last_finished = last_finished.max(finished);
    }
    #[allow(clippy::cast_precision_loss)]
    let jobs_per_second =
        ids.len() as f64 / ((last_finished - first_created).max(1) as f64 / 1000.0);

    // Redis commands per status call, on a sidecar with no workers so nothing else talks.
    drop(client);
    drop(sidecar);
    let quiet = Server::start(&release_dir().join("mcp-sidecar"), &env(0))?;
    let client = connect(&quiet).await?;
    let finished = ids.first().context("a finished job")?.clone();
    call(&client, "get_render_status", json!({"job_id": finished})).await?;
    let status_calls = 1000_u64;
    let before = command_stats(&redis)?;
    for _ in 0..status_calls {
        call(&client, "get_render_status", json!({"job_id": finished})).await?;
    }
    let after = command_stats(&redis)?;
    let seen = command_deltas(&before, &after);
    let total: u64 = seen.iter().map(|(_, delta)| delta).sum();

    #[allow(clippy::cast_precision_loss)]
    Ok(JobsReport {
        render_workers: workers,
        client_latency: Latency::of(client_samples),
        server_latency: Latency::of(server_samples),
        throughput_jobs: ids.len(),
        throughput_jobs_per_second: jobs_per_second,
        status_calls,
        redis_commands_per_status_call: total as f64 / status_calls as f64,
        redis_commands_seen: seen,
    })
}

/// Longest a batch may take to be rendered.
const BATCH_WITHIN: Duration = Duration::from_secs(120);
/// How long after the last artifact file appears the batch counts as done: the worker records
/// the job as succeeded right after writing the file.
pub const SETTLE: Duration = Duration::from_millis(300);

/// How many artifact files `dir` holds (files being written are dot-files until linked).
pub fn artifact_count(dir: &std::path::Path) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .count())
}

/// How often [`wait_for_artifacts`] lists the folder. The rates are taken from the job records,
/// not from when the bench noticed, so a coarse look costs no precision; each look reads the
/// whole folder on the measured cores (every 10 ms, that was about 0.3 ms of the bench's CPU
/// per standard-chart job: 0.9 → 0.5–0.6 ms).
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// Waits until every job of `ids` has its PNG in `dir`, named as the local store names it,
/// looking only for the ones not seen yet. Unlike [`wait_for_artifacts`] it needs no files
/// removed between batches: on a file system without a journal (this machine's ext4), every
/// inode freed in the last minute or more is skipped one by one each time a file is created,
/// so deleting each batch's artifacts made the next batches' artifact writes dearer, round
/// after round.
pub async fn wait_for_pngs(dir: &std::path::Path, ids: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + BATCH_WITHIN;
    let mut pending = ids
        .iter()
        .map(|id| {
            let id: mcp_sidecar::jobs::model::JobId = id.parse()?;
            Ok(dir.join(mcp_sidecar::artifacts::file_name(
                &id,
                mcp_sidecar::render::spec::OutputKind::Png,
            )))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    loop {
        pending.retain(|path| !path.exists());
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} renders done after {BATCH_WITHIN:?}",
                ids.len() - pending.len(),
                ids.len()
            );
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// Waits until `dir` holds `count` artifact files (written aside as dot-files, then linked into
/// place): the bench learns that renders are done without asking Redis.
pub async fn wait_for_artifacts(dir: &std::path::Path, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + BATCH_WITHIN;
    loop {
        let files = artifact_count(dir)?;
        if files >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{files} of {count} renders done after {BATCH_WITHIN:?}");
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}
