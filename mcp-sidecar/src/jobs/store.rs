//! Render jobs in Redis: the job records and the durable work queue.
//!
//! # Key layout (every key starts with the deployment's `REDIS_KEY_PREFIX`, `P` below)
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P job:{id}` | hash | the job: `state`, `stage`, `total_stages`, `message`, `error`, `spec` (until it finishes), `attempts`, `entry`, timestamps, the artifact fields once succeeded |
//! | `P queue` | stream + consumer group `render-workers` | one entry `{job: id}` per job waiting or being worked on |
//! | `P recent` | sorted set, score = creation time (ms) | job ids for `list_renders`, capped at [`RECENT_CAP`] |
//! | `P idem:{sha256(key)}` | string, TTL | `"{job id} {spec digest}"` for an idempotency key |
//!
//! # Why it is safe
//!
//! - **Atomic enqueue**: one Lua script writes the record, the queue entry, the recent-list
//!   entry and the idempotency key, so no job exists without its queue entry or vice versa.
//! - **At-least-once delivery with a lease**: workers read with `XREADGROUP`; an entry stays in
//!   the group's pending list until the job finishes. A worker renews its lease by re-claiming
//!   its own entry (`XCLAIM … 0 … JUSTID` resets the idle time) every lease/3; entries idle for
//!   longer than the lease belong to a dead worker and any worker takes them with `XAUTOCLAIM`.
//! - **Fencing**: each delivery that starts running increments `attempts`, and every later
//!   write by that worker quotes its attempt number. A superseded worker (one whose lease
//!   expired while it was merely slow) can therefore never overwrite a newer attempt, and
//!   terminal states, once written, are never written again.
//! - **Bounded attempts**: a delivery beyond `max_attempts` fails the job, keeping the last error
//!   (`gave up after N attempts; last error: …`). The attempt it gave up on, if its worker is
//!   merely slow, learns at its next write that it lost the job.
//! - **Cancellation** ends a queued or running job at once in its own terminal state,
//!   `cancelled`; a running attempt learns it at its next renewal (and is told "cancelled" only
//!   then, not when the job ended some other way).
//! - **Expiry**: finished records expire after the configured TTL; their queue entries are
//!   deleted when they finish, so the stream only holds live work (`XLEN` = queue depth).
//! - **Bounded queue**: `enqueue` refuses a new job while `max_queued` entries are queued or
//!   running, in the same atomic step, so a flood of `start_render` calls cannot grow Redis
//!   without bound; an idempotent repeat of an existing job is still answered.
//! - **No scans**: every hot-path operation touches known keys; status is one `HMGET`.

use std::time::Duration;

use redis::{
    AsyncCommands, Script,
    streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply},
};

use super::connection::{Connection, Redis, RedisSettings};

use super::model::{ArtifactRecord, JobId, JobResult, JobState, JobStatus};
use crate::digest::sha256_hex;

/// How many job ids the recent list keeps.
pub const RECENT_CAP: usize = 10_000;
/// How far back `list_renders` looks (most recent ids) to find jobs in a given state.
const LIST_SCAN: usize = 1_000;
/// The consumer group all sidecars' workers share.
const GROUP: &str = "render-workers";

/// Why a job-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the job store (Redis) is unavailable: {0}; try again shortly")]
    Unavailable(String),
    #[error("no render job {0} (unknown, or finished long enough ago to have expired)")]
    NotFound(JobId),
    #[error(
        "idempotency key already used for job {0} with a different spec; \
         use a new key for a different render"
    )]
    IdempotencyConflict(String),
    #[error(
        "the render queue is full ({0} jobs queued or running, the limit is MAX_QUEUED_JOBS); \
         try again once some have finished"
    )]
    QueueFull(u64),
    #[error("job record is damaged: {0}")]
    Corrupt(String),
    #[error(
        "render job {id} was written, but only {acknowledged} of the {wanted} Redis replicas \
         REDIS_WAIT_REPLICAS asks for confirmed it within REDIS_WAIT_TIMEOUT, so a failover \
         could lose it; it may still run: retry with the same idempotency_key to get this job \
         back rather than a second one"
    )]
    NotReplicated {
        id: JobId,
        acknowledged: u64,
        wanted: u32,
    },
}

impl From<redis::RedisError> for StoreError {
    fn from(error: redis::RedisError) -> Self {
        Self::Unavailable(super::connection::explain(&error))
    }
}

/// Settings the store needs.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub key_prefix: String,
    /// How long finished job records (and idempotency keys) are kept.
    pub finished_ttl: Duration,
    /// How long a worker may go without renewing before its job is taken over.
    pub lease: Duration,
    /// Deliveries a job may have before it fails for good.
    pub max_attempts: u32,
    /// Most jobs queued or running at once; `enqueue` refuses new ones beyond it.
    pub max_queued: u64,
    /// Bound on each Redis operation a tool waits for.
    pub operation_timeout: Duration,
    /// Replicas that must have a new job (Redis `WAIT`) before it is acknowledged; 0: none.
    pub wait_replicas: u32,
    /// How long to wait for them.
    pub wait_timeout: Duration,
}

/// A job handed to a worker: what to run and the fence to quote while running it.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: JobId,
    /// The queue entry it was delivered by.
    pub entry_id: String,
    pub attempt: u32,
    pub spec_json: String,
    /// W3C trace context captured when the job was started ("" when none).
    pub trace_context: String,
}

/// What a worker learns when it reports progress or renews its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The attempt still owns the job: carry on.
    Owned,
    /// The job was cancelled: stop.
    Cancelled,
    /// The job moved on without this attempt (a newer attempt, or it ended some other way,
    /// e.g. another worker gave up on it after its last attempt, or it expired): stop.
    Lost,
}

/// A progress report: the stage now running (1-based) and the message saying so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    pub stage: u32,
    /// E.g. `"[2/4] rasterizing"`.
    pub message: &'a str,
}

/// An entry of the queue as a worker receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// The stream entry's id, which the job record names while the entry is live.
    pub entry_id: String,
    /// The job the entry is for, as written in the entry (not yet checked to be a job id).
    pub job: String,
}

/// What `enqueue` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: JobId,
    /// `false` when the idempotency key named a job that already existed (`id` is that job).
    pub created: bool,
}

/// A job's result as stored: what `get_render_result` answers, less the download URL, and
/// where the artifact is once the job has succeeded (what the URL is signed for).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    pub result: JobResult,
    pub artifact: Option<ArtifactRecord>,
}

/// What came of a delivered queue entry.
#[derive(Debug)]
pub enum Delivery {
    /// Run this job.
    Run(ClaimedJob),
    /// Nothing to run: the entry was stale, its job already finished or expired.
    Skipped,
    /// The job had used all its attempts and has now failed.
    Exhausted { id: JobId, error: String },
}

/// Whose fault a failed job is; recorded with the job as `failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The render itself failed: the spec cannot be rendered (an SVG that does not parse, a
    /// render over its time bound). A caller learns it as a tool error it can act on.
    Render,
    /// The system failed the job: its artifact could not be stored, its attempts ran out
    /// (workers kept dying), its stored record is damaged.
    Internal,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Render => "render",
            Self::Internal => "internal",
        }
    }
}

/// Everything known about a job, read in one `HMGET`: what `tasks/get` answers from.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSnapshot {
    pub status: JobStatus,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// When it reached its terminal state; its record expires `JOB_TTL` after that.
    pub finished_at_ms: Option<u64>,
    /// Whose fault it is, for a failed job (`None` for records written before it was kept).
    pub failure: Option<Failure>,
    /// Where its artifact is, once it succeeded.
    pub artifact: Option<ArtifactRecord>,
}

/// How recording a finished attempt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The outcome is the job's.
    Done,
    /// Not recorded: the job was cancelled while the attempt ran.
    Cancelled,
    /// Not recorded: the job moved on without this attempt (see [`Ownership::Lost`]).
    Lost,
}

struct Scripts {
    enqueue: LuaScript,
    start: LuaScript,
    renew: LuaScript,
    finish: LuaScript,
    requeue: LuaScript,
    cancel: LuaScript,
    retire: LuaScript,
}

impl Scripts {
    fn new() -> Self {
        Self {
            enqueue: LuaScript::new(include_str!("scripts/enqueue.lua")),
            start: LuaScript::new(include_str!("scripts/start.lua")),
            renew: LuaScript::new(include_str!("scripts/renew.lua")),
            finish: LuaScript::new(include_str!("scripts/finish.lua")),
            requeue: LuaScript::new(include_str!("scripts/requeue.lua")),
            cancel: LuaScript::new(include_str!("scripts/cancel.lua")),
            retire: LuaScript::new(
                "if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then \
                   redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end return 1",
            ),
        }
    }
}

/// A Lua script of the store, run by its SHA1 (`EVALSHA`), or by its text (`EVAL`) where the
/// server has not cached it (a new server, a restarted one, a replica just promoted): `EVAL`
/// goes to the node of the script's keys and caches it there. (redis-rs's own fallback sends
/// `SCRIPT LOAD` to every primary the cluster client last knew of, which fails while one of
/// them is down, even one whose replica has taken over and that holds none of these keys.)
struct LuaScript {
    code: &'static str,
    sha1: String,
}

impl LuaScript {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            sha1: Script::new(code).get_hash().to_owned(),
        }
    }

    fn call(&self) -> ScriptCall<'_> {
        ScriptCall {
            script: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One call of a [`LuaScript`]: its keys (`KEYS`) and arguments (`ARGV`).
struct ScriptCall<'a> {
    script: &'a LuaScript,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl ScriptCall<'_> {
    fn key(&mut self, key: impl redis::ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    fn arg(&mut self, arg: impl redis::ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// `EVALSHA sha1 …` or `EVAL code …` with this call's keys and arguments.
    fn command(&self, name: &str, script: &str) -> redis::Cmd {
        let mut command = redis::cmd(name);
        command
            .arg(script)
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        command
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        connection: &mut Connection,
    ) -> redis::RedisResult<T> {
        match self
            .command("EVALSHA", &self.script.sha1)
            .query_async(connection)
            .await
        {
            Err(error) if error.code() == Some("NOSCRIPT") => {
                self.command("EVAL", self.script.code)
                    .query_async(connection)
                    .await
            }
            answered => answered,
        }
    }
}

/// The job store. Cheap to clone; clones share one multiplexed connection.
#[derive(Clone)]
pub struct JobStore {
    redis: Redis,
    connection: Connection,
    /// Where new jobs are written when they must reach replicas first: `WAIT` blocks the
    /// connection it is sent on, so it gets one of its own rather than hold up every read.
    durable: Option<Connection>,
    settings: std::sync::Arc<StoreSettings>,
    scripts: std::sync::Arc<Scripts>,
}

impl std::fmt::Debug for JobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl JobStore {
    /// Prepares the store. Does not need Redis to be up: connections are made on first use
    /// and re-made after failures, so the sidecar starts (and reports not-ready) without it.
    pub fn new(redis_url: &str, settings: StoreSettings) -> Result<Self, StoreError> {
        let redis = Redis::open(RedisSettings::url(redis_url))
            .map_err(|error| StoreError::Unavailable(format!("bad REDIS_URL: {error}")))?;
        Self::with_redis(redis, settings)
    }

    /// [`JobStore::new`] with a client already set up (TLS, credentials, cluster mode: see
    /// [`super::connection`]).
    pub fn with_redis(redis: Redis, settings: StoreSettings) -> Result<Self, StoreError> {
        let connection = redis.connection(settings.operation_timeout)?;
        let durable = (settings.wait_replicas > 0)
            .then(|| redis.connection(settings.operation_timeout + settings.wait_timeout))
            .transpose()?;
        Ok(Self {
            redis,
            connection,
            durable,
            settings: std::sync::Arc::new(settings),
            scripts: std::sync::Arc::new(Scripts::new()),
        })
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.settings.key_prefix)
    }

    fn job_key(&self, id: &JobId) -> String {
        self.key(&format!("job:{id}"))
    }

    fn queue_key(&self) -> String {
        self.key("queue")
    }

    /// The pub/sub channel every change of a job's state or stage is announced on (message:
    /// the job id), by the same script that makes the change.
    pub fn events_channel(&self) -> String {
        self.key("task-events")
    }

    fn ttl_ms(&self) -> u64 {
        millis(self.settings.finished_ttl)
    }

    /// Runs `operation` with the store's bound, so a tool never waits long on a lost Redis.
    async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.settings.operation_timeout, operation)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "no answer within {:?}",
                    self.settings.operation_timeout
                )))
            })
    }

    /// What `/readyz` asks, bounded: whether the Redis that holds this deployment's keys
    /// answers, with one `EXISTS` of the queue key. In cluster mode that reaches the primary
    /// of the deployment's slot, and a stale topology mends itself on the way (the client
    /// follows the `MOVED` answer and re-reads the slots); a `CLUSTER KEYSLOT` to any node
    /// first makes sure it is a cluster at all. (A `PING` there would go to every primary
    /// the client last knew of, and fail for as long as one of them is down, even after its
    /// replica took over and even if this deployment never uses it.)
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let queue = self.queue_key();
        let cluster = self.redis.is_cluster();
        self.bounded(async move {
            if cluster {
                let _: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(&queue)
                    .query_async(&mut connection)
                    .await?;
            }
            let _: bool = connection.exists(&queue).await?;
            Ok(())
        })
        .await
    }

    /// Makes sure the queue stream and its consumer group exist (idempotent).
    pub async fn ensure_queue(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let queue = self.queue_key();
        self.bounded(async move {
            let created: Result<(), redis::RedisError> =
                connection.xgroup_create_mkstream(&queue, GROUP, "0").await;
            match created {
                Ok(()) => Ok(()),
                Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
                Err(error) => Err(error.into()),
            }
        })
        .await
    }

    /// Creates a job (or returns the one `idempotency_key` already names). The job, its queue
    /// entry and its idempotency key are written in one atomic step.
    pub async fn enqueue(
        &self,
        spec_json: &str,
        total_stages: u32,
        idempotency_key: Option<&str>,
        trace_context: &str,
    ) -> Result<Enqueued, StoreError> {
        let id = JobId::generate();
        let spec_digest = sha256_hex(spec_json.as_bytes());
        let idem_key = self.key(&format!(
            "idem:{}",
            sha256_hex(idempotency_key.unwrap_or("").as_bytes())
        ));
        let mut invocation = self.scripts.enqueue.call();
        invocation
            .key(self.job_key(&id))
            .key(self.queue_key())
            .key(self.key("recent"))
            .key(idem_key)
            .arg(id.as_str())
            .arg(now_ms())
            .arg(spec_json)
            .arg(total_stages)
            .arg(&spec_digest)
            .arg(if idempotency_key.is_some() { "1" } else { "0" })
            .arg(self.ttl_ms())
            .arg(RECENT_CAP)
            .arg(trace_context)
            .arg(self.settings.max_queued);
        let (outcome, job): (String, String) = match &self.durable {
            None => self.invoke(invocation).await?,
            Some(durable) => {
                let mut connection = durable.clone();
                self.bounded(async move { Ok(invocation.run(&mut connection).await?) })
                    .await?
            }
        };
        let enqueued = match outcome.as_str() {
            "created" => Enqueued { id, created: true },
            "existing" => Enqueued {
                id: parse_stored_id(&job)?,
                created: false,
            },
            "conflict" => return Err(StoreError::IdempotencyConflict(job)),
            "full" => return Err(StoreError::QueueFull(job.parse().unwrap_or_default())),
            other => return Err(StoreError::Corrupt(format!("enqueue answered `{other}`"))),
        };
        self.replicated(&enqueued.id).await?;
        Ok(enqueued)
    }

    /// With `wait_replicas` set: waits until that many replicas have every write the durable
    /// connection made so far (the job just written among them), or fails naming the job.
    async fn replicated(&self, id: &JobId) -> Result<(), StoreError> {
        let Some(durable) = &self.durable else {
            return Ok(());
        };
        let (wanted, timeout) = (self.settings.wait_replicas, self.settings.wait_timeout);
        let mut connection = durable.clone();
        let key = self.job_key(id);
        let acknowledged = tokio::time::timeout(
            timeout + self.settings.operation_timeout,
            connection.wait_for_replicas(&key, wanted, timeout),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!("no answer to WAIT within {:?}", timeout))
        })??;
        if acknowledged < u64::from(wanted) {
            return Err(StoreError::NotReplicated {
                id: id.clone(),
                acknowledged,
                wanted,
            });
        }
        Ok(())
    }

    /// The job's status: one `HMGET`.
    pub async fn status(&self, id: &JobId) -> Result<JobStatus, StoreError> {
        let mut connection = self.connection.clone();
        let key = self.job_key(id);
        let fields: Vec<Option<String>> = self
            .bounded(async move {
                Ok(connection
                    .hmget(
                        &key,
                        &["state", "stage", "total_stages", "message", "error"],
                    )
                    .await?)
            })
            .await?;
        status_from_fields(id, &fields)
    }

    /// Everything `tasks/get` needs about a job: one `HMGET`.
    pub async fn snapshot(&self, id: &JobId) -> Result<JobSnapshot, StoreError> {
        const FIELDS: [&str; 13] = [
            "state",
            "stage",
            "total_stages",
            "message",
            "error",
            "created_at",
            "updated_at",
            "finished_at",
            "failure",
            "artifact",
            "content_type",
            "bytes",
            "sha256",
        ];
        let mut connection = self.connection.clone();
        let key = self.job_key(id);
        let fields: Vec<Option<String>> = self
            .bounded(async move { Ok(connection.hmget(&key, &FIELDS).await?) })
            .await?;
        let status = status_from_fields(id, &fields)?;
        let time = |index: usize| -> Result<Option<u64>, StoreError> {
            fields
                .get(index)
                .cloned()
                .flatten()
                .map(|text| {
                    text.parse().map_err(|_| {
                        StoreError::Corrupt(format!("job {id}: {} `{text}`", FIELDS[index]))
                    })
                })
                .transpose()
        };
        let created_at_ms = time(5)?.unwrap_or_default();
        let failure = match fields.get(8).cloned().flatten().as_deref() {
            Some("render") => Some(Failure::Render),
            Some("internal") => Some(Failure::Internal),
            _ => None,
        };
        let artifact = artifact_record(id, status.state, &fields[9..])?;
        Ok(JobSnapshot {
            status,
            created_at_ms,
            updated_at_ms: time(6)?.unwrap_or(created_at_ms),
            finished_at_ms: time(7)?,
            failure,
            artifact,
        })
    }

    /// The job's state and, once it succeeded, where its artifact is: one `HMGET`.
    pub async fn artifact(&self, id: &JobId) -> Result<StoredResult, StoreError> {
        let mut connection = self.connection.clone();
        let key = self.job_key(id);
        let fields: Vec<Option<String>> = self
            .bounded(async move {
                Ok(connection
                    .hmget(
                        &key,
                        &[
                            "state",
                            "error",
                            "artifact",
                            "content_type",
                            "bytes",
                            "sha256",
                        ],
                    )
                    .await?)
            })
            .await?;
        let state = parse_state(id, fields.first().cloned().flatten())?;
        let mut result = JobResult {
            job_id: id.clone(),
            ready: false,
            state,
            url: None,
            expires_at: None,
            content_type: None,
            bytes: None,
            sha256: None,
            error: fields.get(1).cloned().flatten(),
        };
        let artifact = artifact_record(id, state, &fields[2..])?;
        if let Some(record) = &artifact {
            result.ready = true;
            result.content_type = Some(record.content_type.clone());
            result.bytes = Some(record.bytes);
            result.sha256 = Some(record.sha256.clone());
        }
        Ok(StoredResult { result, artifact })
    }

    /// Cancels a queued or running job; returns its status afterwards.
    pub async fn cancel(&self, id: &JobId) -> Result<JobStatus, StoreError> {
        let mut invocation = self.scripts.cancel.call();
        invocation
            .key(self.job_key(id))
            .key(self.queue_key())
            .arg(now_ms())
            .arg(self.ttl_ms())
            .arg(GROUP)
            .arg(self.events_channel())
            .arg(id.as_str());
        let outcome: String = self.invoke(invocation).await?;
        if outcome == "missing" {
            return Err(StoreError::NotFound(id.clone()));
        }
        self.status(id).await
    }

    /// Recent jobs, newest first, optionally only those in `state`.
    pub async fn list(
        &self,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<JobStatus>, StoreError> {
        let window = if state.is_some() { LIST_SCAN } else { limit };
        let mut connection = self.connection.clone();
        let recent = self.key("recent");
        let ids: Vec<String> = self
            .bounded({
                let mut connection = connection.clone();
                let recent = recent.clone();
                async move {
                    Ok(connection
                        .zrevrange(&recent, 0, isize::try_from(window).unwrap_or(1000) - 1)
                        .await?)
                }
            })
            .await?;
        let ids: Vec<JobId> = ids.iter().filter_map(|id| id.parse().ok()).collect();
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut pipeline = redis::pipe();
        for id in &ids {
            pipeline.cmd("HMGET").arg(self.job_key(id)).arg(&[
                "state",
                "stage",
                "total_stages",
                "message",
                "error",
            ]);
        }
        let rows: Vec<Vec<Option<String>>> = self
            .bounded(async move { Ok(pipeline.query_async(&mut connection).await?) })
            .await?;
        let mut expired = vec![];
        let mut jobs = vec![];
        for (id, fields) in ids.iter().zip(&rows) {
            match status_from_fields(id, fields) {
                Ok(status) if state.is_none_or(|wanted| wanted == status.state) => {
                    if jobs.len() < limit {
                        jobs.push(status);
                    }
                }
                Ok(_) => {}
                Err(StoreError::NotFound(_)) => expired.push(id.to_string()),
                Err(error) => return Err(error),
            }
        }
        if !expired.is_empty() {
            // Records expire on their own; drop their ids from the list lazily.
            let mut connection = self.connection.clone();
            let _: Result<(), _> = connection.zrem(&recent, expired).await;
        }
        Ok(jobs)
    }

    /// How many queue entries are waiting or being worked on.
    pub async fn queue_depth(&self) -> Result<u64, StoreError> {
        let mut connection = self.connection.clone();
        let queue = self.queue_key();
        self.bounded(async move { Ok(connection.xlen(&queue).await?) })
            .await
    }

    /// A connection of a worker's own, for blocking reads (a blocked read on the shared
    /// multiplexed connection would hold up every other command behind it).
    pub fn worker_connection(&self, block: Duration) -> Result<Connection, StoreError> {
        Ok(self
            .redis
            .connection(block + self.settings.operation_timeout)?)
    }

    /// Takes over one entry whose worker stopped renewing its lease, if there is one.
    pub async fn reclaim_stale(
        &self,
        connection: &mut Connection,
        worker: &str,
    ) -> Result<Option<QueueEntry>, StoreError> {
        let reply: Result<StreamAutoClaimReply, _> = connection
            .xautoclaim_options(
                self.queue_key(),
                GROUP,
                worker,
                millis(self.settings.lease),
                "0-0",
                StreamAutoClaimOptions::default().count(1),
            )
            .await;
        match reply {
            Ok(reply) => Ok(reply.claimed.into_iter().next().and_then(entry_job)),
            Err(error) => self.recreate_queue_if_gone(error).await,
        }
    }

    /// A Redis that restarted without persistence (or was flushed) has no consumer group:
    /// make it again, rather than fail every read until someone notices.
    async fn recreate_queue_if_gone<T>(
        &self,
        error: redis::RedisError,
    ) -> Result<Option<T>, StoreError> {
        if error.code() == Some("NOGROUP") {
            tracing::warn!("the render queue's consumer group was missing; creating it again");
            self.ensure_queue().await?;
            return Ok(None);
        }
        Err(error.into())
    }

    /// Removes a stopping worker's consumer name from the group, if it holds no entries
    /// (a consumer with pending entries is kept, so nothing it held can be forgotten).
    pub async fn retire_consumer(&self, worker: &str) -> Result<(), StoreError> {
        let mut invocation = self.scripts.retire.call();
        invocation.key(self.queue_key()).arg(GROUP).arg(worker);
        let _: i64 = self.invoke(invocation).await?;
        Ok(())
    }

    /// Waits up to `block` for a new entry.
    pub async fn read_new(
        &self,
        connection: &mut Connection,
        worker: &str,
        block: Duration,
    ) -> Result<Option<QueueEntry>, StoreError> {
        let options = StreamReadOptions::default()
            .group(GROUP, worker)
            .count(1)
            .block(usize::try_from(millis(block)).unwrap_or(usize::MAX));
        let reply: Option<StreamReadReply> = match connection
            .xread_options(&[self.queue_key()], &[">"], &options)
            .await
        {
            Ok(reply) => reply,
            Err(error) => return self.recreate_queue_if_gone(error).await,
        };
        Ok(reply
            .and_then(|reply| reply.keys.into_iter().next())
            .and_then(|key| key.ids.into_iter().next())
            .and_then(entry_job))
    }

    /// Decides whether a delivered entry runs, and marks it running under a new attempt.
    pub async fn start(
        &self,
        delivered: &QueueEntry,
        worker: &str,
    ) -> Result<Delivery, StoreError> {
        let entry = delivered.entry_id.as_str();
        let Ok(id) = delivered.job.parse::<JobId>() else {
            // Not something this code enqueued: remove it rather than retry it forever.
            let mut connection = self.connection.clone();
            let _: () = redis::pipe()
                .xack(self.queue_key(), GROUP, &[entry])
                .xdel(self.queue_key(), &[entry])
                .query_async(&mut connection)
                .await?;
            return Ok(Delivery::Skipped);
        };
        let mut invocation = self.scripts.start.call();
        invocation
            .key(self.job_key(&id))
            .key(self.queue_key())
            .arg(entry)
            .arg(GROUP)
            .arg(worker)
            .arg(now_ms())
            .arg(self.settings.max_attempts)
            .arg(self.ttl_ms())
            .arg(self.events_channel())
            .arg(id.as_str());
        let reply: Vec<String> = self.invoke(invocation).await?;
        match reply.as_slice() {
            [outcome, attempt, spec, trace] if outcome == "run" => Ok(Delivery::Run(ClaimedJob {
                id,
                entry_id: entry.to_owned(),
                attempt: attempt
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("attempt `{attempt}`")))?,
                spec_json: spec.clone(),
                trace_context: trace.clone(),
            })),
            [outcome, error] if outcome == "exhausted" => Ok(Delivery::Exhausted {
                id,
                error: error.clone(),
            }),
            _ => Ok(Delivery::Skipped),
        }
    }

    /// Reports progress (`stage` = Some) or only renews the lease (`None`), and says whether
    /// the attempt still owns the job.
    pub async fn renew(
        &self,
        job: &ClaimedJob,
        worker: &str,
        progress: Option<Progress<'_>>,
    ) -> Result<Ownership, StoreError> {
        let (stage, message) = match progress {
            Some(Progress { stage, message }) => (stage.to_string(), message),
            None => (String::new(), ""),
        };
        let mut invocation = self.scripts.renew.call();
        invocation
            .key(self.job_key(&job.id))
            .key(self.queue_key())
            .arg(job.attempt)
            .arg(stage)
            .arg(message)
            .arg(now_ms())
            .arg(GROUP)
            .arg(worker)
            .arg(&job.entry_id)
            .arg(self.events_channel())
            .arg(job.id.as_str());
        let outcome: String = self.invoke(invocation).await?;
        Ok(match outcome.as_str() {
            "running" => Ownership::Owned,
            "cancelled" => Ownership::Cancelled,
            _ => Ownership::Lost,
        })
    }

    /// Records success with the artifact, if the attempt still owns the job.
    pub async fn succeed(
        &self,
        job: &ClaimedJob,
        message: &str,
        artifact: &ArtifactRecord,
    ) -> Result<Recorded, StoreError> {
        self.finish(job, Ok(artifact), message).await
    }

    /// Records failure, if the attempt still owns the job.
    pub async fn fail(
        &self,
        job: &ClaimedJob,
        failure: Failure,
        error: &str,
    ) -> Result<Recorded, StoreError> {
        self.finish(job, Err((failure, error)), &format!("failed: {error}"))
            .await
    }

    async fn finish(
        &self,
        job: &ClaimedJob,
        outcome: Result<&ArtifactRecord, (Failure, &str)>,
        message: &str,
    ) -> Result<Recorded, StoreError> {
        let (state, error, failure) = match outcome {
            Ok(_) => (JobState::Succeeded, "", ""),
            Err((failure, error)) => (JobState::Failed, error, failure.as_str()),
        };
        let mut invocation = self.scripts.finish.call();
        invocation
            .key(self.job_key(&job.id))
            .key(self.queue_key())
            .arg(job.attempt)
            .arg(&job.entry_id)
            .arg(GROUP)
            .arg(now_ms())
            .arg(self.ttl_ms())
            .arg(state.as_str())
            .arg(message)
            .arg(error)
            .arg(self.events_channel())
            .arg(job.id.as_str())
            .arg(failure);
        if let Ok(artifact) = outcome {
            invocation
                .arg(&artifact.key)
                .arg(&artifact.content_type)
                .arg(artifact.bytes)
                .arg(&artifact.sha256);
        }
        Ok(match self.invoke::<String>(invocation).await?.as_str() {
            "done" => Recorded::Done,
            "cancelled" => Recorded::Cancelled,
            _ => Recorded::Lost,
        })
    }

    /// Runs a prepared script on the shared connection, bounded like every tool-facing call.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: ScriptCall<'_>,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        self.bounded(async move { Ok(invocation.run(&mut connection).await?) })
            .await
    }

    /// Hands a running job back to the queue (the worker is stopping).
    pub async fn requeue(&self, job: &ClaimedJob) -> Result<bool, StoreError> {
        let mut invocation = self.scripts.requeue.call();
        invocation
            .key(self.job_key(&job.id))
            .key(self.queue_key())
            .arg(job.attempt)
            .arg(&job.entry_id)
            .arg(GROUP)
            .arg(now_ms())
            .arg(job.id.as_str())
            .arg(self.events_channel());
        let outcome: String = self.invoke(invocation).await?;
        Ok(outcome == "requeued")
    }
}

fn entry_job(entry: redis::streams::StreamId) -> Option<QueueEntry> {
    let job = match entry.map.get("job")? {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
        redis::Value::SimpleString(text) => text.clone(),
        _ => return None,
    };
    Some(QueueEntry {
        entry_id: entry.id,
        job,
    })
}

fn parse_stored_id(text: &str) -> Result<JobId, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("stored job id `{text}`")))
}

fn parse_state(id: &JobId, state: Option<String>) -> Result<JobState, StoreError> {
    let state = state.ok_or_else(|| StoreError::NotFound(id.clone()))?;
    state
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("job {id}: state `{state}`")))
}

/// The artifact of a succeeded job from its `artifact`, `content_type`, `bytes`, `sha256`
/// fields; `None` for a job in any other state.
fn artifact_record(
    id: &JobId,
    state: JobState,
    fields: &[Option<String>],
) -> Result<Option<ArtifactRecord>, StoreError> {
    match (state, fields) {
        (JobState::Succeeded, [Some(key), Some(content_type), Some(bytes), Some(sha256)]) => {
            let bytes = bytes
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("job {id}: bytes `{bytes}`")))?;
            Ok(Some(ArtifactRecord {
                key: key.clone(),
                content_type: content_type.clone(),
                bytes,
                sha256: sha256.clone(),
            }))
        }
        (JobState::Succeeded, _) => Err(StoreError::Corrupt(format!(
            "job {id} succeeded without an artifact record"
        ))),
        _ => Ok(None),
    }
}

fn status_from_fields(id: &JobId, fields: &[Option<String>]) -> Result<JobStatus, StoreError> {
    let state = parse_state(id, fields.first().cloned().flatten())?;
    let number = |index: usize| -> Result<u32, StoreError> {
        let text = fields.get(index).cloned().flatten().unwrap_or_default();
        text.parse()
            .map_err(|_| StoreError::Corrupt(format!("job {id}: field {index} `{text}`")))
    };
    Ok(JobStatus {
        job_id: id.clone(),
        state,
        stage: number(1)?,
        total_stages: number(2)?,
        message: fields.get(3).cloned().flatten().unwrap_or_default(),
        error: fields.get(4).cloned().flatten(),
    })
}
