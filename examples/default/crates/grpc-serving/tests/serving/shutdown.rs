//! Graceful shutdown: readiness turns NOT_SERVING for the drain delay while calls are still
//! served, then in-flight calls finish, new connections are refused, and what the drain timeout
//! cuts is recorded before the server returns. (That SIGTERM starts this is the service binary's
//! wiring: its own test sends it.)

use std::time::{Duration, Instant};

use telemetry_testing::check_attributes;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{SERVICE, TestServer, call, full, reached_its_handler, world};

/// Stopping turns the readiness health (the service's name) NOT_SERVING at once, while liveness
/// ("") stays SERVING and calls are still served, old connections and new, for the drain delay;
/// then the server drains, ending the health watches so they do not hold the drain, and returns
/// without waiting for its drain timeout.
#[tokio::test]
async fn stopping_reports_not_ready_and_serves_through_the_drain_delay() {
    const DELAY: Duration = Duration::from_secs(2);
    let mut server = TestServer::start("drain-delay", |config| {
        config.drain_delay_secs = DELAY.as_secs();
        config.drain_timeout_secs = 10;
    })
    .await;
    let mut health = HealthClient::new(server.channel().await);
    let mut readiness = health
        .watch(HealthCheckRequest {
            service: SERVICE.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = readiness.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    let mut client = server.client().await;

    let signalled = Instant::now();
    server.stop();
    let changed = tokio::time::timeout(Duration::from_secs(1), readiness.message())
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
    call(&mut client, "DuringDelay", 0)
        .await
        .expect("a call on an open connection is served during the delay");
    let mut late = server.client().await;
    call(&mut late, "LateDuringDelay", 0)
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
    let finished = tokio::time::timeout(Duration::from_secs(5), &mut server.task).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "{finished:?}");
    assert!(
        signalled.elapsed() < DELAY + Duration::from_secs(5),
        "the drain waited on something (its timeout is 10 s): {:?}",
        signalled.elapsed()
    );
}

/// A call in flight when the server is stopped completes; then the server returns and accepts no
/// new connection.
#[tokio::test]
async fn stopping_drains_in_flight_calls() {
    let mut server = TestServer::start("drained", |_| {}).await;
    let mut client = server.client().await;
    let in_flight = tokio::spawn(async move { call(&mut client, "Drained", 300).await });
    // Stop once the call is in its handler (which takes 300 ms).
    reached_its_handler("Drained").await;
    server.stop();

    let answer = in_flight
        .await
        .unwrap()
        .expect("an in-flight call completes during the drain");
    assert_eq!(answer, 300);
    let finished = tokio::time::timeout(Duration::from_secs(5), &mut server.task).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "the server stops once drained: {finished:?}"
    );
    let endpoint = tonic::transport::Endpoint::from_shared(server.url()).unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(1), endpoint.connect()).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a stopped server accepts no connection"
    );
}

/// A call that would outlast the drain timeout is cut at it: the server returns within it, the
/// client sees the call fail, and the cut call's server span (UNAVAILABLE, "drain timeout") and
/// its handler's span were recorded before the server returned.
#[tokio::test]
async fn the_drain_timeout_bounds_shutdown() {
    let mut server = TestServer::start("stuck", |config| config.drain_timeout_secs = 1).await;
    let mut client = server.client().await;
    let stuck = tokio::spawn(async move { call(&mut client, "Stuck", 30_000).await });
    reached_its_handler("Stuck").await;
    let started = Instant::now();
    server.stop();
    let finished = tokio::time::timeout(Duration::from_secs(5), &mut server.task).await;
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

    // Recorded by the time the server returned: found without waiting for more.
    world().flush().await;
    let spans = world().receiver.spans();
    let method = full("Stuck");
    let server_span = spans
        .iter()
        .find(|s| s.kind == "SERVER" && s.attributes.get("rpc.method") == Some(&method))
        .unwrap_or_else(|| panic!("no server span of the cut call"));
    assert_eq!(server_span.status, "ERROR", "{server_span:?}");
    assert!(
        server_span.status_message.contains("drain timeout"),
        "{server_span:?}"
    );
    check_attributes(
        server_span,
        &[
            ("rpc.status_code", "UNAVAILABLE"),
            ("error.type", "UNAVAILABLE"),
        ],
    );
    // The handler was dropped with its call: its span ended there, not 30 s later.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "handle" && s.parent_span_id == server_span.span_id),
        "no handler span under the cut call"
    );
}
