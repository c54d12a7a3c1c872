//! Graceful shutdown: in-flight calls finish, new connections are refused.

use std::time::Duration;

use crate::helpers::{spawn_app_with, unique_id, world};

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
    stuck.abort();
}
