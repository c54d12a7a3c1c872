//! TLS and mutual TLS through the service's client and binary: a call is still one trace, a client
//! that does not trust the server is refused with a clear error, a bad server certificate stops
//! the server before it starts, and an OTLP API key is never shown. (Health over TLS and a
//! mutual-TLS server refusing a client without a certificate are `grpc-serving`'s tests.)

use std::time::Duration;

use telemetry_testing::{Pki, Receiver};

use crate::helpers::{ServerProcess, span, spawn_app_tls, unique_id, world};

fn server_tls(pki: &Pki, mutual: bool) -> impl FnOnce(&mut server::Config) + '_ {
    move |config| {
        config.serving.tls_cert = Some(pki.path("server.pem"));
        config.serving.tls_key = Some(pki.path("server.key"));
        config.serving.tls_client_ca = mutual.then(|| pki.path("ca.pem"));
    }
}

fn client_tls(pki: &Pki, with_certificate: bool) -> client::Tls {
    client::Tls {
        ca: Some(pki.path("ca.pem")),
        cert: with_certificate.then(|| pki.path("client.pem")),
        key: with_certificate.then(|| pki.path("client.key")),
    }
}

#[tokio::test]
async fn a_call_over_tls_and_over_mutual_tls_is_one_trace() {
    let pki = Pki::new().unwrap();
    for mutual in [false, true] {
        let mut app =
            spawn_app_tls(server_tls(&pki, mutual), Some(&client_tls(&pki, mutual))).await;
        let id = unique_id(if mutual { "mtls" } else { "tls" });
        let response = app.client.process_request(id.clone()).await.unwrap();
        assert_eq!(response.result, "success");
        let spans = world().trace_of(&id, 4).await;
        let client = span(&spans, "grpc.client.ProcessRequest");
        let server = span(&spans, "grpc.server.ProcessRequest");
        assert_eq!(server.trace_id, client.trace_id, "mutual: {mutual}");
        let attempt = span(&spans, "grpc.client.attempt.ProcessRequest");
        assert_eq!(attempt.parent_span_id, client.span_id, "mutual: {mutual}");
        assert_eq!(server.parent_span_id, attempt.span_id, "mutual: {mutual}");
        assert_eq!(server.status, "UNSET", "{server:?}");
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_server_gets_a_clear_error() {
    let pki = Pki::new().unwrap();
    let other = Pki::new().unwrap();
    let app = spawn_app_tls(server_tls(&pki, false), Some(&client_tls(&pki, false))).await;
    let url = format!("https://localhost:{}", app.address.port());
    let error =
        client::Client::connect_with_tls(&url, Duration::from_secs(5), &client_tls(&other, false))
            .await
            .unwrap_err()
            .to_string();
    assert!(
        error.contains("invalid peer certificate: UnknownIssuer"),
        "{error}"
    );
}

#[tokio::test]
async fn a_client_refuses_an_expired_server_certificate_and_says_so() {
    let pki = Pki::new().unwrap();
    // Started by hand: spawn_app_tls would connect its own client, which this certificate fails.
    world();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = server::Config::for_address(listener.local_addr().unwrap());
    config.serving.tls_cert = Some(pki.path("expired.pem"));
    config.serving.tls_key = Some(pki.path("expired.key"));
    let server = tokio::spawn(server::run(listener, config, std::future::pending()));
    let url = format!("https://localhost:{port}");
    let error =
        client::Client::connect_with_tls(&url, Duration::from_secs(5), &client_tls(&pki, false))
            .await
            .unwrap_err()
            .to_string();
    assert!(
        error.contains("invalid peer certificate: certificate expired"),
        "{error}"
    );
    server.abort();
}

#[tokio::test]
async fn tls_files_with_an_http_address_are_an_error_not_plaintext() {
    let pki = Pki::new().unwrap();
    let error = client::Client::connect_with_tls(
        "http://127.0.0.1:1",
        Duration::from_secs(1),
        &client_tls(&pki, false),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("use https://"), "{error}");
}

/// The server binary with a bad certificate: exit code 2, and one line that names the file and
/// the problem.
#[test]
fn a_bad_server_certificate_stops_the_server_before_it_starts() {
    let pki = Pki::new().unwrap();
    let missing = pki.path("missing.pem");
    let cases = [
        (
            missing.clone(),
            pki.path("server.key"),
            missing.display().to_string(),
            "cannot read it",
        ),
        (
            pki.path("server.key"),
            pki.path("server.key"),
            pki.path("server.key").display().to_string(),
            "no PEM certificate",
        ),
        (
            pki.path("server.pem"),
            pki.path("client.key"),
            pki.path("server.pem").display().to_string(),
            "does not go with the key",
        ),
    ];
    for (cert, key, named, problem) in cases {
        let output =
            std::process::Command::new(env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME"))))
                .env_clear()
                .env("LISTEN_ADDR", "127.0.0.1:0")
                .env("OTEL_SDK_DISABLED", "true")
                .env("TLS_CERT_FILE", &cert)
                .env("TLS_KEY_FILE", &key)
                .output()
                .unwrap();
        assert_eq!(output.status.code(), Some(2), "{problem}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&named) && stderr.contains(problem),
            "{stderr}"
        );
        assert!(
            output.stdout.is_empty(),
            "nothing started: {:?}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

/// An API key in `OTEL_EXPORTER_OTLP_HEADERS` reaches the collector as a header and nowhere else:
/// not on stdout, not in any exported span, log record or metric.
#[tokio::test]
async fn an_otlp_api_key_appears_nowhere() {
    const KEY: &str = "sk-test-7f3a9c1e5b2d4f60";
    let receiver = Receiver::start().await.unwrap();
    let endpoint = receiver.endpoint();
    let headers = format!("api-key={KEY},x-other=also-{KEY}");
    let server = ServerProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_HEADERS", &headers),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "broken-entry"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ("RUST_LOG", "trace"),
    ])
    .await;
    let mut client = client::Client::connect(&server.url, Duration::from_secs(5))
        .await
        .unwrap();
    client.process_request(unique_id("secret")).await.unwrap();
    let lines = server.terminate().await;
    let stdout = lines
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        stdout.contains("Processing request: secret-"),
        "the call was logged"
    );
    assert!(!stdout.contains(KEY), "the key is on stdout");
    let exported = format!(
        "{:?}{:?}{:?}",
        receiver.spans(),
        receiver.logs(),
        receiver.points()
    );
    assert!(!receiver.spans().is_empty(), "nothing exported");
    assert!(
        !exported.contains(KEY),
        "the key is in the exported telemetry"
    );
}
