//! Trace context across process boundaries, in W3C `traceparent` form.
//!
//! In: HTTP headers carry `traceparent` (+`tracestate`), or Cloud Run's own
//! `X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1` (span id in decimal), which it adds to requests
//! it traces; `traceparent` wins when both are present. Out: the current span's context as a
//! `traceparent` string, for an outgoing request's headers or MCP `_meta`, or to store with a
//! render job so whichever worker runs it continues the same trace.

use std::collections::HashMap;

use opentelemetry::{
    Context,
    propagation::{Extractor, TextMapPropagator},
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header Cloud Run sets on requests it traces.
pub const CLOUD_TRACE_HEADER: &str = "x-cloud-trace-context";

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

fn remote(span_context: SpanContext) -> Option<Context> {
    span_context
        .is_valid()
        .then(|| Context::new().with_remote_span_context(span_context))
}

/// The remote parent named by `headers`, if any.
pub fn context_from_headers(headers: &http::HeaderMap) -> Option<Context> {
    let extracted = TraceContextPropagator::new().extract(&Headers(headers));
    let span_context = extracted.span().span_context().clone();
    if span_context.is_valid() {
        return Some(extracted);
    }
    headers
        .get(CLOUD_TRACE_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_cloud_trace_context)
        .and_then(remote)
}

/// Parses `TRACE_ID/SPAN_ID;o=OPTIONS` (span id in decimal; `o=1` means sampled).
fn parse_cloud_trace_context(value: &str) -> Option<SpanContext> {
    let (trace, rest) = value.split_once('/')?;
    let (span, options) = rest.split_once(';').unwrap_or((rest, ""));
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from(span.parse::<u64>().ok()?);
    let sampled = options.trim() == "o=1";
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(SpanContext::new(
        trace_id,
        span_id,
        flags,
        true,
        TraceState::default(),
    ))
}

/// The remote parent a stored or received `traceparent` names, if it is valid.
pub fn context_from_traceparent(traceparent: &str) -> Option<Context> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let extracted = TraceContextPropagator::new().extract(&carrier);
    let span_context = extracted.span().span_context().clone();
    span_context.is_valid().then_some(extracted)
}

/// The `traceparent` of `context`'s span, if it has a valid one.
pub fn traceparent_of(context: &Context) -> Option<String> {
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// The current span's `traceparent` (None when tracing is off or there is no span).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current().context())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_wins_over_the_cloud_run_header() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        headers.insert(
            CLOUD_TRACE_HEADER,
            "105445aa7843bc8bf206b12000100000/1;o=1".parse().unwrap(),
        );
        let context = context_from_headers(&headers).unwrap();
        assert_eq!(
            traceparent_of(&context).unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn the_cloud_run_header_is_understood_alone() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            CLOUD_TRACE_HEADER,
            "105445aa7843bc8bf206b12000100000/255;o=1".parse().unwrap(),
        );
        let context = context_from_headers(&headers).unwrap();
        assert_eq!(
            traceparent_of(&context).unwrap(),
            "00-105445aa7843bc8bf206b12000100000-00000000000000ff-01"
        );
        headers.insert(CLOUD_TRACE_HEADER, "not-a-trace".parse().unwrap());
        assert!(context_from_headers(&headers).is_none());
        assert!(context_from_headers(&http::HeaderMap::new()).is_none());
    }

    #[test]
    fn traceparents_round_trip_and_bad_ones_are_ignored() {
        let value = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(
            traceparent_of(&context_from_traceparent(value).unwrap()).unwrap(),
            value
        );
        assert!(context_from_traceparent("").is_none());
        assert!(
            context_from_traceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01")
                .is_none()
        );
    }
}
