//! Clients we did not write, against the real `mcp-sidecar` binary: the official MCP Python
//! and TypeScript SDKs, FastMCP's client with its tasks extension, the MCP Inspector CLI and
//! the MCP conformance suite. They are installed into `.tools/` by `scripts/install-test-tools`,
//! which the test command runs first.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::common::start_sidecar_process;
use serde_json::Value;
use test_support::{installed_tool, workspace_root};

fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// A command whose PATH starts with the installed Node 22.
pub(crate) fn node_command(program: &Path) -> Command {
    let node_bin = installed_tool("node/node_modules/.bin");
    let path = std::env::var("PATH").unwrap_or_default();
    let mut command = Command::new(program);
    command.env("PATH", format!("{}:{path}", node_bin.display()));
    command
}

pub(crate) use test_support::conformance::{describe, run_scenario as run_conformance_scenario};

/// Runs a Python peer script with `args`; asserts it succeeded and returns its JSON summary.
fn run_python_peer(script: &str, args: &[&str], label: &str) -> Value {
    let output = Command::new(installed_tool("venv/bin/python"))
        .arg(peer_script(script))
        .args(args)
        .output()
        .expect("python runs");
    assert!(output.status.success(), "{label}: {}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("{label}: a JSON summary line: {}", describe(&output)));
    println!("{label}: {seen}");
    assert_eq!(seen["checks"], "passed", "{label}");
    seen
}

#[test]
fn python_sdk_client_lists_and_calls_every_tool_in_both_session_modes() {
    for session_mode in ["stateless", "stateful"] {
        let sidecar = start_sidecar_process(&[("MCP_SESSION_MODE", session_mode)]);
        // `auto` is the SDK's default (2026-07-28 discovery); `legacy` is the initialize
        // handshake, which gets a real Mcp-Session-Id session from a stateful sidecar.
        for (client_mode, protocol) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
            let label = format!("{session_mode}/{client_mode}");
            let seen = run_python_peer(
                "python_sdk_client.py",
                &[&sidecar.mcp_url(), client_mode],
                &label,
            );
            assert_eq!(seen["add(2,3)"], 5);
            assert_eq!(seen["protocol"], protocol);
        }
    }
}

#[test]
fn python_sdk_sessions_and_httpx_connections_survive_oversized_slow_unread_and_short_bodies() {
    for session_mode in ["stateless", "stateful"] {
        let sidecar = start_sidecar_process(&[("MCP_SESSION_MODE", session_mode)]);
        for client_mode in ["auto", "legacy"] {
            let label = format!("{session_mode}/{client_mode}");
            let seen = run_python_peer(
                "python_sdk_edges.py",
                &[&sidecar.mcp_url(), client_mode],
                &label,
            );
            assert_eq!(seen["same_session_after"], true, "{label}");
        }
    }
}

#[test]
fn python_sdk_client_runs_the_whole_render_job_flow() {
    for session_mode in ["stateless", "stateful"] {
        let sidecar = start_sidecar_process(&[("MCP_SESSION_MODE", session_mode)]);
        let seen = run_python_peer(
            "python_sdk_render_flow.py",
            &[&sidecar.mcp_url()],
            session_mode,
        );
        assert_eq!(seen["png"], serde_json::json!([720, 360]));
    }
}

#[test]
fn fastmcp_client_runs_render_as_a_task_and_cancels_one() {
    // FastMCP always connects statelessly (server/discover), so a stateful sidecar must serve
    // it as well as a stateless one.
    for session_mode in ["stateless", "stateful"] {
        let sidecar = start_sidecar_process(&[("MCP_SESSION_MODE", session_mode)]);
        let seen = run_python_peer(
            "fastmcp_tasks_client.py",
            &[&sidecar.mcp_url()],
            session_mode,
        );
        assert_eq!(seen["protocol"], "2026-07-28", "{session_mode}");
        assert_eq!(seen["render"]["png"], serde_json::json!([320, 160]));
        assert_eq!(seen["cancelled_status"], "cancelled", "{session_mode}");
        // The tasks/* requests went without Mcp-Name, and the sidecar answered them.
        assert_eq!(seen["tasks_requests_with_mcp_name"], 0, "{session_mode}");
    }
}

#[test]
fn typescript_sdk_client_calls_every_tool_and_a_strict_validator_accepts_every_schema() {
    let sidecar = start_sidecar_process(&[]);
    let output = node_command(&installed_tool("node/node_modules/.bin/node"))
        .env("NODE_PATH", installed_tool("node/node_modules"))
        .arg(peer_script("ts_sdk_client.cjs"))
        .arg(sidecar.mcp_url())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("a JSON summary line: {}", describe(&output)));
    println!("TypeScript SDK: {seen}");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(seen["checks"], "passed", "{seen}");
    // Nine tools, each with an input and an output schema, all compiled in strict mode.
    assert_eq!(seen["compiled"], 18, "{seen}");
}

#[test]
fn mcp_inspector_cli_lists_tools_and_calls_add() {
    let inspector = installed_tool("node/node_modules/.bin/mcp-inspector");
    let sidecar = start_sidecar_process(&[]);
    let url = sidecar.mcp_url();

    let output = node_command(&inspector)
        .args([
            "--cli",
            &url,
            "--transport",
            "http",
            "--method",
            "tools/list",
        ])
        .output()
        .expect("inspector runs");
    assert!(output.status.success(), "tools/list: {}", describe(&output));
    let listed: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("JSON on stdout: {}", describe(&output)));
    let names: Vec<_> = listed["tools"]
        .as_array()
        .expect("tools array")
        .iter()
        .map(|tool| tool["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(&names[..3], ["add", "subtract", "echo"]);
    assert!(names.contains(&"start_render"), "{names:?}");

    let output = node_command(&inspector)
        .args([
            "--cli",
            &url,
            "--transport",
            "http",
            "--method",
            "tools/call",
        ])
        .args([
            "--tool-name",
            "add",
            "--tool-arg",
            "a=2",
            "--tool-arg",
            "b=3",
        ])
        .output()
        .expect("inspector runs");
    assert!(output.status.success(), "tools/call: {}", describe(&output));
    let called: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("JSON on stdout: {}", describe(&output)));
    assert_eq!(called["structuredContent"]["sum"], 5, "{called}");
    assert_eq!(called["isError"], false);
}

/// Conformance scenarios that apply to this server as it is (no conformance fixture tools).
const SCENARIOS_ANY_MODE: [&str; 5] = [
    "server-initialize",
    "ping",
    "tools-list",
    "dns-rebinding-protection",
    "logging-set-level",
];
/// Scenarios that need a session (an Mcp-Session-Id) to mean anything.
const SCENARIOS_SESSION_MODE: [&str; 2] = ["server-sse-multiple-streams", "server-sse-polling"];

/// The conformance suite 0.1.16 (`conformance`), as installed.
fn conformance() -> Command {
    node_command(&installed_tool("node/node_modules/.bin/conformance"))
}

/// The conformance suite 0.2.0-alpha.12 (npm alias `conformance-next`), run by the installed
/// Node (its `.bin` name is taken by 0.1.16).
pub(crate) fn conformance_next() -> Command {
    let mut command = node_command(&installed_tool("node/node_modules/.bin/node"));
    command.arg(installed_tool(
        "node/node_modules/conformance-next/dist/index.js",
    ));
    command
}

#[test]
fn conformance_suite_passes_every_scenario_that_applies() {
    let results = workspace_root().join("target/conformance");
    let _ = std::fs::remove_dir_all(&results);
    let mut table = vec![];
    for (session_mode, extra) in [
        ("stateless", &[][..]),
        ("stateful", &SCENARIOS_SESSION_MODE[..]),
    ] {
        let sidecar = start_sidecar_process(&[("MCP_SESSION_MODE", session_mode)]);
        for scenario in SCENARIOS_ANY_MODE.iter().chain(extra) {
            let (output, checks) = run_conformance_scenario(
                conformance(),
                &sidecar.mcp_url(),
                scenario,
                &[],
                &results.join(session_mode),
            );
            let count = |status: &str| checks.iter().filter(|c| c["status"] == status).count();
            let (passed, failed, warnings) = (count("SUCCESS"), count("FAILURE"), count("WARNING"));
            // A server may answer a POST with one JSON body instead of an SSE stream; the suite
            // then says which of its checks do not apply. server-sse-polling's only request is
            // a plain tools/call, which the fast path answers as JSON in either mode.
            let not_applicable: Vec<&str> = checks
                .iter()
                .filter(|check| {
                    check["status"] == "INFO"
                        && check["details"]["message"]
                            .as_str()
                            .is_some_and(|message| message.contains("not applicable"))
                })
                .filter_map(|check| check["id"].as_str())
                .collect();
            table.push(format!(
                "| {session_mode} | {scenario} | {passed} | {failed} | {warnings} | {} |",
                not_applicable.join(", ")
            ));
            assert!(
                output.status.success()
                    && failed == 0
                    && (passed > 0 || !not_applicable.is_empty()),
                "{session_mode}/{scenario}: {}",
                describe(&output)
            );
        }
    }
    println!(
        "| mode | scenario | passed | failed | warnings | not applicable |\n|---|---|---|---|---|---|"
    );
    for row in &table {
        println!("{row}");
    }

    let listed = conformance()
        .args(["list", "--server"])
        .output()
        .expect("conformance lists scenarios");
    let not_applicable: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| !SCENARIOS_ANY_MODE.contains(name) && !SCENARIOS_SESSION_MODE.contains(name))
        .map(str::to_owned)
        .collect();
    println!(
        "not applicable (need the suite's fixture tools, resources or prompts): {not_applicable:?}"
    );
    assert!(!not_applicable.is_empty(), "the suite lists its scenarios");
}
