"""The official MCP Python SDK (PyPI `mcp`) as an independent client of the sidecar.

Usage: python_sdk_client.py URL MODE
  MODE `auto`   - the SDK's default: `server/discover` at protocol 2026-07-28, no session.
  MODE `legacy` - the `initialize` handshake at 2025-11-25 (a session when the server keeps one).

Lists the tools, calls each one for success and for a domain failure, and checks what came
back. Prints one JSON line with what it saw and exits non-zero on the first mismatch.
"""

from __future__ import annotations

import json
import sys

import anyio
from mcp import Client, MCPError
from mcp_types import TextContent

EXPECTED_TOOLS = {"add", "subtract", "echo"}


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
        check(client.server_info.name == "mcp-sidecar", f"server name: {client.server_info}")

        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        seen["tools"] = sorted(tools)
        check(EXPECTED_TOOLS <= set(tools), f"tools: {sorted(tools)}")
        for name in EXPECTED_TOOLS:
            tool = tools[name]
            check(bool(tool.description), f"{name}: description")
            check(tool.input_schema.get("type") == "object", f"{name}: input schema")
            check(tool.output_schema is not None, f"{name}: output schema")
            for prop, schema in tool.input_schema["properties"].items():
                check(bool(schema.get("description")), f"{name}.{prop}: description")

        # The SDK validates structuredContent against each outputSchema on success.
        add = structured(await client.call_tool("add", {"a": 2, "b": 3}), error=False)
        check(add == {"sum": 5}, f"add: {add}")
        seen["add(2,3)"] = add["sum"]
        subtract = structured(await client.call_tool("subtract", {"a": 10, "b": 4}), error=False)
        check(subtract == {"difference": 6}, f"subtract: {subtract}")
        echo = structured(await client.call_tool("echo", {"text": "hi from python"}), error=False)
        check(echo == {"text": "hi from python"}, f"echo: {echo}")

        overflow = structured(
            await client.call_tool("add", {"a": 18446744073709551615, "b": 1}), error=True
        )
        check("integer overflow" in overflow["error"], f"overflow: {overflow}")
        wrong_type = structured(await client.call_tool("subtract", {"a": "ten", "b": 4}), error=True)
        check("invalid arguments" in wrong_type["error"], f"wrong type: {wrong_type}")
        empty = structured(await client.call_tool("echo", {"text": ""}), error=True)
        check(empty["error"] == "text must not be empty", f"empty echo: {empty}")

        try:
            await client.call_tool("no_such_tool", {})
            raise AssertionError("an unknown tool should be a protocol error")
        except MCPError as error:
            check(error.error.code == -32602, f"unknown tool code: {error.error.code}")
        seen["checks"] = "passed"
    print(json.dumps(seen))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
