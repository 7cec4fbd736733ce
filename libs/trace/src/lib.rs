//! Trace context across the product's hops.
//!
//! Spans are ordinary `tracing` spans; when `CC_OTLP_ENDPOINT` is set the runtime installs an
//! OpenTelemetry layer that exports them (see `cc_runtime::telemetry`). Between processes and
//! through the event store, the context travels as a W3C `traceparent`
//! (`00-<trace id>-<span id>-<flags>`): in HTTP headers, in NATS headers (commands, their
//! replies, PBX facts, relayed events as `traceparent` and CloudEvents' `ce-traceparent`), in
//! an event's metadata and in a view change. Without the layer every function here is a no-op:
//! [`current`] is `None` and nothing is written anywhere.
//!
//! Only context produced here is ever forwarded: an incoming header is parsed, and what goes
//! out is formatted again from the parsed span context, so outside text never reaches an event.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (and metadata field) name.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of the current span, when it is traced.
pub fn current() -> Option<String> {
    of(&tracing::Span::current())
}

/// The `traceparent` of `span`, when it is traced.
pub fn of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the span named by `traceparent` (a remote parent). Ignored when the
/// value is absent or not a valid W3C traceparent, or when tracing is off.
pub fn follow(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent.filter(|t| t.len() <= 128) else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_string(), tp.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// `span`, made a child of `traceparent` (see [`follow`]).
pub fn following(span: tracing::Span, traceparent: Option<&str>) -> tracing::Span {
    follow(&span, traceparent);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_tracing_layer_nothing_is_traced() {
        let span = tracing::info_span!("x");
        follow(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(of(&span), None);
        assert_eq!(current(), None);
    }
}
