//! A fake GCE metadata server on a free loopback port, speaking the wire format
//! `google-cloud-auth`'s metadata-server (MDS) credentials use, so a process given
//! `GCE_METADATA_HOST=127.0.0.1:PORT` (or an MDS builder given `with_endpoint`) gets its access
//! tokens here. It serves, for `GET` with the header `Metadata-Flavor: Google`:
//!
//! - `/computeMetadata/v1/instance/service-accounts/default/token` (any `?scopes=...`):
//!   `{"access_token": <current>, "expires_in": <secs>, "token_type": "Bearer"}`;
//! - `/computeMetadata/v1/instance/service-accounts/default/email`: the service account's
//!   email (what the MDS URL signer asks for before calling IAM `signBlob`);
//! - `/computeMetadata/v1/universe/universe-domain`: `googleapis.com`;
//! - `/computeMetadata/v1/project/project-id`: a project ID.
//!
//! Like the real one, it refuses a request without `Metadata-Flavor: Google` with 403 and a
//! text body, and sets `Metadata-Flavor: Google` on every answer; other paths get 404.
//! It runs on its own thread with a current-thread tokio runtime, so sync and async tests
//! alike can use it; dropping it stops that runtime (and every open connection).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    response::Response,
};

const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const EMAIL_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/email";
const UNIVERSE_DOMAIN_PATH: &str = "/computeMetadata/v1/universe/universe-domain";
const PROJECT_ID_PATH: &str = "/computeMetadata/v1/project/project-id";

pub struct FakeMetadataServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    token: Mutex<String>,
    expires_in: u64,
    token_requests: AtomicUsize,
    /// `METHOD path?query -> status` of every request, in order.
    requests: Mutex<Vec<String>>,
}

impl FakeMetadataServer {
    /// The service account email it reports.
    pub const EMAIL: &str = "test-sidecar@test-project.iam.gserviceaccount.com";
    /// The project ID it reports.
    pub const PROJECT_ID: &str = "test-project";

    /// Starts serving `initial_token`, reported to expire `expires_in_secs` after each
    /// request for it.
    pub fn start(initial_token: &str, expires_in_secs: u64) -> Self {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake metadata server");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            token: Mutex::new(initial_token.to_owned()),
            expires_in: expires_in_secs,
            token_requests: AtomicUsize::new(0),
            requests: Mutex::new(vec![]),
        });
        let router = Router::new().fallback(answer).with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-metadata-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the fake metadata server");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    tokio::select! {
                        served = axum::serve(listener, router) => {
                            served.expect("the fake metadata server serves");
                        }
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here cancels the connections still open.
            })
            .expect("a thread for the fake metadata server");
        Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`: the value for `GCE_METADATA_HOST`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`: the value for an MDS credentials builder's `with_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token served from now on.
    pub fn set_token(&self, token: &str) {
        *self.shared.token.lock().unwrap() = token.to_owned();
    }

    /// How many token requests it has answered with a token.
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::SeqCst)
    }

    /// Every request so far, in order, as `METHOD path?query -> status`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }
}

async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path().to_owned(), ToString::to_string);
    let response = respond(&shared, &request);
    shared.requests.lock().unwrap().push(format!(
        "{} {target} -> {}",
        request.method(),
        response.status().as_u16()
    ));
    response
}

fn respond(shared: &Shared, request: &Request) -> Response {
    let flavored = request
        .headers()
        .get("metadata-flavor")
        .is_some_and(|value| value == "Google");
    if !flavored {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "Your client does not have permission to get URL {} from this server. \
                 Missing Metadata-Flavor:Google header.\n",
                request.uri().path()
            ),
        );
    }
    if request.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "The metadata server answers GET only.\n".into(),
        );
    }
    match request.uri().path() {
        TOKEN_PATH => {
            let body = serde_json::json!({
                "access_token": *shared.token.lock().unwrap(),
                "expires_in": shared.expires_in,
                "token_type": "Bearer",
            });
            shared.token_requests.fetch_add(1, Ordering::SeqCst);
            let mut response = flavored_response(StatusCode::OK, body.to_string());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        EMAIL_PATH => text(StatusCode::OK, FakeMetadataServer::EMAIL.into()),
        UNIVERSE_DOMAIN_PATH => text(StatusCode::OK, "googleapis.com".into()),
        PROJECT_ID_PATH => text(StatusCode::OK, FakeMetadataServer::PROJECT_ID.into()),
        path => text(StatusCode::NOT_FOUND, format!("{path} not found\n")),
    }
}

fn text(status: StatusCode, body: String) -> Response {
    let mut response = flavored_response(status, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn flavored_response(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("metadata-flavor", HeaderValue::from_static("Google"));
    response
}

impl Drop for FakeMetadataServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
