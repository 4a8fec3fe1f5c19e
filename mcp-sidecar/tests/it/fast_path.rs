//! The stateless fast path (`http::fast`) answers as rmcp's own stateless path does: each
//! request is sent to the real binary twice, once as it is and once with an allowed `Origin`
//! (which rmcp accepts and which changes nothing in its answer, but which keeps a request off
//! the fast path), and both answers must match byte for byte. The sidecar's trace log shows
//! which requests the fast path took.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on purpose

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{SidecarProcess, start_sidecar_process};

/// What both paths must agree on.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    /// The body with the request's id replaced by `"ID"`.
    body: String,
}

struct Case {
    name: &'static str,
    /// The body; `__ID__` becomes a JSON string id that differs between the two sends.
    body: &'static str,
    accept: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// Whether the fast path answers the send without `Origin`.
    fast: bool,
}

const PLAIN_ACCEPT: &str = "application/json, text/event-stream";

const fn case(name: &'static str, body: &'static str, fast: bool) -> Case {
    Case {
        name,
        body,
        accept: PLAIN_ACCEPT,
        headers: &[],
        fast,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "tools/list",
            r#"{"jsonrpc":"2.0","id":__ID__,"method":"tools/list"}"#,
            true,
        ),
        case(
            "tools/call ok",
            r#"{"jsonrpc":"2.0","id":__ID__,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#,
            true,
        ),
        case(
            "tools/call tool error",
            r#"{"jsonrpc":"2.0","id":__ID__,"method":"tools/call","params":{"name":"echo","arguments":{"text":""}}}"#,
            true,
        ),
        case(
            "tools/call bad arguments",
            r#"{"jsonrpc":"2.0","id":__ID__,"method":"tools/call","params":{"name":"add","arguments":{"a":"two","b":3}}}"#,
            true,
        ),
        case(
            "unknown tool",
            r#"{"jsonrpc":"2.0","id":__ID__,"method":"tools/call","params":{"name":"nope","arguments":{}}}"#,
            true,
        ),
        case(
            "tools/call without a name",
            r#"{"jsonrpc":"2.0","id":__ID__,"method":"tools/call","params":{"arguments":{}}}"#,
            true,
        ),
        case(
            "unknown method",
            r#"{"jsonrpc":"2.0","id":__ID__,"method":"no/such","params":{}}"#,
            true,
        ),
        case(
            "ping",
            r#"{"jsonrpc":"2.0","id":__ID__,"method":"ping"}"#,
            true,
        ),
        Case {
            headers: &[("mcp-protocol-version", "2025-11-25")],
            ..case(
                "tools/call on 2025-11-25",
                r#"{"jsonrpc":"2.0","id":__ID__,"method":"tools/call","params":{"name":"subtract","arguments":{"a":2,"b":3}}}"#,
                true,
            )
        },
        Case {
            headers: &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
            ..case(
                "tools/call with traceparent",
                r#"{"jsonrpc":"2.0","id":__ID__,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#,
                true,
            )
        },
        case(
            "notification",
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            true,
        ),
        case(
            "batch",
            r#"[{"jsonrpc":"2.0","id":__ID__,"method":"ping"}]"#,
            false,
        ),
        case(
            "response message",
            r#"{"jsonrpc":"2.0","id":__ID__,"result":{}}"#,
            false,
        ),
        case(
            "error message",
            r#"{"jsonrpc":"2.0","id":__ID__,"error":{"code":-1,"message":"no"}}"#,
            false,
        ),
        case("not JSON", r#"{"jsonrpc":"2.0","id":"#, false),
        case(
            "progress token",
            r#"{"jsonrpc":"2.0","id":__ID__,"method":"ping","params":{"_meta":{"progressToken":"p"}}}"#,
            false,
        ),
        case(
            "initialize",
            r#"{"jsonrpc":"2.0","id":__ID__,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
            false,
        ),
        case(
            "tasks/get",
            r#"{"jsonrpc":"2.0","id":__ID__,"method":"tasks/get","params":{"taskId":"missing"}}"#,
            false,
        ),
        Case {
            headers: &[("mcp-protocol-version", "2026-07-28")],
            ..case(
                "protocol 2026-07-28",
                r#"{"jsonrpc":"2.0","id":__ID__,"method":"ping"}"#,
                false,
            )
        },
        Case {
            headers: &[("mcp-protocol-version", "1999-01-01")],
            ..case(
                "unknown protocol version",
                r#"{"jsonrpc":"2.0","id":__ID__,"method":"ping"}"#,
                false,
            )
        },
        Case {
            accept: "application/json",
            ..case(
                "Accept without SSE",
                r#"{"jsonrpc":"2.0","id":__ID__,"method":"ping"}"#,
                false,
            )
        },
        Case {
            accept: "application/json;q=1, text/event-stream",
            ..case(
                "weighted Accept",
                r#"{"jsonrpc":"2.0","id":__ID__,"method":"ping"}"#,
                false,
            )
        },
        Case {
            headers: &[("host", "evil.example.com")],
            ..case(
                "foreign Host",
                r#"{"jsonrpc":"2.0","id":__ID__,"method":"ping"}"#,
                false,
            )
        },
    ]
}

async fn send(sidecar: &SidecarProcess, case: &Case, id: &str, origin: bool) -> Answer {
    send_with(sidecar, case, id, origin, &[]).await
}

/// Sends `case` with the `base` headers first, but for those the case sets itself.
async fn send_with(
    sidecar: &SidecarProcess,
    case: &Case,
    id: &str,
    origin: bool,
    base: &[(&str, &str)],
) -> Answer {
    let quoted = format!("\"{id}\"");
    let mut request = reqwest::Client::new()
        .post(sidecar.mcp_url())
        .header("content-type", "application/json")
        .header("accept", case.accept)
        .body(case.body.replace("__ID__", &quoted));
    let set_by_case = |name: &str| case.headers.iter().any(|(own, _)| *own == name);
    for (name, value) in base
        .iter()
        .filter(|(name, _)| !set_by_case(name))
        .chain(case.headers)
    {
        request = request.header(*name, *value);
    }
    if origin {
        request = request.header("origin", "http://127.0.0.1");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned());
    let body = response.text().await.unwrap().replace(&quoted, "\"ID\"");
    Answer {
        status,
        content_type,
        body,
    }
}

/// The ids the fast path has logged so far.
fn logged_fast_ids(sidecar: &SidecarProcess) -> Vec<String> {
    sidecar
        .logged("served on the fast path")
        .iter()
        .map(|line| line["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The ids the fast path logged, once the line for `last` has been written.
async fn fast_ids(sidecar: &SidecarProcess, last: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids = logged_fast_ids(sidecar);
        if ids.iter().any(|id| id == last) || Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_fast_path_answers_exactly_as_rmcp_does_and_takes_only_plain_requests() {
    let sidecar =
        start_sidecar_process(&[("RUST_LOG", "info,rmcp=warn,mcp_sidecar::http::fast=trace")]);
    let cases = cases();

    let mut expected_fast = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let (fast_id, rmcp_id) = (format!("f-{index}"), format!("r-{index}"));
        let through_fast = send(&sidecar, case, &fast_id, false).await;
        let through_rmcp = send(&sidecar, case, &rmcp_id, true).await;
        assert_eq!(through_fast, through_rmcp, "{}", case.name);
        if case.fast && case.body.contains("__ID__") {
            expected_fast.push(fast_id);
        }
    }
    // Requests are answered one after another, so once the last one's line is there all are.
    let sentinel = Case {
        name: "sentinel",
        ..case(
            "ping",
            r#"{"jsonrpc":"2.0","id":__ID__,"method":"ping"}"#,
            true,
        )
    };
    send(&sidecar, &sentinel, "sentinel", false).await;
    expected_fast.push("sentinel".into());

    assert_eq!(fast_ids(&sidecar, "sentinel").await, expected_fast);
    let notifications = cases
        .iter()
        .filter(|case| case.fast && !case.body.contains("__ID__"))
        .count();
    assert_eq!(
        sidecar
            .logged("notification accepted on the fast path")
            .len(),
        notifications
    );
}

#[tokio::test]
async fn answers_on_the_fast_path_are_what_the_tools_say() {
    let sidecar = start_sidecar_process(&[]);
    let case = case(
        "tools/call ok",
        r#"{"jsonrpc":"2.0","id":__ID__,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#,
        true,
    );
    let answer = send(&sidecar, &case, "a", false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["id"], "ID");
    assert_eq!(body["result"]["structuredContent"]["sum"], 5, "{body}");
}

// Stateful mode: a session's plain requests are answered on the fast path with the session's
// own peer; rmcp's session worker would have sent the same JSON-RPC message as an SSE event.

const SESSION_VERSION: &str = "2025-11-25";

/// The JSON-RPC message(s) of an answer: the body of a JSON answer, the `data` of each
/// non-empty event of an SSE answer, any other body as it is.
fn messages(answer: &Answer) -> String {
    if answer.content_type.as_deref() == Some("text/event-stream") {
        answer
            .body
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(str::trim)
            .filter(|data| !data.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        answer.body.clone()
    }
}

/// Opens a session on `SESSION_VERSION` and says `notifications/initialized`; its id.
async fn open_session(sidecar: &SidecarProcess) -> String {
    let client = reqwest::Client::new();
    let initialize = client
        .post(sidecar.mcp_url())
        .header("content-type", "application/json")
        .header("accept", PLAIN_ACCEPT)
        .body(format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{SESSION_VERSION}","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(initialize.status(), 200);
    let session = initialize.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    initialize.text().await.unwrap();
    let initialized = client
        .post(sidecar.mcp_url())
        .header("content-type", "application/json")
        .header("accept", PLAIN_ACCEPT)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", SESSION_VERSION)
        .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(initialized.status(), 202);
    session
}

/// Sends `case` in `session`, on `SESSION_VERSION` (unless the case names other headers).
async fn send_in_session(
    sidecar: &SidecarProcess,
    session: &str,
    case: &Case,
    id: &str,
    origin: bool,
) -> Answer {
    let base = [
        ("mcp-protocol-version", SESSION_VERSION),
        ("mcp-session-id", session),
    ];
    send_with(sidecar, case, id, origin, &base).await
}

/// Pings until one is answered on the fast path: the session's peer is recorded when its
/// `notifications/initialized` has been handled, which the 202 does not wait for.
async fn until_fast(sidecar: &SidecarProcess, session: &str) {
    let ping = case(
        "ping",
        r#"{"jsonrpc":"2.0","id":__ID__,"method":"ping"}"#,
        true,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    for attempt in 0.. {
        let id = format!("warm-{session}-{attempt}");
        send_in_session(sidecar, session, &ping, &id, false).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if logged_fast_ids(sidecar).contains(&id) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the session never reached the fast path"
        );
    }
}

fn session_cases() -> Vec<Case> {
    let fast = [
        "tools/list",
        "tools/call ok",
        "tools/call tool error",
        "tools/call bad arguments",
        "unknown tool",
        "tools/call without a name",
        "unknown method",
        "ping",
        "tools/call with traceparent",
    ];
    let rmcp = [
        "batch",
        "response message",
        "not JSON",
        "progress token",
        "tasks/get",
        "protocol 2026-07-28",
        "unknown protocol version",
        "Accept without SSE",
        "foreign Host",
    ];
    let mut cases: Vec<Case> = cases()
        .into_iter()
        .filter(|case| fast.contains(&case.name) || rmcp.contains(&case.name))
        .collect();
    assert_eq!(cases.len(), fast.len() + rmcp.len());
    cases.extend([
        // Notifications belong to the session (they cancel, they initialize).
        case(
            "notification",
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"none"}}"#,
            false,
        ),
        Case {
            headers: &[("mcp-session-id", "no-such-session")],
            ..case(
                "unknown session",
                r#"{"jsonrpc":"2.0","id":__ID__,"method":"ping"}"#,
                false,
            )
        },
    ]);
    cases
}

#[tokio::test]
async fn in_a_session_the_fast_path_answers_what_the_sessions_worker_answers() {
    let sidecar = start_sidecar_process(&[
        ("MCP_SESSION_MODE", "stateful"),
        ("RUST_LOG", "info,rmcp=warn,mcp_sidecar::http::fast=trace"),
    ]);
    let session = open_session(&sidecar).await;
    until_fast(&sidecar, &session).await;

    let mut expected_fast = Vec::new();
    for (index, case) in session_cases().iter().enumerate() {
        let (fast_id, rmcp_id) = (format!("f-{index}"), format!("r-{index}"));
        let through_fast = send_in_session(&sidecar, &session, case, &fast_id, false).await;
        let through_rmcp = send_in_session(&sidecar, &session, case, &rmcp_id, true).await;
        assert_eq!(through_fast.status, through_rmcp.status, "{}", case.name);
        assert_eq!(
            messages(&through_fast),
            messages(&through_rmcp),
            "{}",
            case.name
        );
        if case.fast {
            // The same message, as a JSON body rather than rmcp's one-event SSE stream.
            assert_eq!(
                through_fast.content_type.as_deref(),
                Some("application/json"),
                "{}",
                case.name
            );
            assert_eq!(
                through_rmcp.content_type.as_deref(),
                Some("text/event-stream"),
                "{}",
                case.name
            );
            expected_fast.push(fast_id);
        } else {
            assert_eq!(
                through_fast.content_type, through_rmcp.content_type,
                "{}",
                case.name
            );
        }
    }
    let sentinel = case(
        "ping",
        r#"{"jsonrpc":"2.0","id":__ID__,"method":"ping"}"#,
        true,
    );
    send_in_session(&sidecar, &session, &sentinel, "sentinel", false).await;
    expected_fast.push("sentinel".into());
    let fast: Vec<String> = fast_ids(&sidecar, "sentinel")
        .await
        .into_iter()
        .filter(|id| !id.starts_with("warm-"))
        .collect();
    assert_eq!(fast, expected_fast);

    // A session rmcp has closed is not served here: its id gets rmcp's 404.
    let deleted = reqwest::Client::new()
        .delete(sidecar.mcp_url())
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", SESSION_VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let after = send_in_session(&sidecar, &session, &sentinel, "after-delete", false).await;
    assert_eq!(after.status, 404, "{after:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!logged_fast_ids(&sidecar).contains(&"after-delete".to_owned()));
}

#[tokio::test]
async fn a_session_answered_on_the_fast_path_is_not_closed_as_idle_while_in_use() {
    // rmcp closes a session whose worker has seen nothing for the idle timeout; requests
    // answered on the fast path never reach the worker, so some must go through it.
    let sidecar = start_sidecar_process(&[
        ("MCP_SESSION_MODE", "stateful"),
        ("MCP_SESSION_IDLE_TIMEOUT", "2s"),
        ("RUST_LOG", "info,rmcp=warn,mcp_sidecar::http::fast=trace"),
    ]);
    let session = open_session(&sidecar).await;
    until_fast(&sidecar, &session).await;
    let call = case(
        "tools/call ok",
        r#"{"jsonrpc":"2.0","id":__ID__,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#,
        true,
    );
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(5) {
        let answer =
            send_in_session(&sidecar, &session, &call, &format!("busy-{sent}"), false).await;
        assert_eq!(
            answer.status,
            200,
            "after {:?}: {answer:?}",
            started.elapsed()
        );
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fast = logged_fast_ids(&sidecar);
    let answered_here = (0..sent)
        .filter(|index| fast.contains(&format!("busy-{index}")))
        .count();
    // One request in each quarter of the timeout (500 ms) goes through rmcp: about 10 in 5 s.
    assert!(
        answered_here >= sent / 2 && sent - answered_here >= 5,
        "{answered_here} of {sent} on the fast path: most, but one each 500 ms through rmcp"
    );

    // Left alone, it is closed as before.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answer = send_in_session(&sidecar, &session, &call, "idle", false).await;
    assert_eq!(answer.status, 404, "{answer:?}");
}
