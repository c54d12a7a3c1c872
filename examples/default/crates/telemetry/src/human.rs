//! For a person at a terminal (the CLI): readable lines instead of bunyan JSON, and the SDK's own
//! diagnostics held back and said once, counted, when telemetry shuts down.
//!
//! A line is `LEVEL message key=value ... trace_id=... span_id=...`. An SDK diagnostic carries its
//! meaning in fields (`name`, `error`), not in its message; here it is written as
//! `opentelemetry_sdk: BatchSpanProcessor.ExportError: <error>` so the line says what failed.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_bunyan_formatter::JsonStorage;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The message and the other fields of one event, as text.
#[derive(Default)]
pub(crate) struct Fields {
    pub(crate) message: String,
    name: Option<String>,
    error: Option<String>,
    rest: String,
    dropped: Option<u64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_owned());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name().starts_with("dropped_") {
            self.dropped = Some(value);
        }
        self.record(field, value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name().starts_with("dropped_") {
            self.dropped = u64::try_from(value).ok();
        }
        self.record(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "name" => self.name = Some(value),
            "error" => self.error = Some(value),
            key => {
                let _ = write!(self.rest, " {key}={value}");
            }
        }
    }

    pub(crate) fn of(event: &Event<'_>) -> Self {
        let mut fields = Self::default();
        event.record(&mut fields);
        fields
    }

    /// The message and its `name`/`error` fields; for an SDK or transport diagnostic (whose
    /// message is empty or generic), what failed and why.
    pub(crate) fn text(&self, target: &str) -> String {
        if !crate::subscriber::is_transport(target) {
            let mut text = self.message.clone();
            for (key, value) in [("name", &self.name), ("error", &self.error)] {
                if let Some(value) = value {
                    let _ = write!(text, " {key}={value}");
                }
            }
            return text;
        }
        let mut text = format!("{target}: {}", self.name.as_deref().unwrap_or("diagnostic"));
        for detail in [self.error.as_deref(), Some(self.message.as_str())]
            .into_iter()
            .flatten()
            .filter(|d| !d.is_empty())
        {
            let _ = write!(text, ": {detail}");
        }
        text
    }
}

/// Writes one readable line per event.
pub(crate) struct HumanLines<W> {
    pub(crate) writer: W,
}

impl<S, W> Layer<S> for HumanLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let fields = Fields::of(event);
        let mut line = format!(
            "{:>5} {}{}",
            meta.level(),
            fields.text(meta.target()),
            fields.rest
        );
        if let Some(span) = ctx.event_span(event)
            && let Some(storage) = span.extensions().get::<JsonStorage<'static>>()
        {
            for key in ["trace_id", "span_id"] {
                if let Some(serde_json::Value::String(id)) = storage.values().get(key) {
                    let _ = write!(line, " {key}={id}");
                }
            }
        }
        line.push('\n');
        let _ = self.writer.make_writer_for(meta).write_all(line.as_bytes());
    }
}

/// The SDK and transport warnings of a process that defers them (see [`crate::Telemetry::defer_diagnostics`]).
#[derive(Debug, Default)]
pub(crate) struct Deferred(Mutex<DeferredState>);

#[derive(Debug, Default)]
struct DeferredState {
    count: usize,
    first: Option<String>,
    first_error: Option<String>,
    dropped_spans: u64,
    dropped_logs: u64,
}

impl Deferred {
    pub(crate) fn record(&self, event: &Event<'_>) {
        let fields = Fields::of(event);
        let name = event.metadata().name();
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if name.contains("SpansDropped") {
            state.dropped_spans += fields.dropped.unwrap_or(0);
        } else if name.contains("LogsDropped") {
            state.dropped_logs += fields.dropped.unwrap_or(0);
        } else if name.contains("DroppingStarted") {
            // said with its count at shutdown (SpansDropped / LogsDropped)
        } else {
            state.count += 1;
            let text = fields.text(event.metadata().target());
            if fields.error.is_some() && state.first_error.is_none() {
                state.first_error = Some(text.clone());
            }
            if state.first.is_none() {
                state.first = Some(text);
            }
        }
    }

    /// One line for each kind of problem seen, `problems` (from the shutdown) included.
    pub(crate) fn summary(&self, endpoint: &str, problems: &[String]) -> Vec<String> {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut lines = Vec::new();
        if state.dropped_spans > 0 {
            lines.push(format!(
                "{} spans dropped: queue full at this rate; raise OTEL_BSP_MAX_QUEUE_SIZE or lower the rate",
                state.dropped_spans
            ));
        }
        if state.dropped_logs > 0 {
            lines.push(format!(
                "{} log records dropped: queue full at this rate; raise OTEL_BLRP_MAX_QUEUE_SIZE or lower the rate",
                state.dropped_logs
            ));
        }
        if state.count > 0 || !problems.is_empty() {
            // An error says why (connection refused); a timeout only that it took too long.
            let first = state
                .first_error
                .clone()
                .or_else(|| state.first.clone())
                .or_else(|| problems.first().cloned())
                .unwrap_or_default();
            lines.push(format!(
                "telemetry could not be delivered to {endpoint} (is a collector listening there? \
                 OTEL_SDK_DISABLED=true turns export off); first problem: {first} ({} in all)",
                state.count + problems.len()
            ));
        }
        lines
    }
}

/// Whether an event is the SDK's or the transport's own warning (held back when deferring).
pub(crate) fn is_diagnostic(meta: &tracing::Metadata<'_>) -> bool {
    crate::subscriber::is_transport(meta.target()) && *meta.level() <= Level::WARN
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_sdk_diagnostic_says_what_failed() {
        let fields = super::Fields {
            name: Some("BatchSpanProcessor.ExportError".into()),
            error: Some("connection refused".into()),
            ..Default::default()
        };
        assert_eq!(
            fields.text("opentelemetry_sdk"),
            "opentelemetry_sdk: BatchSpanProcessor.ExportError: connection refused"
        );
    }

    #[test]
    fn the_service_s_own_error_field_is_kept() {
        let fields = super::Fields {
            message: "call failed".into(),
            error: Some("timeout".into()),
            ..Default::default()
        };
        assert_eq!(
            fields.text("my_service_server"),
            "call failed error=timeout"
        );
    }
}
