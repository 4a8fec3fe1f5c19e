//! The MCP conformance suite's tasks-extension fixture tools, served through the sidecar's own
//! task machinery: what `tests/it/conformance_tasks.rs` runs the suite's `tasks-*` scenarios
//! against. Never part of the sidecar's tool list.
//!
//! | tool | kind | what it does |
//! |---|---|---|
//! | `greet` | sync | `Hello, {name}!` |
//! | `slow_compute` | task | sleeps `seconds` (0 allowed), then completes with a small SVG artifact |
//! | `failing_job` | task, required | fails after ~1 s as a tool error (`completed` + `isError`) |
//! | `protocol_error_job` | task | fails as the system's fault (`failed` + `error{code,message}`) |
//! | `confirm_delete` | task | completes at once: the machinery never asks for input (see below) |
//!
//! A task tool's call enqueues a job in the [`JobStore`] whose spec is the fixture
//! (`{"fixture":"slow_compute","seconds":2}`), exactly as `render` enqueues a render spec; the
//! fixture workers here claim jobs with the render workers' store API (read or reclaim, start,
//! renew while working, then succeed or fail); and `tasks/get`, `tasks/cancel` and
//! `tasks/update` are the product's [`RenderTools`] answers over the same Redis records. So a
//! scenario's verdict on a task answer is a verdict on the sidecar's.
//!
//! `confirm_delete` is listed because one `tasks-dispatch-and-envelope` check reaches
//! `tasks/update` through it. The job records have no `input_required` state, so it never
//! parks for elicitation; the scenarios built on that (`tasks-mrtr-input`) do not apply.
//!
//! Served with rmcp's `StreamableHttpService` in the sidecar's default mode (stateless, JSON
//! responses) but *not* behind the sidecar's HTTP edge, which is typed to the sidecar's own
//! handler: the edge's fill-in of a missing `Mcp-Name` on `tasks/*` is therefore not here (the
//! suite always sends one).
//!
//! It takes the sidecar's configuration (same flags and environment variables) and uses the
//! listen address, allowed hosts, Redis, job and task settings, and the `local` artifact store.
//!
//! `cargo run -p mcp-sidecar --example conformance_fixtures` (with `REDIS_URL` set)

use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::Parser;
use mcp_sidecar::{
    artifacts::{ArtifactStore, local::LocalStore},
    config::{ArtifactStoreKind, Config},
    digest::sha256_hex,
    jobs::{
        events::TaskEvents,
        model::{ArtifactRecord, JobId},
        store::{
            ClaimedJob, Delivery, Failure, JobStore, Ownership, Progress, Recorded, StoreError,
        },
    },
    render::spec::OutputKind,
    server::{
        ErrorCode, ToolFailure,
        render::{RenderToolError, RenderTools},
        tasks::ProgressSink,
        tool_error,
    },
};
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams,
        ClientCapabilities, ContentBlock, GetTaskParams, GetTaskResult, Implementation, JsonObject,
        ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
        UpdateTaskParams,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Fixture workers: enough that a long `slow_compute` never holds up the next scenario's job.
const WORKERS: usize = 4;
/// How long an idle worker waits on the queue before looking for stale jobs again.
const POLL: Duration = Duration::from_secs(1);
/// Longest `slow_compute` accepted.
const MAX_SECONDS: f64 = 600.0;
/// How long `failing_job` works before it fails ("after ~1s").
const FAILING_JOB_WORK: Duration = Duration::from_secs(1);

/// A fixture job as stored in its job record's spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "fixture", rename_all = "snake_case")]
enum FixtureJob {
    SlowCompute { seconds: f64 },
    FailingJob,
    ProtocolErrorJob,
    ConfirmDelete { filename: String },
}

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let telemetry = service_core::telemetry::init(&config.log, "conformance-fixtures");
    let served = serve(config).await;
    telemetry.shutdown();
    served
}

async fn serve(config: Config) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    if config.artifact_store != ArtifactStoreKind::Local {
        bail!("the fixture server writes its artifacts to the local store only");
    }
    let shutdown =
        service_core::shutdown::cancel_on_signal().context("installing signal handlers")?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("listening on {}", config.listen_addr))?;
    let addr = listener.local_addr().context("the bound address")?;

    let (redis, store) = mcp_sidecar::job_store(&config)?;
    store.ensure_queue().await.context("creating the queue")?;
    let base_url = config
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let signing_key = config
        .artifact_signing_key
        .as_ref()
        .map(|key| key.expose().as_bytes().to_vec())
        .unwrap_or_else(|| uuid::Uuid::new_v4().as_bytes().repeat(2));
    let artifacts = ArtifactStore::Local(LocalStore::new(
        config.artifact_dir.clone(),
        &base_url,
        signing_key,
    )?);
    let render = RenderTools {
        store: store.clone(),
        artifacts: artifacts.clone(),
        signed_url_ttl: config.signed_url_ttl,
        events: TaskEvents::start(redis, store.events_channel(), shutdown.clone()),
        tasks: mcp_sidecar::task_settings(&config),
    };

    let mut workers = tokio::task::JoinSet::new();
    let instance = uuid::Uuid::new_v4().simple().to_string();
    for index in 0..WORKERS {
        let worker = FixtureWorker::new(
            format!("fixtures-{}-{index}", &instance[..8]),
            store.clone(),
            artifacts.clone(),
            shutdown.child_token(),
        )?;
        workers.spawn(worker.run());
    }

    let server = FixtureServer {
        render: Arc::new(render),
        tools: Arc::new(fixture_tools()),
    };
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(NeverSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_allowed_hosts(config.allowed_hosts())
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_keep_alive(None)
            .with_cancellation_token(shutdown.child_token()),
    );
    let router = axum::Router::new().route_service("/mcp", mcp);
    tracing::info!(addr = %addr, workers = WORKERS, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("serving")?;
    while workers.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

// ---- the MCP handler --------------------------------------------------------------------------

#[derive(Clone)]
struct FixtureServer {
    render: Arc<RenderTools>,
    tools: Arc<Vec<Tool>>,
}

fn fixture_tools() -> Vec<Tool> {
    let schema = |value: Value| match value {
        Value::Object(object) => Arc::new(object),
        _ => Arc::new(JsonObject::new()),
    };
    let no_arguments = || schema(json!({ "type": "object", "properties": {} }));
    vec![
        Tool::new(
            "greet",
            "Sync: answers `Hello, {name}!`.",
            schema(json!({
                "type": "object",
                "properties": { "name": { "type": "string" } },
                "required": ["name"]
            })),
        ),
        Tool::new(
            "slow_compute",
            "Task: works for `seconds` (0 for at once), then completes with a small SVG; \
             cancellable while it works.",
            schema(json!({
                "type": "object",
                "properties": {
                    "seconds": { "type": "number", "minimum": 0, "maximum": MAX_SECONDS },
                    "label": { "type": "string" }
                },
                "required": ["seconds"]
            })),
        ),
        Tool::new(
            "failing_job",
            "Task (required): fails as a tool error after about a second.",
            no_arguments(),
        ),
        Tool::new(
            "protocol_error_job",
            "Task: fails as an internal error (the task ends `failed`).",
            no_arguments(),
        ),
        Tool::new(
            "confirm_delete",
            "Task: would confirm a deletion by elicitation; the job machinery never asks for \
             input, so it completes at once.",
            schema(json!({
                "type": "object",
                "properties": { "filename": { "type": "string" } }
            })),
        ),
    ]
}

/// A job store failure as the render tools report it to a caller.
fn store_failure(error: StoreError) -> CallToolResponse {
    let error = RenderToolError::from(error);
    tool_error(error.failure(), error).into()
}

fn invalid_arguments(message: impl std::fmt::Display) -> Result<CallToolResponse, McpError> {
    Ok(tool_error(ErrorCode::InvalidArguments, message).into())
}

impl ServerHandler for FixtureServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new(
            "mcp-sidecar-conformance-fixtures",
            env!("CARGO_PKG_VERSION"),
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.to_vec()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|tool| tool.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let arguments = request.arguments.unwrap_or_default();
        let job = match request.name.as_ref() {
            "greet" => {
                let Some(name) = arguments.get("name").and_then(Value::as_str) else {
                    return invalid_arguments("name must be a string");
                };
                return Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                    "Hello, {name}!"
                ))])
                .into());
            }
            "slow_compute" => match arguments.get("seconds").and_then(Value::as_f64) {
                Some(seconds) if (0.0..=MAX_SECONDS).contains(&seconds) => {
                    FixtureJob::SlowCompute { seconds }
                }
                _ => {
                    return invalid_arguments(format!(
                        "seconds must be a number from 0 to {MAX_SECONDS}"
                    ));
                }
            },
            "failing_job" => FixtureJob::FailingJob,
            "protocol_error_job" => FixtureJob::ProtocolErrorJob,
            "confirm_delete" => FixtureJob::ConfirmDelete {
                filename: arguments
                    .get("filename")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            },
            unknown => {
                return Err(McpError::invalid_params(
                    format!("unknown tool `{unknown}`"),
                    None,
                ));
            }
        };
        let as_task = context
            .client_capabilities()
            .is_some_and(|capabilities| capabilities.supports_tasks());
        // The extension: a server that cannot answer a non-declaring client without a
        // CreateTaskResult says which capability it needs.
        if matches!(job, FixtureJob::FailingJob) && !as_task {
            return Err(McpError::missing_required_client_capability(
                ClientCapabilities::builder().enable_tasks().build(),
            ));
        }
        self.start(&job, as_task, &context).await
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let task = self.render.get_task(&request.task_id).await?;
        Ok(GetTaskResult::new(task))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.render.cancel_task(&request.task_id).await
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.render.update_task(&request.task_id).await
    }
}

impl FixtureServer {
    /// Enqueues the fixture's job and answers as `render` does: a task for a declaring
    /// client, else the result, waited for.
    async fn start(
        &self,
        job: &FixtureJob,
        as_task: bool,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let spec = serde_json::to_string(job)
            .map_err(|error| McpError::internal_error(error.to_string(), None))?;
        let id = match self.render.store.enqueue(&spec, 1, None, "").await {
            Ok(enqueued) => enqueued.id,
            Err(error) => return Ok(store_failure(error)),
        };
        if as_task {
            return match self.render.task_created(&id).await {
                Ok(task) => Ok(CallToolResponse::Task(task)),
                Err(error) => Ok(store_failure(error)),
            };
        }
        let progress = context.meta.get_progress_token().map(|token| ProgressSink {
            peer: context.peer.clone(),
            token,
        });
        Ok(self.render.wait_for_result(&id, progress).await.into())
    }
}

// ---- the fixture workers ----------------------------------------------------------------------

/// What one worker step did.
#[derive(Debug)]
enum Outcome {
    Idle,
    Skipped,
    Recorded(Recorded),
    /// The job was cancelled, or taken over, while it worked.
    Stopped(Ownership),
}

/// A worker that runs fixture jobs, with the store calls the render workers make.
struct FixtureWorker {
    name: String,
    store: JobStore,
    artifacts: ArtifactStore,
    connection: mcp_sidecar::jobs::connection::Connection,
    shutdown: CancellationToken,
}

impl FixtureWorker {
    fn new(
        name: String,
        store: JobStore,
        artifacts: ArtifactStore,
        shutdown: CancellationToken,
    ) -> Result<Self, StoreError> {
        let connection = store.worker_connection(POLL)?;
        Ok(Self {
            name,
            store,
            artifacts,
            connection,
            shutdown,
        })
    }

    /// Runs until shutdown; a job in hand then is left to its lease (another worker, or this
    /// one restarted, takes it over).
    async fn run(mut self) {
        let shutdown = self.shutdown.clone();
        while !shutdown.is_cancelled() {
            let step = tokio::select! {
                step = self.try_run_one() => step,
                () = shutdown.cancelled() => break,
            };
            match step {
                Ok(Outcome::Idle | Outcome::Skipped) => {}
                Ok(Outcome::Recorded(recorded)) => {
                    tracing::debug!(worker = %self.name, ?recorded, "fixture job ended");
                }
                Ok(Outcome::Stopped(ownership)) => {
                    tracing::info!(worker = %self.name, ?ownership, "fixture job stopped while working");
                }
                Err(error) => {
                    tracing::warn!(worker = %self.name, %error, "fixture worker cannot reach the job store");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let _ = self.store.retire_consumer(&self.name).await;
    }

    /// Takes one job (a stale one first, else a new one, waiting up to [`POLL`]) and runs it.
    async fn try_run_one(&mut self) -> Result<Outcome, StoreError> {
        let entry = match self
            .store
            .reclaim_stale(&mut self.connection, &self.name)
            .await?
        {
            Some(entry) => Some(entry),
            None => {
                self.store
                    .read_new(&mut self.connection, &self.name, POLL)
                    .await?
            }
        };
        let Some(entry) = entry else {
            return Ok(Outcome::Idle);
        };
        match self.store.start(&entry, &self.name).await? {
            Delivery::Run(job) => self.run_job(&job).await,
            Delivery::Skipped | Delivery::Exhausted { .. } => Ok(Outcome::Skipped),
        }
    }

    async fn run_job(&self, job: &ClaimedJob) -> Result<Outcome, StoreError> {
        let fixture: FixtureJob = match serde_json::from_str(&job.spec_json) {
            Ok(fixture) => fixture,
            Err(error) => {
                let message = format!("not a fixture job: {error}");
                return self.finish_failed(job, Failure::Internal, &message).await;
            }
        };
        match fixture {
            FixtureJob::SlowCompute { seconds } => {
                let work = Duration::from_secs_f64(seconds);
                let message = format!("[1/1] computing for {seconds}s");
                if let Err(stopped) = self.work(job, &message, work).await? {
                    return Ok(Outcome::Stopped(stopped));
                }
                let svg = format!(
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"240\" height=\"32\">\
                     <text x=\"8\" y=\"22\">slow_compute: {seconds}s</text></svg>"
                );
                self.finish_succeeded(job, svg).await
            }
            FixtureJob::FailingJob => {
                if let Err(stopped) = self
                    .work(job, "[1/1] about to fail", FAILING_JOB_WORK)
                    .await?
                {
                    return Ok(Outcome::Stopped(stopped));
                }
                self.finish_failed(
                    job,
                    Failure::Render,
                    "failing_job always fails: this is its tool execution error",
                )
                .await
            }
            FixtureJob::ProtocolErrorJob => {
                self.finish_failed(
                    job,
                    Failure::Internal,
                    "protocol_error_job always fails: this is its internal error",
                )
                .await
            }
            FixtureJob::ConfirmDelete { filename } => {
                let svg = format!(
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"240\" height=\"32\">\
                     <text x=\"8\" y=\"22\">confirm_delete: {} bytes of name</text></svg>",
                    filename.len()
                );
                self.finish_succeeded(job, svg).await
            }
        }
    }

    /// Reports the stage, then works for `duration` while renewing the lease every lease/3,
    /// as a render worker does; `Err` when a renewal says the job was cancelled or taken over.
    async fn work(
        &self,
        job: &ClaimedJob,
        message: &str,
        duration: Duration,
    ) -> Result<Result<(), Ownership>, StoreError> {
        let progress = Progress { stage: 1, message };
        match self.store.renew(job, &self.name, Some(progress)).await? {
            Ownership::Owned => {}
            other => return Ok(Err(other)),
        }
        let period = self.store.settings().lease / 3;
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Ok(()));
            }
            tokio::time::sleep((deadline - now).min(period)).await;
            if tokio::time::Instant::now() >= deadline {
                return Ok(Ok(()));
            }
            match self.store.renew(job, &self.name, None).await? {
                Ownership::Owned => {}
                other => return Ok(Err(other)),
            }
        }
    }

    async fn finish_succeeded(&self, job: &ClaimedJob, svg: String) -> Result<Outcome, StoreError> {
        let bytes = bytes::Bytes::from(svg);
        let artifact = ArtifactRecord {
            key: self.artifacts.key(&job.id, OutputKind::Svg),
            content_type: OutputKind::Svg.content_type().to_owned(),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        };
        if let Err(error) = self.artifacts.put(&job.id, OutputKind::Svg, bytes).await {
            let message = format!("upload failed: {error}");
            return self.finish_failed(job, Failure::Internal, &message).await;
        }
        let recorded = self.store.succeed(job, "[1/1] done", &artifact).await?;
        log_finished(&job.id, recorded, "succeeded");
        Ok(Outcome::Recorded(recorded))
    }

    async fn finish_failed(
        &self,
        job: &ClaimedJob,
        failure: Failure,
        error: &str,
    ) -> Result<Outcome, StoreError> {
        let recorded = self.store.fail(job, failure, error).await?;
        log_finished(&job.id, recorded, failure.as_str());
        Ok(Outcome::Recorded(recorded))
    }
}

fn log_finished(id: &JobId, recorded: Recorded, how: &str) {
    tracing::info!(job_id = %id, ?recorded, how, "fixture job finished");
}
