"""The official MCP Python SDK (PyPI `mcp`) as an IDE client would use it: against the agent's
own `/mcp`, which fronts the sidecar and a remote MCP server.

Usage: python_sdk_through_agent.py URL MODE
  MODE `auto`   - the SDK's default: `server/discover` at protocol 2026-07-28, no session.
  MODE `legacy` - the `initialize` handshake at 2025-11-25.

Lists the tools; calls the sidecar's `add` (and one of its domain failures), the sidecar's and
the remote server's `echo` under their namespaced names, the remote server's `whoami`, and an
unknown tool. Prints one JSON line with what it saw (the tool list included, for the caller to
compare with GET /v1/tools) and exits non-zero on the first mismatch.
"""

from __future__ import annotations

import json
import sys

import anyio
from mcp import Client, MCPError
from mcp_types import TextContent


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def structured(result, *, error: bool) -> dict:
    check(result.is_error is error, f"isError should be {error}: {result}")
    check(isinstance(result.structured_content, dict), f"structuredContent missing: {result}")
    texts = [c.text for c in result.content if isinstance(c, TextContent)]
    check(len(texts) == 1, f"expected one text block: {result}")
    check(json.loads(texts[0]) == result.structured_content, "text block mirrors structuredContent")
    return result.structured_content


async def main(url: str, mode: str) -> None:
    seen: dict = {"mode": mode}
    async with Client(url, mode=mode, read_timeout_seconds=30) as client:
        seen["protocol"] = str(client.protocol_version)
        seen["server"] = client.server_info.name

        listed = (await client.list_tools()).tools
        seen["tools"] = [
            {
                "name": tool.name,
                "description": tool.description,
                "input_schema": tool.input_schema,
                "output_schema": tool.output_schema,
            }
            for tool in listed
        ]
        names = {tool.name for tool in listed}
        for name in ("add", "sidecar__echo", "remote__echo", "whoami", "render"):
            check(name in names, f"{name} not in {sorted(names)}")

        # The sidecar's tool; the SDK validates structuredContent against its outputSchema.
        add = structured(await client.call_tool("add", {"a": 2, "b": 3}), error=False)
        check(add == {"sum": 5}, f"add: {add}")
        seen["add(2,3)"] = add["sum"]
        overflow = structured(
            await client.call_tool("add", {"a": 18446744073709551615, "b": 1}), error=True
        )
        check("integer overflow" in overflow["error"], f"overflow: {overflow}")

        # The same name on two servers: each reached under its namespaced name.
        local = structured(await client.call_tool("sidecar__echo", {"text": "hi"}), error=False)
        check(local == {"text": "hi"}, f"sidecar__echo: {local}")
        remote = structured(await client.call_tool("remote__echo", {"text": "hi"}), error=False)
        check(remote == {"text": "hi", "via": "remote"}, f"remote__echo: {remote}")
        seen["remote__echo"] = remote

        whoami = structured(await client.call_tool("whoami", {}), error=False)
        check("authorization" in whoami, f"whoami: {whoami}")

        try:
            await client.call_tool("no_such_tool", {})
            raise AssertionError("an unknown tool should be a protocol error")
        except MCPError as error:
            check(error.error.code == -32602, f"unknown tool code: {error.error.code}")
            check("no_such_tool" in error.error.message, f"unknown tool message: {error.error}")
        seen["checks"] = "passed"
    print(json.dumps(seen))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
