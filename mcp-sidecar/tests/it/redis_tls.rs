//! Redis as Memorystore runs it with in-transit encryption and AUTH: a real `redis-server`
//! that speaks only TLS, with a certificate from a CA the test makes with `openssl`, and
//! `requirepass`. The real binary runs a job end to end over it; each common set-up mistake
//! (wrong CA, wrong password, plain text against the TLS port) is named on `/readyz`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use test_support::redis_server::{RedisServer, Secured, TestCa};

use crate::common::{
    SidecarProcess, jobs::*, mcp_client, readiness, start_sidecar_process_with, temp_dir,
};

const PASSWORD: &str = "memorystore-auth-string-0123";

/// Environment variables for the sidecar.
type Env<'a> = Vec<(&'a str, &'a str)>;

fn secured_redis() -> RedisServer {
    RedisServer::start_secured(Secured {
        ca: TestCa::generate(),
        password: PASSWORD.into(),
    })
}

fn sidecar(env: &[(&str, &str)]) -> SidecarProcess {
    let artifacts = temp_dir("artifacts");
    start_sidecar_process_with(&[("ARTIFACT_DIR", artifacts.to_str().unwrap())], env)
}

#[tokio::test]
async fn a_render_job_runs_end_to_end_over_tls_with_the_password_from_the_environment() {
    let redis = secured_redis();
    let ca = redis.secured().unwrap().ca.ca_cert.clone();
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let sidecar = sidecar(&[
        ("REDIS_URL", &url),
        ("REDIS_CA_FILE", ca.to_str().unwrap()),
        ("REDIS_PASSWORD", PASSWORD),
    ]);

    let (status, body) =
        readiness(&sidecar, Duration::from_secs(20), |status, _| status == 200).await;
    assert_eq!(status, 200, "{body}");
    let client = mcp_client(&sidecar.mcp_url()).await;
    let job = start(&client, chart_spec(120, 80, "png")).await;
    let (done, _) = wait_terminal(&client, &job, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let png = download(&result(&client, &job).await).await;
    assert_eq!(decode_png(&png).width(), 120);
    client.cancel().await.unwrap();

    // The job really is in the TLS server, and the password is in no log line.
    let mut raw = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*job:{job}"))
        .query(&mut raw)
        .unwrap();
    assert_eq!(keys.len(), 1);
    sidecar.assert_never_logged(PASSWORD);
}

#[tokio::test]
async fn each_set_up_mistake_is_named_on_readyz() {
    let redis = secured_redis();
    let ca = redis.secured().unwrap().ca.ca_cert.clone();
    let other_ca = TestCa::generate().ca_cert;
    let tls_url = format!("rediss://127.0.0.1:{}", redis.port);
    let plain_url = format!("redis://127.0.0.1:{}", redis.port);
    let cases: [(&str, Env, &str); 3] = [
        (
            "a CA that did not sign the server's certificate",
            vec![
                ("REDIS_URL", &tls_url),
                ("REDIS_CA_FILE", other_ca.to_str().unwrap()),
                ("REDIS_PASSWORD", PASSWORD),
            ],
            "REDIS_CA_FILE must hold the CA that signed it",
        ),
        (
            "a wrong password",
            vec![
                ("REDIS_URL", &tls_url),
                ("REDIS_CA_FILE", ca.to_str().unwrap()),
                ("REDIS_PASSWORD", "not-the-password"),
            ],
            "Redis refused the credentials",
        ),
        (
            "plain text against the TLS port",
            vec![("REDIS_URL", &plain_url), ("REDIS_PASSWORD", PASSWORD)],
            "REDIS_URL must start with rediss://",
        ),
    ];
    for (mistake, env, named) in cases {
        let sidecar = sidecar(&env);
        let (status, body) = readiness(&sidecar, Duration::from_secs(20), |_, body| {
            body["redis"]
                .as_str()
                .is_some_and(|reason| reason.contains(named))
        })
        .await;
        assert_eq!(status, 503, "{mistake}: {body}");
        let reason = body["redis"].as_str().unwrap_or_default();
        assert!(reason.contains(named), "{mistake}: {body}");
        assert!(!reason.contains(PASSWORD), "{mistake}: {body}");
    }
}

#[test]
fn a_ca_file_with_a_plain_url_is_refused_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-sidecar"))
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("REDIS_CA_FILE", "/etc/ssl/certs/ca-certificates.crt")
        .env("MCP_LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("REDIS_CA_FILE is set but REDIS_URL is not a rediss://"),
        "{stderr}"
    );
}
