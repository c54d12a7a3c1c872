//! What every service's server shares in its configuration: the fleet (drain, connection age),
//! the limits, and its own TLS. A service flattens [`Config`] into its own flags
//! (`#[command(flatten)] serving: grpc_serving::Config`); each flag has an environment variable
//! as fallback, and each default is a `DEFAULT_*` constant below, written once.

use std::path::PathBuf;
use std::time::Duration;

use telemetry::tls::{Identity, PemFile, TlsError};

/// Seconds between SIGTERM and the drain, unless changed.
pub const DEFAULT_DRAIN_DELAY_SECS: u64 = 5;
/// Seconds in-flight calls get to finish after the drain starts, unless changed.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 10;
/// Calls in flight at once, all connections together, unless changed.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 2048;
/// Seconds a connection lives, unless changed.
pub const DEFAULT_MAX_CONNECTION_AGE_SECS: u64 = 300;
/// Largest request message accepted, in bytes, unless changed (gRPC's usual 4 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// How the server behaves in a fleet, what it accepts, and its TLS.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
// No argument group: a service's own flags struct is often named `Config` too, and two groups of
// one name make clap panic at start.
#[group(skip)]
pub struct Config {
    /// Seconds between SIGTERM/SIGINT and the drain: the readiness health (the service's name)
    /// answers NOT_SERVING while calls are still served, so clients and Kubernetes stop choosing
    /// this replica before it stops accepting connections. 0 drains at once.
    #[arg(long, env = "DRAIN_DELAY_SECS", default_value_t = DEFAULT_DRAIN_DELAY_SECS)]
    pub drain_delay_secs: u64,

    /// Seconds in-flight calls get to finish after SIGTERM/SIGINT before they are cut.
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", default_value_t = DEFAULT_DRAIN_TIMEOUT_SECS)]
    pub drain_timeout_secs: u64,

    /// Calls in flight at once, all connections together; a call beyond it is refused at once
    /// with UNAVAILABLE (a client retries it on another replica). Health checks and reflection
    /// are never refused.
    #[arg(long, env = "MAX_CONCURRENT_CALLS", default_value_t = DEFAULT_MAX_CONCURRENT_CALLS,
          value_parser = parse_positive::<usize>, allow_negative_numbers = true)]
    pub max_concurrent_calls: usize,

    /// Seconds a connection lives before the server asks its client to reconnect (HTTP/2
    /// GOAWAY; calls in flight finish): clients that keep one connection spread over new
    /// replicas after a scale-up.
    #[arg(long, env = "MAX_CONNECTION_AGE_SECS", default_value_t = DEFAULT_MAX_CONNECTION_AGE_SECS,
          value_parser = parse_positive::<u64>, allow_negative_numbers = true)]
    pub max_connection_age_secs: u64,

    /// Largest request message accepted, in bytes; a larger one gets RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
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

impl Default for Config {
    /// The defaults of the flags, environment aside.
    fn default() -> Self {
        Self {
            drain_delay_secs: DEFAULT_DRAIN_DELAY_SECS,
            drain_timeout_secs: DEFAULT_DRAIN_TIMEOUT_SECS,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            max_connection_age_secs: DEFAULT_MAX_CONNECTION_AGE_SECS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}

impl Config {
    /// The defaults without a drain delay (a test's server has no fleet to leave): what tests
    /// start from.
    pub fn for_tests() -> Self {
        Self {
            drain_delay_secs: 0,
            ..Self::default()
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        serving: Config,
    }

    #[test]
    fn the_flags_defaults_are_the_default_config() {
        // The constants are the one source: the flags and `Default` both read them.
        let flags = Flags::try_parse_from(["server"]).map(|flags| flags.serving);
        // The environment may set a variable this test cannot unset safely; compare only when
        // none of them is set.
        let set = [
            "DRAIN_DELAY_SECS",
            "DRAIN_TIMEOUT_SECS",
            "MAX_CONCURRENT_CALLS",
            "MAX_CONNECTION_AGE_SECS",
            "MAX_MESSAGE_BYTES",
            "TLS_CERT_FILE",
            "TLS_KEY_FILE",
            "TLS_CLIENT_CA_FILE",
        ]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
        if !set {
            assert_eq!(flags.ok(), Some(Config::default()));
        }
    }

    /// A service's flags are a struct named `Config` too: flattened in, this one must not clash
    /// with it (clap checks its debug assertions when a command is built).
    #[test]
    fn a_services_own_config_can_flatten_it() {
        mod service {
            #[derive(Debug, clap::Parser)]
            pub(super) struct Config {
                #[command(flatten)]
                pub(super) serving: super::Config,
            }
        }
        <service::Config as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn a_limit_of_zero_or_below_is_refused_with_its_value() {
        for bad in ["0", "-3", "many"] {
            let error = Flags::try_parse_from(["server", "--max-concurrent-calls", bad])
                .err()
                .map(|error| error.to_string())
                .unwrap_or_default();
            assert!(
                error.contains(&format!("{bad:?} is not a whole number above 0")),
                "{error}"
            );
        }
    }
}
