//! Deadlines through a handler: the server's deadline layer ends a call whose deadline passed
//! (both sides say DEADLINE_EXCEEDED, and the handler's work is dropped), and a handler passes
//! what is left of its deadline to the calls it makes downstream. The handlers are test-only,
//! hand-written over tonic's generic `Grpc` with the proto's messages: no generated trait is
//! implemented, so an RPC added to the proto leaves this file as it is.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::{MyRequest, MyResponse};
use tokio::sync::oneshot;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::helpers::{span, unique_id, world};

/// What the test's handler of `ProcessRequest` does.
#[derive(Clone)]
enum Handler {
    /// Works for `latency`; `dropped` fires if its work is dropped before it finishes.
    Slow {
        latency: Duration,
        dropped: Arc<Mutex<Option<oneshot::Sender<()>>>>,
        finished: Arc<AtomicUsize>,
    },
    /// Calls `downstream` with what is left of its deadline, which it records in `left`.
    Forward {
        downstream: Box<client::Client>,
        left: Arc<Mutex<Option<Duration>>>,
    },
    /// Records the `grpc-timeout` it was called with.
    Record(Arc<Mutex<Option<Duration>>>),
}

/// Says, when dropped before `done`, that the handler's work was dropped.
struct WorkGuard {
    dropped: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    done: bool,
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if !self.done
            && let Some(tx) = self.dropped.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    }
}

impl Handler {
    async fn handle(self, request: Request<MyRequest>) -> Result<Response<MyResponse>, Status> {
        match self {
            Self::Slow {
                latency,
                dropped,
                finished,
            } => {
                let mut guard = WorkGuard {
                    dropped,
                    done: false,
                };
                tokio::time::sleep(latency).await;
                guard.done = true;
                finished.fetch_add(1, Ordering::SeqCst);
            }
            Self::Forward { downstream, left } => {
                let deadline = request
                    .extensions()
                    .get::<server::Deadline>()
                    .copied()
                    .expect("the call came with a deadline");
                let remaining = deadline.remaining();
                *left.lock().unwrap() = Some(remaining);
                downstream
                    .with_timeout(remaining)
                    .process_request(request.get_ref().id.clone())
                    .await?;
            }
            Self::Record(timeout) => {
                let headers = request.metadata().clone().into_headers();
                *timeout.lock().unwrap() = telemetry::grpc::grpc_timeout(&headers);
            }
        }
        Ok(Response::new(MyResponse {
            result: "success".to_owned(),
        }))
    }
}

impl tonic::server::NamedService for Handler {
    const NAME: &'static str = proto::GRPC_SERVICE;
}

/// The handler as tonic's unary calls take it.
impl tonic::server::UnaryService<MyRequest> for Handler {
    type Response = MyResponse;
    type Future = BoxFuture<Response<MyResponse>, Status>;

    fn call(&mut self, request: Request<MyRequest>) -> Self::Future {
        Box::pin(self.clone().handle(request))
    }
}

/// Every method is answered as `ProcessRequest`: the tests call no other.
impl Service<http::Request<tonic::body::Body>> for Handler {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let handler = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<MyResponse, MyRequest>::default());
            Ok(grpc.unary(handler, request).await)
        })
    }
}

/// Serves `handler` on 127.0.0.1 behind the server's own telemetry and deadline layers, and a
/// client of it; the server stops when the returned sender is dropped.
async fn serve(handler: Handler) -> (client::Client, oneshot::Sender<()>) {
    world();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let layer =
        telemetry::grpc::GrpcServerLayer::new(proto::METRIC_PREFIX, &[proto::FILE_DESCRIPTOR_SET]);
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .layer(grpc_serving::deadline::DeadlineLayer)
            .add_service(handler)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let client = client::Client::connect(&format!("http://{address}"), Duration::from_secs(5))
        .await
        .unwrap();
    (client, stop)
}

#[tokio::test]
async fn a_deadline_ends_the_call_on_both_sides_and_drops_the_handlers_work() {
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let finished = Arc::new(AtomicUsize::new(0));
    let (client, _stop) = serve(Handler::Slow {
        latency: Duration::from_secs(1),
        dropped: Arc::new(Mutex::new(Some(dropped_tx))),
        finished: Arc::clone(&finished),
    })
    .await;
    let id = unique_id("deadline");

    // How soon the caller gets DEADLINE_EXCEEDED, and its span, are the shared client's
    // (grpc-channel's tests); here, the server's side.
    let status = client
        .with_timeout(Duration::from_millis(100))
        .process_request(id.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    tokio::time::timeout(Duration::from_secs(1), dropped_rx)
        .await
        .expect("the handler's work was dropped at the deadline")
        .unwrap();
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    let spans = world().trace_of(&id, 3).await;
    let server_span = span(&spans, "grpc.server.ProcessRequest");
    assert_eq!(
        server_span.attributes["rpc.status_code"], "DEADLINE_EXCEEDED",
        "the server's deadline layer, not tonic's timer (CANCELLED), ended the call"
    );
}

#[tokio::test]
async fn a_handler_passes_what_is_left_of_its_deadline_downstream() {
    let sent = Arc::new(Mutex::new(None));
    let (downstream, _downstream_stop) = serve(Handler::Record(Arc::clone(&sent))).await;
    let left = Arc::new(Mutex::new(None));
    let (client, _stop) = serve(Handler::Forward {
        downstream: Box::new(downstream),
        left: Arc::clone(&left),
    })
    .await;

    client
        .with_timeout(Duration::from_millis(300))
        .process_request("x")
        .await
        .unwrap();

    let left = left.lock().unwrap().expect("the handler read its deadline");
    assert!(left <= Duration::from_millis(300), "{left:?}");
    let sent = sent
        .lock()
        .unwrap()
        .expect("the downstream call carried a deadline");
    assert!(
        sent <= left,
        "downstream grpc-timeout {sent:?} is no more than what was left, {left:?}"
    );
}
