"""Bad input at the edges, through clients we did not write: the official MCP Python SDK keeps
its session across an oversized call, and httpx (the HTTP client under it) keeps its
kept-alive connections usable across a slow body, a response it never reads, and a body that
ends before its Content-Length.

Usage: python_sdk_edges.py URL MODE   (MODE: the SDK's `auto` or `legacy` lifecycle)
Prints one JSON line with what it saw; exits non-zero on the first mismatch.
"""

from __future__ import annotations

import json
import sys
import time

import anyio
import httpx2
from mcp import Client, MCPError

HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def add_body(request_id: int) -> bytes:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": "add", "arguments": {"a": 2, "b": 3}},
        }
    ).encode()


async def oversized_call_keeps_the_session(url: str, mode: str, seen: dict) -> None:
    # A million points: about 17 MB of JSON, four times the sidecar's body limit.
    points = [[i, i % 97] for i in range(1_000_000)]
    spec = {"kind": "chart", "chart": {"type": "line", "series": [{"name": "s", "points": points}]}}
    async with Client(url, mode=mode, read_timeout_seconds=60) as client:
        first = await client.call_tool("add", {"a": 2, "b": 3})
        check(first.structured_content == {"sum": 5}, f"add before: {first}")
        started = time.monotonic()
        try:
            result = await client.call_tool("start_render", {"spec": spec})
        except MCPError as error:  # a transport-level error would land here
            raise AssertionError(f"expected a tool result, got a protocol error: {error}") from error
        seen["oversized_seconds"] = round(time.monotonic() - started, 2)
        check(result.is_error is True, f"isError: {result}")
        error = result.structured_content or {}
        check(error.get("code") == "invalid_arguments", f"code: {error}")
        message = error.get("error", "")
        check("exceeds the sidecar's limit of 4194304 bytes" in message, f"message: {message}")
        check("Send less data" in message, f"says what to do: {message}")
        seen["oversized_message"] = message
        after = await client.call_tool("add", {"a": 2, "b": 3})
        check(after.structured_content == {"sum": 5}, f"add after: {after}")
        seen["same_session_after"] = True


def open_session(http, url: str) -> dict:
    """Initializes over plain HTTP; returns the headers later requests carry (the session id,
    when the server keeps sessions)."""
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "httpx-edges", "version": "1"},
        },
    }
    response = http.post(url, json=initialize, headers=HEADERS)
    check(response.status_code == 200, f"initialize: {response.status_code} {response.text}")
    session = response.headers.get("mcp-session-id")
    if session is None:
        return dict(HEADERS)
    headers = {**HEADERS, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    check(http.post(url, json=initialized, headers=headers).status_code == 202, "initialized")
    return headers


def plain_http_edges(url: str, seen: dict) -> None:
    with httpx2.Client(timeout=30) as http:
        headers = open_session(http, url)
        # A slow body: eight pieces, 150 ms apart.
        body = add_body(1)

        def slowly():
            step = len(body) // 8 + 1
            for start in range(0, len(body), step):
                time.sleep(0.15)
                yield body[start : start + step]

        response = http.post(url, content=slowly(), headers=headers)
        check(response.status_code == 200, f"slow body: {response.status_code} {response.text}")
        check('"sum":5' in response.text, f"slow body: {response.text}")
        seen["slow_body"] = "answered"

        # A client that stops reading: open the answer, walk away without reading it.
        with http.stream("POST", url, content=add_body(2), headers=headers) as response:
            check(response.status_code == 200, f"unread: {response.status_code}")
        response = http.post(url, content=add_body(3), headers=headers)
        check('"sum":5' in response.text, f"after an unread answer: {response.text}")
        seen["unread_answer"] = "next call answered"

        # A body shorter than its Content-Length: httpx refuses to send it; the client goes on.
        try:
            http.post(url, content=b'{"jsonrpc":', headers={**headers, "Content-Length": "500"})
            seen["short_body"] = "sent"
        except Exception as error:  # httpx2 lets h11's LocalProtocolError through
            seen["short_body"] = type(error).__name__
        response = http.post(url, content=add_body(4), headers=headers)
        check('"sum":5' in response.text, f"after a short body: {response.text}")


async def main(url: str, mode: str) -> None:
    seen: dict = {"mode": mode}
    await oversized_call_keeps_the_session(url, mode, seen)
    plain_http_edges(url, seen)
    seen["checks"] = "passed"
    print(json.dumps(seen))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
