//! The conformance suite's tasks-extension scenarios (`tasks-*` of
//! `@modelcontextprotocol/conformance@0.2.0-alpha.12`, installed as `conformance-next`) against
//! the fixture server `examples/conformance_fixtures.rs`: the suite's fixture tools (`greet`,
//! `slow_compute`, `failing_job`, `protocol_error_job`, `confirm_delete`) served through the
//! sidecar's own task machinery (job records and queue in Redis, `RenderTools`' task answers),
//! so every verdict on a task answer is a verdict on the sidecar's.
//!
//! Results go to `target/conformance-next/tasks/<scenario>/`.

use std::{path::PathBuf, process::Command};

use test_support::process::ServiceProcess;

use crate::{
    common::{TEST_SIGNING_KEY, redis_server::RedisServer, temp_dir},
    peers::{conformance_next, run_conformance_scenario},
};

/// Scenarios that cannot apply to the sidecar's task machinery, and why. They are still run and
/// reported; their failures are not the sidecar's.
const NOT_APPLICABLE: [(&str, &str); 3] = [
    (
        "tasks-mrtr-input",
        "needs tasks that park in `input_required` with `inputRequests` and resume on \
         `tasks/update`; a job record has no such state (a render never asks for input)",
    ),
    (
        "tasks-mrtr-composition",
        "needs a tool that gathers input by MRTR and then makes a task whose result echoes it; \
         the sidecar never asks for input, and a task's result is always a render's",
    ),
    (
        "tasks-status-notifications",
        "the suite itself SKIPs it, pending its rewrite onto subscriptions/listen",
    ),
];

/// Checks of applicable scenarios where the suite expects what the sidecar deliberately does
/// otherwise: `(scenario, check id, why)`. A listed check that starts passing fails the test,
/// so the list stays exact.
const KNOWN_DEVIATIONS: &[(&str, &str, &str)] = &[];

/// The fixture server binary. `cargo test` builds examples with the tests; a run of this test
/// binary alone (`--test it`) does not, so it is built here if missing.
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
            .current_dir(test_support::workspace_root())
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building the conformance_fixtures example"
        );
    }
    path
}

/// The suite's `tasks-*` server scenarios.
fn task_scenarios() -> Vec<String> {
    let listed = conformance_next()
        .args(["list", "--server"])
        .output()
        .expect("the suite lists its scenarios");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with("tasks-"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn conformance_tasks_scenarios_pass_on_the_sidecars_task_machinery() {
    // Many short polls with the suite's 5-10 s bounds: not alongside the timing-heavy tests.
    let _heavy = crate::common::one_heavy_test_at_a_time();
    let redis = RedisServer::start();
    let artifact_dir = temp_dir("conformance-fixtures");
    let key_prefix = format!("conf{}:", uuid::Uuid::new_v4().simple());
    let server = ServiceProcess::start(
        &fixture_server_binary(),
        &[
            ("MCP_LISTEN_ADDR", "127.0.0.1:0"),
            ("REDIS_URL", redis.url().as_str()),
            ("REDIS_KEY_PREFIX", key_prefix.as_str()),
            ("ARTIFACT_DIR", artifact_dir.to_str().unwrap()),
            ("ARTIFACT_SIGNING_KEY", TEST_SIGNING_KEY),
            // A cancelled fixture job learns it at its next renewal (every lease/3).
            ("JOB_LEASE", "3s"),
        ],
    );
    let url = server.url("/mcp");
    let results = test_support::process::target_dir().join("conformance-next/tasks");
    let _ = std::fs::remove_dir_all(&results);

    let scenarios = task_scenarios();
    for (scenario, _) in NOT_APPLICABLE {
        assert!(
            scenarios.iter().any(|listed| listed == scenario),
            "{scenario} is no longer a suite scenario: {scenarios:?}"
        );
    }
    let mut table = vec![];
    let mut problems = vec![];
    let mut seen = vec![];
    for scenario in &scenarios {
        let (_, checks) =
            run_conformance_scenario(conformance_next(), &url, scenario, &[], &results);
        let count = |status: &str| checks.iter().filter(|c| c["status"] == status).count();
        let (passed, failed, warnings, skipped) = (
            count("SUCCESS"),
            count("FAILURE"),
            count("WARNING"),
            count("SKIPPED"),
        );
        let not_applicable = NOT_APPLICABLE
            .iter()
            .find(|(name, _)| name == scenario)
            .map(|(_, why)| *why);
        let mut deviations = 0;
        if not_applicable.is_none() {
            if passed == 0 {
                problems.push(format!("{scenario}: no check passed"));
            }
            for check in &checks {
                let id = check["id"].as_str().unwrap_or_default();
                seen.push((scenario.clone(), id.to_owned()));
                let known = KNOWN_DEVIATIONS
                    .iter()
                    .any(|(name, check_id, _)| name == scenario && *check_id == id);
                match (check["status"].as_str(), known) {
                    (Some("FAILURE"), true) => deviations += 1,
                    (Some("FAILURE"), false) => problems.push(format!(
                        "{scenario}: {id} failed: {}",
                        check["errorMessage"].as_str().unwrap_or_default()
                    )),
                    (_, true) => problems.push(format!(
                        "{scenario}: {id} no longer fails; remove it from KNOWN_DEVIATIONS"
                    )),
                    _ => {}
                }
            }
        }
        let verdict = match not_applicable {
            Some(_) => "n/a".to_owned(),
            None if deviations > 0 => format!("applies ({deviations} known deviation)"),
            None => "applies".to_owned(),
        };
        table.push(format!(
            "| {scenario} | {passed} | {failed} | {warnings} | {skipped} | {verdict} |"
        ));
    }

    for (scenario, check, _) in KNOWN_DEVIATIONS {
        if !seen
            .iter()
            .any(|(name, id)| name == scenario && id == check)
        {
            problems.push(format!(
                "{scenario}: {check} was not run; remove it from KNOWN_DEVIATIONS"
            ));
        }
    }
    println!(
        "| scenario | passed | failed | warnings | skipped | verdict |\n|---|---|---|---|---|---|"
    );
    for row in &table {
        println!("{row}");
    }
    for (scenario, why) in NOT_APPLICABLE {
        println!("not applicable: {scenario}: {why}");
    }
    for (scenario, check, why) in KNOWN_DEVIATIONS {
        println!("known deviation: {scenario} / {check}: {why}");
    }
    let _ = std::fs::remove_dir_all(&artifact_dir);
    assert!(
        problems.is_empty(),
        "conformance tasks scenarios:\n{}",
        problems.join("\n")
    );
}
