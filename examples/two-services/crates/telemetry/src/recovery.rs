//! Says when export recovers. The SDK reports each failed export (rate-limited by the line
//! writer to one line a minute per problem) and says nothing when export works again, so an
//! operator who saw "export failed" could not tell from the logs that it stopped failing. Each
//! exporter is wrapped once; a batch costs one uncontended lock.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// Target of the line that says export recovered.
pub(crate) const RECOVERY_TARGET: &str = "telemetry::export";

/// The failures since the last export that worked: how many, and since when.
#[derive(Debug, Default)]
struct Failing(Mutex<Option<(u64, Instant)>>);

/// An export that worked after failing: how many failed, over how long.
#[derive(Debug, PartialEq)]
struct Recovered {
    failures: u64,
    after: Duration,
}

impl Failing {
    fn record(&self, ok: bool, now: Instant) -> Option<Recovered> {
        let mut failing = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match (ok, failing.as_mut()) {
            (true, _) => failing.take().map(|(failures, since)| Recovered {
                failures,
                after: now.saturating_duration_since(since),
            }),
            (false, Some((failures, _))) => {
                *failures += 1;
                None
            }
            (false, None) => {
                *failing = Some((1, now));
                None
            }
        }
    }

    fn observe(&self, signal: &str, result: &OTelSdkResult) {
        if let Some(Recovered { failures, after }) = self.record(result.is_ok(), Instant::now()) {
            let s = if failures == 1 { "" } else { "s" };
            tracing::info!(
                target: RECOVERY_TARGET,
                "telemetry export recovered: {signal} are exported again, after {failures} failed \
                 export{s} over {:.1}s (what was dropped meanwhile is lost)",
                after.as_secs_f64()
            );
        }
    }
}

/// An exporter that says when its export works again after failing; otherwise it is the exporter.
#[derive(Debug)]
pub(crate) struct Watched<E> {
    inner: E,
    signal: &'static str,
    failing: Failing,
}

impl<E> Watched<E> {
    /// `signal` names what the exporter carries, in the plural: "spans", "metrics", "log records".
    pub(crate) fn new(signal: &'static str, inner: E) -> Self {
        Self {
            inner,
            signal,
            failing: Failing::default(),
        }
    }
}

impl<E: SpanExporter> SpanExporter for Watched<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.failing.observe(self.signal, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for Watched<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.failing.observe(self.signal, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn event_enabled(
        &self,
        level: opentelemetry::logs::Severity,
        target: &str,
        name: Option<&str>,
    ) -> bool {
        self.inner.event_enabled(level, target, name)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Watched<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.failing.observe(self.signal, &result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_said_once_after_failures_with_their_count_and_span() {
        let failing = Failing::default();
        let start = Instant::now();
        assert_eq!(failing.record(true, start), None, "nothing failed yet");
        assert_eq!(failing.record(false, start), None);
        assert_eq!(failing.record(false, start + Duration::from_secs(1)), None);
        assert_eq!(failing.record(false, start + Duration::from_secs(2)), None);
        assert_eq!(
            failing.record(true, start + Duration::from_secs(5)),
            Some(Recovered {
                failures: 3,
                after: Duration::from_secs(5)
            })
        );
        assert_eq!(
            failing.record(true, start + Duration::from_secs(6)),
            None,
            "said once"
        );
        assert_eq!(failing.record(false, start + Duration::from_secs(7)), None);
        assert_eq!(
            failing.record(true, start + Duration::from_secs(8)),
            Some(Recovered {
                failures: 1,
                after: Duration::from_secs(1)
            }),
            "a new outage counts from its own start"
        );
    }
}
