//! A typed client for the service: its generated client over the workspace's shared
//! [`grpc_channel`] channel. It connects with a timeout (to one address, or balancing over the
//! healthy replicas a name resolves to, see [`discovery`]), and every call goes through the
//! telemetry layer (CLIENT span, W3C trace propagation, client metrics), with a deadline, and is
//! retried when its method is idempotent and a replica was unavailable (see [`retry`]): every
//! method of [`Client::generated`] has all of it, a new RPC included. What is this service's own
//! is here: [`SERVICE`] (what the machinery needs to know of it), shorthands for the example's
//! methods that name the request id on the span, and the calls its CLI makes ([`call`]).

pub mod call;

use std::sync::Arc;
use std::time::Duration;

use grpc_channel::{Connection, RetryChannel, ServiceInfo};
use opentelemetry::KeyValue;
use telemetry::grpc::SpanAttributes;
use tonic::transport::Channel;

pub use grpc_channel::{
    Balancing, CallSettings, ConnectError, Discovery, LbPolicy, SettingsError, Tls, discovery,
    retry,
};

{%- if is_init %}
pub use proto::{DEFAULT_PORT, GRPC_SERVICE, MyRequest, MyResponse, SERVICE_NAME};
{%- else %}
pub use proto::{
    DEFAULT_PORT, GRPC_SERVICE, MyRequest, MyResponse, SERVICE_NAME, StreamRequest, StreamResult,
};
{%- endif %}

/// The service as the shared machinery knows it: its gRPC name (paths, health), its metric
/// prefix, and the methods its proto marks idempotent.
pub const SERVICE: ServiceInfo = ServiceInfo {
    grpc_service: proto::GRPC_SERVICE,
    metric_prefix: proto::METRIC_PREFIX,
    idempotent_methods: proto::IDEMPOTENT_METHODS,
};

/// A connected, instrumented client of the service. Clones share the connection and the retry
/// throttle.
#[derive(Clone, Debug)]
pub struct Client {
    connection: Connection,
    inner: proto::ServiceClient<RetryChannel>,
}

impl From<Connection> for Client {
    fn from(connection: Connection) -> Self {
        Self {
            inner: proto::ServiceClient::new(connection.channel().clone()),
            connection,
        }
    }
}

impl Client {
    /// Connects to `address` (`http://host:port`), giving up after `timeout`.
    pub async fn connect(address: &str, timeout: Duration) -> Result<Self, ConnectError> {
        Ok(Connection::connect(SERVICE, address, timeout).await?.into())
    }

    /// Connects to `address`, over TLS with `tls` for an `https://` one (see
    /// [`Connection::connect_with_tls`]).
    pub async fn connect_with_tls(
        address: &str,
        timeout: Duration,
        tls: &Tls,
    ) -> Result<Self, ConnectError> {
        Ok(Connection::connect_with_tls(SERVICE, address, timeout, tls)
            .await?
            .into())
    }

    /// Connects as `balancing` says (see [`Connection::connect_balanced`]).
    pub async fn connect_balanced(
        address: &str,
        timeout: Duration,
        tls: &Tls,
        balancing: &Balancing,
    ) -> Result<Self, ConnectError> {
        Ok(
            Connection::connect_balanced(SERVICE, address, timeout, tls, balancing)
                .await?
                .into(),
        )
    }

    /// Balances over the replicas `discovery` finds (see [`Connection::connect_discovered`]).
    pub async fn connect_discovered(
        address: &str,
        timeout: Duration,
        tls: &Tls,
        balancing: &Balancing,
        discovery: Arc<dyn Discovery>,
    ) -> Result<Self, ConnectError> {
        Ok(
            Connection::connect_discovered(SERVICE, address, timeout, tls, balancing, discovery)
                .await?
                .into(),
        )
    }

    /// Wraps an existing channel; `host` and `port` name the server on the spans. Calls use the
    /// default [`CallSettings`].
    pub fn from_channel(channel: Channel, host: &str, port: u16) -> Self {
        Connection::from_channel(SERVICE, channel, host, port).into()
    }

    /// This client with other deadline and retry settings (and a throttle of its own).
    pub fn with_settings(self, settings: CallSettings) -> Result<Self, SettingsError> {
        Ok(self.connection.with_settings(settings)?.into())
    }

    /// A clone whose calls have `timeout` as their deadline, for one call or a few:
    /// `client.with_timeout(remaining).process_request(id)`. It shares the throttle.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        self.connection.with_timeout(timeout).into()
    }

    /// With balancing ([`Client::connect_balanced`]): how many replicas report SERVING now;
    /// `None` on a single connection.
    pub fn ready_replicas(&self) -> Option<usize> {
        self.connection.ready_replicas()
    }

    /// The shared connection under this client.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The generated client, over the connection: every method with deadlines and retries.
    pub fn generated(&self) -> proto::ServiceClient<RetryChannel> {
        self.inner.clone()
    }

    /// Calls `ProcessRequest` with `id`.
    pub async fn process_request(
        &mut self,
        id: impl Into<String>,
    ) -> Result<MyResponse, tonic::Status> {
        let id = id.into();
        let attributes = span_attributes(&id);
        let mut request = tonic::Request::new(MyRequest { id });
        request.extensions_mut().insert(attributes);
        Ok(self.inner.process_request(request).await?.into_inner())
    }
{%- unless is_init %}

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
        let attributes = span_attributes(&id);
        let mut request = tonic::Request::new(StreamRequest {
            id,
            count,
            interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
        });
        request.extensions_mut().insert(attributes);
        Ok(self.inner.stream_results(request).await?.into_inner())
    }
{%- endunless %}
}

/// What a request's extension puts on its CLIENT span: the request id it carries.
fn span_attributes(id: &str) -> SpanAttributes {
    SpanAttributes(vec![KeyValue::new(
        "request.id",
        telemetry::bounded(id).to_owned(),
    )])
}

#[cfg(test)]
mod tests {
    use super::SERVICE;

    #[test]
{%- if is_init %}
    fn the_example_rpc_is_idempotent() {
        assert!(SERVICE.is_idempotent("ProcessRequest"));
        assert!(!SERVICE.is_idempotent("Process"));
    }
{%- else %}
    fn the_example_rpc_is_idempotent_and_the_stream_is_not() {
        assert!(SERVICE.is_idempotent("ProcessRequest"));
        assert!(!SERVICE.is_idempotent("StreamResults"));
        assert!(!SERVICE.is_idempotent("Process"));
    }
{%- endif %}
}
