//! The agent's REST + SSE API against the real sidecar and a real Redis, all separate
//! processes on loopback, wired as on Cloud Run (the agent in front, the sidecar behind it on
//! a loopback port, downloads proxied through the agent).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::common::{Stack, read_events, start_render_with_events};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MODES: [&str; 2] = ["stateless", "stateful"];

fn chart(width: u32, height: u32) -> Value {
    json!({"kind": "chart", "width": width, "height": height, "chart": {
        "type": "line", "title": "Signups", "x_label": "day", "y_label": "count",
        "series": [{"name": "web", "points": [[1, 3], [2, 5], [3, 4], [4, 8]]}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_listed_and_called_through_rest_in_both_session_modes() {
    for mode in MODES {
        let stack = Stack::start(mode, &[]);
        let http = reqwest::Client::new();

        let listed = crate::common::get_json(&http, &stack.url("/v1/tools")).await;
        let names: Vec<&str> = listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        for expected in [
            "add",
            "subtract",
            "echo",
            "start_render",
            "get_render_status",
        ] {
            assert!(names.contains(&expected), "{mode}: {names:?}");
        }
        assert_eq!(listed["tools"][0]["server"], "sidecar");
        assert!(listed["tools"][0]["input_schema"]["properties"]["a"].is_object());

        let sum = http
            .post(stack.url("/v1/tools/add"))
            .json(&json!({"a": 2, "b": 3}))
            .send()
            .await
            .unwrap();
        assert_eq!(sum.status(), StatusCode::OK, "{mode}");
        let sum: Value = sum.json().await.unwrap();
        assert_eq!(sum["structuredContent"], json!({"sum": 5}));
        assert_eq!(sum["isError"], false);

        // Bad arguments: the tool's own message, 422, with its code.
        let bad = http
            .post(stack.url("/v1/tools/add"))
            .json(&json!({"a": "two", "b": 3}))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let bad: Value = bad.json().await.unwrap();
        assert!(
            bad["error"].as_str().unwrap().contains("invalid arguments"),
            "{bad}"
        );
        assert_eq!(bad["code"], "invalid_arguments");

        let unknown = http
            .post(stack.url("/v1/tools/multiply"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        assert!(
            unknown.json::<Value>().await.unwrap()["error"]
                .as_str()
                .unwrap()
                .contains("multiply")
        );

        for body in ["[1, 2]", "{not json"] {
            let response = http
                .post(stack.url("/v1/tools/add"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
            assert!(response.json::<Value>().await.unwrap()["error"].is_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_render_is_followed_over_sse_to_succeeded_and_downloaded_through_the_agent() {
    for mode in MODES {
        let stack = Stack::start(mode, &[]);
        let http = reqwest::Client::new();
        let started = http
            .post(stack.url("/v1/renders"))
            .json(&json!({"spec": chart(640, 360)}))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), StatusCode::ACCEPTED, "{mode}");
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let started: Value = started.json().await.unwrap();
        let job = started["job_id"].as_str().unwrap().to_owned();
        // Queued as a rule; a worker may already have taken it by the time it is answered.
        assert!(
            ["queued", "running", "succeeded"].contains(&started["state"].as_str().unwrap_or("")),
            "{started}"
        );
        assert_eq!(location, format!("/v1/renders/{job}"));
        assert_eq!(
            started["links"]["events"],
            format!("/v1/renders/{job}/events")
        );

        let events = http
            .get(stack.url(&format!("/v1/renders/{job}/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(events.status(), StatusCode::OK);
        assert!(
            events.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let events = read_events(events, Duration::from_secs(60)).await;
        let done = events.last().unwrap();
        assert_eq!(done.event, "done", "{events:?}");
        assert_eq!(done.data["state"], "succeeded");
        assert_eq!(done.data["stage"], done.data["total_stages"]);
        for event in &events[..events.len() - 1] {
            assert_eq!(event.event, "progress");
            assert!(["queued", "running"].contains(&event.data["state"].as_str().unwrap()));
        }
        // One event per change: no two progress events alike in a row.
        for pair in events.windows(2) {
            assert_ne!(
                pair[0].data["message"], pair[1].data["message"],
                "{events:?}"
            );
        }

        let url = done.data["result"]["url"].as_str().unwrap();
        assert!(
            url.starts_with(&stack.url("/files/")),
            "downloads go through the agent: {url}"
        );
        let download = http.get(url).send().await.unwrap();
        assert_eq!(download.status(), StatusCode::OK);
        assert_eq!(download.headers()["content-type"], "image/png");
        let bytes = download.bytes().await.unwrap();
        assert_eq!(
            bytes.len() as u64,
            done.data["result"]["bytes"].as_u64().unwrap()
        );
        let pixmap = resvg::tiny_skia::Pixmap::decode_png(&bytes).unwrap();
        assert_eq!((pixmap.width(), pixmap.height()), (640, 360));

        let status = crate::common::get_json(&http, &stack.url(&location)).await;
        assert_eq!(status["state"], "succeeded");
        assert!(status["result"]["url"].as_str().is_some());
        // A tampered download link is refused by the sidecar, through the proxy.
        let tampered = url.replace("signature=", "signature=00");
        assert_eq!(
            http.get(tampered).send().await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_errors_come_back_with_the_right_status() {
    let stack = Stack::start("stateless", &[]);
    let http = reqwest::Client::new();
    let bad = http
        .post(stack.url("/v1/renders"))
        .json(
            &json!({"spec": {"kind": "chart", "width": 0, "chart": {"type": "bar", "series": []}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["code"], "invalid_arguments");
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("invalid render spec"),
        "{bad}"
    );

    let missing = http
        .post(stack.url("/v1/renders"))
        .json(&json!({"specs": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);

    for id in [
        "0123456789abcdef0123456789abcdef",
        "not-a-job",
        "..%2F..%2Fetc",
    ] {
        for suffix in ["", "/events"] {
            let response = http
                .get(stack.url(&format!("/v1/renders/{id}{suffix}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{id}{suffix}");
            assert!(response.json::<Value>().await.unwrap()["error"].is_string());
        }
    }

    // A failing SVG: the stream ends with `done` carrying the error.
    let started: Value = http
        .post(stack.url("/v1/renders"))
        .json(&json!({"spec": {"kind": "svg", "svg": "<svg xmlns='http://www.w3.org/2000/svg'><g></svg>"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = started["job_id"].as_str().unwrap();
    let events = http
        .get(stack.url(&format!("/v1/renders/{job}/events")))
        .send()
        .await
        .unwrap();
    let events = read_events(events, Duration::from_secs(60)).await;
    let done = events.last().unwrap();
    assert_eq!(
        (done.event.as_str(), done.data["state"].as_str()),
        ("done", Some("failed"))
    );
    assert!(
        done.data["error"]
            .as_str()
            .unwrap()
            .contains("the SVG is not valid")
    );
    assert!(done.data.get("result").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sidecar_killed_the_agent_answers_503_and_recovers_when_it_returns() {
    let mut stack = Stack::start("stateful", &[]);
    let http = reqwest::Client::new();
    let add_url = stack.url("/v1/tools/add");
    let add = || http.post(&add_url).json(&json!({"a": 1, "b": 1})).send();
    assert_eq!(add().await.unwrap().status(), StatusCode::OK);
    let agent_pid = stack.agent.pid();

    stack.kill_sidecar();
    let down = add().await.unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        down.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("unavailable")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = http.get(stack.url("/readyz")).send().await.unwrap();
        if ready.status() == StatusCode::SERVICE_UNAVAILABLE {
            let body: Value = ready.json().await.unwrap();
            assert_eq!(body["ok"], false);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never noticed the sidecar was gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renders = http
        .post(stack.url("/v1/renders"))
        .json(&json!({"spec": chart(100, 100)}))
        .send()
        .await
        .unwrap();
    assert_eq!(renders.status(), StatusCode::SERVICE_UNAVAILABLE);

    stack.restart_sidecar();
    stack.wait_ready(Duration::from_secs(30));
    let again = add().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK, "recovered by itself");
    assert_eq!(
        again.json::<Value>().await.unwrap()["structuredContent"]["sum"],
        2
    );
    assert_eq!(stack.agent.pid(), agent_pid, "the same agent process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_and_the_web_page_are_served() {
    let stack = Stack::start("stateless", &[]);
    let http = reqwest::Client::new();
    let health = crate::common::get_json(&http, &stack.url("/healthz")).await;
    assert_eq!(health, json!({"ok": true}));
    let ready = crate::common::get_json(&http, &stack.url("/readyz")).await;
    assert_eq!(ready["servers"]["sidecar"], "connected");
    for (path, content_type) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
    ] {
        let response = http.get(stack.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
        assert!(response.headers().contains_key("content-security-policy"));
    }
    let page = http
        .get(stack.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external resources"
    );
    assert_eq!(
        http.get(stack.url("/nope")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_render_ends_its_event_stream_with_done_in_the_cancelled_state() {
    // No workers: the job stays queued until it is cancelled.
    let stack = Stack::start_with("stateless", &[("RENDER_WORKERS", "0")], &[]);
    stack.wait_ready(Duration::from_secs(20));
    let http = reqwest::Client::new();
    let (job, events) = start_render_with_events(
        &http,
        &stack,
        json!({"kind": "svg", "svg": "<svg xmlns='http://www.w3.org/2000/svg' width='4' height='4'/>"}),
    )
    .await;

    let cancelled = http
        .post(stack.url("/v1/tools/cancel_render"))
        .json(&json!({"job_id": job}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);

    let events = read_events(events, Duration::from_secs(30)).await;
    let done = events.last().unwrap();
    assert_eq!(
        (done.event.as_str(), done.data["state"].as_str()),
        ("done", Some("cancelled")),
        "{events:?}"
    );
    assert!(done.data.get("error").is_none() && done.data.get("result").is_none());
}
