//! `max_connection_age`: a connection is closed gracefully at its age, so a client that keeps one
//! connection reconnects (and, behind a ClusterIP Service, may reach another replica); the calls
//! in flight at that moment finish.

use crate::support::{TestServer, call, server_spans};

/// A 1.5 s call across a connection age of 1 s finishes; the next call comes over a new
/// connection (its server span names another peer port).
#[tokio::test]
async fn an_aged_connection_closes_gracefully_and_the_client_reconnects() {
    let mut server = TestServer::start("aged", |config| config.max_connection_age_secs = 1).await;
    let mut client = server.client().await;
    // In flight when the connection reaches its age (1 s into a 1.5 s call): it still completes.
    call(&mut client, "AcrossAge", 1500)
        .await
        .expect("a call in flight at the connection's age finishes");
    call(&mut client, "AfterAge", 0)
        .await
        .expect("the client reconnects");

    let port = |spans: Vec<telemetry_testing::ReceivedSpan>| {
        spans[0]
            .attributes
            .get("network.peer.port")
            .cloned()
            .expect("the server span names its peer's port")
    };
    let first = port(server_spans("AcrossAge", 1).await);
    let second = port(server_spans("AfterAge", 1).await);
    assert_ne!(first, second, "both calls came over the same connection");
    server.stop();
}
