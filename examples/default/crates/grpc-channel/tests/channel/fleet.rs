//! Balancing over replicas: three (then four) small servers on 127.0.0.1, .2, .3 (.4) with the
//! same port, as pods would be, their addresses injected through the `Discovery` trait. Each
//! replica counts the calls it serves and reports the health the test sets. Loopback addresses
//! other than 127.0.0.1 answer on Linux only (macOS has just 127.0.0.1 unless aliased).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grpc_channel::discovery::{ResolveError, Resolving};
use grpc_channel::{Balancing, Connection, Discovery, LbPolicy, Tls};
use tokio::sync::Semaphore;
use tonic_health::ServingStatus;

use crate::service::{Replica, SERVICE, Scripted, get};

/// Every wait on a condition in these tests gives up after this long.
const BOUND: Duration = Duration::from_secs(10);

impl Replica {
    /// The calls this replica served since the last time asked.
    fn take(&self) -> usize {
        self.service.take()
    }

    /// Sets the readiness health this replica reports.
    async fn set(&self, status: ServingStatus) {
        self.health
            .set_service_status(SERVICE.grpc_service, status)
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
    let first = Replica::start(Scripted::default(), "127.0.0.1", 0, None).await;
    let port = first.address.port();
    let (mut replicas, mut addresses) = (vec![], vec![first.address]);
    replicas.push(first);
    for i in 2..=n {
        let replica =
            Replica::start(Scripted::default(), &format!("127.0.0.{i}"), port, None).await;
        addresses.push(replica.address);
        replicas.push(replica);
    }
    (replicas, addresses, port)
}

fn balancing(refresh_secs: u64) -> Balancing {
    Balancing {
        dns_refresh_secs: refresh_secs,
        ..Balancing::default()
    }
}

async fn connect(port: u16, discovery: &Addresses, balancing: &Balancing) -> Connection {
    Connection::connect_discovered(
        SERVICE,
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
async fn wait_ready(client: &Connection, n: usize) {
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
async fn warm_up(client: &Connection, replicas: &[&Replica]) {
    let deadline = Instant::now() + BOUND;
    let mut seen = vec![false; replicas.len()];
    while !seen.iter().all(|s| *s) {
        assert!(Instant::now() < deadline, "replicas never called: {seen:?}");
        get(client, "warm-up").await.unwrap();
        for (seen, replica) in seen.iter_mut().zip(replicas) {
            *seen |= replica.take() > 0;
        }
    }
}

async fn calls(client: &Connection, n: usize) {
    for i in 0..n {
        get(client, &format!("call-{i}")).await.unwrap();
    }
}

/// Three replicas, a client balancing over them, every replica ready and called once.
async fn warm_fleet() -> (Vec<Replica>, u16, Connection) {
    let (replicas, addresses, port) = fleet(3).await;
    let discovery = Addresses::default();
    discovery.set(&addresses);
    let client = connect(port, &discovery, &balancing(30)).await;
    wait_ready(&client, 3).await;
    warm_up(&client, &replicas.iter().collect::<Vec<_>>()).await;
    (replicas, port, client)
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
    let (replicas, port, client) = warm_fleet().await;

    calls(&client, 300).await;
    let counts: Vec<usize> = replicas.iter().map(Replica::take).collect();
    assert_spread(&counts, 300);

    // The pitfall: one connection (`--lb none`, or any client behind a per-connection
    // balancer) sends every call to one replica.
    let single = Connection::connect_balanced(
        SERVICE,
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
    calls(&single, 300).await;
    let counts: Vec<usize> = replicas.iter().map(Replica::take).collect();
    assert_eq!(counts, [0, 300, 0]);
}

#[tokio::test]
async fn a_replica_not_serving_gets_no_calls_until_it_serves_again() {
    let (replicas, _, client) = warm_fleet().await;

    replicas[1].set(ServingStatus::NotServing).await;
    wait_ready(&client, 2).await;
    calls(&client, 200).await;
    let counts: Vec<usize> = replicas.iter().map(Replica::take).collect();
    assert_eq!(counts[1], 0, "a NOT_SERVING replica was called: {counts:?}");
    assert_eq!(counts[0] + counts[2], 200);

    replicas[1].set(ServingStatus::Serving).await;
    wait_ready(&client, 3).await;
    warm_up(&client, &replicas.iter().collect::<Vec<_>>()).await;
    calls(&client, 300).await;
    let counts: Vec<usize> = replicas.iter().map(Replica::take).collect();
    assert_spread(&counts, 300);
}

#[tokio::test]
async fn a_replica_added_to_discovery_gets_calls_within_two_resolve_intervals() {
    let (replicas, addresses, port) = fleet(3).await;
    let discovery = Addresses::default();
    discovery.set(&addresses);
    let refresh = Duration::from_secs(1);
    let client = connect(port, &discovery, &balancing(refresh.as_secs())).await;
    wait_ready(&client, 3).await;

    let fourth = Replica::start(Scripted::default(), "127.0.0.4", port, None).await;
    let added = Instant::now();
    discovery.set(&[addresses.as_slice(), &[fourth.address]].concat());
    while fourth.take() == 0 {
        assert!(
            added.elapsed() < 2 * refresh,
            "the fourth replica got no call within two resolve intervals"
        );
        get(&client, "scale-up").await.unwrap();
    }
    drop(replicas);
}

#[tokio::test]
async fn over_tls_every_replica_is_verified_against_the_host_name() {
    let pki = telemetry_testing::Pki::new().unwrap();
    let identity = || {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            pki.read("server.pem"),
            pki.read("server.key"),
        ))
    };
    let first = Replica::start(Scripted::default(), "127.0.0.1", 0, Some(identity())).await;
    let port = first.address.port();
    let second = Replica::start(Scripted::default(), "127.0.0.2", port, Some(identity())).await;
    let discovery = Addresses::default();
    discovery.set(&[first.address, second.address]);
    let tls = Tls {
        ca: Some(pki.path("ca.pem")),
        ..Tls::default()
    };
    // The certificate names localhost, not 127.0.0.2: each connection checks the host name.
    let client = Connection::connect_discovered(
        SERVICE,
        &format!("https://localhost:{port}"),
        Duration::from_secs(5),
        &tls,
        &Balancing::default(),
        Arc::new(discovery.clone()),
    )
    .await
    .unwrap();
    wait_ready(&client, 2).await;
    warm_up(&client, &[&first, &second]).await;

    // A name the certificate does not hold is refused on every replica.
    let error = refusal(
        &format!("https://fleet.test:{port}"),
        Duration::from_secs(2),
        &tls,
        discovery,
    )
    .await;
    assert!(
        error.contains("reported SERVING") && error.contains("certificate"),
        "{error}"
    );
}

/// Why connecting to `address` with the replicas `discovery` finds fails (it must).
async fn refusal(address: &str, timeout: Duration, tls: &Tls, discovery: impl Discovery) -> String {
    Connection::connect_discovered(
        SERVICE,
        address,
        timeout,
        tls,
        &Balancing::default(),
        Arc::new(discovery),
    )
    .await
    .unwrap_err()
    .to_string()
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
    let error = refusal(
        "http://nowhere.test:50051",
        Duration::from_secs(5),
        &Tls::default(),
        Failing,
    )
    .await;
    assert!(error.contains("no such name"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_name_with_no_address_is_an_error_after_the_connect_timeout() {
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = refusal(
        "http://empty.test:50051",
        timeout,
        &Tls::default(),
        Addresses::default(),
    )
    .await;
    assert!(error.contains("no address"), "{error}");
    assert!(started.elapsed() >= timeout && started.elapsed() < timeout * 3);
}

/// A port nothing listens on, on 127.0.0.1 and 127.0.0.2 alike (Linux routes all of 127/8 to
/// loopback; another system needs the second address configured).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn replicas_that_all_refuse_the_connection_are_an_error_at_once() {
    let port = closed_port();
    let discovery = Addresses::default();
    let first = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);
    let second = SocketAddr::new(IpAddr::from([127, 0, 0, 2]), port);
    discovery.set(&[first, second]);
    let started = Instant::now();
    let error = refusal(
        &format!("http://fleet.test:{port}"),
        Duration::from_secs(5),
        &Tls::default(),
        discovery,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refused connection is final, not waited on: {:?}",
        started.elapsed()
    );
    assert!(
        error.contains("connection refused") && error.contains(&first.to_string()),
        "{error}"
    );
    assert!(error.contains(&second.to_string()), "{error}");
}

#[tokio::test]
async fn a_refusing_replica_beside_a_silent_one_waits_for_the_connect_timeout() {
    // 127.0.0.2 accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let discovery = Addresses::default();
    discovery.set(&[
        SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port),
        silent.local_addr().unwrap(),
    ]);
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let error = refusal(
        &format!("http://fleet.test:{port}"),
        timeout,
        &Tls::default(),
        discovery,
    )
    .await;
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    assert!(error.contains("reported SERVING"), "{error}");
}

/// Two replicas, the first holding every call it gets until the test opens its gate.
async fn one_replica_holding_calls() -> (Replica, Replica, Arc<Semaphore>, Connection) {
    let gate = Arc::new(Semaphore::new(0));
    let holding = Scripted {
        gate: Some(Arc::clone(&gate)),
        ..Scripted::default()
    };
    let held = Replica::start(holding, "127.0.0.1", 0, None).await;
    let port = held.address.port();
    let idle = Replica::start(Scripted::default(), "127.0.0.2", port, None).await;
    let discovery = Addresses::default();
    discovery.set(&[held.address, idle.address]);
    let client = connect(port, &discovery, &balancing(30)).await;
    wait_ready(&client, 2).await;
    (held, idle, gate, client)
}

#[tokio::test]
async fn new_calls_go_to_the_replica_with_fewer_calls_in_flight() {
    let (held, idle, gate, client) = one_replica_holding_calls().await;

    // One call at a time: each is answered by the idle replica, or held by the other. Of two
    // replicas the balancer compares both, so once one call is held, every later call goes to
    // the idle replica; a balancer choosing at random would hold about half of them.
    let mut holding = Vec::new();
    for i in 0..40 {
        let client = client.clone();
        let mut call = tokio::spawn(async move { get(&client, &format!("p2c-{i}")).await });
        let answered = tokio::time::timeout(BOUND, async {
            tokio::select! {
                answered = &mut call => Some(answered.unwrap().unwrap()),
                () = held.service.arrived.notified() => None,
            }
        })
        .await
        .expect("the call was neither answered nor held");
        if answered.is_none() {
            holding.push(call);
        }
    }
    assert!(
        holding.len() <= 1,
        "{} of 40 calls went to the replica holding calls",
        holding.len()
    );
    assert_eq!(idle.take() + held.take(), 40);

    // Released, the held calls complete.
    gate.add_permits(holding.len());
    for call in holding {
        assert_eq!(call.await.unwrap().unwrap(), 7);
    }
}

#[tokio::test]
async fn each_attempt_span_names_the_replica_it_went_to() {
    // The first replica fails every call UNAVAILABLE (retried: `Get` is idempotent), the second
    // answers: each attempt span's peer must be the replica its status says it reached.
    let failing = Scripted {
        always: Some(tonic::Code::Unavailable),
        ..Scripted::default()
    };
    let bad = Replica::start(failing, "127.0.0.1", 0, None).await;
    let port = bad.address.port();
    let good = Replica::start(Scripted::default(), "127.0.0.2", port, None).await;
    let discovery = Addresses::default();
    discovery.set(&[bad.address, good.address]);
    let client = connect(port, &discovery, &balancing(30))
        .await
        .with_settings(grpc_channel::CallSettings {
            initial_backoff_ms: 1,
            max_backoff_ms: 5,
            ..grpc_channel::CallSettings::default()
        })
        .unwrap();
    wait_ready(&client, 2).await;

    let (mut to_bad, mut to_good) = (0, 0);
    for i in 0..50 {
        if to_bad > 0 && to_good > 0 {
            break;
        }
        let id = crate::helpers::unique_id(&format!("peer-{i}"));
        // Throttled retries may end a call on the failing replica: its spans still count.
        let _ = get(&client, &id).await;
        let (bad_calls, good_calls) = (bad.take(), good.take());
        let attempts = bad_calls + good_calls;
        // The call's INTERNAL span, and a CLIENT and a SERVER span per attempt.
        let spans = crate::helpers::world()
            .trace_of(&id, 1 + 2 * attempts)
            .await;
        let call = crate::helpers::span(&spans, "grpc.client.Get");
        assert_eq!(
            call.attributes.get("network.peer.address"),
            None,
            "{call:?}"
        );
        let mut seen = (0, 0);
        for attempt in spans.iter().filter(|s| s.name == "grpc.client.attempt.Get") {
            assert_eq!(attempt.attributes["server.address"], "fleet.test");
            let peer = SocketAddr::new(
                attempt.attributes["network.peer.address"].parse().unwrap(),
                attempt.attributes["network.peer.port"].parse().unwrap(),
            );
            let status = &attempt.attributes["rpc.status_code"];
            if peer == bad.address {
                assert_eq!(status, "UNAVAILABLE", "{attempt:?}");
                seen.0 += 1;
            } else {
                assert_eq!(peer, good.address, "{attempt:?}");
                assert_eq!(status, "OK", "{attempt:?}");
                seen.1 += 1;
            }
            // The replica's SERVER span is under the attempt that named it.
            assert!(
                spans
                    .iter()
                    .any(|s| s.kind == "SERVER" && s.parent_span_id == attempt.span_id),
                "no server span under {attempt:?}"
            );
        }
        assert_eq!(seen, (bad_calls, good_calls), "{spans:#?}");
        to_bad += bad_calls;
        to_good += good_calls;
    }
    assert!(to_bad > 0 && to_good > 0, "{to_bad} {to_good}");
}
