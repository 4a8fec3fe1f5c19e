//! The agent container. For now a placeholder that proves the workspace builds both binaries;
//! its REST API, MCP client and web page arrive in their own issue.

use clap::Parser;

/// The agent: REST + SSE API, web page and MCP client in front of the mcp-sidecar.
#[derive(Debug, Parser)]
#[command(name = "agent", version, about)]
struct Config {
    #[command(flatten)]
    log: service_core::telemetry::LogConfig,
}

fn main() {
    let config = Config::parse();
    let _ = config.log;
    println!("agent: not built yet (see the agent issue); use mcp-sidecar");
}
