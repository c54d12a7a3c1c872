//! How every service is served, tested once per workspace: a small test service (see
//! [`support`]) served by `grpc_serving::Server` exactly as a service's `lib.rs` serves its own,
//! with telemetry exported to an in-process OTLP receiver. One test binary: a module per
//! behaviour. A service's own tests (its handler, its errors, its binary) live in its crates.
#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test, with its location.

mod connection_age;
mod errors;
mod health;
mod overload;
mod propagation;
mod shutdown;
mod streams;
mod support;
mod tls;
