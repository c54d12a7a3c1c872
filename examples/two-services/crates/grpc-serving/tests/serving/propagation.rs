//! W3C trace context from callers, whatever the service: a valid `traceparent` is continued, a
//! malformed one starts a new trace, never fails the call and never breaks a log line. The calls are made without the
//! client layer, with hand-written headers.

use telemetry_testing::{ARRIVAL, ReceivedSpan};
use tonic::Request;

use crate::support::{TestServer, call_with, full, world};

/// Calls `Traceparent` with `request` (its handler's `handle` span records it, so the call's
/// server span is found by it) and `headers`; returns the call's server span.
async fn server_span_of(
    server: &TestServer,
    request: u64,
    headers: &[(&'static str, &str)],
) -> ReceivedSpan {
    let mut raw = tonic::client::Grpc::new(server.channel().await);
    let mut call = Request::new(request);
    for (name, value) in headers {
        call.metadata_mut().insert(*name, value.parse().unwrap());
    }
    call_with(&mut raw, "Traceparent", call)
        .await
        .unwrap_or_else(|status| panic!("{headers:?} failed the call: {status:?}"));

    let method = full("Traceparent");
    let request = request.to_string();
    world().flush().await;
    world()
        .receiver
        .wait_for(ARRIVAL, |r| {
            let spans = r.spans();
            spans
                .iter()
                .filter(|s| s.name == "handle" && s.attributes.get("request") == Some(&request))
                .find_map(|handle| {
                    spans.iter().find(|s| {
                        s.span_id == handle.parent_span_id
                            && s.kind == "SERVER"
                            && s.attributes.get("rpc.method") == Some(&method)
                    })
                })
                .cloned()
        })
        .await
        .unwrap_or_else(|| panic!("no server span for request {request}"))
}

#[tokio::test]
async fn a_valid_traceparent_is_continued() {
    let server = TestServer::start("propagation", |_| {}).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let span = server_span_of(
        &server,
        100,
        &[
            ("traceparent", &traceparent),
            ("tracestate", "vendor=opaque"),
            ("baggage", "tenant=acme"),
        ],
    )
    .await;
    assert_eq!(span.trace_id, trace_id);
    assert_eq!(span.parent_span_id, "00f067aa0ba902b7");
}

#[tokio::test]
async fn malformed_traceparents_start_new_traces_without_error() {
    let server = TestServer::start("propagation", |_| {}).await;
    let malformed = [
        "garbage",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
    ];
    for (n, traceparent) in (1..).zip(malformed) {
        let span = server_span_of(
            &server,
            n,
            &[
                ("traceparent", traceparent),
                ("tracestate", "=,,==bad"),
                ("baggage", "%%%;;;"),
            ],
        )
        .await;
        assert_eq!(
            span.parent_span_id, "",
            "{traceparent} must not become a parent"
        );
        assert_eq!(span.trace_id.len(), 32);
        assert_ne!(span.trace_id, "0".repeat(32));
        assert_ne!(
            span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736",
            "{traceparent}"
        );
    }
    // Whatever the callers sent, every line written stays JSON (`json_lines` fails on any other).
    assert!(!world().json_lines().is_empty());
}
