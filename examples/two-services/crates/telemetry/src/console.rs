//! `OTEL_*_EXPORTER=console`: one JSON line per span, log record or metric on stderr. Stdout is
//! reserved for the service's JSON logs, which `opentelemetry-stdout` (plain text on stdout) breaks.

use std::io::Write;
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use serde_json::{Map, Value, json};

/// Writes spans, log records and metrics to stderr as JSON lines.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ConsoleExporter;

fn attributes<'a>(pairs: impl Iterator<Item = &'a KeyValue>) -> Value {
    let map: Map<String, Value> = pairs
        .map(|kv| (kv.key.to_string(), Value::String(kv.value.to_string())))
        .collect();
    Value::Object(map)
}

/// A time as RFC 3339 in UTC with microseconds, as the JSON log lines write theirs.
fn rfc3339(at: SystemTime) -> Value {
    let at = time::OffsetDateTime::from(at);
    let at = at
        .replace_nanosecond(at.nanosecond() / 1000 * 1000)
        .unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .map_or(Value::Null, Value::String)
}

/// One span's line: what it is, where it sits in its trace, and when it ran.
fn span_line(span: &SpanData) -> Value {
    // An end before the start (the wall clock stepped back) reads as zero, not as an error.
    let duration = span
        .end_time
        .duration_since(span.start_time)
        .unwrap_or_default();
    json!({
        "signal": "span",
        "name": span.name,
        "kind": format!("{:?}", span.span_kind),
        "trace_id": span.span_context.trace_id().to_string(),
        "span_id": span.span_context.span_id().to_string(),
        "parent_span_id": span.parent_span_id.to_string(),
        "start": rfc3339(span.start_time),
        "end": rfc3339(span.end_time),
        "duration_ms": duration.as_secs_f64() * 1e3,
        "status": format!("{:?}", span.status),
        "attributes": attributes(span.attributes.iter()),
        "events": span.events.iter().map(|e| e.name.to_string()).collect::<Vec<_>>(),
    })
}

fn emit(lines: impl Iterator<Item = Value>) -> OTelSdkResult {
    let mut out = Vec::new();
    for line in lines {
        // A `Value` always serializes; the buffer is memory.
        let _ = serde_json::to_writer(&mut out, &line);
        out.push(b'\n');
    }
    // One write per batch keeps lines whole when other threads write to stderr too.
    std::io::stderr()
        .lock()
        .write_all(&out)
        .map_err(|e| opentelemetry_sdk::error::OTelSdkError::InternalFailure(e.to_string()))
}

impl SpanExporter for ConsoleExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        emit(batch.iter().map(span_line))
    }
}

impl LogExporter for ConsoleExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        emit(batch.iter().map(|(record, _scope)| {
            let context = record.trace_context();
            json!({
                "signal": "log",
                "time": record.timestamp().or(record.observed_timestamp()).map(rfc3339),
                "severity": record.severity_text(),
                "body": record.body().map(|b| format!("{b:?}")),
                "trace_id": context.map(|c| c.trace_id.to_string()),
                "span_id": context.map(|c| c.span_id.to_string()),
                "attributes": record
                    .attributes_iter()
                    .map(|(k, v)| (k.to_string(), Value::String(format!("{v:?}"))))
                    .collect::<Map<_, _>>(),
            })
        }))
    }
}

impl PushMetricExporter for ConsoleExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        emit(metrics.scope_metrics().flat_map(|scope| {
            scope.metrics().map(|metric| {
                json!({
                    "signal": "metric",
                    "name": metric.name(),
                    "unit": metric.unit(),
                    "data": format!("{:?}", metric.data()),
                })
            })
        }))
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    fn span(start: SystemTime, end: SystemTime) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(7),
                SpanId::from(9),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "grpc.server.ProcessRequest".into(),
            start_time: start,
            end_time: end,
            attributes: vec![KeyValue::new("rpc.method", "ProcessRequest")],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn a_span_line_says_when_it_started_and_ended_and_how_long_it_took() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_684_400_123_456);
        let line = span_line(&span(start, start + Duration::from_micros(2_500)));
        assert_eq!(line["start"], "2026-12-07T23:00:00.123456Z");
        assert_eq!(line["end"], "2026-12-07T23:00:00.125956Z");
        assert_eq!(line["duration_ms"], 2.5);
        assert_eq!(line["name"], "grpc.server.ProcessRequest");
        assert_eq!(line["trace_id"], format!("{:032x}", 7));
        assert_eq!(line["attributes"]["rpc.method"], "ProcessRequest");
    }

    #[test]
    fn an_end_before_the_start_is_a_zero_duration() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_684_400);
        let line = span_line(&span(start, start - Duration::from_millis(3)));
        assert_eq!(line["duration_ms"], 0.0);
    }
}
