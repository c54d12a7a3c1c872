//! The service's own request metrics and the RPC conventions' duration histograms, by name, unit and attributes;
//! health checks are not counted.

use telemetry_testing::ReceivedPoint;

use crate::helpers::{ARRIVAL, method, metric, spawn_app, unique_id, world};

const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[track_caller]
fn point<'a>(
    points: &'a [ReceivedPoint],
    metric: &str,
    attributes: &[(&str, &str)],
) -> &'a ReceivedPoint {
    points
        .iter()
        .rev()
        .find(|p| {
            p.metric == metric
                && attributes
                    .iter()
                    .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no point of {metric} with {attributes:?}"))
}

#[tokio::test]
async fn calls_are_counted_and_timed_in_seconds() {
    let mut app = spawn_app().await;
    for _ in 0..3 {
        app.client
            .process_request(unique_id("metrics"))
            .await
            .unwrap();
    }
    world().flush().await;
    let method = method();
    let method = method.as_str();
    let points = world()
        .receiver
        .wait_for(ARRIVAL, |r| {
            let points = r.points();
            let ready = [
                metric("requests.total"),
                "rpc.client.call.duration".to_owned(),
                metric("client.calls.total"),
            ]
            .iter()
            .all(|m| points.iter().any(|p| p.metric == *m));
            ready.then_some(points)
        })
        .await
        .expect("metrics arrive after a flush");

    let total = point(
        &points,
        &metric("requests.total"),
        &[("method", "ProcessRequest"), ("error", "false")],
    );
    assert_eq!(
        (total.kind, total.monotonic, total.unit.as_str()),
        ("sum", true, "{requests}")
    );
    assert!(total.value >= 3.0, "{total:?}");

    let duration = point(
        &points,
        &metric("request.duration"),
        &[("method", "ProcessRequest"), ("error", "false")],
    );
    assert_eq!((duration.kind, duration.unit.as_str()), ("histogram", "s"));
    assert_eq!(duration.bounds, BUCKETS);

    let active = point(
        &points,
        &metric("requests.active"),
        &[("method", "ProcessRequest")],
    );
    assert_eq!(
        (active.kind, active.monotonic, active.unit.as_str()),
        ("sum", false, "{requests}")
    );

    let rpc = point(
        &points,
        "rpc.server.call.duration",
        &[
            ("rpc.system.name", "grpc"),
            ("rpc.method", method),
            ("rpc.status_code", "OK"),
        ],
    );
    assert_eq!((rpc.kind, rpc.unit.as_str()), ("histogram", "s"));
    assert_eq!(rpc.bounds, BUCKETS);
    assert!(!rpc.attributes.contains_key("error.type"));
    let client_rpc = point(
        &points,
        "rpc.client.call.duration",
        &[("rpc.method", method), ("rpc.status_code", "OK")],
    );
    assert_eq!(client_rpc.unit, "s");

    let calls = point(
        &points,
        &metric("client.calls.total"),
        &[("service", proto::GRPC_SERVICE), ("error", "false")],
    );
    assert_eq!((calls.kind, calls.unit.as_str()), ("sum", "{calls}"));
    point(
        &points,
        &metric("client.call.duration"),
        &[("error", "false")],
    );

    // Low cardinality: no request id or peer address on any metric.
    for p in &points {
        for key in ["request.id", "network.peer.address", "network.peer.port"] {
            assert!(!p.attributes.contains_key(key), "{key} on {}", p.metric);
        }
    }
    app.stop();
}
