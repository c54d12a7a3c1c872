//! Graceful shutdown of the binary: SIGTERM reaches the shared drain with the service's flags.
//! How the drain behaves (readiness, the delay, in-flight calls, the drain timeout) is the same
//! for every service: `grpc-serving`'s tests.

use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{ServerProcess, unique_id};

/// SIGTERM turns the binary's readiness health (the service's name) NOT_SERVING at once, while
/// calls are still served for `DRAIN_DELAY_SECS`; then the server drains and the process exits
/// with success, without waiting for its drain timeout, having logged both steps in order.
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
    let mut readiness = HealthClient::new(channel)
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
    client
        .process_request(unique_id("during-delay"))
        .await
        .expect("a call on an open connection is served during the delay");
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
