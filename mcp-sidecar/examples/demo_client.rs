//! A real MCP client session against a running sidecar, as the README's run command shows it:
//! lists the tools and calls `add(2, 3)`.
//!
//! `cargo run -p mcp-sidecar --example demo_client -- [URL]` (default http://127.0.0.1:3000/mcp)

use anyhow::Context;
use rmcp::{
    ServiceExt,
    model::{CallToolRequestParams, ClientConfig},
    transport::StreamableHttpClientTransport,
};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:3000/mcp".to_owned());
    let client = ClientConfig::default()
        .serve(StreamableHttpClientTransport::from_uri(url.clone()))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    if let Some(info) = client.peer_info()
        && let Some(server) = &info.server_info
    {
        println!("connected to {} {} at {url}", server.name, server.version);
    }

    println!("tools:");
    for tool in client.list_all_tools().await.context("tools/list")? {
        println!(
            "  {:<20} {}",
            tool.name,
            tool.description.as_deref().unwrap_or("")
        );
    }

    let arguments = json!({"a": 2, "b": 3});
    let result = client
        .call_tool(
            CallToolRequestParams::new("add")
                .with_arguments(arguments.as_object().cloned().unwrap_or_default()),
        )
        .await
        .context("tools/call add")?;
    println!(
        "add(2, 3) -> {}",
        result.structured_content.unwrap_or_default()
    );
    client.cancel().await.context("closing the session")?;
    Ok(())
}
