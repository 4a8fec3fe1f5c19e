//! The async render-job contract through an MCP client, against the real sidecar with a real
//! redis-server and the local artifact store: start → poll → succeeded → URL → download.
#![allow(clippy::unwrap_used)]

use std::{
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::common::{
    call, jobs::*, mcp_client, redis_server::RedisServer, spawn_sidecar, spawn_sidecar_on,
    structured_ok, tool_error_code, tool_error_message,
};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_chart_job_goes_from_queued_to_a_downloadable_png_of_the_requested_size() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = mcp_client(&sidecar.mcp_url()).await;

    let job = start(&client, chart_spec(640, 480, "png")).await;
    let early = result(&client, &job).await;
    if early["state"] != "succeeded" {
        assert_eq!(early["ready"], false, "not ready before success: {early}");
        assert!(early.get("url").is_none());
    }
    let (status, messages) = wait_terminal(&client, &job, LIMIT).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["total_stages"], 4);
    assert_eq!(
        status["stage"], status["total_stages"],
        "stage == total_stages on success"
    );
    assert_eq!(status["message"], "[4/4] done");
    for message in &messages {
        let known = [
            "queued",
            "starting",
            "[1/4] charting",
            "[2/4] rasterizing",
            "[3/4] encoding",
            "[4/4] uploading",
            "[4/4] done",
        ];
        assert!(
            known.contains(&message.as_str()),
            "unexpected message {message}"
        );
    }

    let result = result(&client, &job).await;
    assert_eq!(result["ready"], true);
    assert_eq!(result["content_type"], "image/png");
    assert!(result["expires_at"].as_str().unwrap().ends_with('Z'));
    let url = result["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("http://{}/files/{job}?", sidecar.addr)),
        "{url}"
    );
    let pixmap = decode_png(&download(&result).await);
    assert_eq!((pixmap.width(), pixmap.height()), (640, 480));
    // Something was drawn: the background is white and bars are coloured.
    let coloured = pixmap
        .pixels()
        .iter()
        .filter(|p| p.alpha() == 255 && !(p.red() == p.green() && p.green() == p.blue()))
        .count();
    assert!(coloured > 1000, "only {coloured} coloured pixels");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_chart_can_come_back_as_svg_with_its_text() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    let job = start(&client, chart_spec(800, 600, "svg")).await;
    let (status, _) = wait_terminal(&client, &job, LIMIT).await;
    assert_eq!(
        (status["state"].clone(), status["total_stages"].clone()),
        (json!("succeeded"), json!(2))
    );
    let result = result(&client, &job).await;
    assert_eq!(result["content_type"], "image/svg+xml");
    let svg = String::from_utf8(download(&result).await).unwrap();
    let document = resvg::usvg::roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let root = document.root_element();
    assert_eq!(
        (root.attribute("width"), root.attribute("height")),
        (Some("800"), Some("600"))
    );
    for text in ["Quarterly revenue", "quarter", "EUR k", "2025", "2026"] {
        assert!(svg.contains(&format!(">{text}<")), "{text} drawn");
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn an_svg_job_rasterizes_to_the_requested_size() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 50">
        <rect width="100" height="50" fill="#0000ff"/><text x="10" y="30" font-family="Nonexistent">Hi</text></svg>"##;
    let job = start(
        &client,
        json!({"kind": "svg", "svg": svg, "width": 300, "height": 150}),
    )
    .await;
    let (status, _) = wait_terminal(&client, &job, LIMIT).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let pixmap = decode_png(&download(&result(&client, &job).await).await);
    assert_eq!((pixmap.width(), pixmap.height()), (300, 150));
    let blue = pixmap
        .pixels()
        .iter()
        .filter(|p| p.blue() == 255 && p.red() == 0)
        .count();
    assert!(blue > 300 * 150 / 2, "mostly blue: {blue}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn invalid_specs_are_refused_with_clear_errors_and_create_no_job() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    let cases = [
        (json!({"kind": "pie"}), "unknown variant `pie`"),
        (
            json!({"kind": "svg", "svg": "<svg/>", "width": 0}),
            "width must be between 1 and 4096",
        ),
        (
            json!({"kind": "svg", "svg": "<svg/>", "width": 4096, "height": 4096}),
            "pixels",
        ),
        (json!({"kind": "svg", "svg": "plain text"}), "<svg>"),
        (
            json!({"kind": "svg", "svg": format!("<svg>{}</svg>", "x".repeat(1024 * 1024))}),
            "limit",
        ),
        (
            json!({"kind": "chart", "chart": {"type": "bar", "series": []}}),
            "at least one series",
        ),
        (
            json!({"kind": "chart", "chart": {"type": "line", "series": [{"name": "a", "points": []}]}}),
            "no points",
        ),
        (
            json!({"kind": "chart", "chart": {"type": "line", "series": [{"name": "a", "points": [[1]]}]}}),
            "invalid length",
        ),
        (
            json!({"kind": "chart", "format": "gif", "chart": {"type": "bar", "series": [{"name": "a", "points": [[1, 2]]}]}}),
            "unknown variant `gif`",
        ),
    ];
    for (spec, expected) in cases {
        assert_refused(&client, spec, expected).await;
    }
    let refused = call(&client, "start_render", json!({"spec": {"kind": "pie"}})).await;
    assert_eq!(tool_error_code(&refused), "invalid_arguments");
    let bad_key = tool_error_message(
        &call(
            &client,
            "start_render",
            json!({"spec": chart_spec(10, 10, "png"), "idempotency_key": ""}),
        )
        .await,
    );
    assert!(bad_key.contains("idempotency_key"), "{bad_key}");
    let listed = structured_ok(&call(&client, "list_renders", json!({})).await);
    assert_eq!(listed["jobs"], json!([]), "no job was created");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn bad_job_ids_and_unknown_jobs_get_clear_errors() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    for tool in ["get_render_status", "get_render_result", "cancel_render"] {
        let error =
            tool_error_message(&call(&client, tool, json!({"job_id": "../../etc/passwd"})).await);
        assert!(error.contains("is not a job id"), "{tool}: {error}");
        let error = tool_error_message(
            &call(
                &client,
                tool,
                json!({"job_id": "0123456789abcdef0123456789abcdef"}),
            )
            .await,
        );
        assert!(error.contains("no render job"), "{tool}: {error}");
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn an_svg_that_cannot_be_rendered_ends_failed_with_its_error() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    let cases = [
        (
            "<svg xmlns='http://www.w3.org/2000/svg'><g></svg>",
            "the SVG is not valid",
        ),
        (
            "<!DOCTYPE svg [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>]><svg xmlns='http://www.w3.org/2000/svg'><text>&b;</text></svg>",
            "DTDs",
        ),
    ];
    for (svg, expected) in cases {
        let job = start(&client, json!({"kind": "svg", "svg": svg})).await;
        let (status, _) = wait_terminal(&client, &job, LIMIT).await;
        assert_eq!(status["state"], "failed", "{status}");
        let error = status["error"].as_str().unwrap();
        assert!(
            error.contains(expected),
            "expected `{expected}` in `{error}`"
        );
        let result = result(&client, &job).await;
        assert_eq!(
            (result["ready"].clone(), result["error"].clone()),
            (json!(false), json!(error))
        );
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn rendering_never_reads_local_files_or_fetches_urls() {
    // A listener that counts connections: a fetch of the http:// href would show up here.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    std::thread::spawn(move || {
        for _ in 0..200 {
            if listener.accept().is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    });
    // A red PNG on disk, referenced by path: it must not appear in the output.
    let red = crate::common::temp_dir("red-png").join("red.png");
    let mut pixmap = resvg::tiny_skia::Pixmap::new(20, 20).unwrap();
    pixmap.fill(resvg::tiny_skia::Color::from_rgba8(255, 0, 0, 255));
    pixmap.save_png(&red).unwrap();

    let sidecar = spawn_sidecar(|_| {}).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    let svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100" height="100">
        <rect width="100" height="100" fill="#ffffff"/>
        <image href="file:///etc/passwd" width="100" height="100"/>
        <image href="{red}" width="100" height="100"/>
        <image xlink:href="file://{red}" width="100" height="100"/>
        <image href="http://127.0.0.1:{port}/x.png" width="100" height="100"/>
        <use href="http://127.0.0.1:{port}/other.svg#shape"/>
        </svg>"##,
        red = red.display()
    );
    let job = start(
        &client,
        json!({"kind": "svg", "svg": svg, "width": 100, "height": 100}),
    )
    .await;
    let (status, _) = wait_terminal(&client, &job, LIMIT).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let pixmap = decode_png(&download(&result(&client, &job).await).await);
    let red_pixels = pixmap
        .pixels()
        .iter()
        .filter(|p| p.red() > 200 && p.green() < 50)
        .count();
    assert_eq!(red_pixels, 0, "the PNG on disk was not drawn");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing connected to the http:// href"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn cancelling_a_queued_job_ends_it_cancelled_and_it_never_runs() {
    // No workers: jobs stay queued.
    let sidecar = spawn_sidecar(|config| config.render_workers = Some(0)).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    let job = start(&client, chart_spec(100, 100, "png")).await;
    let cancelled = structured_ok(&call(&client, "cancel_render", json!({"job_id": job})).await);
    assert_eq!(
        (cancelled["state"].clone(), cancelled["error"].clone()),
        (json!("cancelled"), json!(null))
    );
    let listed = structured_ok(&call(&client, "list_renders", json!({"state": "cancelled"})).await);
    assert_eq!(listed["jobs"][0]["job_id"], job.as_str(), "{listed}");

    // Workers joining later on the same Redis and prefix do not run it.
    let prefix = sidecar.key_prefix.clone();
    let second = spawn_sidecar_on(sidecar.redis.clone(), |config| {
        config.redis_key_prefix = prefix
    })
    .await;
    let other = mcp_client(&second.mcp_url()).await;
    // Another job through the second sidecar completes, so its workers were running.
    let later = start(&other, chart_spec(60, 60, "svg")).await;
    let (done, _) = wait_terminal(&other, &later, LIMIT).await;
    assert_eq!(done["state"], "succeeded");
    let again = status(&client, &job).await;
    assert_eq!(
        (again["state"].clone(), again["error"].clone()),
        (json!("cancelled"), json!(null))
    );
    let result = result(&client, &job).await;
    assert_eq!(result["ready"], false);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn cancelling_a_running_job_ends_it_cancelled_and_it_stays_cancelled() {
    let sidecar = spawn_sidecar(|config| config.render_workers = Some(1)).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    // A render slow enough to catch it running: large canvas, heavy blur.
    let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="4096" height="2048">
        <defs><filter id="b"><feGaussianBlur stdDeviation="120"/></filter></defs>
        <g filter="url(#b)"><rect width="4096" height="2048" fill="teal"/><circle cx="900" cy="900" r="800" fill="orange"/></g>
        <g filter="url(#b)" opacity="0.5"><rect x="100" width="3000" height="1500" fill="navy"/></g></svg>"#;
    let job = start(
        &client,
        json!({"kind": "svg", "svg": svg, "width": 4096, "height": 2048}),
    )
    .await;
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let now = status(&client, &job).await;
        if now["state"] == "running" {
            break;
        }
        assert_eq!(
            now["state"], "queued",
            "caught running before it finished: {now}"
        );
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cancelled = structured_ok(&call(&client, "cancel_render", json!({"job_id": job})).await);
    assert_eq!(
        (cancelled["state"].clone(), cancelled["error"].clone()),
        (json!("cancelled"), json!(null))
    );
    // Whatever the worker was doing, the terminal state does not change afterwards.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let later = status(&client, &job).await;
        assert_eq!(
            (later["state"].clone(), later["error"].clone()),
            (json!("cancelled"), json!(null))
        );
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn an_idempotency_key_gives_back_the_same_job() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    let arguments =
        json!({"spec": chart_spec(200, 100, "png"), "idempotency_key": "report-2026-11"});
    let first = structured_ok(&call(&client, "start_render", arguments.clone()).await);
    let second = structured_ok(&call(&client, "start_render", arguments).await);
    assert_eq!(first["job_id"], second["job_id"]);
    let other_spec =
        json!({"spec": chart_spec(300, 100, "png"), "idempotency_key": "report-2026-11"});
    let conflict = call(&client, "start_render", other_spec).await;
    assert!(tool_error_message(&conflict).contains("different spec"));
    assert_eq!(tool_error_code(&conflict), "conflict");
    let listed = structured_ok(&call(&client, "list_renders", json!({})).await);
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn list_renders_gives_recent_jobs_newest_first_and_filters_by_state() {
    let sidecar = spawn_sidecar(|config| config.render_workers = Some(0)).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    let mut jobs = vec![];
    for width in [100, 200, 300] {
        jobs.push(start(&client, chart_spec(width, 100, "png")).await);
    }
    call(&client, "cancel_render", json!({"job_id": jobs[0]})).await;
    let listed = structured_ok(&call(&client, "list_renders", json!({"limit": 10})).await);
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [jobs[2].as_str(), jobs[1].as_str(), jobs[0].as_str()]);
    let queued = structured_ok(&call(&client, "list_renders", json!({"state": "queued"})).await);
    assert_eq!(queued["jobs"].as_array().unwrap().len(), 2);
    let bad = tool_error_message(&call(&client, "list_renders", json!({"limit": 1000})).await);
    assert!(bad.contains("limit"), "{bad}");
    let bad = tool_error_message(&call(&client, "list_renders", json!({"state": "done"})).await);
    assert!(bad.contains("unknown variant"), "{bad}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn while_redis_is_down_tools_answer_at_once_with_a_clear_error_and_work_resumes_after() {
    let redis = Arc::new(RedisServer::start_with(true));
    let mut sidecar = spawn_sidecar_on(redis, |config| config.render_workers = Some(1)).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    let before = start(&client, chart_spec(120, 80, "png")).await;
    wait_terminal(&client, &before, LIMIT).await;

    let redis = Arc::get_mut(&mut sidecar.redis).expect("sole owner of the test redis");
    redis.kill();
    for (tool, arguments) in [
        ("start_render", json!({"spec": chart_spec(10, 10, "png")})),
        ("get_render_status", json!({"job_id": before})),
        ("get_render_result", json!({"job_id": before})),
        ("list_renders", json!({})),
    ] {
        let started = std::time::Instant::now();
        let error = tool_error_message(&call(&client, tool, arguments).await);
        assert!(
            error.contains("job store (Redis) is unavailable"),
            "{tool}: {error}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{tool} answered in {:?}",
            started.elapsed()
        );
    }
    let add = structured_ok(&call(&client, "add", json!({"a": 1, "b": 2})).await);
    assert_eq!(add["sum"], 3, "tools without Redis keep working");

    redis.restart();
    // The sidecar reconnects by itself: the old job is still there (AOF) and new work runs.
    let deadline = std::time::Instant::now() + LIMIT;
    let after = loop {
        let attempt = call(
            &client,
            "start_render",
            json!({"spec": chart_spec(90, 60, "png")}),
        )
        .await;
        if attempt.is_error == Some(false) {
            break structured_ok(&attempt)["job_id"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery: {attempt:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status(&client, &before).await["state"], "succeeded");
    let (done, _) = wait_terminal(&client, &after, LIMIT).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn the_job_record_stored_in_redis_expires_after_it_finishes() {
    let sidecar = spawn_sidecar(|config| config.job_ttl = Duration::from_secs(60)).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    let job = start(&client, chart_spec(50, 50, "svg")).await;
    wait_terminal(&client, &job, LIMIT).await;
    let mut raw = sidecar.redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*job:{job}"))
        .query(&mut raw)
        .unwrap();
    assert_eq!(keys.len(), 1);
    let ttl: i64 = redis::cmd("TTL").arg(&keys[0]).query(&mut raw).unwrap();
    assert!((1..=60).contains(&ttl), "ttl {ttl}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_local_artifact_is_deleted_once_its_record_and_every_url_to_it_have_expired() {
    let (job_ttl, url_ttl) = (Duration::from_secs(2), Duration::from_secs(1));
    let sidecar = spawn_sidecar(|config| {
        config.job_ttl = job_ttl;
        config.signed_url_ttl = url_ttl;
    })
    .await;
    // Not the store's: never touched.
    let mine = sidecar.artifact_dir.join("notes.txt");
    std::fs::write(&mine, b"mine").unwrap();
    let client = mcp_client(&sidecar.mcp_url()).await;
    let job = start(&client, chart_spec(60, 40, "png")).await;
    let (done, _) = wait_terminal(&client, &job, LIMIT).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        download(&result(&client, &job).await)
            .await
            .starts_with(b"\x89PNG")
    );
    let file = sidecar.artifact_dir.join(format!("{job}.png"));
    let written = std::fs::metadata(&file).unwrap().modified().unwrap();

    // Kept JOB_TTL (the record) + SIGNED_URL_TTL (the last URL signed from it) + a tenth;
    // the sweep runs every second with these settings.
    let deadline = std::time::Instant::now() + LIMIT;
    while file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} still there after {LIMIT:?}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = std::time::SystemTime::now()
        .duration_since(written)
        .unwrap();
    assert!(
        kept >= (job_ttl + url_ttl) * 11 / 10,
        "deleted too soon: {kept:?} after it was written"
    );
    assert!(kept < Duration::from_secs(8), "deleted late: {kept:?}");
    // By then no record names the job.
    let answer = call(&client, "get_render_status", json!({"job_id": job})).await;
    assert_eq!(tool_error_code(&answer), "not_found", "{answer:?}");
    assert_eq!(std::fs::read(&mine).unwrap(), b"mine");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn an_internal_failure_is_answered_and_logged_once_with_its_cause_and_the_callers_trace() {
    let sidecar = crate::common::start_sidecar_process(&[]);
    let client = mcp_client(&sidecar.mcp_url()).await;
    let job = start(&client, chart_spec(50, 50, "svg")).await;
    wait_terminal(&client, &job, LIMIT).await;
    client.cancel().await.unwrap();
    // A record no sidecar could have written: the store reports it as corrupt.
    let mut raw = sidecar.redis.as_ref().unwrap().connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*job:{job}"))
        .query(&mut raw)
        .unwrap();
    let () = redis::cmd("HSET")
        .arg(&keys[0])
        .arg("stage")
        .arg("two")
        .query(&mut raw)
        .unwrap();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                      "params": {"name": "get_render_status", "arguments": {"job_id": job}}});
    let response = crate::common::mcp_post(&reqwest::Client::new(), &sidecar.mcp_url())
        .header("MCP-Protocol-Version", "2025-11-25")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&call)
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = response.json().await.unwrap();
    let result = &answer["result"];
    assert_eq!(result["isError"], true, "{answer}");
    assert_eq!(result["structuredContent"]["code"], "internal", "{answer}");

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let logged = loop {
        let logged = sidecar.logged("tool call failed inside the sidecar");
        if !logged.is_empty() || std::time::Instant::now() > deadline {
            break logged;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(logged.len(), 1, "{logged:?}");
    let line = &logged[0];
    assert_eq!(line["severity"], "ERROR", "{line}");
    assert_eq!(line["tool"], "get_render_status", "{line}");
    assert_eq!(line["trace_id"], trace_id, "{line}");
    assert!(
        line["error"].as_str().unwrap().contains("`two`"),
        "the cause is in the log line: {line}"
    );
}

/// Each stage report is a Redis write and a message to every sidecar's task-events
/// subscription, so only a stage that lasts `REPORT_AFTER` is reported: a small chart goes
/// from `starting` to done with no report between, and a slow rasterization is still seen.
#[tokio::test]
async fn only_stages_that_last_are_reported() {
    use futures::StreamExt;
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    // Every change of a job is announced on the events channel by the script that makes it.
    let mut announcements = redis::Client::open(sidecar.redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    announcements
        .subscribe(format!("{}task-events", sidecar.key_prefix))
        .await
        .unwrap();

    let fast = start(&client, chart_spec(320, 240, "png")).await;
    let (status, _) = wait_terminal(&client, &fast, LIMIT).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    // A blur over the whole canvas: rasterizing takes far longer than REPORT_AFTER.
    let blurred = r#"<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="800">
        <defs><filter id="b"><feGaussianBlur stdDeviation="60"/></filter></defs>
        <g filter="url(#b)"><rect width="1200" height="800" fill="teal"/>
        <circle cx="600" cy="400" r="300" fill="orange"/></g></svg>"#;
    let slow = start(
        &client,
        json!({"kind": "svg", "svg": blurred, "width": 1200, "height": 800}),
    )
    .await;
    let (status, messages) = wait_terminal(&client, &slow, LIMIT).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert!(
        messages
            .iter()
            .any(|message| message == "[2/4] rasterizing"),
        "the long stage was reported: {messages:?}"
    );

    let mut fast_count = 0;
    let mut slow_count = 0;
    let mut stream = announcements.on_message();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(300), stream.next()).await
    {
        let job: String = message.get_payload().unwrap();
        if job == fast {
            fast_count += 1;
        } else if job == slow {
            slow_count += 1;
        }
    }
    assert_eq!(
        fast_count, 2,
        "the small chart was announced when it started and when it ended, nothing between"
    );
    assert!(
        slow_count >= 3,
        "the slow job's long stage was announced too: {slow_count} announcements"
    );
}
