//! The transport under the telemetry layer: one tonic `Channel` (`--lb none`, or a channel the
//! caller made), or our balancer over the replicas [`crate::discovery`] keeps healthy.
//!
//! The balancer is tower's power of two choices ([`tower::balance::p2c::Balance`]) over one lazy
//! tonic `Channel` per replica, each measured by its calls in flight
//! ([`tower::load::PendingRequests`], a call counting until its response body ends, so a stream
//! counts while it runs): of two replicas drawn at random, the call goes to the one with fewer
//! calls outstanding, so a replica that slows down gets fewer new calls. tonic's own balance
//! channel draws the same two but its connections report no load, which makes its choice random,
//! and it does not say which replica a call went to. Here each replica names itself on the call's
//! span when it takes the call ([`telemetry::grpc::record_peer`]): `network.peer.address` and
//! `network.peer.port` of the attempt's CLIENT span.
//!
//! The balancer is shared by every clone of the connection behind a mutex held only to choose a
//! replica and hand it the request (no task in between, as a `Buffer` would put); the call then
//! runs on the replica's channel outside it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::Service;
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::completion::TrackCompletion;
use tower::load::pending_requests::{Handle, PendingRequests};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Request = http::Request<Body>;

/// Why a call found no transport: the replica's connection failed (connection refused, reset,
/// TLS), or the balancer could not take the replicas' changes.
#[derive(Debug)]
pub struct TransportError(BoxError);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// The body of a response: the transport's, holding the replica's in-flight count until it ends.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Body,
    in_flight: Option<Handle>,
}

impl http_body::Body for ResponseBody {
    type Data = <Body as http_body::Body>::Data;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        // The trailers, an error or the end: the call no longer loads its replica.
        if !matches!(&frame, Some(Ok(frame)) if frame.is_data()) {
            self.in_flight = None;
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

/// Counts a call in flight on its replica until the end of its response body.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UntilBodyEnds;

impl TrackCompletion<Handle, http::Response<Body>> for UntilBodyEnds {
    type Output = http::Response<ResponseBody>;

    fn track_completion(&self, handle: Handle, response: http::Response<Body>) -> Self::Output {
        response.map(|inner| ResponseBody {
            inner,
            in_flight: Some(handle),
        })
    }
}

/// One replica in the balancer: its channel, and its address to name on the calls it takes.
#[derive(Clone, Debug)]
pub(crate) struct Replica {
    channel: Channel,
    address: SocketAddr,
}

impl Service<Request> for Replica {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = tonic::transport::channel::ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        telemetry::grpc::record_peer(self.address);
        self.channel.call(request)
    }
}

/// The changes discovery sends, each new replica connected (lazily: on its first call).
#[derive(Debug)]
pub(crate) struct Changes(mpsc::Receiver<Change<SocketAddr, Endpoint>>);

type Loaded = PendingRequests<Replica, UntilBodyEnds>;

impl tokio_stream::Stream for Changes {
    type Item = Result<Change<SocketAddr, Loaded>, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(ready!(self.0.poll_recv(cx)).map(|change| {
            Ok(match change {
                Change::Insert(address, endpoint) => {
                    let replica = Replica {
                        channel: endpoint.connect_lazy(),
                        address,
                    };
                    Change::Insert(address, PendingRequests::new(replica, UntilBodyEnds))
                }
                Change::Remove(address) => Change::Remove(address),
            })
        }))
    }
}

/// The balancer, and the calls waiting for a replica to be ready.
struct Shared {
    balance: Balance<Changes, Request>,
    /// Calls waiting while no replica is ready: the balancer keeps one waker only (the last
    /// caller's), so the caller it wakes wakes these.
    waiting: Vec<Waker>,
}

impl Shared {
    fn wake_all(&mut self) {
        for waker in self.waiting.drain(..) {
            waker.wake();
        }
    }
}

/// The power-of-two-choices balancer over the replicas discovery sends: see the module's doc.
#[derive(Clone)]
pub(crate) struct Balanced(Arc<Mutex<Shared>>);

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced").finish_non_exhaustive()
    }
}

impl Balanced {
    /// The balancer, and where to send it the replicas to balance over (`Change::Insert` with
    /// the replica's endpoint, `Change::Remove`); it ends when every clone is dropped.
    pub(crate) fn new(capacity: usize) -> (Self, mpsc::Sender<Change<SocketAddr, Endpoint>>) {
        let (changes, received) = mpsc::channel(capacity);
        let shared = Shared {
            balance: Balance::new(Changes(received)),
            waiting: Vec::new(),
        };
        (Self(Arc::new(Mutex::new(shared))), changes)
    }
}

/// The connection's transport: one channel, or the balancer.
#[derive(Clone, Debug)]
pub struct Transport(Kind);

#[derive(Clone, Debug)]
enum Kind {
    Single(Channel),
    Balanced(Balanced),
}

impl Transport {
    pub(crate) fn single(channel: Channel) -> Self {
        Self(Kind::Single(channel))
    }

    pub(crate) fn balanced(balanced: Balanced) -> Self {
        Self(Kind::Balanced(balanced))
    }
}

impl Service<Request> for Transport {
    type Response = http::Response<ResponseBody>;
    type Error = TransportError;
    type Future = TransportFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        match &mut self.0 {
            Kind::Single(channel) => channel.poll_ready(cx).map_err(|e| TransportError(e.into())),
            // A replica is chosen when the call is polled: see `Choosing`.
            Kind::Balanced(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: Request) -> TransportFuture {
        TransportFuture {
            state: match &mut self.0 {
                Kind::Single(channel) => State::Single {
                    inner: channel.call(request),
                },
                Kind::Balanced(Balanced(shared)) => State::Choosing {
                    choosing: Choosing {
                        shared: Arc::clone(shared),
                        request: Some(request),
                        waiting: false,
                    },
                },
            },
        }
    }
}

/// A call waiting for the balancer to choose a replica.
struct Choosing {
    shared: Arc<Mutex<Shared>>,
    request: Option<Request>,
    /// Whether this call's waker may be the one the balancer keeps.
    waiting: bool,
}

impl Drop for Choosing {
    fn drop(&mut self) {
        // A call given up while waiting may hold the balancer's only waker: another waiting call
        // takes its place.
        if self.waiting {
            self.shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wake_all();
        }
    }
}

type BalancedFuture = <Balance<Changes, Request> as Service<Request>>::Future;

pin_project_lite::pin_project! {
    /// A call through [`Transport`].
    pub struct TransportFuture {
        #[pin]
        state: State,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProjection]
    enum State {
        Single { #[pin] inner: tonic::transport::channel::ResponseFuture },
        Choosing { choosing: Choosing },
        Balanced { #[pin] inner: BalancedFuture },
    }
}

impl std::fmt::Debug for TransportFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportFuture").finish_non_exhaustive()
    }
}

impl Future for TransportFuture {
    type Output = Result<http::Response<ResponseBody>, TransportError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let inner = match state.as_mut().project() {
                StateProjection::Single { inner } => {
                    return inner.poll(cx).map(|result| match result {
                        Ok(response) => Ok(response.map(|inner| ResponseBody {
                            inner,
                            in_flight: None,
                        })),
                        Err(e) => Err(TransportError(e.into())),
                    });
                }
                StateProjection::Balanced { inner } => {
                    return inner.poll(cx).map_err(TransportError);
                }
                StateProjection::Choosing { choosing } => {
                    let mut shared = choosing
                        .shared
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    match shared.balance.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            let Some(request) = choosing.request.take() else {
                                unreachable!("a call chooses once")
                            };
                            let inner = shared.balance.call(request);
                            // A replica is ready: the calls waiting may find one too.
                            shared.wake_all();
                            choosing.waiting = false;
                            inner
                        }
                        Poll::Ready(Err(error)) => {
                            shared.wake_all();
                            choosing.waiting = false;
                            return Poll::Ready(Err(TransportError(error)));
                        }
                        Poll::Pending => {
                            if !shared.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                                shared.waiting.push(cx.waker().clone());
                            }
                            choosing.waiting = true;
                            return Poll::Pending;
                        }
                    }
                }
            };
            state.set(State::Balanced { inner });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test, with its location.
mod tests {
    use std::time::Duration;

    use super::*;

    /// A gRPC server with only the health service, on 127.0.0.1 (any port).
    async fn server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address
    }

    /// `grpc.health.v1.Health/Check` of the server's overall health: an empty message.
    fn check(address: SocketAddr) -> Request {
        let message = http_body_util::Full::new(prost::bytes::Bytes::from_static(&[0; 5]));
        http::Request::builder()
            .method("POST")
            .uri(format!("http://{address}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Body::new(message))
            .unwrap()
    }

    /// `n` calls, each in a task of its own, once each has been polled and found no replica (in
    /// the order they were polled); they end with the HTTP status of their answer.
    async fn waiting_calls(
        transport: &Transport,
        address: SocketAddr,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Result<http::StatusCode, TransportError>>> {
        let (polled, mut pending) = mpsc::channel(n);
        let mut calls = Vec::new();
        for _ in 0..n {
            let mut transport = transport.clone();
            let polled = polled.clone();
            calls.push(tokio::spawn(async move {
                let mut call = std::pin::pin!(transport.call(check(address)));
                let first =
                    std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending()))
                        .await;
                polled.send(first).await.unwrap();
                call.await.map(|response| response.status())
            }));
            // One at a time: each registers its waker after the one before.
            assert!(
                pending.recv().await.unwrap(),
                "a call went ahead with no replica"
            );
        }
        calls
    }

    fn insert(address: SocketAddr) -> Change<SocketAddr, Endpoint> {
        Change::Insert(
            address,
            Endpoint::from_shared(format!("http://{address}")).unwrap(),
        )
    }

    #[tokio::test]
    async fn calls_waiting_for_a_replica_are_all_served_once_one_comes() {
        let address = server().await;
        let (balanced, changes) = Balanced::new(8);
        let transport = Transport::balanced(balanced);
        // tower's balancer keeps the waker of the last call that polled it only.
        let calls = waiting_calls(&transport, address, 3).await;

        changes.send(insert(address)).await.unwrap();
        for call in calls {
            let status = tokio::time::timeout(Duration::from_secs(10), call)
                .await
                .expect("a waiting call was never woken")
                .unwrap()
                .unwrap();
            assert_eq!(status, http::StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn a_waiting_call_given_up_does_not_strand_the_others() {
        let address = server().await;
        let (balanced, changes) = Balanced::new(8);
        let transport = Transport::balanced(balanced);
        let mut calls = waiting_calls(&transport, address, 2).await;
        // The last call polled holds the balancer's waker; it goes away.
        let last = calls.pop().unwrap();
        last.abort();
        assert!(last.await.unwrap_err().is_cancelled());

        changes.send(insert(address)).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), calls.pop().unwrap())
            .await
            .expect("the remaining call was never woken")
            .unwrap()
            .unwrap();
        assert_eq!(status, http::StatusCode::OK);
    }
}
