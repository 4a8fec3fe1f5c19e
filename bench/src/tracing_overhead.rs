//! Tracing's cost on the tool-call hot path: the same load against two identical sidecars,
//! one exporting spans over OTLP (to a sink that answers at once) and one not, in alternating
//! rounds of one run. Every call carries a `traceparent`, so the exporting sidecar records and
//! ships a span per call.

use serde::Serialize;

use crate::{
    load::{self, Dialect, LoadReport},
    processes::{Redis, Server, TempDir, release_dir},
};

#[derive(Debug, Serialize)]
pub struct TracingOverheadReport {
    pub clients: usize,
    pub calls_each: usize,
    pub rounds: Vec<(LoadReport, LoadReport)>,
    pub export_off_calls_per_second: f64,
    pub export_on_calls_per_second: f64,
    /// export on ÷ export off.
    pub throughput_ratio: f64,
}

pub async fn run(
    clients: usize,
    calls_each: usize,
    rounds: usize,
) -> anyhow::Result<TracingOverheadReport> {
    let redis = Redis::start()?;
    let artifacts = TempDir::new("artifacts")?;
    let sink = load::otlp_sink().await?;
    let base = |extra: Vec<(&'static str, String)>| {
        let mut env = vec![
            ("MCP_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("REDIS_URL", redis.url()),
            ("ARTIFACT_DIR", artifacts.0.display().to_string()),
            (
                "ARTIFACT_SIGNING_KEY",
                "bench-signing-key-0123456789".to_owned(),
            ),
            ("RENDER_WORKERS", "0".to_owned()),
        ];
        env.extend(extra);
        env
    };
    let off = Server::start(&release_dir().join("mcp-sidecar"), &base(vec![]))?;
    let on = Server::start(
        &release_dir().join("mcp-sidecar"),
        &base(vec![(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{sink}"),
        )]),
    )?;
    let mut results = vec![];
    for _ in 0..rounds {
        let without = load::run(
            off.addr,
            "/mcp",
            Dialect::Stateless,
            clients,
            calls_each,
            true,
        )
        .await?;
        let with = load::run(
            on.addr,
            "/mcp",
            Dialect::Stateless,
            clients,
            calls_each,
            true,
        )
        .await?;
        results.push((without, with));
    }
    #[allow(clippy::cast_precision_loss)]
    let mean = |pick: fn(&(LoadReport, LoadReport)) -> f64| {
        results.iter().map(pick).sum::<f64>() / results.len().max(1) as f64
    };
    let off_rate = mean(|(without, _)| without.calls_per_second);
    let on_rate = mean(|(_, with)| with.calls_per_second);
    Ok(TracingOverheadReport {
        clients,
        calls_each,
        export_off_calls_per_second: off_rate,
        export_on_calls_per_second: on_rate,
        throughput_ratio: on_rate / off_rate,
        rounds: results,
    })
}
