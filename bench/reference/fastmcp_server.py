"""The reference a user would otherwise deploy: a FastMCP server with the same `add` tool,
shaped like Google's Cloud Run MCP sample (FastMCP, streamable HTTP, PORT from the
environment). Benchmarks only; listens on 127.0.0.1.

Usage: PORT=8123 python fastmcp_server.py
"""

import asyncio
import os

from fastmcp import FastMCP

mcp = FastMCP("MCP Server on Cloud Run")


@mcp.tool()
def add(a: int, b: int) -> dict:
    """Add two numbers."""
    return {"sum": a + b}


if __name__ == "__main__":
    asyncio.run(
        mcp.run_async(
            transport="streamable-http",
            host="127.0.0.1",
            port=int(os.getenv("PORT", "8080")),
            log_level="warning",
        )
    )
