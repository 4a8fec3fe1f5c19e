//! MCP tasks (extension `io.modelcontextprotocol/tasks`) through the agent, against the real
//! sidecar and Redis: renders followed with `tasks/get`, the job tools kept for a sidecar
//! without the extension, and any tool's task over REST (`Prefer: respond-async`,
//! `/v1/tasks/{id}`). A recording proxy between the agent and the sidecar shows which MCP
//! requests the agent made.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::common::{
    Stack,
    fakes::{McpRecorder, RecordedRequest},
    get_json, read_events,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{free_port, process::ServiceProcess};

fn chart() -> Value {
    json!({"kind": "chart", "width": 480, "height": 320, "chart": {
        "type": "bar", "title": "Tasks", "series": [{"name": "a", "points": [[1, 2], [2, 3], [3, 1]]}]}})
}

fn tiny_svg() -> Value {
    json!({"kind": "svg", "svg": "<svg xmlns='http://www.w3.org/2000/svg' width='4' height='4'/>"})
}

/// Redis, the sidecar behind a recording proxy (which hides the tasks extension when
/// `hide_tasks`), and the agent talking to the proxy.
async fn stack_behind_recorder(
    hide_tasks: bool,
    sidecar_extra: &[(&str, &str)],
) -> (Stack, McpRecorder) {
    let listen = format!("127.0.0.1:{}", free_port());
    let recorder = McpRecorder::start(format!("http://{listen}"), hide_tasks).await;
    let mut sidecar = vec![("MCP_LISTEN_ADDR", listen.as_str())];
    sidecar.extend_from_slice(sidecar_extra);
    let stack = Stack::start_with(
        "stateless",
        &sidecar,
        &[("MCP_SERVER_URL", recorder.url.as_str())],
    );
    (stack, recorder)
}

async fn post_render(http: &reqwest::Client, stack: &Stack, spec: Value) -> String {
    let started = http
        .post(stack.url("/v1/renders"))
        .json(&json!({ "spec": spec }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let started: Value = started.json().await.unwrap();
    // Queued as a rule; a worker may already have taken it by the time the task is read.
    assert!(
        ["queued", "running", "succeeded"].contains(&started["state"].as_str().unwrap_or("")),
        "{started}"
    );
    started["job_id"].as_str().unwrap().to_owned()
}

/// `POST /v1/tools/render` with `Prefer: respond-async`: 202, and the task's id.
async fn render_as_task(http: &reqwest::Client, stack: &Stack, name: &str, spec: Value) -> String {
    let accepted = http
        .post(stack.url(&format!("/v1/tools/{name}")))
        .header("prefer", "respond-async")
        .json(&json!({ "spec": spec }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    assert_eq!(accepted.headers()["preference-applied"], "respond-async");
    let location = accepted.headers()["location"].to_str().unwrap().to_owned();
    let task: Value = accepted.json().await.unwrap();
    let id = task["taskId"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/tasks/{id}"));
    assert_eq!(task["links"]["self"], location);
    assert_eq!(task["links"]["events"], format!("{location}/events"));
    assert_eq!(task["status"], "working", "{task}");
    assert!(task["pollIntervalMs"].as_u64().unwrap() > 0, "{task}");
    assert!(task.get("resultType").is_none(), "{task}");
    id
}

fn targets(requests: &[RecordedRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|request| {
            format!(
                "{} {}",
                request.method,
                request.target.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_is_started_as_a_task_and_followed_with_tasks_get_at_its_poll_interval() {
    let (stack, recorder) = stack_behind_recorder(false, &[("TASK_POLL_INTERVAL", "300ms")]).await;
    let http = reqwest::Client::new();

    let job = post_render(&http, &stack, chart()).await;
    let stream = http
        .get(stack.url(&format!("/v1/renders/{job}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let events = read_events(stream, Duration::from_secs(60)).await;
    let done = events.last().unwrap();
    assert_eq!(
        (done.event.as_str(), done.data["state"].as_str()),
        ("done", Some("succeeded")),
        "{events:?}"
    );
    assert_eq!(done.data["stage"], done.data["total_stages"]);
    assert!(done.data["result"]["url"].as_str().is_some(), "{done:?}");
    for event in &events[..events.len() - 1] {
        assert_eq!(event.event, "progress");
        assert!(["queued", "running"].contains(&event.data["state"].as_str().unwrap()));
        assert!(
            event.data["total_stages"].as_u64().unwrap() > 0,
            "{event:?}"
        );
    }
    for pair in events.windows(2) {
        assert_ne!(
            pair[0].data, pair[1].data,
            "one event per change: {events:?}"
        );
    }
    let status = get_json(&http, &stack.url(&format!("/v1/renders/{job}"))).await;
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["result"], done.data["result"]);
    let download = http
        .get(status["result"]["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);

    // Started with `render` as a task, followed with tasks/get; never the job tools that
    // tasks replace (the result comes with the completed task).
    let render = recorder.recorded("tools/call", Some("render"));
    assert_eq!(render.len(), 1);
    assert!(render[0].declares_tasks(), "{:?}", render[0].params);
    let polls = recorder.recorded("tasks/get", Some(&job));
    assert!(polls.len() >= 2, "{polls:?}");
    for poll in &polls {
        assert!(poll.declares_tasks());
        assert_eq!(poll.mcp_name.as_deref(), Some(job.as_str()));
    }
    let everything = targets(&recorder.requests.lock().unwrap());
    for replaced in ["start_render", "get_render_result"] {
        assert!(
            !everything.iter().any(|call| call.ends_with(replaced)),
            "{everything:?}"
        );
    }
    // The stream waited the task's pollIntervalMs (300 ms), not RENDER_POLL_INTERVAL (50 ms).
    let stream_polls = &polls[..polls.len() - 1];
    for pair in stream_polls.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(250), "polled after {gap:?}");
    }
    // Calls that will not follow a task do not declare the extension.
    for listed in recorder.recorded("tools/list", None) {
        assert!(!listed.declares_tasks());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_tasks_extension_renders_go_through_the_job_tools_as_before() {
    let (stack, recorder) = stack_behind_recorder(true, &[]).await;
    let http = reqwest::Client::new();

    let job = post_render(&http, &stack, chart()).await;
    let stream = http
        .get(stack.url(&format!("/v1/renders/{job}/events")))
        .send()
        .await
        .unwrap();
    let events = read_events(stream, Duration::from_secs(60)).await;
    let done = events.last().unwrap();
    assert_eq!(done.data["state"], "succeeded", "{events:?}");
    assert!(done.data["result"]["url"].as_str().is_some());

    // A preference the server cannot honour is not applied.
    let sum = http
        .post(stack.url("/v1/tools/add"))
        .header("prefer", "respond-async")
        .json(&json!({"a": 2, "b": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(sum.status(), StatusCode::OK);
    assert!(sum.headers().get("preference-applied").is_none());

    let everything = targets(&recorder.requests.lock().unwrap());
    for used in [
        "tools/call start_render",
        "tools/call get_render_status",
        "tools/call get_render_result",
    ] {
        assert!(everything.iter().any(|call| call == used), "{everything:?}");
    }
    assert!(
        !everything
            .iter()
            .any(|call| call.starts_with("tasks/") || call == "tools/call render"),
        "{everything:?}"
    );
    assert!(
        !recorder
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(RecordedRequest::declares_tasks)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_respond_async_makes_a_task_followed_over_get_and_events_from_any_instance() {
    let (stack, _recorder) = stack_behind_recorder(false, &[]).await;
    let http = reqwest::Client::new();

    // Without the preference, or for a tool the server runs at once: the result, as before.
    for prefer in [None, Some("respond-async, wait=5")] {
        let mut request = http.post(stack.url("/v1/tools/add"));
        if let Some(prefer) = prefer {
            request = request.header("prefer", prefer);
        }
        let sum = request.json(&json!({"a": 2, "b": 3})).send().await.unwrap();
        assert_eq!(sum.status(), StatusCode::OK, "{prefer:?}");
        assert!(sum.headers().get("preference-applied").is_none());
        assert_eq!(
            sum.json::<Value>().await.unwrap()["structuredContent"]["sum"],
            5
        );
    }

    let id = render_as_task(&http, &stack, "render", chart()).await;
    let stream = http
        .get(stack.url(&format!("/v1/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let events = read_events(stream, Duration::from_secs(60)).await;
    let done = events.last().unwrap();
    assert_eq!(done.event, "done", "{events:?}");
    assert_eq!(done.data["status"], "completed", "{done:?}");
    assert_eq!(done.data["taskId"], id);
    assert_eq!(done.data["server"], "sidecar");
    let output = &done.data["result"]["structuredContent"];
    assert_eq!(output["job_id"], id);
    assert!(output["url"].as_str().is_some(), "{done:?}");
    for event in &events[..events.len() - 1] {
        assert_eq!(
            (event.event.as_str(), event.data["status"].as_str()),
            ("progress", Some("working"))
        );
    }

    let task = get_json(&http, &stack.url(&format!("/v1/tasks/{id}"))).await;
    assert_eq!(task["status"], "completed");
    assert_eq!(task["result"]["isError"], false);
    assert_eq!(
        task["result"]["structuredContent"]["sha256"],
        output["sha256"]
    );
    // The task is the render job: the renders API knows it by the same id.
    let render = get_json(&http, &stack.url(&format!("/v1/renders/{id}"))).await;
    assert_eq!(render["state"], "succeeded");

    // Another agent instance, which never saw the task, finds it on the sidecar (its tasks
    // live in Redis), as on Cloud Run when requests land on different instances.
    let sidecar_url = format!("http://{}/mcp", stack.sidecar.as_ref().unwrap().addr);
    let other = ServiceProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_agent")),
        &[
            ("PORT", "0"),
            ("BIND_ADDR", "127.0.0.1"),
            ("MCP_SERVER_URL", sidecar_url.as_str()),
        ],
    );
    let elsewhere = get_json(&http, &other.url(&format!("/v1/tasks/{id}"))).await;
    assert_eq!(
        (&elsewhere["status"], &elsewhere["server"]),
        (&json!("completed"), &json!("sidecar")),
        "{elsewhere}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_another_configured_server_is_followed_on_that_server() {
    // The second server is another sidecar (tools clash, so they are namespaced).
    let (stack, recorder) = stack_behind_recorder(false, &[]).await;
    let second = stack.extra_sidecar(&[]);
    let config = test_support::temp_dir("mcp-config").join("mcp.json");
    std::fs::write(
        &config,
        json!({"mcpServers": {"other": {"url": second.url("/mcp")}}}).to_string(),
    )
    .unwrap();
    let agent = ServiceProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_agent")),
        &[
            ("PORT", "0"),
            ("BIND_ADDR", "127.0.0.1"),
            ("MCP_SERVER_URL", recorder.url.as_str()),
            ("MCP_CONFIG", config.to_str().unwrap()),
        ],
    );
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = get_json(&http, &agent.url("/v1/tools")).await;
        if listed["tools"]
            .as_array()
            .is_some_and(|tools| tools.iter().any(|tool| tool["name"] == "other__render"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accepted = http
        .post(agent.url("/v1/tools/other__render"))
        .header("prefer", "respond-async")
        .json(&json!({ "spec": tiny_svg() }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let id = accepted.json::<Value>().await.unwrap()["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let task = loop {
        let task = get_json(&http, &agent.url(&format!("/v1/tasks/{id}"))).await;
        if task["status"] != "working" {
            break task;
        }
        assert!(std::time::Instant::now() < deadline, "{task}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(task["status"], "completed", "{task}");
    // Asked where it was made (the sidecar, asked first otherwise, shares the Redis and
    // would know it too).
    assert_eq!(task["server"], "other");
    assert!(recorder.recorded("tasks/get", Some(&id)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_cancels_a_waiting_task_and_a_waiting_render() {
    // No workers: jobs stay queued until cancelled.
    let (stack, recorder) = stack_behind_recorder(false, &[("RENDER_WORKERS", "0")]).await;
    let http = reqwest::Client::new();

    let id = render_as_task(&http, &stack, "render", tiny_svg()).await;
    let stream = http
        .get(stack.url(&format!("/v1/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let cancelled = http
        .delete(stack.url(&format!("/v1/tasks/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::ACCEPTED);
    assert_eq!(
        cancelled.json::<Value>().await.unwrap()["status"],
        "cancelled"
    );
    let events = read_events(stream, Duration::from_secs(30)).await;
    let done = events.last().unwrap();
    assert_eq!(
        (done.event.as_str(), done.data["status"].as_str()),
        ("done", Some("cancelled")),
        "{events:?}"
    );
    assert_eq!(recorder.recorded("tasks/cancel", Some(&id)).len(), 1);

    let job = post_render(&http, &stack, tiny_svg()).await;
    let stream = http
        .get(stack.url(&format!("/v1/renders/{job}/events")))
        .send()
        .await
        .unwrap();
    let cancelled = http
        .delete(stack.url(&format!("/v1/renders/{job}")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::ACCEPTED);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let events = read_events(stream, Duration::from_secs(30)).await;
    let done = events.last().unwrap();
    assert_eq!(
        (done.event.as_str(), done.data["state"].as_str()),
        ("done", Some("cancelled")),
        "{events:?}"
    );
    assert!(done.data.get("error").is_none() && done.data.get("result").is_none());
    assert_eq!(recorder.recorded("tasks/cancel", Some(&job)).len(), 1);
    assert!(
        recorder
            .recorded("tools/call", Some("cancel_render"))
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_task_ids_are_404_with_a_json_error() {
    let stack = Stack::start("stateless", &[]);
    let http = reqwest::Client::new();
    let long = "a".repeat(300);
    for id in [
        "0123456789abcdef0123456789abcdef",
        "not-a-task",
        "..%2F..%2Fetc",
        "caf%C3%A9%20%2F",
        "%FF%FE",
        long.as_str(),
    ] {
        for (method, suffix) in [
            (reqwest::Method::GET, ""),
            (reqwest::Method::GET, "/events"),
            (reqwest::Method::DELETE, ""),
        ] {
            let response = http
                .request(
                    method.clone(),
                    stack.url(&format!("/v1/tasks/{id}{suffix}")),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::NOT_FOUND,
                "{method} {id}{suffix}"
            );
            let body: Value = response.json().await.unwrap();
            assert!(
                body["error"].as_str().unwrap().contains("no task"),
                "{body}"
            );
        }
    }
    let unknown_render = http
        .delete(stack.url("/v1/renders/0123456789abcdef0123456789abcdef"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_render.status(), StatusCode::NOT_FOUND);
}
