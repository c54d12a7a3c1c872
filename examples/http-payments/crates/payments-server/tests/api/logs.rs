//! Log records and stdout lines carry the ids of the span they were written in, and stay valid
//! JSON whatever the request id holds.

use crate::helpers::{span, spawn_app, unique_id, world};

#[tokio::test]
async fn exported_log_records_carry_their_span_ids() {
    let mut app = spawn_app().await;
    let id = unique_id("logs");
    app.client.process_request(id.clone()).await.unwrap();

    let spans = world().trace_of(&id, 4).await;
    let server = span(&spans, "grpc.server.ProcessRequest");
    let query = span(&spans, "database-query");
    let logic = span(&spans, "process-business-logic");
    let attempt = span(&spans, "grpc.client.attempt.ProcessRequest");
    let logs = world().logs_of(&server.trace_id, 5).await;

    let check = |body: &str, expected_span: &str| {
        let record = logs
            .iter()
            .find(|l| l.body == body)
            .unwrap_or_else(|| panic!("no log record {body:?} in {logs:#?}"));
        assert_eq!(record.span_id, expected_span, "{body}");
        assert_eq!(record.severity_number, 9, "INFO: {body}");
    };
    check(&format!("Processing request: {id}"), &server.span_id);
    check("Executing database query", &query.span_id);
    check(
        &format!("Calling service at 127.0.0.1:{}", app.address.port()),
        &attempt.span_id,
    );
    let done = logs
        .iter()
        .find(|l| l.body.starts_with("Request processed successfully in "))
        .expect("a success log record");
    assert_eq!(done.span_id, logic.span_id);
    assert!(logs.iter().all(|l| !l.service.is_empty()));
    app.stop();
}

#[tokio::test]
async fn stdout_lines_carry_the_exported_ids() {
    let mut app = spawn_app().await;
    let id = unique_id("stdout");
    app.client.process_request(id.clone()).await.unwrap();
    let spans = world().trace_of(&id, 4).await;
    let server = span(&spans, "grpc.server.ProcessRequest");
    let query = span(&spans, "database-query");

    let lines = world().json_lines();
    let line = |suffix: &str| {
        lines
            .iter()
            .find(|l| l["msg"].as_str().is_some_and(|m| m.ends_with(suffix)))
            .unwrap_or_else(|| panic!("no stdout line ending {suffix:?}"))
            .clone()
    };
    let processing = line(&format!("Processing request: {id}"));
    assert_eq!(processing["trace_id"], server.trace_id.as_str());
    assert_eq!(processing["span_id"], server.span_id.as_str());
    for field in [
        "v", "name", "msg", "level", "hostname", "pid", "time", "target",
    ] {
        assert!(
            processing.get(field).is_some(),
            "bunyan field {field} missing: {processing}"
        );
    }
    let querying = lines
        .iter()
        .find(|l| {
            l["trace_id"] == server.trace_id.as_str()
                && l["msg"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("Executing database query"))
        })
        .expect("the query line of this trace");
    assert_eq!(querying["span_id"], query.span_id.as_str());
    // Span START/END lines are off by default.
    assert!(
        !lines
            .iter()
            .any(|l| l["msg"].as_str().is_some_and(|m| m.ends_with("- START]")))
    );
    app.stop();
}

#[tokio::test]
async fn hostile_request_ids_keep_every_line_valid_json() {
    let mut app = spawn_app().await;
    let mut id = unique_id("hostile");
    id.push_str(r#" "quoted" back\slash"#);
    id.push_str(" new\nline\r\ttab ünïcødé 🚀 ");
    id.push_str(r#"{"json":1} \u0000"#);
    app.client.process_request(id.clone()).await.unwrap();
    let spans = world().trace_of(&id, 4).await;

    // json_lines fails on any line that does not parse.
    let lines = world().json_lines();
    let processing = lines
        .iter()
        .find(|l| {
            l["msg"]
                .as_str()
                .is_some_and(|m| m.ends_with(&format!("Processing request: {id}")))
        })
        .expect("the id survives a round trip through the JSON line");
    assert_eq!(processing["trace_id"], spans[0].trace_id.as_str());
    let server = span(&spans, "grpc.server.ProcessRequest");
    assert_eq!(server.attributes["request.id"], id);
    app.stop();
}

#[tokio::test]
async fn a_huge_request_id_is_cut_in_telemetry_only() {
    let mut app = spawn_app().await;
    let prefix = unique_id("huge");
    let id = format!("{prefix}-{}", "é".repeat(200_000));
    assert_eq!(
        app.client.process_request(id.clone()).await.unwrap().result,
        "success"
    );

    let shown = telemetry::bounded(&id);
    assert_eq!(shown.chars().count(), telemetry::MAX_VALUE_CHARS);
    let spans = world().trace_of(shown, 4).await;
    let server = span(&spans, "grpc.server.ProcessRequest");
    assert_eq!(server.attributes["request.id"], shown);
    let logs = world().logs_of(&server.trace_id, 3).await;
    assert!(
        logs.iter()
            .any(|l| l.body == format!("Processing request: {shown}"))
    );
    app.stop();
}
