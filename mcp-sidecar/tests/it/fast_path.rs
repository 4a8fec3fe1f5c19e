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
    let quoted = format!("\"{id}\"");
    let mut request = reqwest::Client::new()
        .post(sidecar.mcp_url())
        .header("content-type", "application/json")
        .header("accept", case.accept)
        .body(case.body.replace("__ID__", &quoted));
    for (name, value) in case.headers {
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

/// The ids the fast path logged, once the line for `last` has been written.
async fn fast_ids(sidecar: &SidecarProcess, last: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids: Vec<String> = sidecar
            .logged("served on the fast path")
            .iter()
            .map(|line| line["id"].as_str().unwrap().to_owned())
            .collect();
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
