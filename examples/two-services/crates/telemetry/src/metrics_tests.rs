//! The runtime and process metrics, and the duration histograms, as an in-memory exporter receives
//! them from a real SDK pipeline.

use std::collections::BTreeMap;

use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

/// One data point: name, unit, attributes, value (a histogram's count), and exemplars seen.
#[derive(Debug)]
struct Point {
    name: String,
    unit: String,
    attributes: BTreeMap<String, String>,
    value: f64,
    bounds: Vec<f64>,
    exemplars: usize,
}

fn pipeline() -> (SdkMeterProvider, InMemoryMetricExporter) {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    (provider, exporter)
}

/// Collects now and returns the points of the last collection.
fn collect(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter) -> Vec<Point> {
    provider.force_flush().expect("flush");
    let batches = exporter.get_finished_metrics().expect("metrics");
    let Some(last) = batches.last() else {
        return Vec::new();
    };
    points(last)
}

fn points(metrics: &ResourceMetrics) -> Vec<Point> {
    let mut out = Vec::new();
    for metric in metrics.scope_metrics().flat_map(|s| s.metrics()) {
        let mut push = |attributes: Vec<&opentelemetry::KeyValue>, value, bounds, exemplars| {
            out.push(Point {
                name: metric.name().to_owned(),
                unit: metric.unit().to_owned(),
                attributes: attributes
                    .into_iter()
                    .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                    .collect(),
                value,
                bounds,
                exemplars,
            })
        };
        macro_rules! walk {
            ($data:expr) => {
                match $data {
                    MetricData::Gauge(g) => g
                        .data_points()
                        .for_each(|p| push(p.attributes().collect(), p.value() as f64, vec![], 0)),
                    MetricData::Sum(s) => s
                        .data_points()
                        .for_each(|p| push(p.attributes().collect(), p.value() as f64, vec![], 0)),
                    MetricData::Histogram(h) => h.data_points().for_each(|p| {
                        push(
                            p.attributes().collect(),
                            p.count() as f64,
                            p.bounds().collect(),
                            p.exemplars().count(),
                        )
                    }),
                    MetricData::ExponentialHistogram(_) => {}
                }
            };
        }
        match metric.data() {
            AggregatedMetrics::F64(data) => walk!(data),
            AggregatedMetrics::U64(data) => walk!(data),
            AggregatedMetrics::I64(data) => walk!(data),
        }
    }
    out
}

fn find<'a>(points: &'a [Point], name: &str) -> Vec<&'a Point> {
    points.iter().filter(|p| p.name == name).collect()
}

#[test]
fn a_two_worker_runtime_exports_every_runtime_metric_with_its_unit() {
    let (provider, exporter) = pipeline();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    crate::runtime::observe(
        &opentelemetry::metrics::MeterProvider::meter(&provider, "test"),
        runtime.handle(),
    );
    // Work for both workers, and three tasks that stay alive over the collection.
    let (stop, stopped) = tokio::sync::watch::channel(());
    runtime.block_on(async {
        let busy: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(async {
                    let start = std::time::Instant::now();
                    while start.elapsed() < std::time::Duration::from_millis(30) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        for task in busy {
            task.await.expect("task");
        }
        // Workers publish their counters when they park: let them.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for _ in 0..3 {
            let mut stopped = stopped.clone();
            tokio::spawn(async move { stopped.changed().await });
        }
    });
    let points = collect(&provider, &exporter);
    drop(stop);

    let expected = [
        ("tokio.workers", "{worker}"),
        ("tokio.alive_tasks", "{task}"),
        ("tokio.global_queue_depth", "{task}"),
        ("tokio.worker.park_count", "{park}"),
        ("tokio.worker.busy_duration", "s"),
    ];
    for (name, unit) in expected {
        let found = find(&points, name);
        assert!(!found.is_empty(), "{name} missing from {points:#?}");
        assert!(found.iter().all(|p| p.unit == unit), "{name}: {found:?}");
    }
    assert_eq!(find(&points, "tokio.workers")[0].value, 2.0);
    assert!(find(&points, "tokio.alive_tasks")[0].value >= 3.0);
    for name in ["tokio.worker.busy_duration", "tokio.worker.park_count"] {
        let mut workers: Vec<_> = find(&points, name)
            .iter()
            .map(|p| p.attributes["tokio.worker.index"].clone())
            .collect();
        workers.sort();
        assert_eq!(workers, ["0", "1"], "{name}: one point per worker");
    }
    let busy: f64 = find(&points, "tokio.worker.busy_duration")
        .iter()
        .map(|p| p.value)
        .sum();
    assert!((0.1..10.0).contains(&busy), "busy seconds: {busy}");
    assert!(
        points.iter().all(|p| !p.name.starts_with("process.")),
        "a runtime's instruments only"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn process_metrics_are_plausible_and_cpu_time_grows_with_work() {
    let (provider, exporter) = pipeline();
    assert!(crate::process::observe(
        &opentelemetry::metrics::MeterProvider::meter(&provider, "test")
    ));
    let cpu = |points: &[Point]| -> f64 {
        find(points, "process.cpu.time")
            .iter()
            .map(|p| p.value)
            .sum()
    };
    let before = collect(&provider, &exporter);
    // Arithmetic until the process has spent 100 ms more CPU (10 clock ticks), or 20 s went by: on
    // a loaded machine a slice of wall-clock time may hold little of this thread's CPU time.
    let start = std::time::Instant::now();
    let mut x = 0u64;
    let after = loop {
        let slice = std::time::Instant::now();
        while slice.elapsed() < std::time::Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = collect(&provider, &exporter);
        if cpu(&after) >= cpu(&before) + 0.1 || start.elapsed() > std::time::Duration::from_secs(20)
        {
            break after;
        }
    };

    let expected = [
        ("process.cpu.time", "s"),
        ("process.memory.usage", "By"),
        ("process.memory.virtual", "By"),
        ("process.thread.count", "{thread}"),
        ("process.unix.file_descriptor.count", "{file_descriptor}"),
    ];
    for (name, unit) in expected {
        let found = find(&after, name);
        assert!(!found.is_empty(), "{name} missing from {after:#?}");
        assert!(found.iter().all(|p| p.unit == unit), "{name}: {found:?}");
    }
    let mut modes: Vec<_> = find(&after, "process.cpu.time")
        .iter()
        .map(|p| p.attributes["cpu.mode"].clone())
        .collect();
    modes.sort();
    assert_eq!(modes, ["system", "user"]);
    assert!(
        cpu(&after) >= cpu(&before) + 0.1,
        "CPU seconds {} -> {}",
        cpu(&before),
        cpu(&after)
    );
    let value = |name| find(&after, name)[0].value;
    let (rss, virt) = (
        value("process.memory.usage"),
        value("process.memory.virtual"),
    );
    assert!(
        rss > 1024.0 * 1024.0 && rss <= virt,
        "rss {rss}, virtual {virt}"
    );
    assert!(
        value("process.thread.count") >= 2.0,
        "the test thread and the reader's"
    );
    assert!(
        value("process.unix.file_descriptor.count") >= 3.0,
        "stdin, stdout, stderr"
    );
}

/// The semantic conventions' recommended boundaries for `rpc.server.call.duration` and
/// `rpc.client.call.duration`, in seconds (the same list as HTTP's durations).
const SEMCONV_RPC_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Records one call duration inside a sampled span, as the server layer does.
fn record_in_a_sampled_span() -> Vec<Point> {
    let (provider, exporter) = pipeline();
    let meter = opentelemetry::metrics::MeterProvider::meter(&provider, "test");
    let histogram = crate::grpc::duration_histogram(
        &meter,
        "rpc.server.call.duration".to_owned(),
        "Duration of the call",
    );
    let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .build()
        .tracer("test");
    tracer.in_span("call", |cx| {
        assert!(cx.span().span_context().is_sampled());
        histogram.record(0.02, &[]);
    });
    collect(&provider, &exporter)
}

#[test]
fn call_durations_use_the_semconv_boundaries() {
    let points = record_in_a_sampled_span();
    let rpc = find(&points, "rpc.server.call.duration");
    assert_eq!(rpc.len(), 1);
    assert_eq!(rpc[0].bounds, SEMCONV_RPC_BUCKETS);
    assert_eq!(rpc[0].unit, "s");
}

/// The Rust SDK 0.33 collects no exemplars (opentelemetry-rust PR #3624), so the dashboard's
/// latency panel takes its trace links from Tempo's span metrics. When an upgrade starts filling
/// them, this fails: switch the panel to `rpc_server_call_duration_seconds_bucket` with exemplars
/// on (README, "Dashboard"), then make this assert that they are there.
#[test]
fn the_sdk_still_collects_no_exemplars() {
    let points = record_in_a_sampled_span();
    let rpc = find(&points, "rpc.server.call.duration");
    assert_eq!(
        rpc[0].exemplars, 0,
        "the SDK now attaches exemplars to histograms: see this test's comment"
    );
}
