//! A typed client for the service: connects with a timeout (to one address, or balancing over
//! the healthy replicas a name resolves to, see [`discovery`]), and every call goes through the
//! telemetry layer (CLIENT span, W3C trace propagation, client metrics), with a deadline, and is
//! retried when its method is idempotent and a replica was unavailable (see [`retry`]).

pub mod discovery;
pub mod load;
pub mod retry;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use telemetry::grpc::{GrpcClientLayer, GrpcClientService};
use telemetry::tls::{Identity, PemFile, TlsError};
use tonic::transport::{Channel, Endpoint};

pub use discovery::{Balancing, Discovery, LbPolicy};
pub use retry::{CallSettings, SettingsError};

pub use proto::{
    DEFAULT_PORT, GRPC_SERVICE, MyRequest, MyResponse, SERVICE_NAME, StreamRequest, StreamResult,
};

/// Why [`Client::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The address is not an `http://host:port` or `https://host:port` URL.
    #[error("invalid server address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Nothing answered in time, or the connection was refused.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The address as given.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// A TLS file is missing, unreadable or not PEM, or the key does not match the certificate.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// TLS for an `https://` server address: the CA that signed the server's certificate (the
/// system's roots when unset), and a client certificate for servers that require one (mutual TLS).
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// CA bundle (PEM) to trust.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

impl Tls {
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    fn tonic(&self) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        let config = tonic::transport::ClientTlsConfig::new();
        let config = match &self.ca {
            Some(ca) => {
                let (pem, _) = telemetry::tls::ca(&PemFile::new("--tls-ca (TLS_CA_FILE)", ca))?;
                config.ca_certificate(tonic::transport::Certificate::from_pem(pem))
            }
            None => config.with_native_roots(),
        };
        Ok(match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => config.identity(
                Identity::load(
                    &PemFile::new("--tls-cert (TLS_CERT_FILE)", cert),
                    &PemFile::new("--tls-key (TLS_KEY_FILE)", key),
                )?
                .tonic(),
            ),
            (None, None) => config,
            (Some(file), None) | (None, Some(file)) => {
                return Err(TlsError {
                    setting: "--tls-cert/--tls-key".to_owned(),
                    path: file.clone(),
                    problem: "a client certificate and its key go together: give both".to_owned(),
                });
            }
        })
    }
}

/// A connected, instrumented client of the service. Clones share the connection and the retry
/// throttle.
#[derive(Clone, Debug)]
pub struct Client {
    inner: proto::ServiceClient<GrpcClientService<Channel>>,
    calls: Arc<retry::Calls>,
    /// This clone's call deadline ([`Client::with_timeout`]).
    timeout: Duration,
    /// With balancing: how many replicas report SERVING.
    ready: Option<tokio::sync::watch::Receiver<usize>>,
}

impl Client {
    /// Connects to `address` (`http://host:port`), giving up after `timeout`.
    pub async fn connect(address: &str, timeout: Duration) -> Result<Self, ConnectError> {
        Self::connect_with_tls(address, timeout, &Tls::default()).await
    }

    /// Connects to `address`; an `https://` address is reached over TLS with `tls`. TLS files
    /// with an `http://` address are an error, not a silent downgrade to plaintext. One
    /// connection, to whatever the host resolves to first (see [`Client::connect_balanced`]).
    pub async fn connect_with_tls(
        address: &str,
        timeout: Duration,
        tls: &Tls,
    ) -> Result<Self, ConnectError> {
        let target = target(address, timeout, tls)?;
        let mut endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|_| invalid(address, "not a valid endpoint"))?
            .connect_timeout(timeout);
        if let Some(config) = &target.tls {
            endpoint = endpoint
                .tls_config(config.clone())
                .map_err(|e| invalid_tls(address, &e))?;
        }
        let connect_error = |reason: String| ConnectError::Connect {
            address: address.to_owned(),
            reason,
        };
        let channel = tokio::time::timeout(timeout, endpoint.connect())
            .await
            .map_err(|_| connect_error(format!("no answer within {timeout:?}")))?
            .map_err(|e| connect_error(error_chain(&e)))?;
        Ok(Self::from_channel(channel, &target.host, target.port))
    }

    /// Connects as `balancing` says: with [`LbPolicy::Dns`], to every replica the host resolves
    /// to, balancing the calls over those whose health reports SERVING (see [`discovery`]);
    /// with [`LbPolicy::None`], as [`Client::connect_with_tls`]. Spans name the host as given.
    pub async fn connect_balanced(
        address: &str,
        timeout: Duration,
        tls: &Tls,
        balancing: &Balancing,
    ) -> Result<Self, ConnectError> {
        if balancing.policy == LbPolicy::None {
            return Self::connect_with_tls(address, timeout, tls).await;
        }
        let target = target(address, timeout, tls)?;
        let dns =
            discovery::Dns::new(&target.host, target.port, balancing.dns_server).map_err(|e| {
                ConnectError::Connect {
                    address: address.to_owned(),
                    reason: e.to_string(),
                }
            })?;
        Self::connect_to(address, target, balancing, Arc::new(dns)).await
    }

    /// Like [`Client::connect_balanced`] with the replicas `discovery` finds (tests inject
    /// addresses this way); `address` gives the scheme, the host for TLS and `:authority`, and
    /// the names on the spans. Fails once `timeout` passes with no replica SERVING.
    pub async fn connect_discovered(
        address: &str,
        timeout: Duration,
        tls: &Tls,
        balancing: &Balancing,
        discovery: Arc<dyn Discovery>,
    ) -> Result<Self, ConnectError> {
        Self::connect_to(
            address,
            target(address, timeout, tls)?,
            balancing,
            discovery,
        )
        .await
    }

    /// Balances over the replicas of `target` (parsed, its TLS files read, once) that `discovery`
    /// finds.
    async fn connect_to(
        address: &str,
        target: discovery::Target,
        balancing: &Balancing,
        discovery: Arc<dyn Discovery>,
    ) -> Result<Self, ConnectError> {
        let (host, port) = (target.host.clone(), target.port);
        let (channel, ready) = discovery::connect(target, balancing, discovery)
            .await
            .map_err(|reason| ConnectError::Connect {
                address: address.to_owned(),
                reason,
            })?;
        Ok(Self {
            ready: Some(ready),
            ..Self::from_channel(channel, &host, port)
        })
    }

    /// Wraps an existing channel; `host` and `port` name the server on the spans. Calls use the
    /// default [`CallSettings`].
    pub fn from_channel(channel: Channel, host: &str, port: u16) -> Self {
        let layer = GrpcClientLayer::new(proto::METRIC_PREFIX, host, port);
        let service = tower::ServiceBuilder::new()
            .layer(layer.clone())
            .service(channel);
        let settings = CallSettings::default();
        let timeout = settings.timeout();
        let calls = retry::Calls::new(settings, layer)
            .unwrap_or_else(|_| unreachable!("the default settings are valid"));
        Self {
            inner: proto::ServiceClient::new(service),
            calls: Arc::new(calls),
            timeout,
            ready: None,
        }
    }

    /// This client with other deadline and retry settings (and a throttle of its own).
    pub fn with_settings(mut self, settings: CallSettings) -> Result<Self, SettingsError> {
        let layer = self.calls.layer().clone();
        let calls = retry::Calls::new(settings, layer)?;
        self.timeout = calls.settings.timeout();
        self.calls = Arc::new(calls);
        Ok(self)
    }

    /// A clone whose calls have `timeout` as their deadline, for one call or a few:
    /// `client.with_timeout(remaining).process_request(id)`. It shares the throttle.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// With balancing ([`Client::connect_balanced`]): how many replicas report SERVING now;
    /// `None` on a single connection.
    pub fn ready_replicas(&self) -> Option<usize> {
        self.ready.as_ref().map(|ready| *ready.borrow())
    }

    /// Calls `ProcessRequest` with `id`.
    pub async fn process_request(
        &mut self,
        id: impl Into<String>,
    ) -> Result<MyResponse, tonic::Status> {
        let id = id.into();
        let attributes = vec![KeyValue::new(
            "request.id",
            telemetry::bounded(&id).to_owned(),
        )];
        let inner = &self.inner;
        self.calls
            .run(
                "ProcessRequest",
                MyRequest { id },
                attributes,
                self.timeout,
                |request| {
                    let mut inner = inner.clone();
                    async move { inner.process_request(request).await }
                },
            )
            .await
    }

    /// Calls `StreamResults`: asks for `count` results of `id`, `interval` apart, and returns the
    /// stream of results (read it with `.message().await` until `None`; an error ends it). The
    /// call's CLIENT span lasts until the stream ends, or until it is dropped (CANCELLED). The
    /// call's deadline covers the whole stream: a stream still going when it passes ends with
    /// DEADLINE_EXCEEDED (ask a longer one with [`Client::with_timeout`]). `StreamResults` is not
    /// marked idempotent in the proto, so it is never retried.
    pub async fn stream_results(
        &mut self,
        id: impl Into<String>,
        count: u32,
        interval: Duration,
    ) -> Result<tonic::Streaming<StreamResult>, tonic::Status> {
        let id = id.into();
        let shown = telemetry::bounded(&id).to_owned();
        let message = StreamRequest {
            id,
            count,
            interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
        };
        let inner = &self.inner;
        self.calls
            .run(
                "StreamResults",
                message,
                vec![KeyValue::new("request.id", shown)],
                self.timeout,
                |request| {
                    let mut inner = inner.clone();
                    async move { inner.stream_results(request).await }
                },
            )
            .await
    }
}

fn invalid(address: &str, reason: &'static str) -> ConnectError {
    ConnectError::InvalidAddress {
        address: address.to_owned(),
        reason,
    }
}

/// The server as `address` names it: scheme, host and port, and TLS for an `https://` one.
fn target(address: &str, timeout: Duration, tls: &Tls) -> Result<discovery::Target, ConnectError> {
    let uri: http::Uri = address.parse().map_err(|_| invalid(address, "not a URL"))?;
    let port = match uri.scheme_str() {
        Some("http") => uri.port_u16().unwrap_or(80),
        Some("https") => uri.port_u16().unwrap_or(443),
        _ => return Err(invalid(address, "expected an http:// or https:// URL")),
    };
    let host = uri
        .host()
        .ok_or_else(|| invalid(address, "the URL has no host"))?
        .to_owned();
    let tls = if uri.scheme_str() == Some("https") {
        Some(tls.tonic()?)
    } else if !tls.is_empty() {
        return Err(invalid(
            address,
            "TLS files are given but the address is http://; use https://",
        ));
    } else {
        None
    };
    Ok(discovery::Target {
        uri,
        host,
        port,
        tls,
        connect_timeout: timeout,
    })
}

fn invalid_tls(address: &str, error: &dyn std::error::Error) -> ConnectError {
    ConnectError::Connect {
        address: address.to_owned(),
        reason: format!(
            "the TLS configuration is not usable: {}",
            error_chain(error)
        ),
    }
}

/// "connection refused" is in the error's source, not its own message.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
