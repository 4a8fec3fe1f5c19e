//! The `gcs` artifact store.
//!
//! - Against the GCS emulator from PyPI (`gcp-storage-emulator`): a render is uploaded, its
//!   signed URL downloads the same bytes, and the URL's V4 signature verifies with the public
//!   half of the test service-account key that signed it.
//! - Against a local server speaking the Cloud Storage JSON upload wire format (named
//!   `FakeGcs` below), for what the emulator does not implement: it ignores
//!   `ifGenerationMatch=0`, so the create-once precondition and the 5xx/429 retry behaviour
//!   are checked here, for the store itself and for jobs in the real sidecar process.
//! - The emulator stopped under a running sidecar: jobs fail with a clear error after the
//!   bounded attempts, and succeed again once it is back.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::common::{jobs::*, mcp_client, start_sidecar_process, temp_dir};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
    routing::post,
};
use mcp_sidecar::{
    artifacts::{
        Placed,
        gcs::{GcsSettings, GcsStore},
    },
    digest::{decode_hex, sha256_hex},
    jobs::model::JobId,
    render::spec::OutputKind,
};
use rsa::{pkcs1v15, pkcs8::DecodePublicKey, signature::Verifier};
use serde_json::{Value, json};
use sha2::Sha256;
use test_support::{free_port, installed_tool};

const BUCKET: &str = "renders-test";

/// The GCS emulator from PyPI on a free loopback port, with the test bucket.
struct Emulator {
    port: u16,
    child: Child,
}

impl Emulator {
    fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts it on `port` (again, after it was stopped: a fresh in-memory bucket).
    fn start_on(port: u16) -> Self {
        let child = Command::new(installed_tool("venv/bin/gcp-storage-emulator"))
            .args(["start", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--in-memory", "--default-bucket", BUCKET, "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the GCS emulator starts");
        let emulator = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        let bucket = format!("{}/storage/v1/b/{BUCKET}", emulator.endpoint());
        while !answers_ok(&bucket) {
            assert!(Instant::now() < deadline, "the emulator did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        emulator
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when a plain HTTP GET of `url` answers 200 (used only while waiting for the emulator).
fn answers_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let Some((host, path)) = url.trim_start_matches("http://").split_once('/') else {
        return false;
    };
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let mut reply = String::new();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").is_ok()
        && stream.read_to_string(&mut reply).is_ok()
        && reply.split_whitespace().nth(1) == Some("200")
}

/// A throwaway service-account key made for this test run (never committed anywhere).
struct ServiceAccount {
    dir: PathBuf,
    key_file: PathBuf,
    public_pem: String,
    email: String,
}

impl ServiceAccount {
    fn create() -> Self {
        let dir = temp_dir("sa-key");
        let private = dir.join("key.pem");
        let status = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&private)
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success());
        let public = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .output()
            .expect("openssl runs");
        let email = "renderer@test-project.iam.gserviceaccount.com".to_owned();
        let key = json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "test-key-1",
            "private_key": std::fs::read_to_string(&private).unwrap(),
            "client_email": email,
            "client_id": "1",
            // Never used for signing; points nowhere reachable.
            "token_uri": "http://127.0.0.1:9/token",
        });
        let key_file = dir.join("key.json");
        std::fs::write(&key_file, key.to_string()).unwrap();
        Self {
            dir,
            key_file,
            public_pem: String::from_utf8(public.stdout).unwrap(),
            email,
        }
    }
}

impl Drop for ServiceAccount {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[index + 1..index + 3], 16).unwrap());
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Rebuilds the V4 string-to-sign from a signed URL, as Google's documentation defines it:
/// canonical request = method, path, sorted query without the signature, canonical headers
/// (`host`), signed headers, `UNSIGNED-PAYLOAD`; string-to-sign = algorithm, timestamp,
/// credential scope, hex SHA-256 of the canonical request. Returns it with the signature.
fn string_to_sign(url: &str) -> (String, Vec<u8>, BTreeMap<String, String>) {
    let (base, query) = url.split_once('?').unwrap();
    let rest = base.trim_start_matches("http://");
    let (authority, path) = rest.split_once('/').unwrap();
    // The SDK signs the endpoint's host without its port (real GCS uses port 443 anyway).
    let host = authority.split(':').next().unwrap();
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    let mut raw_pairs = vec![];
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap();
        params.insert(key.to_owned(), percent_decode(value));
        if key != "X-Goog-Signature" {
            raw_pairs.push((key.to_owned(), value.to_owned()));
        }
    }
    raw_pairs.sort();
    let canonical_query = raw_pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request = format!(
        "GET\n/{path}\n{canonical_query}\nhost:{host}\n\n{}\nUNSIGNED-PAYLOAD",
        params["X-Goog-SignedHeaders"]
    );
    let scope = params["X-Goog-Credential"]
        .split_once('/')
        .unwrap()
        .1
        .to_owned();
    let to_sign = format!(
        "GOOG4-RSA-SHA256\n{}\n{scope}\n{}",
        params["X-Goog-Date"],
        sha256_hex(canonical_request.as_bytes())
    );
    let signature = decode_hex(&params["X-Goog-Signature"]).unwrap();
    (to_sign, signature, params)
}

fn verify(public_pem: &str, message: &str, signature: &[u8]) -> bool {
    let key = rsa::RsaPublicKey::from_public_key_pem(public_pem).unwrap();
    let verifier = pkcs1v15::VerifyingKey::<Sha256>::new(key);
    let Ok(signature) = pkcs1v15::Signature::try_from(signature) else {
        return false;
    };
    verifier.verify(message.as_bytes(), &signature).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_goes_to_the_bucket_and_its_v4_signed_url_downloads_the_same_bytes() {
    let emulator = Emulator::start();
    let account = ServiceAccount::create();
    let sidecar = start_sidecar_process(&[
        ("ARTIFACT_STORE", "gcs"),
        ("GCS_BUCKET", BUCKET),
        ("GCS_ENDPOINT", &emulator.endpoint()),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            account.key_file.to_str().unwrap(),
        ),
        ("SIGNED_URL_TTL", "15m"),
    ]);
    let client = mcp_client(&sidecar.mcp_url()).await;
    let job = start(&client, chart_spec(500, 300, "png")).await;
    let (status, _) = wait_terminal(&client, &job, Duration::from_secs(60)).await;
    assert_eq!(status["state"], "succeeded", "{status}");

    let result = result(&client, &job).await;
    let url = result["url"].as_str().unwrap().to_owned();
    let object_path = format!("/{BUCKET}/renders/{job}.png?");
    assert!(
        url.starts_with(&format!("{}{object_path}", emulator.endpoint())),
        "{url}"
    );
    let bytes = download(&result).await;
    let pixmap = decode_png(&bytes);
    assert_eq!((pixmap.width(), pixmap.height()), (500, 300));

    // The object in the bucket is those bytes, with the right type.
    let metadata: Value = reqwest::get(format!(
        "{}/storage/v1/b/{BUCKET}/o/renders%2F{job}.png",
        emulator.endpoint()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(metadata["contentType"], "image/png");
    assert_eq!(metadata["size"], bytes.len().to_string());

    // The signature: RSA-SHA256 over the V4 canonical request, by the configured key.
    let (to_sign, signature, params) = string_to_sign(&url);
    assert_eq!(params["X-Goog-Algorithm"], "GOOG4-RSA-SHA256");
    assert_eq!(params["X-Goog-Expires"], "900", "SIGNED_URL_TTL=15m");
    assert!(params["X-Goog-Credential"].starts_with(&format!("{}/", account.email)));
    assert!(
        verify(&account.public_pem, &to_sign, &signature),
        "signature verifies"
    );
    // Any change to what was signed breaks it.
    let (tampered, _, _) =
        string_to_sign(&url.replace("X-Goog-Expires=900", "X-Goog-Expires=9000"));
    assert_ne!(tampered, to_sign);
    assert!(
        !verify(&account.public_pem, &tampered, &signature),
        "tampered URL fails"
    );
    // The expiry it reports matches the URL's.
    let expires_at = humantime::parse_rfc3339(result["expires_at"].as_str().unwrap()).unwrap();
    let remaining = expires_at
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(remaining <= Duration::from_secs(900) && remaining > Duration::from_secs(800));
    client.cancel().await.unwrap();
}

/// A local server speaking the Cloud Storage JSON API's upload wire format
/// (`POST /upload/storage/v1/b/{bucket}/o?uploadType=multipart&name=…&ifGenerationMatch=…`),
/// with generation preconditions as GCS applies them and scriptable failures.
#[derive(Clone, Default)]
struct FakeGcs {
    objects: Arc<Mutex<HashMap<String, axum::body::Bytes>>>,
    requests: Arc<Mutex<Vec<HashMap<String, String>>>>,
    /// Statuses to answer with before behaving normally.
    failures: Arc<Mutex<Vec<u16>>>,
}

async fn fake_upload(
    State(fake): State<FakeGcs>,
    Path(bucket): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    fake.requests.lock().unwrap().push(query.clone());
    if let Some(status) = {
        let mut failures = fake.failures.lock().unwrap();
        (!failures.is_empty()).then(|| failures.remove(0))
    } {
        let status = StatusCode::from_u16(status).unwrap();
        return (
            status,
            Json(json!({"error": {"code": status.as_u16(), "message": "scripted failure"}})),
        );
    }
    let name = query.get("name").cloned().unwrap_or_default();
    let mut objects = fake.objects.lock().unwrap();
    if query.get("ifGenerationMatch").map(String::as_str) == Some("0")
        && objects.contains_key(&name)
    {
        let message = "At least one of the pre-conditions you specified did not hold.";
        return (
            StatusCode::PRECONDITION_FAILED,
            Json(json!({"error": {"code": 412, "message": message,
                "errors": [{"message": message, "domain": "global", "reason": "conditionNotMet"}]}})),
        );
    }
    objects.insert(name.clone(), body);
    (
        StatusCode::OK,
        Json(
            json!({"kind": "storage#object", "bucket": bucket, "name": name,
                    "generation": "1", "metageneration": "1", "contentType": "image/png"}),
        ),
    )
}

async fn fake_gcs() -> (FakeGcs, String) {
    let fake = FakeGcs::default();
    let app = Router::new()
        .route("/upload/storage/v1/b/{bucket}/o", post(fake_upload))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, endpoint)
}

async fn store(endpoint: &str, attempts: u32) -> GcsStore {
    GcsStore::new(&GcsSettings {
        bucket: BUCKET.into(),
        endpoint: Some(endpoint.to_owned()),
        upload_attempts: attempts,
        upload_timeout: Duration::from_secs(20),
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn an_upload_only_creates_the_object_and_a_retried_job_finds_it_already_there() {
    let (fake, endpoint) = fake_gcs().await;
    let store = store(&endpoint, 3).await;
    let job = JobId::generate();
    let first = store
        .put(&job, OutputKind::Png, bytes::Bytes::from_static(b"first"))
        .await;
    assert_eq!(first, Ok(Placed::Created));
    let again = store
        .put(&job, OutputKind::Png, bytes::Bytes::from_static(b"second"))
        .await;
    assert_eq!(
        again,
        Ok(Placed::AlreadyExisted),
        "the 412 means an earlier attempt stored it"
    );
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "a precondition failure is not retried");
    for query in &requests {
        assert_eq!(
            query.get("ifGenerationMatch").map(String::as_str),
            Some("0")
        );
        assert_eq!(
            query.get("name").cloned(),
            Some(format!("renders/{job}.png"))
        );
    }
    let stored = fake.objects.lock().unwrap()[&format!("renders/{job}.png")].clone();
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|window| window == needle);
    assert!(
        contains(b"first") && !contains(b"second"),
        "never overwritten"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_and_then_reported_after_the_bounded_attempts() {
    let (fake, endpoint) = fake_gcs().await;
    let store = store(&endpoint, 4).await;

    *fake.failures.lock().unwrap() = vec![503, 429, 500];
    let job = JobId::generate();
    let placed = store
        .put(&job, OutputKind::Png, bytes::Bytes::from_static(b"png"))
        .await;
    assert_eq!(
        placed,
        Ok(Placed::Created),
        "succeeds on the fourth attempt"
    );
    assert_eq!(fake.requests.lock().unwrap().len(), 4);

    fake.requests.lock().unwrap().clear();
    *fake.failures.lock().unwrap() = vec![503; 10];
    let started = Instant::now();
    let failed = store
        .put(
            &JobId::generate(),
            OutputKind::Png,
            bytes::Bytes::from_static(b"png"),
        )
        .await;
    let Err(error) = failed else {
        panic!("expected an upload error, got {failed:?}");
    };
    let message = error.to_string();
    assert!(message.contains("(HTTP 503)"), "{message}");
    assert_eq!(
        fake.requests.lock().unwrap().len(),
        4,
        "exactly the configured attempts"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded: {:?}",
        started.elapsed()
    );

    // A client error is not retried.
    fake.requests.lock().unwrap().clear();
    *fake.failures.lock().unwrap() = vec![403];
    assert!(
        store
            .put(
                &JobId::generate(),
                OutputKind::Png,
                bytes::Bytes::from_static(b"png")
            )
            .await
            .is_err()
    );
    assert_eq!(fake.requests.lock().unwrap().len(), 1);
}

// ---- job-level faults: the real sidecar process --------------------------------------------

/// Upload attempts the sidecars below are given (`ARTIFACT_UPLOAD_ATTEMPTS`).
const UPLOAD_ATTEMPTS: &str = "3";
/// How long a job may take to end when every upload attempt fails: 3 attempts with 200 ms and
/// 400 ms (jittered, at most 2 s) back-offs between them, plus rendering, on a busy machine.
const FAILED_UPLOAD_LIMIT: Duration = Duration::from_secs(20);

/// The sidecar binary storing to `endpoint` (the GCS JSON API), signing with `account`.
fn gcs_sidecar(endpoint: &str, account: &ServiceAccount) -> crate::common::SidecarProcess {
    start_sidecar_process(&[
        ("ARTIFACT_STORE", "gcs"),
        ("GCS_BUCKET", BUCKET),
        ("GCS_ENDPOINT", endpoint),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            account.key_file.to_str().unwrap(),
        ),
        ("ARTIFACT_UPLOAD_ATTEMPTS", UPLOAD_ATTEMPTS),
    ])
}

/// The upload requests `fake` saw for `job`'s object.
fn uploads_of(fake: &FakeGcs, job: &str) -> usize {
    let name = format!("renders/{job}.png");
    fake.requests
        .lock()
        .unwrap()
        .iter()
        .filter(|query| query.get("name") == Some(&name))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_rides_out_transient_gcs_errors_and_fails_clearly_when_they_persist() {
    let (fake, endpoint) = fake_gcs().await;
    let account = ServiceAccount::create();
    let sidecar = gcs_sidecar(&endpoint, &account);
    let client = mcp_client(&sidecar.mcp_url()).await;

    // 503 then 429, then the object is created: the job succeeds on its third upload attempt.
    *fake.failures.lock().unwrap() = vec![503, 429];
    let job = start(&client, chart_spec(200, 100, "png")).await;
    let (status, _) = wait_terminal(&client, &job, Duration::from_secs(60)).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(uploads_of(&fake, &job), 3, "two retries, then the upload");
    let stored = fake.objects.lock().unwrap()[&format!("renders/{job}.png")].clone();
    let rendered = result(&client, &job).await;
    assert!(
        stored.len() >= rendered["bytes"].as_u64().unwrap() as usize,
        "the object holds the artifact ({} bytes in a {}-byte multipart body)",
        rendered["bytes"],
        stored.len()
    );

    // Every attempt answers 503: the job ends `failed` after exactly the configured attempts,
    // with an error that says what happened, and there is no object and no result.
    *fake.failures.lock().unwrap() = vec![503; 100];
    let started = Instant::now();
    let job = start(&client, chart_spec(200, 100, "png")).await;
    let (status, _) = wait_terminal(&client, &job, FAILED_UPLOAD_LIMIT).await;
    let took = started.elapsed();
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("upload failed") && error.contains("503"),
        "{error}"
    );
    assert_eq!(
        uploads_of(&fake, &job),
        3,
        "exactly ARTIFACT_UPLOAD_ATTEMPTS"
    );
    assert!(
        !fake
            .objects
            .lock()
            .unwrap()
            .contains_key(&format!("renders/{job}.png"))
    );
    let no_result = result(&client, &job).await;
    assert_eq!(
        (
            &no_result["ready"],
            &no_result["state"],
            no_result.get("url")
        ),
        (&json!(false), &json!("failed"), None),
        "a failed job has no result: {no_result}"
    );
    println!("all {UPLOAD_ATTEMPTS} uploads answered 503: failed after {took:.2?}: {error}");

    // The failure stays put: the record never changes again, even once GCS is healthy.
    fake.failures.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(crate::common::jobs::status(&client, &job).await, status);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_gcs_emulator_down_jobs_fail_clearly_and_succeed_again_once_it_is_back() {
    let emulator = Emulator::start();
    let port = emulator.port;
    let account = ServiceAccount::create();
    let sidecar = gcs_sidecar(&emulator.endpoint(), &account);
    let client = mcp_client(&sidecar.mcp_url()).await;

    let job = start(&client, chart_spec(200, 100, "png")).await;
    let (status, _) = wait_terminal(&client, &job, Duration::from_secs(60)).await;
    assert_eq!(status["state"], "succeeded", "{status}");

    // The emulator goes away: nothing listens on its port, every connection is refused.
    drop(emulator);
    let started = Instant::now();
    let job = start(&client, chart_spec(200, 100, "png")).await;
    let (status, _) = wait_terminal(&client, &job, FAILED_UPLOAD_LIMIT).await;
    let took = started.elapsed();
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap().to_owned();
    assert!(error.contains("upload failed"), "{error}");
    println!("emulator down: failed after {took:.2?}: {error}");

    // Back on the same port: new jobs succeed, with no restart of the sidecar, and their
    // signed URLs download the object.
    let emulator = Emulator::start_on(port);
    let job = start(&client, chart_spec(200, 100, "png")).await;
    let (status, _) = wait_terminal(&client, &job, Duration::from_secs(60)).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let pixmap = decode_png(&download(&result(&client, &job).await).await);
    assert_eq!((pixmap.width(), pixmap.height()), (200, 100));
    drop(emulator);
    client.cancel().await.unwrap();
}
