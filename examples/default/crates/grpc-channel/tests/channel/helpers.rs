//! The test binary's telemetry (exported to an in-process OTLP receiver) and what the tests look
//! for in it.

use telemetry_testing::ReceivedSpan;

use crate::service::SERVICE;

pub(crate) use telemetry_testing::{ARRIVAL, World};

/// The test binary's telemetry, started on first use.
pub(crate) fn world() -> &'static World {
    telemetry_testing::world("grpc-channel-tests")
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
