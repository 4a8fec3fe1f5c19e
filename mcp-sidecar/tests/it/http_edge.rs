//! The HTTP edge of the sidecar: probes, Host and Origin allow-list, hostile bodies and bearer
//! auth, exercised with raw HTTP against the real server on port 0.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on purpose

use std::time::Duration;

use crate::common::{initialize_body, mcp_post, spawn_sidecar};
use mcp_sidecar::config::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{KeptAliveConnection, RawResponse, raw_json_post};

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn add_works(url: &str) {
    let response = mcp_post(&http(), url)
        .json(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                      "params": {"name": "add", "arguments": {"a": 2, "b": 3}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["structuredContent"], json!({"sum": 5}));
}

#[tokio::test]
async fn health_and_readiness_probes_answer_ok() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let health = http().get(sidecar.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"ok": true}));
    let ready = http().get(sidecar.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        (ready["ok"].clone(), ready["redis"].clone()),
        (json!(true), json!("ok"))
    );
}

#[tokio::test]
async fn readiness_follows_redis_while_health_does_not() {
    let mut sidecar = spawn_sidecar(|_| {}).await;
    let (ready_url, health_url) = (sidecar.url("/readyz"), sidecar.url("/healthz"));
    let redis = std::sync::Arc::get_mut(&mut sidecar.redis).expect("sole owner");
    redis.kill();
    let ready = http().get(&ready_url).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["ok"], false);
    assert!(
        body["redis"].as_str().unwrap().contains("unavailable"),
        "{body}"
    );
    let health = http().get(&health_url).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    redis.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ready = http().get(&ready_url).send().await.unwrap();
        if ready.status() == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ready again once Redis is back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_foreign_host_header_is_refused_and_loopback_names_are_accepted() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let port = sidecar.addr.port();
    for host in ["evil.example.com", "attacker.test:3000", "127.0.0.1.nip.io"] {
        let response = mcp_post(&http(), &sidecar.mcp_url())
            .header("host", host)
            .json(&initialize_body())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "Host: {host}");
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let response = mcp_post(&http(), &sidecar.mcp_url())
            .header("host", &host)
            .json(&initialize_body())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "Host: {host}");
    }
}

#[tokio::test]
async fn configured_extra_hosts_are_accepted() {
    let sidecar = spawn_sidecar(|config| {
        config.allowed_hosts = vec!["sidecar-abc-uc.a.run.app".into()];
    })
    .await;
    let response = mcp_post(&http(), &sidecar.mcp_url())
        .header("host", "sidecar-abc-uc.a.run.app")
        .json(&initialize_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Sends `initialize` with `origin` as the Origin header (none for `None`), returning the status
/// and body.
async fn initialize_with_origin(url: &str, origin: Option<&[u8]>) -> (StatusCode, String) {
    let mut request = mcp_post(&http(), url).json(&initialize_body());
    if let Some(origin) = origin {
        let value = reqwest::header::HeaderValue::from_bytes(origin).unwrap();
        request = request.header("origin", value);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_foreign_null_or_unparsable_origin_is_refused_with_403() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let port = sidecar.addr.port();
    let refused: Vec<(Vec<u8>, &str)> = vec![
        (
            b"http://evil.example.com".into(),
            "Origin header is not allowed",
        ),
        (
            format!("http://evil.example.com:{port}").into(),
            "Origin header is not allowed",
        ),
        (
            b"https://localhost.evil.test".into(),
            "Origin header is not allowed",
        ),
        (
            b"http://127.0.0.1.nip.io".into(),
            "Origin header is not allowed",
        ),
        (b"null".into(), "Origin header is not allowed"),
        (b"not an origin".into(), "Invalid Origin header"),
        (b"localhost".into(), "Invalid Origin header"),
        (b"".into(), "Invalid Origin header"),
        (b"http://\xff\xfe".into(), "Invalid Origin header"),
    ];
    for (origin, message) in refused {
        let (status, body) = initialize_with_origin(&sidecar.mcp_url(), Some(&origin)).await;
        let shown = String::from_utf8_lossy(&origin);
        assert_eq!(status, StatusCode::FORBIDDEN, "Origin: {shown}: {body}");
        assert!(body.contains(message), "Origin: {shown}: {body}");
    }
    add_works(&sidecar.mcp_url()).await;
}

#[tokio::test]
async fn loopback_origins_and_no_origin_at_all_are_accepted() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let port = sidecar.addr.port();
    for origin in [
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
        format!("http://[::1]:{port}"),
        "http://LOCALHOST:5173".to_owned(),
        "https://127.0.0.1".to_owned(),
    ] {
        let (status, body) =
            initialize_with_origin(&sidecar.mcp_url(), Some(origin.as_bytes())).await;
        assert_eq!(status, StatusCode::OK, "Origin: {origin}: {body}");
    }
    let (status, body) = initialize_with_origin(&sidecar.mcp_url(), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "no Origin (non-browser client): {body}"
    );
}

#[tokio::test]
async fn origins_on_configured_hosts_follow_the_same_port_rules_as_host() {
    let sidecar = spawn_sidecar(|config| {
        config.allowed_hosts = vec![
            "sidecar-abc-uc.a.run.app".into(),
            "app.example.com:8443".into(),
        ];
    })
    .await;
    for (origin, expected) in [
        ("https://sidecar-abc-uc.a.run.app", StatusCode::OK),
        ("http://sidecar-abc-uc.a.run.app:8080", StatusCode::OK),
        ("https://app.example.com:8443", StatusCode::OK),
        ("https://app.example.com", StatusCode::FORBIDDEN),
        ("https://app.example.com:9443", StatusCode::FORBIDDEN),
        ("https://other.a.run.app", StatusCode::FORBIDDEN),
    ] {
        let (status, body) =
            initialize_with_origin(&sidecar.mcp_url(), Some(origin.as_bytes())).await;
        assert_eq!(status, expected, "Origin: {origin}: {body}");
    }
}

#[tokio::test]
async fn a_foreign_origin_is_refused_on_every_method_in_session_mode() {
    let sidecar = spawn_sidecar(|config| {
        config.session_mode = mcp_sidecar::config::SessionMode::Stateful;
    })
    .await;
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let request = |origin: &str| {
            http()
                .request(method.clone(), sidecar.mcp_url())
                .header("accept", "text/event-stream")
                .header("mcp-session-id", "no-such-session")
                .header("origin", origin)
        };
        let refused = request("http://evil.example.com").send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{method}");
        // The same request from an allowed origin gets past the check (to "no such session").
        let allowed = request("http://localhost").send().await.unwrap();
        assert_ne!(allowed.status(), StatusCode::FORBIDDEN, "{method}");
    }
}

#[tokio::test]
async fn malformed_bodies_get_jsonrpc_errors_and_the_server_keeps_serving() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let cases: [(&str, i64); 5] = [
        (r#"{"jsonrpc":"2.0","id":1,"method":"#, -32700),
        ("not json at all", -32700),
        (r#"{"id": 7, "hello": "world"}"#, -32600),
        (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, -32600),
        (
            r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":"nope"}"#,
            -32600,
        ),
    ];
    for (body, code) in cases {
        let response = mcp_post(&http(), &sidecar.mcp_url())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["jsonrpc"], "2.0");
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        assert!(error["error"]["message"].as_str().unwrap().len() > 10);
    }
    // The id is echoed when the message had one.
    let response = mcp_post(&http(), &sidecar.mcp_url())
        .body(r#"{"id": 7, "hello": "world"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["id"], 7);
    add_works(&sidecar.mcp_url()).await;
}

fn tool_call(id: Value, tool: &str, arguments: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                               "params": {"name": tool, "arguments": arguments}}))
    .unwrap()
}

fn add_call(id: u64) -> Vec<u8> {
    tool_call(json!(id), "add", json!({"a": 2, "b": 3}))
}

/// Asserts `response` is the answer to `add(2, 3)` with request id `id`.
fn assert_added(response: Option<RawResponse>, id: u64) {
    let response = response.expect("an answer on the same connection");
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["id"], id);
    assert_eq!(
        body["result"]["structuredContent"],
        json!({"sum": 5}),
        "{body}"
    );
}

/// Runs blocking socket work off the async test's threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

#[tokio::test]
async fn an_oversized_tool_call_gets_a_tool_result_and_the_kept_alive_connection_goes_on() {
    let sidecar = spawn_sidecar(|config| config.max_body_bytes = 64 * 1024).await;
    let (addr, host) = (sidecar.addr, sidecar.addr.to_string());
    blocking(move || {
        let mut connection = KeptAliveConnection::open(addr);
        assert_added(connection.exchange(raw_json_post(&host, "/mcp", &[], &add_call(1))), 1);
        // The id after the params, as the TypeScript SDK writes it.
        let huge = format!(
            r#"{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}},"id":"big-1"}}"#,
            "x".repeat(3 * 1024 * 1024)
        );
        let answer = connection
            .exchange(raw_json_post(&host, "/mcp", &[], huge.as_bytes()))
            .expect("the oversized call is answered");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("connection"), None);
        let body = answer.json();
        assert_eq!(body["id"], "big-1");
        let result = &body["result"];
        assert_eq!(result["isError"], true, "{body}");
        assert_eq!(result["structuredContent"]["code"], "invalid_arguments");
        let message = result["structuredContent"]["error"].as_str().unwrap();
        for part in [&format!("of {} bytes", huge.len()), "limit of 65536 bytes", "echo was not run", "Send less data"] {
            assert!(message.contains(part), "{part:?} in {message}");
        }
        // Legacy peers (no 2026-07-28 version header) get no resultType, like rmcp's own answers.
        assert!(result.get("resultType").is_none(), "{result}");
        assert_added(connection.exchange(raw_json_post(&host, "/mcp", &[], &add_call(2))), 2);

        // A 2026-07-28 request gets the result in that revision's shape.
        let answer = connection
            .exchange(raw_json_post(&host, "/mcp", &["MCP-Protocol-Version: 2026-07-28"], huge.as_bytes()))
            .unwrap();
        assert_eq!(answer.json()["result"]["resultType"], "complete");
        assert_added(connection.exchange(raw_json_post(&host, "/mcp", &[], &add_call(3))), 3);
    })
    .await;
}

#[tokio::test]
async fn an_oversized_request_of_another_kind_gets_413_with_its_id_and_the_connection_goes_on() {
    let sidecar = spawn_sidecar(|config| config.max_body_bytes = 64 * 1024).await;
    let (addr, host) = (sidecar.addr, sidecar.addr.to_string());
    blocking(move || {
        let mut connection = KeptAliveConnection::open(addr);
        let mut initialize = initialize_body();
        initialize["id"] = json!(41);
        initialize["params"]["clientInfo"]["name"] = json!("x".repeat(200 * 1024));
        let body = serde_json::to_vec(&initialize).unwrap();
        let answer = connection
            .exchange(raw_json_post(&host, "/mcp", &[], &body))
            .unwrap();
        assert_eq!(answer.status, 413);
        let error = answer.json();
        assert_eq!(error["id"], 41);
        assert_eq!(error["error"]["code"], -32600);
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!(
                "of {} bytes exceeds the limit of 65536 bytes",
                body.len()
            )),
            "{message}"
        );
        assert_added(
            connection.exchange(raw_json_post(&host, "/mcp", &[], &add_call(2))),
            2,
        );
    })
    .await;
}

#[tokio::test]
async fn requests_pipelined_behind_an_oversized_one_are_all_answered_in_order() {
    let sidecar = spawn_sidecar(|config| config.max_body_bytes = 64 * 1024).await;
    let (addr, host) = (sidecar.addr, sidecar.addr.to_string());
    blocking(move || {
        let mut connection = KeptAliveConnection::open(addr);
        let huge = tool_call(json!(1), "echo", json!({"text": "y".repeat(1024 * 1024)}));
        let mut pipelined = raw_json_post(&host, "/mcp", &[], &huge);
        pipelined.extend(raw_json_post(&host, "/mcp", &[], b"not json"));
        pipelined.extend(raw_json_post(&host, "/mcp", &[], &add_call(3)));
        connection.send(pipelined);
        let first = connection.read_response().unwrap();
        assert_eq!(
            (first.status, first.json()["result"]["isError"].clone()),
            (200, json!(true))
        );
        let second = connection.read_response().unwrap();
        assert_eq!(
            (second.status, second.json()["error"]["code"].clone()),
            (400, json!(-32700))
        );
        assert_added(connection.read_response(), 3);
    })
    .await;
}

#[tokio::test]
async fn a_body_past_the_drain_bound_is_refused_and_only_then_the_connection_closes() {
    let sidecar = spawn_sidecar(|config| config.max_body_bytes = 64 * 1024).await;
    let (addr, host) = (sidecar.addr, sidecar.addr.to_string());
    blocking(move || {
        // Announced beyond the 64 MiB drain bound: answered at once, without reading it.
        let mut connection = KeptAliveConnection::open(addr);
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{{\"id\":1,",
            100u64 << 20
        );
        let answer = connection.exchange(head.into_bytes()).unwrap();
        assert_eq!(answer.status, 413);
        assert_eq!(answer.header("connection"), Some("close"));
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.contains("of 104857600 bytes") && message.contains("not read"),
            "{message}"
        );
        assert!(connection.is_closed_by_server(Duration::from_secs(10)));

        // Chunked, so no size is announced: drained up to the bound, then refused and closed.
        let mut connection = KeptAliveConnection::open(addr);
        let mut request = format!(
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..70 {
            request.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
            request.extend(&chunk);
            request.extend(b"\r\n");
        }
        request.extend(b"0\r\n\r\n");
        let answer = connection.exchange(request).expect("the refusal arrives");
        assert_eq!(answer.status, 413);
        assert_eq!(answer.header("connection"), Some("close"));
    })
    .await;
    add_works(&sidecar.mcp_url()).await;
}

#[tokio::test]
async fn a_body_that_ends_before_its_content_length_costs_only_its_own_connection() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let (addr, host) = (sidecar.addr, sidecar.addr.to_string());
    blocking(move || {
        let mut connection = KeptAliveConnection::open(addr);
        let mut request = raw_json_post(&host, "/mcp", &[], &add_call(1));
        request.truncate(request.len() - 10);
        connection.send(request);
        std::thread::sleep(Duration::from_millis(100));
        connection.close_write();
        // The request never arrived whole: a clear 400 if anything, then the connection ends.
        if let Some(answer) = connection.read_response() {
            assert_eq!(answer.status, 400, "{answer:?}");
            let message = answer.json()["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(message.contains("could not be read"), "{message}");
        }
        assert!(connection.is_closed_by_server(Duration::from_secs(10)));
        let mut next = KeptAliveConnection::open(addr);
        assert_added(
            next.exchange(raw_json_post(&host, "/mcp", &[], &add_call(2))),
            2,
        );
    })
    .await;
}

#[tokio::test]
async fn a_slow_body_within_the_limit_is_answered() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let (addr, host) = (sidecar.addr, sidecar.addr.to_string());
    blocking(move || {
        let mut connection = KeptAliveConnection::open(addr);
        let request = raw_json_post(&host, "/mcp", &[], &add_call(7));
        for piece in request.chunks(request.len() / 8 + 1) {
            connection.send(piece.to_vec());
            std::thread::sleep(Duration::from_millis(150));
        }
        assert_added(connection.read_response(), 7);
    })
    .await;
}

#[tokio::test]
async fn without_accepting_sse_and_json_a_post_is_refused() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let response = http()
        .post(sidecar.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "text/html")
        .json(&initialize_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn bearer_auth_guards_mcp_but_not_the_probes() {
    let token: Secret = "s3cret-token".parse().unwrap();
    let sidecar = spawn_sidecar(|config| config.bearer_token = Some(token)).await;

    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("Basic czNjcmV0LXRva2Vu"),
        Some("Bearer "),
    ] {
        let mut request = mcp_post(&http(), &sidecar.mcp_url()).json(&initialize_body());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{authorization:?}"
        );
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }

    let response = mcp_post(&http(), &sidecar.mcp_url())
        .header("authorization", "Bearer s3cret-token")
        .json(&initialize_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let health = http().get(sidecar.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_are_404_with_a_hint() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let response = http().get(sidecar.url("/nope")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("/mcp"));
}
