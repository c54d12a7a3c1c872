//! The CLI: calls `ProcessRequest` once and prints the result and the trace id, or, with
//! `--requests`/`--duration`, loads the server and prints a summary. The flags, the telemetry and
//! both modes are the workspace's ([`grpc_channel::cli`]); what is this service's own is which
//! call, with which arguments ([`client::call::Call`]).

// The library is named after the service; the rest of this crate calls it `client`.
extern crate orders_client as client;

use std::process::ExitCode;

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
    #[command(flatten)]
    common: grpc_channel::cli::Args,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let target = grpc_channel::cli::Target {
        service: client::SERVICE,
        name: &format!("{}-client", proto::SERVICE_NAME),
        version: env!("CARGO_PKG_VERSION"),
        default_port: proto::DEFAULT_PORT,
    };
    grpc_channel::cli::run::<Args, _>(&args.common, target, Call::ProcessRequest)
}
