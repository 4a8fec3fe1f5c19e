//! Running one server scenario of the MCP conformance suite and judging its checks against the
//! checks a test excuses, the same way for every server the workspace puts under the suite.

use std::{
    path::Path,
    process::{Command, Output},
};

use serde_json::Value;

/// A finished command's exit code, stdout and stderr, for a failure message.
pub fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs one server scenario with `suite` (the suite's command, ready for its arguments) and
/// `extra` arguments against `url`; returns the suite's output and its checks (its own
/// `checks.json`, written under `results/<scenario>`).
pub fn run_scenario(
    mut suite: Command,
    url: &str,
    scenario: &str,
    extra: &[&str],
    results: &Path,
) -> (Output, Vec<Value>) {
    let out_dir = results.join(scenario);
    let output = suite
        .args(["server", "--url", url, "--scenario", scenario, "-o"])
        .arg(&out_dir)
        .args(extra)
        .output()
        .expect("the conformance suite runs");
    let checks_file = std::fs::read_dir(&out_dir)
        .ok()
        .and_then(|mut entries| entries.next())
        .and_then(Result::ok)
        .map(|entry| entry.path().join("checks.json"))
        .unwrap_or_else(|| panic!("{scenario}: no results written: {}", describe(&output)));
    let checks: Vec<Value> = serde_json::from_slice(
        &std::fs::read(&checks_file).unwrap_or_else(|_| panic!("{}", checks_file.display())),
    )
    .expect("checks.json is a JSON array");
    (output, checks)
}

/// What one scenario's checks came to.
#[derive(Debug, Default)]
pub struct Verdict {
    pub passed: usize,
    /// Failures that are not excused.
    pub failed: usize,
    /// Failures that are excused.
    pub not_applicable: usize,
    pub warnings: usize,
    /// What makes the scenario fail, one line each.
    pub problems: Vec<String>,
}

/// Judges `checks` of `scenario` against `excused`, `(scenario, check id, why)` entries named
/// `list` in the messages: a failure that is not excused is a problem, and so is an excused
/// check that now passes (so that it is taken off the list and required from then on), and a
/// scenario where no check passed (`output` then says why). `label` starts every problem line
/// (which suite ran, say), or is empty.
pub fn judge(
    label: &str,
    scenario: &str,
    checks: &[Value],
    excused: &[(&str, &str, &str)],
    list: &str,
    output: &Output,
) -> Verdict {
    let count = |status: &str| checks.iter().filter(|c| c["status"] == status).count();
    let failures = count("FAILURE");
    let mut verdict = Verdict {
        passed: count("SUCCESS"),
        warnings: count("WARNING"),
        ..Verdict::default()
    };
    let prefix = if label.is_empty() {
        scenario.to_owned()
    } else {
        format!("{label} {scenario}")
    };
    let excuses = || excused.iter().filter(|(name, ..)| *name == scenario);
    for check in checks.iter().filter(|c| c["status"] == "FAILURE") {
        let id = check["id"].as_str().unwrap_or_default();
        if excuses().any(|(_, excused_id, _)| *excused_id == id) {
            verdict.not_applicable += 1;
        } else {
            verdict
                .problems
                .push(format!("{prefix}: {id} failed: {}", check["errorMessage"]));
        }
    }
    for (_, id, why) in excuses() {
        let seen = |status: &str| {
            checks
                .iter()
                .any(|c| c["id"] == *id && c["status"] == status)
        };
        if seen("SUCCESS") && !seen("FAILURE") {
            verdict.problems.push(format!(
                "{prefix}: {id} now passes; take it off {list} ({why})"
            ));
        }
    }
    if verdict.passed == 0 {
        verdict
            .problems
            .push(format!("{prefix}: no check passed: {}", describe(output)));
    }
    verdict.failed = failures - verdict.not_applicable;
    verdict
}
