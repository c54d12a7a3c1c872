//! The test service and its client, hand-written over tonic's generic `Grpc` with `u64` messages
//! (`UInt64Value`): `Get` (unary) and `Sum` (client streaming), idempotent by the test's
//! [`SERVICE`], and `Watch` (server streaming, not idempotent; empty, or endless). Each call is answered as the test
//! scripts it, and recorded. The client side is tonic's generic client over the connection's
//! channel, as a generated client is: no wrapper.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use grpc_channel::{Connection, ServiceInfo};
use opentelemetry::KeyValue;
use prost::Message as _;
use telemetry::grpc::SpanAttributes;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// The test service as the shared machinery knows it: `Get` and `Sum` may be retried.
pub(crate) const SERVICE: ServiceInfo = ServiceInfo {
    grpc_service: "channel.v1.Test",
    metric_prefix: "channel",
    idempotent_methods: &["channel.v1.Test/Get", "channel.v1.Test/Sum"],
};

/// What a scripted server saw of one call.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) previous_attempts: Option<String>,
    pub(crate) timeout: Option<Duration>,
}

/// A server that answers each call with the next scripted status (or `always`), then OK; a
/// handler that takes `latency`, holding a guard whose drop says its work was dropped.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scripted {
    pub(crate) script: Arc<Mutex<VecDeque<Status>>>,
    pub(crate) always: Option<Code>,
    pub(crate) latency: Duration,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    /// Set when a handler's work was dropped before it finished.
    pub(crate) dropped: Arc<AtomicBool>,
    pub(crate) finished: Arc<AtomicUsize>,
    pub(crate) dropped_tx: Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
    /// `Get` waits for a permit of this gate before answering (after being seen): the test
    /// holds calls open on this server as long as it wants.
    pub(crate) gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Gets a permit each time a call is seen.
    pub(crate) arrived: Arc<tokio::sync::Notify>,
    /// `Watch` streams a message every 10 ms until the caller goes away, whatever its deadline
    /// (the replica has no deadline layer: a server this workspace did not make).
    pub(crate) endless: bool,
}

impl Scripted {
    pub(crate) fn failing(statuses: impl IntoIterator<Item = Status>) -> Self {
        Self {
            script: Arc::new(Mutex::new(statuses.into_iter().collect())),
            ..Self::default()
        }
    }

    /// Every call seen so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many calls were seen since the last time asked.
    pub(crate) fn take(&self) -> usize {
        std::mem::take(&mut *self.seen.lock().unwrap()).len()
    }

    fn answer<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let metadata = request.metadata();
        self.seen.lock().unwrap().push(Seen {
            previous_attempts: metadata
                .get("grpc-previous-rpc-attempts")
                .map(|v| v.to_str().unwrap().to_owned()),
            timeout: telemetry::grpc::grpc_timeout(&metadata.clone().into_headers()),
        });
        self.arrived.notify_one();
        if let Some(code) = self.always {
            return Err(Status::new(code, "scripted"));
        }
        match self.script.lock().unwrap().pop_front() {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }

    /// `Get`: the scripted answer, then `latency` of work, then the request's number back.
    async fn get(self, request: Request<u64>) -> Result<Response<u64>, Status> {
        self.answer(&request)?;
        if let Some(gate) = &self.gate {
            let _permit = gate
                .acquire()
                .await
                .map_err(|_| Status::aborted("the gate closed"))?;
        }
        if !self.latency.is_zero() {
            let mut guard = WorkGuard {
                scripted: self.clone(),
                done: false,
            };
            tokio::time::sleep(self.latency).await;
            guard.done = true;
            self.finished.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Response::new(request.into_inner()))
    }
}

/// Says, when dropped before `done`, that the handler's work was dropped.
struct WorkGuard {
    scripted: Scripted,
    done: bool,
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if !self.done {
            self.scripted.dropped.store(true, Ordering::SeqCst);
            if let Some(tx) = self.scripted.dropped_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    }
}

type MessageStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<u64, Status>> + Send>>;

impl tonic::server::NamedService for Scripted {
    const NAME: &'static str = SERVICE.grpc_service;
}

impl tower::Service<http::Request<tonic::body::Body>> for Scripted {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let scripted = self.clone();
        let method = request.uri().path().rsplit('/').next().map(str::to_owned);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<u64, u64>::default());
            Ok(if method.as_deref() == Some("Sum") {
                // The whole stream is read before the scripted answer: what was sent is known.
                let handler = tower::service_fn(move |r: Request<Streaming<u64>>| {
                    let answer = scripted.answer(&r);
                    async move {
                        let mut numbers = r.into_inner();
                        let mut sum = 0;
                        while let Some(n) = numbers.message().await? {
                            sum += n;
                        }
                        answer?;
                        Ok::<_, Status>(Response::new(sum))
                    }
                });
                grpc.client_streaming(handler, request).await
            } else if method.as_deref() == Some("Watch") {
                // An empty stream once the scripted answer lets it start.
                let handler = tower::service_fn(move |r: Request<u64>| {
                    let answer = scripted.answer(&r);
                    let endless = scripted.endless;
                    async move {
                        answer?;
                        let stream: MessageStream = if endless {
                            let ticks = tokio_stream::wrappers::IntervalStream::new(
                                tokio::time::interval(Duration::from_millis(10)),
                            );
                            Box::pin(tokio_stream::StreamExt::map(ticks, |_| Ok(1)))
                        } else {
                            Box::pin(tokio_stream::empty())
                        };
                        Ok::<_, Status>(Response::new(stream))
                    }
                });
                grpc.server_streaming(handler, request).await
            } else {
                let handler = tower::service_fn(move |r: Request<u64>| scripted.clone().get(r));
                grpc.unary(handler, request).await
            })
        })
    }
}

/// The test service's descriptor set, for the server's telemetry layer (which names the methods
/// it knows on spans and metrics).
pub(crate) fn descriptor_set() -> Vec<u8> {
    use prost_types::{
        FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
    };
    let (package, name) = SERVICE.grpc_service.rsplit_once('.').unwrap();
    let method = |name: &str| MethodDescriptorProto {
        name: Some(name.to_owned()),
        ..MethodDescriptorProto::default()
    };
    FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("test.proto".to_owned()),
            package: Some(package.to_owned()),
            service: vec![ServiceDescriptorProto {
                name: Some(name.to_owned()),
                method: vec![method("Get"), method("Sum"), method("Watch")],
                ..ServiceDescriptorProto::default()
            }],
            ..FileDescriptorProto::default()
        }],
    }
    .encode_to_vec()
}

/// A server of `service`, stopped when dropped.
pub(crate) struct Replica {
    pub(crate) service: Scripted,
    pub(crate) address: SocketAddr,
    pub(crate) health: tonic_health::server::HealthReporter,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Replica {
    /// Serves `service` on `ip:port` (port 0: any), over TLS with `tls`, behind the telemetry
    /// layer, with a health service that reports SERVING.
    pub(crate) async fn start(
        service: Scripted,
        ip: &str,
        port: u16,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Self {
        // The test binary's telemetry is installed before any span is made: a span made while
        // another test installs it would come from tracing's no-op subscriber, and its id would
        // mean nothing to the real one (a child made after: "no span exists with that ID").
        crate::helpers::world();
        let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(SERVICE.grpc_service, tonic_health::ServingStatus::Serving)
            .await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let set = descriptor_set();
        let layer = telemetry::grpc::GrpcServerLayer::new(SERVICE.metric_prefix, &[&set]);
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        tokio::spawn(
            builder
                .layer(layer)
                .add_service(health_service)
                .add_service(service.clone())
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        Self {
            service,
            address,
            health,
            _stop: stop,
        }
    }

    /// `http://ip:port`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

fn path(method: &str) -> PathAndQuery {
    PathAndQuery::try_from(format!("/{}/{method}", SERVICE.grpc_service)).unwrap()
}

fn not_ready(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Status {
    Status::unknown(format!("the channel is not ready: {}", error.into()))
}

/// `message` in a request whose CLIENT span carries `id` as `request.id`.
fn request<M>(id: &str, message: M) -> Request<M> {
    let mut request = Request::new(message);
    request
        .extensions_mut()
        .insert(SpanAttributes(vec![KeyValue::new(
            "request.id",
            id.to_owned(),
        )]));
    request
}

/// Calls `Get` with `id` through tonic's generic client over the connection's channel, as a
/// generated client does: no wrapper.
pub(crate) async fn get(connection: &Connection, id: &str) -> Result<u64, Status> {
    crate::helpers::world(); // as in `Replica::start`
    let mut grpc = tonic::client::Grpc::new(connection.channel().clone());
    grpc.ready().await.map_err(not_ready)?;
    let response = grpc
        .unary(request(id, 7), path("Get"), ProstCodec::default())
        .await?;
    Ok(response.into_inner())
}

/// Calls `Watch` with `id`: the stream of its messages.
pub(crate) async fn watch(connection: &Connection, id: &str) -> Result<Streaming<u64>, Status> {
    crate::helpers::world(); // as in `Replica::start`
    let mut grpc = tonic::client::Grpc::new(connection.channel().clone());
    grpc.ready().await.map_err(not_ready)?;
    let response = grpc
        .server_streaming(request(id, 7), path("Watch"), ProstCodec::default())
        .await?;
    Ok(response.into_inner())
}

/// Calls `Sum` with the stream of `numbers`: their sum.
pub(crate) async fn sum(
    connection: &Connection,
    id: &str,
    numbers: impl Iterator<Item = u64> + Send + 'static,
) -> Result<u64, Status> {
    crate::helpers::world(); // as in `Replica::start`
    let mut grpc = tonic::client::Grpc::new(connection.channel().clone());
    grpc.ready().await.map_err(not_ready)?;
    let stream = tokio_stream::iter(numbers);
    let response = grpc
        .client_streaming(request(id, stream), path("Sum"), ProstCodec::default())
        .await?;
    Ok(response.into_inner())
}
