//! Retries (gRFC A6) and deadlines, end to end: the real client against scripted servers that
//! answer as a test needs, behind the same layers as the real server (telemetry, deadline).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::{MyRequest, MyResponse, StreamRequest, StreamResult};
use tonic::{Code, Request, Response, Status};

use crate::helpers::{ARRIVAL, metric, span, unique_id, world};

/// What a scripted server saw of one call.
#[derive(Clone, Debug)]
struct Seen {
    previous_attempts: Option<String>,
    timeout: Option<Duration>,
}

/// A server that answers each call with the next scripted status (or `always`), then OK; a
/// handler that takes `latency`, holding a guard whose drop says its work was dropped.
#[derive(Clone, Default)]
struct Scripted {
    script: Arc<Mutex<VecDeque<Status>>>,
    always: Option<Code>,
    latency: Duration,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Set when a handler's work was dropped before it finished.
    dropped: Arc<AtomicBool>,
    finished: Arc<AtomicUsize>,
    dropped_tx: Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
    /// A call made downstream, with what the handler had left of its deadline.
    downstream: Option<(client::Client, Arc<Mutex<Option<Duration>>>)>,
}

impl Scripted {
    fn failing(statuses: impl IntoIterator<Item = Status>) -> Self {
        Self {
            script: Arc::new(Mutex::new(statuses.into_iter().collect())),
            ..Self::default()
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn answer(&self, request: &Request<impl Sized>) -> Result<(), Status> {
        let metadata = request.metadata();
        self.seen.lock().unwrap().push(Seen {
            previous_attempts: metadata
                .get("grpc-previous-rpc-attempts")
                .map(|v| v.to_str().unwrap().to_owned()),
            timeout: telemetry::grpc::grpc_timeout(&metadata.clone().into_headers()),
        });
        if let Some(code) = self.always {
            return Err(Status::new(code, "scripted"));
        }
        match self.script.lock().unwrap().pop_front() {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }
}

/// Says, when dropped before `done`, that the handler's work was dropped.
struct WorkGuard {
    scripted: Scripted,
    done: bool,
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if !self.done {
            self.scripted.dropped.store(true, Ordering::SeqCst);
            if let Some(tx) = self.scripted.dropped_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    }
}

#[tonic::async_trait]
impl proto::Service for Scripted {
    async fn process_request(
        &self,
        request: Request<MyRequest>,
    ) -> Result<Response<MyResponse>, Status> {
        self.answer(&request)?;
        if let Some((downstream, left)) = &self.downstream {
            let deadline = request
                .extensions()
                .get::<server::Deadline>()
                .copied()
                .expect("the call came with a deadline");
            let remaining = deadline.remaining();
            *left.lock().unwrap() = Some(remaining);
            downstream
                .with_timeout(remaining)
                .process_request(request.get_ref().id.clone())
                .await?;
        }
        if !self.latency.is_zero() {
            let mut guard = WorkGuard {
                scripted: self.clone(),
                done: false,
            };
            tokio::time::sleep(self.latency).await;
            guard.done = true;
            self.finished.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Response::new(MyResponse {
            result: "success".to_owned(),
        }))
    }

    type StreamResultsStream = tokio_stream::wrappers::ReceiverStream<Result<StreamResult, Status>>;

    async fn stream_results(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamResultsStream>, Status> {
        self.answer(&request)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(tx);
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}

/// Serves `service` on `ip` (port 0: any) behind the server's own layers; stops when dropped.
struct Replica {
    address: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(service: Scripted) -> Replica {
    world();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let layer =
        telemetry::grpc::GrpcServerLayer::new(proto::METRIC_PREFIX, &[proto::FILE_DESCRIPTOR_SET]);
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .layer(grpc_serving::deadline::DeadlineLayer)
            .add_service(proto::ServiceServer::new(service))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    Replica {
        address,
        _stop: stop,
    }
}

/// Quick backoff, so the tests take milliseconds; the rest default.
fn quick() -> client::CallSettings {
    client::CallSettings {
        initial_backoff_ms: 10,
        max_backoff_ms: 50,
        ..client::CallSettings::default()
    }
}

async fn client_of(replica: &Replica, settings: client::CallSettings) -> client::Client {
    client::Client::connect(
        &format!("http://{}", replica.address),
        Duration::from_secs(5),
    )
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
    let mut client = client_of(&replica, quick()).await;
    let id = unique_id("retried");

    let response = client.process_request(id.clone()).await.unwrap();
    assert_eq!(response.result, "success");

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
        .filter(|s| s.name == "grpc.client.ProcessRequest")
        .collect();
    assert_eq!(calls.len(), 1, "{spans:#?}");
    let client_span = span(&spans, "grpc.client.ProcessRequest");
    assert_eq!(client_span.kind, "INTERNAL");
    assert_eq!(client_span.attributes["rpc.status_code"], "OK");
    let attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "grpc.client.attempt.ProcessRequest")
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
    let mut client = client_of(&replica, quick()).await;
    let status = client.process_request("x").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(service.seen().len(), 1);
}

#[tokio::test]
async fn a_method_not_marked_idempotent_is_not_retried() {
    let service = Scripted::failing([Status::unavailable("going away")]);
    let replica = serve(service.clone()).await;
    let mut client = client_of(&replica, quick()).await;
    let status = client
        .stream_results("x", 1, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(service.seen().len(), 1, "StreamResults is not idempotent");
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
    let mut client = client_of(&replica, quick()).await;
    let started = Instant::now();
    client.process_request("x").await.unwrap();
    let waited = started.elapsed();
    assert_eq!(service.seen().len(), 2);
    assert!(
        waited >= Duration::from_millis(300),
        "the retry came {waited:?} after, not the 300 ms the server asked (backoff is 10 ms)"
    );

    let service = Scripted::failing([pushback("-1")]);
    let replica = serve(service.clone()).await;
    let mut client = client_of(&replica, quick()).await;
    let status = client.process_request("x").await.unwrap_err();
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
    let settings = client::CallSettings {
        initial_backoff_ms: 1,
        max_backoff_ms: 1,
        ..client::CallSettings::default()
    };
    let mut client = client_of(&replica, settings).await;
    // The bucket (100 tokens; retries stop below 50) drains within the first calls...
    for _ in 0..40 {
        assert!(client.process_request("x").await.is_err());
    }
    // ...after which retries stop: about one attempt per call.
    let before = service.seen().len();
    let calls = 50;
    for _ in 0..calls {
        let status = client.process_request("x").await.unwrap_err();
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
    let settings = client::CallSettings {
        timeout_ms: 500,
        max_attempts: 5,
        initial_backoff_ms: 100,
        max_backoff_ms: 400,
        ..client::CallSettings::default()
    };
    let mut client = client_of(&replica, settings).await;
    let started = Instant::now();
    let status = client.process_request("x").await.unwrap_err();
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
async fn a_deadline_ends_the_call_on_both_sides_and_drops_the_handlers_work() {
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
    let status = client
        .with_timeout(Duration::from_millis(100))
        .process_request(id.clone())
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

    let spans = world().trace_of(&id, 3).await;
    let client_span = span(&spans, "grpc.client.ProcessRequest");
    let server_span = span(&spans, "grpc.server.ProcessRequest");
    assert_eq!(
        client_span.attributes["rpc.status_code"],
        "DEADLINE_EXCEEDED"
    );
    assert_eq!(
        server_span.attributes["rpc.status_code"],
        "DEADLINE_EXCEEDED"
    );
}

#[tokio::test]
async fn a_handler_passes_what_is_left_of_its_deadline_downstream() {
    let downstream = Scripted::default();
    let downstream_replica = serve(downstream.clone()).await;
    let left = Arc::new(Mutex::new(None));
    let upstream = Scripted {
        downstream: Some((
            client_of(&downstream_replica, quick()).await,
            Arc::clone(&left),
        )),
        ..Scripted::default()
    };
    let upstream_replica = serve(upstream).await;
    let client = client_of(&upstream_replica, quick()).await;

    client
        .with_timeout(Duration::from_millis(300))
        .process_request("x")
        .await
        .unwrap();

    let left = left.lock().unwrap().expect("the handler read its deadline");
    assert!(left <= Duration::from_millis(300), "{left:?}");
    let sent = downstream.seen()[0]
        .timeout
        .expect("the downstream call carried a deadline");
    assert!(
        sent <= left,
        "downstream grpc-timeout {sent:?} is no more than what was left, {left:?}"
    );
}

/// Overload across a fleet: three real servers on 127.0.0.1, .2 and .3 (one port, as pods), each
/// with room for 4 calls of 200 ms, and a burst of 20: the calls a replica sheds (UNAVAILABLE)
/// are retried on the others, and none fails. The burst asks more than the default retry budget
/// gives at once (the throttle is for a fleet that keeps failing): 5 attempts, a 100-token bucket.
#[tokio::test]
async fn a_burst_over_three_shedding_replicas_fails_no_call_with_retries() {
    world();
    let first = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = first.local_addr().unwrap().port();
    let mut listeners = vec![first];
    for ip in ["127.0.0.2", "127.0.0.3"] {
        listeners.push(tokio::net::TcpListener::bind((ip, port)).await.unwrap());
    }
    let mut stops = Vec::new();
    let mut endpoints = Vec::new();
    for listener in listeners {
        let address = listener.local_addr().unwrap();
        let mut config = server::Config::for_address(address);
        config.serving.max_concurrent_calls = 4;
        config.db_latency_ms = 200;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server::run(listener, config, async {
            let _ = stopped.await;
        }));
        stops.push(stop);
        endpoints
            .push(tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap());
    }
    let channel = tonic::transport::Channel::balance_list(endpoints.into_iter());
    let client = client::Client::from_channel(channel, "fleet", port)
        .with_settings(client::CallSettings {
            max_attempts: 5,
            throttle_max_tokens: 100,
            ..client::CallSettings::default()
        })
        .unwrap();

    let calls: Vec<_> = (0..20)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move { client.process_request(format!("burst-{i}")).await })
        })
        .collect();
    let mut failed = Vec::new();
    for call in calls {
        if let Err(status) = call.await.unwrap() {
            failed.push(status);
        }
    }
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    drop(stops);
}
