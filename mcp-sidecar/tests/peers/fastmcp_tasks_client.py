"""FastMCP's client with its tasks extension (PyPI `fastmcp` + `fastmcp-tasks`) running the
sidecar's `render` as an MCP task (extension io.modelcontextprotocol/tasks, 2026-07-28).

Usage: fastmcp_tasks_client.py URL

FastMCP connects statelessly (`server/discover`), declares the extension in each request's
`_meta` and only polls `tasks/get`. This script checks that the server advertises the
extension and lists `render`; runs a small render as a task to completion and checks its
result (structuredContent, the resource_link, the inline PNG, the download); starts a slow
render, cancels it with `tasks/cancel` and checks that it ends `cancelled`; and checks that
no `tasks/*` request carried an `Mcp-Name` header (FastMCP never sends one, so a pass proves
the server does not need it). Prints one JSON line with what it saw; exits non-zero on the
first mismatch.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import sys
import time
import urllib.request

import httpx2
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from fastmcp.exceptions import ToolError
from fastmcp_tasks import call_tool_task  # importing fastmcp_tasks turns on client task support
from mcp_types import ImageContent, ResourceLink, TextContent

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"

# Small enough that the result also carries the PNG inline as an image block.
QUICK_SPEC = {
    "kind": "chart",
    "width": 320,
    "height": 160,
    "chart": {
        "type": "bar",
        "title": "Renders per hour",
        "series": [{"name": "png", "points": [[0, 3], [1, 5], [2, 4]]}],
    },
}

# The largest canvas the server accepts (MAX_PIXELS). Encoding its PNG takes seconds (about
# 6 s in a debug build on a 2-core machine, against about 10 ms from the CreateTaskResult to the
# tasks/cancel answer), so the cancellation lands while the task is still working. Few points,
# so a cancelled render stops at the next stage boundary having spent well under a second.
SLOW_SPEC = {
    "kind": "chart",
    "width": 4096,
    "height": 2048,
    "chart": {"type": "line", "title": "slow", "series": [{"name": "s", "points": [[0, 1], [1, 2]]}]},
}


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


class RequestLog:
    """An httpx request hook that keeps each JSON-RPC method with the MCP headers it was sent
    with, to check what FastMCP puts on the wire."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    async def __call__(self, request: httpx2.Request) -> None:
        try:
            body = json.loads(request.content) if request.content else None
        except ValueError:
            body = None
        method = body.get("method") if isinstance(body, dict) else None
        self.requests.append({"method": method, "mcp-name": request.headers.get("mcp-name")})

    def client_factory(self, **kwargs) -> httpx2.AsyncClient:
        """An `httpx_client_factory` for StreamableHttpTransport."""
        kwargs.setdefault("timeout", httpx2.Timeout(30.0))
        return httpx2.AsyncClient(event_hooks={"request": [self]}, **kwargs)


def check_render_result(result) -> dict:
    """Checks a finished `render` result and its download; returns what it saw."""
    check(not result.is_error, f"render result is an error: {result.content}")
    output = result.structured_content
    check(isinstance(output, dict), f"no structuredContent: {result}")
    check(output["content_type"] == "image/png", f"content_type: {output}")
    check(len(output["sha256"]) == 64, f"sha256: {output}")

    texts = [block for block in result.content if isinstance(block, TextContent)]
    links = [block for block in result.content if isinstance(block, ResourceLink)]
    images = [block for block in result.content if isinstance(block, ImageContent)]
    check(len(texts) == 1 and json.loads(texts[0].text) == output, "text block mirrors structuredContent")
    check(len(links) == 1, f"one resource_link: {result.content}")
    check(str(links[0].uri) == output["url"], f"resource_link uri {links[0].uri} is the url")
    check(links[0].mime_type == "image/png" and links[0].size == output["bytes"], f"{links[0]}")
    check(len(images) == 1 and images[0].mime_type == "image/png", f"one PNG image block: {result.content}")
    inline = base64.b64decode(images[0].data)

    with urllib.request.urlopen(output["url"], timeout=30) as response:
        body = response.read()
        content_type = response.headers["Content-Type"]
    check(content_type == "image/png", f"download content type {content_type}")
    check(len(body) == output["bytes"], "download size matches bytes")
    check(hashlib.sha256(body).hexdigest() == output["sha256"], "download matches sha256")
    check(inline == body, "the inline image is the downloaded PNG")
    check(body[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature")
    return {"png": list(struct.unpack(">II", body[16:24])), "bytes": output["bytes"]}


async def main(url: str) -> None:
    seen: dict = {}
    log = RequestLog()
    transport = StreamableHttpTransport(url, httpx_client_factory=log.client_factory)
    async with Client(transport, timeout=30) as client:
        seen["protocol"] = client.protocol_version
        extensions = client.server_capabilities.extensions or {}
        check(TASKS_EXTENSION in extensions, f"server does not advertise {TASKS_EXTENSION}: {extensions}")
        tools = {tool.name for tool in await client.list_tools()}
        check("render" in tools, f"no render tool in {sorted(tools)}")

        # A quick render as a task: CreateTaskResult, polled to completed, its result read.
        task = await call_tool_task(client, "render", {"spec": QUICK_SPEC})
        check(task.create_result.status == "working", f"created {task.create_result}")
        final = await task.wait(timeout=60)
        check(final.status == "completed", f"render task ended {final.status}: {final}")
        result = await task.result()
        # Each read signs the download afresh (expiry = now + TTL, in whole seconds), so two
        # reads a second apart differ in the URL's query and in expires_at, nothing else.
        def stable(content: dict) -> dict:
            content = dict(content)
            content["url"] = content["url"].split("?", 1)[0]
            content.pop("expires_at", None)
            return content

        check(
            stable(result.structured_content) == stable(final.result["structuredContent"]),
            f"result() is tasks/get's result: {result.structured_content} vs {final.result['structuredContent']}",
        )
        check(result.structured_content["job_id"] == task.task_id, "the task id is the job id")
        seen["render"] = check_render_result(result)

        # A slow render, cancelled at once and watched to its end.
        slow = await call_tool_task(client, "render", {"spec": SLOW_SPEC})
        created_at = time.monotonic()
        await slow.cancel()
        seen["cancel_answered_ms"] = round((time.monotonic() - created_at) * 1000)
        ended = await slow.wait(timeout=60)
        seen["cancelled_status"] = ended.status
        check(
            ended.status == "cancelled",
            f"the cancelled task ended {ended.status} (the render beat the cancellation: make "
            f"SLOW_SPEC slower): {ended}",
        )
        check((await slow.status()).status == "cancelled", "a cancelled task stays cancelled")
        try:
            await slow.result()
            check(False, "result() of a cancelled task returned a result")
        except ToolError as error:
            check("cancelled" in str(error), f"result() of a cancelled task: {error}")

    tasks_requests = [r for r in log.requests if (r["method"] or "").startswith("tasks/")]
    methods = {r["method"] for r in tasks_requests}
    check({"tasks/get", "tasks/cancel"} <= methods, f"tasks/* methods sent: {methods}")
    with_name = [r for r in tasks_requests if r["mcp-name"] is not None]
    check(not with_name, f"FastMCP now sends Mcp-Name on tasks/*: {with_name}")
    seen.update(tasks_requests=len(tasks_requests), tasks_requests_with_mcp_name=0, checks="passed")
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
