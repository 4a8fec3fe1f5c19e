"""FastMCP's client with its tasks extension (PyPI `fastmcp` + `fastmcp-tasks`) running the
sidecar's `render` as an MCP task through the agent's own `/mcp`.

Usage: fastmcp_tasks_through_agent.py URL

Checks that the agent advertises the tasks extension; runs a small render as a task to
completion (tasks/get through the agent) and downloads its PNG; starts a slow render, cancels
it with tasks/cancel and checks that it ends `cancelled`. FastMCP sends tasks/* without
`Mcp-Name`, so a pass also shows the agent's edge supplies it. Prints one JSON line with what it
saw; exits non-zero on the first mismatch.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import sys
import urllib.request

from fastmcp import Client
from fastmcp_tasks import call_tool_task  # importing fastmcp_tasks turns on client task support

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"

QUICK_SPEC = {
    "kind": "chart",
    "width": 320,
    "height": 160,
    "chart": {"type": "bar", "title": "via agent", "series": [{"name": "a", "points": [[0, 3], [1, 5]]}]},
}

# The largest canvas the sidecar accepts: encoding its PNG takes seconds, so the cancellation
# lands while the task is still working.
SLOW_SPEC = {
    "kind": "chart",
    "width": 4096,
    "height": 2048,
    "chart": {"type": "line", "title": "slow", "series": [{"name": "s", "points": [[0, 1], [1, 2]]}]},
}


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


async def main(url: str) -> None:
    seen: dict = {}
    async with Client(url, timeout=30) as client:
        seen["protocol"] = client.protocol_version
        extensions = client.server_capabilities.extensions or {}
        check(TASKS_EXTENSION in extensions, f"the agent does not advertise {TASKS_EXTENSION}: {extensions}")

        task = await call_tool_task(client, "render", {"spec": QUICK_SPEC})
        check(task.create_result.status == "working", f"created {task.create_result}")
        final = await task.wait(timeout=60)
        check(final.status == "completed", f"render task ended {final.status}: {final}")
        result = await task.result()
        output = result.structured_content
        check(not result.is_error and isinstance(output, dict), f"render result: {result}")
        check(output["job_id"] == task.task_id, "the task id is the job id")
        with urllib.request.urlopen(output["url"], timeout=30) as response:
            body = response.read()
        check(hashlib.sha256(body).hexdigest() == output["sha256"], "download matches sha256")
        seen["png"] = list(struct.unpack(">II", body[16:24]))

        slow = await call_tool_task(client, "render", {"spec": SLOW_SPEC})
        await slow.cancel()
        ended = await slow.wait(timeout=60)
        seen["cancelled_status"] = ended.status
        check(ended.status == "cancelled", f"the cancelled task ended {ended.status}: {ended}")
    seen["checks"] = "passed"
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
