//! The `mcp-sidecar` binary as an operator meets it: `--help`, log lines, signals, roles.
// The guard of `one_heavy_test_at_a_time` is held for a whole test, on purpose, across awaits:
// each test is its own runtime on its own thread, so nothing else waits on this thread.
#![allow(clippy::await_holding_lock)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::common::{
    jobs::{chart_spec, decode_png, download, result, start, status, wait_terminal},
    mcp_client,
    redis_server::RedisServer,
    start_sidecar_process, start_sidecar_process_with, start_worker_process_with, temp_dir,
};

#[test]
fn help_documents_every_setting_with_its_environment_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-sidecar"))
        .arg("--help")
        .output()
        .expect("--help runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "MCP_LISTEN_ADDR",
        "MCP_ALLOWED_HOSTS",
        "MCP_SESSION_MODE",
        "MCP_BEARER_TOKEN",
        "MCP_MAX_BODY_BYTES",
        "SHUTDOWN_GRACE",
        "SIDECAR_ROLE",
        "RENDER_WORKERS",
        "LOG_FORMAT",
    ] {
        assert!(
            help.contains(&format!("[env: {variable}")),
            "--help names {variable}:\n{help}"
        );
    }
    assert!(help.contains("RUST_LOG"), "--help mentions RUST_LOG");
    assert!(
        help.contains("worker: Render workers only, no HTTP listener"),
        "--help explains the worker role:\n{help}"
    );
}

#[test]
fn a_bad_setting_is_refused_at_start_with_a_clear_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-sidecar"))
        .env("MCP_SESSION_MODE", "sometimes")
        .output()
        .expect("binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sometimes") && stderr.contains("stateless"),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_the_sidecar_with_exit_code_zero() {
    let sidecar = start_sidecar_process(&[]);
    let started = Instant::now();
    let status = sidecar.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed().as_secs() < 5,
        "stopped in {:?}",
        started.elapsed()
    );
}

#[test]
fn a_worker_role_without_render_workers_is_refused_with_the_reason() {
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-sidecar"))
        .env("SIDECAR_ROLE", "worker")
        .env("RENDER_WORKERS", "0")
        .output()
        .expect("binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SIDECAR_ROLE=worker needs RENDER_WORKERS of at least 1"),
        "{stderr}"
    );
}

/// Proves the worker-pool split: a listener-only sidecar (RENDER_WORKERS=0) accepts a job, a
/// worker-role sidecar with no listener renders it through the shared Redis and artifact
/// directory, the first one serves the result, and SIGTERM stops the worker with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_renders_what_a_listener_only_sidecar_accepted_and_stops_on_sigterm() {
    // Arrange: one Redis, one artifact directory and key prefix shared by both processes.
    let redis = RedisServer::start();
    let artifact_dir = temp_dir("worker-role-artifacts");
    let shared = [
        ("REDIS_URL", redis.url()),
        ("ARTIFACT_DIR", artifact_dir.to_str().unwrap().to_owned()),
        (
            "REDIS_KEY_PREFIX",
            format!("t{}:", uuid::Uuid::new_v4().simple()),
        ),
    ];
    let shared: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = start_sidecar_process_with(&shared, &[("RENDER_WORKERS", "0")]);
    let client = mcp_client(&server.mcp_url()).await;
    let job = start(&client, chart_spec(320, 200, "png")).await;

    // Act: a worker joins, with no listener of its own.
    let worker = start_worker_process_with(&shared, &[]);
    let (status, _) = wait_terminal(&client, &job, Duration::from_secs(30)).await;

    // Assert: rendered by the worker, served by the listener-only sidecar.
    assert_eq!(status["state"], "succeeded", "{status}");
    let finished = result(&client, &job).await;
    assert_eq!(finished["ready"], true, "{finished}");
    let png = decode_png(&download(&finished).await);
    assert_eq!((png.width(), png.height()), (320, 200));
    assert!(
        worker.addr.ip().is_unspecified(),
        "the worker binds nothing"
    );
    let started = &worker.logged("render worker started")[0];
    assert_eq!(started["render_workers"], 2, "{started}");
    assert!(
        worker.logged("listening").is_empty(),
        "no listener in the worker role"
    );

    let stopping = Instant::now();
    let exit = worker.terminate();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        stopping.elapsed()
    );
    let _ = std::fs::remove_dir_all(&artifact_dir);
}

/// The worker role keeps the sidecar's drain: at SIGTERM a worker whose grace is too short to
/// finish hands its running jobs back to the queue and exits 0; another worker finishes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_hands_its_running_jobs_back_at_sigterm() {
    let _heavy = crate::common::one_heavy_test_at_a_time();
    // Arrange: a listener-only sidecar, jobs big enough to be mid-render, one worker taking them.
    let redis = RedisServer::start();
    let artifact_dir = temp_dir("worker-drain-artifacts");
    let shared = [
        ("REDIS_URL", redis.url()),
        ("ARTIFACT_DIR", artifact_dir.to_str().unwrap().to_owned()),
        (
            "REDIS_KEY_PREFIX",
            format!("t{}:", uuid::Uuid::new_v4().simple()),
        ),
        ("JOB_LEASE", "2s".to_owned()),
    ];
    let shared: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = start_sidecar_process_with(&shared, &[("RENDER_WORKERS", "0")]);
    let client = mcp_client(&server.mcp_url()).await;
    let mut jobs = vec![];
    for index in 0..4 {
        jobs.push(start(&client, chart_spec(3000 + index, 2500, "png")).await);
    }
    // A grace shorter than the shutdown margin: nothing may finish, everything goes back.
    let worker = start_worker_process_with(&shared, &[("SHUTDOWN_GRACE", "1s")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut running = 0;
        for job in &jobs {
            if status(&client, job).await["state"] == "running" {
                running += 1;
            }
        }
        if running > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no job started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Act: SIGTERM the worker mid-render.
    let stopping = Instant::now();
    let exit = tokio::task::spawn_blocking(move || worker.terminate())
        .await
        .unwrap();

    // Assert: exit 0 within the grace, nothing left claimed, nothing failed.
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopping.elapsed()
    );
    for job in &jobs {
        let state = status(&client, job).await;
        assert!(
            matches!(state["state"].as_str(), Some("queued" | "succeeded")),
            "handed back or done: {state}"
        );
    }
    // A second worker finishes them all.
    let _next = start_worker_process_with(&shared, &[]);
    for job in &jobs {
        let (state, _) = wait_terminal(&client, job, Duration::from_secs(120)).await;
        assert_eq!(state["state"], "succeeded", "{state}");
    }
    let _ = std::fs::remove_dir_all(&artifact_dir);
}
