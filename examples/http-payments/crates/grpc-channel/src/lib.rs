//! The client side every service of the workspace shares, rendered once per workspace: a
//! [`Connection`] connects with a timeout (to one address, or balancing over the healthy replicas
//! a name resolves to, see [`discovery`]), every call through it goes through the telemetry layer
//! (CLIENT span, W3C trace propagation, client metrics), has a deadline, and is retried when its
//! method is idempotent and a replica was unavailable (see [`retry`]). [`cli`] is what the
//! services' command-line clients share, [`load`] their load mode.
//!
//! Nothing here knows a service: what the machinery needs of one (its gRPC name, its metric
//! prefix, its idempotent methods) comes in as a [`ServiceInfo`]. Deadlines and retries are a
//! layer on the channel ([`RetryChannel`]), so the service's generated client over
//! [`Connection::channel`] is a typed client with all of it: a new RPC needs no client code.

pub mod balance;
pub mod cli;
mod deadline;
pub mod discovery;
pub mod load;
pub mod replay;
pub mod retry;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use telemetry::grpc::{GrpcClientLayer, GrpcClientService};
use telemetry::tls::{Identity, PemFile, TlsError};
use tonic::transport::{Channel, Endpoint};

pub use balance::Transport;
pub use discovery::{Balancing, Discovery, LbPolicy};
pub use retry::{CallSettings, RetryService, SettingsError};

/// The channel a service's generated client runs over (`ServiceClient::new(channel)`): every call
/// gets a deadline and gRFC A6 retries ([`retry`]), then the telemetry layer on the transport.
pub type RetryChannel = RetryService<GrpcClientService<Transport>>;

/// What the shared machinery needs to know of the service it calls; its proto crate has every
/// piece (`GRPC_SERVICE`, `METRIC_PREFIX`, `IDEMPOTENT_METHODS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The fully qualified gRPC service name (`package.Service`): the calls' paths, `rpc.method`,
    /// and the name whose readiness health the balancer watches.
    pub grpc_service: &'static str,
    /// Prefix of the client metrics (`<prefix>.client.calls.total`, ...).
    pub metric_prefix: &'static str,
    /// `package.Service/Method` of every method the proto marks idempotent (`option
    /// idempotency_level = IDEMPOTENT` or `NO_SIDE_EFFECTS`): the only ones retried.
    pub idempotent_methods: &'static [&'static str],
}

impl ServiceInfo {
    /// Whether the proto marks `method` (its bare name, `ProcessRequest`) of this service
    /// idempotent.
    pub fn is_idempotent(&self, method: &str) -> bool {
        self.idempotent_methods.iter().any(|name| {
            name.strip_prefix(self.grpc_service)
                .and_then(|rest| rest.strip_prefix('/'))
                == Some(method)
        })
    }

    /// `package.Service/Method`, as `rpc.method` names a method of this service.
    pub fn rpc_method(&self, method: &str) -> String {
        format!("{}/{method}", self.grpc_service)
    }
}

/// Why connecting failed.
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

/// The instrumented channel to one service, with its deadline and retry machinery: what the
/// service's generated client runs over. Clones share the connection and the retry throttle.
#[derive(Clone, Debug)]
pub struct Connection {
    channel: RetryChannel,
    /// With balancing: how many replicas report SERVING.
    ready: Option<tokio::sync::watch::Receiver<usize>>,
}

impl Connection {
    /// Connects to `address` (`http://host:port`) of `service`, giving up after `timeout`.
    pub async fn connect(
        service: ServiceInfo,
        address: &str,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        Self::connect_with_tls(service, address, timeout, &Tls::default()).await
    }

    /// Connects to `address`; an `https://` address is reached over TLS with `tls`. TLS files
    /// with an `http://` address are an error, not a silent downgrade to plaintext. One
    /// connection, to whatever the host resolves to first (see [`Connection::connect_balanced`]).
    pub async fn connect_with_tls(
        service: ServiceInfo,
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
        Ok(Self::from_channel(
            service,
            channel,
            &target.host,
            target.port,
        ))
    }

    /// Connects as `balancing` says: with [`LbPolicy::Dns`], to every replica the host resolves
    /// to, balancing the calls over those whose health reports SERVING (see [`discovery`]);
    /// with [`LbPolicy::None`], as [`Connection::connect_with_tls`]. Spans name the host as given.
    pub async fn connect_balanced(
        service: ServiceInfo,
        address: &str,
        timeout: Duration,
        tls: &Tls,
        balancing: &Balancing,
    ) -> Result<Self, ConnectError> {
        if balancing.policy == LbPolicy::None {
            return Self::connect_with_tls(service, address, timeout, tls).await;
        }
        let target = target(address, timeout, tls)?;
        let dns =
            discovery::Dns::new(&target.host, target.port, balancing.dns_server).map_err(|e| {
                ConnectError::Connect {
                    address: address.to_owned(),
                    reason: e.to_string(),
                }
            })?;
        Self::connect_to(service, address, target, balancing, Arc::new(dns)).await
    }

    /// Like [`Connection::connect_balanced`] with the replicas `discovery` finds (tests inject
    /// addresses this way); `address` gives the scheme, the host for TLS and `:authority`, and
    /// the names on the spans. Fails once `timeout` passes with no replica SERVING.
    pub async fn connect_discovered(
        service: ServiceInfo,
        address: &str,
        timeout: Duration,
        tls: &Tls,
        balancing: &Balancing,
        discovery: Arc<dyn Discovery>,
    ) -> Result<Self, ConnectError> {
        let target = target(address, timeout, tls)?;
        Self::connect_to(service, address, target, balancing, discovery).await
    }

    /// Balances over the replicas of `target` (parsed, its TLS files read, once) that `discovery`
    /// finds.
    async fn connect_to(
        service: ServiceInfo,
        address: &str,
        target: discovery::Target,
        balancing: &Balancing,
        discovery: Arc<dyn Discovery>,
    ) -> Result<Self, ConnectError> {
        let (host, port) = (target.host.clone(), target.port);
        let (transport, ready) = discovery::connect(service, target, balancing, discovery)
            .await
            .map_err(|reason| ConnectError::Connect {
                address: address.to_owned(),
                reason,
            })?;
        Ok(Self {
            ready: Some(ready),
            ..Self::from_transport(service, transport, &host, port)
        })
    }

    /// Wraps an existing channel to `service`; `host` and `port` name the server on the spans.
    /// Calls use the default [`CallSettings`].
    pub fn from_channel(service: ServiceInfo, channel: Channel, host: &str, port: u16) -> Self {
        Self::from_transport(service, Transport::single(channel), host, port)
    }

    fn from_transport(service: ServiceInfo, transport: Transport, host: &str, port: u16) -> Self {
        let layer = GrpcClientLayer::new(service.metric_prefix, host, port);
        let calls = retry::Calls::new(service, CallSettings::default(), layer.clone())
            .unwrap_or_else(|_| unreachable!("the default settings are valid"));
        let channel = tower::ServiceBuilder::new().layer(layer).service(transport);
        Self {
            channel: RetryService::new(channel, Arc::new(calls)),
            ready: None,
        }
    }

    /// This connection with other deadline and retry settings (and a throttle of its own).
    pub fn with_settings(mut self, settings: CallSettings) -> Result<Self, SettingsError> {
        let layer = self.channel.calls().layer().clone();
        let calls = retry::Calls::new(self.service(), settings, layer)?;
        self.channel = RetryService::new(self.channel.inner().clone(), Arc::new(calls));
        Ok(self)
    }

    /// A clone whose calls have `timeout` as their deadline unless a request sets its own
    /// (`request.set_timeout(..)`), for one call or a few. It shares the throttle.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            channel: self.channel.with_timeout(timeout),
            ready: self.ready.clone(),
        }
    }

    /// With balancing ([`Connection::connect_balanced`]): how many replicas report SERVING now;
    /// `None` on a single connection.
    pub fn ready_replicas(&self) -> Option<usize> {
        self.ready.as_ref().map(|ready| *ready.borrow())
    }

    /// The channel, for the service's generated client (`ServiceClient::new(connection.channel()
    /// .clone())`): every call made on it has a deadline, is retried as [`retry`] says, and is
    /// traced and measured. A request's `telemetry::grpc::SpanAttributes` extension goes on the
    /// call's CLIENT span.
    pub fn channel(&self) -> &RetryChannel {
        &self.channel
    }

    /// The service this connection calls.
    pub fn service(&self) -> ServiceInfo {
        self.channel.calls().service
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

/// An error with its sources, `: `-separated: "connection refused" is in a transport error's
/// source, not its own message.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::ServiceInfo;

    #[test]
    fn only_the_listed_methods_of_the_service_are_idempotent() {
        let service = ServiceInfo {
            grpc_service: "shop.v1.Orders",
            metric_prefix: "orders",
            idempotent_methods: &["shop.v1.Orders/Get", "shop.v1.Other/Put"],
        };
        assert!(service.is_idempotent("Get"));
        assert!(!service.is_idempotent("Put"), "another service's method");
        assert!(!service.is_idempotent("Ge"));
        assert!(!service.is_idempotent("Create"));
        assert_eq!(service.rpc_method("Get"), "shop.v1.Orders/Get");
    }
}
