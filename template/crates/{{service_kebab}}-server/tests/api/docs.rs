//! The `RUST_LOG` examples the workspace's documents show select lines the service really writes.

use crate::helpers::{spawn_app, unique_id, world};

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
