//! The MCP conformance suite's 2026-07-28 and tasks-extension scenarios
//! (`@modelcontextprotocol/conformance@0.2.0-alpha.12`, installed as `conformance-next`), run
//! against a stateless sidecar as it is: no conformance fixture tools, prompts or resources.
//!
//! Most of the suite's server scenarios call fixture tools (`test_*`, `greet`, `slow_compute`,
//! `failing_job`, `json_schema_2020_12_tool`, tools with `x-mcp-header` annotations) or need
//! prompts, resources or completions, which the sidecar does not have; those scenarios are not
//! run. The ones below have checks that exercise the sidecar itself. Their few checks that
//! still need a fixture are listed in [`NOT_APPLICABLE`] with the reason; every other check
//! must pass (warnings are reported, not failed). Results go to `target/conformance-next/`.

use crate::{
    common::start_sidecar_process,
    peers::{conformance_next, run_conformance_scenario},
};
use test_support::{conformance::judge, workspace_root};

/// Core scenarios run at the 2026-07-28 wire (`--spec-version 2026-07-28`; without it the
/// suite picks 2025-11-25 for scenarios that span both).
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

/// Tasks-extension scenarios. The suite refuses `--spec-version` for extension scenarios and
/// runs them at the wire they were written for (2026-07-28).
const SCENARIOS_TASKS_EXTENSION: [&str; 3] = [
    "tasks-capability-negotiation",
    "tasks-dispatch-and-envelope",
    "tasks-request-headers",
];

/// `(scenario, check id, why it cannot pass here)`. A listed check that passes fails the test,
/// so that it is taken off the list and required from then on.
const NOT_APPLICABLE: &[(&str, &str, &str)] = &[
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
        "the sidecar has no prompts (-32601, as it declares no prompts capability)",
    ),
    (
        "caching",
        "sep-2549-resources-list-caching-hints",
        "the sidecar has no resources (-32601, as it declares no resources capability)",
    ),
    (
        "caching",
        "sep-2549-resources-templates-list-caching-hints",
        "the sidecar has no resources (-32601, as it declares no resources capability)",
    ),
    (
        "tasks-capability-negotiation",
        "sep-2663-server-rejects-undeclared-client",
        "calls the suite's `slow_compute` tool",
    ),
    (
        "tasks-capability-negotiation",
        "tasks-per-request-meta-opt-in",
        "calls the suite's `slow_compute` tool",
    ),
    (
        "tasks-dispatch-and-envelope",
        "tasks-server-directed-creation-no-hint",
        "calls the suite's `failing_job` tool",
    ),
    (
        "tasks-dispatch-and-envelope",
        "sep-2663-legacy-task-param-ignored",
        "calls the suite's `greet` tool",
    ),
    (
        "tasks-dispatch-and-envelope",
        "tasks-immediate-result-shortcut",
        "calls the suite's `slow_compute` tool",
    ),
    (
        "tasks-dispatch-and-envelope",
        "tasks-result-type-complete-on-non-task-responses",
        "calls the suite's `greet` tool",
    ),
    (
        "tasks-dispatch-and-envelope",
        "sep-2663-durable-create-strong-consistency",
        "calls the suite's `slow_compute` tool",
    ),
    (
        "tasks-request-headers",
        "tasks-headers-tolerate-mcp-method-on-tools-call",
        "calls the suite's `greet` tool",
    ),
    (
        "tasks-request-headers",
        "sep-2663-routing-headers-accepted-on-tasks-get",
        "needs a task of the suite's `slow_compute` tool",
    ),
    (
        "tasks-request-headers",
        "sep-2663-server-rejects-mismatched-mcp-name-on-tasks-get",
        "needs a task of the suite's `slow_compute` tool",
    ),
];

#[test]
fn conformance_next_passes_every_2026_07_28_and_tasks_check_that_applies() {
    let sidecar = start_sidecar_process(&[("MCP_SESSION_MODE", "stateless")]);
    let results = workspace_root().join("target/conformance-next");
    let _ = std::fs::remove_dir_all(&results);

    let runs = SCENARIOS_2026_07_28
        .iter()
        .map(|scenario| (*scenario, Some("2026-07-28")))
        .chain(
            SCENARIOS_TASKS_EXTENSION
                .iter()
                .map(|scenario| (*scenario, None)),
        );
    let mut table = vec![];
    let mut problems = vec![];
    for (scenario, spec_version) in runs {
        let (output, checks) = {
            let extra: &[&str] = match spec_version {
                Some(version) => &["--spec-version", version],
                None => &[],
            };
            run_conformance_scenario(
                conformance_next(),
                &sidecar.mcp_url(),
                scenario,
                extra,
                &results,
            )
        };
        let verdict = judge(
            "",
            scenario,
            &checks,
            NOT_APPLICABLE,
            "NOT_APPLICABLE",
            &output,
        );
        table.push(format!(
            "| {scenario} | {} | {} | {} | {} |",
            verdict.passed, verdict.failed, verdict.not_applicable, verdict.warnings
        ));
        problems.extend(verdict.problems);
    }

    println!("| scenario | passed | failed | not applicable | warnings |\n|---|---|---|---|---|");
    for row in &table {
        println!("{row}");
    }
    assert!(
        problems.is_empty(),
        "{} (results in {})",
        problems.join("\n"),
        results.display()
    );
}
