//! The client side: open a CLIENT span named `grpc.client.<Method>` under the caller's current
//! span, inject it as W3C `traceparent` (and baggage), and record the client metrics.

use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry::KeyValue;
use opentelemetry_http::HeaderInjector;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{Instruments, MethodLabels, ResponseFuture, RpcPath, Side, duration_histogram};

/// Extra span attributes for one call, set as a request extension by the caller
/// (`request.extensions_mut().insert(SpanAttributes(..))`): tonic carries extensions to the layer.
#[derive(Clone, Debug, Default)]
pub struct SpanAttributes(pub Vec<KeyValue>);

/// Instruments every call made through a tonic `Channel`:
/// `ServiceBuilder::new().layer(GrpcClientLayer::new(..)).service(channel)`.
#[derive(Clone, Debug)]
pub struct GrpcClientLayer {
    instruments: Arc<Instruments>,
    server_address: Arc<str>,
    server_port: u16,
}

impl GrpcClientLayer {
    /// `server_address`/`server_port` name the peer on every span; `metric_prefix` names the
    /// seed-style client metrics (`<prefix>.client.calls.total`, ...).
    pub fn new(metric_prefix: &str, server_address: &str, server_port: u16) -> Self {
        let meter = opentelemetry::global::meter("telemetry");
        let instruments = Instruments {
            side: Side::Client,
            rpc_duration: duration_histogram(
                &meter,
                "rpc.client.call.duration".to_owned(),
                "Duration of outgoing RPCs",
            ),
            calls: meter
                .u64_counter(format!("{metric_prefix}.client.calls.total"))
                .with_unit("{calls}")
                .with_description("Total number of outgoing service calls")
                .build(),
            duration: duration_histogram(
                &meter,
                format!("{metric_prefix}.client.call.duration"),
                "Outgoing service call duration",
            ),
            active: None,
            open: None,
            server: Some([
                KeyValue::new(
                    super::attr::SERVER_ADDRESS,
                    opentelemetry::StringValue::from(Arc::<str>::from(server_address)),
                ),
                KeyValue::new(super::attr::SERVER_PORT, i64::from(server_port)),
            ]),
        };
        Self {
            instruments: Arc::new(instruments),
            server_address: Arc::from(server_address),
            server_port,
        }
    }
}

impl<S> Layer<S> for GrpcClientLayer {
    type Service = GrpcClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcClientService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`GrpcClientLayer`] wraps around a channel.
#[derive(Clone, Debug)]
pub struct GrpcClientService<S> {
    inner: S,
    layer: GrpcClientLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcClientService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    S::Error: std::fmt::Display,
    ReqBody: http_body::Body<Data = prost::bytes::Bytes> + Send + 'static,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<super::TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let Some(path) = RpcPath::parse(request.uri().path()) else {
            return ResponseFuture::untraced(self.inner.call(request.map(tonic::body::Body::new)));
        };
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = format!("grpc.client.{}", path.method()),
            otel.kind = "client",
            rpc.system.name = "grpc",
            rpc.method = &*path.full,
            rpc.status_code = Empty,
            error.type = Empty,
            server.address = &*self.layer.server_address,
            server.port = i64::from(self.layer.server_port),
        );
        if let Some(SpanAttributes(attributes)) =
            request.extensions_mut().remove::<SpanAttributes>()
        {
            for attribute in attributes {
                span.set_attribute(attribute.key, attribute.value);
            }
        }
        // Reading the context starts the span, so the injected ids are the exported ones. Without
        // spans (nothing exported or written), the server layer has made the caller's context
        // current: it goes on as it came.
        let context = if span.is_disabled() {
            opentelemetry::Context::current()
        } else {
            span.context()
        };
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(request.headers_mut()));
        });
        span.in_scope(|| {
            tracing::info!(
                "Calling service at {}:{}",
                self.layer.server_address,
                self.layer.server_port
            );
        });
        let labels = Arc::new(MethodLabels::new(&path, Side::Client));
        ResponseFuture::traced(
            &mut self.inner,
            request,
            span,
            labels,
            Arc::clone(&self.layer.instruments),
        )
    }
}
