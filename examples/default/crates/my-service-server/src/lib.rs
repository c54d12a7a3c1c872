//! The server as a library: [`run`] serves on a listener until a shutdown future completes, so
//! `main` and the tests start it the same way.

mod config;
pub mod drain;
mod error;
mod limits;
mod service;

use std::future::Future;

use anyhow::Context as _;
use tokio::net::TcpListener;

pub use config::Config;
pub use error::ProcessError;
pub use service::{MAX_STREAM_COUNT, MAX_STREAM_INTERVAL_MS};

/// Serves the gRPC API, health and reflection on `listener` (over TLS when the configuration names
/// a certificate) until `shutdown` completes; then stops accepting, lets in-flight calls finish for
/// up to the configured drain timeout, cuts the ones still open (recorded as UNAVAILABLE, see
/// [`drain::drain`]), and returns once all are recorded.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let address = listener
        .local_addr()
        .context("the listener has no address")?;
    let tls = config.tls()?;
    if tls.is_some() {
        let clients = if config.tls_client_ca.is_some() {
            "only clients with a certificate signed by --tls-client-ca"
        } else {
            "any client"
        };
        tracing::info!("TLS is on: serving {clients}");
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<proto::ServiceServer<service::Handler>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    let api = proto::ServiceServer::new(service::Handler::new(&config))
        .max_decoding_message_size(config.max_message_bytes);

    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("Shutdown requested: refusing new connections, draining in-flight calls");
        health
            .set_not_serving::<proto::ServiceServer<service::Handler>>()
            .await;
        let _ = draining_tx.send(());
    };
    let telemetry_layer =
        telemetry::grpc::GrpcServerLayer::new(proto::METRIC_PREFIX, &[proto::FILE_DESCRIPTOR_SET]);
    let calls = telemetry_layer.calls();
    let connections = drain::Connections::default();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .context("the TLS configuration is not usable")?;
    }
    let serve = builder
        .layer(telemetry_layer)
        .layer(limits::MessageLimitLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(api)
        .serve_with_incoming_shutdown(connections.incoming(listener), signal);

    tracing::info!("Starting gRPC server on {address}");
    drain::drain(
        serve,
        async { draining_rx.await.is_ok() },
        config.drain_timeout(),
        &calls,
        &connections,
    )
    .await
    .context("the gRPC server failed")?;
    tracing::info!("Server stopped");
    Ok(())
}

/// Listens for SIGTERM (how orchestrators stop a process) and SIGINT (Ctrl-C) from the moment it
/// is called, and returns what completes on either. Call it, inside the runtime, before the port
/// opens: a signal that arrives before the server first polls the future is then still a graceful
/// shutdown, not the default action that kills the process on the spot.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let listeners = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |listener: std::io::Result<tokio::signal::unix::Signal>,
                        name: &'static str| async move {
                match listener {
                    Ok(mut listener) => {
                        listener.recv().await;
                    }
                    Err(error) => {
                        tracing::warn!("cannot listen for {name}: {error}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            let (terminate, interrupt) = listeners;
            tokio::select! {
                () = wait(terminate, "SIGTERM") => {}
                () = wait(interrupt, "SIGINT") => {}
            }
        }
        #[cfg(not(unix))]
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {error}");
            std::future::pending::<()>().await;
        }
    }
}
