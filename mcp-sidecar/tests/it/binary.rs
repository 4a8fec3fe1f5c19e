//! The `mcp-sidecar` binary as an operator meets it: `--help`, log lines, signals.

use std::{process::Command, time::Instant};

use crate::common::start_sidecar_process;

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
        "LOG_FORMAT",
    ] {
        assert!(
            help.contains(&format!("[env: {variable}")),
            "--help names {variable}:\n{help}"
        );
    }
    assert!(help.contains("RUST_LOG"), "--help mentions RUST_LOG");
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
