//! More MCP servers from `MCP_CONFIG`, next to the sidecar: tools listed together and
//! namespaced when names clash, `${VAR}` headers, Google ID tokens from the metadata server
//! (against a local server speaking its wire format) reused until near expiry and then
//! refreshed, and a slow server answered with 504.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    Stack,
    fakes::{MetadataServer, RemoteMcp, token_subject},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::temp_dir;

fn write_config(servers: Value) -> std::path::PathBuf {
    let path = temp_dir("mcp-config").join("mcp.json");
    std::fs::write(&path, json!({ "mcpServers": servers }).to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_tools_are_listed_with_the_sidecars_namespaced_on_clash_and_carry_config_headers() {
    let remote = RemoteMcp::start().await;
    let config = write_config(json!({
        "remote": {"url": remote.url, "headers": {"X-Api-Key": "${REMOTE_KEY}"}}
    }));
    let stack = Stack::start(
        "stateless",
        &[
            ("MCP_CONFIG", config.to_str().unwrap()),
            ("REMOTE_KEY", "k-123"),
        ],
    );
    let http = reqwest::Client::new();
    // The remote server connects in the background; wait for its tools.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = common::get_json(&http, &stack.url("/v1/tools")).await;
        if listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["server"] == "remote")
        {
            break listed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "remote tools never appeared: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<(&str, &str)> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["server"].as_str().unwrap()))
        .collect();
    assert!(names.contains(&("sidecar__echo", "sidecar")), "{names:?}");
    assert!(names.contains(&("remote__echo", "remote")), "{names:?}");
    assert!(
        names.contains(&("whoami", "remote")),
        "no clash, no prefix: {names:?}"
    );
    assert!(names.contains(&("add", "sidecar")));
    assert!(
        !names.iter().any(|(name, _)| *name == "echo"),
        "the clashing name is not used bare"
    );

    let local: Value = http
        .post(stack.url("/v1/tools/sidecar__echo"))
        .json(&json!({"text": "hi"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(local["structuredContent"], json!({"text": "hi"}));
    let far: Value = http
        .post(stack.url("/v1/tools/remote__echo"))
        .json(&json!({"text": "hi"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        far["structuredContent"],
        json!({"text": "hi", "via": "remote"})
    );
    let calls = remote.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].api_key.as_deref(),
        Some("k-123"),
        "the ${{VAR}} header reached the server"
    );

    let ready = common::get_json(&http, &stack.url("/readyz")).await;
    assert_eq!(ready["servers"]["remote"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_id_tokens_come_from_the_metadata_server_and_are_refreshed_before_expiry() {
    // Tokens live 306 s: fresh for 6 s, then within the 5-minute refresh margin.
    let metadata = MetadataServer::start(Duration::from_secs(306)).await;
    let remote = RemoteMcp::start().await;
    let audience = "https://remote-abc-uc.a.run.app";
    let config = write_config(json!({
        "remote": {"url": remote.url, "auth": "google-id-token", "audience": audience}
    }));
    let stack = Stack::start(
        "stateless",
        &[
            ("MCP_CONFIG", config.to_str().unwrap()),
            ("GCE_METADATA_HOST", metadata.host.as_str()),
        ],
    );
    let http = reqwest::Client::new();
    let whoami = || async {
        let response = http
            .post(stack.url("/v1/tools/whoami"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["structuredContent"]["authorization"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while http
        .post(stack.url("/v1/tools/whoami"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::OK
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the remote server never connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The metadata server was asked properly.
    let requests = metadata.requests.lock().unwrap().clone();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request.audience, audience);
        assert_eq!(request.flavor.as_deref(), Some("Google"));
        assert_eq!(request.format.as_deref(), Some("full"));
    }
    // Every request to the remote server carries a bearer ID token.
    let first = whoami().await;
    assert!(first.starts_with("Bearer "), "{first}");
    let subject = token_subject(&first);
    assert!(subject.starts_with("token-"));
    // Within its lifetime the same token is reused.
    let issued = metadata.issued();
    assert_eq!(token_subject(&whoami().await), subject, "reused");
    assert_eq!(metadata.issued(), issued, "no new token fetched");

    // Once the token is within the refresh margin, the next use fetches a new one.
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let later = whoami().await;
    assert_ne!(token_subject(&later), subject, "refreshed before expiry");
    assert!(metadata.issued() > issued);
    assert!(remote.calls().iter().all(|call| {
        call.authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer "))
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_slower_than_the_call_timeout_gets_504_and_bad_config_stops_the_start() {
    let remote = RemoteMcp::start().await;
    let config = write_config(json!({"remote": {"url": remote.url}}));
    let stack = Stack::start(
        "stateless",
        &[
            ("MCP_CONFIG", config.to_str().unwrap()),
            ("MCP_CALL_TIMEOUT", "1s"),
        ],
    );
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let slow = loop {
        let response = http
            .post(stack.url("/v1/tools/slow"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::NOT_FOUND
            && response.status() != StatusCode::SERVICE_UNAVAILABLE
        {
            break response;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        slow.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within")
    );

    // A config naming an unset variable: the agent refuses to start, naming it.
    let bad = write_config(
        json!({"remote": {"url": "https://x/mcp", "headers": {"A": "${NOT_SET_ANYWHERE}"}}}),
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .env("MCP_CONFIG", &bad)
        .env("PORT", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("NOT_SET_ANYWHERE is not set"), "{stderr}");
}
