//! What the agent's integration tests share: the agent, the real sidecar and a real Redis as
//! separate processes on loopback, wired as on Cloud Run; and local servers that speak the
//! wire formats of what cannot be reached from here (the metadata server, a remote MCP
//! server on Cloud Run).
#![allow(dead_code)] // each test binary uses its own subset
#![allow(clippy::unwrap_used)] // test set-up: a failure should panic loudly

pub mod fakes;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use test_support::{
    free_port,
    process::{ServiceProcess, workspace_binary},
    redis_server::RedisServer,
    temp_dir,
};

pub const SIGNING_KEY: &str = "agent-test-signing-key-0123456789";

fn sidecar_binary() -> PathBuf {
    workspace_binary("mcp-sidecar")
}

/// One Cloud Run instance, locally: Redis, the sidecar on a fixed loopback port, and the agent
/// in front. Everything is stopped (and the artifact directory removed) when dropped.
pub struct Stack {
    pub redis: Arc<RedisServer>,
    pub sidecar: Option<ServiceProcess>,
    pub agent: ServiceProcess,
    sidecar_env: Vec<(String, String)>,
    pub artifact_dir: PathBuf,
}

impl Stack {
    /// Starts everything; `sidecar_mode` is `stateless` or `stateful`; `agent_env` adds to or
    /// overrides the agent's environment.
    pub fn start(sidecar_mode: &str, agent_env: &[(&str, &str)]) -> Self {
        Self::start_with(sidecar_mode, &[], agent_env)
    }

    /// [`Stack::start`] with extra (or overriding) sidecar settings too.
    pub fn start_with(
        sidecar_mode: &str,
        sidecar_extra: &[(&str, &str)],
        agent_env: &[(&str, &str)],
    ) -> Self {
        let redis = Arc::new(RedisServer::start());
        let artifact_dir = temp_dir("agent-artifacts");
        let agent_port = free_port();
        let sidecar_port = free_port();
        let sidecar_env: Vec<(String, String)> = vec![
            (
                "MCP_LISTEN_ADDR".into(),
                format!("127.0.0.1:{sidecar_port}"),
            ),
            ("MCP_SESSION_MODE".into(), sidecar_mode.into()),
            ("REDIS_URL".into(), redis.url()),
            ("ARTIFACT_DIR".into(), artifact_dir.display().to_string()),
            ("ARTIFACT_SIGNING_KEY".into(), SIGNING_KEY.into()),
            // Downloads go through the agent, as on Cloud Run with the local store.
            (
                "PUBLIC_BASE_URL".into(),
                format!("http://127.0.0.1:{agent_port}"),
            ),
            ("RENDER_WORKERS".into(), "2".into()),
        ];
        let mut sidecar_env = sidecar_env;
        for (key, value) in sidecar_extra {
            sidecar_env.retain(|(existing, _)| existing != key);
            sidecar_env.push(((*key).to_owned(), (*value).to_owned()));
        }
        let sidecar = start_sidecar(&sidecar_env);
        let mut env: Vec<(&str, String)> = vec![
            ("PORT", agent_port.to_string()),
            ("BIND_ADDR", "127.0.0.1".into()),
            (
                "MCP_SERVER_URL",
                format!("http://127.0.0.1:{sidecar_port}/mcp"),
            ),
            ("RENDER_POLL_INTERVAL", "50ms".into()),
        ];
        for (key, value) in agent_env {
            env.retain(|(existing, _)| existing != key);
            env.push((key, (*value).to_owned()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let agent = ServiceProcess::start(Path::new(env!("CARGO_BIN_EXE_agent")), &env);
        let stack = Self {
            redis,
            sidecar: Some(sidecar),
            agent,
            sidecar_env,
            artifact_dir,
        };
        stack.wait_ready(Duration::from_secs(30));
        stack
    }

    pub fn url(&self, path: &str) -> String {
        self.agent.url(path)
    }

    /// Waits until the agent's /readyz says 200 (the sidecar is connected).
    pub fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if http_status(&self.url("/readyz")) == Some(200) {
                return;
            }
            assert!(Instant::now() < deadline, "the agent never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the sidecar outright.
    pub fn kill_sidecar(&mut self) {
        if let Some(mut sidecar) = self.sidecar.take() {
            sidecar.kill();
        }
    }

    /// Another sidecar on the same Redis and artifact directory (its own free port), with
    /// `overrides` on top of the first one's settings.
    pub fn extra_sidecar(&self, overrides: &[(&str, &str)]) -> ServiceProcess {
        let mut env = self.sidecar_env.clone();
        env.retain(|(key, _)| key != "MCP_LISTEN_ADDR");
        env.push(("MCP_LISTEN_ADDR".into(), "127.0.0.1:0".into()));
        for (key, value) in overrides {
            env.retain(|(existing, _)| existing != key);
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
        start_sidecar(&env)
    }

    /// Starts the sidecar again, on the same port with the same settings.
    pub fn restart_sidecar(&mut self) {
        self.kill_sidecar();
        self.sidecar = Some(start_sidecar(&self.sidecar_env));
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.artifact_dir);
    }
}

fn start_sidecar(env: &[(String, String)]) -> ServiceProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ServiceProcess::start(&sidecar_binary(), &env)
}

/// The status code of a plain GET (None when nothing answers).
pub fn http_status(url: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.split_whitespace().nth(1)?.parse().ok()
}

/// GETs `url` and returns its JSON body (any status).
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Starts a render of `spec` through the agent (202) and opens its SSE stream (200); returns
/// the job id and the open stream.
pub async fn start_render_with_events(
    http: &reqwest::Client,
    stack: &Stack,
    spec: Value,
) -> (String, reqwest::Response) {
    let accepted = http
        .post(stack.url("/v1/renders"))
        .json(&serde_json::json!({ "spec": spec }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), reqwest::StatusCode::ACCEPTED);
    let job = accepted.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stream = http
        .get(stack.url(&format!("/v1/renders/{job}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), reqwest::StatusCode::OK);
    (job, stream)
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: Value,
}

/// Reads an SSE response until `done`/`timeout` (or the stream ends), returning the events.
pub async fn read_events(response: reqwest::Response, limit: Duration) -> Vec<SseEvent> {
    use futures::StreamExt;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = vec![];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the event stream ended in time");
        let Some(chunk) = chunk else { break };
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim());
                }
            }
            if data.is_empty() {
                continue; // a keep-alive comment
            }
            let done = event == "done" || event == "timeout";
            events.push(SseEvent {
                event,
                data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
            });
            if done {
                return events;
            }
        }
    }
    events
}
