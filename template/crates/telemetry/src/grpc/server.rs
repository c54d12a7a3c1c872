//! The server side: continue the caller's trace from the W3C headers, open a SERVER span named
//! `grpc.server.<Method>`, and record the RPC metrics, for every method of every service.

use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry_http::HeaderExtractor;
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{CallRecord, Instruments, ResponseFuture, RpcPath, Side, duration_histogram};

/// Services that are plumbing, not traffic: neither traced nor counted.
const UNTRACED_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Instruments every call a tonic server receives; add it with `Server::builder().layer(..)`.
#[derive(Clone, Debug)]
pub struct GrpcServerLayer {
    instruments: Arc<Instruments>,
}

impl GrpcServerLayer {
    /// `metric_prefix` names the seed-style metrics (`<prefix>.requests.total`, ...). Build it
    /// after `telemetry::init`, which installs the meter provider it records into.
    pub fn new(metric_prefix: &str) -> Self {
        let meter = opentelemetry::global::meter("telemetry");
        let instruments = Instruments {
            side: Side::Server,
            rpc_duration: duration_histogram(
                &meter,
                "rpc.server.call.duration".to_owned(),
                "Duration of incoming RPCs",
            ),
            calls: meter
                .u64_counter(format!("{metric_prefix}.requests.total"))
                .with_unit("{requests}")
                .with_description("Total number of requests processed")
                .build(),
            duration: duration_histogram(
                &meter,
                format!("{metric_prefix}.request.duration"),
                "Request processing duration",
            ),
            active: Some(
                meter
                    .i64_up_down_counter(format!("{metric_prefix}.requests.active"))
                    .with_unit("{requests}")
                    .with_description("Number of requests currently being processed")
                    .build(),
            ),
        };
        Self {
            instruments: Arc::new(instruments),
        }
    }
}

impl<S> Layer<S> for GrpcServerLayer {
    type Service = GrpcServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerService {
            inner,
            instruments: Arc::clone(&self.instruments),
        }
    }
}

/// The service [`GrpcServerLayer`] wraps around the server's routes.
#[derive(Clone, Debug)]
pub struct GrpcServerService<S> {
    inner: S,
    instruments: Arc<Instruments>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcServerService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: std::fmt::Display,
{
    type Response = http::Response<super::TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = RpcPath::parse(request.uri().path());
        let traced = path
            .as_ref()
            .is_some_and(|p| !UNTRACED_SERVICES.contains(&p.service()));
        let Some(path) = path.filter(|_| traced) else {
            return ResponseFuture {
                inner: self.inner.call(request).instrument(tracing::Span::none()),
                record: None,
            };
        };

        let span = tracing::info_span!(
            "grpc.server",
            otel.name = format!("grpc.server.{}", path.method()),
            otel.kind = "server",
            rpc.system.name = "grpc",
            rpc.method = &*path.full,
            rpc.status_code = Empty,
            error.type = Empty,
            network.peer.address = Empty,
            network.peer.port = Empty,
        );
        if let Some(peer) = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr())
        {
            span.record("network.peer.address", peer.ip().to_string());
            span.record("network.peer.port", peer.port());
        }
        // A missing or malformed traceparent yields an empty context: the span starts a new trace.
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        if let Err(error) = span.set_parent(parent) {
            tracing::debug!(%error, "could not continue the caller's trace");
        }

        let record = CallRecord::new(span.clone(), path, Arc::clone(&self.instruments));
        ResponseFuture {
            inner: self.inner.call(request).instrument(span),
            record: Some(record),
        }
    }
}
