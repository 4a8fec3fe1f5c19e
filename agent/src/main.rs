use agent::{App, config::Config};
use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    service_core::telemetry::init(&config.log);
    let shutdown =
        service_core::shutdown::cancel_on_signal().context("installing signal handlers")?;
    let app = App::build(config, shutdown)
        .await
        .context("starting the agent")?;
    app.run_until_stopped().await.context("serving")?;
    tracing::info!("stopped");
    Ok(())
}
