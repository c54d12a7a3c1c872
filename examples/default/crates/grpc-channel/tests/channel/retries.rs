//! Retries (gRFC A6) and deadlines, end to end: a connection against scripted servers that answer
//! as a test needs, behind the telemetry layer the services' servers use.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grpc_channel::{CallSettings, Connection};
use tonic::{Code, Status};

use crate::helpers::{ARRIVAL, metric, span, unique_id, world};
use crate::service::{Replica, SERVICE, Scripted, get, sum, watch};

/// Serves `service` on 127.0.0.1 (any port); stops when dropped.
async fn serve(service: Scripted) -> Replica {
    Replica::start(service, "127.0.0.1", 0, None).await
}

/// Quick backoff, so the tests take milliseconds; the rest default.
fn quick() -> CallSettings {
    CallSettings {
        initial_backoff_ms: 10,
        max_backoff_ms: 50,
        ..CallSettings::default()
    }
}

async fn client_of(replica: &Replica, settings: CallSettings) -> Connection {
    Connection::connect(SERVICE, &replica.url(), Duration::from_secs(5))
        .await
        .unwrap()
        .with_settings(settings)
        .unwrap()
}

#[tokio::test]
async fn unavailable_twice_then_ok_is_three_attempts_in_one_client_span() {
    let service = Scripted::failing([
        Status::unavailable("going away"),
        Status::unavailable("going away"),
    ]);
    let replica = serve(service.clone()).await;
    let client = client_of(&replica, quick()).await;
    let id = unique_id("retried");

    let response = get(&client, &id).await.unwrap();
    assert_eq!(response, 7, "the server's answer");

    let previous: Vec<_> = service
        .seen()
        .into_iter()
        .map(|s| s.previous_attempts)
        .collect();
    assert_eq!(
        previous,
        [None, Some("1".to_owned()), Some("2".to_owned())],
        "grpc-previous-rpc-attempts as the server saw it"
    );

    // 1 call span, 3 CLIENT attempt spans under it, 3 SERVER spans, each under an attempt.
    let spans = world().trace_of(&id, 7).await;
    let calls: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "grpc.client.Get")
        .collect();
    assert_eq!(calls.len(), 1, "{spans:#?}");
    let client_span = span(&spans, "grpc.client.Get");
    assert_eq!(client_span.kind, "INTERNAL");
    assert_eq!(client_span.attributes["rpc.status_code"], "OK");
    let attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "grpc.client.attempt.Get")
        .collect();
    assert_eq!(attempts.len(), 3, "{spans:#?}");
    let mut numbers: Vec<_> = attempts
        .iter()
        .map(|a| {
            assert_eq!(a.kind, "CLIENT");
            assert_eq!(a.parent_span_id, client_span.span_id);
            (
                a.attributes["grpc.attempt"].clone(),
                a.attributes["rpc.status_code"].clone(),
            )
        })
        .collect();
    numbers.sort();
    assert_eq!(
        numbers,
        [
            ("1".to_owned(), "UNAVAILABLE".to_owned()),
            ("2".to_owned(), "UNAVAILABLE".to_owned()),
            ("3".to_owned(), "OK".to_owned()),
        ]
    );
    let servers: Vec<_> = spans.iter().filter(|s| s.kind == "SERVER").collect();
    assert_eq!(servers.len(), 3, "{spans:#?}");
    for server in &servers {
        let parent = attempts
            .iter()
            .find(|a| a.span_id == server.parent_span_id)
            .unwrap_or_else(|| panic!("a server span's parent is not an attempt: {server:?}"));
        assert_eq!(parent.trace_id, server.trace_id);
        assert_eq!(
            server.attributes.get("grpc.previous_rpc_attempts"),
            parent
                .attributes
                .get("grpc.attempt")
                .filter(|n| *n != "1")
                .map(|n| (n.parse::<u32>().unwrap() - 1).to_string())
                .as_ref(),
            "the server span records grpc-previous-rpc-attempts"
        );
    }
}

#[tokio::test]
async fn invalid_argument_is_not_retried() {
    let service = Scripted::failing([Status::invalid_argument("bad id")]);
    let replica = serve(service.clone()).await;
    let client = client_of(&replica, quick()).await;
    let status = get(&client, "x").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(service.seen().len(), 1);
}

#[tokio::test]
async fn a_method_not_marked_idempotent_is_not_retried() {
    let service = Scripted::failing([Status::unavailable("going away")]);
    let replica = serve(service.clone()).await;
    let client = client_of(&replica, quick()).await;
    let status = watch(&client, "x").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(service.seen().len(), 1, "Watch is not idempotent");
}

/// The retry sends the caller's stream again from the retry buffer; a call that sent more than
/// the buffer holds is committed to its attempt and not retried.
#[tokio::test]
async fn a_client_stream_is_replayed_and_past_the_retry_buffer_committed() {
    let service = Scripted::failing([Status::unavailable("going away")]);
    let replica = serve(service.clone()).await;
    let client = client_of(&replica, quick()).await;
    assert_eq!(
        sum(&client, "small", 1..=3).await.unwrap(),
        6,
        "the retry sent the whole stream again"
    );
    assert_eq!(service.take(), 2);

    let service = Scripted::failing([Status::unavailable("going away")]);
    let replica = serve(service.clone()).await;
    let client = client_of(&replica, quick()).await;
    // Some 9 bytes a message (frame header, tag, varint): well past the 256 KiB buffer.
    let count = u64::try_from(grpc_channel::retry::RETRY_BUFFER_BYTES).unwrap() / 4;
    let status = sum(&client, "large", 1..=count).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(service.take(), 1, "past the retry buffer: committed");
}

#[tokio::test]
async fn the_servers_pushback_sets_the_delay_and_a_negative_one_stops_retries() {
    let pushback = |value: &'static str| {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("grpc-retry-pushback-ms", value.parse().unwrap());
        Status::with_metadata(Code::Unavailable, "busy", metadata)
    };
    let service = Scripted::failing([pushback("300")]);
    let replica = serve(service.clone()).await;
    let client = client_of(&replica, quick()).await;
    let started = Instant::now();
    get(&client, "x").await.unwrap();
    let waited = started.elapsed();
    assert_eq!(service.seen().len(), 2);
    assert!(
        waited >= Duration::from_millis(300),
        "the retry came {waited:?} after, not the 300 ms the server asked (backoff is 10 ms)"
    );

    let service = Scripted::failing([pushback("-1")]);
    let replica = serve(service.clone()).await;
    let client = client_of(&replica, quick()).await;
    let status = get(&client, "x").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        service.seen().len(),
        1,
        "a negative pushback means: do not retry"
    );
}

#[tokio::test]
async fn the_throttle_holds_a_failing_fleet_to_about_one_attempt_per_call() {
    let service = Scripted {
        always: Some(Code::Unavailable),
        ..Scripted::default()
    };
    let replica = serve(service.clone()).await;
    let settings = CallSettings {
        initial_backoff_ms: 1,
        max_backoff_ms: 1,
        ..CallSettings::default()
    };
    let client = client_of(&replica, settings).await;
    // The bucket (100 tokens; retries stop below 50) drains within the first calls...
    for _ in 0..40 {
        assert!(get(&client, "x").await.is_err());
    }
    // ...after which retries stop: about one attempt per call.
    let before = service.seen().len();
    let calls = 50;
    for _ in 0..calls {
        let status = get(&client, "x").await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }
    let attempts = service.seen().len() - before;
    #[allow(clippy::cast_precision_loss)]
    let per_call = attempts as f64 / f64::from(calls);
    assert!(per_call <= 1.1, "{per_call} attempts per call once drained");
    assert!(before > 40, "retries were made before it drained");

    // Each retry the throttle refused is counted (no other test drains a bucket), and so is
    // every attempt.
    world().flush().await;
    let throttled = metric("client.retries.throttled");
    let attempts = metric("client.attempts.total");
    let points = world()
        .receiver
        .wait_for(ARRIVAL, |r| {
            let points = r.points();
            let ready = points
                .iter()
                .any(|p| p.metric == throttled && p.value >= f64::from(calls));
            ready.then_some(points)
        })
        .await
        .unwrap_or_else(|| panic!("{throttled} never reached {calls}"));
    let counted = points.iter().rev().find(|p| p.metric == throttled).unwrap();
    assert_eq!(
        (counted.kind, counted.monotonic, counted.unit.as_str()),
        ("sum", true, "{retries}")
    );
    assert!(
        points.iter().any(|p| p.metric == attempts
            && p.attributes.get("error").map(String::as_str) == Some("true")),
        "failed attempts are in {attempts}"
    );
}

#[tokio::test]
async fn no_attempt_outlives_the_calls_deadline() {
    let service = Scripted {
        always: Some(Code::Unavailable),
        ..Scripted::default()
    };
    let replica = serve(service.clone()).await;
    let settings = CallSettings {
        timeout_ms: 500,
        max_attempts: 5,
        initial_backoff_ms: 100,
        max_backoff_ms: 400,
        ..CallSettings::default()
    };
    let client = client_of(&replica, settings).await;
    let started = Instant::now();
    let status = get(&client, "x").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    let seen = service.seen();
    // 0, ~100, ~300 ms: the next backoff (~400 ms) would pass the deadline, so no fourth.
    assert!((2..=4).contains(&seen.len()), "{seen:?}");
    let mut last = Duration::from_millis(500);
    for attempt in &seen {
        let timeout = attempt.timeout.expect("every attempt carries grpc-timeout");
        assert!(
            timeout <= last,
            "each attempt carries what is left: {seen:?}"
        );
        last = timeout;
    }
}

#[tokio::test]
async fn a_deadline_ends_the_call_and_the_handlers_work() {
    let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel();
    let service = Scripted {
        latency: Duration::from_secs(1),
        dropped_tx: Arc::new(Mutex::new(Some(dropped_tx))),
        ..Scripted::default()
    };
    let replica = serve(service.clone()).await;
    let client = client_of(&replica, quick()).await;
    let id = unique_id("deadline");

    let started = Instant::now();
    let status = get(&client.with_timeout(Duration::from_millis(100)), &id)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(took < Duration::from_millis(150), "{took:?}");

    tokio::time::timeout(Duration::from_secs(1), dropped_rx)
        .await
        .expect("the handler's work was dropped at the deadline")
        .unwrap();
    assert!(service.dropped.load(Ordering::SeqCst));
    assert_eq!(service.finished.load(Ordering::SeqCst), 0);

    // The server's span: its status is its deadline layer's to say, which is tested with the
    // server (`tests/api/deadlines.rs` of a service); here, only that the call did not succeed.
    let spans = world().trace_of(&id, 3).await;
    let client_span = span(&spans, "grpc.client.Get");
    let server_span = span(&spans, "grpc.server.Get");
    assert_eq!(
        client_span.attributes["rpc.status_code"],
        "DEADLINE_EXCEEDED"
    );
    assert_ne!(server_span.attributes["rpc.status_code"], "OK");
}

/// tonic enforces `grpc-timeout` only until the response headers; a server that does not enforce
/// it either (this replica has no deadline layer) would stream on past the call's deadline.
#[tokio::test]
async fn a_stream_from_a_server_that_ignores_the_deadline_ends_at_it() {
    let service = Scripted {
        endless: true,
        ..Scripted::default()
    };
    let replica = serve(service).await;
    let client = client_of(&replica, quick()).await;
    let id = unique_id("stream-deadline");
    let started = Instant::now();
    let mut stream = watch(&client.with_timeout(Duration::from_millis(300)), &id)
        .await
        .unwrap();
    let mut received = 0;
    let status = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => received += 1,
                Ok(None) => panic!("the stream ended without its status"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the call's deadline ends the stream");
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(received >= 3, "mid-stream: {received} messages came first");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "{took:?}"
    );

    let spans = world().trace_of(&id, 3).await;
    let call = span(&spans, "grpc.client.Watch");
    assert_eq!(call.attributes["rpc.status_code"], "DEADLINE_EXCEEDED");
}
