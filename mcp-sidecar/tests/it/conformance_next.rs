//! The MCP conformance suite's 2026-07-28 and tasks-extension scenarios
//! (`@modelcontextprotocol/conformance@0.2.0-alpha.12`).
