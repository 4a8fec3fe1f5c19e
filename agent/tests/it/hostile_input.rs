//! Hostile input at the agent's edge (the only ingress), against the real agent, sidecar and
//! Redis as processes: oversized and malformed bodies, and paths that try to leave `/files` or
//! a job id. Each case has the status and message it must get; after each one the agent is
//! still up (`/healthz`) and a tool call through it still works. Requests go over a raw
//! `TcpStream` so nothing is normalized on the client side. The sidecar's own edge has the
//! larger table in `mcp-sidecar/tests/it/hostile_input.rs`.
#![allow(clippy::unwrap_used)] // a test: failures should panic loudly

use crate::common::Stack;
use test_support::{KeptAliveConnection, raw_json_post};

/// The agent's default body limit (`MAX_BODY_BYTES`).
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Sends raw `request` to `addr`; returns the status and the body as text.
fn exchange(addr: std::net::SocketAddr, request: Vec<u8>) -> (u16, String) {
    let raw = test_support::raw_exchange(addr, request);
    let reply = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

fn get(host: &str, target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

fn post_json(host: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[test]
fn hostile_requests_to_the_agent_get_clear_refusals_and_it_stays_up() {
    let stack = Stack::start("stateless", &[]);
    let addr = stack.agent.addr;
    let host = addr.to_string();
    let oversized = format!(r#"{{"text":"{}"}}"#, "x".repeat(BODY_LIMIT + 1024));
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        (
            "POST /v1/tools/echo, body over the 2 MiB limit".into(),
            post_json(&host, "/v1/tools/echo", oversized.as_bytes()),
            413,
            "exceeds the limit of 2097152 bytes; send less data",
        ),
        (
            "POST /v1/renders, body over the 2 MiB limit".into(),
            post_json(
                &host,
                "/v1/renders",
                format!(r#"{{"spec":{oversized}}}"#).as_bytes(),
            ),
            413,
            "exceeds the limit of 2097152 bytes; send less data",
        ),
        (
            "POST /v1/tools/add, invalid UTF-8".into(),
            post_json(&host, "/v1/tools/add", b"{\"a\":\"\xff\xfe\",\"b\":1}"),
            400,
            "the request body is not valid",
        ),
        (
            "POST /v1/tools/add, 100,000 nested arrays".into(),
            post_json(&host, "/v1/tools/add", nested.as_bytes()),
            400,
            "recursion limit exceeded",
        ),
        (
            "GET /files/%2e%2e%2f%2e%2e%2fetc%2fpasswd, with a signature".into(),
            get(
                &host,
                "/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd?expires=9999999999&signature=00",
            ),
            404,
            "no such artifact",
        ),
    ];
    // Paths that try to leave `/files` or a job id: (path, status, message).
    let traversals = [
        ("/files/../../etc/passwd", 404, "no such endpoint"),
        ("/files/%2Fetc%2Fpasswd", 404, "no such artifact"),
        ("/v1/renders/..%2F..%2Fetc%2Fpasswd", 404, "no render job"),
        ("/v1/renders/../../etc/passwd", 404, "no such endpoint"),
        ("/v1/renders/%2e%2e%2f%2e%2e/events", 404, "no render job"),
    ];
    cases.extend(
        traversals.map(|(path, status, needle)| {
            (format!("GET {path}"), get(&host, path), status, needle)
        }),
    );

    println!("\n| case | status | body |\n|---|---|---|");
    for (name, request, status, needle) in cases {
        let (got, body) = exchange(addr, request);
        assert_eq!(got, status, "{name}: {body}");
        assert!(body.contains(needle), "{name}: `{needle}` in {body}");
        assert!(!body.contains("root:"), "{name}: no file contents leak");
        println!(
            "| {name} | {got} | {} |",
            body.chars().take(100).collect::<String>()
        );

        let (health, _) = exchange(addr, get(&host, "/healthz"));
        assert_eq!(health, 200, "after {name}: /healthz");
        let (sum_status, sum) =
            exchange(addr, post_json(&host, "/v1/tools/add", br#"{"a":2,"b":3}"#));
        assert_eq!(sum_status, 200, "after {name}: add: {sum}");
        let sum: serde_json::Value = serde_json::from_str(&sum).unwrap();
        assert_eq!(sum["structuredContent"]["sum"], 5, "after {name}: {sum}");
    }
}

#[test]
fn an_oversized_rest_call_is_answered_413_and_the_kept_alive_connection_goes_on() {
    let stack = Stack::start("stateless", &[]);
    let host = stack.agent.addr.to_string();
    let mut connection = KeptAliveConnection::open(stack.agent.addr);
    let add = br#"{"a":2,"b":3}"#;
    let added = connection
        .exchange(raw_json_post(&host, "/v1/tools/add", &[], add))
        .expect("an answer");
    assert_eq!(added.status, 200);
    let oversized = format!(r#"{{"text":"{}"}}"#, "x".repeat(3 * BODY_LIMIT));
    let refused = connection
        .exchange(raw_json_post(
            &host,
            "/v1/tools/echo",
            &[],
            oversized.as_bytes(),
        ))
        .expect("the refusal arrives on the kept-alive connection");
    assert_eq!(refused.status, 413);
    assert_eq!(
        refused.header("connection"),
        None,
        "the connection stays open"
    );
    let message = refused.json()["error"].as_str().unwrap().to_owned();
    assert!(
        message.contains(&format!(
            "of {} bytes exceeds the limit of {BODY_LIMIT} bytes",
            oversized.len()
        )),
        "{message}"
    );
    let added = connection
        .exchange(raw_json_post(&host, "/v1/tools/add", &[], add))
        .expect("the next call on the same connection");
    assert_eq!(added.status, 200);
    assert_eq!(
        added.json()["structuredContent"]["sum"],
        5,
        "{:?}",
        added.json()
    );
}
