//! Graceful shutdown: in-flight calls finish, new connections are refused, and what the drain
//! timeout cuts is recorded before the server returns.

use std::time::Duration;

use crate::helpers::{check_attributes, span, spawn_app_with, unique_id, world};

#[tokio::test]
async fn shutdown_drains_in_flight_calls() {
    let mut app = spawn_app_with(|config| config.db_latency_ms = 300).await;
    let mut client = app.client.clone();
    let id = unique_id("drain");
    let call = id.clone();
    let in_flight = tokio::spawn(async move { client.process_request(call).await });
    // Stop once the call is being processed (its query takes 300 ms).
    world()
        .wait_for_line(&format!("Processing request: {id}"))
        .await;
    app.stop();

    let response = in_flight
        .await
        .unwrap()
        .expect("an in-flight call completes during the drain");
    assert_eq!(response.result, "success");
    let finished = tokio::time::timeout(Duration::from_secs(5), &mut app.task).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "the server stops once drained: {finished:?}"
    );
    let refused = client::Client::connect(&app.url(), Duration::from_secs(1)).await;
    assert!(refused.is_err(), "a stopped server accepts no connection");
}

#[tokio::test]
async fn the_drain_deadline_bounds_shutdown() {
    let mut app = spawn_app_with(|config| {
        config.db_latency_ms = 30_000;
        config.drain_timeout_secs = 1;
    })
    .await;
    let mut client = app.client.clone();
    let id = unique_id("stuck");
    let call = id.clone();
    let stuck = tokio::spawn(async move { client.process_request(call).await });
    world()
        .wait_for_line(&format!("Processing request: {id}"))
        .await;
    let started = std::time::Instant::now();
    app.stop();
    let finished = tokio::time::timeout(Duration::from_secs(5), &mut app.task).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "{finished:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped after {:?}",
        started.elapsed()
    );
    let cut = tokio::time::timeout(Duration::from_secs(5), stuck)
        .await
        .expect("the cut call ends on the client too")
        .unwrap();
    assert!(cut.is_err(), "{cut:?}");

    // The cut call and its handler's spans ended before the server returned: no waiting here.
    world().flush().await;
    let spans = world().receiver.spans();
    let client = spans
        .iter()
        .find(|s| s.kind == "CLIENT" && s.attributes.get("request.id") == Some(&id))
        .unwrap_or_else(|| panic!("no client span of the cut call"));
    let trace: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == client.trace_id)
        .cloned()
        .collect();
    let server = span(&trace, "grpc.server.ProcessRequest");
    assert_eq!(server.status, "ERROR", "{server:?}");
    assert!(
        server.status_message.contains("drain timeout"),
        "{server:?}"
    );
    check_attributes(
        server,
        &[
            ("rpc.status_code", "UNAVAILABLE"),
            ("error.type", "UNAVAILABLE"),
        ],
    );
    // The handler was dropped with its call: its query span ended there, not 30 s later.
    span(&trace, "database-query");
}
