//! The sidecar's typed configuration: every setting is a flag with an environment fallback,
//! and its doc comment is its `--help` text.

use std::{net::SocketAddr, time::Duration};

use clap::{Parser, ValueEnum};

pub use crate::jobs::connection::{AuthMode, RedisMode};
pub use service_core::config::{Secret, parse_duration};
use service_core::telemetry::LogConfig;

/// Host names accepted on `/mcp` in every configuration: the sidecar's own loopback names.
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// MCP server sidecar: math, echo and render-job tools over MCP Streamable HTTP at `/mcp`,
/// plus `/healthz` and `/readyz` probes.
#[derive(Debug, Clone, Parser)]
#[command(name = "mcp-sidecar", version, about, long_about = None)]
pub struct Config {
    /// What this process does. `server` (default): the MCP endpoint at /mcp, /healthz, /readyz
    /// and /files, plus RENDER_WORKERS render workers. `worker`: render workers only, taking
    /// jobs from the Redis queue and uploading their artifacts, with no HTTP listener at all
    /// (MCP_LISTEN_ADDR and the other MCP_* settings are unused); for a Cloud Run worker pool,
    /// which has no endpoint, next to sidecars that accept jobs with RENDER_WORKERS=0.
    #[arg(long, env = "SIDECAR_ROLE", value_enum, default_value_t = Role::Server)]
    pub role: Role,

    /// Address to listen on, as host:port. Port 0 picks a free port (the bound address is
    /// logged). Keep it on loopback in the sidecar pattern; use 0.0.0.0:PORT only when the
    /// sidecar is deployed as its own service (then also set MCP_BEARER_TOKEN).
    #[arg(long, env = "MCP_LISTEN_ADDR", default_value = "127.0.0.1:3000")]
    pub listen_addr: SocketAddr,

    /// Extra host names accepted on /mcp, comma-separated, as `name` (any port) or `name:port`.
    /// The list governs both the Host header and, when a browser sends one, the Origin header
    /// (its host, with http or https). The loopback names localhost, 127.0.0.1 and ::1 are
    /// always accepted; any other Host or Origin, `Origin: null` and an unparsable Origin are
    /// refused with 403 (DNS-rebinding protection). Requests without Origin (non-browser
    /// clients) are judged by Host alone.
    #[arg(long, env = "MCP_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// MCP session mode: `stateless` (each POST stands alone, JSON responses; survives restarts
    /// and needs no session affinity) or `stateful` (Mcp-Session-Id sessions: plain requests
    /// answered with JSON, SSE streams for progress, tasks and the session's GET stream).
    #[arg(long, env = "MCP_SESSION_MODE", value_enum, default_value_t = SessionMode::Stateless)]
    pub session_mode: SessionMode,

    /// Stateful mode: a session with no request for this long is closed (its id then gets
    /// 404, and the client starts a new one), e.g. `5m`.
    #[arg(long, env = "MCP_SESSION_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub session_idle_timeout: Duration,

    /// Bearer token required on /mcp as `Authorization: Bearer <token>`. Unset: no auth, which
    /// is right for a sidecar reachable only inside its instance. /healthz and /readyz stay open.
    #[arg(long, env = "MCP_BEARER_TOKEN", hide_env_values = true)]
    pub bearer_token: Option<Secret>,

    /// Largest request body accepted on /mcp, in bytes; larger bodies get 413.
    #[arg(long, env = "MCP_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long shutdown waits for in-flight requests and running render jobs after SIGTERM,
    /// e.g. `8s` (Cloud Run allows 10s in all). Jobs not done by then go back to the queue.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "8s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Redis holding the render jobs and their queue, e.g. `redis://10.0.0.3:6379`,
    /// `redis://:password@host:6379/0`, or `rediss://host:6378` for TLS (Memorystore's
    /// in-transit encryption). The sidecar starts without it and reports not-ready on /readyz,
    /// with the reason, until it answers.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: Secret,

    /// PEM file of the CA that signed the Redis server's certificate, for `rediss://` URLs:
    /// Memorystore's server CA (`gcloud redis instances describe NAME --region R
    /// --format='value(serverCaCerts[0].cert)'`). Without it, `rediss://` trusts the system's
    /// root certificates.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,

    /// Redis AUTH password, when it is not in REDIS_URL (e.g. a Secret Manager secret exposed
    /// as this variable). Never logged. Overrides a password in the URL.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<Secret>,

    /// Redis ACL user for AUTH, when it is not in REDIS_URL (default: the `default` user).
    #[arg(long, env = "REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// Prefix of every Redis key this deployment uses; give each deployment sharing a Redis
    /// its own. In cluster mode it becomes the keys' hash tag (`{mcp:}job:…`) unless it
    /// already holds one, so all of a deployment's keys share one slot.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "mcp:")]
    pub redis_key_prefix: String,

    /// `standalone`: one primary (Memorystore for Redis, a local redis-server). `cluster`:
    /// cluster mode (Memorystore for Valkey, Memorystore for Redis Cluster); REDIS_URL then
    /// names any one node or the discovery endpoint, and the client follows MOVED/ASK and
    /// failovers.
    #[arg(long, env = "REDIS_MODE", value_enum, default_value = "standalone")]
    pub redis_mode: RedisMode,

    /// `password`: the password in REDIS_URL or REDIS_PASSWORD, if any. `iam`: Memorystore
    /// IAM authentication, the password being an access token of the service's identity from
    /// Application Default Credentials (the metadata server on Cloud Run; GCE_METADATA_HOST
    /// overrides its address), renewed on every connection as it is refreshed.
    #[arg(long, env = "REDIS_AUTH_MODE", value_enum, default_value = "password")]
    pub redis_auth_mode: AuthMode,

    /// Replicas that must hold a new render job (Redis WAIT) before `start_render` or a
    /// `render` task answers, so a primary failover cannot lose an acknowledged job. 0: don't
    /// wait.
    #[arg(long, env = "REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,

    /// How long a new job waits for REDIS_WAIT_REPLICAS replicas before the call fails (with
    /// a retryable error naming the job), e.g. `1s`.
    #[arg(long, env = "REDIS_WAIT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub redis_wait_timeout: Duration,

    /// Render workers in this sidecar: how many jobs draw at once (default: the number of
    /// CPUs). Each also holds one more job claimed, whose Redis round trips and upload overlap
    /// the drawing. 0 runs none: the sidecar then only accepts and reports jobs.
    #[arg(long, env = "RENDER_WORKERS")]
    pub render_workers: Option<usize>,

    /// Longest time a job's rendering may take (all its CPU stages together), e.g. `60s`.
    #[arg(long, env = "RENDER_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub render_timeout: Duration,

    /// How long a worker may go silent before its job is given to another worker (it renews
    /// every third of this while alive). This is the reclaim delay after a crash.
    #[arg(long, env = "JOB_LEASE", default_value = "15s", value_parser = parse_duration)]
    pub job_lease: Duration,

    /// Deliveries a job may have (the first included) before it fails for good, keeping the
    /// last error. Only crashes and lost leases use up attempts; a render error fails at once.
    #[arg(long, env = "JOB_MAX_ATTEMPTS", default_value_t = 3)]
    pub job_max_attempts: u32,

    /// Most render jobs queued or running at once, across every sidecar on this Redis;
    /// `start_render` beyond it is refused (code `unavailable`) until some have finished.
    /// Bounds Redis memory: each queued job holds its spec (up to 1 MiB for an SVG).
    #[arg(long, env = "MAX_QUEUED_JOBS", default_value_t = 10_000)]
    pub max_queued_jobs: u64,

    /// How long finished job records and idempotency keys are kept in Redis, e.g. `24h`.
    #[arg(long, env = "JOB_TTL", default_value = "24h", value_parser = parse_duration)]
    pub job_ttl: Duration,

    /// How often clients following a render as an MCP task are asked to poll `tasks/get`
    /// (its `pollIntervalMs`), e.g. `500ms`. Clients listening with `subscriptions/listen`
    /// are told of each change as it happens instead.
    #[arg(long, env = "TASK_POLL_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub task_poll_interval: Duration,

    /// Largest PNG (bytes) that a finished render's result also carries inline, as an `image`
    /// block a model can look at; larger ones, and SVG, come as a link only. 0: never inline.
    #[arg(long, env = "TASK_INLINE_IMAGE_MAX_BYTES", default_value_t = 256 * 1024)]
    pub task_inline_image_max_bytes: u64,

    /// Where artifacts go: `local` (files under ARTIFACT_DIR, served at /files) or `gcs`
    /// (the GCS_BUCKET bucket, V4 signed URLs).
    #[arg(long, env = "ARTIFACT_STORE", value_enum, default_value_t = ArtifactStoreKind::Local)]
    pub artifact_store: ArtifactStoreKind,

    /// Directory of the local artifact store. Each artifact is deleted JOB_TTL + SIGNED_URL_TTL
    /// (and a tenth, at most a minute) after it was written, when no job record lists it and
    /// no URL to it works; other files in the directory are left alone.
    #[arg(long, env = "ARTIFACT_DIR", default_value = "./artifacts")]
    pub artifact_dir: std::path::PathBuf,

    /// Base of the download URLs the local store hands out, e.g. `https://agent.example.com`
    /// when the agent proxies /files. Default: http:// and the bound listen address.
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,

    /// Key for signing local download URLs (any string, at least 16 bytes). Sidecars sharing an
    /// ARTIFACT_DIR must share it. Unset: a random key per process, so URLs die with it.
    #[arg(long, env = "ARTIFACT_SIGNING_KEY", hide_env_values = true)]
    pub artifact_signing_key: Option<Secret>,

    /// Cloud Storage bucket of the gcs artifact store.
    #[arg(long, env = "GCS_BUCKET")]
    pub gcs_bucket: Option<String>,

    /// Cloud Storage endpoint override, e.g. `http://127.0.0.1:9023` for an emulator (then with
    /// anonymous credentials). Unset: Google's endpoint with Application Default Credentials.
    #[arg(long, env = "GCS_ENDPOINT")]
    pub gcs_endpoint: Option<String>,

    /// Attempts per artifact upload (the first included) before the job fails; transient
    /// errors (408, 429, 5xx, network) are retried with exponential backoff.
    #[arg(long, env = "ARTIFACT_UPLOAD_ATTEMPTS", default_value_t = 5)]
    pub artifact_upload_attempts: u32,

    /// How long download URLs stay valid, e.g. `1h` (at most 7 days for gcs).
    #[arg(long, env = "SIGNED_URL_TTL", default_value = "1h", value_parser = parse_duration)]
    pub signed_url_ttl: Duration,

    #[command(flatten)]
    pub log: LogConfig,

    /// Whether to keep the `render.queue.depth` gauge up to date (one XLEN every few
    /// seconds); set by `main` when metrics are exported, not a command-line setting.
    #[arg(skip)]
    pub report_queue_depth: bool,
}

impl Config {
    /// Every Host value accepted on /mcp: the loopback names plus the configured extras.
    pub fn allowed_hosts(&self) -> Vec<String> {
        LOOPBACK_HOSTS
            .iter()
            .map(|host| (*host).to_owned())
            .chain(
                self.allowed_hosts
                    .iter()
                    .map(|host| host.trim().to_owned())
                    .filter(|host| !host.is_empty()),
            )
            .collect()
    }

    /// Every Origin accepted on /mcp, as rmcp's allow-list entries: `http` and `https` on
    /// each allowed host, with the same port rule as the Host check (a bare `name` allows any
    /// port, `name:port` only that one). `null` is not among them, so `Origin: null` (sandboxed
    /// frames, `file:` pages) is refused.
    pub fn allowed_origins(&self) -> Vec<String> {
        self.allowed_hosts()
            .iter()
            .flat_map(|host| origin_patterns(host))
            .collect()
    }

    /// Render workers to run: the configured number, or one per CPU.
    pub fn render_workers(&self) -> usize {
        self.render_workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Checks settings that depend on each other; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.artifact_store == ArtifactStoreKind::Gcs {
            if self.gcs_bucket.as_deref().is_none_or(str::is_empty) {
                return Err("ARTIFACT_STORE=gcs needs GCS_BUCKET".into());
            }
            if self.signed_url_ttl > Duration::from_secs(7 * 24 * 3600) {
                return Err("SIGNED_URL_TTL may be at most 7 days with gcs (V4 signing)".into());
            }
        }
        if let Some(key) = &self.artifact_signing_key
            && key.expose().len() < 16
        {
            return Err("ARTIFACT_SIGNING_KEY must be at least 16 bytes".into());
        }
        if self.role == Role::Worker && self.render_workers() == 0 {
            return Err(
                "SIDECAR_ROLE=worker needs RENDER_WORKERS of at least 1 (or unset, for \
                        one per CPU): a worker with no render workers would do nothing"
                    .into(),
            );
        }
        if self.session_idle_timeout < Duration::from_secs(1) {
            return Err("MCP_SESSION_IDLE_TIMEOUT must be at least 1s".into());
        }
        if self.max_queued_jobs == 0 {
            return Err("MAX_QUEUED_JOBS must be at least 1".into());
        }
        if self.job_max_attempts == 0 {
            return Err("JOB_MAX_ATTEMPTS must be at least 1".into());
        }
        if self.task_poll_interval < Duration::from_millis(10) {
            return Err("TASK_POLL_INTERVAL must be at least 10ms".into());
        }
        if self.job_lease < Duration::from_millis(300) {
            return Err("JOB_LEASE must be at least 300ms".into());
        }
        if self.redis_auth_mode == AuthMode::Iam
            && (self.redis_password.is_some() || url_has_password(self.redis_url.expose()))
        {
            return Err(
                "REDIS_AUTH_MODE=iam takes the password from the service's identity (an IAM \
                 access token); unset REDIS_PASSWORD and remove the password from REDIS_URL"
                    .into(),
            );
        }
        if self.redis_wait_replicas > 0 && self.redis_wait_timeout.is_zero() {
            return Err(
                "REDIS_WAIT_TIMEOUT must be more than 0 when REDIS_WAIT_REPLICAS is set \
                 (WAIT with 0 would block until the replicas answer, however long)"
                    .into(),
            );
        }
        if self.redis_ca_file.is_some() && !self.redis_url.expose().starts_with("rediss://") {
            return Err(
                "REDIS_CA_FILE is set but REDIS_URL is not a rediss:// (TLS) URL; use rediss:// \
                 for a server with in-transit encryption, or unset REDIS_CA_FILE"
                    .into(),
            );
        }
        Ok(())
    }

    /// A configuration with every default, listening on `listen_addr`. For tests and embedders.
    pub fn with_listen_addr(listen_addr: SocketAddr) -> Self {
        // Parsing an empty command line cannot fail: every setting has a default.
        let mut config = Self::parse_from(["mcp-sidecar"]);
        config.listen_addr = listen_addr;
        config
    }
}

/// The origins an allowed host stands for, e.g. `example.com` → `http://example.com:*` and
/// `https://example.com:*`; `example.com:8443` → that port only; `::1` → `http://[::1]:*`, ….
fn origin_patterns(host: &str) -> [String; 2] {
    // A bare IPv6 address goes in brackets in a URL, and then cannot carry a port.
    let authority = if host.matches(':').count() > 1 && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']'));
    let any_port = if has_port { "" } else { ":*" };
    ["http", "https"].map(|scheme| format!("{scheme}://{authority}{any_port}"))
}

/// Whether a Redis URL carries a password (`redis://:secret@host`, `redis://user:secret@host`).
fn url_has_password(url: &str) -> bool {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .is_some_and(|(credentials, _)| {
            credentials
                .split_once(':')
                .is_some_and(|(_, password)| !password.is_empty())
        })
}

/// What a sidecar process does (`SIDECAR_ROLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The MCP server (/mcp, probes, /files) plus RENDER_WORKERS render workers.
    Server,
    /// Render workers only, no HTTP listener: for a Cloud Run worker pool.
    Worker,
}

/// Which artifact store holds finished renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArtifactStoreKind {
    /// Files under ARTIFACT_DIR, served by the sidecar at /files/{job_id}.
    Local,
    /// A Cloud Storage bucket (GCS_BUCKET), with V4 signed URLs.
    Gcs,
}

/// How the MCP endpoint keeps (or does not keep) per-client state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SessionMode {
    /// No sessions: every request is answered on its own, as a JSON response.
    Stateless,
    /// Sessions identified by `Mcp-Session-Id`, responses streamed as SSE.
    Stateful,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::parse_from(["mcp-sidecar"]);
        assert_eq!(config.listen_addr, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(config.session_mode, SessionMode::Stateless);
        assert!(config.bearer_token.is_none());
        assert_eq!(config.allowed_hosts(), LOOPBACK_HOSTS);
    }

    #[test]
    fn allowed_origins_follow_the_allowed_hosts_with_their_port_rules() {
        let config = Config::parse_from([
            "mcp-sidecar",
            "--allowed-hosts",
            "sidecar.run.app, app.example.com:8443,fd00::1,[fd00::2]:9000",
        ]);
        assert_eq!(
            config.allowed_origins(),
            [
                "http://localhost:*",
                "https://localhost:*",
                "http://127.0.0.1:*",
                "https://127.0.0.1:*",
                "http://[::1]:*",
                "https://[::1]:*",
                "http://sidecar.run.app:*",
                "https://sidecar.run.app:*",
                "http://app.example.com:8443",
                "https://app.example.com:8443",
                "http://[fd00::1]:*",
                "https://[fd00::1]:*",
                "http://[fd00::2]:9000",
                "https://[fd00::2]:9000",
            ]
        );
    }

    #[test]
    fn a_worker_without_render_workers_is_refused_with_the_reason() {
        let config =
            Config::parse_from(["mcp-sidecar", "--role", "worker", "--render-workers", "0"]);
        let error = config.validate().unwrap_err();
        assert!(
            error.contains("SIDECAR_ROLE=worker") && error.contains("RENDER_WORKERS"),
            "{error}"
        );
        let server = Config::parse_from(["mcp-sidecar", "--render-workers", "0"]);
        assert_eq!(server.role, Role::Server, "server is the default role");
        assert!(server.validate().is_ok(), "a server may run no workers");
    }

    #[test]
    fn a_session_idle_timeout_under_a_second_is_refused() {
        let config = Config::parse_from(["mcp-sidecar", "--session-idle-timeout", "0s"]);
        let error = config.validate().unwrap_err();
        assert!(error.contains("MCP_SESSION_IDLE_TIMEOUT"), "{error}");
        let default = Config::parse_from(["mcp-sidecar"]);
        assert_eq!(default.session_idle_timeout, Duration::from_secs(300));
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let config = Config::parse_from(["mcp-sidecar", "--bearer-token", "hunter2"]);
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
