use agent::{App, config::Config};
use anyhow::Context;
use clap::Parser;

/// mimalloc instead of glibc's allocator: many small, short-lived allocations across threads
/// per request (see mcp-sidecar's main.rs for the profile that led here).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = service_core::telemetry::init(&config.log, "agent");
    let served = serve(config).await;
    // Last, so the spans of the final requests are exported before the exit.
    telemetry.shutdown();
    served
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let shutdown =
        service_core::shutdown::cancel_on_signal().context("installing signal handlers")?;
    let app = App::build(config, shutdown)
        .await
        .context("starting the agent")?;
    app.run_until_stopped().await.context("serving")?;
    tracing::info!("stopped");
    Ok(())
}
