//! Logs, traces and metrics, set up once for both binaries.
//!
//! **Logs**: two line formats: `text` for people at a terminal, and `json` for Cloud Run, where
//! each stdout line becomes one Cloud Logging entry. The JSON shape follows Cloud Logging's
//! structured-logging contract: `severity` and `message` are recognised special fields, and a
//! line written inside a traced span carries `logging.googleapis.com/trace`
//! (`projects/$GOOGLE_CLOUD_PROJECT/traces/<id>`), `logging.googleapis.com/spanId` and
//! `logging.googleapis.com/trace_sampled`, so the console joins logs to their trace. The other
//! keys land in `jsonPayload`. Verbosity comes from `RUST_LOG` (default [`DEFAULT_FILTER`]).
//!
//! **Traces and metrics**: OpenTelemetry through `tracing`, exported over OTLP/HTTP (protobuf)
//! only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal `…_TRACES_ENDPOINT` /
//! `…_METRICS_ENDPOINT`) is set; otherwise nothing is created, nothing connects and nothing is
//! logged about it. The standard variables are honoured by the SDK: `OTEL_SERVICE_NAME`
//! (default: the binary's name), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` (+`_ARG`),
//! `OTEL_BSP_*` for the batch span processor, `OTEL_METRIC_EXPORT_INTERVAL`,
//! `OTEL_EXPORTER_OTLP_HEADERS` / `_TIMEOUT`. Spans are batched on a background thread (a slow or
//! absent receiver never holds up a request: the queue drops when full) and flushed by
//! [`Telemetry::shutdown`], which `main` calls last so Cloud Run's SIGTERM loses nothing.

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
};

use clap::{Args, ValueEnum};
use opentelemetry::{
    KeyValue,
    propagation::TextMapCompositePropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};
use serde_json::{Map, Value};
use tracing::{Event, Level, Subscriber, field::Field};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::{JsonFields, Writer},
        time::{FormatTime, SystemTime},
    },
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

pub mod propagation;

/// Verbosity when RUST_LOG is unset. rmcp logs every stateless request's set-up and tear-down
/// at `info`, which would drown the service's own lines, so it starts at `warn`.
pub const DEFAULT_FILTER: &str = "info,rmcp=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line in Cloud Logging's structured format.
    Json,
    /// Human-readable lines (coloured on a terminal).
    Text,
}

/// Logging settings, shared by both binaries' command lines.
#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// Log line format: `json` (Cloud Logging structured lines) or `text`. Default: `text` when
    /// stdout is a terminal, `json` otherwise. Verbosity is set with RUST_LOG (default
    /// `info,rmcp=warn`). Traces and metrics go over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is
    /// set (standard OTEL_* variables apply).
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

impl LogConfig {
    /// The format in effect: the configured one, else chosen by whether stdout is a terminal.
    pub fn effective_format(&self) -> LogFormat {
        self.log_format.unwrap_or_else(|| {
            if std::io::stdout().is_terminal() {
                LogFormat::Text
            } else {
                LogFormat::Json
            }
        })
    }
}

static EXPORTING_TRACES: AtomicBool = AtomicBool::new(false);

/// True when spans are exported. Hot paths (one span per tool call) create their spans only
/// then, so a sidecar without a collector pays nothing for them.
pub fn exporting_traces() -> bool {
    EXPORTING_TRACES.load(Ordering::Relaxed)
}

/// What `init` set up; flush it with [`Telemetry::shutdown`] before exiting.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// True when metrics are being exported.
    pub fn exporting_metrics(&self) -> bool {
        self.meter_provider.is_some()
    }

    /// Exports what is still buffered and stops the exporters.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider {
            if let Err(error) = provider.force_flush() {
                eprintln!("flushing traces failed: {error}");
            }
            let _ = provider.shutdown();
        }
        if let Some(provider) = self.meter_provider {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.trim().is_empty())
}

/// True when the environment asks for OTLP export of this signal.
fn otlp_requested(signal_endpoint: &str) -> bool {
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|value| value.eq_ignore_ascii_case("true"));
    !disabled && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set(signal_endpoint))
}

fn resource(service_name: &str) -> Resource {
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| service_name.to_owned());
    Resource::builder()
        .with_service_name(name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Installs logging (and, when configured, OTLP traces and metrics) for `service_name`.
/// Call once, first thing in `main`, inside the async runtime.
pub fn init(config: &LogConfig, service_name: &str) -> Telemetry {
    let mut telemetry = Telemetry::default();
    let mut setup_errors = vec![];

    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
    ]));

    if otlp_requested("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => {
                let provider = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource(service_name))
                    .build();
                opentelemetry::global::set_tracer_provider(provider.clone());
                telemetry.tracer_provider = Some(provider);
                EXPORTING_TRACES.store(true, Ordering::Relaxed);
            }
            Err(error) => setup_errors.push(format!("OTLP trace exporter: {error}")),
        }
    }
    if otlp_requested("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
        match opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => {
                let provider = SdkMeterProvider::builder()
                    .with_periodic_exporter(exporter)
                    .with_resource(resource(service_name))
                    .build();
                opentelemetry::global::set_meter_provider(provider.clone());
                telemetry.meter_provider = Some(provider);
            }
            Err(error) => setup_errors.push(format!("OTLP metric exporter: {error}")),
        }
    }

    let otel_layer = telemetry.tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name.to_owned()))
    });
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let format_layer = match config.effective_format() {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(CloudLoggingFormat {
                project: std::env::var("GOOGLE_CLOUD_PROJECT")
                    .ok()
                    .filter(|p| !p.is_empty()),
            })
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(format_layer)
        .init();
    for error in setup_errors {
        tracing::warn!(%error, "telemetry export is off");
    }
    telemetry
}

/// Formats an event as one Cloud Logging JSON line: `severity`, `message`, `time`, `target`,
/// the event's fields, the fields of the spans it happened in (outermost first, inner spans
/// overriding), so a log line inside a job's span carries its `job_id`, and the trace fields
/// when the span is traced.
struct CloudLoggingFormat {
    project: Option<String>,
}

impl<S, N> FormatEvent<S, N> for CloudLoggingFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut entry = Map::new();
        if let Some(scope) = context.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // Span fields were recorded by `JsonFields`, so they are a JSON object already.
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields)
                {
                    entry.extend(
                        fields
                            .into_iter()
                            .filter(|(key, _)| !key.starts_with("otel.")),
                    );
                }
            }
        }
        event.record(&mut FieldCollector(&mut entry));

        let span_context = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .clone();
        if span_context.is_valid() {
            let trace_id = span_context.trace_id().to_string();
            let trace = match &self.project {
                Some(project) => format!("projects/{project}/traces/{trace_id}"),
                None => trace_id,
            };
            entry.insert("logging.googleapis.com/trace".into(), trace.into());
            entry.insert(
                "logging.googleapis.com/spanId".into(),
                span_context.span_id().to_string().into(),
            );
            entry.insert(
                "logging.googleapis.com/trace_sampled".into(),
                span_context.is_sampled().into(),
            );
        }

        let metadata = event.metadata();
        entry.insert("severity".into(), severity(*metadata.level()).into());
        entry.insert("target".into(), metadata.target().into());
        let mut time = String::new();
        if SystemTime.format_time(&mut Writer::new(&mut time)).is_ok() {
            entry.insert("time".into(), time.into());
        }
        if !entry.contains_key("message") {
            entry.insert("message".into(), Value::String(String::new()));
        }
        writeln!(writer, "{}", Value::Object(entry))
    }
}

/// Cloud Logging's `LogSeverity` names for tracing levels.
fn severity(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

struct FieldCollector<'a>(&'a mut Map<String, Value>);

impl tracing::field::Visit for FieldCollector<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
