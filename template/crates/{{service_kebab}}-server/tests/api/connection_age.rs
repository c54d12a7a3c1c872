//! `max_connection_age`: a connection is closed gracefully at its age, so a client that keeps one
//! connection reconnects (and, behind a ClusterIP Service, may reach another replica); the calls
//! in flight at that moment finish.

use crate::helpers::{span, spawn_app_with, unique_id, world};

#[tokio::test]
async fn an_aged_connection_closes_gracefully_and_the_client_reconnects() {
    let mut app = spawn_app_with(|config| {
        config.serving.max_connection_age_secs = 1;
        config.db_latency_ms = 1500;
    })
    .await;
    // In flight when the connection reaches its age (1 s into a 1.5 s call): it still completes.
    let across = unique_id("across-age");
    let response = app
        .client
        .process_request(across.clone())
        .await
        .expect("a call in flight at the connection's age finishes");
    assert_eq!(response.result, "success");
    // The next call goes over a new connection.
    let after = unique_id("after-age");
    app.client
        .process_request(after.clone())
        .await
        .expect("the client reconnects");

    let port = |trace: &[telemetry::testing::ReceivedSpan]| {
        span(trace, "grpc.server.ProcessRequest")
            .attributes
            .get("network.peer.port")
            .cloned()
            .expect("the server span names its peer's port")
    };
    let first = port(&world().trace_of(&across, 4).await);
    let second = port(&world().trace_of(&after, 4).await);
    assert_ne!(first, second, "both calls came over the same connection");
    app.stop();
}
