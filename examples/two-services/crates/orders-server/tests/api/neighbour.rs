//! A call from this service into my-service, the workspace's first service, through that
//! service's client: the trace of this service's work continues into the other service.

use std::time::{Duration, Instant};

use tracing::Instrument as _;

use crate::helpers::{check_attributes, span, unique_id, world};

/// Serves the neighbour service, its configuration changed by `configure`, and connects its
/// client; the server stops when the sender is dropped or sent to.
async fn serve_neighbour(
    configure: impl FnOnce(&mut neighbour_server::Config),
) -> (neighbour_client::Client, tokio::sync::oneshot::Sender<()>) {
    world();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    let mut config = neighbour_server::Config::for_address(address);
    configure(&mut config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(neighbour_server::run(listener, config, async {
        let _ = stopped.await;
    }));
    let url = format!("http://{address}");
    let client = neighbour_client::Client::connect(&url, Duration::from_secs(5))
        .await
        .unwrap();
    (client, stop)
}

#[tokio::test]
async fn a_call_into_the_neighbour_service_stays_one_trace() {
    let (mut neighbour, stop) = serve_neighbour(|_| {}).await;

    // What this service's handler would do: its own work, calling the neighbour inside it.
    let id = unique_id("neighbour");
    let work = tracing::info_span!("caller-work");
    let response = neighbour
        .process_request(id.clone())
        .instrument(work)
        .await
        .unwrap();
    assert_eq!(response.result, "success");

    let spans = world().trace_of(&id, 6).await;
    let caller = span(&spans, "caller-work");
    let client = span(&spans, "grpc.client.ProcessRequest");
    let server = span(&spans, "grpc.server.ProcessRequest");
    assert_eq!(client.parent_span_id, caller.span_id);
    let attempt = span(&spans, "grpc.client.attempt.ProcessRequest");
    assert_eq!(attempt.parent_span_id, client.span_id);
    assert_eq!(server.parent_span_id, attempt.span_id);
    let method = format!("{}/ProcessRequest", neighbour_client::GRPC_SERVICE);
    check_attributes(server, &[("rpc.method", method.as_str())]);
    let _ = stop.send(());
}

/// A handler's deadline goes on into the neighbour: the call carries what is left, and when that
/// runs out the neighbour's handler is dropped and both sides say DEADLINE_EXCEEDED.
#[tokio::test]
async fn a_handlers_deadline_goes_on_into_the_neighbour() {
    let (neighbour, stop) = serve_neighbour(|config| config.db_latency_ms = 1000).await;

    // What this service's handler would do with the deadline it was given
    // (`request.extensions().get::<server::Deadline>()`): pass on what is left.
    let deadline = server::Deadline::after(Duration::from_millis(100));
    let id = unique_id("neighbour-deadline");
    let started = Instant::now();
    let status = neighbour
        .with_timeout(deadline.remaining())
        .process_request(id.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_millis(150));

    let spans = world().trace_of(&id, 3).await;
    let server = span(&spans, "grpc.server.ProcessRequest");
    check_attributes(server, &[("rpc.status_code", "DEADLINE_EXCEEDED")]);
    let _ = stop.send(());
}
