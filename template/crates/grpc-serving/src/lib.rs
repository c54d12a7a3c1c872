//! What every service's server shares: [`Server`] serves one gRPC service with health,
//! reflection and the layers every call goes through (telemetry, load shedding, deadlines,
//! message limits), on a listener, over TLS when the configuration names a certificate, until a
//! shutdown future completes; then drains as a replica leaving a fleet should. A service's
//! `lib.rs` builds its handler and calls [`Server::serve`]; its `main` reads its flags (with
//! [`Config`] flattened in), starts telemetry and waits for [`shutdown_signal`].

mod calls;
mod config;
pub mod deadline;
pub mod drain;
mod limits;
mod shed;

use std::convert::Infallible;
use std::future::Future;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;

pub use config::{
    Config, DEFAULT_DRAIN_DELAY_SECS, DEFAULT_DRAIN_TIMEOUT_SECS, DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_CONNECTION_AGE_SECS, DEFAULT_MAX_MESSAGE_BYTES,
};
pub use deadline::Deadline;

/// Serves one gRPC service the way every service of the workspace is served.
#[derive(Clone, Debug)]
pub struct Server {
    config: Config,
    metric_prefix: &'static str,
    descriptor_sets: Vec<&'static [u8]>,
}

impl Server {
    /// A server with `config`, whose own metrics are named `<metric_prefix>.…`.
    pub fn new(config: Config, metric_prefix: &'static str) -> Self {
        Self {
            config,
            metric_prefix,
            descriptor_sets: Vec::new(),
        }
    }

    /// Serves reflection for the services in this encoded `FileDescriptorSet`, and names their
    /// methods on the spans and metrics (a method not in a set is `_OTHER`).
    #[must_use]
    pub fn descriptor_set(mut self, encoded: &'static [u8]) -> Self {
        self.descriptor_sets.push(encoded);
        self
    }

    /// Serves `api`, health and reflection on `listener` (over TLS when the configuration names
    /// a certificate), refusing the calls beyond the configured limit in flight with
    /// UNAVAILABLE, until `shutdown` completes; then reports NOT_SERVING on the readiness health
    /// (the service's name) and serves on for the configured drain delay, stops accepting, lets
    /// in-flight calls finish for up to the configured drain timeout, cuts the ones still open
    /// (recorded as UNAVAILABLE, see [`drain::drain`]), and returns once all are recorded.
    ///
    /// Set the generated server's own limits before (its `max_decoding_message_size` from
    /// [`Config::max_message_bytes`]): only the generated type has them.
    pub async fn serve<S>(
        self,
        listener: TcpListener,
        api: S,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()>
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let Self {
            config,
            metric_prefix,
            descriptor_sets,
        } = self;
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
        let (mut health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(S::NAME, tonic_health::ServingStatus::Serving)
            .await;
        let mut reflection = tonic_reflection::server::Builder::configure();
        for set in &descriptor_sets {
            reflection = reflection.register_encoded_file_descriptor_set(set);
        }
        let reflection = reflection
            .build_v1()
            .context("cannot build the reflection service")?;

        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let drain_delay = config.drain_delay();
        let signal = async move {
            shutdown.await;
            // Readiness (the service's name) turns NOT_SERVING at once; liveness ("") stays
            // SERVING, so Kubernetes does not restart a pod that is only leaving.
            health
                .set_service_status(S::NAME, tonic_health::ServingStatus::NotServing)
                .await;
            if !drain_delay.is_zero() {
                tracing::info!(
                    "Leaving the fleet: readiness reports NOT_SERVING; calls are served for the \
                     drain delay of {drain_delay:?} while clients turn to other replicas"
                );
                tokio::time::sleep(drain_delay).await;
            }
            tracing::info!(
                "Shutdown requested: refusing new connections, draining in-flight calls"
            );
            // Health watches never end by themselves: ending them now keeps the drain from
            // waiting on them (their clients see the stream end, as from a server going away).
            health.clear_service_status(S::NAME).await;
            health.clear_service_status("").await;
            let _ = draining_tx.send(());
        };
        let calls_layer = calls::OpenCallsLayer::default();
        let calls = calls_layer.calls();
        let telemetry_layer =
            telemetry::grpc::GrpcServerLayer::new(metric_prefix, &descriptor_sets);
        let unfinished = telemetry_layer.unfinished();
        let shed_layer = shed::LoadShedLayer::new(config.max_concurrent_calls, metric_prefix);
        let connections = drain::Connections::default();
        // Connections close gracefully at their age (GOAWAY; calls in flight finish), so clients
        // that keep one connection spread again. No max_connection_age_grace: in tonic 0.14.9 it
        // replaces that graceful close by a hard one at age + grace, failing the calls in flight.
        let mut builder =
            tonic::transport::Server::builder().max_connection_age(config.max_connection_age());
        if let Some(tls) = tls {
            builder = builder
                .tls_config(tls)
                .context("the TLS configuration is not usable")?;
        }
        let serve = builder
            // Outside the telemetry layer: a call counts until the telemetry layer recorded it.
            .layer(calls_layer)
            .layer(telemetry_layer)
            // Inside the telemetry layer: a refused call gets its server span and metrics.
            .layer(shed_layer)
            // The handler's and the response stream's deadline; inside the telemetry layer, so
            // an expiry is on the span.
            .layer(deadline::DeadlineLayer)
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
            &unfinished,
            &connections,
        )
        .await
        .context("the gRPC server failed")?;
        tracing::info!("Server stopped");
        Ok(())
    }
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
