//! Health checks answer SERVING and are neither traced nor counted.

use crate::support::{TestServer, assert_serving, call, full, world};

/// Liveness and readiness answer SERVING; no span or metric point names the health service,
/// though a traced call made after the checks has arrived.
#[tokio::test]
async fn health_checks_are_served_but_not_traced_or_counted() {
    let mut server = TestServer::start("health", |_| {}).await;
    assert_serving(server.channel().await).await;
    // A traced call after the checks proves the pipeline delivered everything sent before it.
    let mut client = server.client().await;
    call(&mut client, "AfterHealth", 0).await.unwrap();
    let method = full("AfterHealth");
    world()
        .trace_where(2, |client| {
            client.attributes.get("rpc.method") == Some(&method)
        })
        .await;

    assert!(world().receiver.spans().iter().all(|s| {
        !s.name.contains("Check")
            && s.attributes
                .get("rpc.method")
                .is_none_or(|m| !m.starts_with("grpc.health"))
    }));
    assert!(world().receiver.points().iter().all(|p| {
        p.attributes
            .get("rpc.method")
            .is_none_or(|m| !m.starts_with("grpc.health"))
            && p.attributes.get("method").is_none_or(|m| m != "Check")
    }));
    server.stop();
}
