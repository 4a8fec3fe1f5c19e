//! The web page in real headless Chromium (Debian's `chromium`, driven by `playwright-core`)
//! against the real agent, sidecar and Redis: submit a chart, watch the progress bar advance,
//! see the image; every Chart and Vega-Lite example renders; Recent renders shows the jobs with
//! thumbnails, in a second tab too; the form works from the keyboard and on a 390 px phone; a
//! bad spec and a failing SVG show their errors in plain words. Screenshots are kept under
//! `target/test-artifacts/web/`.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use crate::common::Stack;
use serde_json::Value;
use test_support::{installed_tool, workspace_root};

/// Runs `script` (under `agent/tests/browser/`) in headless Chromium against `stack`, with
/// `args` after the base URL and the screenshot directory; its JSON summary, checks passed.
fn browser_test(script: &str, stack: &Stack, args: &[&str]) -> Value {
    let chromium = std::path::Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "Debian's chromium is missing: apt-get install chromium (.ci/run does)"
    );
    let screenshots = workspace_root().join("target/test-artifacts/web");
    std::fs::create_dir_all(&screenshots).unwrap();
    let output = Command::new(installed_tool("node/node_modules/.bin/node"))
        .arg(workspace_root().join("agent/tests/browser").join(script))
        .arg(stack.url(""))
        .arg(&screenshots)
        .args(args)
        .env("NODE_TOOLS", installed_tool("node"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test {script} {args:?} failed:\n{stdout}\n{stderr}"
    );
    let summary: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("a JSON summary line:\n{stdout}\n{stderr}"));
    println!("{script} {args:?}: {summary}");
    assert_eq!(summary["checks"], "passed");
    summary
}

#[test]
fn the_page_renders_a_chart_with_live_progress_and_shows_errors_plainly() {
    let stack = Stack::start("stateless", &[]);
    let screenshots = workspace_root().join("target/test-artifacts/web");
    let summary = browser_test("web_page.test.mjs", &stack, &[]);
    assert_eq!(summary["image_width"], 800);
    assert!(
        summary["progress_seen"].as_array().unwrap().len() >= 2,
        "{summary}"
    );
    assert!(summary["error_shown"].as_str().unwrap().contains("width"));
    let examples = summary["examples_rendered"].as_object().unwrap();
    assert_eq!(examples.len(), 10, "{summary}");
    assert_eq!(examples["pie"], "640x420");
    assert_eq!(examples["vl-bar-sum"], "800x500");
    assert_eq!(summary["recent_second_tab"], true, "{summary}");
    for shot in [
        "render-success.png",
        "render-pie.png",
        "render-vega-lite.png",
        "recent-renders.png",
        "render-failed.png",
        "page-phone.png",
    ] {
        assert!(screenshots.join(shot).exists(), "{shot}");
    }
}

/// The chat page's browser test against `stack` in `mode` (`model` or `no-model`).
fn chat_page_test(stack: &Stack, mode: &str) -> Value {
    browser_test("chat.test.mjs", stack, &[mode])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_streams_shows_tool_cards_and_renders_stops_and_survives_a_reload() {
    use crate::chat_stream::{Plot, StreamingModel, openai_stack_with};
    let model = StreamingModel::start().await;
    model.set(Plot::ByMessage);
    // Tasks polled often, so the page sees the render's stages go by.
    let stack = openai_stack_with(&model, &[("TASK_POLL_INTERVAL", "50ms")]);
    let summary = tokio::task::block_in_place(|| chat_page_test(&stack, "model"));
    assert!(!summary["partial_texts"].as_array().unwrap().is_empty());
    assert_eq!(summary["image_width"], 1024);
    assert_eq!(summary["pie_image_width"], 480, "{summary}");
    assert!(
        summary["render_progress"].as_array().unwrap().len() >= 2,
        "the progress bar moved: {summary}"
    );
    for shot in [
        "chat-streaming.png",
        "chat-answered.png",
        "chat-render.png",
        "chat-pie.png",
        "chat-stopped.png",
        "chat-reloaded.png",
    ] {
        assert!(
            workspace_root()
                .join("target/test-artifacts/web")
                .join(shot)
                .exists(),
            "{shot}"
        );
    }
    // Stop cancelled the slow render the turn was waiting for.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let slow = loop {
        let listed: Value = reqwest::Client::new()
            .post(stack.url("/v1/tools/list_renders"))
            .json(&serde_json::json!({"limit": 10}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let jobs = listed["structuredContent"]["jobs"]
            .as_array()
            .unwrap()
            .clone();
        // The slow SVG is the render that was not a 200-pixel chart: its total stages differ
        // from nothing we can see here, so find the one that is not succeeded.
        let unfinished: Vec<Value> = jobs
            .into_iter()
            .filter(|job| job["state"] != "succeeded")
            .collect();
        if unfinished.iter().all(|job| job["state"] == "cancelled") && !unfinished.is_empty()
            || std::time::Instant::now() > deadline
        {
            break unfinished;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        !slow.is_empty() && slow.iter().all(|job| job["state"] == "cancelled"),
        "{slow:?}"
    );
}

#[test]
fn without_a_model_the_chat_panel_says_so_and_the_render_form_still_works() {
    let stack = Stack::start("stateless", &[]);
    let summary = chat_page_test(&stack, "no-model");
    assert!(
        summary["notice"].as_str().unwrap().contains("LLM_PROVIDER"),
        "{summary}"
    );
}
