"""The whole render-job flow through the official MCP Python SDK, as a new user's agent
would run it: start_render -> poll get_render_status -> get_render_result -> download.

Usage: python_sdk_render_flow.py URL
Prints one JSON line with what it saw; exits non-zero on the first mismatch.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import time
import urllib.request

import anyio
from mcp import Client

SPEC = {
    "kind": "chart",
    "width": 720,
    "height": 360,
    "chart": {
        "type": "line",
        "title": "Requests per second",
        "x_label": "minute",
        "y_label": "req/s",
        "series": [{"name": "api", "points": [[0, 12], [1, 18], [2, 15], [3, 22]]}],
    },
}


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


async def main(url: str) -> None:
    seen: dict = {}
    async with Client(url, read_timeout_seconds=30) as client:
        started = await client.call_tool("start_render", {"spec": SPEC})
        check(not started.is_error, f"start_render failed: {started}")
        job_id = started.structured_content["job_id"]
        check(started.structured_content["state"] == "queued", f"{started.structured_content}")

        messages = []
        deadline = time.monotonic() + 60
        while True:
            status = (await client.call_tool("get_render_status", {"job_id": job_id})).structured_content
            if not messages or messages[-1] != status["message"]:
                messages.append(status["message"])
            if status["state"] in ("succeeded", "failed"):
                break
            check(time.monotonic() < deadline, f"still {status} after 60 s")
            await anyio.sleep(0.05)
        check(status["state"] == "succeeded", f"job failed: {status}")
        check(status["stage"] == status["total_stages"], f"stage on success: {status}")

        result = (await client.call_tool("get_render_result", {"job_id": job_id})).structured_content
        check(result["ready"] is True, f"not ready: {result}")
        with urllib.request.urlopen(result["url"], timeout=30) as response:
            body = response.read()
            content_type = response.headers["Content-Type"]
        check(content_type == "image/png", f"content type {content_type}")
        check(len(body) == result["bytes"], "size matches")
        check(hashlib.sha256(body).hexdigest() == result["sha256"], "sha256 matches")
        check(body[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature")
        width, height = struct.unpack(">II", body[16:24])
        check((width, height) == (720, 360), f"PNG is {width}x{height}")

        listed = (await client.call_tool("list_renders", {"limit": 5})).structured_content
        check(any(job["job_id"] == job_id for job in listed["jobs"]), "job listed")

        seen.update(job_id=job_id, messages=messages, png=[width, height], bytes=len(body), checks="passed")
    print(json.dumps(seen))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
