//! A typed client for the service: connects with a timeout, and every call goes through the
//! telemetry layer (CLIENT span, W3C trace propagation, client metrics).

pub mod load;

use std::time::Duration;

use opentelemetry::KeyValue;
use telemetry::grpc::{GrpcClientLayer, GrpcClientService, SpanAttributes};
use tonic::transport::{Channel, Endpoint};

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
}

/// A connected, instrumented client of the service.
#[derive(Clone, Debug)]
pub struct Client {
    inner: proto::ServiceClient<GrpcClientService<Channel>>,
}

impl Client {
    /// Connects to `address` (`http://host:port`), giving up after `timeout`.
    pub async fn connect(address: &str, timeout: Duration) -> Result<Self, ConnectError> {
        let invalid = |reason| ConnectError::InvalidAddress {
            address: address.to_owned(),
            reason,
        };
        let uri: http::Uri = address.parse().map_err(|_| invalid("not a URL"))?;
        let port = match uri.scheme_str() {
            Some("http") => uri.port_u16().unwrap_or(80),
            Some("https") => uri.port_u16().unwrap_or(443),
            _ => return Err(invalid("expected an http:// or https:// URL")),
        };
        let host = uri
            .host()
            .ok_or_else(|| invalid("the URL has no host"))?
            .to_owned();
        let endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|_| invalid("not a valid endpoint"))?
            .connect_timeout(timeout);
        let connect_error = |reason: String| ConnectError::Connect {
            address: address.to_owned(),
            reason,
        };
        let channel = tokio::time::timeout(timeout, endpoint.connect())
            .await
            .map_err(|_| connect_error(format!("no answer within {timeout:?}")))?
            .map_err(|e| connect_error(error_chain(&e)))?;
        Ok(Self::from_channel(channel, &host, port))
    }

    /// Wraps an existing channel; `host` and `port` name the server on the spans.
    pub fn from_channel(channel: Channel, host: &str, port: u16) -> Self {
        let layer = GrpcClientLayer::new(proto::METRIC_PREFIX, host, port);
        let service = tower::ServiceBuilder::new().layer(layer).service(channel);
        Self {
            inner: proto::ServiceClient::new(service),
        }
    }

    /// Calls `ProcessRequest` with `id`.
    pub async fn process_request(
        &mut self,
        id: impl Into<String>,
    ) -> Result<MyResponse, tonic::Status> {
        let id = id.into();
        let mut request = tonic::Request::new(MyRequest { id: id.clone() });
        request
            .extensions_mut()
            .insert(SpanAttributes(vec![KeyValue::new(
                "request.id",
                telemetry::bounded(&id).to_owned(),
            )]));
        self.inner
            .process_request(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Calls `StreamResults`: asks for `count` results of `id`, `interval` apart, and returns the
    /// stream of results (read it with `.message().await` until `None`; an error ends it). The
    /// call's CLIENT span lasts until the stream ends, or until it is dropped (CANCELLED).
    pub async fn stream_results(
        &mut self,
        id: impl Into<String>,
        count: u32,
        interval: Duration,
    ) -> Result<tonic::Streaming<StreamResult>, tonic::Status> {
        let id = id.into();
        let shown = telemetry::bounded(&id).to_owned();
        let mut request = tonic::Request::new(StreamRequest {
            id,
            count,
            interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
        });
        request
            .extensions_mut()
            .insert(SpanAttributes(vec![KeyValue::new("request.id", shown)]));
        self.inner
            .stream_results(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// "connection refused" is in the error's source, not its own message.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
