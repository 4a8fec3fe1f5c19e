//! The MCP sidecar as a library: `App::build(config)` binds and wires everything,
//! `run_until_stopped` serves until the shutdown token is cancelled. `main.rs` only parses the
//! configuration and calls these, so tests run exactly the same server on port 0.
//!
//! The same binary has two roles (`SIDECAR_ROLE`): `server`, the MCP endpoint plus render
//! workers, and `worker`, the render workers alone with no listener, for a Cloud Run worker
//! pool. Both meet only through Redis (the job queue) and the artifact store, so any mix of
//! servers and workers on one Redis shares the work.

pub mod artifacts;
pub mod config;
pub mod digest;
pub mod http;
pub mod jobs;
pub mod render;
pub mod server;
pub mod telemetry;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::serve::ListenerExt;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService,
    session::{local::LocalSessionManager, never::NeverSessionManager},
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{
    artifacts::{
        ArtifactError, ArtifactStore,
        gcs::{GcsSettings, GcsStore},
        local::{LocalStore, Swept},
    },
    config::{ArtifactStoreKind, Config, Role, SessionMode},
    http::{FastPath, HttpState, InFlight, McpService},
    jobs::{
        connection::{Redis, RedisSettings},
        events::TaskEvents,
        pool::RenderPool,
        store::{JobStore, StoreError, StoreSettings},
        worker::{RenderWorker, WorkerContext},
    },
    render::Renderer,
    server::{
        CatalogError, McpServer, Shared, ToolCatalog, render::RenderTools, sessions::SessionPeers,
        tasks::TaskSettings,
    },
};

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("job store: {0}")]
    Store(#[from] StoreError),
    #[error("Redis: {0}")]
    Redis(#[from] jobs::connection::ConnectionError),
    #[error("artifact store: {0}")]
    Artifacts(#[from] ArtifactError),
    #[error("cannot start the render threads: {0}")]
    RenderThreads(std::io::Error),
}

/// Stack size of every runtime and render thread. The SVG guard keeps usvg's recursion
/// shallow; this is margin on top, not the protection itself.
pub const THREAD_STACK_BYTES: usize = 8 * 1024 * 1024;

/// Bound on each Redis operation a tool call waits for.
const STORE_OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// Time kept back from the shutdown grace for handing jobs back and exiting.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);

/// A sidecar that is bound and ready to serve (or, in the worker role, ready to work).
pub struct App {
    /// The HTTP side; `None` in the worker role, which listens on nothing.
    server: Option<HttpServer>,
    workers: Vec<RenderWorker>,
    store: JobStore,
    report_queue_depth: bool,
    /// The local store and how long its artifacts are kept; `None` with gcs (the bucket's
    /// lifecycle rule deletes them).
    artifact_sweep: Option<(LocalStore, Duration)>,
    shutdown: CancellationToken,
    shutdown_grace: Duration,
}

/// The bound listener and what serves it: /mcp, the probes and /files.
struct HttpServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: axum::Router,
    /// rmcp's token: cancelled after the shutdown token, once the HTTP server has finished.
    sessions: CancellationToken,
    in_flight: InFlight,
}

/// How often the `render.queue.depth` gauge is refreshed (when metrics are exported).
const QUEUE_DEPTH_INTERVAL: Duration = Duration::from_secs(5);
/// Most added to how long a local artifact is kept (`JOB_TTL` + `SIGNED_URL_TTL`, plus a
/// tenth of that up to this): the file is written a moment before its job is recorded as
/// finished, and clocks move in steps.
const SWEEP_MARGIN: Duration = Duration::from_secs(60);
/// Longest pause between two sweeps of the local artifact directory.
const SWEEP_AT_MOST_EVERY: Duration = Duration::from_secs(600);

/// The Redis client and the job store a configuration names. Contacts nothing yet: the store
/// connects on first use (and again after failures).
pub fn job_store(config: &Config) -> Result<(Redis, JobStore), StartupError> {
    let redis = Redis::open(RedisSettings {
        url: config.redis_url.expose(),
        ca_file: config.redis_ca_file.as_deref(),
        username: config.redis_username.as_deref(),
        password: config.redis_password.as_ref().map(config::Secret::expose),
        mode: config.redis_mode,
        auth: config.redis_auth_mode,
    })?;
    let store = JobStore::with_redis(
        redis.clone(),
        StoreSettings {
            key_prefix: jobs::connection::key_prefix(&config.redis_key_prefix, config.redis_mode),
            finished_ttl: config.job_ttl,
            lease: config.job_lease,
            max_attempts: config.job_max_attempts,
            max_queued: config.max_queued_jobs,
            operation_timeout: STORE_OPERATION_TIMEOUT,
            wait_replicas: config.redis_wait_replicas,
            wait_timeout: config.redis_wait_timeout,
        },
    )?;
    Ok((redis, store))
}

/// How the task view is tuned, from a configuration.
pub fn task_settings(config: &Config) -> TaskSettings {
    TaskSettings {
        poll_interval: config.task_poll_interval,
        inline_image_max_bytes: config.task_inline_image_max_bytes,
        render_timeout: config.render_timeout,
    }
}

impl App {
    /// Binds the listener (in the server role) and builds everything. Serving and the render
    /// workers start with [`App::run_until_stopped`]. Redis need not be up yet.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, StartupError> {
        config.validate().map_err(StartupError::Config)?;
        let listener = match config.role {
            Role::Server => Some(bind(config.listen_addr).await?),
            Role::Worker => None,
        };
        // A worker never hands out download URLs (the server answering `get_render_result`
        // does), so its local store's URL base is only a placeholder.
        let local_addr = listener
            .as_ref()
            .map_or(config.listen_addr, |(_, addr)| *addr);

        let (redis, store) = job_store(&config)?;
        if let Err(error) = store.ensure_queue().await {
            // Not fatal: workers create the queue when Redis comes up.
            tracing::warn!(
                %error,
                "Redis is not reachable yet; render workers retry, and /readyz (server role) \
                 reports 503, until it is"
            );
        }
        let artifacts = artifact_store(&config, local_addr).await?;
        // An artifact outlives every record that lists it (JOB_TTL after the job finished)
        // and every URL signed while one did (SIGNED_URL_TTL more).
        let artifact_sweep = match &artifacts {
            ArtifactStore::Local(local) => {
                let listed = config.job_ttl.saturating_add(config.signed_url_ttl);
                Some((
                    local.clone(),
                    listed.saturating_add((listed / 10).min(SWEEP_MARGIN)),
                ))
            }
            ArtifactStore::Gcs(_) => None,
        };

        let server = match listener {
            Some((listener, local_addr)) => Some(HttpServer::new(
                &config,
                (listener, local_addr),
                redis,
                &store,
                &artifacts,
                &shutdown,
            )?),
            None => None,
        };

        let worker_count = config.render_workers();
        let context = WorkerContext {
            store: store.clone(),
            artifacts,
            renderer: Arc::new(Renderer::new()),
            render_permits: Arc::new(Semaphore::new(worker_count.max(1))),
            render_pool: Arc::new(
                RenderPool::new(worker_count, THREAD_STACK_BYTES)
                    .map_err(StartupError::RenderThreads)?,
            ),
            render_timeout: config.render_timeout,
            drain: config.shutdown_grace.saturating_sub(SHUTDOWN_MARGIN),
        };
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let workers = (0..worker_count * jobs::worker::LOOPS_PER_PERMIT)
            .map(|index| {
                RenderWorker::new(
                    format!("{}-{index}", &instance[..12]),
                    context.clone(),
                    shutdown.child_token(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Self {
            server,
            workers,
            store,
            report_queue_depth: config.report_queue_depth,
            artifact_sweep,
            shutdown,
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// The address actually bound (useful with port 0); `None` in the worker role.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|server| server.local_addr)
    }

    /// Serves and runs the render workers until the shutdown token is cancelled, then lets
    /// in-flight requests and jobs finish (jobs are handed back to the queue if they cannot)
    /// for up to the configured grace period.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let worker_count = self.workers.len() / jobs::worker::LOOPS_PER_PERMIT;
        let mut workers = tokio::task::JoinSet::new();
        for worker in self.workers {
            workers.spawn(worker.run());
        }
        if self.report_queue_depth {
            workers.spawn(report_queue_depth(
                self.store.clone(),
                self.shutdown.child_token(),
            ));
        }
        if let Some((local, keep)) = self.artifact_sweep {
            workers.spawn(sweep_artifacts(local, keep, self.shutdown.child_token()));
        }
        let (shutdown, grace) = (self.shutdown.clone(), self.shutdown_grace);
        let served = match self.server {
            Some(server) => {
                tracing::info!(addr = %server.local_addr, render_workers = worker_count, "listening");
                futures::future::Either::Left(server.serve(shutdown.clone(), grace))
            }
            None => {
                tracing::info!(render_workers = worker_count, "render worker started");
                futures::future::Either::Right(std::future::ready(Ok(())))
            }
        };
        let everything = async move {
            let served = served.await;
            // SIGTERM reaches the workers through their child tokens: each finishes or hands
            // back its job (within the grace) and then returns.
            while workers.join_next().await.is_some() {}
            served
        };
        service_core::shutdown::within_grace(&shutdown, grace, "in-flight work", everything).await
    }
}

/// Binds `addr`, returning the listener and the address actually bound.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| StartupError::Bind { addr, source })?;
    Ok((listener, local_addr))
}

impl HttpServer {
    /// The MCP tools, the probes and /files over the bound listener.
    fn new(
        config: &Config,
        (listener, local_addr): (TcpListener, SocketAddr),
        redis: Redis,
        store: &JobStore,
        artifacts: &ArtifactStore,
        shutdown: &CancellationToken,
    ) -> Result<Self, StartupError> {
        let events = TaskEvents::start(redis, store.events_channel(), shutdown.clone());
        let shared = Arc::new(Shared {
            catalog: ToolCatalog::new()?,
            render: RenderTools {
                store: store.clone(),
                artifacts: artifacts.clone(),
                signed_url_ttl: config.signed_url_ttl,
                events,
                tasks: task_settings(config),
            },
        });
        // Not a child of `shutdown`: rmcp ends its sessions (and any tool call still in one)
        // when this is cancelled, which `serve` does once every request read before SIGTERM
        // has been answered.
        let sessions = CancellationToken::new();
        let in_flight = InFlight::default();
        let render = shared.render.clone();
        let mcp = mcp_service(config, shared, sessions.clone());
        let state = Arc::new(HttpState {
            mcp,
            body_limits: service_core::body::BodyLimits::new(config.max_body_bytes),
            bearer_token_digest: config
                .bearer_token
                .as_ref()
                .map(|token| http::token_digest(token.expose())),
            store: store.clone(),
            artifacts: artifacts.clone(),
            render,
            in_flight: in_flight.clone(),
            shutdown: shutdown.clone(),
        });
        Ok(Self {
            listener,
            local_addr,
            router: http::router(state),
            sessions,
            in_flight,
        })
    }

    /// Serves until the shutdown token is cancelled, then until every request read before it
    /// has been answered.
    async fn serve(self, shutdown: CancellationToken, grace: Duration) -> std::io::Result<()> {
        let listener = self.listener.tap_io(|stream| {
            // Small JSON-RPC replies must not wait for Nagle's algorithm.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let (sessions, in_flight) = (self.sessions, self.in_flight);
        // rmcp's token ends its sessions and answers any request still waiting for its handler
        // with a 500, so it is cancelled only once the HTTP server has finished: every
        // connection closed, so every request read before SIGTERM (or racing it on a kept-alive
        // connection) has had its answer. The server stops accepting at SIGTERM and ends the
        // sessions' GET streams itself (`http::mcp`); should a request still be
        // running when the grace is nearly over, its session is closed then.
        let answer_in_flight = grace.saturating_sub(SHUTDOWN_MARGIN);
        tokio::spawn({
            let (shutdown, sessions) = (shutdown.clone(), sessions.clone());
            async move {
                shutdown.cancelled().await;
                tokio::select! {
                    () = tokio::time::sleep(answer_in_flight) => {
                        tracing::warn!(
                            in_flight = in_flight.count(),
                            "MCP requests still unanswered; closing their sessions"
                        );
                        sessions.cancel();
                    }
                    () = sessions.cancelled() => {}
                }
            }
        });
        let served = axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        sessions.cancel();
        served
    }
}

/// Keeps the `render.queue.depth` gauge current with one XLEN every few seconds.
async fn report_queue_depth(store: JobStore, shutdown: CancellationToken) {
    loop {
        if let Ok(depth) = store.queue_depth().await {
            telemetry::METRICS.set_queue_depth(depth);
        }
        tokio::select! {
            () = tokio::time::sleep(QUEUE_DEPTH_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Deletes the local store's expired artifacts at start and then every tenth of `keep` (at
/// least every second, at most every 10 minutes), so `ARTIFACT_DIR` holds what the job
/// records can still list rather than every render ever made.
async fn sweep_artifacts(store: LocalStore, keep: Duration, shutdown: CancellationToken) {
    let every = (keep / 10).clamp(Duration::from_secs(1), SWEEP_AT_MOST_EVERY);
    loop {
        let sweeping = store.clone();
        let swept =
            tokio::task::spawn_blocking(move || sweeping.sweep(keep, std::time::SystemTime::now()))
                .await;
        match swept {
            Ok(Ok(swept)) if swept == Swept::default() => {}
            Ok(Ok(Swept {
                artifacts,
                leftovers,
                failed,
            })) => tracing::info!(
                artifacts,
                leftovers,
                failed,
                "deleted expired artifacts from ARTIFACT_DIR"
            ),
            Ok(Err(error)) => tracing::warn!(%error, "cannot sweep ARTIFACT_DIR"),
            Err(error) => tracing::warn!(%error, "the ARTIFACT_DIR sweep stopped"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn artifact_store(
    config: &Config,
    local_addr: SocketAddr,
) -> Result<ArtifactStore, StartupError> {
    match config.artifact_store {
        ArtifactStoreKind::Local => {
            let base = config
                .public_base_url
                .clone()
                .unwrap_or_else(|| format!("http://{local_addr}"));
            let key = match &config.artifact_signing_key {
                Some(key) => key.expose().as_bytes().to_vec(),
                None => {
                    tracing::warn!(
                        "ARTIFACT_SIGNING_KEY is not set: download URLs are signed with a \
                         random key and stop working when this process ends"
                    );
                    uuid::Uuid::new_v4().as_bytes().repeat(2)
                }
            };
            Ok(ArtifactStore::Local(LocalStore::new(
                config.artifact_dir.clone(),
                &base,
                key,
            )?))
        }
        ArtifactStoreKind::Gcs => Ok(ArtifactStore::Gcs(Box::new(
            GcsStore::new(&GcsSettings {
                bucket: config.gcs_bucket.clone().unwrap_or_default(),
                endpoint: config.gcs_endpoint.clone(),
                upload_attempts: config.artifact_upload_attempts,
                upload_timeout: config.render_timeout,
            })
            .await?,
        ))),
    }
}

fn mcp_service(config: &Config, shared: Arc<Shared>, shutdown: CancellationToken) -> McpService {
    let base = StreamableHttpServerConfig::default()
        .with_allowed_hosts(config.allowed_hosts())
        // The MCP transport spec requires Origin validation (DNS rebinding): a present Origin
        // must name an allowed host; an absent one (non-browser clients) passes.
        .with_allowed_origins(config.allowed_origins())
        .enforce_origin_validation()
        .with_cancellation_token(shutdown.clone())
        // Our edge already enforces the limit; this only keeps rmcp from disagreeing.
        .with_max_request_body_bytes(config.max_body_bytes);
    let handler = McpServer::new(shared.clone());
    match config.session_mode {
        SessionMode::Stateless => McpService::Stateless(
            StreamableHttpService::new(
                move || Ok(McpServer::new(shared.clone())),
                Arc::new(NeverSessionManager::default()),
                base.with_legacy_session_mode(false)
                    .with_json_response(true)
                    .with_sse_keep_alive(None),
            ),
            Arc::new(FastPath::new(
                handler,
                &config.allowed_hosts(),
                shutdown,
                None,
            )),
        ),
        SessionMode::Stateful => {
            let mut manager = LocalSessionManager::default();
            manager.session_config.keep_alive = Some(config.session_idle_timeout);
            let manager = Arc::new(manager);
            let sessions = Arc::new(SessionPeers::new(manager.clone()));
            let with_sessions = sessions.clone();
            McpService::Stateful(
                StreamableHttpService::new(
                    move || Ok(McpServer::new(shared.clone()).with_sessions(with_sessions.clone())),
                    manager,
                    base.with_legacy_session_mode(true),
                ),
                Arc::new(FastPath::new(
                    handler,
                    &config.allowed_hosts(),
                    shutdown,
                    Some(sessions),
                )),
            )
        }
    }
}
