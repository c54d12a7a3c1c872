//! The real server binary's metrics, and the workspace's Grafana dashboard against them: every
//! runtime and process metric is exported with a plausible value, and the dashboard queries only
//! data sources otel-lgtm provisions and only metrics the service exports, by the names Prometheus
//! gives them. The dashboard names no service and every service exports the same metrics through
//! the same shared crates, so this runs in the workspace's first service only (an added service is
//! rendered without it: `cargo-generate.toml`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use promql_parser::parser::{Expr, parse};
use promql_parser::util::{ExprVisitor, walk_expr};
use telemetry_testing::{ReceivedPoint, Receiver};

use crate::helpers::{ServerProcess, unique_id};

/// The data sources otel-lgtm provisions (its `grafana-datasources.yaml`), by uid.
const DATASOURCES: [&str; 3] = ["prometheus", "tempo", "loki"];

/// Series the dashboard may read that come from otel-lgtm itself, not from the service: Tempo's
/// span metrics, which carry trace exemplars.
const FROM_THE_STACK: [&str; 1] = ["traces_spanmetrics_latency_bucket"];

fn workspace_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The Prometheus names of an OTLP metric, as Prometheus's OTLP receiver writes them (with
/// suffixes, its default): dots to underscores, the unit's name (`s` seconds, `By` bytes, `ms`
/// milliseconds; `{annotations}` dropped), `_total` on counters, `_bucket`, `_sum` and `_count`
/// on histograms.
fn prometheus_names(point: &ReceivedPoint) -> Vec<String> {
    let mut name: String = point
        .metric
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let counter = point.kind == "sum" && point.monotonic;
    if counter && let Some(stripped) = name.strip_suffix("_total") {
        name = stripped.to_owned();
    }
    let unit = match point.unit.as_str() {
        "s" => "seconds",
        "ms" => "milliseconds",
        "By" => "bytes",
        "1" if point.kind == "gauge" => "ratio",
        _ => "",
    };
    if !unit.is_empty() && !name.ends_with(unit) {
        name = format!("{name}_{unit}");
    }
    match point.kind {
        "histogram" => ["bucket", "sum", "count"]
            .iter()
            .map(|suffix| format!("{name}_{suffix}"))
            .collect(),
        _ if counter => vec![format!("{name}_total")],
        _ => vec![name],
    }
}

#[test]
fn prometheus_naming_follows_the_otlp_rules() {
    let point = |metric: &str, unit: &str, kind, monotonic| ReceivedPoint {
        service: String::new(),
        metric: metric.to_owned(),
        unit: unit.to_owned(),
        kind,
        monotonic,
        attributes: BTreeMap::new(),
        value: 0.0,
        bounds: vec![],
        sum: 0.0,
    };
    let cases = [
        (
            point("rpc.server.call.duration", "s", "histogram", false),
            "rpc_server_call_duration_seconds_bucket",
        ),
        (
            point("myservice.requests.total", "{requests}", "sum", true),
            "myservice_requests_total",
        ),
        (
            point("myservice.requests.active", "{requests}", "sum", false),
            "myservice_requests_active",
        ),
        (
            point("process.cpu.time", "s", "sum", true),
            "process_cpu_time_seconds_total",
        ),
        (
            point("process.memory.usage", "By", "sum", false),
            "process_memory_usage_bytes",
        ),
        (
            point("tokio.workers", "{worker}", "gauge", false),
            "tokio_workers",
        ),
        (
            point("tokio.worker.park_count", "{park}", "sum", true),
            "tokio_worker_park_count_total",
        ),
    ];
    for (point, expected) in cases {
        assert_eq!(prometheus_names(&point)[0], expected);
    }
}

/// Every metric name a PromQL expression selects: plain names, and `__name__` matchers.
#[derive(Default)]
struct Selected {
    names: Vec<String>,
    name_matchers: Vec<promql_parser::label::Matcher>,
}

impl ExprVisitor for Selected {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        match &selector.name {
            Some(name) => self.names.push(name.clone()),
            None => self.name_matchers.extend(
                selector
                    .matchers
                    .matchers
                    .iter()
                    .filter(|m| m.name == "__name__")
                    .cloned(),
            ),
        }
        Ok(true)
    }
}

/// The expression with Grafana's variables replaced by values PromQL accepts.
fn without_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$service", "svc")
}

/// Every object of `value` that has `key`, depth first.
fn with_key<'a>(value: &'a serde_json::Value, key: &str, out: &mut Vec<&'a serde_json::Value>) {
    match value {
        serde_json::Value::Object(map) => {
            if map.contains_key(key) {
                out.push(value);
            }
            map.values().for_each(|v| with_key(v, key, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| with_key(v, key, out)),
        _ => {}
    }
}

/// Runs the server binary against an in-process receiver and makes good calls and a bad one.
/// Returns what it exported while still serving, after the calls, and, once stopped, everything.
async fn exported_by_a_real_run() -> (Vec<ReceivedPoint>, Vec<ReceivedPoint>) {
    let receiver = Receiver::start().await.unwrap();
    let endpoint = receiver.endpoint();
    let server = ServerProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
    ])
    .await;
    let mut client = client::Client::connect(&server.url, Duration::from_secs(5))
        .await
        .unwrap();
    for _ in 0..20 {
        client
            .process_request(unique_id("dashboard"))
            .await
            .unwrap();
    }
    assert!(client.process_request(String::new()).await.is_err());
    let before = receiver.points().len();
    // Two exports after the calls: the second was collected wholly after them.
    let serving = receiver
        .wait_for(Duration::from_secs(10), |r| {
            let points = r.points();
            let runtime = points[before.min(points.len())..]
                .iter()
                .filter(|p| p.metric == "tokio.workers")
                .count();
            (runtime >= 2).then_some(points)
        })
        .await
        .expect("the server exports its metrics every 200 ms");
    server.terminate().await;
    (serving, receiver.points())
}

/// The last point of each series of `metric`.
fn last<'a>(points: &'a [ReceivedPoint], metric: &str) -> Vec<&'a ReceivedPoint> {
    let mut series = BTreeMap::new();
    for point in points.iter().filter(|p| p.metric == metric) {
        series.insert(&point.attributes, point);
    }
    assert!(!series.is_empty(), "{metric} was not exported");
    series.into_values().collect()
}

fn check_runtime_and_process_metrics(points: &[ReceivedPoint]) {
    let sum = |metric| last(points, metric).iter().map(|p| p.value).sum::<f64>();
    let workers = std::thread::available_parallelism().unwrap().get() as f64;
    // The server's runtime, the one main observes: as many workers as CPUs (tokio's default).
    assert_eq!(sum("tokio.workers"), workers, "tokio.workers");
    assert!(sum("tokio.alive_tasks") >= 1.0);
    assert!(sum("tokio.global_queue_depth") >= 0.0);
    assert!(sum("tokio.worker.busy_duration") > 0.0);
    assert_eq!(
        last(points, "tokio.worker.busy_duration").len() as f64,
        workers
    );
    assert!(sum("tokio.worker.park_count") >= 1.0);
    eprintln!("measured in a real run of the server (20 calls, one failed):");
    for metric in [
        "tokio.workers",
        "tokio.alive_tasks",
        "tokio.global_queue_depth",
        "tokio.worker.busy_duration",
        "tokio.worker.park_count",
    ] {
        eprintln!("  {metric} = {} (summed over its series)", sum(metric));
    }
    if cfg!(target_os = "linux") {
        for metric in [
            "process.cpu.time",
            "process.memory.usage",
            "process.memory.virtual",
            "process.thread.count",
            "process.unix.file_descriptor.count",
        ] {
            for p in last(points, metric) {
                eprintln!("  {metric} {:?} = {}", p.attributes, p.value);
            }
        }
        assert!(sum("process.cpu.time") > 0.0);
        assert!(sum("process.memory.usage") > 1e6);
        assert!(sum("process.memory.virtual") >= sum("process.memory.usage"));
        assert!(sum("process.thread.count") >= workers + 1.0);
        assert!(sum("process.unix.file_descriptor.count") >= 3.0);
    }
}

#[tokio::test]
async fn the_dashboard_reads_only_what_the_service_and_the_stack_export() {
    let (serving, points) = exported_by_a_real_run().await;
    check_runtime_and_process_metrics(&serving);

    // The list the dashboard is checked against: what this run exported, named as Prometheus does.
    let exported: BTreeSet<String> = points.iter().flat_map(prometheus_names).collect();
    let known = |name: &str| exported.contains(name) || FROM_THE_STACK.contains(&name);

    let path = workspace_file("grafana/dashboards/services.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        !text.contains(proto::METRIC_PREFIX),
        "the dashboard names no service: a new service must need no edit"
    );

    let mut datasources = Vec::new();
    with_key(&dashboard, "datasource", &mut datasources);
    assert!(!datasources.is_empty());
    for object in datasources {
        let uid = object["datasource"]["uid"].as_str().unwrap_or_default();
        assert!(
            DATASOURCES.contains(&uid),
            "data source {:?}",
            object["datasource"]
        );
    }

    let mut queries = Vec::new();
    let mut targets = Vec::new();
    with_key(&dashboard, "expr", &mut targets);
    for target in targets {
        if target["datasource"]["uid"] == "prometheus" {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    // The service variable's query, label_values(<metric>, <label>), selects a metric too.
    let variable = &dashboard["templating"]["list"][0];
    assert_eq!(variable["name"], "service");
    let definition = variable["definition"].as_str().unwrap();
    let inner = definition
        .strip_prefix("label_values(")
        .and_then(|rest| rest.split_once(','))
        .map(|(metric, _)| metric.trim().to_owned())
        .unwrap();
    queries.push(inner);
    assert!(queries.len() > 10, "{queries:?}");

    let mut shown = BTreeSet::new();
    for query in &queries {
        let expr = parse(&without_variables(query))
            .unwrap_or_else(|e| panic!("PromQL does not parse ({e}): {query}"));
        let mut selected = Selected::default();
        walk_expr(&mut selected, &expr).unwrap();
        for name in &selected.names {
            assert!(
                known(name),
                "{name} is not exported (exported: {exported:#?})"
            );
            shown.insert(name.clone());
        }
        for matcher in &selected.name_matchers {
            let matches: Vec<_> = exported.iter().filter(|n| matcher.is_match(n)).collect();
            assert!(
                !matches.is_empty(),
                "{matcher:?} in {query} matches no exported metric ({exported:#?})"
            );
            shown.extend(matches.into_iter().cloned());
        }
    }
    // Every runtime and process series, and the RPC histogram, has a panel.
    let wanted = exported.iter().filter(|n| {
        n.starts_with("tokio_") || n.starts_with("process_") || n.starts_with("rpc_server_")
    });
    for name in wanted.filter(|n| !n.ends_with("_sum")) {
        assert!(
            shown.contains(name.as_str()),
            "{name} is exported but not on the dashboard"
        );
    }
}

/// The compose file mounts the provider and the dashboards where the provider looks, and points
/// Grafana's home at the dashboard (`docker-compose config` parses the file in CI).
#[test]
fn compose_provisions_the_dashboard_where_the_provider_looks() {
    let compose = std::fs::read_to_string(workspace_file("compose.yaml")).unwrap();
    let provider =
        std::fs::read_to_string(workspace_file("grafana/provisioning/dashboards.yaml")).unwrap();
    let mounts: BTreeMap<String, String> = compose
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- ./"))
        .filter_map(|mount| {
            let mut parts = mount.split(':');
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect();
    let provisioning = "/otel-lgtm/grafana/conf/provisioning/dashboards/";
    let provider_target = &mounts["grafana/provisioning/dashboards.yaml"];
    assert!(
        provider_target.starts_with(provisioning) && provider_target.ends_with(".yaml"),
        "{provider_target}"
    );
    let dashboards_target = &mounts["grafana/dashboards"];
    let path = provider
        .lines()
        .find_map(|line| line.trim().strip_prefix("path: "))
        .unwrap();
    assert_eq!(
        path, dashboards_target,
        "the provider reads where compose mounts"
    );
    let home = compose
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH: ")
        })
        .unwrap();
    let file = home.strip_prefix(&format!("{dashboards_target}/")).unwrap();
    assert!(
        workspace_file(&format!("grafana/dashboards/{file}")).is_file(),
        "{home}"
    );
}
