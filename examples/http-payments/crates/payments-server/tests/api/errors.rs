//! The error path, as in the Python grpclib reference service: exception event, ERROR status, error metrics and an ERROR log.
//! (What the layers answer for an oversized message or an unknown method is the same for every
//! service: `grpc-serving`'s tests.)

use tonic::Code;

use crate::helpers::{check_attributes, metric, span, spawn_app, spawn_app_with, unique_id, world};

#[tokio::test]
async fn an_empty_id_is_invalid_argument_with_an_exception_event() {
    let mut app = spawn_app().await;
    let status = app.client.process_request("").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("must not be empty"), "{status:?}");

    // Other tests send ids; this test's call is the one with an empty id to this server's port.
    let port = app.address.port().to_string();
    let spans = world()
        .trace_where(3, |client| {
            client.attributes.get("request.id").map(String::as_str) == Some("")
                && client.attributes.get("server.port") == Some(&port)
        })
        .await;

    let server = span(&spans, "grpc.server.ProcessRequest");
    let logic = span(&spans, "process-business-logic");
    let client = span(&spans, "grpc.client.ProcessRequest");
    assert_eq!(logic.status, "ERROR");
    assert!(
        logic.status_message.contains("must not be empty"),
        "{logic:?}"
    );
    let (_, exception) = logic
        .events
        .iter()
        .find(|(name, _)| name == "exception")
        .unwrap_or_else(|| panic!("no exception event: {:?}", logic.events));
    assert_eq!(
        exception.get("exception.type").map(String::as_str),
        Some("InvalidRequest")
    );
    assert!(exception["exception.message"].contains("must not be empty"));
    // INVALID_ARGUMENT is the caller's fault: not a server error (no ERROR status, no
    // error.type), always a client error.
    assert_ne!(server.status, "ERROR");
    check_attributes(server, &[("rpc.status_code", "INVALID_ARGUMENT")]);
    assert!(
        !server.attributes.contains_key("error.type"),
        "a client mistake is no server error: {server:?}"
    );
    assert_eq!(client.status, "ERROR");
    check_attributes(
        client,
        &[
            ("rpc.status_code", "INVALID_ARGUMENT"),
            ("error.type", "INVALID_ARGUMENT"),
        ],
    );

    let logs = world().logs_of(&server.trace_id, 2).await;
    let failure = logs
        .iter()
        .find(|l| l.body.starts_with("Business logic failed: "))
        .unwrap_or_else(|| panic!("no failure log: {logs:?}"));
    assert_eq!(failure.severity_number, 17, "ERROR");
    assert_eq!(failure.span_id, logic.span_id);

    world().flush().await;
    let counted = world()
        .receiver
        .wait_for(crate::helpers::ARRIVAL, |r| {
            r.points().into_iter().find(|p| {
                p.metric == metric("requests.total")
                    && p.attributes.get("error").map(String::as_str) == Some("true")
            })
        })
        .await;
    assert!(counted.is_some(), "no requests.total point with error=true");
    let rpc_points = world().receiver.points();
    let server_points: Vec<_> = rpc_points
        .iter()
        .filter(|p| {
            p.metric == "rpc.server.call.duration"
                && p.attributes.get("rpc.status_code").map(String::as_str)
                    == Some("INVALID_ARGUMENT")
        })
        .collect();
    assert!(
        !server_points.is_empty(),
        "no INVALID_ARGUMENT server duration"
    );
    for point in server_points {
        assert!(!point.attributes.contains_key("error.type"), "{point:?}");
    }
    app.stop();
}

#[tokio::test]
async fn a_failing_database_is_unavailable_and_a_server_error() {
    let mut app = spawn_app_with(|config| config.failure_rate = 1.0).await;
    let id = unique_id("dbfail");
    let status = app.client.process_request(id.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    let spans = world().trace_of(&id, 4).await;
    let server = span(&spans, "grpc.server.ProcessRequest");
    assert_eq!(
        server.status, "ERROR",
        "UNAVAILABLE marks the server span: {server:?}"
    );
    check_attributes(
        server,
        &[
            ("rpc.status_code", "UNAVAILABLE"),
            ("error.type", "UNAVAILABLE"),
        ],
    );
    let logic = span(&spans, "process-business-logic");
    let exception = logic
        .events
        .iter()
        .find(|(name, _)| name == "exception")
        .map(|(_, a)| a);
    assert_eq!(
        exception
            .and_then(|a| a.get("exception.type"))
            .map(String::as_str),
        Some("DatabaseError")
    );
    app.stop();
}
