//! More MCP servers from `MCP_CONFIG`, next to the sidecar: tools listed together and
//! namespaced when names clash, `${VAR}` headers, Google ID tokens from the metadata server
//! (against a local server speaking its wire format) reused until near expiry and then
//! refreshed, a slow server answered with 504, and mistyped server settings refused at
//! start-up.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::common::{
    Stack,
    fakes::{MetadataServer, RemoteMcp, token_claims, token_subject},
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
        let listed = crate::common::get_json(&http, &stack.url("/v1/tools")).await;
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

    let ready = crate::common::get_json(&http, &stack.url("/readyz")).await;
    assert_eq!(ready["servers"]["remote"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_answer_that_breaks_the_job_contract_is_a_502_not_an_empty_job() {
    let remote = RemoteMcp::start().await;
    let stack = Stack::start("stateless", &[("MCP_SERVER_URL", remote.url.as_str())]);
    stack.wait_ready(Duration::from_secs(20));
    let response = reqwest::Client::new()
        .post(stack.url("/v1/renders"))
        .json(&json!({"spec": {"kind": "svg", "svg": "<svg/>", "width": 1, "height": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.headers().get("location").is_none());
    let body: Value = response.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("start_render") && message.contains("job_id"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_id_tokens_come_from_the_metadata_server_and_are_refreshed_before_expiry() {
    // google-cloud-auth fetches the next token 240 s before the current one expires, so tokens
    // that live 250 s are replaced after about 10 s, while they are still good for 4 minutes.
    let metadata = MetadataServer::start(Duration::from_secs(250)).await;
    let remote = RemoteMcp::start().await;
    let audience = "https://remote-abc-uc.a.run.app";
    let config = write_config(json!({
        "remote": {"url": remote.url, "auth": "google-id-token", "audience": audience}
    }));
    let home = temp_dir("empty-home");
    let stack = Stack::start(
        "stateless",
        &[
            ("MCP_CONFIG", config.to_str().unwrap()),
            // Application Default Credentials from the local metadata server, nothing else.
            ("GCE_METADATA_HOST", metadata.host.as_str()),
            ("HOME", home.to_str().unwrap()),
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

    // Well before the token expires, a new one is fetched and the next use carries it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if token_subject(&whoami().await) != subject {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the token was never refreshed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_expiry = token_claims(&first)["exp"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        first_expiry > now + 200,
        "refreshed minutes before the old token expired"
    );
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

#[test]
fn mistyped_server_settings_stop_the_start_naming_the_setting() {
    let start = |env: &[(&str, &std::ffi::OsStr)], args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(args)
            .env("PORT", "0")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!output.status.success(), "the agent started");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    let stderr = start(&[], &["--mcp-server-url", "htp:/x"]);
    assert!(stderr.contains("--mcp-server-url"), "{stderr}");
    assert!(
        stderr.contains("`htp:/x` is not an http(s) URL with a host"),
        "{stderr}"
    );

    let stderr = start(&[("MCP_SERVER_URL", "localhost:3000/mcp".as_ref())], &[]);
    assert!(stderr.contains("MCP_SERVER_URL"), "{stderr}");
    assert!(stderr.contains("is not an http(s) URL"), "{stderr}");

    let config = write_config(json!({"tickets": {"url": "htps://tickets.example.com/mcp"}}));
    let stderr = start(&[("MCP_CONFIG", config.as_os_str())], &[]);
    assert!(
        stderr.contains(
            "server `tickets` url: `htps://tickets.example.com/mcp` is not an http(s) URL"
        ),
        "{stderr}"
    );

    // ID tokens for a server, but credentials that cannot give any (gcloud's user login).
    let config = write_config(json!({
        "search": {"url": "https://search-abc-uc.a.run.app/mcp", "auth": "google-id-token"}
    }));
    let user_login = temp_dir("adc").join("application_default_credentials.json");
    std::fs::write(
        &user_login,
        json!({"type": "authorized_user", "client_id": "id", "client_secret": "secret",
               "refresh_token": "token"})
        .to_string(),
    )
    .unwrap();
    let stderr = start(
        &[
            ("MCP_CONFIG", config.as_os_str()),
            ("GOOGLE_APPLICATION_CREDENTIALS", user_login.as_os_str()),
        ],
        &[],
    );
    assert!(
        stderr.contains("server `search`: cannot set up Google ID-token credentials"),
        "{stderr}"
    );
}
