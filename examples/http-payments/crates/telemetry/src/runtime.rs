//! Tokio runtime metrics, from the stable `RuntimeMetrics` API only (no `--cfg tokio_unstable`).
//!
//! Observable instruments: the SDK calls them when it collects (every export interval), so nothing
//! runs on the request path. The names are the de-facto `tokio.*` names of the
//! `opentelemetry-instrumentation-tokio` crate, whose dashboards and queries therefore work here.
//! Unlike that crate, the busy time is in seconds (`s`, a float), so its rate is a ratio.

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use tokio::runtime::{Handle, RuntimeMetrics};

/// Registers the runtime's instruments with `meter`; they live as long as its provider.
pub(crate) fn observe(meter: &Meter, handle: &Handle) {
    let metrics = handle.metrics();
    let workers: Vec<[KeyValue; 1]> = (0..metrics.num_workers())
        .map(|i| [KeyValue::new("tokio.worker.index", i as i64)])
        .collect();

    let m = metrics.clone();
    meter
        .u64_observable_gauge("tokio.workers")
        .with_description("The number of worker threads of the runtime")
        .with_unit("{worker}")
        .with_callback(move |gauge| gauge.observe(m.num_workers() as u64, &[]))
        .build();
    let m = metrics.clone();
    meter
        .u64_observable_gauge("tokio.alive_tasks")
        .with_description("The number of tasks alive in the runtime")
        .with_unit("{task}")
        .with_callback(move |gauge| gauge.observe(m.num_alive_tasks() as u64, &[]))
        .build();
    let m = metrics.clone();
    meter
        .u64_observable_gauge("tokio.global_queue_depth")
        .with_description("The number of tasks waiting in the runtime's global queue")
        .with_unit("{task}")
        .with_callback(move |gauge| gauge.observe(m.global_queue_depth() as u64, &[]))
        .build();
    observe_workers(meter, metrics, workers);
}

#[cfg(target_has_atomic = "64")]
fn observe_workers(meter: &Meter, metrics: RuntimeMetrics, workers: Vec<[KeyValue; 1]>) {
    let (m, w) = (metrics.clone(), workers.clone());
    meter
        .u64_observable_counter("tokio.worker.park_count")
        .with_description("How many times each worker thread has parked (gone idle)")
        .with_unit("{park}")
        .with_callback(move |counter| {
            for (i, attributes) in w.iter().enumerate() {
                counter.observe(m.worker_park_count(i), attributes);
            }
        })
        .build();
    meter
        .f64_observable_counter("tokio.worker.busy_duration")
        .with_description("How long each worker thread has been busy running tasks")
        .with_unit("s")
        .with_callback(move |counter| {
            for (i, attributes) in workers.iter().enumerate() {
                counter.observe(
                    metrics.worker_total_busy_duration(i).as_secs_f64(),
                    attributes,
                );
            }
        })
        .build();
}

/// Without 64-bit atomics tokio keeps no per-worker counters.
#[cfg(not(target_has_atomic = "64"))]
fn observe_workers(_: &Meter, _: RuntimeMetrics, _: Vec<[KeyValue; 1]>) {}
