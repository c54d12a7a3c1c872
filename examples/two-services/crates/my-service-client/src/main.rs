//! The CLI: calls `ProcessRequest` once and prints the result and the trace id (with
//! `--method stream-results`, calls `StreamResults` and prints each result as it arrives), or,
//! with `--requests`/`--duration`, loads the server and prints a summary. The flags, the
//! telemetry and both modes are the workspace's ([`grpc_channel::cli`]); what is this service's
//! own is which call, with which arguments ([`client::call::Call`]).

// The library is named after the service; the rest of this crate calls it `client`.
extern crate my_service_client as client;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use client::call::Call;

/// mimalloc serves the many small, short-lived allocations of a traced call (spans, attributes,
/// JSON lines) faster than the system allocator: 18 % less CPU per call, measured (the template
/// repository's docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, clap::Parser)]
#[command(version, about)]
struct Args {
    /// The RPC to call: `process-request` (unary) or `stream-results` (server streaming).
    #[arg(long, value_enum, default_value_t = Method::ProcessRequest)]
    method: Method,

    /// `stream-results`: how many results to ask for (the server accepts 1 to 1000) [default: 5].
    #[arg(long)]
    count: Option<u32>,

    /// `stream-results`: milliseconds the server waits between two results (at most 10000)
    /// [default: 100].
    #[arg(long)]
    interval_ms: Option<u32>,

    #[command(flatten)]
    common: grpc_channel::cli::Args,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Method {
    ProcessRequest,
    StreamResults,
}

impl Args {
    /// The call the flags ask for; a flag of the other method is a usage error.
    fn call(&self) -> Call {
        match self.method {
            Method::ProcessRequest => {
                if self.count.is_some() || self.interval_ms.is_some() {
                    <Self as clap::CommandFactory>::command()
                        .error(
                            clap::error::ErrorKind::ArgumentConflict,
                            "--count and --interval-ms apply to --method stream-results only",
                        )
                        .exit();
                }
                Call::ProcessRequest
            }
            Method::StreamResults => Call::StreamResults {
                count: self.count.unwrap_or(5),
                interval: Duration::from_millis(u64::from(self.interval_ms.unwrap_or(100))),
            },
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let target = grpc_channel::cli::Target {
        service: client::SERVICE,
        name: &format!("{}-client", proto::SERVICE_NAME),
        version: env!("CARGO_PKG_VERSION"),
        default_port: proto::DEFAULT_PORT,
    };
    grpc_channel::cli::run::<Args, _>(&args.common, target, args.call())
}
