//! Tower layers that give every gRPC call a span, metrics and a status, on both sides of the wire,
//! so no handler or caller writes per-method telemetry. They follow the RPC semantic conventions
//! (stable since semconv v1.45), defined here because the Rust semconv crate predates them.

mod client;
mod server;
mod status;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, UpDownCounter};
use prost::bytes::Buf as _;
use tonic::Code;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub use client::{
    Attempt, ClientCall, GrpcClientLayer, GrpcClientService, SpanAttributes, record_peer,
};
pub use server::{GrpcServerLayer, GrpcServerService, Unfinished};
pub(crate) use status::StatusFromCode;

/// Semantic-convention attribute names.
mod attr {
    pub(super) const RPC_SYSTEM_NAME: &str = "rpc.system.name";
    pub(super) const RPC_METHOD: &str = "rpc.method";
    pub(super) const RPC_STATUS_CODE: &str = "rpc.status_code";
    pub(super) const ERROR_TYPE: &str = "error.type";
    pub(super) const SERVER_ADDRESS: &str = "server.address";
    pub(super) const SERVER_PORT: &str = "server.port";
    pub(super) const MESSAGE_SENT_COUNT: &str = "rpc.message.sent_count";
    pub(super) const MESSAGE_RECEIVED_COUNT: &str = "rpc.message.received_count";
}

/// How close to its deadline a call that ends without a status counts as expired: see
/// `CallRecord::expired`.
const DEADLINE_SLACK: std::time::Duration = std::time::Duration::from_millis(20);

/// `rpc.method` for calls to methods the server does not know: raw paths are unbounded.
const OTHER: &str = "_OTHER";

/// Buckets for durations in seconds, the semantic conventions' recommended boundaries for
/// `rpc.{server,client}.call.duration` (and HTTP's durations); the SDK's defaults are shaped for
/// milliseconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

pub(crate) fn duration_histogram(
    meter: &Meter,
    name: String,
    description: &'static str,
) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(DURATION_BUCKETS.to_vec())
        .build()
}

/// `/package.Service/Method` split into its parts.
#[derive(Clone, Debug)]
struct RpcPath {
    /// `package.Service/Method` as called.
    full: Arc<str>,
    /// Where `Service` ends in `full`.
    slash: usize,
    /// Whether the method is one the server implements. An unknown one is `_OTHER` on spans and
    /// metrics from the start: raw paths are caller input, and unbounded.
    known: bool,
}

impl RpcPath {
    fn parse(path: &str) -> Option<Self> {
        let full = path.strip_prefix('/')?;
        let slash = full.find('/')?;
        let ok = slash > 0 && slash + 1 < full.len() && !full[slash + 1..].contains('/');
        ok.then(|| Self {
            full: Arc::from(full),
            slash,
            known: true,
        })
    }

    fn service(&self) -> &str {
        &self.full[..self.slash]
    }

    fn method(&self) -> &str {
        if self.known {
            &self.full[self.slash + 1..]
        } else {
            OTHER
        }
    }

    /// The `rpc.method` attribute: the full name, or `_OTHER`.
    fn rpc_method(&self) -> Arc<str> {
        if self.known {
            Arc::clone(&self.full)
        } else {
            Arc::from(OTHER)
        }
    }
}

/// The metric attributes that name a method, built once per method where the methods are known
/// (the server's), so recording a call clones reference counts instead of allocating strings.
#[derive(Debug)]
struct MethodLabels {
    /// `rpc.method`: the full name, or `_OTHER`.
    rpc_method: KeyValue,
    /// The service's own metrics' `method` (server side) or `service` (client side).
    own: KeyValue,
}

impl MethodLabels {
    fn new(path: &RpcPath, side: Side) -> Self {
        let own = match side {
            Side::Server => KeyValue::new("method", path.method().to_owned()),
            Side::Client => KeyValue::new("service", path.service().to_owned()),
        };
        Self {
            rpc_method: KeyValue::new(
                attr::RPC_METHOD,
                opentelemetry::StringValue::from(path.rpc_method()),
            ),
            own,
        }
    }
}

/// The status code's name as the conventions spell it (`OK`, `INVALID_ARGUMENT`, ...).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// The instruments one side records into; built once per layer.
#[derive(Debug)]
struct Instruments {
    side: Side,
    /// `rpc.server.call.duration` / `rpc.client.call.duration` (none for a client's attempts).
    rpc_duration: Option<Histogram<f64>>,
    /// The service's own `<prefix>.requests.total` / `<prefix>.client.calls.total`.
    calls: Counter<u64>,
    /// The service's own `<prefix>.request.duration` / `<prefix>.client.call.duration` (none for a
    /// client's attempts).
    duration: Option<Histogram<f64>>,
    /// A client's attempts: counted, and their span gets the status, but no log line, message
    /// counts or histogram, which their call has (the cost of a healthy call's attempt stays one
    /// span and one counter).
    attempt: bool,
    /// The service's own `<prefix>.requests.active` (server only).
    active: Option<UpDownCounter<i64>>,
    /// What a call that ends before its status is known is recorded as, once the layer's owner
    /// has said ([`Unfinished::record_as`]); until then CANCELLED, or DEADLINE_EXCEEDED past the
    /// call's deadline.
    unfinished: OnceLock<(Code, &'static str)>,
    /// `server.address` and `server.port` for `rpc.client.call.duration` (client only): built once
    /// per channel, so a call clones a reference count and an integer.
    server: Option<[KeyValue; 2]>,
}

/// One call in flight: its span, start time and instruments. Finishing records the outcome once;
/// dropping an unfinished call (the peer went away) records it as CANCELLED, or as its layer's
/// owner said ([`Unfinished`]).
struct CallRecord {
    span: Span,
    start: Instant,
    labels: Arc<MethodLabels>,
    instruments: Arc<Instruments>,
    finished: bool,
    messages: Arc<MessageCounts>,
    /// When the call's `grpc-timeout` runs out: a call dropped or failed after it is
    /// DEADLINE_EXCEEDED (tonic's own timers say CANCELLED), not CANCELLED or UNAVAILABLE.
    deadline: Option<tokio::time::Instant>,
    /// The logical call a client attempt belongs to, once that attempt has committed (its
    /// response headers came): the call ends with it.
    call: Option<Box<CallRecord>>,
}

impl CallRecord {
    fn new(span: Span, labels: Arc<MethodLabels>, instruments: Arc<Instruments>) -> Self {
        if let Some(active) = &instruments.active {
            active.add(1, std::slice::from_ref(&labels.own));
        }
        Self {
            span,
            start: Instant::now(),
            labels,
            instruments,
            finished: false,
            messages: Arc::default(),
            deadline: None,
            call: None,
        }
    }

    /// Whether the call's deadline has passed, or nearly: a caller's clock started a network hop
    /// before this side's, so its cancel at its deadline arrives a little before this side's
    /// deadline; that cancel is the deadline's doing, not the caller leaving.
    fn expired(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| tokio::time::Instant::now() + DEADLINE_SLACK >= deadline)
    }

    fn finish_from_headers(&mut self, headers: &http::HeaderMap) -> bool {
        match tonic::Status::from_header_map(headers) {
            Some(status) => {
                self.finish(status.code(), status.message());
                true
            }
            None => false,
        }
    }

    fn finish(&mut self, code: Code, message: &str) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let seconds = self.start.elapsed().as_secs_f64();
        // The peer's message (the server's, on a client span) is text from outside: bounded.
        let message = crate::bounded(message);
        let side = self.instruments.side;
        let failed = code != Code::Ok;
        let code_name = code_name(code);

        self.span.record(attr::RPC_STATUS_CODE, code_name);
        // Server spans are errors only for the codes that mean the server failed; a client span
        // is an error for any code but OK (semconv docs/rpc/grpc.md). `error.type`, on the span
        // and in the metrics, follows the same rule.
        let span_error = match side {
            Side::Client => failed,
            Side::Server => matches!(
                code,
                Code::Unknown
                    | Code::DeadlineExceeded
                    | Code::Unimplemented
                    | Code::Internal
                    | Code::Unavailable
                    | Code::DataLoss
            ),
        };
        if span_error {
            self.span.record(attr::ERROR_TYPE, code_name);
            self.span
                .set_status(opentelemetry::trace::Status::error(format!(
                    "{code_name}: {message}"
                )));
        }

        if let Some(rpc_duration) = &self.instruments.rpc_duration {
            let rpc_attrs = [
                KeyValue::new(attr::RPC_SYSTEM_NAME, "grpc"),
                self.labels.rpc_method.clone(),
                KeyValue::new(attr::RPC_STATUS_CODE, code_name),
                KeyValue::new(attr::ERROR_TYPE, code_name),
            ];
            let len = if span_error { 4 } else { 3 };
            match &self.instruments.server {
                // The client's metric carries the server it called (conditionally required).
                Some([address, port]) => {
                    let [system, method, status, error_type] = rpc_attrs;
                    let all = [
                        system,
                        method,
                        status,
                        address.clone(),
                        port.clone(),
                        error_type,
                    ];
                    rpc_duration.record(seconds, &all[..len + 2]);
                }
                None => rpc_duration.record(seconds, &rpc_attrs[..len]),
            }
        }

        let error = if failed { "true" } else { "false" };
        let own_attrs = [self.labels.own.clone(), KeyValue::new("error", error)];
        if let Some(active) = &self.instruments.active {
            active.add(-1, &own_attrs[..1]);
        }
        self.instruments.calls.add(1, &own_attrs);
        if let Some(duration) = &self.instruments.duration {
            duration.record(seconds, &own_attrs);
        }

        if side == Side::Client && !self.instruments.attempt {
            let _entered = self.span.enter();
            if failed {
                tracing::error!("Service call failed: {code_name}: {message}");
            } else {
                tracing::info!("Service call completed in {seconds:.3}s");
            }
        }
        self.end_span();
        if let Some(mut call) = self.call.take() {
            call.finish(code, message);
        }
    }

    /// Ends the span now, at the end of the call, with `rpc.message.sent_count` and
    /// `rpc.message.received_count` for a call (not an attempt): the gRPC messages each way, counted
    /// by their framing as the bodies went by; two attributes, not an event per message, so a long
    /// stream does not grow its span. The OpenTelemetry span is ended directly: tracing-opentelemetry
    /// would take the end time from the span's last exit, for a stream when its response headers
    /// went out (or came in), and entering the span again to move it costs a span enter and exit
    /// (~3.5k instructions) per call. Releasing this handle then lets the tracing span close even
    /// while the caller still holds the finished stream.
    fn end_span(&mut self) {
        let span = std::mem::replace(&mut self.span, Span::none());
        if span.is_disabled() {
            return;
        }
        let context = span.context();
        let otel = opentelemetry::trace::TraceContextExt::span(&context);
        if !self.instruments.attempt {
            let request = self.messages.request.load(Ordering::Relaxed);
            let response = self.messages.response.load(Ordering::Relaxed);
            let (sent, received) = match self.instruments.side {
                Side::Server => (response, request),
                Side::Client => (request, response),
            };
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            otel.set_attribute(KeyValue::new(attr::MESSAGE_SENT_COUNT, count(sent)));
            otel.set_attribute(KeyValue::new(attr::MESSAGE_RECEIVED_COUNT, count(received)));
        }
        otel.end();
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The layer's owner knows why its calls end unfinished once it ends them itself; before,
        // the peer left.
        if let Some(&(code, message)) = self.instruments.unfinished.get() {
            self.finish(code, message);
        } else if self.expired() {
            self.finish(
                Code::DeadlineExceeded,
                "the deadline passed before the call ended",
            );
        } else {
            self.finish(
                Code::Cancelled,
                "the call ended before its status was known",
            );
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call's outcome when the gRPC status arrives in the
    /// trailers, so streaming responses are measured to their end, not to their first byte.
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        record: Option<CallRecord>,
        framing: Framing,
        carried: Carried,
    }
}

impl<B> std::fmt::Debug for TracedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedBody")
            .field("pending", &self.record.is_some())
            .finish()
    }
}

impl<B: Body> Body for TracedBody<B>
where
    B::Error: std::fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let _attached = this.carried.attach();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && let Some(record) = this.record.as_ref()
        {
            let messages = this.framing.feed(data.chunk());
            record
                .messages
                .response
                .fetch_add(messages, Ordering::Relaxed);
        }
        if let Some(record) = this.record {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref()
                        && !record.finish_from_headers(trailers)
                    {
                        record.finish(Code::Unknown, "trailers without grpc-status");
                    }
                }
                Some(Err(error)) => record.finish(Code::Unknown, &error.to_string()),
                None => record.finish(Code::Unknown, "the response ended without grpc-status"),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The gRPC messages of one call, each way, as its bodies went by.
#[derive(Debug, Default)]
struct MessageCounts {
    request: AtomicU64,
    response: AtomicU64,
}

/// Counts gRPC messages in a body's bytes by their framing: a 5-byte prefix (compressed flag,
/// big-endian length), then the message. Chunks may split prefixes and messages anywhere.
#[derive(Debug, Default)]
struct Framing {
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    skip: u64,
}

impl Framing {
    /// Feeds the next chunk; returns how many messages began in it.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut messages = 0;
        while !data.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == 5 {
                messages += 1;
                self.prefix_len = 0;
                let [_, a, b, c, d] = self.prefix;
                self.skip = u64::from(u32::from_be_bytes([a, b, c, d]));
            }
        }
        messages
    }
}

pin_project_lite::pin_project! {
    /// A request body that counts the gRPC messages it carries into the call's record.
    struct CountedBody<B> {
        #[pin]
        inner: B,
        framing: Framing,
        messages: Arc<MessageCounts>,
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let messages = this.framing.feed(data.chunk());
            this.messages.request.fetch_add(messages, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl CallRecord {
    /// Wraps a request body so its messages are counted into this call.
    fn count_request<B>(&self, body: B) -> tonic::body::Body
    where
        B: Body<Data = prost::bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        tonic::body::Body::new(CountedBody {
            inner: body,
            framing: Framing::default(),
            messages: Arc::clone(&self.messages),
        })
    }
}

/// The `grpc-timeout` header's duration: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`); anything else is no timeout.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The inner service's response future, run inside the call's span.
///
/// Not `tracing::Instrumented`: that enters the span once more to drop the future, ~3.5k
/// instructions a call, while a finished future holds nothing to drop. This one drops the inner
/// future inside the span as soon as it finishes, and enters the span on drop only for a future
/// that never finished (a cancelled call, whose handler's locals are dropped then).
pub struct ResponseFuture<F> {
    inner: Option<Pin<Box<F>>>,
    span: Span,
    record: Option<CallRecord>,
    carried: Carried,
    // A client attempt's logical call, which goes on with this attempt if it commits.
    call: Option<ClientCall>,
}

impl<F> Drop for ResponseFuture<F> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let _entered = self.span.enter();
            drop(inner);
        }
    }
}

/// The caller's OpenTelemetry context, carried through a call that has no span of its own (nothing
/// exported, nothing written: see `subscriber::build`), so that calls the handler makes downstream
/// continue the caller's trace and baggage as the spec's no-op API would.
#[derive(Debug, Default)]
struct Carried(Option<opentelemetry::Context>);

impl Carried {
    /// `context` when there is something in it to carry.
    fn new(context: opentelemetry::Context) -> Self {
        use opentelemetry::baggage::BaggageExt as _;
        use opentelemetry::trace::TraceContextExt as _;
        Self((context.has_active_span() || !context.baggage().is_empty()).then_some(context))
    }

    /// Makes the carried context current until the guard drops (for one poll).
    fn attach(&self) -> Option<opentelemetry::ContextGuard> {
        self.0.as_ref().map(|context| context.clone().attach())
    }

    fn take(&mut self) -> Self {
        Self(self.0.take())
    }
}

impl<F> ResponseFuture<F> {
    /// A call the layer does not instrument (health checks, reflection, non-gRPC paths).
    fn untraced(inner: F) -> Self {
        Self {
            inner: Some(Box::pin(inner)),
            span: Span::none(),
            record: None,
            carried: Carried::default(),
            call: None,
        }
    }

    /// Calls `inner` with `request` as one instrumented call: run inside `span`, its request
    /// messages counted, its outcome recorded in `instruments` under `labels`. The call's
    /// `grpc-timeout` only classifies how it ended (see [`CallRecord::expired`]); enforcing it is
    /// the server's deadline layer's job, and the client channel's.
    fn traced<S, ReqBody, ResBody>(
        inner: &mut S,
        request: http::Request<ReqBody>,
        span: Span,
        labels: Arc<MethodLabels>,
        instruments: Arc<Instruments>,
    ) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<ResBody>,
                Future = F,
            >,
        ReqBody: Body<Data = prost::bytes::Bytes> + Send + 'static,
        ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut record = CallRecord::new(span.clone(), labels, instruments);
        let deadline =
            grpc_timeout(request.headers()).map(|timeout| tokio::time::Instant::now() + timeout);
        record.deadline = deadline;
        let inner = inner.call(request.map(|body| record.count_request(body)));
        Self {
            inner: Some(Box::pin(inner)),
            span,
            record: Some(record),
            carried: Carried::default(),
            call: None,
        }
    }

    /// Makes this call an attempt of `call`: if it commits (response headers, not a
    /// trailers-only status), the logical call ends when this attempt does.
    fn attempt_of(mut self, call: ClientCall) -> Self {
        self.call = Some(call);
        self
    }

    /// Runs the call, and its response body, with `context` current: for calls without a span.
    fn carrying(mut self, context: Carried) -> Self {
        self.carried = context;
        self
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: std::fmt::Display,
{
    type Output = Result<http::Response<TracedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = {
            let _attached = this.carried.attach();
            let _entered = this.span.enter();
            let Some(inner) = this.inner.as_mut() else {
                unreachable!("a response future is not polled after it completed")
            };
            let result = ready!(inner.as_mut().poll(cx));
            this.inner = None;
            result
        };
        let mut record = this.record.take();
        Poll::Ready(match result {
            Ok(response) => {
                // Errors arrive "trailers-only": the status is in the headers and the body is empty.
                if record
                    .as_mut()
                    .is_some_and(|r| r.finish_from_headers(response.headers()))
                {
                    record = None;
                } else if let Some(call) = this.call.take()
                    && let Some(record) = record.as_mut()
                {
                    record.call = call.commit(&record.messages);
                }
                let carried = this.carried.take();
                Ok(response.map(|inner| TracedBody {
                    inner,
                    record,
                    framing: Framing::default(),
                    carried,
                }))
            }
            Err(error) => {
                if let Some(mut record) = record {
                    let code = if record.expired() {
                        Code::DeadlineExceeded
                    } else {
                        Code::Unavailable
                    };
                    record.finish(code, &error.to_string());
                }
                Err(error)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_into_service_and_method() {
        let path = RpcPath::parse("/myservice.v1.MyService/ProcessRequest").expect("valid path");
        assert_eq!(&*path.full, "myservice.v1.MyService/ProcessRequest");
        assert_eq!(path.service(), "myservice.v1.MyService");
        assert_eq!(path.method(), "ProcessRequest");
        for bad in ["", "/", "/x", "/x/", "//m", "/a/b/c", "a/b"] {
            assert!(RpcPath::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn messages_are_counted_by_their_framing_across_chunks() {
        let message = |len: u8| {
            let mut bytes = vec![0, 0, 0, 0, len];
            bytes.extend(std::iter::repeat_n(7, usize::from(len)));
            bytes
        };
        let stream: Vec<u8> = [message(3), message(0), message(200), message(1)].concat();
        let whole = Framing::default().feed(&stream);
        assert_eq!(whole, 4);
        for size in [1, 2, 4, 5, 6, 13] {
            let mut framing = Framing::default();
            let split: u64 = stream.chunks(size).map(|c| framing.feed(c)).sum();
            assert_eq!(split, 4, "chunks of {size}");
        }
    }

    #[test]
    fn grpc_timeouts_parse_with_their_unit() {
        use std::time::Duration;
        let timeout = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", http::HeaderValue::from_static(value));
            grpc_timeout(&headers)
        };
        assert_eq!(timeout("200m"), Some(Duration::from_millis(200)));
        assert_eq!(timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "100", "123456789m", "10x", "-1S", "1.5S"] {
            assert_eq!(timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn code_names_follow_the_conventions() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
    }
}
