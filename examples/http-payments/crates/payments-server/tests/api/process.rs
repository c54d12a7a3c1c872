//! The server as a process, with its environment: `OTEL_SDK_DISABLED=true` serves and exports
//! nothing, SIGTERM flushes what was recorded before exit, and TRACE logging does not feed back.

use std::time::Duration;

use telemetry_testing::Receiver;

use crate::helpers::{ServerProcess, metric, unique_id};

#[tokio::test]
async fn sdk_disabled_serves_requests_and_exports_nothing() {
    let receiver = Receiver::start().await.unwrap();
    let endpoint = receiver.endpoint();
    let server = ServerProcess::start(&[
        ("OTEL_SDK_DISABLED", "true"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
    ])
    .await;
    let mut client = client::Client::connect(&server.url, Duration::from_secs(5))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            client
                .process_request(unique_id("disabled"))
                .await
                .unwrap()
                .result,
            "success"
        );
    }
    let lines = server.terminate().await;

    assert!(
        receiver.spans().is_empty(),
        "spans exported: {:?}",
        receiver.spans()
    );
    assert!(receiver.logs().is_empty(), "logs exported");
    assert!(receiver.points().is_empty(), "metrics exported");
    assert!(lines.iter().any(|l| {
        l["msg"]
            .as_str()
            .is_some_and(|m| m.contains("Processing request: disabled-"))
    }));
}

/// The server, its traces not exported by `env`, still continues the caller's W3C context: the
/// line logged inside the call carries the caller's trace id and a span id of its own.
async fn continues_the_callers_trace_without_export(env: &[(&str, &str)]) {
    let server = ServerProcess::start(env).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let id = unique_id("unexported");
    let mut raw = proto::ServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    let mut request = tonic::Request::new(proto::MyRequest { id: id.clone() });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent}-01").parse().unwrap(),
    );
    raw.process_request(request).await.unwrap();
    let lines = server.terminate().await;

    let line = lines
        .iter()
        .find(|l| {
            l["msg"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("Processing request: {id}")))
        })
        .unwrap_or_else(|| panic!("no line for {id}: {lines:?}"));
    assert_eq!(line["trace_id"], trace_id, "{env:?}: {line}");
    let span_id = line["span_id"].as_str().unwrap_or_default();
    assert_eq!(span_id.len(), 16, "{env:?}: {line}");
    assert_ne!(span_id, parent, "{env:?}: {line}");
}

#[tokio::test]
async fn sdk_disabled_still_continues_the_callers_trace() {
    continues_the_callers_trace_without_export(&[("OTEL_SDK_DISABLED", "true")]).await;
}

#[tokio::test]
async fn traces_exporter_none_still_continues_the_callers_trace() {
    continues_the_callers_trace_without_export(&[
        ("OTEL_TRACES_EXPORTER", "none"),
        ("OTEL_METRICS_EXPORTER", "none"),
        ("OTEL_LOGS_EXPORTER", "none"),
    ])
    .await;
}

#[tokio::test]
async fn sigterm_flushes_all_three_signals_before_exit() {
    let receiver = Receiver::start().await.unwrap();
    let endpoint = receiver.endpoint();
    let server = ServerProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SERVICE_NAME", "flush-test"),
        // The spec: OTEL_SERVICE_NAME wins over service.name in the attributes.
        ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes"),
        // Long enough that only the shutdown flush can deliver anything.
        ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "60000"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "60000"),
    ])
    .await;
    let id = unique_id("flush");
    let mut client = client::Client::connect(&server.url, Duration::from_secs(5))
        .await
        .unwrap();
    client.process_request(id.clone()).await.unwrap();
    let lines = server.terminate().await;

    let spans = receiver.spans();
    let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
    for name in [
        "grpc.server.ProcessRequest",
        "process-business-logic",
        "database-query",
    ] {
        assert!(names.contains(&name), "{name} not flushed: {names:?}");
    }
    assert!(
        spans.iter().all(|s| s.service == "flush-test"),
        "OTEL_SERVICE_NAME wins"
    );
    let logs = receiver.logs();
    assert!(
        logs.iter()
            .any(|l| l.body == format!("Processing request: {id}")),
        "{logs:?}"
    );
    assert!(
        receiver
            .points()
            .iter()
            .any(|p| p.metric == metric("requests.total"))
    );

    let server_span = spans
        .iter()
        .find(|s| s.name == "grpc.server.ProcessRequest")
        .unwrap();
    let line = lines
        .iter()
        .find(|l| {
            l["msg"]
                .as_str()
                .is_some_and(|m| m.ends_with(&format!("Processing request: {id}")))
        })
        .expect("the process logged the call");
    assert_eq!(line["trace_id"], server_span.trace_id.as_str());
}

#[tokio::test]
async fn transport_events_never_feed_back_into_exported_telemetry() {
    let receiver = Receiver::start().await.unwrap();
    let endpoint = receiver.endpoint();
    // TRACE makes h2, hyper and tonic log every frame of every export; each export of those
    // events would cause more (opentelemetry-rust#2877). Metrics export every 100 ms to keep the
    // exporters busy while the service itself is idle.
    let server = ServerProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("RUST_LOG", "trace"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let mut client = client::Client::connect(&server.url, Duration::from_secs(5))
        .await
        .unwrap();
    client.process_request(unique_id("feedback")).await.unwrap();
    let exports = receiver
        .wait_for(Duration::from_secs(10), |r| {
            let n = r.points().len();
            (n > 0).then_some(n)
        })
        .await;
    assert!(exports.is_some(), "the exporters ran");
    // A window of idle exports after one call: with the loop, records grow by thousands a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = server.terminate().await;

    assert!(
        lines
            .iter()
            .any(|l| l["target"].as_str().is_some_and(|t| t.starts_with("h2"))),
        "stdout does get TRACE transport lines"
    );
    let names: Vec<_> = receiver.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(names.len(), 3, "only the call's own spans: {names:?}");
    let logs = receiver.logs();
    assert!(
        logs.len() < 20,
        "{} log records exported by an idle service, e.g. {:?}",
        logs.len(),
        logs.first()
    );
}

#[tokio::test]
async fn a_dead_collector_is_reported_once_not_per_export() {
    // A port that was free a moment ago: connections to it are refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let endpoint = format!("http://{dead}");
    let server = ServerProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let mut client = client::Client::connect(&server.url, Duration::from_secs(5))
        .await
        .unwrap();
    for _ in 0..20 {
        let response = client.process_request(unique_id("dead")).await;
        assert!(
            response.is_ok(),
            "a dead collector never fails a call: {response:?}"
        );
    }
    let lines = server.terminate().await;

    let mut seen = std::collections::HashMap::new();
    for line in &lines {
        let target = line["target"].as_str().unwrap_or_default();
        if target.starts_with("opentelemetry") {
            let at = (
                target.to_owned(),
                line["file"].to_string(),
                line["line"].to_string(),
            );
            *seen.entry(at).or_insert(0) += 1;
        }
    }
    assert!(!seen.is_empty(), "the export failure is reported");
    assert!(
        seen.values().all(|&n| n == 1),
        "repeated export diagnostics: {seen:?}"
    );
}

/// What the SDK says while the exporters are built reaches stdout, one JSON line per warning
/// (`OTEL_EXPORTER_OTLP_COMPRESSION` is read by the SDK from the process environment only).
/// A SIGTERM that comes as soon as the port opens, before any call, is still a graceful stop
/// (exit 0), not the default action that kills the process: the handler is there first.
#[tokio::test]
async fn sigterm_as_soon_as_the_port_opens_is_a_graceful_stop() {
    for _ in 0..3 {
        let server = ServerProcess::start(&[("OTEL_SDK_DISABLED", "true")]).await;
        // terminate() asserts that the process exited 0.
        server.terminate().await;
    }
}

#[tokio::test]
async fn the_sdks_warnings_while_building_the_exporters_are_lines() {
    let server = ServerProcess::start(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli-please")]).await;
    let lines = server.terminate().await;
    let warnings: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["msg"].as_str().is_some_and(|m| {
                m.contains("OTEL_EXPORTER_OTLP_COMPRESSION") && m.contains("brotli-please")
            })
        })
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one line for the three exporters: {lines:#?}"
    );
    assert_eq!(warnings[0]["level"], 40, "WARN: {:?}", warnings[0]);
}

/// A port already taken stops the server at once with exit 1 and one error line on stderr that
/// names the address and the setting that chose it (`--listen`/`LISTEN_ADDR`), not a panic.
#[tokio::test]
async fn a_port_already_taken_names_the_address_and_the_listen_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let mut child =
        std::process::Command::new(env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME"))))
            .env_clear()
            .env("LISTEN_ADDR", &address)
            .env("OTEL_SDK_DISABLED", "true")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    // Bounded: a server that serves anyway (or hangs) fails the test instead of blocking it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the server did not exit with {address} taken");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let error: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    for expected in [address.as_str(), "--listen", "LISTEN_ADDR", "in use"] {
        assert!(error[0].contains(expected), "no {expected:?} in {stderr}");
    }
    drop(taken);
}
