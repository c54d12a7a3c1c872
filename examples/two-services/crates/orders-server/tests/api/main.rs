//! The server's behaviour, through the real client against the real server, with telemetry
//! exported to an in-process OTLP receiver. One test binary: a file per behaviour.
#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test, with its location.

// The library is named after the service; the tests call it `server`.
extern crate orders_server as server;

// What a real binary shows (`process`, `shutdown`, `dashboard`), the shared machinery seen
// through this service (`deadlines`, `tls`, and `tests/fleet.rs`) and the workspace's documents
// (`docs`) are tested in the workspace's first service only: an added service's copy would run
// the same code again. So is the server-stream example (`stream_results`), which an added
// service does not have.
mod errors;
mod helpers;
mod logs;
mod metrics;
mod neighbour;
mod traces;
