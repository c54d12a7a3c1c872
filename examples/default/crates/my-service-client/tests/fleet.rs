//! Balancing over replicas: three (then four) small servers on 127.0.0.1, .2, .3 (.4) with the
//! same port, as pods would be, their addresses injected through the `Discovery` trait. Each
//! replica counts the calls it serves and reports the health the test sets.
#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test, with its location.

// The library is named after the service; the tests call it `client`.
extern crate my_service_client as client;

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::discovery::{ResolveError, Resolving};
use client::{Balancing, Client, Discovery, LbPolicy, Tls};
use proto::{MyRequest, MyResponse, StreamRequest, StreamResult};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Every wait on a condition in these tests gives up after this long.
const BOUND: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default)]
struct Counting(Arc<AtomicUsize>);

#[tonic::async_trait]
impl proto::Service for Counting {
    async fn process_request(
        &self,
        request: Request<MyRequest>,
    ) -> Result<Response<MyResponse>, Status> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(MyResponse {
            result: request.into_inner().id,
        }))
    }

    type StreamResultsStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<StreamResult, Status>> + Send>>;

    async fn stream_results(
        &self,
        _request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamResultsStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// One replica: its call count and its readiness health.
struct Replica {
    calls: Arc<AtomicUsize>,
    health: HealthReporter,
    _stop: oneshot::Sender<()>,
}

impl Replica {
    async fn start(ip: &str, port: u16) -> (Self, SocketAddr) {
        Self::start_tls(ip, port, None).await
    }

    async fn start_tls(
        ip: &str,
        port: u16,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(proto::GRPC_SERVICE, ServingStatus::Serving)
            .await;
        let counting = Counting::default();
        let calls = Arc::clone(&counting.0);
        let (stop, stopped) = oneshot::channel::<()>();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        tokio::spawn(
            builder
                .add_service(health_service)
                .add_service(proto::ServiceServer::new(counting))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        (
            Self {
                calls,
                health,
                _stop: stop,
            },
            address,
        )
    }

    fn take(&self) -> usize {
        self.calls.swap(0, Ordering::Relaxed)
    }

    async fn set(&self, status: ServingStatus) {
        self.health
            .set_service_status(proto::GRPC_SERVICE, status)
            .await;
    }
}

/// Addresses the test sets, as a headless Service's DNS answer would change.
#[derive(Clone, Debug, Default)]
struct Addresses(Arc<Mutex<Vec<SocketAddr>>>);

impl Addresses {
    fn set(&self, addresses: &[SocketAddr]) {
        *self.0.lock().unwrap() = addresses.to_vec();
    }
}

impl Discovery for Addresses {
    fn resolve(&self) -> Resolving<'_> {
        let addresses = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(addresses) })
    }
}

/// Replicas on 127.0.0.1 .. 127.0.0.n, all on one port.
async fn fleet(n: u8) -> (Vec<Replica>, Vec<SocketAddr>, u16) {
    let (first, address) = Replica::start("127.0.0.1", 0).await;
    let port = address.port();
    let (mut replicas, mut addresses) = (vec![first], vec![address]);
    for i in 2..=n {
        let (replica, address) = Replica::start(&format!("127.0.0.{i}"), port).await;
        replicas.push(replica);
        addresses.push(address);
    }
    (replicas, addresses, port)
}

fn balancing(refresh_secs: u64) -> Balancing {
    Balancing {
        dns_refresh_secs: refresh_secs,
        ..Balancing::default()
    }
}

async fn connect(port: u16, discovery: &Addresses, balancing: &Balancing) -> Client {
    Client::connect_discovered(
        &format!("http://fleet.test:{port}"),
        Duration::from_secs(5),
        &Tls::default(),
        balancing,
        Arc::new(discovery.clone()),
    )
    .await
    .unwrap()
}

/// Waits (bounded) until `n` replicas report SERVING to the client.
async fn wait_ready(client: &Client, n: usize) {
    let deadline = Instant::now() + BOUND;
    while client.ready_replicas() != Some(n) {
        assert!(
            Instant::now() < deadline,
            "{:?} replicas ready, not {n}",
            client.ready_replicas()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Calls until every replica in `replicas` has served one (bounded): the balancer connects to an
/// endpoint on its first use.
async fn warm_up(client: &mut Client, replicas: &[&Replica]) {
    let deadline = Instant::now() + BOUND;
    let mut seen = vec![false; replicas.len()];
    while !seen.iter().all(|s| *s) {
        assert!(Instant::now() < deadline, "replicas never called: {seen:?}");
        client.process_request("warm-up").await.unwrap();
        for (seen, replica) in seen.iter_mut().zip(replicas) {
            *seen |= replica.take() > 0;
        }
    }
}

async fn calls(client: &mut Client, n: usize) {
    for i in 0..n {
        client.process_request(format!("call-{i}")).await.unwrap();
    }
}

#[track_caller]
fn assert_spread(counts: &[usize], total: usize) {
    assert_eq!(counts.iter().sum::<usize>(), total, "{counts:?}");
    for count in counts {
        let share = *count as f64 / total as f64;
        assert!(
            (0.20..=0.47).contains(&share),
            "each replica should get 20-47% of the calls: {counts:?}"
        );
    }
}

#[tokio::test]
async fn calls_spread_over_the_replicas_and_pin_to_one_without_balancing() {
    let (replicas, addresses, port) = fleet(3).await;
    let discovery = Addresses::default();
    discovery.set(&addresses);
    let mut client = connect(port, &discovery, &balancing(30)).await;
    wait_ready(&client, 3).await;
    warm_up(&mut client, &replicas.iter().collect::<Vec<_>>()).await;

    calls(&mut client, 300).await;
    let counts: Vec<usize> = replicas.iter().map(Replica::take).collect();
    assert_spread(&counts, 300);

    // The pitfall: one connection (`--lb none`, or any client behind a per-connection
    // balancer) sends every call to one replica.
    let mut single = Client::connect_balanced(
        &format!("http://127.0.0.2:{port}"),
        Duration::from_secs(5),
        &Tls::default(),
        &Balancing {
            policy: LbPolicy::None,
            ..Balancing::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(single.ready_replicas(), None);
    calls(&mut single, 300).await;
    let counts: Vec<usize> = replicas.iter().map(Replica::take).collect();
    assert_eq!(counts, [0, 300, 0]);
}

#[tokio::test]
async fn a_replica_not_serving_gets_no_calls_until_it_serves_again() {
    let (replicas, addresses, port) = fleet(3).await;
    let discovery = Addresses::default();
    discovery.set(&addresses);
    let mut client = connect(port, &discovery, &balancing(30)).await;
    wait_ready(&client, 3).await;
    warm_up(&mut client, &replicas.iter().collect::<Vec<_>>()).await;

    replicas[1].set(ServingStatus::NotServing).await;
    wait_ready(&client, 2).await;
    calls(&mut client, 200).await;
    let counts: Vec<usize> = replicas.iter().map(Replica::take).collect();
    assert_eq!(counts[1], 0, "a NOT_SERVING replica was called: {counts:?}");
    assert_eq!(counts[0] + counts[2], 200);

    replicas[1].set(ServingStatus::Serving).await;
    wait_ready(&client, 3).await;
    warm_up(&mut client, &replicas.iter().collect::<Vec<_>>()).await;
    calls(&mut client, 300).await;
    let counts: Vec<usize> = replicas.iter().map(Replica::take).collect();
    assert_spread(&counts, 300);
}

#[tokio::test]
async fn a_replica_added_to_discovery_gets_calls_within_two_resolve_intervals() {
    let (replicas, addresses, port) = fleet(3).await;
    let discovery = Addresses::default();
    discovery.set(&addresses);
    let refresh = Duration::from_secs(1);
    let mut client = connect(port, &discovery, &balancing(refresh.as_secs())).await;
    wait_ready(&client, 3).await;

    let (fourth, address) = Replica::start("127.0.0.4", port).await;
    let added = Instant::now();
    discovery.set(&[addresses.as_slice(), &[address]].concat());
    while fourth.take() == 0 {
        assert!(
            added.elapsed() < 2 * refresh,
            "the fourth replica got no call within two resolve intervals"
        );
        client.process_request("scale-up").await.unwrap();
    }
    drop(replicas);
}

#[tokio::test]
async fn over_tls_every_replica_is_verified_against_the_host_name() {
    let pki = telemetry::testing::Pki::new().unwrap();
    let identity = || {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            pki.read("server.pem"),
            pki.read("server.key"),
        ))
    };
    let (first, address) = Replica::start_tls("127.0.0.1", 0, Some(identity())).await;
    let port = address.port();
    let (second, other) = Replica::start_tls("127.0.0.2", port, Some(identity())).await;
    let discovery = Addresses::default();
    discovery.set(&[address, other]);
    let tls = Tls {
        ca: Some(pki.path("ca.pem")),
        ..Tls::default()
    };
    // The certificate names localhost, not 127.0.0.2: each connection checks the host name.
    let mut client = Client::connect_discovered(
        &format!("https://localhost:{port}"),
        Duration::from_secs(5),
        &tls,
        &Balancing::default(),
        Arc::new(discovery.clone()),
    )
    .await
    .unwrap();
    wait_ready(&client, 2).await;
    warm_up(&mut client, &[&first, &second]).await;

    // A name the certificate does not hold is refused on every replica.
    let error = Client::connect_discovered(
        &format!("https://fleet.test:{port}"),
        Duration::from_secs(2),
        &tls,
        &Balancing::default(),
        Arc::new(discovery),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("reported SERVING") && error.contains("certificate"),
        "{error}"
    );
}

/// A discovery that cannot resolve.
#[derive(Debug)]
struct Failing;

impl Discovery for Failing {
    fn resolve(&self) -> Resolving<'_> {
        Box::pin(async { Err(ResolveError("no such name".to_owned())) })
    }
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_an_error_at_once() {
    let started = Instant::now();
    let error = Client::connect_discovered(
        "http://nowhere.test:50051",
        Duration::from_secs(5),
        &Tls::default(),
        &Balancing::default(),
        Arc::new(Failing),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("no such name"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_name_with_no_address_is_an_error_after_the_connect_timeout() {
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = Client::connect_discovered(
        "http://empty.test:50051",
        timeout,
        &Tls::default(),
        &Balancing::default(),
        Arc::new(Addresses::default()),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("no address"), "{error}");
    assert!(started.elapsed() >= timeout && started.elapsed() < timeout * 3);
}

#[tokio::test]
async fn replicas_that_refuse_connections_give_their_reason_after_the_connect_timeout() {
    // A port nothing listens on, on an address that refuses at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let discovery = Addresses::default();
    discovery.set(&[SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port)]);
    let error = Client::connect_discovered(
        &format!("http://fleet.test:{port}"),
        Duration::from_millis(500),
        &Tls::default(),
        &Balancing::default(),
        Arc::new(discovery),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("reported SERVING") && error.to_lowercase().contains("refused"),
        "{error}"
    );
}

/// The CLI refuses bad balancing settings at start, naming them.
#[test]
fn bad_balancing_settings_are_refused_at_start() {
    let binary = env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME")));
    for (args, expected) in [
        (&["--lb", "round-robin"][..], "--lb"),
        (&["--dns-refresh-secs", "0"][..], "--dns-refresh-secs"),
        (&["--keepalive-secs", "0"][..], "--keepalive-secs"),
        (&["--dns-server", "not-an-ip"][..], "--dns-server"),
    ] {
        let output = std::process::Command::new(binary)
            .args(args)
            .env_remove("LB_POLICY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let output = std::process::Command::new(binary)
        .env("LB_POLICY", "random")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("random"), "{stderr}");
}
