//! What the layers answer for calls a service cannot take, whatever the service: a message over
//! the limit is RESOURCE_EXHAUSTED (not tonic's OUT_OF_RANGE), and a method the service does not
//! have is UNIMPLEMENTED, named `_OTHER` so made-up paths mint no span names or metric series.

use telemetry_testing::{ARRIVAL, check_attributes};
use tonic::Code;
use tonic_prost::ProstCodec;

use crate::support::{SERVICE, TestServer, call, path, world};

/// A request over `max_message_bytes` is refused with RESOURCE_EXHAUSTED, as the gRPC spec asks
/// (`limits.rs` rewrites tonic's answer, whose wording this test pins); the server keeps serving.
#[tokio::test]
async fn an_oversized_message_is_resource_exhausted() {
    let mut server = TestServer::start("limits", |config| config.max_message_bytes = 1024).await;
    let mut client = server.client().await;
    client.ready().await.unwrap();
    let status = client
        .unary(
            tonic::Request::new(vec![b'x'; 4096]),
            path("Bytes"),
            ProstCodec::<Vec<u8>, u64>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Under the limit, the same method answers; and the server keeps serving.
    client.ready().await.unwrap();
    let counted = client
        .unary(
            tonic::Request::new(vec![b'x'; 512]),
            path("Bytes"),
            ProstCodec::<Vec<u8>, u64>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counted, 512);
    assert_eq!(call(&mut client, "AfterOversize", 0).await.unwrap(), 0);
    server.stop();
}

/// A made-up path, far longer than telemetry carries, is UNIMPLEMENTED; its server span is
/// `grpc.server._OTHER`, keeps the path cut to `MAX_VALUE_CHARS` in `rpc.method_original`, and no
/// metric point names it.
#[tokio::test]
async fn an_unknown_method_is_unimplemented_and_named_other() {
    let server = TestServer::start("unknown", |_| {}).await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    // A made-up path is caller input: far longer than telemetry carries.
    let original = format!(
        "{SERVICE}/NoSuchMethod{}",
        "x".repeat(4 * telemetry::MAX_VALUE_CHARS)
    );
    let shown = telemetry::bounded(&original).to_owned();
    let path = format!("/{original}").parse().unwrap();
    let status = grpc
        .unary(
            tonic::Request::new(1_u64),
            path,
            ProstCodec::<u64, u64>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    world().flush().await;
    let span = world()
        .receiver
        .wait_for(ARRIVAL, |r| {
            r.spans()
                .into_iter()
                .find(|s| s.attributes.get("rpc.method_original") == Some(&shown))
        })
        .await
        .expect("a span for the unknown method, its path cut to MAX_VALUE_CHARS");
    // Made-up paths must not mint span names or metric series.
    assert_eq!(span.name, "grpc.server._OTHER");
    check_attributes(
        &span,
        &[
            ("rpc.method", "_OTHER"),
            ("rpc.status_code", "UNIMPLEMENTED"),
        ],
    );
    assert_eq!(span.status, "ERROR");
    assert!(world().receiver.points().iter().all(|p| {
        p.attributes
            .get("rpc.method")
            .is_none_or(|m| !m.contains("NoSuchMethod"))
            && p.attributes
                .get("method")
                .is_none_or(|m| !m.contains("NoSuchMethod"))
    }));
}
