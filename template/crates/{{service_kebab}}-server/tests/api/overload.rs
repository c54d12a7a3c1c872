//! Load shedding: beyond the limit of calls in flight, a call is refused at once with UNAVAILABLE,
//! before any handler runs, and recorded (server span, RPC metrics, the shed counter); health
//! checks are never refused.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{ARRIVAL, check_attributes, metric, span, spawn_app_with, unique_id, world};

/// Well below the 200 ms a served call takes: a refused call never waited for a place.
const AT_ONCE: Duration = Duration::from_millis(100);

#[tokio::test]
async fn calls_beyond_the_limit_are_refused_at_once_with_unavailable() {
    let mut app = spawn_app_with(|config| {
        config.serving.max_concurrent_calls = 4;
        config.db_latency_ms = 200;
    })
    .await;
    // One replica and no retries: what each call's first attempt meets (retries.rs sends the same
    // burst, with retries, to three replicas).
    let client = app
        .client
        .clone()
        .with_settings(client::CallSettings {
            max_attempts: 1,
            ..client::CallSettings::default()
        })
        .unwrap();
    let prefix = unique_id("shed");
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let mut client = client.clone();
            let id = format!("{prefix}-{i}");
            tokio::spawn(async move {
                let started = Instant::now();
                let result = client.process_request(id.clone()).await;
                (id, result, started.elapsed())
            })
        })
        .collect();
    let mut served = Vec::new();
    let mut refused = Vec::new();
    for call in calls {
        let (id, result, took) = call.await.unwrap();
        match result {
            Ok(response) => {
                assert_eq!(response.result, "success");
                served.push(id);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    status.message().contains("MAX_CONCURRENT_CALLS"),
                    "{status:?}"
                );
                assert!(took < AT_ONCE, "{id} was refused after {took:?}");
                refused.push(id);
            }
        }
    }
    assert_eq!((served.len(), refused.len()), (4, 16), "{served:?}");

    // No handler ran for a refused call.
    for id in &refused {
        let processed = format!("Processing request: {id}");
        assert!(
            !world()
                .capture
                .lines()
                .iter()
                .any(|l| l.contains(&processed)),
            "{id} reached its handler"
        );
    }
    // Its server span says UNAVAILABLE and why; it has no handler spans under it.
    let trace = world().trace_of(&refused[0], 2).await;
    let server = span(&trace, "grpc.server.ProcessRequest");
    check_attributes(
        server,
        &[
            ("rpc.status_code", "UNAVAILABLE"),
            ("error.type", "UNAVAILABLE"),
        ],
    );
    assert_eq!(server.status, "ERROR", "{server:?}");
    assert!(
        server.status_message.contains("MAX_CONCURRENT_CALLS"),
        "{server:?}"
    );
    assert!(
        trace.iter().all(|s| s.name != "process-business-logic"),
        "{trace:?}"
    );

    // Counted: the shed counter (only this test sheds) and the RPC metrics by status.
    world().flush().await;
    let shed = metric("requests.shed");
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
    assert!(
        points.iter().any(|p| p.metric == "rpc.server.call.duration"
            && p.attributes.get("rpc.status_code").map(String::as_str) == Some("UNAVAILABLE")),
        "the refusals are in rpc.server.call.duration"
    );
    app.stop();
}

#[tokio::test]
async fn health_checks_are_answered_when_the_limit_is_reached() {
    let mut app = spawn_app_with(|config| {
        config.serving.max_concurrent_calls = 1;
        config.db_latency_ms = 30_000;
    })
    .await;
    let mut client = app.client.clone();
    let id = unique_id("holds-the-place");
    let call = id.clone();
    let held = tokio::spawn(async move { client.process_request(call).await });
    world()
        .wait_for_line(&format!("Processing request: {id}"))
        .await;

    let channel = tonic::transport::Endpoint::from_shared(app.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", proto::GRPC_SERVICE] {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("{service:?} at the limit: {status:?}"));
        assert_eq!(response.into_inner().status(), ServingStatus::Serving);
    }
    held.abort();
    app.stop();
}

/// A limit that is not a whole number above 0 stops the server at start, with one clear line.
#[test]
fn a_bad_limit_is_refused_at_start() {
    let cases: [(Option<&str>, &[&str]); 4] = [
        (Some("0"), &[]),
        (Some("-4"), &[]),
        (Some("many"), &[]),
        (None, &["--max-concurrent-calls", "-4"]),
    ];
    for (env, args) in cases {
        let mut command =
            std::process::Command::new(env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME"))));
        command
            .env_clear()
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("OTEL_SDK_DISABLED", "true")
            .args(args);
        if let Some(value) = env {
            command.env("MAX_CONCURRENT_CALLS", value);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{env:?} {args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--max-concurrent-calls")
                && stderr.contains("is not a whole number above 0"),
            "{env:?} {args:?}: {stderr}"
        );
        assert!(
            output.stdout.is_empty(),
            "{env:?} {args:?}: nothing started"
        );
    }
}
