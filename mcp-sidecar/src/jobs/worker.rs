//! The render worker: takes jobs from the queue and runs their pipeline.
//!
//! One step is exposed, [`RenderWorker::try_run_one`], so tests can drive a worker without
//! sleeping; [`RenderWorker::run`] is the trivial loop around it.
//!
//! While a job runs, the worker renews its lease every lease/3, and with each progress report.
//! A stage is reported once it has run for [`REPORT_AFTER`]: a stage over sooner is left
//! out, since the next report or the job's end says more. The reports go out alongside the
//! work, in stage order, and the job's end waits for the one on its way. If a renewal says
//! the job was cancelled or taken over, the worker stops working on it. A job's CPU stages
//! run one after another on one of the render threads (`pool`); a semaphore with one permit
//! per configured render worker (and thread) bounds how many run at once, and a permit is
//! released only when its work ends, even if the job stopped waiting for it (render time-out,
//! cancellation). Each permit is shared by [`LOOPS_PER_PERMIT`] worker loops, so one job's
//! Redis round trips and upload overlap another's drawing.
//!
//! On shutdown a worker takes no new job and gives the one in hand until `drain` to finish;
//! after that it hands the job back to the queue for another worker.

use std::{sync::Arc, time::Duration};

use opentelemetry::KeyValue;
use service_core::telemetry::propagation;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    model::ArtifactRecord,
    pool::RenderPool,
    store::{ClaimedJob, Delivery, Failure, JobStore, Ownership, Progress, Recorded, StoreError},
};
use crate::{
    artifacts::ArtifactStore,
    digest::sha256_hex,
    render::{
        Renderer, Work,
        spec::{RenderSpec, Stage},
    },
    telemetry::METRICS,
};

/// The span of one job attempt, `render.job`: a child of the `tools/call start_render` span
/// stored with the job, whichever sidecar runs it. Always made (not only while exporting):
/// its `job_id` also goes on every log line written while the job runs.
fn job_span(job: &ClaimedJob, worker: &str, reclaimed: bool) -> tracing::Span {
    let span = tracing::info_span!(
        "render.job",
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        job_id = %job.id,
        attempt = job.attempt,
        worker = %worker,
        reclaimed,
    );
    if let Some(parent) = propagation::context_from_traceparent(&job.trace_context) {
        let _ = span.set_parent(parent);
    }
    span
}

/// The span of one pipeline stage: `render.chart`, `render.parse`, `render.rasterize`,
/// `render.encode` or `artifact.upload` (with `gcs.upload` inside for the gcs store).
fn stage_span(stage: Stage, job: &tracing::Span) -> tracing::Span {
    let name = match stage {
        Stage::Charting => "render.chart",
        Stage::Parsing => "render.parse",
        Stage::Rasterizing => "render.rasterize",
        Stage::Encoding => "render.encode",
        Stage::Uploading => "artifact.upload",
    };
    tracing::info_span!(
        parent: job,
        "render.stage",
        otel.name = name,
        otel.status_code = tracing::field::Empty
    )
}

/// Worker loops per render permit (`RENDER_WORKERS`): while one job draws, the next is
/// claimed and the previous one uploaded and recorded, so the permits are rarely idle.
pub const LOOPS_PER_PERMIT: usize = 2;

/// How long a stage runs before it is reported. Each report is a Redis write and a message
/// to every sidecar's task-events subscription; a stage over within this time would be
/// superseded before anyone could see it. Most chart jobs draw in 5-100 ms: they go from
/// `starting` straight to `done`, and a stage that lasts is still reported this long after it
/// begins.
pub const REPORT_AFTER: Duration = Duration::from_millis(50);

/// How long a worker waits on an empty queue before checking for stale jobs again.
const POLL: Duration = Duration::from_secs(2);
/// How often a busy worker looks for stale entries (an idle one looks after every `POLL`):
/// not before every job, which would cost each job a round trip to find nothing.
const STALE_CHECK: Duration = Duration::from_secs(1);

/// Everything the workers of one sidecar share.
#[derive(Clone)]
pub struct WorkerContext {
    pub store: JobStore,
    pub artifacts: ArtifactStore,
    pub renderer: Arc<Renderer>,
    /// One permit per render that may run at once.
    pub render_permits: Arc<Semaphore>,
    /// The threads the renders run on, as many as permits.
    pub render_pool: Arc<RenderPool>,
    /// Bound on a job's CPU stages together.
    pub render_timeout: Duration,
    /// On shutdown, how long a job in hand may take before it is handed back.
    pub drain: Duration,
}

/// What one step of a worker did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was waiting.
    Idle,
    /// A delivered entry had nothing to run (stale, or its job had finished or expired).
    Skipped,
    /// The job had used up its attempts and was failed without running.
    Exhausted,
    Succeeded,
    /// The job failed with this error.
    Failed(String),
    /// The job was cancelled while running; its result was discarded.
    Cancelled,
    /// The job moved on without this attempt (another worker took it over, or gave up on it
    /// after its last attempt); this one stopped and its result was discarded.
    Superseded,
    /// Shutdown: the job went back to the queue.
    HandedBack,
    /// The job store could not be reached mid-job; the lease will expire and the job retried.
    Interrupted(String),
}

pub struct RenderWorker {
    name: String,
    context: WorkerContext,
    connection: super::connection::Connection,
    /// When to look for stale entries again.
    next_stale_check: Instant,
    shutdown: CancellationToken,
}

impl Outcome {
    /// The `outcome` attribute of `render.job.duration`.
    fn label(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Skipped => "skipped",
            Self::Exhausted => "exhausted",
            Self::Succeeded => "succeeded",
            Self::Failed(_) => "failed",
            Self::Cancelled => "cancelled",
            Self::Superseded => "superseded",
            Self::HandedBack => "handed_back",
            Self::Interrupted(_) => "interrupted",
        }
    }
}

/// What a job's pipeline produced: the stored artifact, after how many stages.
struct Rendered {
    artifact: ArtifactRecord,
    total_stages: usize,
}

/// Why a job's pipeline stopped short.
enum Stop {
    Failed(Failure, String),
    Cancelled,
    Superseded,
    StoreDown(String),
    /// Shutdown came before the job started drawing: it goes back to the queue at once.
    HandBack,
}

impl From<StoreError> for Stop {
    fn from(error: StoreError) -> Self {
        Self::StoreDown(error.to_string())
    }
}

impl RenderWorker {
    pub fn new(
        name: String,
        context: WorkerContext,
        shutdown: CancellationToken,
    ) -> Result<Self, StoreError> {
        let connection = context.store.worker_connection(POLL)?;
        Ok(Self {
            name,
            context,
            connection,
            next_stale_check: Instant::now(),
            shutdown,
        })
    }

    /// Runs until shutdown. Store outages are logged and retried with a growing pause.
    pub async fn run(mut self) {
        let mut pause = Duration::from_millis(100);
        while !self.shutdown.is_cancelled() {
            match self.try_run_one(POLL).await {
                Ok(outcome) => {
                    pause = Duration::from_millis(100);
                    if outcome != Outcome::Idle {
                        tracing::debug!(worker = %self.name, ?outcome, "job step");
                    }
                }
                Err(error) => {
                    tracing::warn!(worker = %self.name, %error, "render worker cannot reach the job store");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.shutdown.cancelled() => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        if let Err(error) = self.context.store.retire_consumer(&self.name).await {
            tracing::debug!(worker = %self.name, %error, "could not remove the consumer name");
        }
    }

    /// Takes one job and runs it: a stale one if there is one (looked for at most every
    /// `STALE_CHECK` while busy, and first thing after an idle step), else a new one, waiting
    /// up to `block`.
    pub async fn try_run_one(&mut self, block: Duration) -> Result<Outcome, StoreError> {
        let store = self.context.store.clone();
        let check_stale = Instant::now() >= self.next_stale_check;
        let delivered = tokio::select! {
            delivered = async {
                let stale = if check_stale {
                    store.reclaim_stale(&mut self.connection, &self.name).await?
                } else {
                    None
                };
                match stale {
                    Some(entry) => Ok::<_, StoreError>(Some((entry, true))),
                    None => {
                        if check_stale {
                            self.next_stale_check = Instant::now() + STALE_CHECK;
                        }
                        Ok(store.read_new(&mut self.connection, &self.name, block).await?.map(|entry| (entry, false)))
                    }
                }
            } => delivered?,
            () = self.shutdown.cancelled() => return Ok(Outcome::Idle),
        };
        let Some((entry, reclaimed)) = delivered else {
            // Idle: look for stale entries first thing next time.
            self.next_stale_check = Instant::now();
            return Ok(Outcome::Idle);
        };
        if reclaimed {
            METRICS.jobs_reclaimed.add(1, &[]);
        }
        match store.start(&entry, &self.name).await? {
            Delivery::Skipped => Ok(Outcome::Skipped),
            Delivery::Exhausted { id, error } => {
                tracing::warn!(job_id = %id, %error, "render job failed: out of attempts");
                Ok(Outcome::Exhausted)
            }
            Delivery::Run(job) => {
                let span = job_span(&job, &self.name, reclaimed);
                let started = Instant::now();
                // Boxed: the job's future is large and deeply nested; keep it off this one's stack.
                let outcome = Box::pin(self.run_claimed(job))
                    .instrument(span.clone())
                    .await;
                let label = outcome.label();
                if matches!(outcome, Outcome::Failed(_) | Outcome::Interrupted(_)) {
                    span.record("otel.status_code", "ERROR");
                }
                METRICS.job_duration.record(
                    started.elapsed().as_secs_f64(),
                    &[KeyValue::new("outcome", label)],
                );
                Ok(outcome)
            }
        }
    }

    /// Runs a claimed job to its end, or hands it back if shutdown's drain time runs out.
    async fn run_claimed(&self, job: ClaimedJob) -> Outcome {
        let drain = self.context.drain;
        let shutdown = self.shutdown.clone();
        let outcome = tokio::select! {
            outcome = Box::pin(self.run_pipeline(&job)) => outcome,
            () = async move {
                shutdown.cancelled().await;
                tokio::time::sleep(drain).await;
            } => Err(Stop::HandBack),
        };
        match outcome {
            Err(Stop::HandBack) => match self.context.store.requeue(&job).await {
                Ok(_) => {
                    tracing::info!("shutting down: render job handed back to the queue");
                    Outcome::HandedBack
                }
                Err(error) => Outcome::Interrupted(error.to_string()),
            },
            Ok(Rendered {
                artifact,
                total_stages: total,
            }) => match self
                .context
                .store
                .succeed(&job, &format!("[{total}/{total}] done"), &artifact)
                .await
            {
                Ok(Recorded::Done) => {
                    tracing::info!(bytes = artifact.bytes, "render job succeeded");
                    METRICS.artifact_size.record(
                        artifact.bytes,
                        &[KeyValue::new("content_type", artifact.content_type.clone())],
                    );
                    Outcome::Succeeded
                }
                Ok(Recorded::Cancelled) => Outcome::Cancelled,
                Ok(Recorded::Lost) => Outcome::Superseded,
                Err(error) => Outcome::Interrupted(error.to_string()),
            },
            Err(Stop::Failed(failure, error)) => {
                match self.context.store.fail(&job, failure, &error).await {
                    Ok(Recorded::Done) => {
                        tracing::info!(%error, "render job failed");
                        Outcome::Failed(error)
                    }
                    Ok(Recorded::Cancelled) => Outcome::Cancelled,
                    Ok(Recorded::Lost) => Outcome::Superseded,
                    Err(store_error) => Outcome::Interrupted(store_error.to_string()),
                }
            }
            Err(Stop::Cancelled) => {
                tracing::info!("render job cancelled while running");
                Outcome::Cancelled
            }
            Err(Stop::Superseded) => Outcome::Superseded,
            Err(Stop::StoreDown(error)) => {
                tracing::warn!(%error, "job store lost mid-job; the job will be retried after its lease");
                Outcome::Interrupted(error)
            }
        }
    }

    /// Runs every stage: the CPU stages one after another on one render thread, then the
    /// upload. A stage still running [`REPORT_AFTER`] after it began is reported (with a lease
    /// renewal), in stage order, alongside the work rather than before it: a stage does not
    /// wait for the round trip that reports it, and the job's end waits for a report on its
    /// way. The lease is also renewed every lease/3.
    async fn run_pipeline(&self, job: &ClaimedJob) -> Result<Rendered, Stop> {
        let value: serde_json::Value = serde_json::from_str(&job.spec_json).map_err(|error| {
            Stop::Failed(
                Failure::Internal,
                format!("stored spec is not JSON: {error}"),
            )
        })?;
        let spec = RenderSpec::from_json(value)
            .map_err(|error| Stop::Failed(Failure::Render, error.to_string()))?;
        let stages = spec.stages();
        let total = stages.len();
        let Some((Stage::Uploading, cpu_stages)) = stages.split_last() else {
            return Err(Stop::Failed(
                Failure::Internal,
                "internal error: the pipeline does not end in an upload".into(),
            ));
        };
        let output = spec.output();

        let (started, mut reports) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let reporting = async {
            let mut next = reports.recv().await;
            while let Some(index) = next {
                // The next stage's start within REPORT_AFTER (or the work's end, which closes
                // the channel) supersedes this one: nothing to say about it.
                if let Ok(newer) = tokio::time::timeout(REPORT_AFTER, reports.recv()).await {
                    next = newer;
                    continue;
                }
                let message = format!("[{}/{total}] {}", index + 1, stages[index].name());
                let progress = Progress {
                    stage: u32::try_from(index + 1).unwrap_or(u32::MAX),
                    message: &message,
                };
                self.check(
                    self.context
                        .store
                        .renew(job, &self.name, Some(progress))
                        .await?,
                )?;
                next = reports.recv().await;
            }
            Ok::<(), Stop>(())
        };
        let working = async {
            let deadline = tokio::time::Instant::now() + self.context.render_timeout;
            let cpu = self.render(spec, cpu_stages, started.clone());
            let (bytes, sha256) = tokio::time::timeout_at(deadline, cpu)
                .await
                .unwrap_or_else(|_| {
                    Err(Stop::Failed(
                        Failure::Render,
                        format!(
                            "rendering took longer than {:?}",
                            self.context.render_timeout
                        ),
                    ))
                })?;

            // The upload, the last stage: reported if it lasts. The channel closes (and the
            // reports end) when it is done.
            let _ = started.send(total - 1);
            let bytes = bytes::Bytes::from(bytes);
            let artifact = ArtifactRecord {
                key: self.context.artifacts.key(&job.id, output),
                content_type: output.content_type().to_owned(),
                bytes: bytes.len() as u64,
                sha256,
            };
            self.context
                .artifacts
                .put(&job.id, output, bytes)
                .instrument(stage_span(Stage::Uploading, &tracing::Span::current()))
                .await
                .map_err(|error| {
                    Stop::Failed(Failure::Internal, format!("upload failed: {error}"))
                })?;
            drop(started);
            Ok::<_, Stop>(Rendered {
                artifact,
                total_stages: total,
            })
        };
        self.while_renewing(job, async {
            // Boxed: both are deeply nested; unboxed, the compiler gives up on their layout.
            tokio::try_join!(Box::pin(working), Box::pin(reporting)).map(|(rendered, ())| rendered)
        })
        .await?
    }

    /// Runs `stages` in order on one render thread, holding one render permit until that
    /// work ends (even if the job stops waiting for it), and digests the output there too.
    /// Each stage's index goes to `started` as it begins; once nobody receives them (the job
    /// was cancelled, superseded or timed out), the thread stops before the next stage.
    async fn render(
        &self,
        spec: RenderSpec,
        stages: &[Stage],
        started: tokio::sync::mpsc::UnboundedSender<usize>,
    ) -> Result<(Vec<u8>, String), Stop> {
        let renderer = self.context.renderer.clone();
        let stages = stages.to_vec();
        let job_span = tracing::Span::current();
        // A job still waiting for a permit at shutdown goes back to the queue rather than
        // start drawing in the drain time, which is for the jobs already drawing.
        let permit = tokio::select! {
            permit = self.context.render_permits.clone().acquire_owned() => permit
                .map_err(|_| Stop::Failed(Failure::Internal, "render pool closed".to_owned()))?,
            () = self.shutdown.cancelled() => return Err(Stop::HandBack),
        };
        self.context
            .render_pool
            .run(move || {
                let _permit = permit;
                let mut work = Work::Spec(spec);
                for (index, stage) in stages.into_iter().enumerate() {
                    if started.send(index).is_err() {
                        return Err((Failure::Internal, "the job stopped waiting".to_owned()));
                    }
                    let span = stage_span(stage, &job_span);
                    let _in_stage = span.enter();
                    work = renderer.advance(stage, work).map_err(|error| {
                        span.record("otel.status_code", "ERROR");
                        tracing::info!(%error, "render stage failed");
                        (Failure::Render, error.to_string())
                    })?;
                }
                let Work::Output(bytes) = work else {
                    return Err((
                        Failure::Internal,
                        "internal error: nothing to upload".to_owned(),
                    ));
                };
                let sha256 = sha256_hex(&bytes);
                Ok((bytes, sha256))
            })
            .await
            .map_err(|error| Stop::Failed(Failure::Internal, error.to_string()))?
            .map_err(|(failure, error)| Stop::Failed(failure, error))
    }

    /// Awaits `work` while renewing the lease every lease/3; stops early if the job was
    /// cancelled or taken over.
    async fn while_renewing<T>(
        &self,
        job: &ClaimedJob,
        work: impl Future<Output = T>,
    ) -> Result<T, Stop> {
        let period = self.context.store.settings().lease / 3;
        let renewals = async {
            loop {
                tokio::time::sleep(period).await;
                match self.context.store.renew(job, &self.name, None).await {
                    Ok(Ownership::Owned) => {}
                    Ok(Ownership::Cancelled) => return Stop::Cancelled,
                    Ok(Ownership::Lost) => return Stop::Superseded,
                    // A blip: keep working; the lease covers a missed renewal or two.
                    Err(error) => tracing::debug!(%error, "lease renewal failed"),
                }
            }
        };
        tokio::select! {
            output = work => Ok(output),
            stop = renewals => Err(stop),
        }
    }

    fn check(&self, ownership: Ownership) -> Result<(), Stop> {
        match ownership {
            Ownership::Owned => Ok(()),
            Ownership::Cancelled => Err(Stop::Cancelled),
            Ownership::Lost => Err(Stop::Superseded),
        }
    }
}
