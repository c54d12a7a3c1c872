//! Test support (feature `testing`): an in-process OTLP/gRPC receiver that keeps what it is sent,
//! flattened for assertions, and a writer that captures the JSON log lines.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::resource::v1::Resource;
use tonic::{Request, Response, Status};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A span as received, with ids in lowercase hex and attributes as strings.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// `service.name` of the sender.
    pub service: String,
    /// Span name.
    pub name: String,
    /// `SERVER`, `CLIENT`, `INTERNAL`, `PRODUCER`, `CONSUMER` or `UNSPECIFIED`.
    pub kind: &'static str,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// Attributes, values rendered as strings.
    pub attributes: BTreeMap<String, String>,
    /// `UNSET`, `OK` or `ERROR`.
    pub status: &'static str,
    /// The status description.
    pub status_message: String,
    /// Events: name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End time, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
}

/// A log record as received.
#[derive(Clone, Debug)]
pub struct ReceivedLog {
    /// `service.name` of the sender.
    pub service: String,
    /// The body, rendered as a string.
    pub body: String,
    /// Severity number (9 = INFO, 13 = WARN, 17 = ERROR).
    pub severity_number: i32,
    /// Severity text, as sent.
    pub severity_text: String,
    /// 32 hex digits, empty outside a span.
    pub trace_id: String,
    /// 16 hex digits, empty outside a span.
    pub span_id: String,
    /// Attributes, values rendered as strings.
    pub attributes: BTreeMap<String, String>,
}

/// One data point of one metric, as received.
#[derive(Clone, Debug)]
pub struct ReceivedPoint {
    /// `service.name` of the sender.
    pub service: String,
    /// Metric name.
    pub metric: String,
    /// Metric unit.
    pub unit: String,
    /// `sum`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Whether a sum is monotonic (a counter).
    pub monotonic: bool,
    /// Attributes, values rendered as strings.
    pub attributes: BTreeMap<String, String>,
    /// The value of a sum or gauge; the count of a histogram.
    pub value: f64,
    /// Histogram bucket boundaries.
    pub bounds: Vec<f64>,
    /// The sum of a histogram's measurements; 0 for sums and gauges.
    pub sum: f64,
}

#[derive(Debug, Default)]
struct Store {
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    logs: Mutex<Vec<ExportLogsServiceRequest>>,
}

#[derive(Clone, Debug, Default)]
struct Collector(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        lock(&self.0.traces).push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        lock(&self.0.metrics).push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        lock(&self.0.logs).push(request.into_inner());
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on a loopback port, serving on the runtime that started it.
#[derive(Debug)]
pub struct Receiver {
    address: SocketAddr,
    collector: Collector,
}

impl Receiver {
    /// Binds `127.0.0.1:0` and serves the three OTLP collector services.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let collector = Collector::default();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .add_service(LogsServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        Ok(Self { address, collector })
    }

    /// `http://127.0.0.1:<port>`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let requests = lock(&self.collector.0.traces);
        let mut spans = Vec::new();
        for resource_spans in requests.iter().flat_map(|r| &r.resource_spans) {
            let service = service_name(resource_spans.resource.as_ref());
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                let (status, status_message) = match &span.status {
                    Some(s) => (
                        ["UNSET", "OK", "ERROR"]
                            .get(s.code as usize)
                            .copied()
                            .unwrap_or("INVALID"),
                        s.message.clone(),
                    ),
                    None => ("UNSET", String::new()),
                };
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name.clone(),
                    kind: [
                        "UNSPECIFIED",
                        "INTERNAL",
                        "SERVER",
                        "CLIENT",
                        "PRODUCER",
                        "CONSUMER",
                    ]
                    .get(span.kind as usize)
                    .copied()
                    .unwrap_or("INVALID"),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    status,
                    status_message,
                    events: span
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), attributes(&e.attributes)))
                        .collect(),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                });
            }
        }
        spans
    }

    /// Every log record received so far.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        let requests = lock(&self.collector.0.logs);
        let mut logs = Vec::new();
        for resource_logs in requests.iter().flat_map(|r| &r.resource_logs) {
            let service = service_name(resource_logs.resource.as_ref());
            for record in resource_logs.scope_logs.iter().flat_map(|s| &s.log_records) {
                logs.push(ReceivedLog {
                    service: service.clone(),
                    body: record.body.as_ref().map(value).unwrap_or_default(),
                    severity_number: record.severity_number,
                    severity_text: record.severity_text.clone(),
                    trace_id: hex(&record.trace_id),
                    span_id: hex(&record.span_id),
                    attributes: attributes(&record.attributes),
                });
            }
        }
        logs
    }

    /// Every metric data point received so far, oldest export first.
    pub fn points(&self) -> Vec<ReceivedPoint> {
        let requests = lock(&self.collector.0.metrics);
        let mut points = Vec::new();
        for resource_metrics in requests.iter().flat_map(|r| &r.resource_metrics) {
            let service = service_name(resource_metrics.resource.as_ref());
            for metric in resource_metrics
                .scope_metrics
                .iter()
                .flat_map(|s| &s.metrics)
            {
                let point =
                    |kind, monotonic, attrs: &[KeyValue], value, bounds, sum| ReceivedPoint {
                        service: service.clone(),
                        metric: metric.name.clone(),
                        unit: metric.unit.clone(),
                        kind,
                        monotonic,
                        attributes: attributes(attrs),
                        value,
                        bounds,
                        sum,
                    };
                match &metric.data {
                    Some(Data::Sum(sum)) => points.extend(sum.data_points.iter().map(|p| {
                        point(
                            "sum",
                            sum.is_monotonic,
                            &p.attributes,
                            number(p.value),
                            vec![],
                            0.0,
                        )
                    })),
                    Some(Data::Gauge(gauge)) => points.extend(gauge.data_points.iter().map(|p| {
                        point("gauge", false, &p.attributes, number(p.value), vec![], 0.0)
                    })),
                    Some(Data::Histogram(histogram)) => {
                        points.extend(histogram.data_points.iter().map(|p| {
                            point(
                                "histogram",
                                false,
                                &p.attributes,
                                p.count as f64,
                                p.explicit_bounds.clone(),
                                p.sum.unwrap_or_default(),
                            )
                        }))
                    }
                    _ => {}
                }
            }
        }
        points
    }

    /// Polls `probe` every 20 ms until it returns `Some`, or gives up after `timeout`.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut probe: impl FnMut(&Self) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = probe(self) {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .map(value)
        .unwrap_or_default()
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(value).unwrap_or_default(),
            )
        })
        .collect()
}

fn value(any: &AnyValue) -> String {
    match &any.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn number(value: Option<opentelemetry_proto::tonic::metrics::v1::number_data_point::Value>) -> f64 {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    match value {
        Some(Value::AsDouble(d)) => d,
        Some(Value::AsInt(i)) => i as f64,
        None => f64::NAN,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Captures the JSON lines a subscriber writes; with `TEST_LOG=1` they are echoed to stdout too.
#[derive(Clone, Debug, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// A writer to pass to `Telemetry::writer`.
    pub fn make_writer(&self) -> BoxMakeWriter {
        let capture = self.clone();
        let echo = std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty() && v != "0");
        BoxMakeWriter::new(move || CaptureWriter {
            capture: capture.clone(),
            echo,
        })
    }

    /// Every line written so far.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&lock(&self.0))
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

struct CaptureWriter {
    capture: Capture,
    echo: bool,
}

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.capture.0).extend_from_slice(buf);
        if self.echo {
            std::io::stdout().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Exporters that accept every batch and keep nothing: the pipelines' own cost, without a network.
#[derive(Debug)]
struct Discard;

impl opentelemetry_sdk::trace::SpanExporter for Discard {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        drop(batch);
        Ok(())
    }
}

impl opentelemetry_sdk::logs::LogExporter for Discard {
    async fn export(
        &self,
        _batch: opentelemetry_sdk::logs::LogBatch<'_>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

impl opentelemetry_sdk::metrics::exporter::PushMetricExporter for Discard {
    async fn export(
        &self,
        _metrics: &opentelemetry_sdk::metrics::data::ResourceMetrics,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> opentelemetry_sdk::metrics::Temporality {
        opentelemetry_sdk::metrics::Temporality::Cumulative
    }
}

/// Installs what [`crate::init`] installs — the subscriber, the three batch pipelines and the
/// bunyan lines — with exporters that discard every batch and the lines written to `writer`, so a
/// benchmark measures what a call costs the service, not the network or a collector.
pub fn init_discarding(
    service_name: &str,
    writer: BoxMakeWriter,
) -> Result<crate::TelemetryGuard, crate::InitError> {
    crate::Telemetry::builder(service_name, "bench")
        .writer(writer)
        .env(|name| (name == "RUST_LOG").then(|| "info".to_owned()))
        .init_with(
            |settings, resource, _warnings| crate::providers::Providers {
                tracer: Some(crate::providers::tracer_provider(Discard, resource)),
                meter: Some(crate::providers::meter_provider(
                    Discard, settings, resource,
                )),
                logger: Some(crate::providers::logger_provider(Discard, resource)),
                propagation_only: false,
            },
        )
}

/// Whether `rust_log`, read as the service reads `RUST_LOG`, writes events of `target` at `level`;
/// an error when the service would refuse it (and fall back to its default).
pub fn rust_log_enables(
    rust_log: &str,
    target: &str,
    level: tracing::Level,
) -> Result<bool, String> {
    let mut warnings = Vec::new();
    let filter = crate::subscriber::log_filter(Some(rust_log), &mut warnings);
    match warnings.first() {
        Some(warning) => Err(warning.clone()),
        None => Ok(filter.would_enable(target, &level)),
    }
}
