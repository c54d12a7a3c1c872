//! The server side: continue the caller's trace from the W3C headers, open a SERVER span named
//! `grpc.server.<Method>`, and record the RPC metrics, for every method of every service.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry::propagation::Extractor;
use opentelemetry_http::HeaderExtractor;
use prost::Message as _;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{
    Carried, Instruments, MethodLabels, ResponseFuture, RpcPath, Side, duration_histogram,
};

/// Services that are plumbing, not traffic: neither traced nor counted.
const UNTRACED_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Instruments every call a tonic server receives; add it with `Server::builder().layer(..)`.
#[derive(Clone, Debug)]
pub struct GrpcServerLayer {
    instruments: Arc<Instruments>,
    methods: Arc<Methods>,
}

/// The methods the server implements, each with its metric labels, and the labels of `_OTHER`.
#[derive(Debug)]
struct Methods {
    known: HashMap<Box<str>, Arc<MethodLabels>>,
    other: Arc<MethodLabels>,
}

impl Methods {
    fn new(names: HashSet<Box<str>>) -> Self {
        let known = names
            .into_iter()
            .filter_map(|name| {
                let path = RpcPath::parse(&format!("/{name}"))?;
                Some((name, Arc::new(MethodLabels::new(&path, Side::Server))))
            })
            .collect();
        let mut other =
            RpcPath::parse("/_OTHER/_OTHER").unwrap_or_else(|| unreachable!("a well-formed path"));
        other.known = false;
        Self {
            known,
            other: Arc::new(MethodLabels::new(&other, Side::Server)),
        }
    }

    /// The labels of `path`, marking it unknown when the server does not implement it.
    fn labels(&self, path: &mut RpcPath) -> Arc<MethodLabels> {
        match self.known.get(&*path.full) {
            Some(labels) => Arc::clone(labels),
            None => {
                path.known = false;
                Arc::clone(&self.other)
            }
        }
    }
}

impl GrpcServerLayer {
    /// `metric_prefix` names the service's own metrics (`<prefix>.requests.total`, ...);
    /// `descriptor_sets` (the encoded `FileDescriptorSet`s of the served protos) name the methods
    /// the server implements: any other path is `_OTHER`. Build it after `telemetry::init`, which
    /// installs the meter provider it records into.
    pub fn new(metric_prefix: &str, descriptor_sets: &[&[u8]]) -> Self {
        let meter = opentelemetry::global::meter("telemetry");
        let instruments = Instruments {
            side: Side::Server,
            rpc_duration: Some(duration_histogram(
                &meter,
                "rpc.server.call.duration".to_owned(),
                "Duration of incoming RPCs",
            )),
            calls: meter
                .u64_counter(format!("{metric_prefix}.requests.total"))
                .with_unit("{requests}")
                .with_description("Total number of requests processed")
                .build(),
            duration: Some(duration_histogram(
                &meter,
                format!("{metric_prefix}.request.duration"),
                "Request processing duration",
            )),
            attempt: false,
            active: Some(
                meter
                    .i64_up_down_counter(format!("{metric_prefix}.requests.active"))
                    .with_unit("{requests}")
                    .with_description("Number of requests currently being processed")
                    .build(),
            ),
            unfinished: std::sync::OnceLock::new(),
            server: None,
        };
        Self {
            instruments: Arc::new(instruments),
            methods: Arc::new(Methods::new(methods(descriptor_sets))),
        }
    }
}

/// `package.Service/Method` of every method in the descriptor sets.
fn methods(descriptor_sets: &[&[u8]]) -> HashSet<Box<str>> {
    let mut methods = HashSet::new();
    for bytes in descriptor_sets {
        let set = match prost_types::FileDescriptorSet::decode(*bytes) {
            Ok(set) => set,
            Err(error) => {
                tracing::warn!(
                    "a descriptor set does not decode ({error}): its methods are _OTHER"
                );
                continue;
            }
        };
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                let service_name = match package {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                for method in &service.method {
                    methods.insert(format!("{service_name}/{}", method.name()).into_boxed_str());
                }
            }
        }
    }
    methods
}

impl GrpcServerLayer {
    /// How this layer's calls (through every service it wraps) that end before their status is
    /// known are recorded, for the layer's owner to say once it ends calls itself.
    pub fn unfinished(&self) -> Unfinished {
        Unfinished(Arc::clone(&self.instruments))
    }
}

/// A handle on how the calls of one [`GrpcServerLayer`] that end before their status is known
/// (their response is dropped: the connection closed, the client reset the stream) are recorded.
/// Unless told otherwise such a call is recorded as CANCELLED, its peer's doing (or
/// DEADLINE_EXCEEDED once its deadline has passed); a server that ends calls itself says so here
/// first.
#[derive(Clone, Debug)]
pub struct Unfinished(Arc<Instruments>);

impl Unfinished {
    /// From now on, a call that ends before its status is known is recorded with `code` and
    /// `message`, on its span and in its metrics, as any call with that status (with `error.type`
    /// and an ERROR span status for the codes that mean the server failed). Only the first call
    /// counts: the status stays for the layer's life.
    pub fn record_as(&self, code: tonic::Code, message: &'static str) {
        let _ = self.0.unfinished.set((code, message));
    }
}

impl<S> Layer<S> for GrpcServerLayer {
    type Service = GrpcServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerService {
            inner,
            instruments: Arc::clone(&self.instruments),
            methods: Arc::clone(&self.methods),
        }
    }
}

/// The service [`GrpcServerLayer`] wraps around the server's routes.
#[derive(Clone, Debug)]
pub struct GrpcServerService<S> {
    inner: S,
    instruments: Arc<Instruments>,
    methods: Arc<Methods>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcServerService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    S::Error: std::fmt::Display,
    ReqBody: http_body::Body<Data = prost::bytes::Bytes> + Send + 'static,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<super::TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = RpcPath::parse(request.uri().path());
        let traced = path
            .as_ref()
            .is_some_and(|p| !UNTRACED_SERVICES.contains(&p.service()));
        let Some(mut path) = path.filter(|_| traced) else {
            return ResponseFuture::untraced(self.inner.call(request.map(tonic::body::Body::new)));
        };
        let labels = self.methods.labels(&mut path);

        // The peer is known now: given at creation, not recorded after (each `record` is a
        // dispatch through every layer, ~1.2k instructions).
        let peer = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr());
        let peer_address = peer.map(|peer| peer.ip().to_string());
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = format!("grpc.server.{}", path.method()),
            otel.kind = "server",
            rpc.system.name = "grpc",
            rpc.method = &*path.rpc_method(),
            rpc.status_code = Empty,
            error.type = Empty,
            network.peer.address = peer_address.as_deref(),
            network.peer.port = peer.map(|peer| i64::from(peer.port())),
        );
        if !path.known {
            // Caller input, bounded like every other caller-supplied value.
            span.set_attribute("rpc.method_original", crate::bounded(&path.full).to_owned());
        }
        // A retry says which attempt it is (gRFC A6); a malformed value is left out.
        if let Some(previous) = request
            .headers()
            .get("grpc-previous-rpc-attempts")
            .and_then(|value| value.to_str().ok()?.parse::<u32>().ok())
        {
            span.set_attribute("grpc.previous_rpc_attempts", i64::from(previous));
        }
        // A missing or malformed traceparent yields an empty context: the span starts a new trace.
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&StrictExtractor(HeaderExtractor(request.headers())))
        });
        let carried = if span.is_disabled() {
            Carried::new(parent)
        } else {
            if let Err(error) = span.set_parent(parent) {
                tracing::debug!(%error, "could not continue the caller's trace");
            }
            Carried::default()
        };

        ResponseFuture::traced(
            &mut self.inner,
            request,
            span,
            labels,
            Arc::clone(&self.instruments),
        )
        .carrying(carried)
    }
}

/// Hides a `traceparent` or `tracestate` that is not well-formed W3C trace context from the
/// propagator: the SDK's parser checks neither field lengths nor hex digits' count, so
/// `00-<30 hex digits>-...` would otherwise become the parent of the call (found by this
/// template's tests), and it passes any `tracestate` on to every span and downstream call.
struct StrictExtractor<'a>(HeaderExtractor<'a>);

impl Extractor for StrictExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key)?;
        let well_formed = match key {
            "traceparent" => well_formed_traceparent(value),
            "tracestate" => well_formed_tracestate(value),
            _ => true,
        };
        well_formed.then_some(value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys()
    }
}

/// `version-traceid-parentid-flags`: 2, 32, 16 and 2 lowercase hex digits; version `ff` is invalid
/// and version `00` has exactly four fields (later versions may append more).
fn well_formed_traceparent(value: &str) -> bool {
    let fields: Vec<&str> = value.trim().split('-').collect();
    let hex = |field: &str, len: usize| {
        field.len() == len
            && field
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    fields.len() >= 4
        && hex(fields[0], 2)
        && fields[0] != "ff"
        && (fields[0] != "00" || fields.len() == 4)
        && hex(fields[1], 32)
        && hex(fields[2], 16)
        && hex(fields[3], 2)
}

/// At most 32 `key=value` members, no duplicate keys; keys `[a-z0-9][a-z0-9_*/-]*` with an optional
/// `@system` part, values of printable ASCII without `,` and `=`, at most 256 characters each.
fn well_formed_tracestate(value: &str) -> bool {
    let members: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    let key_ok = |key: &str| {
        let plain = |part: &str, first_digit_ok: bool| {
            !part.is_empty()
                && part.len() <= 241
                && part.bytes().enumerate().all(|(i, b)| {
                    b.is_ascii_lowercase()
                        || (b.is_ascii_digit() && (i > 0 || first_digit_ok))
                        || (i > 0 && matches!(b, b'_' | b'-' | b'*' | b'/'))
                })
        };
        match key.split_once('@') {
            None => key.len() <= 256 && plain(key, true),
            Some((tenant, system)) => {
                plain(tenant, true) && system.len() <= 14 && plain(system, false)
            }
        }
    };
    let value_ok = |v: &str| {
        !v.is_empty()
            && v.len() <= 256
            && !v.ends_with(' ')
            && v.bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
    };
    let mut keys = HashSet::new();
    members.len() <= 32
        && members.iter().all(|member| {
            member
                .split_once('=')
                .is_some_and(|(k, v)| key_ok(k) && value_ok(v) && keys.insert(k))
        })
}

#[cfg(test)]
mod tests {
    use super::{well_formed_traceparent, well_formed_tracestate};

    /// With nothing exported and nothing written, a call makes no span, and the caller's trace
    /// and baggage reach the calls its handler makes as they came, as with the spec's no-op API.
    #[test]
    fn without_spans_the_callers_context_passes_on_downstream_unchanged() {
        use std::convert::Infallible;
        use std::sync::{Arc, Mutex};

        use opentelemetry::propagation::TextMapCompositePropagator;
        use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
        use tower::{Layer as _, ServiceExt as _};

        opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
        let subscriber = crate::subscriber::build(
            "test".to_owned(),
            "off".parse().expect("a filter"),
            std::io::sink,
            false,
            None,
            None,
            crate::subscriber::LineFormat::default(),
        );
        let ok = || {
            http::Response::builder()
                .header("grpc-status", "0")
                .body(tonic::body::Body::empty())
                .expect("a response")
        };
        let seen = Arc::new(Mutex::new(http::HeaderMap::new()));
        let downstream = tower::service_fn({
            let seen = Arc::clone(&seen);
            move |request: http::Request<tonic::body::Body>| {
                *seen.lock().expect("not poisoned") = request.headers().clone();
                async move { Ok::<_, Infallible>(ok()) }
            }
        });
        let client =
            crate::grpc::GrpcClientLayer::new("test", "downstream", 50052).layer(downstream);
        let handler = tower::service_fn(move |_request: http::Request<tonic::body::Body>| {
            let client = client.clone();
            async move {
                let call = http::Request::post("/down.v1.Down/Call")
                    .body(tonic::body::Body::empty())
                    .expect("a request");
                let _ = client.oneshot(call).await;
                Ok::<_, Infallible>(ok())
            }
        });
        let server = super::GrpcServerLayer::new("test", &[]).layer(handler);
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        tracing::subscriber::with_default(subscriber, || {
            runtime.block_on(async {
                let request = http::Request::post("/up.v1.Up/Call")
                    .header("traceparent", traceparent)
                    .header("baggage", "tenant=acme")
                    .body(tonic::body::Body::empty())
                    .expect("a request");
                let _ = server.oneshot(request).await;
            });
        });
        let headers = seen.lock().expect("not poisoned").clone();
        assert_eq!(
            headers.get("traceparent").map(|v| v.as_bytes()),
            Some(traceparent.as_bytes())
        );
        assert_eq!(
            headers.get("baggage").map(|v| v.as_bytes()),
            Some(&b"tenant=acme"[..])
        );
    }

    #[test]
    fn only_well_formed_tracestates_pass() {
        assert!(well_formed_tracestate(
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        ));
        assert!(well_formed_tracestate("tenant@vendor=opaque-value"));
        let too_many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let long_key = format!("{}=v", "k".repeat(257));
        for bad in [
            "=",
            "a=",
            "=v",
            "a=b=c",
            "A=b",
            "a=b,a=c",
            "a=b\tc",
            too_many.as_str(),
            long_key.as_str(),
        ] {
            assert!(!well_formed_tracestate(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_well_formed_traceparents_pass() {
        assert!(well_formed_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(well_formed_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(!well_formed_traceparent(bad), "{bad:?}");
        }
    }
}
