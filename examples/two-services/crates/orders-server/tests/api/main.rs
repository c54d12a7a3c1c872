//! The server's behaviour, through the real client against the real server, with telemetry
//! exported to an in-process OTLP receiver. One test binary: a file per behaviour.
#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test, with its location.

// The library is named after the service; the tests call it `server`.
extern crate orders_server as server;

mod deadlines;
mod errors;
mod helpers;
mod logs;
mod metrics;
mod neighbour;
mod shutdown;
mod stream_results;
mod tls;
mod traces;
