//! Every RPC shape (unary, server streaming, client streaming, bidirectional) through the real
//! layers on both sides (`grpc_serving::Server`, the client layer), and the ways a stream ends
//! badly. The service is test-only and hand-written over tonic's generic `Grpc` (messages are
//! `u64`, i.e. `UInt64Value`): no test proto to compile, and each test calls a method of its own,
//! so its spans and metrics are its own.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use telemetry_testing::{ARRIVAL, ReceivedPoint, ReceivedSpan, now_nanos, wait_until};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::support::{Methods, TestServer, descriptor_set, world};

const SERVICE: &str = "streams.v1.Shapes";
const PREFIX: &str = "streams";
/// The pause between two messages of a stream.
const GAP: Duration = Duration::from_millis(50);
/// The messages a well-behaved stream carries.
const MESSAGES: u64 = 4;

type MessageStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<u64, Status>> + Send>>;

/// The methods: `Unary`, `ClientStream` (sums) and `Bidi` (echoes) by shape, `Refuses` (logs an
/// error and answers INVALID_ARGUMENT); any other name is
/// server streaming, its behaviour chosen by the name (see [`server_stream`]).
#[derive(Clone, Debug)]
struct Shapes;

impl Methods for Shapes {
    const NAME: &'static str = SERVICE;

    async fn answer(
        self,
        method: String,
        request: http::Request<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<u64, u64>::default());
        match method.as_str() {
            "Unary" => {
                let handler = tower::service_fn(|r: Request<u64>| async move {
                    tokio::time::sleep(GAP).await;
                    Ok::<_, Status>(Response::new(r.into_inner() + 1))
                });
                grpc.unary(handler, request).await
            }
            "Refuses" => {
                // A handler that logs its refusal at ERROR, inside the server span.
                let handler = tower::service_fn(|_: Request<u64>| async move {
                    tracing::error!("refusing the request: it is the caller's mistake");
                    Err::<Response<u64>, _>(Status::invalid_argument("no such number"))
                });
                grpc.unary(handler, request).await
            }
            "ClientStream" => {
                let handler = tower::service_fn(|r: Request<Streaming<u64>>| async move {
                    let mut messages = r.into_inner();
                    let mut sum = 0;
                    while let Some(n) = messages.message().await? {
                        sum += n;
                    }
                    Ok::<_, Status>(Response::new(sum))
                });
                grpc.client_streaming(handler, request).await
            }
            "Bidi" => {
                let handler = tower::service_fn(|r: Request<Streaming<u64>>| async move {
                    let echoes: MessageStream = Box::pin(r.into_inner());
                    Ok::<_, Status>(Response::new(echoes))
                });
                grpc.streaming(handler, request).await
            }
            _ => {
                let handler = tower::service_fn(move |r: Request<u64>| {
                    let method = method.clone();
                    async move { Ok::<_, Status>(Response::new(server_stream(&method, r))) }
                });
                grpc.server_streaming(handler, request).await
            }
        }
    }
}

/// The methods whose streaming task has returned.
static ENDED_TASKS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Waits (bounded) until the streaming task of `method` has returned: no task outlives its call.
async fn task_ended(method: &str) {
    let what = format!("the task of {method} outlived its call");
    wait_until(Duration::from_secs(5), &what, || {
        ENDED_TASKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|m| m == method)
    })
    .await;
}

/// `ServerStream`: as many messages as asked, [`GAP`] apart. `Fails`: two messages, then
/// INTERNAL. Any other name: a message every 20 ms until the client goes away. The messages are
/// sent by a spawned task, as a handler that streams usually does.
fn server_stream(method: &str, request: Request<u64>) -> MessageStream {
    let (sender, receiver) = mpsc::channel(1);
    let asked = request.into_inner();
    let method = method.to_owned();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let message = match method.as_str() {
                "ServerStream" if n == asked => break,
                "ServerStream" => Ok(n),
                "Fails" if n == 2 => Err(Status::internal("broke mid-stream")),
                _ => Ok(n),
            };
            let last = message.is_err();
            if sender.send(message).await.is_err() || last {
                break;
            }
            n += 1;
            let gap = if method == "ServerStream" {
                GAP
            } else {
                Duration::from_millis(20)
            };
            tokio::time::sleep(gap).await;
        }
        ENDED_TASKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(method);
    });
    Box::pin(ReceiverStream::new(receiver))
}

/// The methods the layers name (any other is `_OTHER`).
const METHODS: [&str; 10] = [
    "Unary",
    "ServerStream",
    "ClientStream",
    "Bidi",
    "Dropped",
    "Fails",
    "Shutdown",
    "Deadline",
    "Refuses",
    "Cut",
];

/// The layers' descriptor set: the service's methods (any other is `_OTHER`).
static SHAPES_SET: LazyLock<Vec<u8>> = LazyLock::new(|| descriptor_set(SERVICE, &METHODS));

/// The service, served as every service is.
async fn start() -> TestServer {
    start_with_drain(grpc_serving::DEFAULT_DRAIN_TIMEOUT_SECS).await
}

/// Served as every service is: once stopped, open calls have `drain_timeout_secs` to end before
/// they are cut (`grpc_serving::drain`).
async fn start_with_drain(drain_timeout_secs: u64) -> TestServer {
    let configure = |config: &mut grpc_serving::Config| {
        config.drain_timeout_secs = drain_timeout_secs;
    };
    TestServer::serving(PREFIX, configure, |_| Shapes, SHAPES_SET.as_slice()).await
}

fn path(method: &str) -> PathAndQuery {
    PathAndQuery::try_from(format!("/{SERVICE}/{method}")).unwrap()
}

fn codec() -> ProstCodec<u64, u64> {
    ProstCodec::default()
}

/// `MESSAGES` messages, [`GAP`] apart, from a spawned task; and when the last one was handed to
/// the call (`now_nanos`).
fn paced_messages() -> (ReceiverStream<u64>, Arc<AtomicU64>) {
    let (sender, receiver) = mpsc::channel(1);
    let last_sent = Arc::new(AtomicU64::new(0));
    let last = Arc::clone(&last_sent);
    tokio::spawn(async move {
        for n in 1..=MESSAGES {
            tokio::time::sleep(GAP).await;
            if sender.send(n).await.is_err() {
                break;
            }
            last.store(now_nanos(), Ordering::SeqCst);
        }
    });
    (ReceiverStream::new(receiver), last_sent)
}

/// What a finished call left behind: its client and server span (each the only one of its kind
/// for the method), and its metric points.
struct Call {
    client: ReceivedSpan,
    server: ReceivedSpan,
    points: Vec<ReceivedPoint>,
}

/// The codes for which a server span (and its metrics) record the call as a server failure.
const SERVER_FAILURES: [&str; 6] = [
    "UNKNOWN",
    "DEADLINE_EXCEEDED",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
];

/// Waits for the call to `method`'s two spans and for its metrics to show one finished call with
/// nothing active, then checks what every call must: one trace, one span per side, the status
/// from the trailers on both.
async fn finished_call(method: &str, code: &str) -> Call {
    let full = format!("{SERVICE}/{method}");
    let full = full.as_str();
    let spans = world()
        .trace_where(2, |c| {
            c.attributes.get("rpc.method").map(String::as_str) == Some(full)
        })
        .await;
    let client = spans.iter().find(|s| s.kind == "CLIENT").unwrap().clone();
    let server = spans.iter().find(|s| s.kind == "SERVER").unwrap().clone();
    assert_eq!(client.name, format!("grpc.client.{method}"));
    assert_eq!(server.name, format!("grpc.server.{method}"));
    assert_eq!(server.parent_span_id, client.span_id, "one trace");
    for span in [&client, &server] {
        assert_eq!(
            span.attributes.get("rpc.status_code").map(String::as_str),
            Some(code),
            "{span:?}"
        );
        // A client span has error.type for any code but OK; a server span only for the codes
        // that mean the server failed (TELEMETRY.md).
        let failed = if span.kind == "SERVER" {
            SERVER_FAILURES.contains(&code)
        } else {
            code != "OK"
        };
        let error_type = span.attributes.get("error.type").map(String::as_str);
        assert_eq!(error_type, failed.then_some(code), "{span:?}");
    }

    let points = world()
        .receiver
        .wait_for(ARRIVAL, |r| {
            let points = r.points();
            let total = last(
                &points,
                &format!("{PREFIX}.requests.total"),
                ("method", method),
            );
            let active = last(
                &points,
                &format!("{PREFIX}.requests.active"),
                ("method", method),
            );
            let client_calls = last(&points, "rpc.client.call.duration", ("rpc.method", full));
            let done = total.is_some_and(|p| p.value == 1.0)
                && active.is_some_and(|p| p.value == 0.0)
                && client_calls.is_some();
            done.then_some(points)
        })
        .await
        .unwrap_or_else(|| panic!("{method}: no metrics of one finished call, nothing active"));

    // Counted once: exactly one span per side, whatever the stream carried.
    world().flush().await;
    let all = world().receiver.spans();
    for kind in ["CLIENT", "SERVER"] {
        let count = all
            .iter()
            .filter(|s| {
                s.kind == kind && s.attributes.get("rpc.method").map(String::as_str) == Some(full)
            })
            .count();
        assert_eq!(count, 1, "{kind} spans of {method}");
    }
    Call {
        client,
        server,
        points,
    }
}

/// The newest point of `metric` whose attribute `key` is `value`.
fn last<'a>(
    points: &'a [ReceivedPoint],
    metric: &str,
    (key, value): (&str, &str),
) -> Option<&'a ReceivedPoint> {
    points
        .iter()
        .rev()
        .find(|p| p.metric == metric && p.attributes.get(key).map(String::as_str) == Some(value))
}

impl Call {
    /// Both spans and all four duration histograms last at least `at_least`: the call was
    /// measured to the stream's end, not to its first message; each histogram saw one call.
    #[track_caller]
    fn lasted(&self, method: &str, at_least: Duration) {
        let full = format!("{SERVICE}/{method}");
        let nanos = u64::try_from(at_least.as_nanos()).unwrap();
        for span in [&self.client, &self.server] {
            assert!(
                span.end_unix_nano - span.start_unix_nano >= nanos,
                "{} lasted {} ns, less than {at_least:?}",
                span.name,
                span.end_unix_nano - span.start_unix_nano
            );
        }
        for (metric, attribute) in [
            (
                "rpc.server.call.duration".to_owned(),
                ("rpc.method", full.as_str()),
            ),
            (
                "rpc.client.call.duration".to_owned(),
                ("rpc.method", full.as_str()),
            ),
            (format!("{PREFIX}.request.duration"), ("method", method)),
        ] {
            let point = last(&self.points, &metric, attribute)
                .unwrap_or_else(|| panic!("no {metric} of {method}"));
            assert_eq!(point.value, 1.0, "{metric} of {method}: one call");
            assert!(
                point.sum >= at_least.as_secs_f64(),
                "{metric} of {method}: {} s",
                point.sum
            );
        }
    }

    /// `rpc.message.sent_count`/`received_count` on both spans: the client sent `requests`
    /// messages, the server `responses`.
    #[track_caller]
    fn carried(&self, requests: u64, responses: u64) {
        let (requests, responses) = (requests.to_string(), responses.to_string());
        for (span, sent, received) in [
            (&self.client, &requests, &responses),
            (&self.server, &responses, &requests),
        ] {
            let count = |key: &str| span.attributes.get(key).cloned();
            assert_eq!(
                (
                    count("rpc.message.sent_count"),
                    count("rpc.message.received_count")
                ),
                (Some(sent.clone()), Some(received.clone())),
                "messages of {}",
                span.name
            );
        }
    }

    /// The client span ended after the stream's last message went by.
    #[track_caller]
    fn client_ended_after(&self, nanos: u64) {
        assert!(
            self.client.end_unix_nano >= nanos,
            "the client span ended {} ns before the stream's last message",
            nanos - self.client.end_unix_nano
        );
    }
}

#[tokio::test]
async fn a_unary_call_is_one_client_and_one_server_span() {
    let server = start().await;
    let mut grpc = server.client().await;
    let response = grpc
        .unary(Request::new(41), path("Unary"), codec())
        .await
        .unwrap();
    assert_eq!(response.into_inner(), 42);
    let end = now_nanos();

    let call = finished_call("Unary", "OK").await;
    call.lasted("Unary", GAP);
    call.carried(1, 1);
    // The client's duration names the server it called (conditionally required); the server's
    // does not (opt-in there).
    let full = format!("{SERVICE}/Unary");
    let client = last(
        &call.points,
        "rpc.client.call.duration",
        ("rpc.method", &full),
    )
    .unwrap();
    let port = server.address.port().to_string();
    assert_eq!(
        (
            client.attributes.get("server.address").map(String::as_str),
            client.attributes.get("server.port")
        ),
        (Some("127.0.0.1"), Some(&port)),
        "{client:?}"
    );
    let served = last(
        &call.points,
        "rpc.server.call.duration",
        ("rpc.method", &full),
    )
    .unwrap();
    assert!(
        !served.attributes.contains_key("server.address"),
        "{served:?}"
    );
    assert!(call.client.end_unix_nano <= end + 1_000_000_000);
}

#[tokio::test]
async fn a_server_stream_is_measured_to_its_last_message() {
    let server = start().await;
    let mut grpc = server.client().await;
    let mut stream = grpc
        .server_streaming(Request::new(MESSAGES), path("ServerStream"), codec())
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    let mut last = 0;
    while let Some(_message) = stream.message().await.unwrap() {
        received += 1;
        last = now_nanos();
    }
    assert_eq!(received, MESSAGES);

    let call = finished_call("ServerStream", "OK").await;
    call.lasted("ServerStream", GAP * 3);
    call.carried(1, MESSAGES);
    call.client_ended_after(last);
}

#[tokio::test]
async fn a_client_stream_is_measured_to_its_last_message() {
    let server = start().await;
    let mut grpc = server.client().await;
    let (messages, last_sent) = paced_messages();
    let sum = grpc
        .client_streaming(Request::new(messages), path("ClientStream"), codec())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sum, (1..=MESSAGES).sum::<u64>());

    let call = finished_call("ClientStream", "OK").await;
    // Three gaps, not four: the pacing task began its first pause before the call began.
    call.lasted("ClientStream", GAP * 3);
    call.carried(MESSAGES, 1);
    call.client_ended_after(last_sent.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_bidirectional_stream_is_measured_to_its_last_message() {
    let server = start().await;
    let mut grpc = server.client().await;
    let (messages, _) = paced_messages();
    let mut echoes = grpc
        .streaming(Request::new(messages), path("Bidi"), codec())
        .await
        .unwrap()
        .into_inner();
    let mut received = Vec::new();
    let mut last = 0;
    while let Some(echo) = echoes.message().await.unwrap() {
        received.push(echo);
        last = now_nanos();
    }
    assert_eq!(received, (1..=MESSAGES).collect::<Vec<_>>());

    let call = finished_call("Bidi", "OK").await;
    // Three gaps, not four: the pacing task began its first pause before the call began.
    call.lasted("Bidi", GAP * 3);
    call.carried(MESSAGES, MESSAGES);
    call.client_ended_after(last);
}

#[tokio::test]
async fn a_stream_the_client_drops_half_way_is_cancelled_once() {
    let server = start().await;
    let mut grpc = server.client().await;
    let mut stream = grpc
        .server_streaming(Request::new(0), path("Dropped"), codec())
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        stream.message().await.unwrap().unwrap();
    }
    drop(stream);

    let call = finished_call("Dropped", "CANCELLED").await;
    let total = last(
        &call.points,
        &format!("{PREFIX}.requests.total"),
        ("method", "Dropped"),
    )
    .unwrap();
    assert_eq!(
        total.attributes.get("error").map(String::as_str),
        Some("true")
    );
    task_ended("Dropped").await;
}

#[tokio::test]
async fn a_stream_the_server_fails_half_way_carries_the_status_on_both_spans() {
    let server = start().await;
    let mut grpc = server.client().await;
    let mut stream = grpc
        .server_streaming(Request::new(0), path("Fails"), codec())
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("the stream ended without its error"),
            Err(status) => break status,
        }
    };
    assert_eq!(received, 2);
    assert_eq!(status.code(), tonic::Code::Internal);

    let call = finished_call("Fails", "INTERNAL").await;
    assert_eq!(call.client.status, "ERROR");
    assert_eq!(call.server.status, "ERROR");
    assert!(
        call.server.status_message.contains("broke mid-stream"),
        "{:?}",
        call.server
    );
    // The stream's end, not its first message: two messages went by first.
    call.lasted("Fails", Duration::from_millis(40));
}

#[tokio::test]
async fn a_stream_open_at_shutdown_is_recorded_before_the_server_stops() {
    let mut server = start().await;
    let mut grpc = server.client().await;
    let mut stream = grpc
        .server_streaming(Request::new(0), path("Shutdown"), codec())
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    server.stop();
    // The drain waits for open streams (up to its timeout): here the client ending its side is
    // what ends this one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), &mut server.task)
        .await
        .expect("the server stops once its last stream ended")
        .unwrap()
        .unwrap();

    finished_call("Shutdown", "CANCELLED").await;
}

#[tokio::test]
async fn a_deadline_passing_mid_stream_ends_it_as_deadline_exceeded() {
    let server = start().await;
    let mut grpc = server.client().await;
    let mut request = Request::new(0);
    request.set_timeout(Duration::from_millis(200));
    let mut stream = grpc
        .server_streaming(request, path("Deadline"), codec())
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    // Tonic enforces `grpc-timeout` only until the response headers; the layers end the stream.
    let status = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => received += 1,
                Ok(None) => panic!("the stream ended without its error"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the deadline ends the stream");
    assert!(received >= 2, "mid-stream: {received} messages came first");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");

    let call = finished_call("Deadline", "DEADLINE_EXCEEDED").await;
    assert_eq!(call.server.status, "ERROR");
    call.lasted("Deadline", Duration::from_millis(190));
    task_ended("Deadline").await;
}

#[tokio::test]
async fn a_handlers_error_log_does_not_decide_the_server_spans_status() {
    let server = start().await;
    let mut grpc = server.client().await;
    let status = grpc
        .unary(Request::new(1), path("Refuses"), codec())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // INVALID_ARGUMENT: no error.type on the server span (checked by finished_call), and no ERROR
    // status either, though an ERROR event was logged inside it; the event itself stays.
    let call = finished_call("Refuses", "INVALID_ARGUMENT").await;
    assert_eq!(call.server.status, "UNSET", "{:?}", call.server);
    assert!(
        call.server
            .events
            .iter()
            .any(|(name, _)| name.starts_with("refusing the request")),
        "the handler's event is on the span: {:?}",
        call.server.events
    );
    assert_eq!(call.client.status, "ERROR");
}

#[tokio::test]
async fn a_stream_open_past_the_drain_timeout_is_cut_and_recorded_before_the_server_returns() {
    let mut server = start_with_drain(1).await;
    let mut grpc = server.client().await;
    let mut stream = grpc
        .server_streaming(Request::new(0), path("Cut"), codec())
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    server.stop();
    // The stream never ends on its own: the drain timeout ends it, and the server with it.
    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("the drain timeout ends the server")
        .unwrap()
        .unwrap();

    // Recorded by the time the server returned: no waiting for it.
    world().flush().await;
    let full = format!("{SERVICE}/Cut");
    let spans = world().receiver.spans();
    let span = spans
        .iter()
        .find(|s| s.kind == "SERVER" && s.attributes.get("rpc.method") == Some(&full))
        .unwrap_or_else(|| panic!("no server span of the cut stream"));
    assert_eq!(span.status, "ERROR", "{span:?}");
    assert!(span.status_message.contains("drain timeout"), "{span:?}");
    for (key, value) in [
        ("rpc.status_code", "UNAVAILABLE"),
        ("error.type", "UNAVAILABLE"),
    ] {
        assert_eq!(
            span.attributes.get(key).map(String::as_str),
            Some(value),
            "{span:?}"
        );
    }
    let points = world().receiver.points();
    let total = last(
        &points,
        &format!("{PREFIX}.requests.total"),
        ("method", "Cut"),
    )
    .expect("the cut call is counted");
    assert_eq!(total.value, 1.0);
    assert_eq!(
        total.attributes.get("error").map(String::as_str),
        Some("true")
    );
    let active = last(
        &points,
        &format!("{PREFIX}.requests.active"),
        ("method", "Cut"),
    )
    .expect("requests.active of the cut call");
    assert_eq!(active.value, 0.0, "nothing left active");
    let duration = last(&points, "rpc.server.call.duration", ("rpc.method", &full))
        .expect("rpc.server.call.duration of the cut call");
    assert_eq!(
        duration.attributes.get("error.type").map(String::as_str),
        Some("UNAVAILABLE")
    );
    // The handler's task ended with its call.
    task_ended("Cut").await;
    // The client reads what was sent before the cut, then no status: the stream was cut.
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            end => break end,
        }
    };
    assert!(end.is_err(), "the client sees the stream cut: {end:?}");
}
