//! Server configuration: flags, each with an environment variable as fallback.

use std::net::SocketAddr;
use std::time::Duration;

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

    /// Seconds in-flight calls get to finish after SIGTERM/SIGINT before they are cut.
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,

    /// Largest request message accepted, in bytes; a larger one gets RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
}

impl Config {
    /// The defaults, listening on `listen`: what tests start from.
    pub fn for_address(listen: SocketAddr) -> Self {
        Self {
            listen,
            db_latency_ms: 10,
            failure_rate: 0.0,
            drain_timeout_secs: 10,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }

    pub(crate) fn db_latency(&self) -> Duration {
        Duration::from_millis(self.db_latency_ms)
    }

    pub(crate) fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
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
