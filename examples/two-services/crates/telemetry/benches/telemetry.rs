//! What telemetry costs per call, in ns, so a regression shows in review: `cargo bench -p telemetry`.
//!
//! Every benchmark runs with what a service installs (`telemetry_testing::init_discarding`): the
//! real subscriber, the three batch pipelines with exporters that discard, and the bunyan lines
//! written to a sink. Batches leave on the pipelines' own threads, so on a machine with one core
//! their cost shows here too; ci/bench.sh measures whole calls over the network.
#![allow(missing_docs, clippy::unwrap_used)] // A benchmark binary, not an API.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use prost::Message as _;
use tower::{Layer as _, Service};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Telemetry is global: installed once for every benchmark of this binary.
fn telemetry() {
    static GUARD: OnceLock<telemetry::TelemetryGuard> = OnceLock::new();
    GUARD.get_or_init(|| {
        telemetry_testing::init_discarding("bench", BoxMakeWriter::new(std::io::sink)).unwrap()
    });
}

/// The encoded `FileDescriptorSet` of `bench.v1.Bench/Call`, so the call is a known method.
fn descriptor_set() -> Vec<u8> {
    use prost_types::{
        FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
    };
    FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("bench.proto".into()),
            package: Some("bench.v1".into()),
            service: vec![ServiceDescriptorProto {
                name: Some("Bench".into()),
                method: vec![MethodDescriptorProto {
                    name: Some("Call".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// One unary call through `GrpcServerLayer`: its SERVER span, metrics and status, a handler that
/// logs one line, and an OK answer in the headers (gRPC's trailers-only form).
fn unary_call(c: &mut Criterion) {
    telemetry();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let descriptors = descriptor_set();
    let layer = telemetry::grpc::GrpcServerLayer::new("bench", &[&descriptors]);
    let handler = tower::service_fn(|_request: http::Request<tonic::body::Body>| async {
        tracing::info!("Processing request: bench-0001");
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "0")
            .body(())
            .unwrap();
        Ok::<_, Infallible>(response)
    });
    let mut service = layer.layer(handler);
    c.bench_function("unary call through GrpcServerLayer", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request = http::Request::post("/bench.v1.Bench/Call")
                    .header("content-type", "application/grpc")
                    .body(tonic::body::Body::empty())
                    .unwrap();
                std::future::poll_fn(|cx| {
                    Service::<http::Request<tonic::body::Body>>::poll_ready(&mut service, cx)
                })
                .await
                .unwrap();
                let response = service.call(request).await;
                black_box(response.unwrap());
            });
        });
    });
}

/// One unary call through `GrpcClientLayer`, in the two shapes a client makes: a lone CLIENT span
/// (a plain channel, as before retries), and a retrying client's CLIENT span over an attempt span
/// (`start_call`, then the request marked with `Attempt`). The difference is what the call/attempt
/// split costs a healthy call.
fn client_call(c: &mut Criterion) {
    telemetry();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let layer = telemetry::grpc::GrpcClientLayer::new("bench", "127.0.0.1", 50051);
    let channel = tower::service_fn(|_request: http::Request<tonic::body::Body>| async {
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "0")
            .body(tonic::body::Body::empty())
            .unwrap();
        Ok::<_, Infallible>(response)
    });
    let mut service = layer.layer(channel);
    let mut call = |attempt: Option<telemetry::grpc::Attempt>| {
        let mut request = http::Request::post("/bench.v1.Bench/Call")
            .header("content-type", "application/grpc")
            .header("grpc-timeout", "10000m")
            .body(tonic::body::Body::empty())
            .unwrap();
        if let Some(attempt) = attempt {
            request.extensions_mut().insert(attempt);
        }
        runtime.block_on(async {
            std::future::poll_fn(|cx| {
                Service::<http::Request<tonic::body::Body>>::poll_ready(&mut service, cx)
            })
            .await
            .unwrap();
            black_box(service.call(request).await.unwrap());
        });
    };
    c.bench_function("unary call through GrpcClientLayer: CLIENT span", |b| {
        b.iter(|| call(None));
    });
    c.bench_function(
        "unary call through GrpcClientLayer: CLIENT span over an attempt span",
        |b| {
            b.iter(|| {
                let logical = layer.start_call("/bench.v1.Bench/Call", Vec::new());
                call(Some(telemetry::grpc::Attempt {
                    number: 1,
                    call: logical.clone(),
                }));
                // The answer is trailers-only: the retry loop ends the call, as here.
                logical.end(&tonic::Status::new(tonic::Code::Ok, ""));
            });
        },
    );
}

/// One bunyan line and OTLP log record inside a span that is already open.
fn log_line(c: &mut Criterion) {
    telemetry();
    let span = tracing::info_span!("bench", request.id = "bench-0001");
    let _entered = span.enter();
    c.bench_function("log line inside a span", |b| {
        b.iter(|| tracing::info!("Executing database query"));
    });
}

/// A span's life in the subscriber (created, entered, closed, queued for export), and the OTLP
/// protobuf encoding of one SERVER span as the exporter sends it.
fn span(c: &mut Criterion) {
    telemetry();
    c.bench_function("span created, entered and closed", |b| {
        b.iter(|| {
            let span = tracing::info_span!("database-query", db.system.name = "postgresql");
            let _entered = black_box(&span).enter();
        });
    });

    let resource = ResourceAttributesWithSchema::from(
        &Resource::builder_empty().with_service_name("bench").build(),
    );
    let start = SystemTime::now();
    let server_span = SpanData {
        span_context: SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
            SpanId::from(0x00f0_67aa_0ba9_02b7),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::from(0x0000_0000_0000_0001),
        parent_span_is_remote: true,
        span_kind: SpanKind::Server,
        name: "grpc.server.ProcessRequest".into(),
        start_time: start,
        end_time: start + Duration::from_micros(250),
        attributes: vec![
            KeyValue::new("rpc.system.name", "grpc"),
            KeyValue::new("rpc.method", "myservice.v1.MyService/ProcessRequest"),
            KeyValue::new("rpc.status_code", "OK"),
            KeyValue::new("network.peer.address", "127.0.0.1"),
            KeyValue::new("network.peer.port", 50051_i64),
            KeyValue::new("request.id", "bench-0001"),
        ],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("telemetry").build(),
    };
    c.bench_function("span encoded as OTLP protobuf", |b| {
        b.iter(|| {
            let request = ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(
                    vec![server_span.clone()],
                    &resource,
                ),
            };
            black_box(request.encode_to_vec());
        });
    });
}

criterion_group!(benches, unary_call, client_call, log_line, span);
criterion_main!(benches);
