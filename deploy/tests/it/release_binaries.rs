//! The release binaries, built with the Dockerfiles' own `cargo build` command, started with
//! exactly the environment service.yaml gives them (local values for its secrets) and probed
//! the way Cloud Run probes them. Two local adaptations, both things Cloud Run itself
//! provides: `PORT` (Cloud Run sets it from `containerPort`) and `BIND_ADDR=127.0.0.1` (tests
//! only listen on loopback; on Cloud Run the agent binds all interfaces).
#![allow(clippy::unwrap_used)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use deploy_checks::{
    container, containers, dockerfile_cargo_build, env_values, render_service, workspace_root,
};
use serde_json::Value;
use test_support::{process::target_dir, redis_server::RedisServer};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds `binary` with its Dockerfile's command and returns the release binary.
fn release_binary(binary: &str) -> PathBuf {
    let command = dockerfile_cargo_build(&format!("{binary}/Dockerfile"));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(&command[1..])
        .current_dir(workspace_root())
        .status()
        .unwrap();
    assert!(status.success(), "{}", command.join(" "));
    target_dir().join("release").join(binary)
}

/// `(path, port, budget)` of an HTTP probe: Cloud Run's allowance is the initial delay plus
/// `failureThreshold × periodSeconds`.
fn probe(container: &Value, kind: &str) -> (String, u16, Duration) {
    let probe = &container[kind];
    let path = probe["httpGet"]["path"].as_str().unwrap().to_owned();
    let port = u16::try_from(probe["httpGet"]["port"].as_u64().unwrap()).unwrap();
    let seconds = probe["initialDelaySeconds"].as_u64().unwrap_or(0)
        + probe["failureThreshold"].as_u64().unwrap_or(3)
            * probe["periodSeconds"].as_u64().unwrap_or(10);
    (path, port, Duration::from_secs(seconds))
}

fn status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.split_whitespace().nth(1)?.parse().ok()
}

/// Polls the probe until it answers 200; returns how long that took from `started`.
fn wait_for_probe(
    process: &mut Running,
    name: &str,
    started: Instant,
    port: u16,
    path: &str,
    budget: Duration,
) -> Duration {
    loop {
        if status(port, path) == Some(200) {
            return started.elapsed();
        }
        if let Some(exit) = process.0.try_wait().unwrap() {
            panic!("{name} exited before its startup probe passed: {exit} (its stderr is above)");
        }
        assert!(
            started.elapsed() < budget,
            "{name}: {path} on {port} did not answer 200 within {budget:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn start(binary: &PathBuf, env: &[(String, String)]) -> (Running, Instant) {
    let started = Instant::now();
    let child = Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(
            env.iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    (Running(child), started)
}

#[test]
fn the_release_binaries_start_with_the_services_environment_and_answer_their_probes() {
    let agent_binary = release_binary("agent");
    let sidecar_binary = release_binary("mcp-sidecar");
    for binary in [&agent_binary, &sidecar_binary] {
        let size = std::fs::metadata(binary).unwrap().len();
        println!(
            "{}: {:.1} MiB (stripped)",
            binary.display(),
            size as f64 / 1048576.0
        );
    }

    // The service as Cloud Build deploys it: placeholders rendered by deploy/render-service.sh.
    let rendered = test_support::temp_dir("release-service").join("service.yaml");
    let service: Value =
        serde_saphyr::from_str(&render_service(&rendered, "test-project", None)).unwrap();
    let containers = containers(&service);
    let redis = RedisServer::start();

    // The sidecar: its env from service.yaml, the REDIS_URL secret pointed at a local Redis.
    let sidecar = container(&containers, "mcp-sidecar");
    let mut env = env_values(sidecar);
    env.push(("REDIS_URL".into(), redis.url()));
    env.push(("HOME".into(), std::env::temp_dir().display().to_string()));
    let (mut sidecar_process, started) = start(&sidecar_binary, &env);
    let (path, port, budget) = probe(sidecar, "startupProbe");
    let sidecar_ready = wait_for_probe(
        &mut sidecar_process,
        "mcp-sidecar",
        started,
        port,
        &path,
        budget,
    );
    let (path, port, _) = probe(sidecar, "livenessProbe");
    assert_eq!(status(port, &path), Some(200), "mcp-sidecar liveness");
    assert_eq!(
        status(port, "/readyz"),
        Some(200),
        "mcp-sidecar reaches Redis"
    );

    // The agent, after the sidecar as container-dependencies orders it.
    let agent = container(&containers, "agent");
    let mut env = env_values(agent);
    let container_port = agent["ports"][0]["containerPort"].as_u64().unwrap();
    env.push(("PORT".into(), container_port.to_string()));
    env.push(("BIND_ADDR".into(), "127.0.0.1".into()));
    let (mut agent_process, started) = start(&agent_binary, &env);
    let (path, port, budget) = probe(agent, "startupProbe");
    let agent_ready = wait_for_probe(&mut agent_process, "agent", started, port, &path, budget);
    let (path, port, _) = probe(agent, "livenessProbe");
    assert_eq!(status(port, &path), Some(200), "agent liveness");
    // Connected to the sidecar through MCP_SERVER_URL from service.yaml.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(port, "/readyz") != Some(200) {
        assert!(Instant::now() < deadline, "the agent reached the sidecar");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("exec → startup probe 200: mcp-sidecar {sidecar_ready:?}, agent {agent_ready:?}");
}
