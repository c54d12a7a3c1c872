//! Starts the server: read the configuration, start telemetry, bind, serve until SIGTERM/SIGINT.

// The library is named after the service; the rest of this crate calls it `server`.
extern crate orders_server as server;

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc serves the many small, short-lived allocations of a traced call (spans, attributes,
/// JSON lines) faster than the system allocator: 18 % less CPU per call, measured (the template
/// repository's docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = server::Config::parse();
    // A bad certificate stops the server before anything starts: one line, the file and the problem.
    if let Err(error) = config.serving.tls() {
        eprintln!("error: {error}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The exporters run their I/O on a thread of their own: no runtime is needed to start them.
    let telemetry = match telemetry::init(proto::SERVICE_NAME, env!("CARGO_PKG_VERSION")) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: cannot start telemetry: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Runtime metrics (workers, tasks, queue depth, busy time) of the runtime that serves calls.
    telemetry.observe_runtime(runtime.handle());

    let result = runtime.block_on(async {
        // Before the port opens: a SIGTERM from then on drains, however early it comes.
        let shutdown = server::shutdown_signal();
        // Name the setting that chose the address: the default port is often taken by another copy.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "cannot listen on {}: {error}; choose another address with --listen or LISTEN_ADDR (127.0.0.1:0: any free port)",
                    config.listen
                )
            })?;
        server::run(listener, config, shutdown).await
    });
    if let Err(error) = &result {
        tracing::error!("{error:#}");
        eprintln!("error: {error:#}");
    }
    // Flush telemetry from this thread, not a runtime worker: dropping the guard blocks.
    drop(telemetry);
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
