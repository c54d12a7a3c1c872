//! Log records and stdout lines carry the ids of the span they were written in, and stay valid
//! JSON whatever the request id holds.

use crate::helpers::{span, spawn_app, unique_id, world};

#[tokio::test]
async fn exported_log_records_carry_their_span_ids() {
    let mut app = spawn_app().await;
    let id = unique_id("logs");
    app.client.process_request(id.clone()).await.unwrap();

    let spans = world().trace_of(&id, 4).await;
    let server = span(&spans, "grpc.server.ProcessRequest");
    let query = span(&spans, "database-query");
    let logic = span(&spans, "process-business-logic");
    let attempt = span(&spans, "grpc.client.attempt.ProcessRequest");
    let logs = world().logs_of(&server.trace_id, 5).await;

    let check = |body: &str, expected_span: &str| {
        let record = logs
            .iter()
            .find(|l| l.body == body)
            .unwrap_or_else(|| panic!("no log record {body:?} in {logs:#?}"));
        assert_eq!(record.span_id, expected_span, "{body}");
        assert_eq!(record.severity_number, 9, "INFO: {body}");
    };
    check(&format!("Processing request: {id}"), &server.span_id);
    check("Executing database query", &query.span_id);
    check(
        &format!("Calling service at 127.0.0.1:{}", app.address.port()),
        &attempt.span_id,
    );
    let done = logs
        .iter()
        .find(|l| l.body.starts_with("Request processed successfully in "))
        .expect("a success log record");
    assert_eq!(done.span_id, logic.span_id);
    assert!(logs.iter().all(|l| !l.service.is_empty()));
    app.stop();
}

#[tokio::test]
async fn stdout_lines_carry_the_exported_ids() {
    let mut app = spawn_app().await;
    let id = unique_id("stdout");
    app.client.process_request(id.clone()).await.unwrap();
    let spans = world().trace_of(&id, 4).await;
    let server = span(&spans, "grpc.server.ProcessRequest");
    let query = span(&spans, "database-query");

    let lines = world().json_lines();
    let line = |suffix: &str| {
        lines
            .iter()
            .find(|l| l["msg"].as_str().is_some_and(|m| m.ends_with(suffix)))
            .unwrap_or_else(|| panic!("no stdout line ending {suffix:?}"))
            .clone()
    };
    let processing = line(&format!("Processing request: {id}"));
    assert_eq!(processing["trace_id"], server.trace_id.as_str());
    assert_eq!(processing["span_id"], server.span_id.as_str());
    for field in [
        "v", "name", "msg", "level", "hostname", "pid", "time", "target",
    ] {
        assert!(
            processing.get(field).is_some(),
            "bunyan field {field} missing: {processing}"
        );
    }
    let querying = lines
        .iter()
        .find(|l| {
            l["trace_id"] == server.trace_id.as_str()
                && l["msg"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("Executing database query"))
        })
        .expect("the query line of this trace");
    assert_eq!(querying["span_id"], query.span_id.as_str());
    // Span START/END lines are off by default.
    assert!(
        !lines
            .iter()
            .any(|l| l["msg"].as_str().is_some_and(|m| m.ends_with("- START]")))
    );
    app.stop();
}

#[tokio::test]
async fn hostile_request_ids_keep_every_line_valid_json() {
    let mut app = spawn_app().await;
    let mut id = unique_id("hostile");
    id.push_str(r#" "quoted" back\slash"#);
    id.push_str(" new\nline\r\ttab ünïcødé 🚀 ");
    id.push_str(r#"{"json":1} \u0000"#);
    app.client.process_request(id.clone()).await.unwrap();
    let spans = world().trace_of(&id, 4).await;

    // json_lines fails on any line that does not parse.
    let lines = world().json_lines();
    let processing = lines
        .iter()
        .find(|l| {
            l["msg"]
                .as_str()
                .is_some_and(|m| m.ends_with(&format!("Processing request: {id}")))
        })
        .expect("the id survives a round trip through the JSON line");
    assert_eq!(processing["trace_id"], spans[0].trace_id.as_str());
    let server = span(&spans, "grpc.server.ProcessRequest");
    assert_eq!(server.attributes["request.id"], id);
    app.stop();
}

#[tokio::test]
async fn a_huge_request_id_is_cut_in_telemetry_only() {
    let mut app = spawn_app().await;
    let prefix = unique_id("huge");
    let id = format!("{prefix}-{}", "é".repeat(200_000));
    assert_eq!(
        app.client.process_request(id.clone()).await.unwrap().result,
        "success"
    );

    let shown = telemetry::bounded(&id);
    assert_eq!(shown.chars().count(), telemetry::MAX_VALUE_CHARS);
    let spans = world().trace_of(shown, 4).await;
    let server = span(&spans, "grpc.server.ProcessRequest");
    assert_eq!(server.attributes["request.id"], shown);
    let logs = world().logs_of(&server.trace_id, 3).await;
    assert!(
        logs.iter()
            .any(|l| l.body == format!("Processing request: {shown}"))
    );
    app.stop();
}

/// The `RUST_LOG` examples of the docs outside a render: the template repository's README.md and
/// TELEMETRY.md. Keep this list in step with them; the render's own docs are read below.
const REPOSITORY_DOC_EXAMPLES: [&str; 2] = ["off", "warn"];

/// The `RUST_LOG` values the render's docs show: every `RUST_LOG=<value>` and the backticked
/// values in the README's `RUST_LOG` table row.
fn documented_rust_log_examples() -> Vec<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut examples: Vec<String> = REPOSITORY_DOC_EXAMPLES.map(str::to_owned).to_vec();
    for doc in ["README.md", "ARCHITECTURE.md"] {
        let text = std::fs::read_to_string(format!("{root}/{doc}"))
            .unwrap_or_else(|e| panic!("cannot read {doc}: {e}"));
        for (_, rest) in text
            .match_indices("RUST_LOG=")
            .map(|(i, _)| text.split_at(i + 9))
        {
            let value: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, '`' | ')' | '.'))
                .collect();
            examples.push(value);
        }
        for row in text.lines().filter(|l| l.starts_with("| `RUST_LOG` |")) {
            let cells = row.trim_start_matches("| `RUST_LOG` |");
            examples.extend(
                cells
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .filter(|value| !value.contains(' '))
                    .map(str::to_owned),
            );
        }
    }
    examples.retain(|e| !e.is_empty());
    examples.sort();
    examples.dedup();
    examples
}

#[tokio::test]
async fn every_documented_rust_log_example_selects_lines_the_service_writes() {
    let mut app = spawn_app().await;
    app.client
        .process_request(unique_id("rust-log"))
        .await
        .unwrap();
    // The targets that really write lines, from what the service just wrote.
    let targets: std::collections::BTreeSet<String> = world()
        .json_lines()
        .iter()
        .filter_map(|l| l["target"].as_str().map(str::to_owned))
        .collect();
    let examples = documented_rust_log_examples();
    assert!(
        examples.iter().any(|e| e.contains('=')),
        "the README shows a per-target example: {examples:?}"
    );
    for example in &examples {
        telemetry::testing::rust_log_enables(example, "any", tracing::Level::INFO)
            .unwrap_or_else(|e| panic!("the documented RUST_LOG={example} is refused: {e}"));
        for directive in example.split(',').filter(|d| d.contains('=')) {
            let (target, level) = directive.split_once('=').unwrap();
            // Another server of the workspace (a README names the first service's): its own
            // tests see its lines; here it must at least be one of the workspace's crates.
            let krate = target
                .split("::")
                .next()
                .unwrap_or_default()
                .replace('_', "-");
            let own = env!("CARGO_PKG_NAME");
            if krate != own && krate.ends_with("-server") {
                let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
                assert!(
                    std::path::Path::new(&format!("{dir}/{krate}")).is_dir(),
                    "RUST_LOG={example}: {target:?} is no crate of the workspace"
                );
                continue;
            }
            let real = targets
                .iter()
                .find(|t| t.starts_with(target))
                .unwrap_or_else(|| {
                    panic!("RUST_LOG={example}: {target:?} names no target that writes lines ({targets:?})")
                });
            let level: tracing::Level = level
                .parse()
                .unwrap_or_else(|_| panic!("RUST_LOG={example}: {level:?} is no level"));
            assert_eq!(
                telemetry::testing::rust_log_enables(example, real, level),
                Ok(true),
                "RUST_LOG={example} does not write {real} at {level}"
            );
        }
    }
    app.stop();
}
