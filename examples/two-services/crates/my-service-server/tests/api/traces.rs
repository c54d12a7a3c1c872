//! One call is one trace: the call's span → its attempt (CLIENT) → server span → business logic →
//! database query. The server span's direct parent is a CLIENT span: service graphs pair them.

use crate::helpers::{check_attributes, method, span, spawn_app, unique_id, world};

#[tokio::test]
async fn a_call_is_one_trace_from_client_to_database() {
    let mut app = spawn_app().await;
    let id = unique_id("trace");

    let response = app.client.process_request(id.clone()).await.unwrap();
    assert_eq!(response.result, "success");

    let spans = world().trace_of(&id, 5).await;
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let client = span(&spans, "grpc.client.ProcessRequest");
    let attempt = span(&spans, "grpc.client.attempt.ProcessRequest");
    let server = span(&spans, "grpc.server.ProcessRequest");
    let logic = span(&spans, "process-business-logic");
    let query = span(&spans, "database-query");

    assert_eq!(
        (client.kind, server.kind, logic.kind, query.kind),
        ("INTERNAL", "SERVER", "INTERNAL", "CLIENT")
    );
    assert_eq!(
        client.parent_span_id, "",
        "the client span is the root here"
    );
    assert_eq!(attempt.kind, "CLIENT", "each attempt is the CLIENT span");
    assert_eq!(attempt.parent_span_id, client.span_id);
    assert_eq!(
        server.parent_span_id, attempt.span_id,
        "traceparent carried the attempt's span"
    );
    assert_eq!(logic.parent_span_id, server.span_id);
    assert_eq!(query.parent_span_id, logic.span_id);
    for s in &spans {
        assert_eq!(s.service, proto::SERVICE_NAME);
        // tracing's own bookkeeping is not telemetry: no span carries its target, source
        // location, thread or busy/idle times (none is in a convention or the contract).
        for key in [
            "target",
            "level",
            "code.file.path",
            "code.module.name",
            "code.line.number",
            "thread.id",
            "thread.name",
            "busy_ns",
            "idle_ns",
        ] {
            assert!(!s.attributes.contains_key(key), "{key} on {s:?}");
        }
        assert_ne!(s.status, "ERROR", "{s:?}");
    }

    let method = method();
    let method = method.as_str();
    let port = app.address.port().to_string();
    check_attributes(
        client,
        &[
            ("rpc.system.name", "grpc"),
            ("rpc.method", method),
            ("rpc.status_code", "OK"),
            ("server.address", "127.0.0.1"),
            ("server.port", port.as_str()),
            ("request.id", id.as_str()),
        ],
    );
    check_attributes(
        attempt,
        &[
            ("rpc.system.name", "grpc"),
            ("rpc.method", method),
            ("rpc.status_code", "OK"),
            ("server.address", "127.0.0.1"),
            ("server.port", port.as_str()),
            ("grpc.attempt", "1"),
        ],
    );
    check_attributes(
        server,
        &[
            ("rpc.system.name", "grpc"),
            ("rpc.method", method),
            ("rpc.status_code", "OK"),
            ("network.peer.address", "127.0.0.1"),
            ("request.id", id.as_str()),
        ],
    );
    assert!(!server.attributes.contains_key("error.type"));
    check_attributes(logic, &[("request.id", id.as_str())]);
    check_attributes(
        query,
        &[
            ("db.system.name", "postgresql"),
            ("db.operation.name", "SELECT"),
        ],
    );
    // Only the stable names (semconv v1.33.0): not the deprecated ones they replaced.
    for old in ["db.system", "db.operation", "db.statement"] {
        assert!(!query.attributes.contains_key(old), "{old} on {query:?}");
    }
    app.stop();
}

#[tokio::test]
async fn a_caller_span_becomes_the_client_span_parent() {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let mut app = spawn_app().await;
    let id = unique_id("caller");
    let caller = tracing::info_span!("caller");
    let caller_context = caller.context().span().span_context().clone();

    app.client
        .process_request(id.clone())
        .instrument(caller)
        .await
        .unwrap();

    let spans = world().trace_of(&id, 4).await;
    let client = span(&spans, "grpc.client.ProcessRequest");
    assert_eq!(client.trace_id, caller_context.trace_id().to_string());
    assert_eq!(client.parent_span_id, caller_context.span_id().to_string());
}
