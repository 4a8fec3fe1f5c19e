use anyhow::Context;
use clap::Parser;
use mcp_sidecar::{App, config::Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    service_core::telemetry::init(&config.log);
    let shutdown =
        service_core::shutdown::cancel_on_signal().context("installing signal handlers")?;
    let app = App::build(config, shutdown)
        .await
        .context("starting mcp-sidecar")?;
    app.run_until_stopped().await.context("serving")?;
    tracing::info!("stopped");
    Ok(())
}
