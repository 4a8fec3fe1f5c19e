//! A load generator speaking MCP over Streamable HTTP: N concurrent clients, each on its own
//! kept-alive HTTP/1.1 connection (TCP_NODELAY), each sending a fixed number of
//! `tools/call add {a: 2, b: 3}` one after another and checking every answer says 5.
//!
//! Stateless servers get plain POSTs with JSON answers. Session servers get an `initialize`
//! and `notifications/initialized` per client first, then calls carrying `Mcp-Session-Id`;
//! their answers may be SSE, which is read to the end of the response.

use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, client::conn::http1};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::stats::Latency;

/// How a target is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// MCP Streamable HTTP without sessions.
    Stateless,
    /// MCP Streamable HTTP with an `initialize`d session per client.
    Session,
    /// Any HTTP endpoint answering the same POST (the raw axum ceiling).
    Raw,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub clients: usize,
    pub calls: usize,
    pub errors: usize,
    pub seconds: f64,
    pub calls_per_second: f64,
    pub latency: Latency,
}

const CALL: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#;
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

pub type Sender = http1::SendRequest<Full<Bytes>>;

pub async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A POST of `body` to `path`, with the headers an MCP client sends (and the session's, if
/// any).
pub fn request(
    addr: std::net::SocketAddr,
    path: &str,
    body: impl Into<Bytes>,
    session: Option<&str>,
    traceparent: Option<&str>,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut builder = Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(session) = session {
        builder = builder
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25");
    }
    if let Some(traceparent) = traceparent {
        builder = builder.header("traceparent", traceparent);
    }
    Ok(builder.body(Full::new(body.into()))?)
}

/// Sends one request and returns the status and the whole body.
pub async fn send(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(u16, Bytes, Option<String>)> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body, session))
}

/// Whether an answer is a successful `add` result of 5.
fn answered_five(body: &[u8]) -> bool {
    body.windows(7).any(|window| window == br#""sum":5"#)
}

/// Runs `clients` × `calls_each` calls against `addr` + `path`.
pub async fn run(
    addr: std::net::SocketAddr,
    path: &'static str,
    dialect: Dialect,
    clients: usize,
    calls_each: usize,
    traced: bool,
) -> anyhow::Result<LoadReport> {
    let mut tasks = tokio::task::JoinSet::new();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(clients + 1));
    for client in 0..clients {
        let start = start.clone();
        tasks.spawn(async move {
            let mut sender = connect(addr).await?;
            let session = if dialect == Dialect::Session {
                let (status, _, session) =
                    send(&mut sender, request(addr, path, INITIALIZE, None, None)?).await?;
                let session = session.context("no Mcp-Session-Id after initialize")?;
                if status != 200 {
                    bail!("initialize answered {status}");
                }
                send(
                    &mut sender,
                    request(addr, path, INITIALIZED, Some(&session), None)?,
                )
                .await?;
                Some(session)
            } else {
                None
            };
            start.wait().await;
            let mut samples = Vec::with_capacity(calls_each);
            let mut errors = 0usize;
            for call in 0..calls_each {
                let traceparent = traced.then(|| {
                    format!(
                        "00-{:016x}{:016x}-{:016x}-01",
                        client + 1,
                        call + 1,
                        call + 1
                    )
                });
                let request =
                    request(addr, path, CALL, session.as_deref(), traceparent.as_deref())?;
                let started = Instant::now();
                match send(&mut sender, request).await {
                    Ok((200, body, _)) if answered_five(&body) => samples.push(started.elapsed()),
                    Ok(_) | Err(_) => {
                        errors += 1;
                        // A broken connection: make a new one and carry on.
                        if sender.is_closed() {
                            sender = connect(addr).await?;
                        }
                    }
                }
            }
            anyhow::Ok((samples, errors))
        });
    }
    start.wait().await;
    let started = Instant::now();
    let mut samples = Vec::with_capacity(clients * calls_each);
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (client_samples, client_errors) = joined??;
        samples.extend(client_samples);
        errors += client_errors;
    }
    let seconds = started.elapsed().as_secs_f64();
    let calls = samples.len() + errors;
    #[allow(clippy::cast_precision_loss)]
    Ok(LoadReport {
        clients,
        calls,
        errors,
        seconds,
        calls_per_second: samples.len() as f64 / seconds.max(f64::EPSILON),
        latency: Latency::of(samples),
    })
}

/// A minimal axum endpoint answering the benchmark's POST with the body a stateless MCP
/// server would send: the ceiling for HTTP on this machine. Runs until killed.
pub async fn serve_raw(port: u16) -> anyhow::Result<()> {
    const ANSWER: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"{\"sum\":5}"}],"structuredContent":{"sum":5},"isError":false}}"#;
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|| async { ([("content-type", "application/json")], ANSWER) }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

/// A sink for OTLP/HTTP exports (answers 200, keeps nothing), to measure tracing's cost
/// without a collector's.
pub async fn otlp_sink() -> anyhow::Result<std::net::SocketAddr> {
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(|| async { "" }))
        .route("/v1/metrics", axum::routing::post(|| async { "" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}
