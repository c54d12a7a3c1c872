//! TLS, one stack on every wire: rustls with the `ring` provider, for the OTLP exporters (both
//! protocols) and for the services' own gRPC server and client.
//!
//! `ring` rather than `aws-lc-rs`: it builds with a plain Rust toolchain (no cmake, no C compiler
//! beyond `cc`, no system library), and tonic, reqwest and rcgen all offer it. No OpenSSL anywhere.
//!
//! Files are read and checked here, once, so a problem is reported by the flag or variable that
//! named the file: a missing or unreadable file, a file without PEM certificates, a key that does
//! not match its certificate. Nothing here prints a key or a header value.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file, with the flag or environment variable that named it (for error messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemFile {
    /// `--tls-cert`, `OTEL_EXPORTER_OTLP_CERTIFICATE`, ...: what the user set.
    pub setting: String,
    /// The file.
    pub path: PathBuf,
}

impl PemFile {
    /// `path`, named by `setting`.
    pub fn new(setting: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            setting: setting.into(),
            path: path.into(),
        }
    }
}

/// Why TLS material cannot be used: names the setting, the file and the problem, in one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{setting}={}: {problem}", path.display())]
pub struct TlsError {
    /// The flag or variable.
    pub setting: String,
    /// The file it named.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

impl TlsError {
    fn new(file: &PemFile, problem: impl Into<String>) -> Self {
        Self {
            setting: file.setting.clone(),
            path: file.path.clone(),
            problem: problem.into(),
        }
    }
}

/// The crypto provider every TLS configuration of the workspace uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(file: &PemFile) -> Result<Vec<u8>, TlsError> {
    std::fs::read(&file.path).map_err(|e| TlsError::new(file, format!("cannot read it: {e}")))
}

/// The certificates of a PEM file (a chain, or a CA bundle), with the file's bytes.
pub fn certificates(file: &PemFile) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), TlsError> {
    let pem = read(file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(file, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            file,
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
        ));
    }
    Ok((pem, certs))
}

/// The trust anchors of a PEM CA bundle, with the file's bytes.
pub fn ca(file: &PemFile) -> Result<(Vec<u8>, rustls::RootCertStore), TlsError> {
    let (pem, certs) = certificates(file)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| TlsError::new(file, format!("not a usable CA certificate ({e})")))?;
    }
    Ok((pem, roots))
}

/// A certificate chain and the private key that goes with it, both checked.
#[derive(Clone)]
pub struct Identity {
    /// The chain, PEM.
    pub cert_pem: Vec<u8>,
    /// The key, PEM.
    pub key_pem: Vec<u8>,
    /// The chain, DER.
    pub certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Identity")
            .field("certs", &self.certs.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Reads `cert` and `key` and checks that the key belongs to the certificate.
    pub fn load(cert: &PemFile, key: &PemFile) -> Result<Self, TlsError> {
        let (cert_pem, certs) = certificates(cert)?;
        let key_pem = read(key)?;
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            TlsError::new(
                key,
                format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1) in it ({e})"),
            )
        })?;
        rustls::sign::CertifiedKey::from_der(certs.clone(), private.clone_key(), &provider())
            .map_err(|e| {
                TlsError::new(
                    cert,
                    format!("does not go with the key in {} ({e})", key.path.display()),
                )
            })?;
        Ok(Self {
            cert_pem,
            key_pem,
            certs,
            key: Arc::new(private),
        })
    }

    /// The private key, DER.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// For tonic's server and client configurations.
    pub fn tonic(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// The TLS files of one OTLP exporter, from the specification's variables
/// (`OTEL_EXPORTER_OTLP_[<SIGNAL>_]CERTIFICATE`, `_CLIENT_CERTIFICATE`, `_CLIENT_KEY`; the
/// signal's own wins over the generic one, each on its own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExporterTlsFiles {
    /// The CA bundle that signs the collector's certificate; the system's roots when unset.
    pub certificate: Option<PemFile>,
    /// The exporter's own certificate, for mutual TLS.
    pub client_certificate: Option<PemFile>,
    /// The key of `client_certificate`.
    pub client_key: Option<PemFile>,
}

impl ExporterTlsFiles {
    /// Whether any file is set.
    pub fn any(&self) -> bool {
        self.certificate.is_some() || self.client_certificate.is_some() || self.client_key.is_some()
    }
}

/// One OTLP exporter's TLS, read and checked.
#[derive(Clone, Debug)]
pub(crate) struct ExporterTls {
    ca: Option<(Vec<u8>, rustls::RootCertStore)>,
    identity: Option<Identity>,
}

impl ExporterTls {
    pub(crate) fn load(files: &ExporterTlsFiles) -> Result<Self, TlsError> {
        let ca = files.certificate.as_ref().map(ca).transpose()?;
        let identity = match (&files.client_certificate, &files.client_key) {
            (Some(cert), Some(key)) => Some(Identity::load(cert, key)?),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(TlsError::new(
                    cert,
                    "a client certificate needs its key (OTEL_EXPORTER_OTLP_CLIENT_KEY) too",
                ));
            }
            (None, Some(key)) => {
                return Err(TlsError::new(
                    key,
                    "a client key needs its certificate (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE) \
                     too",
                ));
            }
        };
        Ok(Self { ca, identity })
    }

    /// For the gRPC exporter: the CA when given, else the system's roots.
    pub(crate) fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new();
        let config = match &self.ca {
            Some((pem, _)) => config.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        match &self.identity {
            Some(identity) => config.identity(identity.tonic()),
            None => config,
        }
    }

    /// For the HTTP exporter: the same trust and identity as a rustls configuration.
    pub(crate) fn rustls(&self) -> Result<rustls::ClientConfig, String> {
        let roots = match &self.ca {
            Some((_, roots)) => roots.clone(),
            None => system_roots()?,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        match &self.identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.certs.clone(), identity.key())
                .map_err(|e| e.to_string()),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

impl ExporterTls {
    /// The OTLP/HTTP exporter's client: reqwest's blocking client, as the exporter would build
    /// it, with this TLS. Built on a thread of its own: it starts a runtime, which must not happen
    /// on one.
    pub(crate) fn http_client(
        &self,
        timeout: std::time::Duration,
    ) -> Result<reqwest::blocking::Client, String> {
        let config = self.rustls()?;
        std::thread::Builder::new()
            .name("telemetry-http-client".into())
            .spawn(move || {
                reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .tls_backend_preconfigured(config)
                    .build()
            })
            .map_err(|e| format!("cannot start a thread to build the HTTP client: {e}"))?
            .join()
            .map_err(|_| "the thread building the HTTP client panicked".to_owned())?
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }
}

/// Makes `ring` the process's default rustls provider, for the clients built without a
/// configuration of ours: the OTLP/HTTP exporter's own reqwest client for an `http://` endpoint
/// panics while being built when no provider is installed. Idempotent; a provider installed
/// before (by the application) is kept.
pub(crate) fn install_default_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The operating system's trusted roots (on Linux, /etc/ssl/certs and the like).
fn system_roots() -> Result<rustls::RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(
            "no system CA certificates found; set OTEL_EXPORTER_OTLP_CERTIFICATE to a CA bundle"
                .to_owned(),
        );
    }
    Ok(roots)
}

/// Reads a path from `lookup`, for settings: blank counts as unset.
pub(crate) fn pem_file(lookup: impl Fn(&str) -> Option<String>, name: &str) -> Option<PemFile> {
    lookup(name)
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .map(|value| PemFile::new(name, Path::new(&value)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};

    use crate::settings::Settings;
    use telemetry_testing::{Pki, Receiver};

    /// Builds the three OTLP exporters with `env`, sends one span, one log record and one metric
    /// point, and flushes; returns the warnings and the shutdown's problems.
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` in `env` is set in code: the SDK reads the endpoint from the
    /// process environment only.
    async fn export_all(env: Vec<(String, String)>) -> (Vec<String>, Vec<String>) {
        let lookup = |name: &str| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let mut settings = Settings::from_lookup(crate::defaults::DEFAULTS, lookup);
        if let Some(base) = lookup("OTEL_EXPORTER_OTLP_ENDPOINT") {
            settings.override_endpoint(&base);
        }
        let mut warnings = settings.warnings.clone();
        let resource = crate::providers::resource("tls-test", "0", "", "");
        let providers = crate::providers::build(&settings, &resource, &mut warnings);
        if let Some(tracer) = &providers.tracer {
            tracer.tracer("tls").start("over-tls").end();
        }
        if let Some(logger) = &providers.logger {
            let logger = logger.logger("tls");
            let mut record = logger.create_log_record();
            record.set_body("over tls".into());
            logger.emit(record);
        }
        if let Some(meter) = &providers.meter {
            meter
                .meter("tls")
                .u64_counter("tls.calls")
                .build()
                .add(1, &[]);
        }
        let problems =
            tokio::task::spawn_blocking(move || providers.shutdown(Duration::from_secs(10)))
                .await
                .expect("the shutdown task");
        (warnings, problems)
    }

    fn env(receiver: &Receiver, protocol: &str, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                receiver.endpoint(),
            ),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(),
                protocol.to_owned(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    }

    fn path(pki: &Pki, file: &str) -> String {
        pki.path(file).display().to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn all_three_signals_arrive_over_https_on_both_protocols_with_mutual_tls() {
        let pki = Pki::new().expect("a test PKI");
        let server = pki.identity("server").expect("the server identity");
        for protocol in ["grpc", "http/protobuf"] {
            let receiver = Receiver::start_tls(&server, Some(&pki.read("ca.pem")))
                .await
                .expect("a TLS receiver");
            assert!(receiver.endpoint().starts_with("https://"));
            let (warnings, problems) = export_all(env(
                &receiver,
                protocol,
                &[
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki, "ca.pem")),
                    (
                        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                        path(&pki, "client.pem"),
                    ),
                    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&pki, "client.key")),
                ],
            ))
            .await;
            assert!(warnings.is_empty(), "{protocol}: {warnings:?}");
            assert!(problems.is_empty(), "{protocol}: {problems:?}");
            assert!(
                receiver.spans().iter().any(|s| s.name == "over-tls"),
                "{protocol}: no span"
            );
            assert!(
                receiver.logs().iter().any(|l| l.body == "over tls"),
                "{protocol}: no log"
            );
            assert!(
                receiver.points().iter().any(|p| p.metric == "tls.calls"),
                "{protocol}: no metric"
            );
        }
    }

    /// The exporter's own plaintext HTTP client needs a process-wide rustls provider to be built.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn all_three_signals_still_arrive_in_plaintext_on_both_protocols() {
        for protocol in ["grpc", "http/protobuf"] {
            let receiver = Receiver::start().await.expect("a receiver");
            let (warnings, problems) = export_all(env(&receiver, protocol, &[])).await;
            assert!(warnings.is_empty(), "{protocol}: {warnings:?}");
            assert!(problems.is_empty(), "{protocol}: {problems:?}");
            assert!(!receiver.spans().is_empty(), "{protocol}: no span");
            assert!(!receiver.logs().is_empty(), "{protocol}: no log");
            assert!(!receiver.points().is_empty(), "{protocol}: no metric");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mutual_tls_receiver_refuses_an_exporter_without_a_client_certificate() {
        let pki = Pki::new().expect("a test PKI");
        let server = pki.identity("server").expect("the server identity");
        for protocol in ["grpc", "http/protobuf"] {
            let receiver = Receiver::start_tls(&server, Some(&pki.read("ca.pem")))
                .await
                .expect("a TLS receiver");
            // The batch processor reports a failed export in its own diagnostics, not from
            // shutdown: what counts is that nothing arrived after the flush.
            let (warnings, _) = export_all(env(
                &receiver,
                protocol,
                &[
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki, "ca.pem")),
                    ("OTEL_METRICS_EXPORTER", "none".to_owned()),
                    ("OTEL_LOGS_EXPORTER", "none".to_owned()),
                ],
            ))
            .await;
            assert!(warnings.is_empty(), "{protocol}: {warnings:?}");
            assert!(
                receiver.spans().is_empty(),
                "{protocol}: a span got through"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exporter_that_does_not_trust_the_receiver_sends_nothing() {
        let pki = Pki::new().expect("a test PKI");
        let other = Pki::new().expect("another test PKI");
        let server = pki.identity("server").expect("the server identity");
        let receiver = Receiver::start_tls(&server, None)
            .await
            .expect("a TLS receiver");
        let (warnings, _) = export_all(env(
            &receiver,
            "grpc",
            &[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                    path(&other, "ca.pem"),
                ),
                ("OTEL_METRICS_EXPORTER", "none".to_owned()),
                ("OTEL_LOGS_EXPORTER", "none".to_owned()),
            ],
        ))
        .await;
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(receiver.spans().is_empty(), "a span got through");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_tls_file_leaves_that_signal_off_with_one_warning_naming_the_variable() {
        let pki = Pki::new().expect("a test PKI");
        let cases = [
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                path(&pki, "missing.pem"),
                "cannot read",
            ),
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                path(&pki, "server.key"),
                "no PEM certificate",
            ),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                path(&pki, "server.key"),
                "does not go with the key",
            ),
        ];
        for protocol in ["grpc", "http/protobuf"] {
            for (variable, value, problem) in &cases {
                let mut extra = vec![
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki, "ca.pem")),
                    (
                        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                        path(&pki, "client.pem"),
                    ),
                    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&pki, "client.key")),
                    ("OTEL_METRICS_EXPORTER", "none".to_owned()),
                    ("OTEL_LOGS_EXPORTER", "none".to_owned()),
                    (
                        "OTEL_EXPORTER_OTLP_ENDPOINT",
                        "https://127.0.0.1:9".to_owned(),
                    ),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
                ];
                extra.retain(|(k, _)| k != variable);
                extra.push((variable, value.clone()));
                let env = extra.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                let (warnings, _) = export_all(env).await;
                assert_eq!(warnings.len(), 1, "{protocol} {variable}: {warnings:?}");
                let warning = &warnings[0];
                assert!(
                    warning.contains(problem) && warning.contains("traces are not exported"),
                    "{protocol} {variable}: {warning}"
                );
                let named = if *problem == "does not go with the key" {
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"
                } else {
                    variable
                };
                assert!(warning.contains(named), "{protocol}: {warning}");
            }
        }
    }
}
