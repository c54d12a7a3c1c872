//! Telemetry for the tests that read spans and metrics: installed once per test binary, exported
//! to an in-process OTLP receiver.

use std::sync::OnceLock;
use std::time::Duration;

use telemetry::testing::{ReceivedSpan, Receiver};
use telemetry::{Telemetry, TelemetryGuard};

use crate::service::SERVICE;

/// How long telemetry may take to reach the receiver after a flush.
pub(crate) const ARRIVAL: Duration = Duration::from_secs(10);

/// Telemetry shared by every test: global by nature, so it is installed once, on a runtime of its
/// own that outlives each test's runtime (the exporters run their I/O on it).
pub(crate) struct World {
    pub(crate) receiver: Receiver,
    guard: TelemetryGuard,
}

pub(crate) fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let receiver = Receiver::start().await.unwrap();
                let endpoint = receiver.endpoint();
                let guard = Telemetry::builder("grpc-channel-tests", "test")
                    .writer(telemetry::testing::Capture::default().make_writer())
                    .otlp_endpoint(endpoint)
                    .env(move |name| match name {
                        "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".to_owned()),
                        "RUST_LOG" => Some("info".to_owned()),
                        _ => None,
                    })
                    .init()
                    .unwrap();
                sender.send(World { receiver, guard }).unwrap();
                std::future::pending::<()>().await;
            });
        });
        receiver.recv().unwrap()
    })
}

impl World {
    /// Exports everything buffered so far.
    pub(crate) async fn flush(&'static self) {
        tokio::task::spawn_blocking(|| self.guard.flush())
            .await
            .unwrap();
    }

    /// Waits for the finished trace of the call that sent `request_id`: the client span and every
    /// span of the same trace, at least `count` of them.
    pub(crate) async fn trace_of(
        &'static self,
        request_id: &str,
        count: usize,
    ) -> Vec<ReceivedSpan> {
        self.flush().await;
        self.receiver
            .wait_for(ARRIVAL, |r| {
                let spans = r.spans();
                let client = spans.iter().find(|s| {
                    s.kind == "CLIENT"
                        && s.attributes.get("request.id").map(String::as_str) == Some(request_id)
                })?;
                let trace: Vec<_> = spans
                    .iter()
                    .filter(|s| s.trace_id == client.trace_id)
                    .cloned()
                    .collect();
                (trace.len() >= count).then_some(trace)
            })
            .await
            .unwrap_or_else(|| panic!("no complete trace of {count} spans arrived"))
    }
}

/// The span named `name` in `spans`.
#[track_caller]
pub(crate) fn span<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name:?} among {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

/// The full name of a metric of the test service: `<prefix>.<name>`.
pub(crate) fn metric(name: &str) -> String {
    format!("{}.{name}", SERVICE.metric_prefix)
}

/// A request id no other test uses, with a readable prefix.
pub(crate) fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
