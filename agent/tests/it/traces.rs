//! One trace from the client's request to the uploaded artifact: the agent, the sidecar and
//! its worker export spans over OTLP/HTTP to a local receiver that decodes the real protobuf
//! payloads; the spans share the caller's trace id and link parent to child across processes,
//! even when a second sidecar reclaims the job. Without an endpoint nothing is exported; with a
//! dead one, requests are not held up.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::common::{Stack, read_events};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::otlp::{OtlpReceiver, ReceivedSpan};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn otel_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500".to_owned()),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect()
}

/// A fresh trace id and span id, as a caller would send them.
fn new_trace() -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let span = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (id, span)
}

/// Waits until the trace has spans named `names` (from any service).
async fn wait_for_spans(
    receiver: &OtlpReceiver,
    trace_id: &str,
    names: &[&str],
) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = receiver.trace(trace_id);
        if names
            .iter()
            .all(|name| spans.iter().any(|span| span.name == *name))
        {
            return spans;
        }
        let seen: Vec<_> = spans
            .iter()
            .map(|span| format!("{}:{}", span.service, span.name))
            .collect();
        assert!(
            Instant::now() < deadline,
            "missing some of {names:?}; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn find<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|span| span.service == service && span.name == name)
        .unwrap_or_else(|| panic!("no {service} span {name}"))
}

fn assert_child(child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(
        child.parent_span_id, parent.span_id,
        "{}:{} should be a child of {}:{}",
        child.service, child.name, parent.service, parent.name
    );
}

async fn start_render(stack: &Stack, traceparent: &str, spec: Value) -> String {
    let response = reqwest::Client::new()
        .post(stack.url("/v1/renders"))
        .header("traceparent", traceparent)
        .json(&json!({"spec": spec}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_chart_render_is_one_trace_across_the_agent_the_sidecar_and_its_worker() {
    let receiver = OtlpReceiver::start().await;
    let env = otel_env(&receiver.endpoint);
    let stack = Stack::start_with("stateless", &borrowed(&env), &borrowed(&env));
    let (trace_id, caller_span) = new_trace();
    let traceparent = format!("00-{trace_id}-{caller_span}-01");

    let spec = json!({"kind": "chart", "width": 400, "height": 300, "chart": {
        "type": "bar", "title": "Secret quarterly figures", "series": [{"name": "a", "points": [[1, 2], [2, 3]]}]}});
    let job = start_render(&stack, &traceparent, spec).await;
    let events = reqwest::get(stack.url(&format!("/v1/renders/{job}/events")))
        .await
        .unwrap();
    let events = read_events(events, Duration::from_secs(60)).await;
    assert_eq!(events.last().unwrap().data["state"], "succeeded");

    let spans = wait_for_spans(
        &receiver,
        &trace_id,
        &[
            "POST /v1/renders",
            "tools/call render",
            "render.job",
            "render.chart",
            "render.rasterize",
            "render.encode",
            "artifact.upload",
        ],
    )
    .await;
    let request = find(&spans, "agent", "POST /v1/renders");
    let client_call = find(&spans, "agent", "tools/call render");
    let tool = find(&spans, "mcp-sidecar", "tools/call render");
    let job_span = find(&spans, "mcp-sidecar", "render.job");
    assert_eq!(
        request.parent_span_id, caller_span,
        "the caller's span is the root's parent"
    );
    assert_eq!(
        (request.kind, client_call.kind, tool.kind),
        (SERVER, CLIENT, SERVER)
    );
    assert_child(client_call, request);
    assert_child(tool, client_call);
    assert_child(job_span, tool);
    for stage in [
        "render.chart",
        "render.rasterize",
        "render.encode",
        "artifact.upload",
    ] {
        assert_child(find(&spans, "mcp-sidecar", stage), job_span);
    }
    // Ids as attributes, never payloads.
    assert_eq!(job_span.attributes["job_id"], job);
    assert_eq!(tool.attributes["gen_ai.tool.name"], "render");
    for span in &spans {
        for value in span.attributes.values() {
            assert!(
                !value.contains("Secret quarterly"),
                "payload leaked into {}: {value}",
                span.name
            );
        }
    }

    // Logs written inside the trace carry Cloud Logging's trace fields.
    let sidecar = stack.sidecar.as_ref().unwrap();
    let succeeded = sidecar.logged("render job succeeded");
    let line = succeeded.iter().find(|line| line["job_id"] == job).unwrap();
    assert_eq!(line["logging.googleapis.com/trace"], trace_id.as_str());
    assert!(
        line["logging.googleapis.com/spanId"]
            .as_str()
            .unwrap()
            .len()
            == 16
    );

    // Metrics arrive too.
    let deadline = Instant::now() + Duration::from_secs(20);
    let wanted = [
        "mcp.tool.calls",
        "render.job.duration",
        "render.artifact.size",
        "render.queue.depth",
    ];
    loop {
        let names = receiver.metric_names();
        if wanted.iter().all(|metric| {
            names
                .iter()
                .any(|(service, name)| service == "mcp-sidecar" && name == metric)
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "metrics missing: {names:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reclaimed_by_a_second_sidecar_stays_in_the_callers_trace() {
    let receiver = OtlpReceiver::start().await;
    let mut env = otel_env(&receiver.endpoint);
    env.push(("JOB_LEASE", "2s".to_owned()));
    env.push(("RENDER_WORKERS", "1".to_owned()));
    let mut stack = Stack::start_with(
        "stateless",
        &borrowed(&env),
        &borrowed(&otel_env(&receiver.endpoint)),
    );
    let (trace_id, caller_span) = new_trace();
    // Slow enough to catch it running.
    let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="4096" height="2048">
        <defs><filter id="b"><feGaussianBlur stdDeviation="120"/></filter></defs>
        <g filter="url(#b)"><rect width="4096" height="2048" fill="teal"/><circle cx="900" cy="900" r="800" fill="orange"/></g></svg>"#;
    let job = start_render(
        &stack,
        &format!("00-{trace_id}-{caller_span}-01"),
        json!({"kind": "svg", "svg": svg, "width": 4096, "height": 2048}),
    )
    .await;
    let status_url = stack.url(&format!("/v1/renders/{job}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: Value = reqwest::get(&status_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["state"] == "running" {
            break;
        }
        assert_eq!(status["state"], "queued", "{status}");
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stack.kill_sidecar();
    // A second sidecar on the same Redis takes the job over once the lease lapses.
    let survivor = stack.extra_sidecar(&[]);
    let spans = {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let spans = receiver.trace(&trace_id);
            if spans.iter().any(|s| {
                s.name == "render.job"
                    && s.attributes.get("reclaimed").map(String::as_str) == Some("true")
                    && spans
                        .iter()
                        .any(|e| e.name == "artifact.upload" && e.parent_span_id == s.span_id)
            }) {
                break spans;
            }
            assert!(
                Instant::now() < deadline,
                "no reclaimed job in the trace: {spans:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let reclaimed = spans
        .iter()
        .find(|span| span.name == "render.job" && span.attributes["reclaimed"] == "true")
        .unwrap();
    assert_eq!(reclaimed.attributes["attempt"], "2");
    assert_eq!(reclaimed.attributes["job_id"], job);
    // Its parent is the render tool span of the first sidecar, as stored with the job.
    let stored: String = redis::cmd("HGET")
        .arg(format!("mcp:job:{job}"))
        .arg("trace")
        .query(&mut stack.redis.connection())
        .unwrap();
    let stored_span = stored.split('-').nth(2).unwrap();
    assert_eq!(reclaimed.parent_span_id, stored_span);
    if let Some(tool) = spans
        .iter()
        .find(|span| span.name == "tools/call render" && span.service == "mcp-sidecar")
    {
        assert_child(reclaimed, tool);
    }
    assert!(
        survivor
            .logged("render job succeeded")
            .iter()
            .any(|line| line["job_id"] == job)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_or_logged_about_it() {
    // Something listening where an exporter would go by default (OTLP/HTTP's 4318).
    let receiver = OtlpReceiver::start_on(4318)
        .await
        .expect("port 4318 is free for this test");
    let stack = Stack::start("stateless", &[]);
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let response = http
            .post(stack.url("/v1/tools/add"))
            .json(&json!({"a": 1, "b": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let job = start_render(&stack, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        json!({"kind": "chart", "chart": {"type": "line", "series": [{"name": "a", "points": [[0, 1]]}]}})).await;
    let events = reqwest::get(stack.url(&format!("/v1/renders/{job}/events")))
        .await
        .unwrap();
    read_events(events, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.requests(), 0, "nothing was exported");
    let sidecar = stack.sidecar.as_ref().unwrap();
    for logs in [&stack.agent.logs, &sidecar.logs] {
        for line in logs.lock().unwrap().iter() {
            let text = line.to_string().to_lowercase();
            assert!(
                !text.contains("opentelemetry") && !text.contains("otlp"),
                "logged: {line}"
            );
            assert!(
                line.get("logging.googleapis.com/trace").is_none(),
                "no trace fields: {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_never_fails_or_slows_requests() {
    let dead = format!("http://127.0.0.1:{}", test_support::free_port());
    let env = otel_env(&dead);
    let stack = Stack::start_with("stateless", &borrowed(&env), &borrowed(&env));
    let http = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for index in 0..300 {
        let started = Instant::now();
        let response = http
            .post(stack.url("/v1/tools/add"))
            .header(
                "traceparent",
                format!("00-{:032x}-{:016x}-01", index + 1, index + 1),
            )
            .json(&json!({"a": index, "b": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        slowest = slowest.max(started.elapsed());
    }
    println!("slowest of 300 traced calls with the collector down: {slowest:?}");
    // Export runs on its own thread and drops what it cannot send; a call never waits on it.
    assert!(
        slowest < Duration::from_millis(500),
        "slowest call {slowest:?}"
    );
    let job = start_render(&stack, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        json!({"kind": "chart", "chart": {"type": "bar", "series": [{"name": "a", "points": [[0, 1]]}]}})).await;
    let events = reqwest::get(stack.url(&format!("/v1/renders/{job}/events")))
        .await
        .unwrap();
    assert_eq!(
        read_events(events, Duration::from_secs(60))
            .await
            .last()
            .unwrap()
            .data["state"],
        "succeeded"
    );
}
