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

/// The server binary of this package, started as a process with its own environment.
pub(crate) struct ServerProcess {
    pub(crate) url: String,
    child: std::process::Child,
    stdout: std::path::PathBuf,
}

impl ServerProcess {
    pub(crate) async fn start(env: &[(&str, &str)]) -> Self {
        // A port the OS just handed out and released: free unless something races for it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let stdout = std::env::temp_dir().join(format!("{}.stdout", unique_id("server")));
        let child =
            std::process::Command::new(env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME"))))
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
                // The in-process receiver speaks OTLP/gRPC, whatever the rendered default.
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
                // Alone, a test's server has no clients to turn away before it drains.
                .env("DRAIN_DELAY_SECS", "0")
                .envs(env.iter().copied())
                .stdout(std::fs::File::create(&stdout).unwrap())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the server never listened on {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            stdout,
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns its stdout lines.
    pub(crate) async fn terminate(self) -> Vec<serde_json::Value> {
        self.sigterm();
        self.exited().await
    }

    /// Sends SIGTERM, as an orchestrator does.
    pub(crate) fn sigterm(&self) {
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    /// Waits (bounded) for the process to exit with success; returns its stdout lines.
    pub(crate) async fn exited(mut self) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "exit status {status}");
        let text = std::fs::read_to_string(&self.stdout).unwrap();
        let _ = std::fs::remove_file(&self.stdout);
        text.lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"))
            })
            .collect()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
