//! Graceful shutdown: readiness turns NOT_SERVING for the drain delay while calls are still
//! served, then in-flight calls finish, new connections are refused, and what the drain timeout
//! cuts is recorded before the server returns.

use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{ServerProcess, check_attributes, span, spawn_app_with, unique_id, world};

/// SIGTERM turns the readiness health (the service's name) NOT_SERVING at once, while liveness
/// ("") stays SERVING and calls are still served, old connections and new, for the drain delay;
/// then the server drains, ending the health watches so they do not hold the drain, and exits.
#[tokio::test]
async fn sigterm_reports_not_ready_and_serves_through_the_drain_delay() {
    const DELAY: Duration = Duration::from_secs(3);
    let server = ServerProcess::start(&[
        ("OTEL_SDK_DISABLED", "true"),
        ("DRAIN_DELAY_SECS", "3"),
        ("DRAIN_TIMEOUT_SECS", "10"),
    ])
    .await;
    let url = server.url.clone();
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let mut readiness = health
        .watch(HealthCheckRequest {
            service: proto::GRPC_SERVICE.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = readiness.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    let mut client = client::Client::connect(&url, Duration::from_secs(5))
        .await
        .unwrap();

    let signalled = Instant::now();
    server.sigterm();
    let changed = tokio::time::timeout(Duration::from_secs(2), readiness.message())
        .await
        .expect("readiness changes at once")
        .unwrap()
        .expect("a status, not the end of the watch");
    assert_eq!(changed.status(), ServingStatus::NotServing);
    let liveness = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(liveness.into_inner().status(), ServingStatus::Serving);
    client
        .process_request(unique_id("during-delay"))
        .await
        .expect("a call on an open connection is served during the delay");
    let mut late = client::Client::connect(&url, Duration::from_secs(5))
        .await
        .expect("new connections are accepted during the delay");
    late.process_request(unique_id("late"))
        .await
        .expect("a call on a new connection is served during the delay");
    assert!(
        signalled.elapsed() < DELAY,
        "the checks above ran within the delay: {:?}",
        signalled.elapsed()
    );

    let ended = tokio::time::timeout(DELAY + Duration::from_secs(5), readiness.message())
        .await
        .expect("the watch ends once the drain starts");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    assert!(signalled.elapsed() >= DELAY, "{:?}", signalled.elapsed());
    let lines = server.exited().await;
    assert!(
        signalled.elapsed() < DELAY + Duration::from_secs(5),
        "the drain waited on something (its timeout is 10 s): {:?}",
        signalled.elapsed()
    );
    let position = |text: &str| {
        lines
            .iter()
            .position(|l| l["msg"].as_str().is_some_and(|m| m.contains(text)))
            .unwrap_or_else(|| panic!("no line with {text:?}"))
    };
    assert!(position("Leaving the fleet") < position("Shutdown requested"));
}

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
        config.serving.drain_timeout_secs = 1;
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
