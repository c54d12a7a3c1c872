//! Server configuration: flags, each with an environment variable as fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use telemetry::tls::{Identity, PemFile, TlsError};

/// How the server listens and how the example flow behaves.
#[derive(Clone, Debug, clap::Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], proto::DEFAULT_PORT)))]
    pub listen: SocketAddr,

    /// Simulated database query latency, in milliseconds.
    #[arg(long, env = "DB_LATENCY_MS", default_value_t = 10)]
    pub db_latency_ms: u64,

    /// Fraction of database queries that fail with UNAVAILABLE, from 0 to 1.
    #[arg(long, env = "FAILURE_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub failure_rate: f64,

    /// Seconds between SIGTERM/SIGINT and the drain: the readiness health (the service's name)
    /// answers NOT_SERVING while calls are still served, so clients and Kubernetes stop choosing
    /// this replica before it stops accepting connections. 0 drains at once.
    #[arg(long, env = "DRAIN_DELAY_SECS", default_value_t = 5)]
    pub drain_delay_secs: u64,

    /// Seconds in-flight calls get to finish after SIGTERM/SIGINT before they are cut.
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,

    /// Calls in flight at once, all connections together; a call beyond it is refused at once
    /// with UNAVAILABLE (a client retries it on another replica). Health checks and reflection
    /// are never refused.
    #[arg(long, env = "MAX_CONCURRENT_CALLS", default_value_t = 2048,
          value_parser = parse_positive::<usize>, allow_negative_numbers = true)]
    pub max_concurrent_calls: usize,

    /// Seconds a connection lives before the server asks its client to reconnect (HTTP/2
    /// GOAWAY; calls in flight finish): clients that keep one connection spread over new
    /// replicas after a scale-up.
    #[arg(long, env = "MAX_CONNECTION_AGE_SECS", default_value_t = 300,
          value_parser = parse_positive::<u64>, allow_negative_numbers = true)]
    pub max_connection_age_secs: u64,

    /// Largest request message accepted, in bytes; a larger one gets RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Serve over TLS with this certificate chain (PEM); plaintext when unset.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: accept only clients whose certificate this CA bundle (PEM) signed.
    #[arg(long, env = "TLS_CLIENT_CA_FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl Config {
    /// The defaults, listening on `listen`, without a drain delay (a test's server has no
    /// fleet to leave): what tests start from.
    pub fn for_address(listen: SocketAddr) -> Self {
        Self {
            listen,
            db_latency_ms: 10,
            failure_rate: 0.0,
            drain_delay_secs: 0,
            drain_timeout_secs: 10,
            max_concurrent_calls: 2048,
            max_connection_age_secs: 300,
            max_message_bytes: 4 * 1024 * 1024,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }

    /// The server's TLS, its files read and checked; `None` for plaintext.
    pub fn tls(&self) -> Result<Option<tonic::transport::ServerTlsConfig>, TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let identity = Identity::load(
            &PemFile::new("--tls-cert (TLS_CERT_FILE)", cert),
            &PemFile::new("--tls-key (TLS_KEY_FILE)", key),
        )?;
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity.tonic());
        if let Some(ca) = &self.tls_client_ca {
            let (pem, _) =
                telemetry::tls::ca(&PemFile::new("--tls-client-ca (TLS_CLIENT_CA_FILE)", ca))?;
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(pem));
        }
        Ok(Some(config))
    }

    pub(crate) fn db_latency(&self) -> Duration {
        Duration::from_millis(self.db_latency_ms)
    }

    pub(crate) fn drain_delay(&self) -> Duration {
        Duration::from_secs(self.drain_delay_secs)
    }

    pub(crate) fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    pub(crate) fn max_connection_age(&self) -> Duration {
        Duration::from_secs(self.max_connection_age_secs)
    }
}

/// A whole number above 0: a limit of 0 would refuse every call, a negative one means nothing.
fn parse_positive<T>(value: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialEq + From<u8>,
{
    match value.trim().parse::<T>() {
        Ok(number) if number != T::from(0) => Ok(number),
        _ => Err(format!("{value:?} is not a whole number above 0")),
    }
}

fn parse_rate(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "{value:?} is not a fraction from 0 to 1 (e.g. 0.05)"
        )),
    }
}
