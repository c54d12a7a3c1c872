//! `OTEL_*_EXPORTER=console`: one JSON line per span, log record or metric on stderr. Stdout is
//! reserved for the service's JSON logs, which `opentelemetry-stdout` (plain text on stdout) breaks.

use std::io::Write;
use std::time::Duration;

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
        emit(batch.iter().map(|span| {
            json!({
                "signal": "span",
                "name": span.name,
                "kind": format!("{:?}", span.span_kind),
                "trace_id": span.span_context.trace_id().to_string(),
                "span_id": span.span_context.span_id().to_string(),
                "parent_span_id": span.parent_span_id.to_string(),
                "status": format!("{:?}", span.status),
                "attributes": attributes(span.attributes.iter()),
                "events": span.events.iter().map(|e| e.name.to_string()).collect::<Vec<_>>(),
            })
        }))
    }
}

impl LogExporter for ConsoleExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        emit(batch.iter().map(|(record, _scope)| {
            let context = record.trace_context();
            json!({
                "signal": "log",
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
