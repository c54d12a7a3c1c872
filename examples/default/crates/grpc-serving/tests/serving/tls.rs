//! The server's own TLS: with a certificate in its configuration it serves calls and health over
//! TLS, and with a client CA (mutual TLS) it refuses a client that has no certificate. (What a
//! service's client does with TLS is tested with that client.)

use telemetry_testing::Pki;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::support::{TestServer, assert_serving, call, full, world};

/// A server with the PKI's certificate; with `mutual`, only for clients the PKI's CA signed.
async fn start(pki: &Pki, mutual: bool) -> TestServer {
    TestServer::start("tls", |config| {
        config.tls_cert = Some(pki.path("server.pem"));
        config.tls_key = Some(pki.path("server.key"));
        config.tls_client_ca = mutual.then(|| pki.path("ca.pem"));
    })
    .await
}

/// A TLS connection to `server` that trusts the PKI's CA; with `with_certificate`, it shows the
/// PKI's client certificate.
async fn connect(
    server: &TestServer,
    pki: &Pki,
    with_certificate: bool,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.read("ca.pem")));
    if with_certificate {
        tls = tls.identity(Identity::from_pem(
            pki.read("client.pem"),
            pki.read("client.key"),
        ));
    }
    Endpoint::from_shared(format!("https://localhost:{}", server.address.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

/// Over TLS and over mutual TLS, a call is served and traced as one trace, and health answers.
#[tokio::test]
async fn calls_and_health_are_served_over_tls_and_mutual_tls() {
    let pki = Pki::new().unwrap();
    let method = full("OverTls");
    for mutual in [false, true] {
        let server = start(&pki, mutual).await;
        let channel = connect(&server, &pki, mutual).await.unwrap();
        let mut client = server.client_over(channel.clone());
        let port = server.address.port().to_string();
        call(&mut client, "OverTls", 0).await.unwrap();
        let spans = world()
            .trace_where(2, |client| {
                client.attributes.get("rpc.method") == Some(&method)
                    && client.attributes.get("server.port") == Some(&port)
            })
            .await;
        let server_span = spans.iter().find(|s| s.kind == "SERVER").unwrap();
        assert_eq!(
            server_span.status, "UNSET",
            "mutual: {mutual}: {server_span:?}"
        );
        assert_serving(channel).await;
    }
}

/// A mutual-TLS server refuses a client without a certificate; with TLS 1.3 the client learns
/// of it after its handshake, at connect or at its first call.
#[tokio::test]
async fn a_mutual_tls_server_refuses_a_client_without_a_certificate() {
    let pki = Pki::new().unwrap();
    let server = start(&pki, true).await;
    let refused = match connect(&server, &pki, false).await {
        Err(error) => format!("{error:?}"),
        Ok(channel) => {
            // tonic reports a transport error as UNKNOWN; the reason is in its source.
            let mut client = server.client_over(channel);
            let status = call(&mut client, "OverTls", 0).await.unwrap_err();
            format!("{status:?}")
        }
    };
    assert!(refused.contains("CertificateRequired"), "{refused}");
}
