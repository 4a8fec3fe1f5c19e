//! What the sidecar's integration tests share: starting the real app on port 0 (in-process or
//! as the real binary), MCP clients, and where the external test tools live.
#![allow(dead_code)] // each test binary uses its own subset
#![allow(clippy::unwrap_used)] // test set-up: a failure should panic loudly

pub mod cluster;
pub mod jobs;
pub mod memory;

pub use test_support::{redis_server, temp_dir};

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use mcp_sidecar::{App, config::Config};
use redis_server::RedisServer;
use rmcp::{
    RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ClientConfig},
    service::RunningService,
    transport::StreamableHttpClientTransport,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A sidecar served in-process on a free loopback port, with its own redis-server and
/// artifact directory; all stopped and removed when dropped.
pub struct TestSidecar {
    pub addr: SocketAddr,
    pub redis: std::sync::Arc<RedisServer>,
    pub artifact_dir: PathBuf,
    /// The Redis key prefix it uses (give it to another sidecar to share its jobs).
    pub key_prefix: String,
    shutdown: CancellationToken,
}

impl TestSidecar {
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestSidecar {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.artifact_dir);
    }
}

/// The signing key every test sidecar uses, so sidecars sharing a directory agree.
pub const TEST_SIGNING_KEY: &str = "test-signing-key-0123456789";

/// Test defaults on top of the sidecar's own: its Redis, a fresh artifact directory, a known
/// signing key, two workers and a short lease.
pub fn test_config(redis: &RedisServer, artifact_dir: &std::path::Path) -> Config {
    let mut config = Config::with_listen_addr("127.0.0.1:0".parse().unwrap());
    config.redis_url = redis.url().parse().unwrap();
    config.redis_key_prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    config.artifact_dir = artifact_dir.to_path_buf();
    config.artifact_signing_key = Some(TEST_SIGNING_KEY.parse().unwrap());
    config.render_workers = Some(2);
    config.job_lease = Duration::from_secs(2);
    config
}

/// Starts the real app on 127.0.0.1:0 with its own redis-server and [`test_config`],
/// adjusted by `configure`.
pub async fn spawn_sidecar(configure: impl FnOnce(&mut Config)) -> TestSidecar {
    let redis = std::sync::Arc::new(RedisServer::start());
    spawn_sidecar_on(redis, configure).await
}

/// Like [`spawn_sidecar`], on an existing redis-server.
pub async fn spawn_sidecar_on(
    redis: std::sync::Arc<RedisServer>,
    configure: impl FnOnce(&mut Config),
) -> TestSidecar {
    let artifact_dir = temp_dir("artifacts");
    let mut config = test_config(&redis, &artifact_dir);
    configure(&mut config);
    let artifact_dir = config.artifact_dir.clone();
    let key_prefix = config.redis_key_prefix.clone();
    let shutdown = CancellationToken::new();
    let app = App::build(config, shutdown.clone())
        .await
        .expect("sidecar builds");
    let addr = app.local_addr().expect("a server-role sidecar listens");
    tokio::spawn(app.run_until_stopped());
    TestSidecar {
        addr,
        redis,
        artifact_dir,
        key_prefix,
        shutdown,
    }
}

pub type McpClient = RunningService<RoleClient, ClientConfig>;

/// Closes every client connection of the Redis server `admin` is connected to, normal and
/// pub/sub, except `admin` itself: each client has to connect (and authenticate) again.
pub fn cut_client_connections(admin: &mut redis::Connection) {
    for kind in ["normal", "pubsub"] {
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .arg("SKIPME")
            .arg("yes")
            .query(admin)
            .unwrap();
    }
}

/// A field of `INFO section`, e.g. `total_connections_received` or `cmdstat_auth`.
fn info_field(connection: &mut redis::Connection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg(section).query(connection).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// How many AUTH commands the server `connection` is connected to has run.
pub fn auth_calls(connection: &mut redis::Connection) -> u64 {
    info_field(connection, "commandstats", "cmdstat_auth")
        .split(',')
        .find_map(|pair| pair.strip_prefix("calls="))
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// How many connections the server `connection` is connected to has accepted.
pub fn connections_received(connection: &mut redis::Connection) -> u64 {
    info_field(connection, "stats", "total_connections_received")
        .parse()
        .unwrap()
}

/// Held by the heavy tests of one test binary (faults, load), which measure time bounds and
/// memory: they run one at a time rather than in parallel on a 2-core machine.
pub fn one_heavy_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A failed test poisons the lock; the next one may still run.
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An rmcp client that has completed `initialize` against `url`.
pub async fn mcp_client(url: &str) -> McpClient {
    ClientConfig::default()
        .serve(StreamableHttpClientTransport::from_uri(url))
        .await
        .expect("MCP client initializes")
}

pub async fn call(client: &McpClient, tool: &str, arguments: Value) -> CallToolResult {
    let Value::Object(arguments) = arguments else {
        panic!("tool arguments must be a JSON object");
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .expect("tools/call gets a result")
}

/// Asserts a successful tool result and returns its structured content, after checking that
/// the text block carries the same JSON.
pub fn structured_ok(result: &CallToolResult) -> Value {
    assert_eq!(
        result.is_error,
        Some(false),
        "expected success, got {result:?}"
    );
    let structured = result
        .structured_content
        .clone()
        .expect("structuredContent");
    assert_eq!(
        text_json(result),
        structured,
        "text block mirrors structuredContent"
    );
    structured
}

/// Asserts a tool-level error and returns its message.
pub fn tool_error_message(result: &CallToolResult) -> String {
    assert_eq!(
        result.is_error,
        Some(true),
        "expected isError, got {result:?}"
    );
    let structured = result
        .structured_content
        .clone()
        .expect("structuredContent");
    assert_eq!(
        text_json(result),
        structured,
        "text block mirrors structuredContent"
    );
    structured["error"]
        .as_str()
        .expect("error is a string")
        .to_owned()
}

/// Asserts a tool-level error and returns its machine-readable `code`.
pub fn tool_error_code(result: &CallToolResult) -> String {
    tool_error_message(result);
    result.structured_content.as_ref().unwrap()["code"]
        .as_str()
        .expect("code is a string")
        .to_owned()
}

fn text_json(result: &CallToolResult) -> Value {
    let text = result
        .content
        .first()
        .and_then(|content| content.as_text())
        .expect("a text content block");
    serde_json::from_str(&text.text).expect("text block is JSON")
}

/// The JSON-RPC `initialize` request body a raw HTTP test sends.
pub fn initialize_body() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "raw-http-test", "version": "1" }
        }
    })
}

/// A POST to an MCP endpoint with the headers Streamable HTTP requires.
pub fn mcp_post(client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
}

// ---- the real binary ---------------------------------------------------------------------

/// The real `mcp-sidecar` binary running as its own process; killed when dropped (with the
/// redis-server it was given, if it is its own).
pub struct SidecarProcess {
    pub process: test_support::process::ServiceProcess,
    pub addr: SocketAddr,
    pub redis: Option<std::sync::Arc<RedisServer>>,
}

impl SidecarProcess {
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Log lines whose message is `message`.
    pub fn logged(&self, message: &str) -> Vec<Value> {
        self.process.logged(message)
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Panics if any log line so far contains `secret` (a password, a token).
    pub fn assert_never_logged(&self, secret: &str) {
        let logs = self.process.logs.lock().unwrap().clone();
        assert!(!logs.is_empty(), "the sidecar logged nothing");
        if let Some(line) = logs.iter().find(|line| line.to_string().contains(secret)) {
            panic!("a secret was logged: {line}");
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.process.terminate()
    }
}

/// Polls /readyz until `done` accepts (status, body) or `limit` passes; the last answer.
pub async fn readiness(
    sidecar: &SidecarProcess,
    limit: Duration,
    done: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let url = format!("http://{}/readyz", sidecar.addr);
    let deadline = Instant::now() + limit;
    loop {
        let response = reqwest::get(&url).await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if done(status, &body) || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the binary on 127.0.0.1:0 with its own redis-server and artifact directory, plus
/// `env`, and waits for its "listening" log line.
pub fn start_sidecar_process(env: &[(&str, &str)]) -> SidecarProcess {
    let redis = std::sync::Arc::new(RedisServer::start());
    let artifact_dir = temp_dir("artifacts");
    let mut process = start_sidecar_process_with(
        &[
            ("REDIS_URL", redis.url().as_str()),
            ("ARTIFACT_DIR", artifact_dir.to_str().unwrap()),
        ],
        env,
    );
    process.redis = Some(redis);
    process
}

/// Starts the binary on 127.0.0.1:0 with `base` then `env` (later values win), and waits for
/// its "listening" log line.
pub fn start_sidecar_process_with(base: &[(&str, &str)], env: &[(&str, &str)]) -> SidecarProcess {
    let mut all = vec![
        ("MCP_LISTEN_ADDR", "127.0.0.1:0"),
        ("ARTIFACT_SIGNING_KEY", TEST_SIGNING_KEY),
        ("RENDER_WORKERS", "2"),
    ];
    all.extend_from_slice(base);
    all.extend_from_slice(env);
    let process = test_support::process::ServiceProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_mcp-sidecar")),
        &all,
    );
    SidecarProcess {
        addr: process.addr,
        process,
        redis: None,
    }
}

/// Starts the binary in the worker role (`SIDECAR_ROLE=worker`: render workers, no listener)
/// with `base` then `env`, and waits for its "render worker started" log line. Its `addr` is
/// `0.0.0.0:0`: it listens on nothing.
pub fn start_worker_process_with(base: &[(&str, &str)], env: &[(&str, &str)]) -> SidecarProcess {
    let mut all = vec![
        ("SIDECAR_ROLE", "worker"),
        ("ARTIFACT_SIGNING_KEY", TEST_SIGNING_KEY),
        ("RENDER_WORKERS", "2"),
    ];
    all.extend_from_slice(base);
    all.extend_from_slice(env);
    let process = test_support::process::ServiceProcess::start_until(
        std::path::Path::new(env!("CARGO_BIN_EXE_mcp-sidecar")),
        &all,
        "render worker started",
    );
    SidecarProcess {
        addr: process.addr,
        process,
        redis: None,
    }
}
