//! Client-side balancing over the replicas of one name: a [`Discovery`] turns the server's host
//! into addresses (DNS by default: a Kubernetes headless Service answers one per ready pod), each
//! address gets a health watcher (`grpc.health.v1.Health/Watch` on the service's readiness name,
//! over its own connection with HTTP/2 keep-alive), and the replicas that report SERVING are the
//! endpoints of the balancer ([`crate::balance`]), which sends each call to the less loaded of two
//! (power of two choices over the calls in flight). A replica that reports NOT_SERVING (it is
//! draining), whose watch breaks (it died) or stops answering keep-alive pings (it hangs) leaves
//! the balancer at once, and discovery is asked again; it comes back when its watch reports SERVING again. Discovery also runs every
//! `--dns-refresh-secs`, so replicas added to the name get calls. The health name watched is the
//! service's gRPC name ([`ServiceInfo::grpc_service`]).
//!
//! When no replica is healthy, the last ones chosen stay in the balancer: calls then fail fast
//! with UNAVAILABLE as on a single connection (or are served, by a replica that is draining),
//! rather than waiting for a replica that may never come.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Gauge;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::discover::Change;

use crate::ServiceInfo;
use crate::balance::{Balanced, Transport};

/// How the client spreads its calls over the server's replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LbPolicy {
    /// Resolve the server's host into all its addresses and balance the calls over the healthy
    /// ones (for a Kubernetes headless Service, or any name with one address per replica).
    Dns,
    /// One connection to the address as given: for a service mesh or proxy that balances each
    /// call (L7). Behind a per-connection balancer (a ClusterIP Service) every call of this client
    /// goes to one replica.
    None,
}

/// Seconds between two resolutions of the server's host unless changed.
pub const DEFAULT_DNS_REFRESH_SECS: u64 = 30;
/// Seconds without a frame before a keep-alive ping unless changed.
pub const DEFAULT_KEEPALIVE_SECS: u64 = 10;
/// Seconds a keep-alive ping may go unanswered unless changed.
pub const DEFAULT_KEEPALIVE_TIMEOUT_SECS: u64 = 5;

/// The client's balancing settings, one place for the CLI (`#[command(flatten)]`) and for code.
/// The defaults are the `DEFAULT_*` constants above, for both.
#[derive(Clone, Debug, clap::Args)]
pub struct Balancing {
    /// How calls are spread: `dns` (resolve the host into every replica, balance over the healthy
    /// ones) or `none` (one connection, for a mesh that balances per call).
    #[arg(long = "lb", env = "LB_POLICY", value_enum, default_value_t = LbPolicy::Dns)]
    pub policy: LbPolicy,

    /// `dns`: seconds between two resolutions of the host; a replica added to the name gets calls
    /// within this time. A connection error resolves again at once.
    #[arg(long, env = "DNS_REFRESH_SECS", default_value_t = DEFAULT_DNS_REFRESH_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub dns_refresh_secs: u64,

    /// `dns`: the nameserver to ask (`ip` or `ip:port`) instead of the system's configuration
    /// (/etc/resolv.conf and /etc/hosts).
    #[arg(long, env = "DNS_SERVER", value_parser = parse_dns_server)]
    pub dns_server: Option<SocketAddr>,

    /// Seconds without a frame from a replica after which its connections send an HTTP/2 ping
    /// (idle ones too).
    #[arg(long, env = "KEEPALIVE_SECS", default_value_t = DEFAULT_KEEPALIVE_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive_secs: u64,

    /// Seconds a ping may go unanswered before the connection is closed: a replica that hangs
    /// leaves the balancer within `KEEPALIVE_SECS + KEEPALIVE_TIMEOUT_SECS`.
    #[arg(long, env = "KEEPALIVE_TIMEOUT_SECS", default_value_t = DEFAULT_KEEPALIVE_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive_timeout_secs: u64,
}

impl Default for Balancing {
    fn default() -> Self {
        Self {
            policy: LbPolicy::Dns,
            dns_refresh_secs: DEFAULT_DNS_REFRESH_SECS,
            dns_server: None,
            keepalive_secs: DEFAULT_KEEPALIVE_SECS,
            keepalive_timeout_secs: DEFAULT_KEEPALIVE_TIMEOUT_SECS,
        }
    }
}

impl Balancing {
    fn refresh(&self) -> Duration {
        Duration::from_secs(self.dns_refresh_secs.max(1))
    }

    fn keepalive(&self) -> (Duration, Duration) {
        (
            Duration::from_secs(self.keepalive_secs.max(1)),
            Duration::from_secs(self.keepalive_timeout_secs.max(1)),
        )
    }
}

/// `10.0.0.10` (port 53) or `127.0.0.1:5353`.
fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{text:?} is not an IP address or ip:port"))
}

/// Why a resolution failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResolveError(pub String);

/// What [`Discovery::resolve`] returns.
pub type Resolving<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<SocketAddr>, ResolveError>> + Send + 'a>>;

/// Where the replicas are: every address to balance over, asked again on an interval and after
/// a connection error. An empty list is a name with no replica now (not an error); an error
/// keeps the replicas known so far.
pub trait Discovery: Send + Sync + 'static {
    /// The replicas' addresses now.
    fn resolve(&self) -> Resolving<'_>;
}

/// DNS discovery: every A (else AAAA) record of the host, with the URL's port, asked afresh each
/// time (no cache: the interval decides how fresh the list is).
#[derive(Debug)]
pub struct Dns {
    host: String,
    port: u16,
    resolver: Option<hickory_resolver::TokioResolver>,
}

impl Dns {
    /// Resolves `host` through `server`, or the system's configuration when `None`. An IP
    /// address is its own answer.
    pub fn new(host: &str, port: u16, server: Option<SocketAddr>) -> Result<Self, ResolveError> {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.parse::<IpAddr>().is_ok() {
            return Ok(Self {
                host,
                port,
                resolver: None,
            });
        }
        let provider = hickory_resolver::net::runtime::TokioRuntimeProvider::default();
        let mut builder = match server {
            Some(server) => {
                let connection = |mut config: ConnectionConfig| {
                    config.port = server.port();
                    config
                };
                let nameserver = NameServerConfig::new(
                    server.ip(),
                    true,
                    vec![
                        connection(ConnectionConfig::udp()),
                        connection(ConnectionConfig::tcp()),
                    ],
                );
                hickory_resolver::TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![nameserver]),
                    provider,
                )
            }
            None => hickory_resolver::TokioResolver::builder(provider).map_err(|e| {
                ResolveError(format!("cannot read the system's DNS configuration: {e}"))
            })?,
        };
        builder.options_mut().cache_size = 0;
        let resolver = builder
            .build()
            .map_err(|e| ResolveError(format!("cannot make a DNS resolver: {e}")))?;
        Ok(Self {
            host,
            port,
            resolver: Some(resolver),
        })
    }
}

impl Discovery for Dns {
    fn resolve(&self) -> Resolving<'_> {
        Box::pin(async move {
            let Some(resolver) = &self.resolver else {
                let ip: IpAddr = self
                    .host
                    .parse()
                    .map_err(|_| ResolveError(format!("{:?} is not an IP address", self.host)))?;
                return Ok(vec![SocketAddr::new(ip, self.port)]);
            };
            match resolver.lookup_ip(self.host.as_str()).await {
                Ok(lookup) => Ok(lookup
                    .iter()
                    .map(|ip| SocketAddr::new(ip, self.port))
                    .collect()),
                // The name exists but has no address now (no ready pod): an empty fleet.
                Err(e) if e.is_no_records_found() && !e.is_nx_domain() => Ok(Vec::new()),
                Err(e) => Err(ResolveError(format!("cannot resolve {}: {e}", self.host))),
            }
        })
    }
}

/// The first health check waits this long at least; connecting to a replica that hangs gives up
/// after the connect timeout.
const RETRY_MIN: Duration = Duration::from_millis(250);
/// A replica that keeps failing is tried again this often.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Changes the balancer has not taken yet (it takes them when a call asks for an endpoint): room
/// for a long idle time of replicas coming and going.
const CHANGES: usize = 1024;
/// Resolutions prompted by connection errors are at least this far apart.
const RESOLVE_GAP: Duration = Duration::from_millis(500);

/// How to reach one replica: the URL's scheme and host (`:authority`, TLS server name) on each
/// resolved address.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) uri: http::Uri,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: Option<ClientTlsConfig>,
    pub(crate) connect_timeout: Duration,
}

impl Target {
    fn endpoint(
        &self,
        address: SocketAddr,
        balancing: &Balancing,
    ) -> Result<Endpoint, tonic::transport::Error> {
        let scheme = self.uri.scheme_str().unwrap_or("http");
        let (interval, timeout) = balancing.keepalive();
        let endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))?
            .origin(self.uri.clone())
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(true);
        match &self.tls {
            // The certificate is checked against the host name, not the address connected to.
            Some(tls) => endpoint.tls_config(tls.clone().domain_name(self.host.clone())),
            None => Ok(endpoint),
        }
    }
}

/// The balancer's state, shared by the resolver and the watchers.
struct Fleet {
    changes: mpsc::Sender<Change<SocketAddr, Endpoint>>,
    /// Replicas whose watch reports SERVING.
    healthy: Mutex<HashMap<SocketAddr, Endpoint>>,
    /// Replicas in the balancer; changed only under this lock, so changes are sent in order.
    chosen: tokio::sync::Mutex<HashSet<SocketAddr>>,
    ready: watch::Sender<usize>,
    refresh: Notify,
    last_error: Mutex<Option<String>>,
    /// Replicas whose last connection attempt was refused (nothing listens there).
    refused: Mutex<HashSet<SocketAddr>>,
    /// Bumped on every failed attempt, for [`connect`] to look at `refused` again.
    failures: watch::Sender<u64>,
    gauge: Gauge<u64>,
    attributes: [KeyValue; 2],
}

impl Fleet {
    fn lock_healthy(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Endpoint>> {
        self.healthy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_refused(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, address: SocketAddr, failure: &Failure) {
        let message = format!("{address}: {}", failure.why);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message);
        if failure.refused {
            self.lock_refused().insert(address);
        } else {
            self.lock_refused().remove(&address);
        }
        self.failures.send_modify(|n| *n += 1);
        self.refresh.notify_one();
    }

    /// Whether every one of `addresses` refused its last connection.
    fn all_refused(&self, addresses: &[SocketAddr]) -> bool {
        let refused = self.lock_refused();
        !addresses.is_empty() && addresses.iter().all(|a| refused.contains(a))
    }

    /// Marks `address` healthy (with its endpoint) or not, and brings the balancer in line: the
    /// healthy replicas, or the last chosen ones while none is.
    async fn set(&self, address: SocketAddr, endpoint: Option<Endpoint>) {
        let mut chosen = self.chosen.lock().await;
        let healthy = {
            let mut healthy = self.lock_healthy();
            match endpoint {
                Some(endpoint) => healthy.insert(address, endpoint),
                None => healthy.remove(&address),
            };
            healthy.clone()
        };
        let count = healthy.len();
        self.gauge.record(count as u64, &self.attributes);
        if !healthy.is_empty() {
            for gone in chosen.iter().filter(|a| !healthy.contains_key(a)) {
                let _ = self.changes.send(Change::Remove(*gone)).await;
            }
            for (address, endpoint) in &healthy {
                if !chosen.contains(address) {
                    let _ = self
                        .changes
                        .send(Change::Insert(*address, endpoint.clone()))
                        .await;
                }
            }
            *chosen = healthy.into_keys().collect();
        }
        self.ready.send_replace(count);
    }
}

/// Starts discovery and the watchers, and returns the balancer once a replica reports
/// SERVING, or an error: at once when every address the name resolved to refused the connection
/// (nothing listens there: waiting would not help), else after `target.connect_timeout` (the last
/// reason given).
pub(crate) async fn connect(
    service: ServiceInfo,
    target: Target,
    balancing: &Balancing,
    discovery: Arc<dyn Discovery>,
) -> Result<(Transport, watch::Receiver<usize>), String> {
    let first = discovery.resolve().await.map_err(|e| e.to_string())?;
    let (balanced, changes) = Balanced::new(CHANGES);
    let (ready, mut is_ready) = watch::channel(0);
    let gauge = opentelemetry::global::meter("telemetry")
        .u64_gauge(format!("{}.endpoints.ready", service.metric_prefix))
        .with_unit("{endpoints}")
        .with_description(
            "Replicas of the server this client balances over whose health watch reports SERVING",
        )
        .build();
    let fleet = Arc::new(Fleet {
        changes,
        healthy: Mutex::default(),
        chosen: tokio::sync::Mutex::default(),
        ready,
        refresh: Notify::new(),
        last_error: Mutex::default(),
        refused: Mutex::default(),
        failures: watch::channel(0).0,
        gauge,
        attributes: [
            KeyValue::new("server.address", target.host.clone()),
            KeyValue::new("server.port", i64::from(target.port)),
        ],
    });
    let timeout = target.connect_timeout;
    tokio::spawn(resolve(
        service,
        Arc::clone(&fleet),
        discovery,
        target,
        balancing.clone(),
        first.clone(),
    ));
    let mut failures = fleet.failures.subscribe();
    let waited = tokio::time::timeout(timeout, async {
        loop {
            tokio::select! {
                ready = is_ready.wait_for(|n| *n > 0) => return ready.is_ok(),
                changed = failures.changed() => {
                    if changed.is_err() || fleet.all_refused(&first) {
                        return false;
                    }
                }
            }
        }
    })
    .await;
    if waited == Ok(true) {
        return Ok((Transport::balanced(balanced), is_ready));
    }
    if fleet.all_refused(&first) {
        let addresses: Vec<String> = first.iter().map(ToString::to_string).collect();
        return Err(format!(
            "connection refused at {}: nothing listens there. Is the server running, and is this \
             its address and port?",
            addresses.join(", ")
        ));
    }
    let last = fleet
        .last_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Err(match (first.is_empty(), last) {
        (true, _) => format!("the name has no address (waited {timeout:?})"),
        (false, Some(last)) => format!(
            "no replica of {first:?} reported SERVING within {timeout:?}; last error: {last}"
        ),
        (false, None) => format!("no replica of {first:?} reported SERVING within {timeout:?}"),
    })
}

/// Resolves on the interval and when a watcher asks, starting a watcher per new address and
/// stopping those of addresses gone; ends when the channel is dropped.
async fn resolve(
    service: ServiceInfo,
    fleet: Arc<Fleet>,
    discovery: Arc<dyn Discovery>,
    target: Target,
    balancing: Balancing,
    first: Vec<SocketAddr>,
) {
    let mut watchers: HashMap<SocketAddr, oneshot::Sender<()>> = HashMap::new();
    let mut resolved = Ok(first);
    loop {
        match resolved {
            Ok(addresses) => {
                let addresses: HashSet<SocketAddr> = addresses.into_iter().collect();
                // Dropping a watcher's sender stops it; it takes its replica out itself.
                watchers.retain(|address, _| addresses.contains(address));
                for address in addresses {
                    if watchers.contains_key(&address) {
                        continue;
                    }
                    match target.endpoint(address, &balancing) {
                        Ok(endpoint) => {
                            let (stop, stopped) = oneshot::channel();
                            watchers.insert(address, stop);
                            tokio::spawn(watch_replica(
                                service,
                                Arc::clone(&fleet),
                                address,
                                endpoint,
                                target.connect_timeout,
                                stopped,
                            ));
                        }
                        Err(e) => fleet.fail(address, &Failure::new(crate::error_chain(&e))),
                    }
                }
            }
            Err(e) => {
                tracing::warn!("discovery failed, keeping the replicas known: {e}");
            }
        }
        tokio::select! {
            () = fleet.changes.closed() => return,
            () = tokio::time::sleep(balancing.refresh()) => {}
            () = fleet.refresh.notified() => tokio::time::sleep(RESOLVE_GAP).await,
        }
        resolved = discovery.resolve().await;
    }
}

/// Watches one replica's readiness health until `stopped`: SERVING puts it in the balancer; any
/// other status, the watch ending or breaking (keep-alive included) takes it out, and it is
/// watched again after a backoff.
async fn watch_replica(
    service: ServiceInfo,
    fleet: Arc<Fleet>,
    address: SocketAddr,
    endpoint: Endpoint,
    timeout: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut healthy = false;
    let mut backoff = RETRY_MIN;
    'watch: loop {
        let opened = tokio::select! {
            _ = &mut stopped => break 'watch,
            opened = open_watch(service, &endpoint, timeout) => opened,
        };
        if opened.is_ok() {
            // It answered: whatever it reports (NOT_SERVING included), it no longer refuses.
            fleet.lock_refused().remove(&address);
        }
        let failure = match opened {
            Ok(Some(mut stream)) => loop {
                let message = tokio::select! {
                    _ = &mut stopped => break 'watch,
                    message = stream.message() => message,
                };
                match message {
                    Ok(Some(response)) if response.status() == ServingStatus::Serving => {
                        if !healthy {
                            fleet.set(address, Some(endpoint.clone())).await;
                            healthy = true;
                            backoff = RETRY_MIN;
                        }
                    }
                    Ok(Some(response)) => {
                        if healthy {
                            fleet.set(address, None).await;
                            healthy = false;
                        }
                        let status = response.status().as_str_name();
                        *fleet
                            .last_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) =
                            Some(format!("{address}: health {status}"));
                    }
                    Ok(None) => break Failure::new("the health watch ended"),
                    Err(status) => {
                        break Failure::new(format!(
                            "the health watch broke: {}: {}",
                            telemetry::grpc::code_name(status.code()),
                            status.message()
                        ));
                    }
                }
            },
            // A server without the health service: taken as healthy, as gRPC does.
            Ok(None) => {
                tracing::debug!("{address} has no health service: taken as SERVING");
                fleet.set(address, Some(endpoint.clone())).await;
                let _ = (&mut stopped).await;
                healthy = true;
                break 'watch;
            }
            Err(failure) => failure,
        };
        if healthy {
            tracing::warn!("replica {address} left the balancer: {}", failure.why);
            fleet.set(address, None).await;
            healthy = false;
        } else {
            tracing::debug!("replica {address}: {}", failure.why);
        }
        fleet.fail(address, &failure);
        tokio::select! {
            _ = &mut stopped => break 'watch,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RETRY_MAX);
    }
    if healthy {
        fleet.set(address, None).await;
    }
}

/// Why a replica's watch failed, and whether its connection was refused.
#[derive(Debug)]
struct Failure {
    why: String,
    refused: bool,
}

impl Failure {
    fn new(why: impl Into<String>) -> Self {
        Self {
            why: why.into(),
            refused: false,
        }
    }
}

/// Whether `error` (or one of its sources) is a refused TCP connection.
fn is_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// Connects to a replica and starts its health watch; `None` when it serves no health service.
async fn open_watch(
    service: ServiceInfo,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Option<tonic::Streaming<HealthCheckResponse>>, Failure> {
    let opening = async {
        let channel = endpoint.connect().await.map_err(|e| Failure {
            why: crate::error_chain(&e),
            refused: is_refused(&e),
        })?;
        match HealthClient::new(channel)
            .watch(HealthCheckRequest {
                service: service.grpc_service.to_owned(),
            })
            .await
        {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Err(status) => Err(Failure::new(format!(
                "health watch refused: {}: {}",
                telemetry::grpc::code_name(status.code()),
                status.message()
            ))),
        }
    };
    tokio::time::timeout(timeout, opening)
        .await
        .map_err(|_| Failure::new(format!("no health answer within {timeout:?}")))?
}
