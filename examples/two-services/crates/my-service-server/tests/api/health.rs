//! Health checks answer SERVING and are neither traced nor counted.

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{spawn_app, unique_id, world};

#[tokio::test]
async fn health_checks_are_served_but_not_traced_or_counted() {
    let mut app = spawn_app().await;
    let channel = tonic::transport::Endpoint::from_shared(app.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", proto::GRPC_SERVICE] {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap();
        assert_eq!(
            response.into_inner().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    // A traced call after the checks proves the pipeline delivered everything sent before it.
    let id = unique_id("after-health");
    app.client.process_request(id.clone()).await.unwrap();
    world().trace_of(&id, 4).await;

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
    app.stop();
}
