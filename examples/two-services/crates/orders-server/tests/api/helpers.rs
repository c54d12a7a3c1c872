//! Starts the shared telemetry (once per test binary) and a server per test, and finds what a
//! call left behind in the receiver and the captured JSON lines.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;

pub(crate) use telemetry_testing::{ARRIVAL, World, check_attributes, span};

/// The test binary's telemetry, exported to an in-process receiver and captured as JSON lines.
pub(crate) fn world() -> &'static World {
    telemetry_testing::world(proto::SERVICE_NAME)
}

/// A server running in the test's runtime, and a client connected to it.
pub(crate) struct TestApp {
    pub(crate) address: SocketAddr,
    pub(crate) client: client::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl TestApp {
    /// Asks the server to shut down, as SIGTERM would.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server on a free port with the default configuration changed by `configure`.
pub(crate) async fn spawn_app_with(configure: impl FnOnce(&mut server::Config)) -> TestApp {
    spawn_app_tls(configure, None).await
}

/// Like [`spawn_app_with`]; with `tls`, the client connects over `https://` with it (the
/// configuration must name the server's certificate).
pub(crate) async fn spawn_app_tls(
    configure: impl FnOnce(&mut server::Config),
    tls: Option<&client::Tls>,
) -> TestApp {
    world();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    let mut config = server::Config::for_address(address);
    configure(&mut config);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server::run(listener, config, async {
        let _ = stopped.await;
    }));
    let client = match tls {
        None => client::Client::connect(&format!("http://{address}"), Duration::from_secs(5)).await,
        Some(tls) => {
            let url = format!("https://localhost:{}", address.port());
            client::Client::connect_with_tls(&url, Duration::from_secs(5), tls).await
        }
    }
    .unwrap();
    TestApp {
        address,
        client,
        stop: Some(stop),
    }
}

/// The full name of a metric of this service: `<prefix>.<name>`.
pub(crate) fn metric(name: &str) -> String {
    format!("{}.{name}", proto::METRIC_PREFIX)
}

/// `rpc.method` of the example call.
pub(crate) fn method() -> String {
    format!("{}/ProcessRequest", proto::GRPC_SERVICE)
}

/// A request id no other test uses, with a readable prefix.
pub(crate) fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
