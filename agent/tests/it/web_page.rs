//! The web page in real headless Chromium (Debian's `chromium`, driven by `playwright-core`)
//! against the real agent, sidecar and Redis: submit a chart, watch the progress bar advance,
//! see the image; a bad spec and a failing SVG show their errors in plain words. Screenshots
//! are kept under `target/test-artifacts/web/`.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use crate::common::Stack;
use serde_json::Value;
use test_support::{installed_tool, workspace_root};

#[test]
fn the_page_renders_a_chart_with_live_progress_and_shows_errors_plainly() {
    let chromium = std::path::Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "Debian's chromium is missing: apt-get install chromium (.ci/run does)"
    );
    let stack = Stack::start("stateless", &[]);
    let screenshots = workspace_root().join("target/test-artifacts/web");
    std::fs::create_dir_all(&screenshots).unwrap();

    let output = Command::new(installed_tool("node/node_modules/.bin/node"))
        .arg(workspace_root().join("agent/tests/browser/web_page.test.mjs"))
        .arg(stack.url(""))
        .arg(&screenshots)
        .env("NODE_TOOLS", installed_tool("node"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    let summary: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("a JSON summary line:\n{stdout}\n{stderr}"));
    println!("{summary}");
    assert_eq!(summary["checks"], "passed");
    assert_eq!(summary["image_width"], 800);
    assert!(
        summary["progress_seen"].as_array().unwrap().len() >= 2,
        "{summary}"
    );
    assert!(summary["error_shown"].as_str().unwrap().contains("width"));
    assert!(screenshots.join("render-success.png").exists());
}
