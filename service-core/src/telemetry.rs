//! Logging set-up shared by both binaries.
//!
//! Two line formats: `text` for people at a terminal, and `json` for Cloud Run, where each
//! stdout line becomes one Cloud Logging entry. The JSON shape follows Cloud Logging's
//! structured-logging contract: `severity` and `message` are recognised special fields, the
//! remaining keys land in `jsonPayload`. Verbosity comes from `RUST_LOG` (default [`DEFAULT_FILTER`]).

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use serde_json::{Map, Value};
use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{
    EnvFilter,
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::{JsonFields, Writer},
        time::{FormatTime, SystemTime},
    },
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

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
    /// stdout is a terminal, `json` otherwise. Verbosity is set with RUST_LOG (default `info,rmcp=warn`).
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

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(config: &LogConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter);
    match config.effective_format() {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(CloudLoggingFormat),
            )
            .init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal()))
            .init(),
    }
}

/// Formats an event as one Cloud Logging JSON line: `severity`, `message`, `time`, `target`,
/// the event's fields, and the fields of the spans it happened in (outermost first, inner
/// spans overriding), so a log line inside a job's span carries its `job_id`.
struct CloudLoggingFormat;

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
                    entry.extend(fields);
                }
            }
        }
        event.record(&mut FieldCollector(&mut entry));

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
