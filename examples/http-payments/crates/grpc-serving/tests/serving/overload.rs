//! Load shedding: beyond the limit of calls in flight, a call is refused at once with UNAVAILABLE,
//! before any handler runs, and recorded (server span, RPC metrics, the shed counter); health
//! checks are never refused. (A limit that is not a whole number above 0 is refused when the flags
//! are read: `Config`'s unit tests.)

use std::time::{Duration, Instant};

use telemetry_testing::{ARRIVAL, check_attributes};
use tonic::Code;

use crate::support::{
    TestServer, assert_serving, call, full, handled, reached_its_handler, server_spans, world,
};

/// Well below the 200 ms a served call takes: a refused call never waited for a place.
const AT_ONCE: Duration = Duration::from_millis(100);

/// 20 calls at once against a limit of 4: 4 are served, 16 refused at once, none of which reached
/// the handler. Each refusal has a server span that says why and the RPC metrics by status, and
/// `<prefix>.requests.shed` counts exactly 16: the prefix is this test's own, so no other test
/// moves the counter.
#[tokio::test]
async fn calls_beyond_the_limit_are_refused_at_once_with_unavailable() {
    const PREFIX: &str = "overload";
    let mut server = TestServer::start(PREFIX, |config| config.max_concurrent_calls = 4).await;
    let client = server.client().await;
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = call(&mut client, "Shed", 200).await;
                (result, started.elapsed())
            })
        })
        .collect();
    let (mut served, mut refused) = (0, 0);
    for call in calls {
        let (result, took) = call.await.unwrap();
        match result {
            Ok(answer) => {
                assert_eq!(answer, 200);
                served += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    status.message().contains("MAX_CONCURRENT_CALLS"),
                    "{status:?}"
                );
                assert!(took < AT_ONCE, "refused after {took:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((served, refused), (4, 16));
    // No handler ran for a refused call.
    assert_eq!(handled("Shed"), 4, "a refused call reached its handler");

    // Its server span says UNAVAILABLE and why; it has no handler span under it.
    let spans = server_spans("Shed", 20).await;
    let refusal = spans
        .iter()
        .find(|s| s.status == "ERROR")
        .unwrap_or_else(|| panic!("no refused server span: {spans:?}"));
    assert_eq!(refusal.name, "grpc.server.Shed");
    check_attributes(
        refusal,
        &[
            ("rpc.status_code", "UNAVAILABLE"),
            ("error.type", "UNAVAILABLE"),
        ],
    );
    assert!(
        refusal.status_message.contains("MAX_CONCURRENT_CALLS"),
        "{refusal:?}"
    );
    let everything = world().receiver.spans();
    assert!(
        everything
            .iter()
            .all(|s| s.name != "handle" || s.parent_span_id != refusal.span_id),
        "a handler span under a refused call"
    );

    // Counted: the shed counter and the RPC metrics by status.
    let shed = format!("{PREFIX}.requests.shed");
    let method = full("Shed");
    let points = world()
        .receiver
        .wait_for(ARRIVAL, |r| {
            let points = r.points();
            let ready = points.iter().any(|p| p.metric == shed && p.value >= 16.0);
            ready.then_some(points)
        })
        .await
        .unwrap_or_else(|| panic!("{shed} never reached 16"));
    let counted = points.iter().rev().find(|p| p.metric == shed).unwrap();
    assert_eq!(
        (counted.kind, counted.monotonic, counted.unit.as_str()),
        ("sum", true, "{requests}")
    );
    assert_eq!(counted.value, 16.0, "{counted:?}");
    let refusals = points
        .iter()
        .rev()
        .find(|p| {
            p.metric == "rpc.server.call.duration"
                && p.attributes.get("rpc.method") == Some(&method)
                && p.attributes.get("rpc.status_code").map(String::as_str) == Some("UNAVAILABLE")
        })
        .unwrap_or_else(|| panic!("the refusals are not in rpc.server.call.duration"));
    assert_eq!(refusals.value, 16.0, "{refusals:?}");
    server.stop();
}

/// With its one place held, the server refuses a call but still answers health checks, liveness
/// and readiness: a busy replica is not a dead one.
#[tokio::test]
async fn health_checks_are_answered_when_the_limit_is_reached() {
    let mut server = TestServer::start("at-limit", |config| config.max_concurrent_calls = 1).await;
    let mut client = server.client().await;
    let mut holder = client.clone();
    let held = tokio::spawn(async move { call(&mut holder, "HoldsThePlace", 30_000).await });
    reached_its_handler("HoldsThePlace").await;
    let refused = call(&mut client, "HoldsThePlace", 0).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Code::Unavailable,
        "at the limit: {refused:?}"
    );

    assert_serving(server.channel().await).await;
    held.abort();
    server.stop();
}
