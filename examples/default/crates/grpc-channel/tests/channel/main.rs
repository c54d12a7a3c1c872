//! The shared client machinery against test servers: balancing and failover over replicas
//! (`fleet`), deadlines and gRFC A6 retries (`retries`). The servers are hand-written over tonic's
//! generic `Grpc` ([`service`]), so no service's proto is compiled and no generated trait is
//! implemented: a service that gains an RPC does not touch these tests. One test binary.
#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test, with its location.

mod fleet;
mod helpers;
mod retries;
mod service;
