//! The sidecar's metrics, exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see
//! `service_core::telemetry`); without it the global meter is a no-op and these cost nothing.
//!
//! | instrument | kind | attributes |
//! |---|---|---|
//! | `mcp.tool.calls` | counter | `tool`, `outcome` (`ok`, `error`, `protocol_error`) |
//! | `render.job.duration` | histogram, s | `outcome` (`succeeded`, `failed`, `cancelled`, …) |
//! | `render.queue.depth` | gauge | — (queue entries waiting or being worked on) |
//! | `render.jobs.reclaimed` | counter | — (jobs taken over from a silent worker) |
//! | `render.artifact.size` | histogram, bytes | `content_type` |

use std::sync::{
    Arc, LazyLock,
    atomic::{AtomicU64, Ordering},
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, ObservableGauge},
};

pub struct Metrics {
    pub tool_calls: Counter<u64>,
    pub job_duration: Histogram<f64>,
    pub jobs_reclaimed: Counter<u64>,
    pub artifact_size: Histogram<u64>,
    queue_depth: Arc<AtomicU64>,
    _queue_depth_gauge: ObservableGauge<u64>,
}

/// The instruments, made from the global meter on first use (after telemetry is set up).
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let meter = opentelemetry::global::meter("mcp-sidecar");
    let queue_depth = Arc::new(AtomicU64::new(0));
    let observed = queue_depth.clone();
    Metrics {
        tool_calls: meter
            .u64_counter("mcp.tool.calls")
            .with_description("MCP tool calls, by tool and outcome")
            .build(),
        job_duration: meter
            .f64_histogram("render.job.duration")
            .with_unit("s")
            .with_description("Time from a render attempt's start to its end, by outcome")
            .build(),
        jobs_reclaimed: meter
            .u64_counter("render.jobs.reclaimed")
            .with_description(
                "Render jobs taken over from a worker that stopped renewing its lease",
            )
            .build(),
        artifact_size: meter
            .u64_histogram("render.artifact.size")
            .with_unit("By")
            .with_description("Size of stored render artifacts")
            .build(),
        _queue_depth_gauge: meter
            .u64_observable_gauge("render.queue.depth")
            .with_description("Render queue entries waiting or being worked on")
            .with_callback(move |gauge| gauge.observe(observed.load(Ordering::Relaxed), &[]))
            .build(),
        queue_depth,
    }
});

impl Metrics {
    pub fn tool_call(&self, tool: &str, outcome: &'static str) {
        self.tool_calls.add(
            1,
            &[
                KeyValue::new("tool", tool.to_owned()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    pub fn set_queue_depth(&self, depth: u64) {
        self.queue_depth.store(depth, Ordering::Relaxed);
    }
}
