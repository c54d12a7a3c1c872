//! The client side: open a CLIENT span named `grpc.client.<Method>` under the caller's current
//! span, inject it as W3C `traceparent` (and baggage), and record the client metrics.
//!
//! A client that retries (gRFC A6) opens the call's span once per logical call, where its retry
//! loop is ([`GrpcClientLayer::start_call`]): an INTERNAL span `grpc.client.<Method>`. It marks
//! each attempt's request with [`Attempt`]; the layer then makes each physical attempt a CLIENT
//! child span `grpc.client.attempt.<Method>` (gRFC A72's attempt span) and injects the attempt's
//! context. Every server span's direct parent is so a CLIENT span, the pair trace backends draw
//! service graphs from (OpenTelemetry's HTTP conventions shape resends the same way: one CLIENT
//! span per physical request under the logical operation). Requests without the mark get one
//! CLIENT span, as a client without retries would.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use opentelemetry::KeyValue;
use opentelemetry_http::HeaderInjector;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{
    CallRecord, Instruments, MessageCounts, MethodLabels, ResponseFuture, RpcPath, Side,
    duration_histogram,
};

/// Extra span attributes for one call, set as a request extension by the caller
/// (`request.extensions_mut().insert(SpanAttributes(..))`): tonic carries extensions to the layer.
#[derive(Clone, Debug, Default)]
pub struct SpanAttributes(pub Vec<KeyValue>);

/// Instruments every call made through a tonic `Channel`:
/// `ServiceBuilder::new().layer(GrpcClientLayer::new(..)).service(channel)`.
#[derive(Clone, Debug)]
pub struct GrpcClientLayer {
    instruments: Arc<Instruments>,
    attempts: Arc<Instruments>,
    server_address: Arc<str>,
    server_port: u16,
}

impl GrpcClientLayer {
    /// `server_address`/`server_port` name the peer on every span; `metric_prefix` names the
    /// service's own client metrics (`<prefix>.client.calls.total`, ...).
    pub fn new(metric_prefix: &str, server_address: &str, server_port: u16) -> Self {
        let meter = opentelemetry::global::meter("telemetry");
        let server = || {
            [
                KeyValue::new(
                    super::attr::SERVER_ADDRESS,
                    opentelemetry::StringValue::from(Arc::<str>::from(server_address)),
                ),
                KeyValue::new(super::attr::SERVER_PORT, i64::from(server_port)),
            ]
        };
        let attempts = Instruments {
            side: Side::Client,
            rpc_duration: None,
            calls: meter
                .u64_counter(format!("{metric_prefix}.client.attempts.total"))
                .with_unit("{attempts}")
                .with_description("Attempts of outgoing service calls, retries included")
                .build(),
            duration: None,
            attempt: true,
            active: None,
            unfinished: std::sync::OnceLock::new(),
            server: Some(server()),
        };
        let instruments = Instruments {
            side: Side::Client,
            rpc_duration: Some(duration_histogram(
                &meter,
                "rpc.client.call.duration".to_owned(),
                "Duration of outgoing RPCs",
            )),
            calls: meter
                .u64_counter(format!("{metric_prefix}.client.calls.total"))
                .with_unit("{calls}")
                .with_description("Total number of outgoing service calls")
                .build(),
            duration: Some(duration_histogram(
                &meter,
                format!("{metric_prefix}.client.call.duration"),
                "Outgoing service call duration",
            )),
            attempt: false,
            active: None,
            unfinished: std::sync::OnceLock::new(),
            server: Some(server()),
        };
        Self {
            instruments: Arc::new(instruments),
            attempts: Arc::new(attempts),
            server_address: Arc::from(server_address),
            server_port,
        }
    }
}

impl GrpcClientLayer {
    /// Opens the INTERNAL span of one logical call of `path` (`/package.Service/Method`) under
    /// the caller's current span, with `attributes` on it: for a retry loop, which sends each
    /// attempt with an [`Attempt`] of the returned call (each attempt a CLIENT span below it). The call records its outcome and metrics when its
    /// committed attempt ends, or when [`ClientCall::end`] says how it ended without one.
    pub fn start_call(&self, path: &str, attributes: Vec<KeyValue>) -> ClientCall {
        let path = RpcPath::parse(path).unwrap_or_else(|| {
            RpcPath::parse("/_OTHER/_OTHER").unwrap_or_else(|| unreachable!("a well-formed path"))
        });
        let span = self.call_span(&path, "internal");
        for attribute in attributes {
            span.set_attribute(attribute.key, attribute.value);
        }
        let labels = Arc::new(MethodLabels::new(&path, Side::Client));
        let record = CallRecord::new(span.clone(), labels, Arc::clone(&self.instruments));
        ClientCall(Arc::new(CallShared {
            span,
            record: Mutex::new(Some(record)),
        }))
    }

    /// The span of a logical call: INTERNAL above attempt spans, CLIENT when it is the only one.
    fn call_span(&self, path: &RpcPath, kind: &'static str) -> tracing::Span {
        tracing::info_span!(
            "grpc.client",
            otel.name = format!("grpc.client.{}", path.method()),
            otel.kind = kind,
            rpc.system.name = "grpc",
            rpc.method = &*path.full,
            rpc.status_code = Empty,
            error.type = Empty,
            server.address = &*self.server_address,
            server.port = i64::from(self.server_port),
            network.peer.address = Empty,
            network.peer.port = Empty,
        )
    }
}

/// One logical call of a client that retries: its CLIENT span and, until an attempt commits, its
/// record. Cheap to clone (a reference count).
#[derive(Clone)]
pub struct ClientCall(Arc<CallShared>);

struct CallShared {
    span: tracing::Span,
    record: Mutex<Option<CallRecord>>,
}

impl std::fmt::Debug for ClientCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCall").finish_non_exhaustive()
    }
}

impl ClientCall {
    /// The call's INTERNAL span: the parent of its attempts (and of the backoff between them).
    pub fn span(&self) -> &tracing::Span {
        &self.0.span
    }

    /// Whether an attempt has committed (received response headers): gRFC A6 retries no more.
    pub fn committed(&self) -> bool {
        self.0
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none()
    }

    /// Ends the call with `status` unless an attempt committed (the committed attempt ends the
    /// call, at the end of its response): for a call whose attempts all failed before their
    /// response headers, or none could start, and for an attempt answered trailers-only.
    pub fn end(&self, status: &tonic::Status) {
        if let Some(mut record) = self.take() {
            record.finish(status.code(), status.message());
        }
    }

    fn take(&self) -> Option<CallRecord> {
        self.0
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Hands the call's record to the attempt that committed, counting that attempt's messages.
    pub(super) fn commit(&self, messages: &Arc<MessageCounts>) -> Option<Box<CallRecord>> {
        let mut record = self.take()?;
        record.messages = Arc::clone(messages);
        Some(Box::new(record))
    }
}

/// Names the replica the current call went to, on its CLIENT span (the attempt's, under a retry
/// loop): `network.peer.address` and `network.peer.port`, the address actually connected to, while
/// `server.address` stays the name the caller dialled, as the RPC conventions have it. For a
/// transport that picks the address itself (a balancer over a name's replicas): it calls this when
/// it hands the request to a replica, which is while the layer polls the call inside its span. Not
/// a metric attribute: one value per replica would multiply the client's series.
pub fn record_peer(peer: std::net::SocketAddr) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    span.record("network.peer.address", tracing::field::display(peer.ip()));
    span.record("network.peer.port", i64::from(peer.port()));
}

/// Marks a request as attempt `number` (from 1) of `call`, set by a retry loop as a request
/// extension: the layer gives it a CLIENT attempt span under the call's span.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// 1 for the first attempt, 2 for the first retry, ...
    pub number: u32,
    /// The logical call.
    pub call: ClientCall,
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
        let attempt = request.extensions_mut().remove::<Attempt>();
        let span = match &attempt {
            None => self.layer.call_span(&path, "client"),
            Some(attempt) => tracing::info_span!(
                parent: attempt.call.span(),
                "grpc.client.attempt",
                otel.name = format!("grpc.client.attempt.{}", path.method()),
                otel.kind = "client",
                rpc.system.name = "grpc",
                rpc.method = &*path.full,
                rpc.status_code = Empty,
                error.type = Empty,
                server.address = &*self.layer.server_address,
                server.port = i64::from(self.layer.server_port),
                network.peer.address = Empty,
                network.peer.port = Empty,
                grpc.attempt = i64::from(attempt.number),
            ),
        };
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
        match attempt {
            None => ResponseFuture::traced(
                &mut self.inner,
                request,
                span,
                labels,
                Arc::clone(&self.layer.instruments),
            ),
            Some(attempt) => ResponseFuture::traced(
                &mut self.inner,
                request,
                span,
                labels,
                Arc::clone(&self.layer.attempts),
            )
            .attempt_of(attempt.call),
        }
    }
}
