//! Telemetry wiring for every service of the workspace, in one call.
//!
//! [`init`] (or [`Telemetry::builder`]) reads the `OTEL_*` environment, builds one Resource and
//! the three OTLP pipelines (traces, metrics, logs; gRPC or HTTP/protobuf), installs the W3C
//! propagators and a `tracing` subscriber that writes bunyan JSON lines carrying the OpenTelemetry
//! `trace_id`/`span_id`. The returned [`TelemetryGuard`] flushes and shuts everything down when
//! dropped. [`grpc`] holds the tower layers that instrument every RPC on both sides.
//!
//! This crate knows nothing about the workspace's services: names and metric prefixes come in as
//! arguments.

mod console;
pub mod defaults;
mod diagnostics;
pub mod grpc;
mod human;
mod io;
#[cfg(test)]
mod metrics_tests;
mod process;
mod providers;
mod recovery;
mod runtime;
mod sched;
pub mod settings;
mod subscriber;
pub mod tls;

use std::time::Duration;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::propagation::text_map_propagator::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

pub use settings::Settings;

/// Longest caller-supplied value (a request id, say) that goes into a span attribute or a log line,
/// in characters. A request may carry megabytes; in telemetry it would make every export batch it
/// rides in too large for the collector, and the whole batch, other calls' spans with it, is lost.
pub const MAX_VALUE_CHARS: usize = 256;

/// `value` cut to [`MAX_VALUE_CHARS`] characters, for telemetry only.
pub fn bounded(value: &str) -> &str {
    match value.char_indices().nth(MAX_VALUE_CHARS) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

/// Reads `rust_log` as [`init`] reads `RUST_LOG`: the filter it installs, or the warning it would
/// write before falling back to its default filter (a configuration check, or a test that the
/// documented values are accepted).
pub fn log_filter(rust_log: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    let mut warnings = Vec::new();
    let filter = subscriber::log_filter(Some(rust_log), &mut warnings);
    match warnings.into_iter().next() {
        Some(warning) => Err(warning),
        None => Ok(filter),
    }
}

/// How many bytes of JSON lines the stdout worker gathers before it writes, at most.
const STDOUT_BUFFER_BYTES: usize = 64 * 1024;

/// The instrumentation scope of the runtime and process metrics.
const METER_SCOPE: &str = "telemetry";

/// How long dropping the guard may spend flushing all three signals before it gives up.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(10);

/// Why [`Telemetry::init`] failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// `init` ran twice in one process, or another subscriber was installed first.
    #[error("a global tracing subscriber is already installed")]
    SubscriberAlreadySet(#[from] tracing::subscriber::SetGlobalDefaultError),
    /// The thread that runs the exporters' network I/O could not be started.
    #[error("cannot start the telemetry I/O thread: {0}")]
    IoThread(#[from] std::io::Error),
}

/// Initialises telemetry for `service_name` with the defaults: JSON lines on stdout, settings from
/// the process environment. Call it first (no runtime is needed: the exporters run their I/O on a
/// thread of their own), and keep the guard until the end of `main`.
pub fn init(service_name: &str, service_version: &str) -> Result<TelemetryGuard, InitError> {
    Telemetry::builder(service_name, service_version).init()
}

/// Reads one environment variable.
type EnvLookup = Box<dyn Fn(&str) -> Option<String>>;

/// Options for [`init`], for binaries and tests that need more than the defaults.
pub struct Telemetry {
    service_name: String,
    service_version: String,
    writer: Option<BoxMakeWriter>,
    env: EnvLookup,
    endpoint: Option<String>,
    span_lines: Option<bool>,
    cli: CliOptions,
    exporters: Option<BuildProviders>,
}

/// Builds the three pipelines from the settings and the Resource.
type BuildProviders = Box<
    dyn FnOnce(&Settings, &opentelemetry_sdk::Resource, &mut Vec<String>) -> providers::Providers
        + Send,
>;

/// What a command-line tool sets differently from a server (see [`Telemetry::human_lines`],
/// [`Telemetry::defer_diagnostics`], [`Telemetry::shutdown_budget`]).
#[derive(Debug, Default)]
struct CliOptions {
    human_lines: bool,
    defer_diagnostics: bool,
    shutdown_budget: Option<Duration>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("service_name", &self.service_name)
            .field("service_version", &self.service_version)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// `service_name` becomes `service.name` unless `OTEL_SERVICE_NAME` (or `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`) says otherwise.
    pub fn builder(service_name: &str, service_version: &str) -> Self {
        Self {
            service_name: service_name.to_owned(),
            service_version: service_version.to_owned(),
            writer: None,
            env: Box::new(|name| std::env::var(name).ok()),
            endpoint: None,
            span_lines: None,
            cli: CliOptions::default(),
            exporters: None,
        }
    }

    /// Writes the JSON lines to `writer` instead of a non-blocking stdout (tests capture them).
    pub fn writer(mut self, writer: BoxMakeWriter) -> Self {
        self.writer = Some(writer);
        self
    }

    /// Reads the settings of [`Settings`], `RUST_LOG` and `LOG_SPAN_LINES` through `env` instead
    /// of the process environment, which a multi-threaded test cannot safely change. The SDK still
    /// reads what it owns from the process only: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
    /// the endpoints and `INSECURE`, timeouts, headers, compression, the sampler and the batch
    /// settings (a test sets the endpoint with [`Self::otlp_endpoint`], or starts a process).
    pub fn env(mut self, env: impl Fn(&str) -> Option<String> + 'static) -> Self {
        self.env = Box::new(env);
        self
    }

    /// Sends every signal to `base` (`http://host:port`), whatever the environment says: what
    /// code sets wins over the environment, as in the SDK. For tests, whose receivers listen on
    /// ports of their own.
    pub fn otlp_endpoint(mut self, base: impl Into<String>) -> Self {
        self.endpoint = Some(base.into());
        self
    }

    /// Writes bunyan's span START/END lines too (default: `LOG_SPAN_LINES=true`, else off).
    pub fn span_lines(mut self, on: bool) -> Self {
        self.span_lines = Some(on);
        self
    }

    /// Writes readable lines (`LEVEL message fields trace_id=... span_id=...`) instead of bunyan
    /// JSON: for a person at a terminal. Machines keep the JSON.
    pub fn human_lines(mut self, on: bool) -> Self {
        self.cli.human_lines = on;
        self
    }

    /// Holds back the SDK's and the transport's own warnings (a collector that is down, spans
    /// dropped at a full queue) and says them once, counted, when the guard is dropped: a CLI's
    /// answer and summary stay free of them.
    pub fn defer_diagnostics(mut self, on: bool) -> Self {
        self.cli.defer_diagnostics = on;
        self
    }

    /// How long dropping the guard may spend flushing (default 10 s, for servers). A CLI sets
    /// about a second: it should exit right after its answer even when no collector listens.
    pub fn shutdown_budget(mut self, budget: Duration) -> Self {
        self.cli.shutdown_budget = Some(budget);
        self
    }

    /// Sends the three signals to these exporters instead of OTLP, through the same batch
    /// pipelines (benchmarks discard what they are given; a test may keep it in memory). The
    /// `OTEL_*` export settings then apply only where the pipelines read them (the metric
    /// interval).
    pub fn exporters(
        mut self,
        spans: impl opentelemetry_sdk::trace::SpanExporter + 'static,
        metrics: impl opentelemetry_sdk::metrics::exporter::PushMetricExporter,
        logs: impl opentelemetry_sdk::logs::LogExporter + 'static,
    ) -> Self {
        self.exporters = Some(Box::new(move |settings, resource, _warnings| {
            providers::Providers {
                tracer: Some(providers::tracer_provider(spans, settings, resource)),
                meter: Some(providers::meter_provider(metrics, settings, resource)),
                logger: Some(providers::logger_provider(logs, settings, resource)),
                propagation_only: false,
            }
        }));
        self
    }

    /// Installs everything globally and returns the guard that shuts it down.
    pub fn init(mut self) -> Result<TelemetryGuard, InitError> {
        let build: BuildProviders = self
            .exporters
            .take()
            .unwrap_or_else(|| Box::new(providers::build));
        let mut settings = Settings::from_lookup(defaults::DEFAULTS, &self.env);
        if let Some(base) = &self.endpoint {
            settings.override_endpoint(base);
        }
        let mut warnings = settings.warnings.clone();
        let span_lines = self.span_lines.unwrap_or_else(|| {
            (self.env)("LOG_SPAN_LINES").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        });

        install_propagators(&settings);
        let resource = providers::resource(
            &self.service_name,
            &self.service_version,
            defaults::SERVICE_NAMESPACE,
            defaults::RESOURCE_ATTRIBUTES,
        );
        let filter = subscriber::log_filter((self.env)("RUST_LOG").as_deref(), &mut warnings);
        let threads =
            sched::ThreadClass::parse((self.env)("TELEMETRY_THREADS").as_deref(), &mut warnings);
        settings.span_export_batch =
            threads.export_batch((self.env)("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").is_some());
        settings.log_export_batch =
            threads.export_batch((self.env)("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE").is_some());
        // Every thread of the telemetry (the I/O thread, the SDK's batch and reader threads, the
        // stdout writer) is started from one that entered their scheduling class first: a thread
        // inherits its creator's, and the SDK has no hook of its own.
        let stdout_lines = self.writer.is_none();
        let started = std::thread::scope(|scope| {
            let starter = std::thread::Builder::new()
                .name("telemetry-init".into())
                .spawn_scoped(scope, || {
                    let entered = threads.enter();
                    let io = io::IoThread::start()?;
                    // What the SDK says while the exporters are built is written once the
                    // subscriber exists.
                    let (providers, said) = diagnostics::collected_while(|| {
                        let _on_io_thread = io.handle().enter();
                        build(&settings, &resource, &mut warnings)
                    });
                    let stdout = stdout_lines.then(stdout_writer);
                    Ok::<_, std::io::Error>((io, providers, said, stdout, entered))
                })?;
            starter
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        let (io, mut providers, said, stdout, entered) = started?;
        warnings.extend(said);
        if let Err(warning) = entered {
            warnings.push(warning);
        }
        if providers.propagation_only
            && providers.logger.is_none()
            && !subscriber::writes_lines(&filter)
        {
            // Nothing exported and nothing written: no span of this process is ever seen, so it
            // does what the spec's no-op API does. It makes no spans, and the gRPC layers pass the
            // caller's context (trace and baggage) on to downstream calls unchanged.
            providers.tracer = None;
        }
        if let Some(meter) = &providers.meter {
            opentelemetry::global::set_meter_provider(meter.clone());
            if !process::observe(&meter.meter(METER_SCOPE)) {
                warnings.push(
                    "process metrics (process.*) are read from /proc, which this system lacks: \
                     they are not exported"
                        .to_owned(),
                );
            }
        }
        if let Some(tracer) = &providers.tracer {
            opentelemetry::global::set_tracer_provider(tracer.clone());
        }
        let tracer = providers.tracer.as_ref().map(|p| p.tracer("telemetry"));

        let (writer, stdout_guard) = match (self.writer, stdout) {
            (Some(writer), _) => (writer, None),
            (None, Some((writer, guard))) => (writer, Some(guard)),
            (None, None) => unreachable!("the stdout writer is started when no writer is given"),
        };
        let deferred = self
            .cli
            .defer_diagnostics
            .then(|| std::sync::Arc::new(human::Deferred::default()));
        let format = subscriber::LineFormat {
            human: self.cli.human_lines,
            deferred: deferred.clone(),
        };
        let subscriber = subscriber::build(
            self.service_name.clone(),
            filter,
            writer,
            span_lines,
            tracer,
            providers.logger.as_ref(),
            format,
        );
        tracing::subscriber::set_global_default(subscriber)?;

        for warning in &warnings {
            tracing::warn!(target: "telemetry", "{warning}");
        }
        if settings.sdk_disabled {
            tracing::info!(target: "telemetry", "OTEL_SDK_DISABLED=true: no telemetry is exported");
        }
        Ok(TelemetryGuard {
            providers: Some(providers),
            io: Some(io),
            _stdout: stdout_guard,
            budget: self.cli.shutdown_budget.unwrap_or(SHUTDOWN_BUDGET),
            deferred,
            endpoint: settings.traces.destination.clone(),
        })
    }
}

/// Lines go to a worker thread; when it falls 128k lines behind, the caller waits rather than
/// losing a line. The worker writes what has queued up, then flushes: one write(2) per burst
/// instead of one per line (stdout is line-buffered).
fn stdout_writer() -> (BoxMakeWriter, tracing_appender::non_blocking::WorkerGuard) {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("telemetry-stdout")
        .finish(std::io::BufWriter::with_capacity(
            STDOUT_BUFFER_BYTES,
            std::io::stdout(),
        ));
    (BoxMakeWriter::new(writer), guard)
}

fn install_propagators(settings: &Settings) {
    let mut propagators: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    if settings.propagate_trace_context {
        propagators.push(Box::new(TraceContextPropagator::new()));
    }
    if settings.propagate_baggage {
        propagators.push(Box::new(BaggagePropagator::new()));
    }
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(propagators));
}

/// Keeps telemetry running; dropping it flushes and shuts down traces, logs and metrics (in that
/// order, within 10 s, on a thread of its own), then flushes stdout.
///
/// Dropping it blocks for as long as the last export takes (10 s at most), so drop it at the end of
/// `main`, outside the service's runtime, as the generated `main` does.
#[must_use = "telemetry shuts down when the guard is dropped"]
pub struct TelemetryGuard {
    providers: Option<providers::Providers>,
    io: Option<io::IoThread>,
    _stdout: Option<tracing_appender::non_blocking::WorkerGuard>,
    budget: Duration,
    deferred: Option<std::sync::Arc<human::Deferred>>,
    endpoint: String,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard").finish_non_exhaustive()
    }
}

impl TelemetryGuard {
    /// Exports the metrics of the Tokio runtime behind `handle` (`tokio.workers`,
    /// `tokio.alive_tasks`, `tokio.global_queue_depth`, per worker `tokio.worker.busy_duration`
    /// and `tokio.worker.park_count`), read when metrics are collected: nothing per call. Call it
    /// once for the runtime that serves the calls, not from the telemetry's own threads; with
    /// metrics off it does nothing.
    pub fn observe_runtime(&self, handle: &tokio::runtime::Handle) {
        if let Some(meter) = self.providers.as_ref().and_then(|p| p.meter.as_ref()) {
            runtime::observe(&meter.meter(METER_SCOPE), handle);
        }
    }

    /// Exports everything buffered so far, without shutting down. Blocks: call it from
    /// `spawn_blocking` or a plain thread, not from a runtime worker.
    pub fn flush(&self) {
        let Some(providers) = &self.providers else {
            return;
        };
        std::thread::scope(|scope| {
            scope.spawn(|| {
                if let Some(p) = &providers.tracer {
                    let _ = p.force_flush();
                }
                if let Some(p) = &providers.logger {
                    let _ = p.force_flush();
                }
                if let Some(p) = &providers.meter {
                    let _ = p.force_flush();
                }
            });
        });
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(providers) = self.providers.take() {
            let problems = providers.shutdown(self.budget);
            match &self.deferred {
                Some(deferred) => {
                    for line in deferred.summary(&self.endpoint, &problems) {
                        tracing::warn!(target: subscriber::SHUTDOWN_TARGET, "{line}");
                    }
                }
                None => {
                    for problem in problems {
                        tracing::warn!(target: subscriber::SHUTDOWN_TARGET, "telemetry shutdown: {problem}");
                    }
                }
            }
        }
        // The exporters are shut down: their I/O thread has nothing left to carry.
        drop(self.io.take());
    }
}
