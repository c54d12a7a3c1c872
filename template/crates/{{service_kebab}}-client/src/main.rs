//! The CLI: calls `ProcessRequest` once and prints the result and the trace id.
//! Its JSON log lines go to stderr, so stdout carries only the answer.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use opentelemetry::trace::TraceContextExt as _;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

#[derive(Debug, clap::Parser)]
#[command(version, about)]
struct Args {
    /// Server URL [default: http://127.0.0.1:<the service's port>].
    #[arg(long, env = "SERVER_ADDR")]
    server: Option<String>,

    /// Request id to send; a random UUID when omitted.
    #[arg(long)]
    id: Option<String>,

    /// Seconds to wait for the connection.
    #[arg(long, env = "CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    connect_timeout_secs: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let service_name = format!("{}-client", proto::SERVICE_NAME);
    let telemetry = runtime.block_on(async {
        telemetry::Telemetry::builder(&service_name, env!("CARGO_PKG_VERSION"))
            .writer(tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr))
            .init()
    });
    let telemetry = match telemetry {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: cannot start telemetry: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(call(args));
    drop(telemetry);
    code
}

async fn call(args: Args) -> ExitCode {
    let server = args
        .server
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", proto::DEFAULT_PORT));
    let id = args.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let timeout = Duration::from_secs(args.connect_timeout_secs);

    // The trace starts here, so the id can be printed whether the call succeeds or not.
    let span = tracing::info_span!("cli.process_request");
    let trace_id = span.context().span().span_context().trace_id();
    let outcome = async {
        let mut client = client::Client::connect(&server, timeout).await.map_err(|e| e.to_string())?;
        client
            .process_request(id)
            .await
            .map_err(|status| format!("{}: {}", telemetry::grpc::code_name(status.code()), status.message()))
    }
    .instrument(span)
    .await;

    match outcome {
        Ok(response) => {
            println!("result: {}", response.result);
            println!("trace_id: {trace_id}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            eprintln!("trace_id: {trace_id}");
            ExitCode::FAILURE
        }
    }
}
