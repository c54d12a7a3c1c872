//! Reads the `OTEL_*` environment once: the variables the Rust SDK leaves to applications, and the
//! ones it would drop silently (or refuse) when malformed, so a bad value gets one warning and a
//! working default.
//!
//! The SDK (opentelemetry-otlp 0.33) resolves the rest itself, from the process environment: the
//! endpoint (per signal over generic, `/v1/<signal>` appended to a generic OTLP/HTTP one, the
//! scheme of a gRPC `host:port` from `OTEL_EXPORTER_OTLP_[SIGNAL_]INSECURE`), timeouts, headers and
//! compression. This module hands it an endpoint only where the environment names none (the
//! workspace's default) or one the SDK would refuse, and reads the rest only to warn.

use std::time::Duration;

/// The wire protocol of one OTLP exporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (port 4317 by convention).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318 by convention).
    HttpProtobuf,
}

impl Protocol {
    fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }

    /// The endpoint the OpenTelemetry specification names for this protocol.
    fn spec_default_endpoint(self) -> &'static str {
        match self {
            Self::Grpc => "http://localhost:4317",
            Self::HttpProtobuf => "http://localhost:4318",
        }
    }
}

/// Where one signal goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExporterKind {
    /// OTLP to a collector.
    Otlp,
    /// One JSON line per item on stderr (stdout is reserved for the JSON logs).
    Console,
    /// Nowhere: the signal is not recorded at all.
    None,
}

/// One of the three OpenTelemetry signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Counters, histograms and gauges.
    Metrics,
    /// Log records.
    Logs,
}

impl Signal {
    fn env_infix(self) -> &'static str {
        match self {
            Self::Traces => "TRACES",
            Self::Metrics => "METRICS",
            Self::Logs => "LOGS",
        }
    }

    fn http_path(self) -> &'static str {
        match self {
            Self::Traces => "/v1/traces",
            Self::Metrics => "/v1/metrics",
            Self::Logs => "/v1/logs",
        }
    }
}

/// The resolved configuration of one signal's exporter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalSettings {
    /// Where the signal goes.
    pub exporter: ExporterKind,
    /// OTLP wire protocol.
    pub protocol: Protocol,
    /// The endpoint to hand the SDK, which then reads none from the environment: the workspace's
    /// default when the environment names none, the default again after a value the SDK would
    /// refuse, or one given in code ([`Settings::override_endpoint`]). `None`: the SDK resolves
    /// the environment's endpoint itself.
    pub endpoint: Option<String>,
    /// Where the signal goes, for messages: a URL or `host:port`, without credentials.
    pub destination: String,
    /// The connection uses TLS: an `https` endpoint, or a gRPC `host:port` without
    /// `OTEL_EXPORTER_OTLP_[SIGNAL_]INSECURE=true` (the SDK's rule).
    pub secure: bool,
    /// CA bundle and client certificate for a secure connection.
    pub tls: crate::tls::ExporterTlsFiles,
    /// The export timeout by the SDK's rule (signal over generic over 10 s, a value that is no
    /// whole number skipped), for the OTLP/HTTP client this crate builds for TLS: the SDK applies
    /// its timeout to the clients it builds, not to one it is given.
    pub timeout: Duration,
}

/// The workspace's compiled-in defaults, used when the environment says nothing.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    /// Base endpoint for the default protocol (no signal path).
    pub endpoint: &'static str,
    /// Protocol used when `OTEL_EXPORTER_OTLP_PROTOCOL` is unset.
    pub protocol: Protocol,
}

/// What the telemetry crate reads from the environment, resolved with the spec's precedence
/// (signal-specific over generic over default).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `OTEL_SDK_DISABLED=true`: no provider is built and nothing is exported.
    pub sdk_disabled: bool,
    /// Traces exporter.
    pub traces: SignalSettings,
    /// Metrics exporter.
    pub metrics: SignalSettings,
    /// Logs exporter.
    pub logs: SignalSettings,
    /// `OTEL_METRIC_EXPORT_INTERVAL`.
    pub metric_export_interval: Duration,
    /// W3C trace-context propagation (`OTEL_PROPAGATORS` contains `tracecontext`).
    pub propagate_trace_context: bool,
    /// W3C baggage propagation (`OTEL_PROPAGATORS` contains `baggage`).
    pub propagate_baggage: bool,
    /// Problems found while reading; each names the variable and the value used instead.
    pub warnings: Vec<String>,
    /// Export batches of spans and of log records of at most this many, set in code where the
    /// environment sets none (`None`: the SDK's size, from `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` and
    /// `OTEL_BLRP_MAX_EXPORT_BATCH_SIZE` or their default, 512).
    pub(crate) span_export_batch: Option<usize>,
    pub(crate) log_export_batch: Option<usize>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);
const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_millis(60_000);

impl Settings {
    /// Sends every signal to `base` (`http://host:port`, as `OTEL_EXPORTER_OTLP_ENDPOINT` would
    /// give it), whatever the environment says: configuration in code wins over the environment,
    /// as in the SDK. For tests, whose receivers listen on ports of their own; the endpoint
    /// variables are read by the SDK from the process environment, which a test cannot set.
    pub fn override_endpoint(&mut self, base: &str) {
        for (signal, settings) in [
            (Signal::Traces, &mut self.traces),
            (Signal::Metrics, &mut self.metrics),
            (Signal::Logs, &mut self.logs),
        ] {
            let endpoint = signal_endpoint(base, settings.protocol, signal);
            settings.destination = redacted(&endpoint);
            settings.secure = is_https(&endpoint);
            settings.endpoint = Some(endpoint);
        }
    }

    /// Reads the process environment.
    pub fn from_env(defaults: Defaults) -> Self {
        Self::from_lookup(defaults, |name| std::env::var(name).ok())
    }

    /// Reads through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(defaults: Defaults, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut reader = Reader {
            lookup: &lookup,
            warnings: Vec::new(),
        };
        let sdk_disabled = reader.bool("OTEL_SDK_DISABLED", false);
        let (propagate_trace_context, propagate_baggage) = reader.propagators();
        // The generic variables are read once; each signal may override them.
        let protocol = reader.protocol("OTEL_EXPORTER_OTLP_PROTOCOL", defaults.protocol);
        let generic = reader.generic_endpoint(protocol);
        reader.check_timeout("OTEL_EXPORTER_OTLP_TIMEOUT");
        let traces = reader.signal(Signal::Traces, protocol, generic.as_deref(), defaults);
        let metrics = reader.signal(Signal::Metrics, protocol, generic.as_deref(), defaults);
        let logs = reader.signal(Signal::Logs, protocol, generic.as_deref(), defaults);
        let metric_export_interval =
            reader.millis("OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_METRIC_INTERVAL);
        for name in [
            "OTEL_BSP_SCHEDULE_DELAY",
            "OTEL_BSP_MAX_QUEUE_SIZE",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            "OTEL_BLRP_SCHEDULE_DELAY",
            "OTEL_BLRP_MAX_QUEUE_SIZE",
            "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
        ] {
            reader.check_positive_integer(name);
        }
        reader.check_sampler();
        reader.check_headers("OTEL_EXPORTER_OTLP_HEADERS");
        for signal in [Signal::Traces, Signal::Metrics, Signal::Logs] {
            reader.check_headers(&format!(
                "OTEL_EXPORTER_OTLP_{}_HEADERS",
                signal.env_infix()
            ));
        }
        Self {
            sdk_disabled,
            traces,
            metrics,
            logs,
            metric_export_interval,
            propagate_trace_context,
            propagate_baggage,
            warnings: reader.warnings,
            span_export_batch: None,
            log_export_batch: None,
        }
    }
}

struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    warnings: Vec<String>,
}

impl Reader<'_> {
    /// A set, non-blank value; the spec treats empty values as unset.
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    /// A value as the SDK reads it: untrimmed, and unset when empty.
    fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.is_empty())
    }

    fn warn(&mut self, name: &str, value: &str, problem: &str, fallback: &str) {
        self.warnings.push(format!(
            "{name}={value:?} is invalid ({problem}); using {fallback}"
        ));
    }

    fn bool(&mut self, name: &str, default: bool) -> bool {
        let Some(value) = self.get(name) else {
            return default;
        };
        match value.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => {
                self.warn(name, &value, "expected true or false", &default.to_string());
                default
            }
        }
    }

    /// The SDK would take 0 as given (a reader exporting without pause), so 0 is refused too.
    fn millis(&mut self, name: &str, default: Duration) -> Duration {
        let Some(value) = self.get(name) else {
            return default;
        };
        match value.parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                let fallback = format!("the default {}", default.as_millis());
                self.warn(
                    name,
                    &value,
                    "expected a positive whole number of milliseconds",
                    &fallback,
                );
                default
            }
        }
    }

    /// The SDK reads the export timeouts itself and ignores a value that is no whole number of
    /// milliseconds, spaces included (the generic variable or its default of 10 s applies
    /// instead).
    fn check_timeout(&mut self, name: &str) {
        if let Some(value) = self.raw(name)
            && value.parse::<u64>().is_err()
        {
            self.warnings.push(format!(
                "{name}={value:?} is invalid (expected a whole number of milliseconds); the SDK \
                 ignores it"
            ));
        }
    }

    /// The SDK reads these itself, untrimmed: a value that is no whole number it ignores (its
    /// default applies), and 0 it uses as given (a queue of 0 drops everything).
    fn check_positive_integer(&mut self, name: &str) {
        let Some(value) = self.raw(name) else { return };
        match value.parse::<u64>() {
            Ok(0) => self.warnings.push(format!(
                "{name}=\"0\" is not positive; the SDK uses it as given (a queue or batch of 0 \
                 drops what would be exported)"
            )),
            Ok(_) => {}
            Err(_) => self.warn(
                name,
                &value,
                "expected a positive whole number",
                "the SDK default",
            ),
        }
    }

    fn propagators(&mut self) -> (bool, bool) {
        let Some(value) = self.get("OTEL_PROPAGATORS") else {
            return (true, true);
        };
        let (mut trace_context, mut baggage) = (false, false);
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.to_ascii_lowercase().as_str() {
                "tracecontext" => trace_context = true,
                "baggage" => baggage = true,
                "none" => {}
                _ => self.warnings.push(format!(
                    "OTEL_PROPAGATORS: {entry:?} is not supported (supported: tracecontext, baggage, none); it is ignored"
                )),
            }
        }
        (trace_context, baggage)
    }

    fn signal(
        &mut self,
        signal: Signal,
        generic_protocol: Protocol,
        generic_endpoint: Option<&str>,
        defaults: Defaults,
    ) -> SignalSettings {
        let infix = signal.env_infix();
        let exporter = self.exporter(&format!("OTEL_{infix}_EXPORTER"));
        let protocol = self.protocol(
            &format!("OTEL_EXPORTER_OTLP_{infix}_PROTOCOL"),
            generic_protocol,
        );
        self.check_timeout(&format!("OTEL_EXPORTER_OTLP_{infix}_TIMEOUT"));
        let (endpoint, destination) = self.endpoint(signal, protocol, generic_endpoint, defaults);
        let timeout = [
            format!("OTEL_EXPORTER_OTLP_{infix}_TIMEOUT"),
            "OTEL_EXPORTER_OTLP_TIMEOUT".to_owned(),
        ]
        .iter()
        .find_map(|name| self.raw(name)?.parse().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        // The SDK gives a gRPC host:port its scheme, from INSECURE, wherever it comes from.
        let url = endpoint.as_deref().unwrap_or(&destination);
        let secure = if has_scheme(url) {
            is_https(url)
        } else {
            !self.insecure(signal)
        };
        SignalSettings {
            exporter,
            protocol,
            endpoint,
            destination,
            secure,
            tls: self.tls_files(infix),
            timeout,
        }
    }

    /// The signal's own file variable wins over the generic one, each on its own.
    fn tls_files(&self, infix: &str) -> crate::tls::ExporterTlsFiles {
        let file = |option: &str| {
            let lookup = |name: &str| self.get(name);
            crate::tls::pem_file(lookup, &format!("OTEL_EXPORTER_OTLP_{infix}_{option}"))
                .or_else(|| crate::tls::pem_file(lookup, &format!("OTEL_EXPORTER_OTLP_{option}")))
        };
        crate::tls::ExporterTlsFiles {
            certificate: file("CERTIFICATE"),
            client_certificate: file("CLIENT_CERTIFICATE"),
            client_key: file("CLIENT_KEY"),
        }
    }

    fn exporter(&mut self, name: &str) -> ExporterKind {
        let Some(value) = self.get(name) else {
            return ExporterKind::Otlp;
        };
        let mut entries = value.split(',').map(str::trim).filter(|e| !e.is_empty());
        let first = entries.next().unwrap_or("otlp");
        if entries.next().is_some() {
            self.warnings.push(format!(
                "{name}={value:?}: one exporter per signal is supported; using {first:?}"
            ));
        }
        match first.to_ascii_lowercase().as_str() {
            "otlp" => ExporterKind::Otlp,
            "console" => ExporterKind::Console,
            "none" => ExporterKind::None,
            _ => {
                self.warn(name, &value, "expected otlp, console or none", "otlp");
                ExporterKind::Otlp
            }
        }
    }

    fn protocol(&mut self, name: &str, default: Protocol) -> Protocol {
        let Some(value) = self.get(name) else {
            return default;
        };
        Protocol::parse(&value).unwrap_or_else(|| {
            let fallback = match default {
                Protocol::Grpc => "grpc",
                Protocol::HttpProtobuf => "http/protobuf",
            };
            self.warn(name, &value, "expected grpc or http/protobuf", fallback);
            default
        })
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` if valid: a URL, or for gRPC `host:port` without a scheme.
    fn generic_endpoint(&mut self, protocol: Protocol) -> Option<String> {
        let name = "OTEL_EXPORTER_OTLP_ENDPOINT";
        let value = self.raw(name)?;
        match check_endpoint(&value, protocol) {
            Ok(()) => Some(value),
            Err(problem) => {
                self.warn(name, &redacted(&value), problem, "the default endpoint");
                None
            }
        }
    }

    /// `OTEL_EXPORTER_OTLP_[SIGNAL_]INSECURE`, as the SDK reads it: the signal's variable if set,
    /// else the generic one; `true` (any case) is insecure, anything else secure.
    fn insecure(&mut self, signal: Signal) -> bool {
        let specific = format!("OTEL_EXPORTER_OTLP_{}_INSECURE", signal.env_infix());
        let (name, value) = match self.raw(&specific) {
            Some(value) => (specific, value),
            None => match self.raw("OTEL_EXPORTER_OTLP_INSECURE") {
                Some(value) => ("OTEL_EXPORTER_OTLP_INSECURE".to_owned(), value),
                None => return false,
            },
        };
        let insecure = value.eq_ignore_ascii_case("true");
        if !insecure && !value.eq_ignore_ascii_case("false") {
            let warning = format!(
                "{name}={value:?} is invalid (expected true or false); using false (https)"
            );
            // The generic variable serves three signals: one warning, not three.
            if !self.warnings.contains(&warning) {
                self.warnings.push(warning);
            }
        }
        insecure
    }

    /// The endpoint to hand the SDK (`None`: the SDK reads the environment's), and where the
    /// signal goes, for messages.
    fn endpoint(
        &mut self,
        signal: Signal,
        protocol: Protocol,
        generic: Option<&str>,
        defaults: Defaults,
    ) -> (Option<String>, String) {
        // A gRPC host:port set for all signals is no base URL for a signal sent over HTTP.
        let generic = generic.filter(|base| check_endpoint(base, protocol).is_ok());
        let specific = format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.env_infix());
        // The SDK would refuse a bad value and leave the signal dark: what replaces it is handed
        // over explicitly, so the SDK reads no endpoint variable.
        let mut refused = false;
        if let Some(value) = self.raw(&specific) {
            match check_endpoint(&value, protocol) {
                Ok(()) => return (None, redacted(&value)),
                Err(problem) => {
                    let fallback = match generic {
                        Some(_) => "the generic endpoint",
                        None => "the default endpoint",
                    };
                    self.warn(&specific, &redacted(&value), problem, fallback);
                    refused = true;
                }
            }
        }
        let base = generic.unwrap_or(if protocol == defaults.protocol {
            defaults.endpoint
        } else {
            protocol.spec_default_endpoint()
        });
        let endpoint = signal_endpoint(base, protocol, signal);
        let shown = redacted(&endpoint);
        ((generic.is_none() || refused).then_some(endpoint), shown)
    }

    /// The SDK reads the sampler itself and warns of an unknown one, or of a ratio that is no
    /// number (then 1.0); a number outside 0..=1 it uses as given without a word.
    fn check_sampler(&mut self) {
        let ratio_sampler = self
            .raw("OTEL_TRACES_SAMPLER")
            .is_some_and(|sampler| sampler.ends_with("traceidratio"));
        let Some(ratio) = self
            .raw("OTEL_TRACES_SAMPLER_ARG")
            .filter(|_| ratio_sampler)
            .and_then(|arg| arg.parse::<f64>().ok())
        else {
            return;
        };
        if !(0.0..=1.0).contains(&ratio) {
            let effect = if ratio > 1.0 {
                "samples every trace, as 1.0"
            } else {
                "samples no trace, as 0.0"
            };
            self.warnings.push(format!(
                "OTEL_TRACES_SAMPLER_ARG=\"{ratio}\" is outside 0..=1; the SDK uses it as given and \
                 {effect}"
            ));
        }
    }

    /// Header values are secrets (API keys): a warning names the entry, never its value.
    fn check_headers(&mut self, name: &str) {
        let Some(value) = self.get(name) else {
            return;
        };
        for (index, entry) in value.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let problem = match entry.split_once('=') {
                None => Some("is not key=value".to_owned()),
                Some((key, val)) => {
                    let key = key.trim();
                    if http::HeaderName::from_bytes(key.as_bytes()).is_err() {
                        Some(format!("has an invalid header name {key:?}"))
                    } else if val.trim().is_empty()
                        || http::HeaderValue::from_str(val.trim()).is_err()
                    {
                        Some(format!("({key}) has an empty or invalid value"))
                    } else {
                        None
                    }
                }
            };
            if let Some(problem) = problem {
                self.warnings.push(format!(
                    "{name}: entry {} {problem}; that header is not sent",
                    index + 1
                ));
            }
        }
    }
}

/// Whether `value` names its scheme (`http://`, `https://`, ...): `://` before any path.
fn has_scheme(value: &str) -> bool {
    value
        .split_once("://")
        .is_some_and(|(scheme, _)| !scheme.contains(['/', '?', '#']))
}

/// A signal's endpoint from a base one, as the SDK makes it from `OTEL_EXPORTER_OTLP_ENDPOINT`:
/// OTLP/HTTP appends the signal's path, gRPC takes the base as it is.
fn signal_endpoint(base: &str, protocol: Protocol, signal: Signal) -> String {
    match protocol {
        Protocol::Grpc => base.to_owned(),
        Protocol::HttpProtobuf => format!("{}{}", base.trim_end_matches('/'), signal.http_path()),
    }
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// A value the SDK takes: a URL, or for gRPC a `host:port` (the SDK adds the scheme).
fn check_endpoint(value: &str, protocol: Protocol) -> Result<(), &'static str> {
    if has_scheme(value) {
        check_url(value)
    } else if protocol == Protocol::Grpc {
        check_url(&format!("http://{value}")).map_err(|_| "not a valid host:port or URL")
    } else {
        Err("OTLP/HTTP needs an absolute URL starting with http:// or https://")
    }
}

fn check_url(value: &str) -> Result<(), &'static str> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or("expected an absolute URL starting with http:// or https://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.starts_with(':') {
        return Err("the URL has no host");
    }
    if value.contains(char::is_whitespace) {
        return Err("the URL contains whitespace");
    }
    value
        .parse::<http::Uri>()
        .map(|_| ())
        .map_err(|_| "not a valid URL")
}

/// `url` without the credentials it may carry (`user:password@`), for printing: warnings and
/// summaries name the endpoint, never a secret in it.
pub(crate) fn redacted(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults = Defaults {
        endpoint: "http://collector:4317",
        protocol: Protocol::Grpc,
    };

    #[track_caller]
    fn settings(vars: &[(&str, &str)]) -> Settings {
        Settings::from_lookup(DEFAULTS, |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    /// The spec (and the SDK) take a gRPC endpoint without a scheme; `INSECURE` picks it. The
    /// SDK applies it: the crate only needs to know whether the connection is secure.
    #[test]
    fn a_grpc_endpoint_without_a_scheme_is_left_to_the_sdk_and_insecure_decides_tls() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.traces.endpoint, None, "the SDK reads it");
        assert_eq!(s.traces.destination, "collector:4317");
        assert!(s.traces.secure);
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "TRUE"),
            ("OTEL_EXPORTER_OTLP_LOGS_INSECURE", "false"),
        ]);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert!(!s.traces.secure && !s.metrics.secure);
        assert!(s.logs.secure);
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "traces:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "yes"),
        ]);
        assert!(s.traces.secure);
        assert_eq!(
            s.warnings,
            [
                "OTEL_EXPORTER_OTLP_INSECURE=\"yes\" is invalid (expected true or false); using false (https)"
            ]
        );
        // OTLP/HTTP has no such rule: a URL or nothing. The SDK would refuse it, so the default is
        // named explicitly.
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ]);
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings[0].starts_with("OTEL_EXPORTER_OTLP_ENDPOINT="),
            "{:?}",
            s.warnings
        );
        assert_eq!(
            s.traces.endpoint.as_deref(),
            Some("http://localhost:4318/v1/traces")
        );
    }

    #[test]
    fn the_workspace_default_is_named_only_when_the_environment_names_no_endpoint() {
        let s = settings(&[]);
        assert!(!s.sdk_disabled);
        assert_eq!(s.traces.endpoint.as_deref(), Some("http://collector:4317"));
        assert!(!s.traces.secure);
        assert_eq!(s.traces.protocol, Protocol::Grpc);
        assert_eq!(s.logs.exporter, ExporterKind::Otlp);
        assert!(s.propagate_trace_context && s.propagate_baggage);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        // Either endpoint variable leaves the choice to the SDK, which applies the precedence.
        let s = settings(&[("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "https://logs:4317")]);
        assert_eq!(s.logs.endpoint, None);
        assert!(s.logs.secure);
        assert_eq!(s.traces.endpoint.as_deref(), Some("http://collector:4317"));
        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317")]);
        assert!(
            [&s.traces, &s.metrics, &s.logs]
                .iter()
                .all(|signal| signal.endpoint.is_none() && signal.secure)
        );
    }

    #[test]
    fn http_destinations_show_the_path_the_sdk_appends_to_the_generic_endpoint() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "http://logs:9999/custom",
            ),
        ]);
        assert_eq!(s.traces.destination, "http://c:4318/v1/traces");
        assert_eq!(s.logs.destination, "http://logs:9999/custom");
        assert!(s.traces.endpoint.is_none() && s.logs.endpoint.is_none());
    }

    #[test]
    fn switching_protocol_without_endpoint_uses_the_spec_port() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]);
        assert_eq!(
            s.traces.endpoint.as_deref(),
            Some("http://localhost:4318/v1/traces")
        );
    }

    #[test]
    fn an_endpoint_given_in_code_wins_over_the_environment() {
        let mut s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
        ]);
        s.override_endpoint("http://127.0.0.1:9/");
        assert_eq!(s.traces.endpoint.as_deref(), Some("http://127.0.0.1:9/"));
        assert_eq!(
            s.metrics.endpoint.as_deref(),
            Some("http://127.0.0.1:9/v1/metrics")
        );
        assert!(!s.traces.secure);
    }

    /// The SDK reads an endpoint as it is, spaces included, and refuses it.
    #[test]
    fn an_endpoint_the_sdk_would_refuse_gets_the_default_explicitly() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", " http://c:4317")]);
        assert_eq!(s.traces.endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].starts_with("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="));
        // With a good generic endpoint, that one, explicitly: the SDK would read the bad value.
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c 4317"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "generic:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
        ]);
        assert_eq!(s.traces.endpoint.as_deref(), Some("generic:4317"));
        assert!(!s.traces.secure, "the SDK adds http:// to it");
        assert_eq!(s.metrics.endpoint, None);
        assert!(
            s.warnings[0].ends_with("using the generic endpoint"),
            "{:?}",
            s.warnings
        );
    }

    /// The SDK skips a timeout that is no whole number; the client this crate builds for
    /// OTLP/HTTP over TLS follows the same rule.
    #[test]
    fn timeouts_follow_the_sdk() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon"),
            ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "700"),
        ]);
        assert_eq!(s.traces.timeout, Duration::from_millis(2500));
        assert_eq!(s.logs.timeout, Duration::from_millis(700));
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings[0].contains("the SDK ignores it"),
            "{:?}",
            s.warnings
        );
        assert_eq!(settings(&[]).metrics.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn signal_specific_protocol_wins() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")]);
        assert_eq!(s.metrics.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.traces.protocol, Protocol::Grpc);
    }

    #[test]
    fn bad_values_warn_and_fall_back() {
        let s = settings(&[
            ("OTEL_SDK_DISABLED", "yes"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector 4317"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "-5"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_PROPAGATORS", "b3,tracecontext"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
        ]);
        assert!(!s.sdk_disabled);
        assert_eq!(s.traces.protocol, Protocol::Grpc);
        assert_eq!(s.traces.endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(s.metric_export_interval, DEFAULT_METRIC_INTERVAL);
        assert_eq!(s.traces.exporter, ExporterKind::Otlp);
        assert!(s.propagate_trace_context && !s.propagate_baggage);
        let all = s.warnings.join("\n");
        assert_eq!(s.warnings.len(), 7, "one warning per bad variable:\n{all}");
        for name in [
            "OTEL_SDK_DISABLED",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_METRIC_EXPORT_INTERVAL",
            "OTEL_TRACES_EXPORTER",
            "OTEL_PROPAGATORS",
            "OTEL_BSP_MAX_QUEUE_SIZE",
        ] {
            assert!(all.contains(name), "no warning names {name}:\n{all}");
        }
    }

    /// Each warning names what the SDK really does with the value (opentelemetry_sdk 0.33 reads
    /// these from the process environment itself).
    #[test]
    fn warnings_name_what_the_sdk_really_uses() {
        let warning = |env: &[(&str, &str)]| settings(env).warnings.join("\n");
        let below = warning(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "-0.5"),
        ]);
        assert!(below.contains("samples no trace"), "{below}");
        assert!(!below.contains("using 1.0"), "{below}");
        let above = warning(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ]);
        assert!(above.contains("samples every trace"), "{above}");
        // The SDK says itself that it falls back to 1.0, and that a sampler is unknown.
        let garbage = warning(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "half"),
        ]);
        assert_eq!(garbage, "");
        assert_eq!(warning(&[("OTEL_TRACES_SAMPLER", "sometimes")]), "");
        let zero = warning(&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")]);
        assert!(zero.contains("uses it as given"), "{zero}");
        assert!(!zero.contains("SDK default"), "{zero}");
        let lots = warning(&[("OTEL_BLRP_MAX_QUEUE_SIZE", "lots")]);
        assert!(lots.contains("the SDK default"), "{lots}");
        // The SDK parses these untrimmed: a padded number is no number to it.
        let padded = warning(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", " 4096"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500 "),
        ]);
        assert!(
            padded.contains("OTEL_BSP_MAX_QUEUE_SIZE=\" 4096\" is invalid"),
            "{padded}"
        );
        assert!(
            padded.contains("OTEL_EXPORTER_OTLP_TIMEOUT=\"2500 \" is invalid"),
            "{padded}"
        );
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500 ")])
                .traces
                .timeout,
            DEFAULT_TIMEOUT
        );
    }

    #[test]
    fn endpoints_are_printed_without_credentials() {
        assert_eq!(
            super::redacted("https://user:s3cret@collector:4318/v1/traces?k=a@b"),
            "https://***@collector:4318/v1/traces?k=a@b"
        );
        assert_eq!(super::redacted("u:p@collector:4317"), "***@collector:4317");
        assert_eq!(
            super::redacted("http://collector:4317"),
            "http://collector:4317"
        );
        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://user:s3cret@c:1")]);
        let all = s.warnings.join(" ");
        assert!(!all.is_empty() && !all.contains("s3cret"), "{all}");
    }

    #[test]
    fn header_warnings_never_print_values() {
        let s = settings(&[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "api-key=s3cret,broken,bad key=x",
        )]);
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(!s.warnings.join(" ").contains("s3cret"));
    }

    #[test]
    fn disabled_and_none_are_read() {
        let s = settings(&[
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_LOGS_EXPORTER", "none"),
            ("OTEL_PROPAGATORS", "none"),
        ]);
        assert!(s.sdk_disabled);
        assert_eq!(s.logs.exporter, ExporterKind::None);
        assert!(!s.propagate_trace_context && !s.propagate_baggage);
    }
}
