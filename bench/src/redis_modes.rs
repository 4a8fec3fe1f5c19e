//! Render jobs on each Redis set-up the sidecar supports, side by side in one run:
//!
//! - `plain`: one redis-server;
//! - `tls`: one redis-server that speaks only TLS and requires a password, as Memorystore with
//!   in-transit encryption and AUTH (`rediss://`, `REDIS_CA_FILE`, `REDIS_PASSWORD`);
//! - `cluster`: a Redis Cluster of three masters and three replicas (`REDIS_MODE=cluster`);
//! - `plain+wait`: one redis-server with one replica, `REDIS_WAIT_REPLICAS=1`;
//! - `cluster+wait`: the same cluster, `REDIS_WAIT_REPLICAS=1`.
//!
//! Every round takes each mode in turn (the order rotated round by round), so the noise of a
//! shared machine falls on all alike. Per mode and round, with that round's own key prefix:
//!
//! 1. throughput: `jobs` small charts submitted at once from [`SUBMITTERS`] clients to a sidecar
//!    with one render worker per core; jobs/s over the span from the first `created_at` to the
//!    last `finished_at` of the job records;
//! 2. `get_render_status` latency, sequential, on a finished job, and
//! 3. `start_render` latency, sequential;
//!
//! 2 and 3 on a sidecar with no render workers, so that no render competes for the cores (the
//! jobs 3 creates stay queued under the round's prefix; nothing works that prefix again).
//!
//! The bench learns that a batch is done from the artifact files appearing in ARTIFACT_DIR, not
//! by asking Redis, so on `plain` the throughput batch is also the Redis cost of a job: the
//! `INFO commandstats` and net-bytes deltas over it, divided by its jobs (the bench's own two
//! `INFO` calls taken out). A second batch on `plain`, watched with `MONITOR`, splits those
//! commands into the ones the sidecar sent and the ones its Lua scripts ran.

use std::{
    collections::BTreeMap,
    future::Future,
    io::{BufRead, BufReader, ErrorKind, Write},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use serde_json::{Value, json};
use test_support::{
    redis_cluster::RedisCluster,
    redis_server::{RedisServer, Secured, TestCa},
};

use crate::{
    jobs::{
        SETTLE, call, command_deltas, connect, job_times, parse_command_stats, sidecar_env,
        small_chart, wait_for_artifacts,
    },
    processes::{Server, TempDir, release_dir},
    stats::{Latency, Spread},
};

/// Clients submitting a throughput batch at once.
const SUBMITTERS: usize = 8;
/// Calls made before the measured ones of a latency run.
const WARM_UP_CALLS: usize = 20;
const PASSWORD: &str = "bench-redis-password";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Tls,
    Cluster,
    PlainWait,
    ClusterWait,
}

const MODES: [Mode; 5] = [
    Mode::Plain,
    Mode::Tls,
    Mode::Cluster,
    Mode::PlainWait,
    Mode::ClusterWait,
];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Tls => "tls",
            Self::Cluster => "cluster",
            Self::PlainWait => "plain+wait",
            Self::ClusterWait => "cluster+wait",
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            Self::Plain => "one redis-server, no replica",
            Self::Tls => {
                "one redis-server, TLS only + requirepass (rediss://, REDIS_CA_FILE, REDIS_PASSWORD)"
            }
            Self::Cluster => "Redis Cluster, 3 masters + 3 replicas (REDIS_MODE=cluster)",
            Self::PlainWait => "one redis-server + one replica, REDIS_WAIT_REPLICAS=1",
            Self::ClusterWait => "the cluster, REDIS_WAIT_REPLICAS=1",
        }
    }

    /// The same set-up without `WAIT`, for a `+wait` mode.
    fn without_wait(self) -> Option<Self> {
        match self {
            Self::PlainWait => Some(Self::Plain),
            Self::ClusterWait => Some(Self::Cluster),
            _ => None,
        }
    }

    fn is_cluster(self) -> bool {
        matches!(self, Self::Cluster | Self::ClusterWait)
    }
}

/// Runs `start`, which panics on failure (the test harnesses do), as an error instead.
fn started<T>(what: &str, start: impl FnOnce() -> T) -> anyhow::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(start))
        .map_err(|_| anyhow!("starting {what} failed (the reason is printed above)"))
}

/// Every Redis the modes use, on loopback, stopped (and their directories removed) when dropped.
struct Backends {
    plain: RedisServer,
    tls: RedisServer,
    /// The TLS server's CA and certificate files.
    _ca_dir: TempDir,
    primary: RedisServer,
    _replica: RedisServer,
    cluster: RedisCluster,
}

impl Backends {
    fn start() -> anyhow::Result<Self> {
        let plain = started("redis-server", RedisServer::start)?;
        let ca = started("a test CA (openssl)", TestCa::generate)?;
        let ca_dir = TempDir(
            ca.ca_cert
                .parent()
                .context("the CA's directory")?
                .to_owned(),
        );
        let tls = started("redis-server with TLS", || {
            RedisServer::start_secured(Secured {
                ca,
                password: PASSWORD.to_owned(),
            })
        })?;
        let primary = started("redis-server for a replica", RedisServer::start)?;
        let replica = started("a replica", || RedisServer::start_replica_of(&primary))?;
        let cluster = started("a Redis Cluster", RedisCluster::start)?;
        Ok(Self {
            plain,
            tls,
            _ca_dir: ca_dir,
            primary,
            _replica: replica,
            cluster,
        })
    }

    /// What selects `mode`'s Redis in a sidecar's environment: its URL, and any TLS, cluster
    /// and `WAIT` settings.
    fn settings(&self, mode: Mode) -> anyhow::Result<(String, Vec<(&'static str, String)>)> {
        let wait = vec![
            ("REDIS_WAIT_REPLICAS", "1".to_owned()),
            ("REDIS_WAIT_TIMEOUT", "1s".to_owned()),
        ];
        let cluster = ("REDIS_MODE", "cluster".to_owned());
        Ok(match mode {
            Mode::Plain => (self.plain.url(), vec![]),
            Mode::Tls => {
                let secured = self.tls.secured().context("the TLS server's settings")?;
                (
                    format!("rediss://127.0.0.1:{}", self.tls.port),
                    vec![
                        ("REDIS_CA_FILE", secured.ca.ca_cert.display().to_string()),
                        ("REDIS_PASSWORD", secured.password.clone()),
                    ],
                )
            }
            Mode::Cluster => (self.cluster.url(), vec![cluster]),
            Mode::PlainWait => (self.primary.url(), wait),
            Mode::ClusterWait => (self.cluster.url(), [vec![cluster], wait].concat()),
        })
    }

    /// A connection that reads `mode`'s job records (slot-routed for a cluster).
    fn records(&self, mode: Mode) -> anyhow::Result<Box<dyn redis::ConnectionLike>> {
        started(
            "a connection to read job records",
            || -> Box<dyn redis::ConnectionLike> {
                match mode {
                    Mode::Plain => Box::new(self.plain.connection()),
                    Mode::Tls => Box::new(self.tls.connection()),
                    Mode::PlainWait => Box::new(self.primary.connection()),
                    Mode::Cluster | Mode::ClusterWait => {
                        Box::new(self.cluster.cluster_connection())
                    }
                }
            },
        )
    }
}

/// What one mode measured in one round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundSample {
    pub round: usize,
    /// Its place in the round's order (0: first).
    pub position: usize,
    pub jobs_per_second: f64,
    pub get_render_status: Latency,
    pub start_render: Latency,
    /// `plain` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cost: Option<RedisCost>,
    /// `plain` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_origins: Option<CommandOrigins>,
}

/// Redis commands and bytes per job over a batch, from `INFO` before and after it.
#[derive(Debug, Clone, Serialize)]
pub struct RedisCost {
    pub jobs: usize,
    pub commands_per_job: f64,
    /// Calls by command over the batch (commands inside Lua scripts counted too, as Redis
    /// counts them).
    pub commands: Vec<(String, u64)>,
    /// `total_net_input_bytes` / `total_net_output_bytes` deltas per job.
    pub bytes_in_per_job: f64,
    pub bytes_out_per_job: f64,
}

/// Commands over a batch as `MONITOR` saw them: sent by a client, or run by a Lua script.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CommandOrigins {
    pub jobs: usize,
    /// Command → (sent by the sidecar, run inside scripts).
    pub commands: BTreeMap<String, (u64, u64)>,
}

impl CommandOrigins {
    fn totals(&self) -> (u64, u64) {
        self.commands
            .values()
            .fold((0, 0), |(sent, scripted), (s, l)| (sent + s, scripted + l))
    }
}

/// A mode across the rounds: median (min–max) of each figure.
#[derive(Debug, Serialize)]
pub struct ModeReport {
    pub mode: &'static str,
    pub meaning: &'static str,
    pub jobs_per_second: Spread,
    pub start_render_p50_ms: Spread,
    pub start_render_p99_ms: Spread,
    pub get_render_status_p50_ms: Spread,
    pub get_render_status_p99_ms: Spread,
    /// This mode's jobs/s over plain's in the same round.
    pub throughput_vs_plain: Spread,
    /// This mode's start_render p50 minus plain's in the same round (ms).
    pub start_render_p50_minus_plain_ms: Spread,
    /// This mode's get_render_status p50 over plain's in the same round.
    pub get_render_status_p50_vs_plain: Spread,
    /// For a `+wait` mode: start_render p50 minus that of the same set-up without WAIT in the
    /// same round (ms), i.e. what WAIT costs a new job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_cost_start_render_p50_ms: Option<Spread>,
    pub rounds: Vec<RoundSample>,
}

/// Redis load per job on `plain`.
#[derive(Debug, Serialize)]
pub struct PlainCostReport {
    pub method: &'static str,
    pub commands_per_job: Spread,
    pub bytes_in_per_job: Spread,
    pub bytes_out_per_job: Spread,
    pub bytes_per_job: Spread,
    /// Over all rounds' batches: calls per job by command.
    pub commands_per_job_by_command: Vec<(String, f64)>,
    /// From the `MONITOR` batches: commands the sidecar sent (network round trips, pipelined
    /// or not) and commands its Lua scripts ran, per job.
    pub sent_per_job: Spread,
    pub in_scripts_per_job: Spread,
    /// Over all rounds' `MONITOR` batches: command → (sent, in scripts) per job.
    pub origins_per_job_by_command: Vec<(String, f64, f64)>,
}

#[derive(Debug, Serialize)]
pub struct RedisModesReport {
    pub machine: String,
    pub redis_version: String,
    pub rounds: usize,
    pub jobs_per_batch: usize,
    pub submitters: usize,
    pub render_workers: usize,
    pub start_render_calls: usize,
    pub get_render_status_calls: usize,
    pub modes: Vec<ModeReport>,
    pub plain_redis_cost: PlainCostReport,
}

/// How much to measure.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Counts {
    /// Rounds; each takes every mode in turn (the order rotated each round).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Small charts per throughput batch (and per MONITOR batch on plain).
    #[arg(long, default_value_t = 400)]
    pub jobs: usize,
    /// Sequential start_render calls measured per mode and round.
    #[arg(long, default_value_t = 500)]
    pub start_calls: usize,
    /// Sequential get_render_status calls measured per mode and round.
    #[arg(long, default_value_t = 500)]
    pub status_calls: usize,
}

/// Runs the benchmark; Ctrl-C stops it with every server stopped and directory removed.
pub async fn run(counts: Counts) -> anyhow::Result<RedisModesReport> {
    tokio::select! {
        report = measure_all(counts) => report,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn measure_all(counts: Counts) -> anyhow::Result<RedisModesReport> {
    if counts.rounds == 0 || counts.jobs == 0 || counts.start_calls == 0 || counts.status_calls == 0
    {
        bail!("rounds, jobs and calls must be at least 1");
    }
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    eprintln!("redis-modes: starting redis-server (plain, TLS, primary + replica) and a cluster");
    let backends = Backends::start()?;
    let redis_version = {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut *backends.records(Mode::Plain)?)?;
        info_field(&info, "redis_version")
            .unwrap_or_default()
            .to_owned()
    };
    let mut samples: Vec<Vec<RoundSample>> = MODES.iter().map(|_| vec![]).collect();
    for round in 0..counts.rounds {
        for position in 0..MODES.len() {
            let index = (round + position) % MODES.len();
            let mode = MODES[index];
            eprintln!(
                "redis-modes: round {}/{}: {}",
                round + 1,
                counts.rounds,
                mode.name()
            );
            let sample = measure(&backends, mode, round, position, counts, workers)
                .await
                .with_context(|| format!("{} in round {}", mode.name(), round + 1))?;
            samples[index].push(sample);
        }
    }
    Ok(RedisModesReport {
        machine: crate::suite::machine(),
        redis_version,
        rounds: counts.rounds,
        jobs_per_batch: counts.jobs,
        submitters: SUBMITTERS,
        render_workers: workers,
        start_render_calls: counts.start_calls,
        get_render_status_calls: counts.status_calls,
        plain_redis_cost: plain_cost(&samples[0]),
        modes: summarize(samples),
    })
}

/// One mode, one round (see the module's documentation).
async fn measure(
    backends: &Backends,
    mode: Mode,
    round: usize,
    position: usize,
    counts: Counts,
    workers: usize,
) -> anyhow::Result<RoundSample> {
    let prefix = format!("bench-{}-{round}:", mode.name().replace('+', "-"));
    let key_prefix = if mode.is_cluster() {
        format!("{{{prefix}}}")
    } else {
        prefix.clone()
    };
    let artifacts = TempDir::new("redis-modes")?;
    let (url, settings) = backends.settings(mode)?;
    let env = |workers: usize| {
        let mut env = sidecar_env(url.clone(), &artifacts, &prefix, workers);
        env.extend(settings.iter().cloned());
        env
    };
    let mut records = backends.records(mode)?;
    let binary = release_dir().join("mcp-sidecar");

    let sidecar = Server::start(&binary, &env(workers))?;
    let mut clients = vec![];
    for _ in 0..SUBMITTERS {
        clients.push(Arc::new(connect(&sidecar).await?));
    }
    // One job end to end first: connections (TLS, cluster topology) are made on first use.
    submit(&clients[..1], 0, 1).await?;
    let mut rendered = 1;
    wait_for_artifacts(&artifacts.0, rendered).await?;
    tokio::time::sleep(SETTLE).await;

    let before = (mode == Mode::Plain)
        .then(|| snapshot(&mut *records))
        .transpose()?;
    let ids = submit(&clients, 1, counts.jobs).await?;
    rendered += ids.len();
    wait_for_artifacts(&artifacts.0, rendered).await?;
    tokio::time::sleep(SETTLE).await;
    let redis_cost = match before {
        Some(before) => Some(cost(&before, &snapshot(&mut *records)?, ids.len())),
        None => None,
    };
    let (mut first_created, mut last_finished) = (u64::MAX, 0);
    for id in &ids {
        let (created, finished) = job_times(&mut *records, &key_prefix, id)
            .with_context(|| format!("job {id} not finished {SETTLE:?} after its artifact"))?;
        first_created = first_created.min(created);
        last_finished = last_finished.max(finished);
    }
    #[allow(clippy::cast_precision_loss)]
    let jobs_per_second =
        ids.len() as f64 / (last_finished.saturating_sub(first_created).max(1) as f64 / 1000.0);

    let command_origins = if mode == Mode::Plain {
        let monitor = Monitor::start(backends.plain.port)?;
        let more = submit(&clients, 1 + counts.jobs, counts.jobs).await?;
        rendered += more.len();
        wait_for_artifacts(&artifacts.0, rendered).await?;
        tokio::time::sleep(SETTLE).await;
        Some(monitor.stop(more.len())?)
    } else {
        None
    };
    drop(clients);
    drop(sidecar);

    let quiet = Server::start(&binary, &env(0))?;
    let client = connect(&quiet).await?;
    let finished = ids.first().context("a finished job")?;
    let get_render_status = sequential(counts.status_calls, |_| {
        call(&client, "get_render_status", json!({"job_id": finished}))
    })
    .await?;
    let start_render = sequential(counts.start_calls, |index| {
        call(&client, "start_render", json!({"spec": small_chart(index)}))
    })
    .await?;
    Ok(RoundSample {
        round,
        position,
        jobs_per_second,
        get_render_status,
        start_render,
        redis_cost,
        command_origins,
    })
}

/// Submits `count` small charts spread over `clients` at once; their job ids.
async fn submit(
    clients: &[Arc<crate::jobs::Client>],
    first_seed: usize,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut submitters = tokio::task::JoinSet::new();
    let mut seed = first_seed;
    for (index, client) in clients.iter().enumerate() {
        let share = count / clients.len() + usize::from(index < count % clients.len());
        let (client, seeds) = (client.clone(), seed..seed + share);
        seed += share;
        submitters.spawn(async move {
            let mut ids = vec![];
            for seed in seeds {
                let job = call(&client, "start_render", json!({"spec": small_chart(seed)})).await?;
                ids.push(job["job_id"].as_str().context("job_id")?.to_owned());
            }
            anyhow::Ok(ids)
        });
    }
    let mut ids = vec![];
    while let Some(joined) = submitters.join_next().await {
        ids.extend(joined??);
    }
    Ok(ids)
}

/// `calls` sequential calls after [`WARM_UP_CALLS`] unmeasured ones.
async fn sequential<F, Fut>(calls: usize, mut one: F) -> anyhow::Result<Latency>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Value>>,
{
    let mut samples = Vec::with_capacity(calls);
    for index in 0..WARM_UP_CALLS + calls {
        let started = Instant::now();
        one(index).await?;
        if index >= WARM_UP_CALLS {
            samples.push(started.elapsed());
        }
    }
    Ok(Latency::of(samples))
}

fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(field)?.strip_prefix(':'))
}

/// Redis's counters at one moment, from one `INFO stats commandstats`.
struct Snapshot {
    commands: Vec<(String, u64)>,
    net_input: u64,
    net_output: u64,
    /// Bytes of this `INFO`'s own request and reply, which the counters of the next snapshot
    /// include.
    request: u64,
    reply: u64,
}

fn snapshot(connection: &mut dyn redis::ConnectionLike) -> anyhow::Result<Snapshot> {
    let mut info = redis::cmd("INFO");
    info.arg("stats").arg("commandstats");
    let text: String = info.query(connection)?;
    let number = |field: &str| -> anyhow::Result<u64> {
        Ok(info_field(&text, field)
            .with_context(|| format!("{field} in INFO"))?
            .parse()?)
    };
    let length = text.len() as u64;
    Ok(Snapshot {
        commands: parse_command_stats(&text),
        net_input: number("total_net_input_bytes")?,
        net_output: number("total_net_output_bytes")?,
        request: info.get_packed_command().len() as u64,
        // A bulk string: `$<length>\r\n<text>\r\n`.
        reply: 1 + length.to_string().len() as u64 + 2 + length + 2,
    })
}

/// The cost of `jobs` jobs between two snapshots. Redis counts a request's bytes when it reads
/// it and a reply's when it writes it, after the command: so `after` includes its own request
/// and `before`'s reply, and those are taken out.
#[allow(clippy::cast_precision_loss)]
fn cost(before: &Snapshot, after: &Snapshot, jobs: usize) -> RedisCost {
    let commands = command_deltas(&before.commands, &after.commands);
    let total: u64 = commands.iter().map(|(_, calls)| calls).sum();
    let per_job = |value: u64| value as f64 / jobs as f64;
    RedisCost {
        jobs,
        commands_per_job: per_job(total),
        commands,
        bytes_in_per_job: per_job(
            after
                .net_input
                .saturating_sub(before.net_input)
                .saturating_sub(after.request),
        ),
        bytes_out_per_job: per_job(
            after
                .net_output
                .saturating_sub(before.net_output)
                .saturating_sub(before.reply),
        ),
    }
}

/// `MONITOR` on a plain redis-server, tallying what it reports on another thread.
struct Monitor {
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<anyhow::Result<CommandOrigins>>>,
}

impl Drop for Monitor {
    /// On an error before [`Monitor::stop`]: the reader ends at its next quiet moment.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Monitor {
    fn start(port: u16) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"MONITOR\r\n")?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim_end() != "+OK" {
            bail!("MONITOR answered {line:?}");
        }
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let reader = std::thread::spawn(move || {
            let mut origins = CommandOrigins::default();
            let mut line = String::new();
            loop {
                match reader.read_line(&mut line) {
                    Ok(0) => bail!("MONITOR connection closed"),
                    Ok(_) if line.ends_with('\n') => {
                        origins.tally(&line);
                        line.clear();
                    }
                    Ok(_) => {}
                    Err(error)
                        if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                    {
                        // Quiet for a moment: stop here if asked (a partial line is kept).
                        if stopping.load(Ordering::Relaxed) {
                            return Ok(origins);
                        }
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        });
        Ok(Self {
            stop,
            reader: Some(reader),
        })
    }

    /// Stops watching; what was seen, for a batch of `jobs`.
    fn stop(mut self, jobs: usize) -> anyhow::Result<CommandOrigins> {
        self.stop.store(true, Ordering::Relaxed);
        let mut origins = self
            .reader
            .take()
            .context("the MONITOR reader")?
            .join()
            .map_err(|_| anyhow!("the MONITOR reader panicked"))??;
        origins.jobs = jobs;
        Ok(origins)
    }
}

impl CommandOrigins {
    /// Counts one `MONITOR` line: `+<time> [<db> <client address or "lua">] "<command>" …`.
    fn tally(&mut self, line: &str) {
        let Some((client, rest)) = line
            .split_once(" [")
            .and_then(|(_, rest)| rest.split_once("] \""))
        else {
            return;
        };
        let Some((command, _)) = rest.split_once('"') else {
            return;
        };
        let counts = self
            .commands
            .entry(command.to_ascii_lowercase())
            .or_default();
        if client.ends_with(" lua") {
            counts.1 += 1;
        } else {
            counts.0 += 1;
        }
    }
}

/// `compare` of each round's sample with `base`'s sample of the same round, over the rounds.
fn paired(
    samples: &[RoundSample],
    base: &[RoundSample],
    compare: impl Fn(&RoundSample, &RoundSample) -> f64,
) -> Spread {
    let values: Vec<f64> = samples
        .iter()
        .zip(base)
        .map(|(sample, base)| compare(sample, base))
        .collect();
    Spread::of(&values)
}

fn spread(samples: &[RoundSample], pick: impl Fn(&RoundSample) -> f64) -> Spread {
    Spread::of(&samples.iter().map(pick).collect::<Vec<_>>())
}

fn summarize(samples: Vec<Vec<RoundSample>>) -> Vec<ModeReport> {
    let plain = samples[0].clone();
    MODES
        .iter()
        .zip(&samples)
        .map(|(&mode, rounds)| {
            let start_minus = |base: &[RoundSample]| {
                paired(rounds, base, |sample, base| {
                    sample.start_render.p50_ms - base.start_render.p50_ms
                })
            };
            ModeReport {
                mode: mode.name(),
                meaning: mode.meaning(),
                jobs_per_second: spread(rounds, |s| s.jobs_per_second),
                start_render_p50_ms: spread(rounds, |s| s.start_render.p50_ms),
                start_render_p99_ms: spread(rounds, |s| s.start_render.p99_ms),
                get_render_status_p50_ms: spread(rounds, |s| s.get_render_status.p50_ms),
                get_render_status_p99_ms: spread(rounds, |s| s.get_render_status.p99_ms),
                throughput_vs_plain: paired(rounds, &plain, |s, p| {
                    s.jobs_per_second / p.jobs_per_second
                }),
                start_render_p50_minus_plain_ms: start_minus(&plain),
                get_render_status_p50_vs_plain: paired(rounds, &plain, |s, p| {
                    s.get_render_status.p50_ms / p.get_render_status.p50_ms
                }),
                wait_cost_start_render_p50_ms: mode.without_wait().map(|base| {
                    let index = MODES.iter().position(|&m| m == base).unwrap_or_default();
                    start_minus(&samples[index])
                }),
                rounds: rounds.clone(),
            }
        })
        .collect()
}

#[allow(clippy::cast_precision_loss)]
fn plain_cost(rounds: &[RoundSample]) -> PlainCostReport {
    let costs: Vec<&RedisCost> = rounds
        .iter()
        .filter_map(|s| s.redis_cost.as_ref())
        .collect();
    let origins: Vec<&CommandOrigins> = rounds
        .iter()
        .filter_map(|s| s.command_origins.as_ref())
        .collect();
    let all_jobs = costs.iter().map(|c| c.jobs).sum::<usize>().max(1) as f64;
    let mut by_command = BTreeMap::<String, u64>::new();
    for (name, calls) in costs.iter().flat_map(|c| &c.commands) {
        *by_command.entry(name.clone()).or_default() += calls;
    }
    let watched_jobs = origins.iter().map(|o| o.jobs).sum::<usize>().max(1) as f64;
    let mut by_origin = BTreeMap::<String, (u64, u64)>::new();
    for (name, (sent, scripted)) in origins.iter().flat_map(|o| &o.commands) {
        let entry = by_origin.entry(name.clone()).or_default();
        entry.0 += sent;
        entry.1 += scripted;
    }
    let per_job = |origins: &CommandOrigins, pick: fn((u64, u64)) -> u64| {
        pick(origins.totals()) as f64 / origins.jobs.max(1) as f64
    };
    PlainCostReport {
        method: "plain only. INFO commandstats and total_net_input_bytes/total_net_output_bytes \
                 before and after the throughput batch, divided by its jobs; the bench waits for \
                 the batch by watching artifact files, so no status polling is in it, and its \
                 own two INFO calls are taken out. Commands run inside Lua scripts are counted, \
                 as Redis counts them; idle worker reads (XREADGROUP BLOCK 2s, XAUTOCLAIM) during \
                 the batch are included. sent/in_scripts: a second batch watched with MONITOR.",
        commands_per_job: Spread::of(&costs.iter().map(|c| c.commands_per_job).collect::<Vec<_>>()),
        bytes_in_per_job: Spread::of(&costs.iter().map(|c| c.bytes_in_per_job).collect::<Vec<_>>()),
        bytes_out_per_job: Spread::of(
            &costs
                .iter()
                .map(|c| c.bytes_out_per_job)
                .collect::<Vec<_>>(),
        ),
        bytes_per_job: Spread::of(
            &costs
                .iter()
                .map(|c| c.bytes_in_per_job + c.bytes_out_per_job)
                .collect::<Vec<_>>(),
        ),
        commands_per_job_by_command: by_command
            .into_iter()
            .map(|(name, calls)| (name, calls as f64 / all_jobs))
            .collect(),
        sent_per_job: Spread::of(
            &origins
                .iter()
                .map(|o| per_job(o, |t| t.0))
                .collect::<Vec<_>>(),
        ),
        in_scripts_per_job: Spread::of(
            &origins
                .iter()
                .map(|o| per_job(o, |t| t.1))
                .collect::<Vec<_>>(),
        ),
        origins_per_job_by_command: by_origin
            .into_iter()
            .map(|(name, (sent, scripted))| {
                (
                    name,
                    sent as f64 / watched_jobs,
                    scripted as f64 / watched_jobs,
                )
            })
            .collect(),
    }
}

/// `median (min–max)` with `decimals`.
fn cell(spread: Spread, decimals: usize) -> String {
    format!(
        "{:.decimals$} ({:.decimals$}–{:.decimals$})",
        spread.median, spread.min, spread.max
    )
}

/// A Markdown table.
fn table(out: &mut String, headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    out.push_str(&line(
        &headers.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
    ));
    out.push_str(&line(&vec!["---".to_owned(); headers.len()]));
    for row in rows {
        out.push_str(&line(&row));
    }
}

/// The report as Markdown tables (what README.md's "Redis modes" shows).
pub fn markdown(report: &RedisModesReport) -> String {
    let mut out = format!(
        "{} rounds on {}, redis-server {}; median (min–max) over the rounds. Batches of {} \
         small charts from {} clients, {} render workers; {} sequential start_render and {} \
         get_render_status calls per round.\n\n",
        report.rounds,
        report.machine,
        report.redis_version,
        report.jobs_per_batch,
        report.submitters,
        report.render_workers,
        report.start_render_calls,
        report.get_render_status_calls,
    );
    table(
        &mut out,
        &[
            "mode",
            "jobs/s",
            "start_render p50 ms",
            "start_render p99 ms",
            "get_render_status p50 ms",
            "get_render_status p99 ms",
        ],
        report.modes.iter().map(|mode| {
            vec![
                mode.mode.to_owned(),
                cell(mode.jobs_per_second, 0),
                cell(mode.start_render_p50_ms, 2),
                cell(mode.start_render_p99_ms, 2),
                cell(mode.get_render_status_p50_ms, 2),
                cell(mode.get_render_status_p99_ms, 2),
            ]
        }),
    );
    out.push_str(
        "\nAgainst plain (and, for WAIT, the same set-up without it) in the same round:\n\n",
    );
    table(
        &mut out,
        &[
            "mode",
            "jobs/s ÷ plain",
            "start_render p50 − plain, ms",
            "get_render_status p50 ÷ plain",
            "WAIT: start_render p50 − without WAIT, ms",
        ],
        report.modes.iter().skip(1).map(|mode| {
            vec![
                mode.mode.to_owned(),
                cell(mode.throughput_vs_plain, 2),
                cell(mode.start_render_p50_minus_plain_ms, 2),
                cell(mode.get_render_status_p50_vs_plain, 2),
                mode.wait_cost_start_render_p50_ms
                    .map_or_else(|| "–".to_owned(), |spread| cell(spread, 2)),
            ]
        }),
    );
    let cost = &report.plain_redis_cost;
    out.push_str(&format!(
        "\nRedis per job on plain: {} commands ({} sent by the sidecar, {} run inside its Lua \
         scripts), {} bytes ({} in, {} out).\n\n",
        cell(cost.commands_per_job, 1),
        cell(cost.sent_per_job, 1),
        cell(cost.in_scripts_per_job, 1),
        cell(cost.bytes_per_job, 0),
        cell(cost.bytes_in_per_job, 0),
        cell(cost.bytes_out_per_job, 0),
    ));
    let names: std::collections::BTreeSet<&String> = cost
        .commands_per_job_by_command
        .iter()
        .map(|(name, _)| name)
        .chain(
            cost.origins_per_job_by_command
                .iter()
                .map(|(name, _, _)| name),
        )
        .collect();
    table(
        &mut out,
        &[
            "command",
            "per job (INFO)",
            "sent (MONITOR)",
            "in scripts (MONITOR)",
        ],
        names.into_iter().map(|name| {
            let info = cost
                .commands_per_job_by_command
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0.0, |(_, calls)| *calls);
            let (sent, scripted) = cost
                .origins_per_job_by_command
                .iter()
                .find(|(n, _, _)| n == name)
                .map_or((0.0, 0.0), |(_, sent, scripted)| (*sent, *scripted));
            vec![
                name.clone(),
                format!("{info:.2}"),
                format!("{sent:.2}"),
                format!("{scripted:.2}"),
            ]
        }),
    );
    out
}
