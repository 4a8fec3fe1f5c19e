//! A real MCP client session against a running sidecar, as the README's run command shows it:
//! lists the tools, calls `add(2, 3)`, renders a chart as a background job and prints the
//! download URL of the PNG.
//!
//! `cargo run -p mcp-sidecar --example demo_client -- [URL]` (default http://127.0.0.1:3000/mcp)

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rmcp::{
    ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ClientConfig},
    service::RunningService,
    transport::StreamableHttpClientTransport,
};
use serde_json::{Value, json};

type Client = RunningService<rmcp::RoleClient, ClientConfig>;

async fn call(client: &Client, tool: &str, arguments: Value) -> anyhow::Result<Value> {
    let result: CallToolResult = client
        .call_tool(
            CallToolRequestParams::new(tool.to_owned())
                .with_arguments(arguments.as_object().cloned().unwrap_or_default()),
        )
        .await
        .with_context(|| format!("tools/call {tool}"))?;
    let content = result.structured_content.unwrap_or_default();
    if result.is_error == Some(true) {
        bail!("{tool} failed: {}", content["error"]);
    }
    Ok(content)
}

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
        let description = tool.description.as_deref().unwrap_or("");
        let first_sentence = description.split(". ").next().unwrap_or(description);
        println!("  {:<18} {first_sentence}", tool.name);
    }

    let sum = call(&client, "add", json!({"a": 2, "b": 3})).await?;
    println!("add(2, 3) -> {sum}");

    let spec = json!({
        "kind": "chart", "width": 800, "height": 500,
        "chart": {
            "type": "bar", "title": "Quarterly revenue", "x_label": "quarter", "y_label": "EUR k",
            "series": [
                {"name": "2025", "points": [[1, 120], [2, 135], [3, 150], [4, 160]]},
                {"name": "2026", "points": [[1, 130], [2, 149], [3, 171], [4, 190]]}
            ]
        }
    });
    let started = call(&client, "start_render", json!({"spec": spec})).await?;
    let job_id = started["job_id"].as_str().unwrap_or_default().to_owned();
    println!("start_render -> job {job_id} ({})", started["state"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        let status = call(&client, "get_render_status", json!({"job_id": job_id})).await?;
        let message = status["message"].as_str().unwrap_or_default().to_owned();
        if message != last {
            println!("  {} {message}", status["state"]);
            last = message;
        }
        match status["state"].as_str() {
            Some("succeeded") => break,
            Some("failed") => bail!("the render failed: {}", status["error"]),
            _ if Instant::now() > deadline => bail!("the render did not finish in 60 s: {status}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let result = call(&client, "get_render_result", json!({"job_id": job_id})).await?;
    println!(
        "chart PNG ({} bytes, {}): {}",
        result["bytes"],
        result["content_type"],
        result["url"].as_str().unwrap_or_default()
    );
    client.cancel().await.context("closing the session")?;
    Ok(())
}
