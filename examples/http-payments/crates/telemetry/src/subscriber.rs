//! The `tracing` subscriber: spans to OpenTelemetry, events to the OTLP log bridge and to bunyan
//! JSON lines that carry the OpenTelemetry trace and span ids, `RUST_LOG` deciding which events.
//!
//! `RUST_LOG` filters logs (stdout and exported), not traces: spans at INFO and above always exist,
//! so `RUST_LOG=warn` quietens a busy service without breaking its traces or the ids on its lines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracer;
use tracing::callsite::Callsite as _;
use tracing::callsite::Identifier;
use tracing::field::{Field, Visit as _};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_bunyan_formatter::{BunyanFormattingLayer, JsonStorage, JsonStorageLayer};
use tracing_subscriber::filter::{FilterFn, LevelFilter, Targets, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use crate::human::{self, Deferred, HumanLines};

/// Targets whose events and spans never become exported telemetry, whatever `RUST_LOG` says: the
/// exporters' own transport would otherwise report on itself, export that, and so on
/// (opentelemetry-rust#2877; measured at TRACE: a million spans in 12 s with no traffic).
const TRANSPORT_TARGETS: [&str; 7] = [
    "h2",
    "hyper",
    "tonic",
    "tower",
    "reqwest",
    "opentelemetry",
    "rustls",
];

/// `RUST_LOG` when it is unset: the service at INFO, the SDK's own diagnostics at WARN.
pub(crate) const DEFAULT_FILTER: &str =
    "info,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn";

pub(crate) fn is_transport(target: &str) -> bool {
    TRANSPORT_TARGETS.iter().any(|prefix| {
        target.strip_prefix(prefix).is_some_and(|rest| {
            rest.is_empty()
                || rest.starts_with("::")
                || rest.starts_with('_')
                || rest.starts_with('-')
        })
    })
}

fn exported_span_or_warning(meta: &Metadata<'_>) -> bool {
    // INFO events would become span events too, duplicating the log records at ~1 µs each.
    !is_transport(meta.target()) && (meta.is_span() || *meta.level() <= Level::WARN)
}

fn exported_log(meta: &Metadata<'_>) -> bool {
    // Shutdown reports come after the log pipeline has closed; they belong on stdout only.
    !is_transport(meta.target()) && meta.target() != SHUTDOWN_TARGET
}

/// Target of the lines written while telemetry shuts down.
pub(crate) const SHUTDOWN_TARGET: &str = "telemetry::shutdown";

fn default_filter() -> Targets {
    DEFAULT_FILTER
        .parse()
        .unwrap_or_else(|_| unreachable!("the default filter parses"))
}

/// Parses `RUST_LOG` (`level`, `target=level`, comma-separated), keeping the default (and saying
/// so) when it does not parse.
pub(crate) fn log_filter(rust_log: Option<&str>, warnings: &mut Vec<String>) -> Targets {
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => default_filter(),
        Some(value) => value.parse().unwrap_or_else(|e| {
            warnings.push(format!(
                "RUST_LOG={value:?} is invalid ({e}); using {DEFAULT_FILTER:?}"
            ));
            default_filter()
        }),
    }
}

/// Whether `filter` lets any line through.
pub(crate) fn writes_lines(filter: &Targets) -> bool {
    filter.default_level() > Some(LevelFilter::OFF)
        || filter.iter().any(|(_, level)| level > LevelFilter::OFF)
}

/// How the lines are written: bunyan JSON (default) or for a person, and whether the SDK's own
/// warnings are held back for one summary at shutdown.
#[derive(Default)]
pub(crate) struct LineFormat {
    pub(crate) human: bool,
    pub(crate) deferred: Option<Arc<Deferred>>,
}

/// Builds the subscriber without installing it, so tests can capture or silence the output.
pub(crate) fn build<W>(
    name: String,
    logs_filter: Targets,
    writer: W,
    span_lines: bool,
    tracer: Option<SdkTracer>,
    logger: Option<&SdkLoggerProvider>,
    format: LineFormat,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // A tracer exists whenever spans are exported or their ids are seen, on lines or on exported
    // log records (one without an exporter when traces are off), so ids and W3C context never
    // depend on export.
    let tracing_spans = tracer.is_some();
    let traces = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            // tracing's target (`telemetry::grpc::server`, the handler's module) as a `target`
            // attribute on every span: in no convention and not in the contract (TELEMETRY.md).
            .with_target(false)
            .with_tracked_inactivity(false)
            // The RPC's status comes from its gRPC code (grpc::CallRecord::finish), not from an
            // event's `error` field. tracing-opentelemetry 0.34 still marks a span ERROR for any
            // event at ERROR level, with no switch: grpc::StatusFromCode clears that from gRPC
            // spans before export.
            .with_error_events_to_status(false)
    });
    let logs = logger.map(opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new);
    // Spans at INFO and above exist whatever RUST_LOG says, for the exported traces and for the
    // fields and ids of the lines logged inside them, and for the ids propagated downstream;
    // with neither (nothing exported, RUST_LOG=off), a call creates no span at all and the gRPC
    // layers carry the caller's context through as it came.
    let wanted = Arc::new(Wanted {
        spans: tracing_spans || writes_lines(&logs_filter),
        logs: logs_filter,
    });
    let deferred = format.deferred;
    let (bunyan, human) = if format.human {
        let human = HumanLines { writer };
        (
            None,
            Some(Deferring {
                inner: human,
                deferred,
            }),
        )
    } else {
        let bunyan = BunyanLines {
            inner: bunyan_layer(name, writer),
            span_lines,
            repeats: Repeats::default(),
        };
        (
            Some(Deferring {
                inner: bunyan,
                deferred,
            }),
            None,
        )
    };
    // Every layer has a filter of its own, none is global. A layer without one would turn the
    // others' "never" into "sometimes" (tracing-subscriber's rule for mixed stacks), and then
    // every trace! of h2 and hyper, about 160 per call, would be filtered one by one: 14 % of a
    // traced call's CPU, measured (a global filter with the lines and logs unfiltered below it:
    // 275k instructions a call against 244k). With a filter on each, a callsite no layer wants is
    // disabled once, when it registers. The line writers and the log bridge share one filter (the
    // bridge skips what is not exported itself): each filter costs a span lookup on every enter,
    // exit and close. The OpenTelemetry layer keeps its own, for INFO events (they would become
    // span events); it cannot be wrapped, its span context is found by downcasting. Inner layers
    // run first: the ids layer needs the OpenTelemetry layer's context, the line writers the
    // fields the storage layer keeps.
    let lines = SpanFields { span_lines }
        .and_then(OtelIdsLayer::new())
        .and_then(bunyan)
        .and_then(human)
        .and_then(logs.map(ExportedLogs));
    tracing_subscriber::registry()
        .with(traces.with_filter(wanted.and(exported_span_or_warning)))
        .with(lines.with_filter(wanted.and(any)))
}

/// bunyan's span storage (`JsonStorage`, what its formatter reads): the fields of each span and of
/// its parents, for the lines logged inside it. As `JsonStorageLayer` keeps it, with two
/// differences that leave every line the same. The fields that steer tracing-opentelemetry
/// ([`CONTROL_FIELDS`]) are never stored, instead of stored, copied into every child span and
/// skipped by the formatter, whose skip list hashes the key of every field of every line (with the
/// copies, 4.8k instructions a call of three lines). And the storage's timing (an `Instant` kept at the first enter,
/// `elapsed_milliseconds` stored at close) is kept only for the span START/END lines, the only
/// lines that read it: otherwise it is a clock read and two extension locks on every enter.
struct SpanFields {
    span_lines: bool,
}

/// Records a span's fields into its storage, but the [`CONTROL_FIELDS`].
struct StoredFields<'a>(&'a mut JsonStorage<'static>);

impl tracing::field::Visit for StoredFields<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if !CONTROL_FIELDS.contains(&field.name()) {
            self.0.record_i64(field, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !CONTROL_FIELDS.contains(&field.name()) {
            self.0.record_u64(field, value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if !CONTROL_FIELDS.contains(&field.name()) {
            self.0.record_f64(field, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !CONTROL_FIELDS.contains(&field.name()) {
            self.0.record_bool(field, value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if !CONTROL_FIELDS.contains(&field.name()) {
            self.0.record_str(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !CONTROL_FIELDS.contains(&field.name()) {
            self.0.record_debug(field, value);
        }
    }
}

impl<S> Layer<S> for SpanFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // A child starts from its parent's fields; its own override them.
        let mut storage = span
            .parent()
            .and_then(|parent| parent.extensions().get::<JsonStorage<'static>>().cloned())
            .unwrap_or_default();
        attrs.record(&mut StoredFields(&mut storage));
        span.extensions_mut().insert(storage);
    }

    fn on_record(&self, id: &Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(storage) = span.extensions_mut().get_mut::<JsonStorage<'static>>() {
            values.record(&mut StoredFields(storage));
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if self.span_lines {
            JsonStorageLayer.on_enter(id, ctx);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if self.span_lines {
            JsonStorageLayer.on_close(id, ctx);
        }
    }
}

/// The OTLP log bridge, given only the events that are exported as log records.
struct ExportedLogs<L>(L);

impl<S, L> Layer<S> for ExportedLogs<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if exported_log(event.metadata()) {
            self.0.on_event(event, ctx);
        }
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, id: &Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        self.0.on_record(id, values, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx);
    }
}

/// What `RUST_LOG` lets through, and spans at INFO and above when spans are wanted at all.
struct Wanted {
    logs: Targets,
    spans: bool,
}

impl Wanted {
    fn wants(&self, meta: &Metadata<'_>) -> bool {
        self.logs.would_enable(meta.target(), meta.level())
            || (self.spans && meta.is_span() && *meta.level() <= Level::INFO)
    }

    /// A layer's filter: what is wanted, and of that what `layer_wants`.
    fn and(
        self: &Arc<Self>,
        layer_wants: fn(&Metadata<'_>) -> bool,
    ) -> FilterFn<impl Fn(&Metadata<'_>) -> bool + use<>> {
        let wanted = Arc::clone(self);
        filter_fn(move |meta| wanted.wants(meta) && layer_wants(meta))
    }
}

fn any(_: &Metadata<'_>) -> bool {
    true
}

/// Fields that steer tracing-opentelemetry (the span's name and kind), not data: every line inside
/// the span would repeat them, so they are not stored for the lines (`SpanFields`).
const CONTROL_FIELDS: [&str; 2] = ["otel.name", "otel.kind"];

fn bunyan_layer<W>(name: String, writer: W) -> BunyanFormattingLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    // No skip list: the control fields are never stored (`SpanFields`).
    BunyanFormattingLayer::new(name, writer)
}

/// Bunyan writes a line when a span starts and ends; exported traces carry that, and the lines
/// triple the log volume, so by default only events are written.
struct BunyanLines<W: for<'a> MakeWriter<'a> + 'static> {
    inner: BunyanFormattingLayer<W>,
    span_lines: bool,
    repeats: Repeats,
}

/// How often one SDK or transport diagnostic may be written: a dead collector makes the exporters
/// fail every batch, and that is one problem, not a line per second.
const REPEAT_INTERVAL: Duration = Duration::from_secs(60);

/// When each SDK or transport warning last reached stdout, by callsite.
#[derive(Default)]
struct Repeats(Mutex<HashMap<Identifier, Instant>>);

impl Repeats {
    /// Whether this event may be written now. Only SDK and transport warnings are limited; the
    /// service's own lines always pass, without taking the lock.
    fn admit(&self, meta: &Metadata<'_>) -> bool {
        if !is_transport(meta.target()) || *meta.level() > Level::WARN {
            return true;
        }
        let now = Instant::now();
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match last.get(&meta.callsite()) {
            Some(at) if now.duration_since(*at) < REPEAT_INTERVAL => false,
            _ => {
                last.insert(meta.callsite(), now);
                true
            }
        }
    }
}

impl<S, W> Layer<S> for BunyanLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if self.repeats.admit(event.metadata()) {
            // An SDK diagnostic without a message would say only its crate's name.
            match crate::diagnostics::missing_message(event) {
                Some(message) => {
                    crate::diagnostics::with_message(&self.inner, event, &message, ctx)
                }
                None => self.inner.on_event(event, ctx),
            }
        }
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if self.span_lines {
            self.inner.on_new_span(attrs, id, ctx);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if self.span_lines {
            self.inner.on_close(id, ctx);
        }
    }
}

/// A line writer that, when deferring, hands the SDK's and the transport's warnings to
/// [`Deferred`] instead (said once, counted, at shutdown).
struct Deferring<L> {
    inner: L,
    deferred: Option<Arc<Deferred>>,
}

impl<S, L> Layer<S> for Deferring<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Some(deferred) = &self.deferred
            && human::is_diagnostic(event.metadata())
        {
            deferred.record(event);
            return;
        }
        self.inner.on_event(event, ctx);
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }
}

/// Writes the OpenTelemetry `trace_id` and `span_id` of a span into its bunyan fields the first
/// time it is entered (when the OpenTelemetry layer, which runs before, has started it), so every
/// line logged inside carries the ids exported for that span, not tracing's internal ones.
struct OtelIdsLayer {
    trace_id: Field,
    span_id: Field,
}

/// Marks a span whose ids are recorded; children inherit their parent's fields and need their own.
struct IdsRecorded;

impl OtelIdsLayer {
    fn new() -> Self {
        // Fields can only come from a callsite; this one exists only to name the two keys.
        let callsite = tracing::callsite! {
            name: "otel_ids",
            kind: tracing::metadata::Kind::EVENT,
            fields: trace_id, span_id
        };
        let fields = callsite.metadata().fields();
        Self {
            trace_id: fields
                .field("trace_id")
                .unwrap_or_else(|| unreachable!("declared above")),
            span_id: fields
                .field("span_id")
                .unwrap_or_else(|| unreachable!("declared above")),
        }
    }
}

impl<S> Layer<S> for OtelIdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if extensions.get_mut::<IdsRecorded>().is_some() {
            return;
        }
        let context = opentelemetry::Context::current();
        let otel_span = context.span();
        let ids = otel_span.span_context();
        if !ids.is_valid() {
            return;
        }
        if let Some(storage) = extensions.get_mut::<JsonStorage<'static>>() {
            let mut hex = [0; 32];
            storage.record_str(&self.trace_id, to_hex(&ids.trace_id().to_bytes(), &mut hex));
            storage.record_str(&self.span_id, to_hex(&ids.span_id().to_bytes(), &mut hex));
        }
        extensions.insert(IdsRecorded);
    }
}

/// `bytes` as lowercase hex in `out`, without the formatting machinery of `to_string`.
fn to_hex<'a>(bytes: &[u8], out: &'a mut [u8; 32]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in bytes.iter().take(16).enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
    }
    let len = 2 * bytes.len().min(16);
    std::str::from_utf8(&out[..len]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use telemetry_testing::Capture;

    use super::{is_transport, to_hex};

    /// What `capture` holds: the text, and each of its lines as JSON.
    fn json_lines(capture: &Capture) -> (String, Vec<serde_json::Value>) {
        let lines = capture.lines();
        let json = lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        (lines.join("\n"), json)
    }

    /// A line carries the fields of its span and of the span's parents, the innermost winning,
    /// but not the fields that steer tracing-opentelemetry; with span lines on, a span's END line
    /// still says how long it took.
    #[test]
    fn lines_carry_the_span_fields_but_not_the_control_fields() {
        let capture = Capture::default();
        let subscriber = super::build(
            "test".to_owned(),
            "info".parse().expect("a filter"),
            capture.make_writer(),
            true,
            None,
            None,
            super::LineFormat::default(),
        );
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!(
                "outer",
                otel.name = "grpc.server.Method",
                otel.kind = "server",
                rpc.method = "pkg.Service/Method",
                request.id = tracing::field::Empty,
            );
            outer.record("request.id", "from-the-outer-span");
            outer.in_scope(|| {
                tracing::info_span!("inner", request.id = "r-1").in_scope(|| {
                    tracing::info!(attempt = 2, "inside");
                });
            });
        });
        let (text, lines) = json_lines(&capture);
        let event = lines
            .iter()
            .find(|l| l["msg"].as_str().is_some_and(|m| m.ends_with("inside")))
            .unwrap_or_else(|| panic!("the event's line: {text}"));
        assert_eq!(event["rpc.method"], "pkg.Service/Method", "{text}");
        assert_eq!(event["request.id"], "r-1", "{text}");
        assert_eq!(event["attempt"], 2, "{text}");
        for line in &lines {
            for field in super::CONTROL_FIELDS {
                assert!(line.get(field).is_none(), "{field} on {line}");
            }
        }
        let end = lines
            .iter()
            .find(|l| l["msg"] == "[OUTER - END]")
            .unwrap_or_else(|| panic!("the outer span's END line: {text}"));
        assert!(end["elapsed_milliseconds"].is_u64(), "{end}");
        assert_eq!(end["request.id"], "from-the-outer-span", "{end}");
    }

    #[test]
    fn ids_print_as_lowercase_hex() {
        let mut out = [0; 32];
        let trace_id = opentelemetry::trace::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736")
            .expect("valid id");
        assert_eq!(to_hex(&trace_id.to_bytes(), &mut out), trace_id.to_string());
        assert_eq!(to_hex(&[0x00, 0xf0, 0x67, 0xaa], &mut out), "00f067aa");
    }

    /// An SDK diagnostic carries what failed in fields (`name`, `error`), often with no message:
    /// its line says them in `msg`, instead of the crate's name bunyan would fall back to.
    #[test]
    fn an_sdk_diagnostic_without_a_message_says_what_failed_in_msg() {
        let capture = Capture::default();
        let subscriber = super::build(
            "test".to_owned(),
            super::DEFAULT_FILTER.parse().expect("a filter"),
            capture.make_writer(),
            false,
            None,
            None,
            super::LineFormat::default(),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(
                target: "opentelemetry_sdk",
                name = "BatchSpanProcessor.ExportError",
                error = "the collector refused"
            );
            tracing::warn!(target: "opentelemetry_otlp", message = "a message of its own");
        });
        let (text, lines) = json_lines(&capture);
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(
            lines[0]["msg"],
            "opentelemetry_sdk: BatchSpanProcessor.ExportError: the collector refused"
        );
        assert_eq!(lines[0]["level"], 50);
        // Still where it came from: the SDK's target, not this crate's.
        assert_eq!(lines[0]["target"], "opentelemetry_sdk");
        assert_eq!(lines[1]["msg"], "a message of its own");
        assert_eq!(lines[1]["level"], 40);
    }

    /// An event's `error` field is a log line's, not the span's status: the status of an RPC
    /// comes from its gRPC code (grpc::CallRecord::finish). tracing-opentelemetry 0.34 still
    /// marks a span ERROR for any event at ERROR level, whatever its configuration.
    #[test]
    fn an_error_field_does_not_set_the_span_status() {
        use opentelemetry::trace::TracerProvider as _;

        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = super::build(
            "test".to_owned(),
            "info".parse().expect("a filter"),
            std::io::sink,
            false,
            Some(provider.tracer("test")),
            None,
            super::LineFormat::default(),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("grpc.server.Method").in_scope(|| {
                tracing::warn!(error = "the caller sent nonsense");
            });
        });
        let spans = exporter.get_finished_spans().expect("the exported spans");
        assert_eq!(spans.len(), 1, "{spans:?}");
        assert_eq!(spans[0].status, opentelemetry::trace::Status::Unset);
    }

    #[test]
    fn transport_targets_match_on_crate_boundaries() {
        for target in [
            "h2",
            "h2::codec",
            "hyper_util::client",
            "opentelemetry_sdk",
            "tonic::transport",
            "tower::buffer",
        ] {
            assert!(is_transport(target), "{target}");
        }
        for target in [
            "telemetry",
            "h2o",
            "my_service_server",
            "towers",
            "tonicity",
        ] {
            assert!(!is_transport(target), "{target}");
        }
    }
}
