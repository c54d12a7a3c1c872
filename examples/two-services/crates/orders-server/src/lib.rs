//! The Orders server as a library: [`run`] serves on a listener until a shutdown future
//! completes, so `main` and the tests start it the same way. What is this service's own lives
//! here (its handler, its errors, its flags); how every service is served (health, reflection,
//! shedding, deadlines, drain, TLS) is the workspace's `grpc-serving` crate.

mod config;
mod error;
mod service;

use std::future::Future;

use tokio::net::TcpListener;

pub use config::{Config, DEFAULT_DB_LATENCY_MS};
pub use error::ProcessError;
pub use grpc_serving::{Deadline, shutdown_signal};

/// Serves the service on `listener` until `shutdown` completes, then drains (see
/// [`grpc_serving::Server::serve`]).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let api = proto::ServiceServer::new(service::Handler::new(&config))
        .max_decoding_message_size(config.serving.max_message_bytes);
    grpc_serving::Server::new(config.serving, proto::METRIC_PREFIX)
        .descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .serve(listener, api, shutdown)
        .await
}
