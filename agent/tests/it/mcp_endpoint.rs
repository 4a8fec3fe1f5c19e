//! The agent's own MCP endpoint `/mcp`, as IDE clients (Gemini CLI, Claude Code) reach it
//! through `gcloud run services proxy`: clients we did not write (the official MCP Python SDK,
//! FastMCP's tasks client, the MCP conformance suite) against the real agent in front of the
//! real sidecar and a remote MCP server; raw requests for the edge (unknown tool, Host and
//! Origin rules, body bound); an agent whose sidecar is away; and one trace across `/mcp`.
//!
//! The Python and Node peers are installed into `.tools/` by `scripts/install-test-tools`.
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use crate::common::{Stack, fakes::RemoteMcp, get_json};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{
    conformance::{describe, judge},
    free_port, installed_tool,
    otlp::OtlpReceiver,
    process::ServiceProcess,
    redis_server::RedisServer,
    temp_dir, workspace_root,
};

fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// Runs a Python peer script (off the async runtime: the fakes it talks to run on it); asserts
/// it succeeded and returns its JSON summary line.
async fn run_python_peer(script: &str, args: Vec<String>, label: String) -> Value {
    let script = peer_script(script);
    tokio::task::spawn_blocking(move || {
        let output = Command::new(installed_tool("venv/bin/python"))
            .arg(script)
            .args(&args)
            .output()
            .expect("python runs");
        assert!(output.status.success(), "{label}: {}", describe(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
            .unwrap_or_else(|_| panic!("{label}: a JSON summary line: {}", describe(&output)));
        assert_eq!(seen["checks"], "passed", "{label}: {seen}");
        seen
    })
    .await
    .unwrap()
}

/// The stack with a remote MCP server configured next to the sidecar, once the remote
/// server's tools are listed.
async fn stack_with_remote() -> (Stack, RemoteMcp) {
    let remote = RemoteMcp::start().await;
    let config = temp_dir("mcp-config").join("mcp.json");
    std::fs::write(
        &config,
        json!({"mcpServers": {"remote": {"url": remote.url}}}).to_string(),
    )
    .unwrap();
    let stack = Stack::start("stateless", &[("MCP_CONFIG", config.to_str().unwrap())]);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = get_json(&http, &stack.url("/v1/tools")).await;
        if listed["tools"]
            .as_array()
            .is_some_and(|tools| tools.iter().any(|tool| tool["server"] == "remote"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "remote tools never appeared: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (stack, remote)
}

/// The fields `/v1/tools` and `tools/list` share, per tool, in listing order.
fn tool_fields(tools: &Value) -> Vec<Value> {
    tools
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| {
            json!({
                "name": tool["name"],
                "description": tool["description"],
                "input_schema": tool["input_schema"],
                "output_schema": tool["output_schema"],
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_lists_every_servers_tools_as_v1_tools_does_and_calls_the_sidecar_and_a_remote_server()
 {
    let (stack, remote) = stack_with_remote().await;
    let http = reqwest::Client::new();
    let rest = get_json(&http, &stack.url("/v1/tools")).await;

    for (mode, protocol) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        let remote_calls_before = remote.calls().len();
        let seen = run_python_peer(
            "python_sdk_through_agent.py",
            vec![stack.url("/mcp"), mode.to_owned()],
            format!("python SDK ({mode})"),
        )
        .await;

        assert_eq!(seen["protocol"], protocol, "{mode}");
        assert_eq!(seen["server"], "agent", "{mode}");
        assert_eq!(
            tool_fields(&seen["tools"]),
            tool_fields(&rest["tools"]),
            "{mode}: tools/list through /mcp is GET /v1/tools"
        );
        assert_eq!(seen["add(2,3)"], 5, "{mode}: the sidecar answered");
        // remote__echo and whoami reached the remote server.
        assert_eq!(remote.calls().len() - remote_calls_before, 2, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastmcp_runs_the_sidecars_render_as_a_task_through_the_agent_and_cancels_one() {
    let stack = Stack::start("stateless", &[]);

    let seen = run_python_peer(
        "fastmcp_tasks_through_agent.py",
        vec![stack.url("/mcp")],
        "FastMCP tasks".to_owned(),
    )
    .await;

    assert_eq!(seen["protocol"], "2026-07-28");
    assert_eq!(seen["png"], json!([320, 160]));
    assert_eq!(seen["cancelled_status"], "cancelled");
}

/// A JSON-RPC POST to `/mcp` as a 2025-11-25 client sends it, with `extra` headers.
async fn post_mcp(
    http: &reqwest::Client,
    url: &str,
    message: Value,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&message);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn call(id: u64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_requests_get_clear_answers_and_foreign_hosts_and_origins_get_403() {
    let stack = Stack::start("stateless", &[("MAX_BODY_BYTES", "65536")]);
    let http = reqwest::Client::new();
    let url = stack.url("/mcp");

    // A forwarded call: the sidecar's result as it gave it.
    let answer: Value = post_mcp(&http, &url, call(1, "add", json!({"a": 2, "b": 3})), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["result"]["structuredContent"],
        json!({"sum": 5}),
        "{answer}"
    );
    assert_eq!(answer["result"]["isError"], false, "{answer}");

    // An unknown tool: JSON-RPC invalid params, naming the tool and where the list is.
    let response = post_mcp(&http, &url, call(2, "no_such_tool", json!({})), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["id"], 2);
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unknown tool `no_such_tool`") && message.contains("tools/list"),
        "{message}"
    );

    // A tool's own failure stays a tool result.
    let answer: Value = post_mcp(&http, &url, call(3, "echo", json!({"text": ""})), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert_eq!(
        answer["result"]["structuredContent"]["error"],
        "text must not be empty"
    );

    // Host: loopback names and the service's run.app names (the default MCP_ALLOWED_HOSTS,
    // what `gcloud run services proxy` sends); anything else is refused before rmcp.
    let list = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"});
    for (host, status) in [
        ("localhost:8080", StatusCode::OK),
        ("agent-abc123-uc.a.run.app", StatusCode::OK),
        ("agent-123456789.europe-west1.run.app", StatusCode::OK),
        ("evil.example", StatusCode::FORBIDDEN),
        ("run.app.evil.example:8080", StatusCode::FORBIDDEN),
    ] {
        let response = post_mcp(&http, &url, list.clone(), &[("host", host)]).await;
        assert_eq!(response.status(), status, "Host: {host}");
        if status == StatusCode::FORBIDDEN {
            assert_eq!(
                response.text().await.unwrap(),
                "Forbidden: Host header is not allowed"
            );
        }
    }

    // Origin (a browser's): loopback only by default; never a `*.run.app` name, since anyone
    // can serve a page from one; `null` neither.
    for (origin, status) in [
        ("http://localhost:8080", StatusCode::OK),
        ("http://127.0.0.1:6274", StatusCode::OK),
        ("http://evil.example", StatusCode::FORBIDDEN),
        ("https://attacker-xyz-uc.a.run.app", StatusCode::FORBIDDEN),
        ("null", StatusCode::FORBIDDEN),
    ] {
        let response = post_mcp(&http, &url, list.clone(), &[("origin", origin)]).await;
        assert_eq!(response.status(), status, "Origin: {origin}");
    }

    // Stateless: no GET stream, no session to DELETE.
    let response = http
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    // The router's body bound holds for /mcp too.
    let big = "x".repeat(70_000);
    let response = post_mcp(&http, &url, call(5, "echo", json!({"text": big})), &[]).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sidecar_away_tools_list_is_an_error_and_calls_say_unavailable() {
    // Nothing listens on the sidecar's port; the hosts list replaces the default.
    let sidecar = format!("http://127.0.0.1:{}/mcp", free_port());
    let agent = ServiceProcess::start(
        Path::new(env!("CARGO_BIN_EXE_agent")),
        &[
            ("PORT", "0"),
            ("BIND_ADDR", "127.0.0.1"),
            ("MCP_SERVER_URL", &sidecar),
            ("MCP_CALL_TIMEOUT", "2s"),
            ("MCP_ALLOWED_HOSTS", "agent.example.com:8443"),
        ],
    );
    let http = reqwest::Client::new();
    let url = agent.url("/mcp");
    let host = [("host", "agent.example.com:8443")];

    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let answer: Value = post_mcp(&http, &url, list.clone(), &host)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sidecar is not connected yet"),
        "{answer}"
    );

    let answer: Value = post_mcp(&http, &url, call(2, "add", json!({"a": 1, "b": 2})), &host)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert_eq!(
        answer["result"]["structuredContent"]["code"], "unavailable",
        "{answer}"
    );

    // The configured list replaced `*.run.app`; the port of an entry is enforced.
    for host in ["agent-abc123-uc.a.run.app", "agent.example.com:443"] {
        let response = post_mcp(&http, &url, list.clone(), &[("host", host)]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "Host: {host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_mcp_is_one_trace_from_the_callers_span_to_the_sidecars_tool() {
    let receiver = OtlpReceiver::start().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let stack = Stack::start_with("stateless", &env, &env);
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");

    let answer: Value = post_mcp(
        &reqwest::Client::new(),
        &stack.url("/mcp"),
        call(1, "add", json!({"a": 2, "b": 3})),
        &[("traceparent", traceparent.as_str())],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer["result"]["structuredContent"]["sum"], 5, "{answer}");

    // rmcp serves the request in a task of its own; the forwarded call still joins the trace.
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = receiver.trace(&trace_id);
        let named = |service: &str, name: &str| {
            spans
                .iter()
                .find(|span| span.service == service && span.name == name)
                .cloned()
        };
        if let (Some(request), Some(client), Some(tool)) = (
            named("agent", "POST /mcp"),
            named("agent", "tools/call add"),
            named("mcp-sidecar", "tools/call add"),
        ) {
            break (request, client, tool);
        }
        assert!(Instant::now() < deadline, "spans of the trace: {spans:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (request, client, tool) = spans;
    assert_eq!(request.parent_span_id, caller_span);
    assert_eq!(client.parent_span_id, request.span_id, "the forwarded call");
    assert_eq!(tool.parent_span_id, client.span_id, "the sidecar's tool");
}

/// A command whose PATH starts with the installed Node.
fn node_command(program: &Path) -> Command {
    let node_bin = installed_tool("node/node_modules/.bin");
    let path = std::env::var("PATH").unwrap_or_default();
    let mut command = Command::new(program);
    command.env("PATH", format!("{}:{path}", node_bin.display()));
    command
}

/// Which conformance suite runs a scenario.
#[derive(Clone, Copy)]
enum Suite {
    /// `@modelcontextprotocol/conformance@0.1.16`, as installed (`conformance`).
    Current,
    /// `0.2.0-alpha.12` (npm alias `conformance-next`): the 2026-07-28 and tasks scenarios.
    Next,
}

/// Runs one server scenario against `url`; returns the suite's output and its checks (its
/// `checks.json`, under `results/<scenario>`).
fn run_conformance_scenario(
    suite: Suite,
    url: &str,
    scenario: &str,
    extra: &[&str],
    results: &Path,
) -> (Output, Vec<Value>) {
    let command = match suite {
        Suite::Current => node_command(&installed_tool("node/node_modules/.bin/conformance")),
        Suite::Next => {
            let mut command = node_command(&installed_tool("node/node_modules/.bin/node"));
            command.arg(installed_tool(
                "node/node_modules/conformance-next/dist/index.js",
            ));
            command
        }
    };
    test_support::conformance::run_scenario(command, url, scenario, extra, results)
}

/// The scenario names of the installed `conformance-next` that start with `prefix`.
fn next_scenarios(prefix: &str) -> Vec<String> {
    let mut command = node_command(&installed_tool("node/node_modules/.bin/node"));
    let listed = command
        .arg(installed_tool(
            "node/node_modules/conformance-next/dist/index.js",
        ))
        .args(["list", "--server"])
        .output()
        .expect("the suite lists its scenarios");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Scenarios of 0.1.16 that apply to a stateless server of other servers' tools. Its others
/// call the suite's fixture tools (`test_*`), need prompts, resources or completions, or a
/// session (`server-sse-*`).
const SCENARIOS_CURRENT: [&str; 5] = [
    "server-initialize",
    "ping",
    "tools-list",
    "dns-rebinding-protection",
    "logging-set-level",
];

/// Core scenarios of `conformance-next`, run at the 2026-07-28 wire (the same set the
/// sidecar's own test runs).
const SCENARIOS_2026_07_28: [&str; 8] = [
    "server-stateless",
    "caching",
    "http-header-validation",
    "dns-rebinding-protection",
    "tools-list",
    "sep-2164-resource-not-found",
    "server-sse-multiple-streams",
    "input-required-result-unsupported-methods",
];

/// Whole scenarios that cannot apply behind the agent, and why (run and reported, not judged).
const SCENARIOS_NOT_APPLICABLE: [(&str, &str); 3] = [
    (
        "tasks-mrtr-input",
        "needs tasks that park in `input_required` (and tools `multi_input`); the fixture \
         server's tasks, like the sidecar's, never ask for input",
    ),
    (
        "tasks-mrtr-composition",
        "needs the suite's `test_tool_with_task`, which gathers input before making a task",
    ),
    (
        "tasks-status-notifications",
        "the suite itself SKIPs it, pending its rewrite onto subscriptions/listen",
    ),
];

/// `(scenario, check, why)`: checks of applicable scenarios that need what neither the agent
/// nor the servers behind it have. A listed check that passes fails the test, so the list
/// stays exact.
const CHECKS_NOT_APPLICABLE: &[(&str, &str, &str)] = &[
    (
        "server-stateless",
        "sep-2575-server-rejects-undeclared-capability",
        "calls the suite's `test_missing_capability` tool",
    ),
    (
        "server-stateless",
        "sep-2575-missing-capability-http-400",
        "calls the suite's `test_missing_capability` tool",
    ),
    (
        "server-stateless",
        "sep-2575-http-server-no-independent-requests-on-stream",
        "calls the suite's `test_streaming_elicitation` tool",
    ),
    (
        "server-stateless",
        "sep-2575-server-no-log-without-loglevel",
        "calls the suite's `test_logging_tool` tool",
    ),
    (
        "caching",
        "sep-2549-prompts-list-caching-hints",
        "the agent offers no prompts (-32601, as it declares no prompts capability)",
    ),
    (
        "caching",
        "sep-2549-resources-list-caching-hints",
        "the agent offers no resources (-32601, as it declares no resources capability)",
    ),
    (
        "caching",
        "sep-2549-resources-templates-list-caching-hints",
        "the agent offers no resources (-32601, as it declares no resources capability)",
    ),
];

/// The sidecar's conformance fixture server (its example `conformance_fixtures`: the suite's
/// task tools `greet`, `slow_compute`, `failing_job`, … on the sidecar's task machinery).
/// `cargo test` builds examples; a run of this test binary alone may not have, so it is built
/// here if missing.
fn fixture_server_binary() -> PathBuf {
    let path = test_support::process::target_dir().join("debug/examples/conformance_fixtures");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "mcp-sidecar",
                "--example",
                "conformance_fixtures",
            ])
            .current_dir(workspace_root())
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building the conformance_fixtures example"
        );
    }
    path
}

#[test]
fn conformance_suites_pass_every_check_that_applies_through_the_agents_endpoint() {
    // The agent fronts the sidecar and, as a remote server, the fixture server: the 0.1.16
    // and 2026-07-28 scenarios judge the endpoint itself; the tasks scenarios judge its
    // forwarding of task-augmented calls and tasks/* (the fixture's tools are task tools).
    let fixture_redis = RedisServer::start();
    let fixture_artifacts = temp_dir("agent-conformance-fixtures");
    let fixtures = ServiceProcess::start(
        &fixture_server_binary(),
        &[
            ("MCP_LISTEN_ADDR", "127.0.0.1:0"),
            ("REDIS_URL", fixture_redis.url().as_str()),
            ("ARTIFACT_DIR", fixture_artifacts.to_str().unwrap()),
            ("ARTIFACT_SIGNING_KEY", crate::common::SIGNING_KEY),
            // A cancelled fixture job learns it at its next renewal (every lease/3).
            ("JOB_LEASE", "3s"),
        ],
    );
    let config = temp_dir("mcp-config").join("mcp.json");
    std::fs::write(
        &config,
        json!({"mcpServers": {"fixtures": {"url": fixtures.url("/mcp")}}}).to_string(),
    )
    .unwrap();
    let stack = Stack::start("stateless", &[("MCP_CONFIG", config.to_str().unwrap())]);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = get_json(&http, &stack.url("/readyz")).await;
            if ready["servers"]["fixtures"] == "connected" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the fixture server never connected: {ready}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let url = stack.url("/mcp");
    let results = workspace_root().join("target/conformance-agent");
    let _ = std::fs::remove_dir_all(&results);
    let runs = SCENARIOS_CURRENT
        .iter()
        .map(|scenario| (Suite::Current, (*scenario).to_owned(), &[][..]))
        .chain(SCENARIOS_2026_07_28.iter().map(|scenario| {
            (
                Suite::Next,
                (*scenario).to_owned(),
                &["--spec-version", "2026-07-28"][..],
            )
        }))
        // The suite refuses `--spec-version` for extension scenarios.
        .chain(
            next_scenarios("tasks-")
                .into_iter()
                .map(|scenario| (Suite::Next, scenario, &[][..])),
        );
    let mut table = vec![];
    let mut problems = vec![];
    for (suite, scenario, extra) in runs {
        let label = match suite {
            Suite::Current => "0.1.16",
            Suite::Next => "next",
        };
        let (output, checks) =
            run_conformance_scenario(suite, &url, &scenario, extra, &results.join(label));
        let whole_scenario_excused = SCENARIOS_NOT_APPLICABLE
            .iter()
            .any(|(name, _)| *name == scenario);
        let verdict = judge(
            label,
            &scenario,
            &checks,
            CHECKS_NOT_APPLICABLE,
            "CHECKS_NOT_APPLICABLE",
            &output,
        );
        let (failed, not_applicable) = if whole_scenario_excused {
            // Every failure of a scenario that does not apply here is excused.
            (0, verdict.failed + verdict.not_applicable)
        } else {
            problems.extend(verdict.problems);
            (verdict.failed, verdict.not_applicable)
        };
        table.push(format!(
            "| {label} | {scenario} | {} | {failed} | {not_applicable} | {} |",
            verdict.passed, verdict.warnings
        ));
    }

    println!(
        "| suite | scenario | passed | failed | not applicable | warnings |\n\
         |---|---|---|---|---|---|"
    );
    for row in &table {
        println!("{row}");
    }
    for (scenario, why) in SCENARIOS_NOT_APPLICABLE {
        println!("not applicable: {scenario}: {why}");
    }
    let _ = std::fs::remove_dir_all(&fixture_artifacts);
    assert!(
        problems.is_empty(),
        "{} (results in {})",
        problems.join("\n"),
        results.display()
    );
}
