//! Test support for the workspace's crates, a dev-dependency only: an in-process OTLP receiver
//! (gRPC and HTTP/protobuf on one port, plaintext or TLS) that keeps what it is sent, flattened for
//! assertions; a writer that captures the JSON log lines; a throwaway PKI; the [`World`] a test
//! binary exports its telemetry to; and telemetry with exporters that discard, for benchmarks.
//! It uses only the `telemetry` crate's public API.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
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

/// The span named `name` in `spans`; a missing one fails the test, naming those there are.
///
/// # Panics
/// When no span is named `name`.
#[track_caller]
pub fn span<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name:?} among {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

/// Asserts each `(key, value)` is among the span's attributes.
///
/// # Panics
/// When one is missing or has another value.
#[track_caller]
pub fn check_attributes(span: &ReceivedSpan, expected: &[(&str, &str)]) {
    for (key, value) in expected {
        assert_eq!(
            span.attributes.get(*key).map(String::as_str),
            Some(*value),
            "attribute {key} of span {}: {:?}",
            span.name,
            span.attributes
        );
    }
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

/// An OTLP receiver on a loopback port, serving on the runtime that started it: OTLP/gRPC, and
/// OTLP/HTTP with protobuf bodies (`POST /v1/traces`, `/v1/metrics`, `/v1/logs`) on the same port.
#[derive(Debug)]
pub struct Receiver {
    address: SocketAddr,
    collector: Collector,
    tls: bool,
}

impl Receiver {
    /// Binds `127.0.0.1:0` and serves the three OTLP collector services in plaintext.
    pub async fn start() -> std::io::Result<Self> {
        Self::serve(None).await
    }

    /// Like [`Self::start`], over TLS with `identity`; with `client_ca` (PEM), only exporters that
    /// present a certificate it signed are served (mutual TLS).
    pub async fn start_tls(
        identity: &telemetry::tls::Identity,
        client_ca: Option<&[u8]>,
    ) -> std::io::Result<Self> {
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity.tonic());
        if let Some(ca) = client_ca {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        Self::serve(Some(config)).await
    }

    async fn serve(tls: Option<tonic::transport::ServerTlsConfig>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let collector = Collector::default();
        let secure = tls.is_some();
        let mut builder = tonic::transport::Server::builder().accept_http1(true);
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(std::io::Error::other)?;
        }
        let server = builder
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .add_service(LogsServiceServer::new(collector.clone()))
            .add_service(HttpReceiver(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        Ok(Self {
            address,
            collector,
            tls: secure,
        })
    }

    /// `http://127.0.0.1:<port>` (`https://` over TLS), for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
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

/// OTLP/HTTP with protobuf bodies: tonic routes `/<NAME>/*` here, so `NAME` is the path's first
/// segment.
#[derive(Clone, Debug)]
struct HttpReceiver(Collector);

impl tonic::server::NamedService for HttpReceiver {
    const NAME: &'static str = "v1";
}

impl tower::Service<http::Request<tonic::body::Body>> for HttpReceiver {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let store = Arc::clone(&self.0.0);
        Box::pin(async move {
            use http_body_util::BodyExt as _;
            use prost::Message as _;
            let path = request.uri().path().to_owned();
            let reply = |status: http::StatusCode| {
                let mut response = http::Response::new(tonic::body::Body::empty());
                *response.status_mut() = status;
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                Ok(response)
            };
            let Ok(body) = request.into_body().collect().await else {
                return reply(http::StatusCode::BAD_REQUEST);
            };
            let body = body.to_bytes();
            let stored = match path.as_str() {
                "/v1/traces" => {
                    ExportTraceServiceRequest::decode(body).map(|r| lock(&store.traces).push(r))
                }
                "/v1/metrics" => {
                    ExportMetricsServiceRequest::decode(body).map(|r| lock(&store.metrics).push(r))
                }
                "/v1/logs" => {
                    ExportLogsServiceRequest::decode(body).map(|r| lock(&store.logs).push(r))
                }
                _ => return reply(http::StatusCode::NOT_FOUND),
            };
            match stored {
                Ok(()) => reply(http::StatusCode::OK),
                Err(_) => reply(http::StatusCode::BAD_REQUEST),
            }
        })
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

/// Installs what [`telemetry::init`] installs — the subscriber, the three batch pipelines and
/// the bunyan lines — with exporters that discard every batch and the lines written to `writer`,
/// so a benchmark measures what a call costs the service, not the network or a collector.
pub fn init_discarding(
    service_name: &str,
    writer: BoxMakeWriter,
) -> Result<telemetry::TelemetryGuard, telemetry::InitError> {
    telemetry::Telemetry::builder(service_name, "bench")
        .writer(writer)
        .env(|name| (name == "RUST_LOG").then(|| "info".to_owned()))
        .exporters(Discard, Discard, Discard)
        .init()
}

/// Whether `rust_log`, read as the service reads `RUST_LOG`, writes events of `target` at `level`;
/// an error when the service would refuse it (and fall back to its default).
pub fn rust_log_enables(
    rust_log: &str,
    target: &str,
    level: tracing::Level,
) -> Result<bool, String> {
    telemetry::log_filter(rust_log).map(|filter| filter.would_enable(target, &level))
}

/// A throwaway PKI for TLS tests, made on the spot (nothing that could expire is committed): a CA,
/// a server certificate for `localhost` and `127.0.0.1`, and a client certificate, all signed by
/// the CA, written as PEM files to a fresh directory that is removed on drop.
#[derive(Debug)]
pub struct Pki {
    dir: std::path::PathBuf,
}

impl Pki {
    /// Makes the CA and the certificates. Files: `ca.pem`, `server.pem`, `server.key`,
    /// `client.pem`, `client.key`, and `expired.pem`/`expired.key` (a server certificate for
    /// `localhost` that expired in 2000).
    pub fn new() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = std::env::temp_dir().join(format!("tls-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("test CA {}", uuid::Uuid::new_v4()),
        );
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let write = |name: &str, contents: String| std::fs::write(dir.join(name), contents);
        write("ca.pem", ca.pem())?;
        for (name, sans) in [
            (
                "server",
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            ),
            ("client", vec!["test-client".to_owned()]),
        ] {
            let key = KeyPair::generate()?;
            let cert = CertificateParams::new(sans)?.signed_by(&key, &ca)?;
            write(&format!("{name}.pem"), cert.pem())?;
            write(&format!("{name}.key"), key.serialize_pem())?;
        }
        // A server certificate that expired long ago, for the tests of what a peer does with it.
        let key = KeyPair::generate()?;
        let mut expired = CertificateParams::new(vec!["localhost".to_owned()])?;
        expired.not_before = rcgen::date_time_ymd(1999, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2000, 1, 1);
        write("expired.pem", expired.signed_by(&key, &ca)?.pem())?;
        write("expired.key", key.serialize_pem())?;
        Ok(Self { dir })
    }

    /// The path of one of the files.
    pub fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.join(file)
    }

    /// The bytes of one of the files.
    pub fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).unwrap_or_default()
    }

    /// `server.pem` with `server.key`, or `client.pem` with `client.key` (`who`: server, client).
    pub fn identity(
        &self,
        who: &str,
    ) -> Result<telemetry::tls::Identity, telemetry::tls::TlsError> {
        telemetry::tls::Identity::load(
            &telemetry::tls::PemFile::new("cert", self.path(&format!("{who}.pem"))),
            &telemetry::tls::PemFile::new("key", self.path(&format!("{who}.key"))),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `done` holds, checking every 10 ms; fails the test, saying `what` did not happen,
/// if it does not hold within `timeout`.
///
/// # Panics
/// When `done` does not hold within `timeout`.
pub async fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Now, in nanoseconds since the Unix epoch: the clock of a received span's start and end.
///
/// # Panics
/// When the system clock is before 1970 or past 2554.
#[allow(clippy::unwrap_used)] // Test support: a clock that far off is a failed test.
pub fn now_nanos() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since_epoch.as_nanos()).unwrap()
}

/// How long telemetry may take to reach the receiver after a flush.
pub const ARRIVAL: Duration = Duration::from_secs(10);

/// Telemetry shared by every test: global by nature, so it is installed once, on a runtime of its
/// own that outlives each test's runtime (the exporters run their I/O on it).
#[derive(Debug)]
pub struct World {
    /// Where the test binary's telemetry is exported.
    pub receiver: Receiver,
    /// The JSON lines the test binary's telemetry wrote.
    pub capture: Capture,
    guard: telemetry::TelemetryGuard,
}

/// The test binary's [`World`], started on first use with `service_name` as `service.name`
/// (a binary tests one service: later calls get the same world, whatever name they pass).
///
/// # Panics
/// When the receiver or telemetry cannot start: the tests cannot run without them.
#[allow(clippy::unwrap_used)] // Test support: a failure to start is a failed test.
pub fn world(service_name: &'static str) -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let receiver = Receiver::start().await.unwrap();
                let capture = Capture::default();
                let endpoint = receiver.endpoint();
                let guard = telemetry::Telemetry::builder(service_name, "test")
                    .writer(capture.make_writer())
                    .otlp_endpoint(endpoint)
                    .env(move |name| match name {
                        "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".to_owned()),
                        "RUST_LOG" => Some("info".to_owned()),
                        _ => None,
                    })
                    .init()
                    .unwrap();
                sender
                    .send(World {
                        receiver,
                        capture,
                        guard,
                    })
                    .unwrap();
                std::future::pending::<()>().await;
            });
        });
        receiver.recv().unwrap()
    })
}

#[allow(clippy::unwrap_used)] // Test support: a failure is a failed test.
impl World {
    /// Exports everything buffered so far.
    pub async fn flush(&'static self) {
        tokio::task::spawn_blocking(|| self.guard.flush())
            .await
            .unwrap();
    }

    /// Waits for the finished trace of the call that sent `request_id`: the client span and every
    /// span of the same trace, at least `count` of them.
    pub async fn trace_of(&'static self, request_id: &str, count: usize) -> Vec<ReceivedSpan> {
        self.trace_where(count, |client| {
            client.attributes.get("request.id").map(String::as_str) == Some(request_id)
        })
        .await
    }

    /// Waits for a trace whose client span satisfies `is_ours`, with at least `count` spans.
    pub async fn trace_where(
        &'static self,
        count: usize,
        is_ours: impl Fn(&ReceivedSpan) -> bool,
    ) -> Vec<ReceivedSpan> {
        self.flush().await;
        self.receiver
            .wait_for(ARRIVAL, |r| {
                let spans = r.spans();
                // The logical call's span: INTERNAL above its attempts, or the one CLIENT span.
                let client = spans.iter().find(|s| {
                    s.name.starts_with("grpc.client.")
                        && !s.name.starts_with("grpc.client.attempt.")
                        && is_ours(s)
                })?;
                let trace: Vec<_> = spans
                    .iter()
                    .filter(|s| s.trace_id == client.trace_id)
                    .cloned()
                    .collect();
                (trace.len() >= count).then_some(trace)
            })
            .await
            .unwrap_or_else(|| panic!("no complete trace of {count} spans arrived"))
    }

    /// Waits for the exported log records of `trace_id`, at least `count` of them.
    pub async fn logs_of(&'static self, trace_id: &str, count: usize) -> Vec<ReceivedLog> {
        self.flush().await;
        self.receiver
            .wait_for(ARRIVAL, |r| {
                let logs: Vec<_> = r
                    .logs()
                    .into_iter()
                    .filter(|l| l.trace_id == trace_id)
                    .collect();
                (logs.len() >= count).then_some(logs)
            })
            .await
            .unwrap_or_else(|| panic!("fewer than {count} log records for trace {trace_id}"))
    }

    /// Waits until a captured line's message ends with `suffix` (the server got that far).
    pub async fn wait_for_line(&self, suffix: &str) {
        wait_until(ARRIVAL, &format!("no line with {suffix:?}"), || {
            self.capture.lines().iter().any(|l| l.contains(suffix))
        })
        .await;
    }

    /// The captured stdout lines, each parsed; a line that is not JSON fails the test.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.capture
            .lines()
            .iter()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"))
            })
            .collect()
    }
}
