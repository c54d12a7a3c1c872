//! W3C trace context from callers: a valid `traceparent` is continued, a malformed one starts a
//! new trace and never fails the call.

use proto::{MyRequest, ServiceClient};
use tonic::Request;

use crate::helpers::{ARRIVAL, spawn_app, unique_id, world};

/// Calls without the client layer, with hand-written headers.
async fn call_with_headers(
    url: String,
    id: &str,
    headers: &[(&'static str, &str)],
) -> tonic::Status {
    let mut raw = ServiceClient::connect(url).await.unwrap();
    let mut request = Request::new(MyRequest { id: id.to_owned() });
    for (name, value) in headers {
        request.metadata_mut().insert(*name, value.parse().unwrap());
    }
    match raw.process_request(request).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

async fn server_span_of(id: &str) -> telemetry::testing::ReceivedSpan {
    world().flush().await;
    world()
        .receiver
        .wait_for(ARRIVAL, |r| {
            r.spans().into_iter().find(|s| {
                s.kind == "SERVER" && s.attributes.get("request.id").map(String::as_str) == Some(id)
            })
        })
        .await
        .unwrap_or_else(|| panic!("no server span for {id}"))
}

#[tokio::test]
async fn a_valid_traceparent_is_continued() {
    let app = spawn_app().await;
    let id = unique_id("parent");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let status = call_with_headers(
        app.url(),
        &id,
        &[
            ("traceparent", &traceparent),
            ("tracestate", "vendor=opaque"),
            ("baggage", "tenant=acme"),
        ],
    )
    .await;
    assert_eq!(status.code(), tonic::Code::Ok, "{status:?}");
    let server = server_span_of(&id).await;
    assert_eq!(server.trace_id, trace_id);
    assert_eq!(server.parent_span_id, "00f067aa0ba902b7");
}

#[tokio::test]
async fn malformed_traceparents_start_new_traces_without_error() {
    let app = spawn_app().await;
    let malformed = [
        "garbage",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
    ];
    for (n, traceparent) in malformed.iter().enumerate() {
        let id = unique_id(&format!("malformed{n}"));
        let status = call_with_headers(
            app.url(),
            &id,
            &[
                ("traceparent", traceparent),
                ("tracestate", "=,,==bad"),
                ("baggage", "%%%;;;"),
            ],
        )
        .await;
        assert_eq!(status.code(), tonic::Code::Ok, "{traceparent}: {status:?}");
        let server = server_span_of(&id).await;
        assert_eq!(
            server.parent_span_id, "",
            "{traceparent} must not become a parent"
        );
        assert_eq!(server.trace_id.len(), 32);
        assert_ne!(server.trace_id, "0".repeat(32));
        assert_ne!(
            server.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736",
            "{traceparent}"
        );
    }
}
