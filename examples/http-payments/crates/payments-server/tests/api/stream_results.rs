//! `StreamResults`, the example's server stream, through the real client and server: one CLIENT
//! and one SERVER span that end with the stream, a span and log lines per result parented inside
//! the call, and its failures each with its status.

use std::time::Duration;

use telemetry_testing::{ReceivedSpan, now_nanos, wait_until};

use crate::helpers::{
    ARRIVAL, check_attributes, span, spawn_app, spawn_app_with, unique_id, world,
};

/// The pause between two results in these tests.
const INTERVAL: Duration = Duration::from_millis(50);

fn method() -> String {
    format!("{}/StreamResults", proto::GRPC_SERVICE)
}

/// The spans of `trace` named `name`.
fn all<'a>(trace: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    trace.iter().filter(|s| s.name == name).collect()
}

#[tokio::test]
async fn a_stream_is_one_trace_measured_to_its_last_result() {
    let mut app = spawn_app().await;
    let id = unique_id("stream");
    let mut stream = app
        .client
        .stream_results(id.clone(), 4, INTERVAL)
        .await
        .unwrap();
    let mut sequences = Vec::new();
    let mut last = 0;
    while let Some(result) = stream.message().await.unwrap() {
        assert_eq!(result.result, "success");
        sequences.push(result.sequence);
        last = now_nanos();
    }
    assert_eq!(sequences, [1, 2, 3, 4]);

    // Client, its attempt, server, and per result its span and its query.
    let spans = world().trace_of(&id, 3 + 4 * 2).await;
    assert_eq!(spans.len(), 3 + 4 * 2, "{spans:#?}");
    assert_eq!(all(&spans, "grpc.client.StreamResults").len(), 1);
    assert_eq!(all(&spans, "grpc.server.StreamResults").len(), 1);
    let client = span(&spans, "grpc.client.StreamResults");
    let server = span(&spans, "grpc.server.StreamResults");
    let attempt = span(&spans, "grpc.client.attempt.StreamResults");
    assert_eq!(
        (client.kind, attempt.kind, server.kind),
        ("INTERNAL", "CLIENT", "SERVER")
    );
    assert_eq!(attempt.parent_span_id, client.span_id, "one trace");
    assert_eq!(server.parent_span_id, attempt.span_id, "one trace");
    let method = method();
    for (side, sent, received) in [(client, "1", "4"), (server, "4", "1")] {
        check_attributes(
            side,
            &[
                ("rpc.method", method.as_str()),
                ("rpc.status_code", "OK"),
                ("request.id", id.as_str()),
                ("rpc.message.sent_count", sent),
                ("rpc.message.received_count", received),
            ],
        );
        assert_ne!(side.status, "ERROR", "{side:?}");
        // The stream's end, not its first message: three pauses went by in between.
        let lasted = side.end_unix_nano - side.start_unix_nano;
        let pauses = u64::try_from((INTERVAL * 3).as_nanos()).unwrap();
        assert!(lasted >= pauses, "{} lasted {lasted} ns", side.name);
    }
    assert!(
        client.end_unix_nano >= last,
        "the client span ended before the last result arrived"
    );

    // Each result's span is a child of the call; its query a child of the result.
    let results = all(&spans, "stream-result");
    let mut seen: Vec<_> = results
        .iter()
        .map(|r| {
            assert_eq!(r.parent_span_id, server.span_id, "{r:?}");
            assert!(r.end_unix_nano <= server.end_unix_nano, "{r:?}");
            r.attributes["result.sequence"].clone()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, ["1", "2", "3", "4"]);
    for query in all(&spans, "database-query") {
        assert!(
            results.iter().any(|r| r.span_id == query.parent_span_id),
            "{query:?}"
        );
    }

    // The log lines, each in the span it was written in.
    let logs = world().logs_of(&server.trace_id, 1 + 4 * 2 + 1).await;
    let in_span = |body: &str| {
        logs.iter()
            .find(|l| l.body.starts_with(body))
            .unwrap_or_else(|| panic!("no log record {body:?} in {logs:#?}"))
            .span_id
            .clone()
    };
    assert_eq!(
        in_span(&format!("Streaming 4 results for request: {id}")),
        server.span_id
    );
    assert_eq!(in_span("Streamed 4 results in "), server.span_id);
    for result in &results {
        let n = &result.attributes["result.sequence"];
        assert_eq!(in_span(&format!("Result {n} of 4 ready")), result.span_id);
    }
    app.stop();
}

#[tokio::test]
async fn an_invalid_count_or_interval_is_invalid_argument() {
    let mut app = spawn_app().await;
    let cases = [
        (0, Duration::ZERO, "count must be from 1 to 1000, got 0"),
        (
            server::MAX_STREAM_COUNT + 1,
            Duration::ZERO,
            "count must be from 1 to 1000, got 1001",
        ),
        (
            1,
            Duration::from_millis(u64::from(server::MAX_STREAM_INTERVAL_MS) + 1),
            "interval_ms must be at most 10000, got 10001",
        ),
    ];
    for (count, interval, message) in cases {
        let id = unique_id("invalid-stream");
        let status = app
            .client
            .stream_results(id.clone(), count, interval)
            .await
            .expect_err("an invalid request is refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message(), message);

        let spans = world().trace_of(&id, 3).await;
        assert_eq!(spans.len(), 3, "no work started: {spans:#?}");
        let client = span(&spans, "grpc.client.StreamResults");
        let server = span(&spans, "grpc.server.StreamResults");
        check_attributes(client, &[("rpc.status_code", "INVALID_ARGUMENT")]);
        check_attributes(server, &[("rpc.status_code", "INVALID_ARGUMENT")]);
        // The caller's mistake, not the server's: no error.type on the server span.
        assert!(!server.attributes.contains_key("error.type"), "{server:?}");
        check_attributes(client, &[("error.type", "INVALID_ARGUMENT")]);
    }
    app.stop();
}

#[tokio::test]
async fn a_failing_result_ends_the_stream_with_its_status() {
    let mut app = spawn_app_with(|config| config.failure_rate = 1.0).await;
    let id = unique_id("failing-stream");
    let mut stream = app
        .client
        .stream_results(id.clone(), 3, INTERVAL)
        .await
        .unwrap();
    let status = stream.message().await.expect_err("the first result fails");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "database query failed: connection reset (injected failure)"
    );

    let spans = world().trace_of(&id, 4).await;
    let client = span(&spans, "grpc.client.StreamResults");
    let server = span(&spans, "grpc.server.StreamResults");
    let result = span(&spans, "stream-result");
    for side in [client, server] {
        check_attributes(
            side,
            &[
                ("rpc.status_code", "UNAVAILABLE"),
                ("error.type", "UNAVAILABLE"),
            ],
        );
        assert_eq!(side.status, "ERROR", "{side:?}");
    }
    assert_eq!(
        all(&spans, "stream-result").len(),
        1,
        "no result after the failure"
    );
    assert_eq!(result.status, "ERROR");
    let (_, exception) = result
        .events
        .iter()
        .find(|(name, _)| name == "exception")
        .unwrap_or_else(|| panic!("no exception event on {result:?}"));
    assert_eq!(exception["exception.type"], "DatabaseError");
    app.stop();
}

#[tokio::test]
async fn a_stream_the_caller_drops_stops_its_work() {
    let mut app = spawn_app().await;
    let id = unique_id("dropped-stream");
    // Long pauses: a task that waited for its next send to notice would keep the call's span open.
    let interval = Duration::from_secs(2);
    let mut stream = app
        .client
        .stream_results(id.clone(), 100, interval)
        .await
        .unwrap();
    stream.message().await.unwrap().unwrap();
    drop(stream);

    // The server span ends when the server sees the stream go, a moment after the drop.
    let deadline = std::time::Instant::now() + ARRIVAL;
    let server = loop {
        world().flush().await;
        let found = world()
            .receiver
            .spans()
            .into_iter()
            .find(|s| s.kind == "SERVER" && s.attributes.get("request.id") == Some(&id));
        if let Some(server) = found {
            break server;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no server span of the dropped stream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    check_attributes(&server, &[("rpc.status_code", "CANCELLED")]);
    let lasted = Duration::from_nanos(server.end_unix_nano - server.start_unix_nano);
    assert!(
        lasted < interval,
        "the server span lasted {lasted:?}: the task kept it open after the call"
    );

    // The task that produced the results noticed at once, and ended without another result.
    wait_until(ARRIVAL, "the stream's task outlived its call", || {
        world().json_lines().iter().any(|l| {
            l["trace_id"] == server.trace_id.as_str()
                && l["msg"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("The caller stopped listening; stream ended"))
        })
    })
    .await;
    world().flush().await;
    let results = world()
        .receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == server.trace_id && s.name == "stream-result")
        .count();
    assert_eq!(results, 1, "results produced for a dropped stream");
    app.stop();
}
