//! Builds the Resource and the three SDK providers from [`Settings`], and shuts them down in the
//! order the SDK asks for (traces, logs, metrics) on a thread of their own.

use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::resource::{
    EnvResourceDetector, SdkProvidedResourceDetector, TelemetryResourceDetector,
};
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::console::ConsoleExporter;
use crate::recovery::Watched;
use crate::settings::{ExporterKind, Protocol, Settings, SignalSettings};

/// The three providers; `None` where the signal is off.
#[derive(Debug, Default)]
pub(crate) struct Providers {
    pub(crate) tracer: Option<SdkTracerProvider>,
    /// The tracer exports nothing: it is there to give spans ids to propagate and to log.
    pub(crate) propagation_only: bool,
    pub(crate) meter: Option<SdkMeterProvider>,
    pub(crate) logger: Option<SdkLoggerProvider>,
}

/// `service.name` from `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`, else the service's own
/// name; `service.namespace` (the workspace's name); `service.version`; a fresh
/// `service.instance.id`; the workspace's default attributes (`OTEL_RESOURCE_ATTRIBUTES` wins over
/// them, and they over the namespace); the SDK's `telemetry.sdk.*`.
pub(crate) fn resource(
    service_name: &str,
    service_version: &str,
    namespace: &str,
    defaults: &str,
) -> Resource {
    let house = defaults.split(',').filter_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        let (key, value) = (key.trim(), value.trim());
        (!key.is_empty()).then(|| KeyValue::new(key.to_owned(), value.to_owned()))
    });
    // Detectors merge over what came before: the environment has the last word.
    let resource = Resource::builder_empty()
        .with_attributes(
            (!namespace.is_empty())
                .then(|| KeyValue::new("service.namespace", namespace.to_owned())),
        )
        .with_attributes(house)
        .with_attributes([
            KeyValue::new("service.version", service_version.to_owned()),
            KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
        ])
        // The SDK-provided detector comes last: it reads OTEL_SERVICE_NAME, which the spec says
        // wins over service.name in OTEL_RESOURCE_ATTRIBUTES.
        .with_detectors(&[
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
            Box::new(SdkProvidedResourceDetector),
        ])
        .build();
    let named_by_env = resource
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named_by_env {
        return resource;
    }
    Resource::builder_empty()
        .with_attributes(
            resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(service_name.to_owned())
        .build()
}

/// Builds what `settings` asks for. An exporter that cannot be built (a bad TLS file for an https
/// endpoint, say) leaves its signal off with one warning: telemetry never stops the service.
pub(crate) fn build(
    settings: &Settings,
    resource: &Resource,
    warnings: &mut Vec<String>,
) -> Providers {
    let mut providers = Providers::default();
    crate::tls::install_default_provider();
    if settings.sdk_disabled {
        providers.tracer = propagating_only(settings, resource);
        providers.propagation_only = true;
        return providers;
    }
    // Metrics first: the log processor takes a meter for its self-diagnostics when it is built.
    providers.meter = match settings.metrics.exporter {
        ExporterKind::None => None,
        ExporterKind::Console => Some(meter_provider(ConsoleExporter, settings, resource)),
        ExporterKind::Otlp => otlp_metric_exporter(&settings.metrics)
            .map_err(|e| warnings.push(export_warning("metrics", &settings.metrics, &e)))
            .ok()
            .map(|exporter| meter_provider(exporter, settings, resource)),
    };
    providers.logger = match settings.logs.exporter {
        ExporterKind::None => None,
        ExporterKind::Console => Some(logger_provider(ConsoleExporter, settings, resource)),
        ExporterKind::Otlp => otlp_log_exporter(&settings.logs)
            .map_err(|e| warnings.push(export_warning("logs", &settings.logs, &e)))
            .ok()
            .map(|exporter| logger_provider(exporter, settings, resource)),
    };
    providers.tracer = match settings.traces.exporter {
        ExporterKind::None => None,
        ExporterKind::Console => Some(tracer_provider(ConsoleExporter, settings, resource)),
        ExporterKind::Otlp => otlp_span_exporter(&settings.traces)
            .map_err(|e| warnings.push(export_warning("traces", &settings.traces, &e)))
            .ok()
            .map(|exporter| tracer_provider(exporter, settings, resource)),
    };
    if providers.tracer.is_none() {
        providers.tracer = propagating_only(settings, resource);
        providers.propagation_only = true;
    }
    providers
}

/// With traces not exported (`OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`, an exporter
/// that could not be built), a provider without any processor: spans still get ids, sampled per
/// the sampler, so the caller's W3C context is continued on the lines and injected into downstream
/// calls; they are exported nowhere. Without any propagator there is nothing to carry: no provider.
fn propagating_only(settings: &Settings, resource: &Resource) -> Option<SdkTracerProvider> {
    (settings.propagate_trace_context || settings.propagate_baggage).then(|| {
        SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .build()
    })
}

fn export_warning(
    signal: &str,
    settings: &SignalSettings,
    error: &dyn std::fmt::Display,
) -> String {
    format!(
        "the OTLP {signal} exporter for {} could not be built ({error}); {signal} are not exported",
        settings.destination
    )
}

// The builders differ in type per protocol and per signal, so one macro body serves the three.
macro_rules! otlp_exporter {
    ($name:ident, $exporter:ty) => {
        fn $name(s: &SignalSettings) -> Result<$exporter, String> {
            // The SDK resolves the endpoint, timeout, headers and compression from the
            // environment; Settings names an endpoint only where the environment gives none (or
            // one the SDK would refuse). A secure connection gets the TLS of crate::tls: the SDK
            // reads no certificate variable.
            let tls = s
                .secure
                .then(|| crate::tls::ExporterTls::load(&s.tls))
                .transpose()
                .map_err(|e| e.to_string())?;
            match s.protocol {
                Protocol::Grpc => {
                    let mut builder = <$exporter>::builder().with_tonic();
                    if let Some(endpoint) = &s.endpoint {
                        builder = builder.with_endpoint(endpoint);
                    }
                    match tls {
                        Some(tls) => builder.with_tls_config(tls.tonic()),
                        None => builder,
                    }
                    .build()
                }
                Protocol::HttpProtobuf => {
                    let mut builder = <$exporter>::builder()
                        .with_http()
                        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
                    if let Some(endpoint) = &s.endpoint {
                        builder = builder.with_endpoint(endpoint);
                    }
                    match tls {
                        Some(tls) => builder.with_http_client(tls.http_client(s.timeout)?),
                        None => builder,
                    }
                    .build()
                }
            }
            .map_err(|e| e.to_string())
        }
    };
}

otlp_exporter!(otlp_span_exporter, opentelemetry_otlp::SpanExporter);
otlp_exporter!(otlp_metric_exporter, opentelemetry_otlp::MetricExporter);
otlp_exporter!(otlp_log_exporter, opentelemetry_otlp::LogExporter);

pub(crate) fn tracer_provider(
    exporter: impl opentelemetry_sdk::trace::SpanExporter + 'static,
    settings: &Settings,
    resource: &Resource,
) -> SdkTracerProvider {
    // The batch processor runs on its own thread and drops (never blocks) when its queue is full.
    // Before it, gRPC spans get their status from their code alone (grpc::StatusFromCode).
    let exporter = Watched::new("spans", exporter);
    let mut batch = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter);
    if let Some(size) = settings.span_export_batch {
        // The builder's default reads the other OTEL_BSP_* variables still.
        let config = opentelemetry_sdk::trace::BatchConfigBuilder::default()
            .with_max_export_batch_size(size)
            .build();
        batch = batch.with_batch_config(config);
    }
    SdkTracerProvider::builder()
        .with_span_processor(crate::grpc::StatusFromCode(batch.build()))
        .with_resource(resource.clone())
        .build()
}

pub(crate) fn logger_provider(
    exporter: impl opentelemetry_sdk::logs::LogExporter + 'static,
    settings: &Settings,
    resource: &Resource,
) -> SdkLoggerProvider {
    let exporter = Watched::new("log records", exporter);
    let mut batch = opentelemetry_sdk::logs::BatchLogProcessor::builder(exporter);
    if let Some(size) = settings.log_export_batch {
        let config = opentelemetry_sdk::logs::BatchConfigBuilder::default()
            .with_max_export_batch_size(size)
            .build();
        batch = batch.with_batch_config(config);
    }
    SdkLoggerProvider::builder()
        .with_log_processor(batch.build())
        .with_resource(resource.clone())
        .build()
}

pub(crate) fn meter_provider(
    exporter: impl opentelemetry_sdk::metrics::exporter::PushMetricExporter,
    settings: &Settings,
    resource: &Resource,
) -> SdkMeterProvider {
    let reader = PeriodicReader::builder(Watched::new("metrics", exporter))
        .with_interval(settings.metric_export_interval)
        .build();
    SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource.clone())
        .build()
}

impl Providers {
    /// Flushes and shuts down, traces then logs then metrics, within `budget` in all.
    ///
    /// Runs on a fresh thread: `shutdown` blocks, and must not block a thread that the exporters'
    /// I/O needs to make progress (opentelemetry-rust#2583).
    pub(crate) fn shutdown(self, budget: Duration) -> Vec<String> {
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        let worker = std::thread::Builder::new()
            .name("telemetry-shutdown".into())
            .spawn(move || {
                let deadline = Instant::now() + budget;
                let left = || {
                    deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(100))
                };
                let mut problems = Vec::new();
                if let Some(p) = self.tracer
                    && let Err(e) = p.shutdown_with_timeout(left())
                {
                    problems.push(format!("traces: {e}"));
                }
                if let Some(p) = self.logger
                    && let Err(e) = p.shutdown_with_timeout(left())
                {
                    problems.push(format!("logs: {e}"));
                }
                if let Some(p) = self.meter
                    && let Err(e) = p.shutdown_with_timeout(left())
                {
                    problems.push(format!("metrics: {e}"));
                }
                let _ = done.send(problems);
            });
        if let Err(e) = worker {
            return vec![format!("could not start the shutdown thread: {e}")];
        }
        // The metrics reader's shutdown ignores its timeout and waits out the exporter's retries:
        // the budget is kept here, and a shutdown still running past it is left behind.
        match finished.recv_timeout(budget + Duration::from_millis(50)) {
            Ok(problems) => problems,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                vec![format!(
                    "not finished within {budget:?}; the rest is dropped"
                )]
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                vec!["the shutdown thread panicked".to_owned()]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::Key;
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use crate::settings::Settings;

    /// The `traceparent` a call made inside a fresh span would carry, with `env` (and nothing
    /// else exported); `None` when no tracer is built.
    fn traceparent_with(env: &[(&str, &str)]) -> Option<String> {
        let lookup = |name: &str| {
            env.iter()
                .chain(&[
                    ("OTEL_METRICS_EXPORTER", "none"),
                    ("OTEL_LOGS_EXPORTER", "none"),
                ])
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        let settings = Settings::from_lookup(crate::defaults::DEFAULTS, lookup);
        let resource = opentelemetry_sdk::Resource::builder_empty().build();
        let providers = super::build(&settings, &resource, &mut Vec::new());
        let tracer = providers.tracer.as_ref()?.tracer("test");
        let subscriber = crate::subscriber::build(
            "test".to_owned(),
            "off".parse().expect("a filter"),
            std::io::sink,
            false,
            Some(tracer),
            None,
            crate::subscriber::LineFormat::default(),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("call");
            let mut carrier = HashMap::new();
            TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
            carrier.remove("traceparent")
        })
    }

    #[test]
    fn spans_get_ids_to_propagate_when_traces_are_not_exported() {
        for env in [
            &[("OTEL_SDK_DISABLED", "true")][..],
            &[("OTEL_TRACES_EXPORTER", "none")][..],
        ] {
            let traceparent = traceparent_with(env);
            assert!(
                traceparent.as_ref().is_some_and(|t| t.len() == 55),
                "{env:?}: {traceparent:?}"
            );
        }
        assert_eq!(
            traceparent_with(&[("OTEL_SDK_DISABLED", "true"), ("OTEL_PROPAGATORS", "none")]),
            None,
            "nothing to propagate: no spans needed"
        );
    }

    #[test]
    fn the_resource_carries_the_workspace_defaults_and_the_version() {
        let resource = super::resource(
            "svc",
            "1.2.3",
            "shop",
            "deployment.environment.name=staging, team=core,broken",
        );
        let get = |key: &'static str| {
            resource
                .get(&Key::from_static_str(key))
                .map(|v| v.to_string())
        };
        assert_eq!(get("service.version").as_deref(), Some("1.2.3"));
        assert_eq!(get("team").as_deref(), Some("core"));
        if std::env::var_os("OTEL_RESOURCE_ATTRIBUTES").is_none() {
            assert_eq!(get("service.namespace").as_deref(), Some("shop"));
        }
        if std::env::var_os("OTEL_RESOURCE_ATTRIBUTES").is_none() {
            assert_eq!(
                get("deployment.environment.name").as_deref(),
                Some("staging")
            );
        }
        assert_eq!(get("service.instance.id").map(|id| id.len()), Some(36));
        assert!(get("telemetry.sdk.name").is_some());
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            assert_eq!(get("service.name").as_deref(), Some("svc"));
        }
    }
}
