//! The server's shedding and the client's retries together, across a fleet of real servers. A
//! test binary of its own: the calls its replicas shed would move the shed counter that
//! `tests/api/overload.rs` asserts. Loopback addresses other than 127.0.0.1 answer on Linux only
//! (macOS has just 127.0.0.1 unless aliased).
#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test, with its location.

// The library is named after the service; the tests call it `server`.
extern crate orders_server as server;

/// Overload across a fleet: three real servers on 127.0.0.1, .2 and .3 (one port, as pods), each
/// with room for 4 calls of 200 ms, and a burst of 20: the calls a replica sheds (UNAVAILABLE)
/// are retried on the others, and none fails. The burst asks more than the default retry budget
/// gives at once (the throttle is for a fleet that keeps failing): 5 attempts, a 100-token bucket.
#[tokio::test]
async fn a_burst_over_three_shedding_replicas_fails_no_call_with_retries() {
    let first = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = first.local_addr().unwrap().port();
    let mut listeners = vec![first];
    for ip in ["127.0.0.2", "127.0.0.3"] {
        listeners.push(tokio::net::TcpListener::bind((ip, port)).await.unwrap());
    }
    let mut stops = Vec::new();
    let mut endpoints = Vec::new();
    for listener in listeners {
        let address = listener.local_addr().unwrap();
        let mut config = server::Config::for_address(address);
        config.serving.max_concurrent_calls = 4;
        config.db_latency_ms = 200;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server::run(listener, config, async {
            let _ = stopped.await;
        }));
        stops.push(stop);
        endpoints
            .push(tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap());
    }
    let channel = tonic::transport::Channel::balance_list(endpoints.into_iter());
    let client = client::Client::from_channel(channel, "fleet", port)
        .with_settings(client::CallSettings {
            max_attempts: 5,
            throttle_max_tokens: 100,
            ..client::CallSettings::default()
        })
        .unwrap();

    let calls: Vec<_> = (0..20)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move { client.process_request(format!("burst-{i}")).await })
        })
        .collect();
    let mut failed = Vec::new();
    for call in calls {
        if let Err(status) = call.await.unwrap() {
            failed.push(status);
        }
    }
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    drop(stops);
}
