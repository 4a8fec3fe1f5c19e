//! The HTTP edge of the sidecar: probes, Host and Origin allow-list, hostile bodies and bearer
//! auth, exercised with raw HTTP against the real server on port 0.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on purpose

mod common;

use common::{initialize_body, mcp_post, spawn_sidecar};
use mcp_sidecar::config::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};

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

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let sidecar = spawn_sidecar(|config| config.max_body_bytes = 64 * 1024).await;
    let huge_text = "x".repeat(200 * 1024);
    let response = mcp_post(&http(), &sidecar.mcp_url())
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"text": huge_text}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536 bytes")
    );
    // A body under the limit still works.
    add_works(&sidecar.mcp_url()).await;
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
