//! Memorystore IAM authentication (`REDIS_AUTH_MODE=iam`): the Redis password is an access
//! token of the service's identity, fetched from the metadata server. Tested against
//! [`FakeMetadataServer`], a local server speaking the metadata server's documented wire format
//! (reached through `GCE_METADATA_HOST`, as Google's auth library does), and a real
//! `redis-server` whose password the test rotates: open connections re-authenticate with the
//! new token without reconnecting, and new connections use it.
// Helpers outside #[test] fns panic on purpose.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use test_support::{metadata_server::FakeMetadataServer, redis_server::RedisServer};

use crate::common::{
    SidecarProcess, auth_calls, connections_received, cut_client_connections,
    jobs::{chart_spec, decode_png, download, result, start, wait_terminal},
    mcp_client, readiness, start_sidecar_process_with, temp_dir,
};

/// The admin's view of the server: a connection authenticated with `password`.
fn admin(redis: &RedisServer, password: &str) -> redis::Connection {
    redis::Client::open(format!("redis://:{password}@127.0.0.1:{}", redis.port))
        .unwrap()
        .get_connection()
        .unwrap()
}

fn iam_sidecar(redis: &RedisServer, metadata_host: &str) -> (SidecarProcess, std::path::PathBuf) {
    let (artifacts, home) = (temp_dir("artifacts"), temp_dir("home"));
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let sidecar = start_sidecar_process_with(
        &[
            ("REDIS_URL", url.as_str()),
            ("REDIS_AUTH_MODE", "iam"),
            ("GCE_METADATA_HOST", metadata_host),
            // No gcloud user credentials from the machine running the tests.
            ("HOME", home.to_str().unwrap()),
            ("ARTIFACT_DIR", artifacts.to_str().unwrap()),
            ("RENDER_WORKERS", "1"),
        ],
        &[],
    );
    (sidecar, artifacts)
}

async fn render_once(sidecar: &SidecarProcess) {
    let client = mcp_client(&sidecar.mcp_url()).await;
    let job = start(&client, chart_spec(160, 100, "png")).await;
    let (done, _) = wait_terminal(&client, &job, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let png = download(&result(&client, &job).await).await;
    assert_eq!(decode_png(&png).width(), 160);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_tokens_authenticate_and_a_rotated_token_reauthenticates_open_connections() {
    // Short-lived tokens: Google's auth library then refreshes them every ~10 s.
    let metadata = FakeMetadataServer::start("ya29.token-one", 30);
    let redis = RedisServer::start();
    let mut setup = redis.connection();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("ya29.token-one")
        .query(&mut setup)
        .unwrap();
    let mut admin = admin(&redis, "ya29.token-one");
    let (sidecar, artifacts) = iam_sidecar(&redis, &metadata.host());

    let (status, body) =
        readiness(&sidecar, Duration::from_secs(20), |status, _| status == 200).await;
    assert_eq!(status, 200, "{body}");
    render_once(&sidecar).await;
    assert!(metadata.token_requests() >= 1);

    // Rotate: the server accepts both tokens while the metadata server hands out the new one.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg(">ya29.token-two")
        .query(&mut admin)
        .unwrap();
    let (auths_before, connections_before) =
        (auth_calls(&mut admin), connections_received(&mut admin));
    metadata.set_token("ya29.token-two");
    let deadline = Instant::now() + Duration::from_secs(45);
    // The store's connection, a worker's and the durable paths each re-authenticate.
    while auth_calls(&mut admin) < auths_before + 2 {
        assert!(
            Instant::now() < deadline,
            "open connections did not re-authenticate after the token changed: AUTH calls {} \
             → {}; token requests {}",
            auths_before,
            auth_calls(&mut admin),
            metadata.token_requests()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reauthenticated = auth_calls(&mut admin) - auths_before;
    assert_eq!(
        connections_received(&mut admin),
        connections_before,
        "re-authenticated in place, without reconnecting"
    );

    // Only the new token is valid now; every sidecar connection is cut. New connections use
    // the fresh token, so the sidecar is ready and renders again.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("resetpass")
        .arg(">ya29.token-two")
        .query(&mut admin)
        .unwrap();
    cut_client_connections(&mut self::admin(&redis, "ya29.token-two"));
    let (status, body) =
        readiness(&sidecar, Duration::from_secs(20), |status, _| status == 200).await;
    assert_eq!(status, 200, "{body}");
    render_once(&sidecar).await;
    println!(
        "{reauthenticated} connections re-authenticated in place; {} token requests in all",
        metadata.token_requests()
    );

    sidecar.assert_never_logged("ya29.token");
    let _ = std::fs::remove_dir_all(artifacts);
}

#[tokio::test]
async fn a_token_redis_does_not_accept_is_named_on_readyz() {
    let metadata = FakeMetadataServer::start("ya29.not-this-one", 3600);
    let redis = RedisServer::start();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("ya29.the-real-one")
        .query(&mut redis.connection())
        .unwrap();
    let (sidecar, artifacts) = iam_sidecar(&redis, &metadata.host());
    let (status, body) = readiness(&sidecar, Duration::from_secs(20), |_, body| {
        body["redis"]
            .as_str()
            .is_some_and(|reason| reason.contains("refused the credentials"))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["redis"]
            .as_str()
            .unwrap()
            .contains("REDIS_AUTH_MODE=iam"),
        "the IAM case is named: {body}"
    );
    assert!(!body.to_string().contains("ya29."), "{body}");
    let _ = std::fs::remove_dir_all(artifacts);
}

#[test]
fn iam_auth_with_a_password_as_well_is_refused_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-sidecar"))
        .env("REDIS_URL", "redis://:secret@127.0.0.1:6379")
        .env("REDIS_AUTH_MODE", "iam")
        .env("MCP_LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("REDIS_AUTH_MODE=iam takes the password from the service's identity"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret@"), "{stderr}");
}
