//! Graceful shutdown of the binary: SIGTERM reaches the shared drain with the service's flags.
//! How the drain behaves (readiness, the delay, in-flight calls, the drain timeout) is the same
//! for every service: `grpc-serving`'s tests.

use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::ServerProcess;

/// SIGTERM turns the binary's readiness health (the service's name) NOT_SERVING at once; the
/// process exits with success after `DRAIN_DELAY_SECS`, without waiting for its drain timeout,
/// having logged both steps in order.
#[tokio::test]
async fn sigterm_reports_not_ready_and_drains_after_the_delay() {
    const DELAY: Duration = Duration::from_secs(2);
    let server = ServerProcess::start(&[
        ("OTEL_SDK_DISABLED", "true"),
        ("DRAIN_DELAY_SECS", "2"),
        ("DRAIN_TIMEOUT_SECS", "10"),
    ])
    .await;
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone())
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

    let signalled = Instant::now();
    server.sigterm();
    let changed = tokio::time::timeout(Duration::from_secs(2), readiness.message())
        .await
        .expect("readiness changes at once")
        .unwrap()
        .expect("a status, not the end of the watch");
    assert_eq!(changed.status(), ServingStatus::NotServing);
    // The rest of the drain (calls served through the delay, watches ended, in-flight calls
    // drained) is `grpc-serving`'s: here, the flags set its delay and timeout.
    let lines = server.exited().await;
    assert!(signalled.elapsed() >= DELAY, "{:?}", signalled.elapsed());
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
