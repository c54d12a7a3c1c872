//! What the tests share: the test binary's telemetry, a test service hand-written over tonic's
//! generic `Grpc` (messages are `u64`, i.e. `UInt64Value`: no test proto to compile), served by
//! [`grpc_serving::Server`] as every service is (the same layers, health, reflection and drain),
//! and a client through the workspace's client layer.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use telemetry::grpc::{GrpcClientLayer, GrpcClientService};
use telemetry_testing::{ARRIVAL, ReceivedSpan, World, wait_until};
use tokio::sync::oneshot;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_prost::ProstCodec;
use tracing::Instrument as _;

/// The test service's gRPC name: its readiness health, and the first part of `rpc.method`.
pub(crate) const SERVICE: &str = "serving.v1.Test";

/// The test service's methods. Each test calls methods of its own, so the spans and metrics it
/// finds by method are its own, whatever runs beside it. All are unary: the request is a number
/// of milliseconds the handler sleeps in a `handle` span, and the answer is that number; `Bytes`
/// takes bytes instead (`BytesValue`) and answers their count. A method not listed here is
/// unknown: the service answers UNIMPLEMENTED, as a generated server does.
const METHODS: [&str; 13] = [
    "Shed",
    "HoldsThePlace",
    "DuringDelay",
    "LateDuringDelay",
    "Drained",
    "Stuck",
    "AcrossAge",
    "AfterAge",
    "AfterHealth",
    "Bytes",
    "AfterOversize",
    "OverTls",
    "Traceparent",
];

/// The test binary's telemetry, exported to an in-process receiver and captured as JSON lines.
pub(crate) fn world() -> &'static World {
    telemetry_testing::world("grpc-serving-tests")
}

/// `rpc.method` of one of the test service's methods.
pub(crate) fn full(method: &str) -> String {
    format!("{SERVICE}/{method}")
}

/// An encoded `FileDescriptorSet` naming `service` (`package.Name`) and its `methods`, encoded by
/// hand: only the fields the layers and reflection read (file, package, service and method
/// names).
pub(crate) fn descriptor_set(service: &str, methods: &[&str]) -> Vec<u8> {
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2];
        let mut len = bytes.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(bytes);
        out
    }
    let (package, name) = service.rsplit_once('.').unwrap();
    let mut service_proto = field(1, name.as_bytes());
    for method in methods {
        service_proto.extend(field(2, &field(1, method.as_bytes())));
    }
    let mut file = field(1, format!("{name}.proto").as_bytes());
    file.extend(field(2, package.as_bytes()));
    file.extend(field(6, &service_proto));
    field(1, &file)
}

static DESCRIPTOR_SET: LazyLock<Vec<u8>> = LazyLock::new(|| descriptor_set(SERVICE, &METHODS));

/// How many calls of each method reached its handler.
static HANDLED: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

/// How many calls of `method` reached its handler so far.
pub(crate) fn handled(method: &str) -> usize {
    HANDLED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(method)
        .copied()
        .unwrap_or_default()
}

/// Waits (bounded) until a call of `method` has reached its handler.
pub(crate) async fn reached_its_handler(method: &str) {
    let what = format!("no call of {method} was handled");
    wait_until(ARRIVAL, &what, || handled(method) > 0).await;
}

/// A test service: its gRPC name, and its answer to a call of each method.
pub(crate) trait Methods: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The service's gRPC name (`package.Service`).
    const NAME: &'static str;

    /// The answer to `request`, a call of `method` (the last part of its path), from a copy of
    /// the service.
    fn answer(
        self,
        method: String,
        request: http::Request<tonic::body::Body>,
    ) -> impl Future<Output = http::Response<tonic::body::Body>> + Send + 'static;
}

/// A [`Methods`] as the tower service a generated server is, to be served.
#[derive(Clone, Debug)]
pub(crate) struct Served<M>(M);

impl<M: Methods> tonic::server::NamedService for Served<M> {
    const NAME: &'static str = M::NAME;
}

impl<M: Methods> tower::Service<http::Request<tonic::body::Body>> for Served<M> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let answer = self.0.clone().answer(method, request);
        Box::pin(async move { Ok(answer.await) })
    }
}

/// The test service (see [`METHODS`]); its generic `Grpc` gets the message limit a generated
/// server gets from `Config::max_message_bytes`.
#[derive(Clone, Debug)]
struct TestService {
    max_message_bytes: usize,
}

impl Methods for TestService {
    const NAME: &'static str = SERVICE;

    async fn answer(
        self,
        method: String,
        request: http::Request<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        let limit = self.max_message_bytes;
        if !METHODS.contains(&method.as_str()) {
            return Status::unimplemented(format!("no method {method}")).into_http();
        }
        if method == "Bytes" {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<u64, Vec<u8>>::default())
                .max_decoding_message_size(limit);
            let handler = tower::service_fn(|r: Request<Vec<u8>>| async move {
                let count = u64::try_from(r.into_inner().len()).unwrap();
                Ok::<_, Status>(Response::new(count))
            });
            return grpc.unary(handler, request).await;
        }
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<u64, u64>::default())
            .max_decoding_message_size(limit);
        let handler = tower::service_fn(move |r: Request<u64>| {
            *HANDLED
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(method.clone())
                .or_default() += 1;
            let millis = r.into_inner();
            async move {
                tokio::time::sleep(Duration::from_millis(millis))
                    .instrument(tracing::info_span!("handle", request = millis))
                    .await;
                Ok::<_, Status>(Response::new(millis))
            }
        });
        grpc.unary(handler, request).await
    }
}

/// A client of the test service through the workspace's client layer.
pub(crate) type Client = tonic::client::Grpc<GrpcClientService<Channel>>;

/// A test service served by [`grpc_serving::Server`] on a loopback port, in the test's runtime.
pub(crate) struct TestServer {
    pub(crate) address: SocketAddr,
    prefix: &'static str,
    stop: Option<oneshot::Sender<()>>,
    /// The server's task: it returns once the server has drained and stopped.
    pub(crate) task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Serves with [`grpc_serving::Config::for_tests`] changed by `configure`. Its own metrics
    /// are named `<prefix>.…`: a test that reads a counter of the server's own (such as
    /// `<prefix>.requests.shed`) passes a prefix no other test uses.
    pub(crate) async fn start(
        prefix: &'static str,
        configure: impl FnOnce(&mut grpc_serving::Config),
    ) -> Self {
        let api = |config: &grpc_serving::Config| TestService {
            max_message_bytes: config.max_message_bytes,
        };
        Self::serving(prefix, configure, api, DESCRIPTOR_SET.as_slice()).await
    }

    /// Like [`TestServer::start`], serving the service `api` makes from the configuration, whose
    /// methods `descriptor_set` names.
    pub(crate) async fn serving<M: Methods>(
        prefix: &'static str,
        configure: impl FnOnce(&mut grpc_serving::Config),
        api: impl FnOnce(&grpc_serving::Config) -> M,
        descriptor_set: &'static [u8],
    ) -> Self {
        world();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let address = listener.local_addr().unwrap();
        let mut config = grpc_serving::Config::for_tests();
        configure(&mut config);
        let api = Served(api(&config));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            grpc_serving::Server::new(config, prefix)
                .descriptor_set(descriptor_set)
                .serve(listener, api, async {
                    let _ = stopped.await;
                }),
        );
        Self {
            address,
            prefix,
            stop: Some(stop),
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Asks the server to shut down, as SIGTERM would.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// A plaintext connection to the server, without the client layer.
    pub(crate) async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A client over a new plaintext connection, ready for its first call.
    pub(crate) async fn client(&self) -> Client {
        let mut client = self.client_over(self.channel().await);
        client.ready().await.unwrap();
        client
    }

    /// A client over `channel` (a connection to this server), through the client layer.
    pub(crate) fn client_over(&self, channel: Channel) -> Client {
        let layer = GrpcClientLayer::new(self.prefix, "127.0.0.1", self.address.port());
        tonic::client::Grpc::new(tower::ServiceBuilder::new().layer(layer).service(channel))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Calls `method`, whose handler sleeps `millis` ms, and returns its answer.
pub(crate) async fn call(client: &mut Client, method: &str, millis: u64) -> Result<u64, Status> {
    call_with(client, method, Request::new(millis)).await
}

/// Calls `method` with `request` (its message: the milliseconds its handler sleeps).
pub(crate) async fn call_with<T>(
    client: &mut tonic::client::Grpc<T>,
    method: &str,
    request: Request<u64>,
) -> Result<u64, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError>,
    T::Error: Into<tonic::codegen::StdError>,
{
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {}", e.into())))?;
    client
        .unary(request, path(method), ProstCodec::<u64, u64>::default())
        .await
        .map(Response::into_inner)
}

/// The path of `method` of the test service.
pub(crate) fn path(method: &str) -> PathAndQuery {
    PathAndQuery::try_from(format!("/{SERVICE}/{method}")).unwrap()
}

/// Waits for the server spans of `method`, at least `count` of them.
pub(crate) async fn server_spans(method: &str, count: usize) -> Vec<ReceivedSpan> {
    let full = full(method);
    world().flush().await;
    world()
        .receiver
        .wait_for(ARRIVAL, |r| {
            let spans: Vec<_> = r
                .spans()
                .into_iter()
                .filter(|s| s.kind == "SERVER" && s.attributes.get("rpc.method") == Some(&full))
                .collect();
            (spans.len() >= count).then_some(spans)
        })
        .await
        .unwrap_or_else(|| panic!("fewer than {count} server spans of {method}"))
}

/// Asserts that the health service answers SERVING for liveness ("") and for the test service's
/// readiness on `channel`.
pub(crate) async fn assert_serving(channel: Channel) {
    let mut health = HealthClient::new(channel);
    for service in ["", SERVICE] {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("health of {service:?}: {status:?}"));
        assert_eq!(
            response.into_inner().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
}
