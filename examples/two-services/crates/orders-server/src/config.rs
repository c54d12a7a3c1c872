//! The server's flags, each with an environment variable as fallback: where it listens, how the
//! example flow behaves, and (flattened in) what every service's server shares
//! ([`grpc_serving::Config`]: drain, limits, TLS).

use std::net::SocketAddr;
use std::time::Duration;

/// Milliseconds the simulated database query takes, unless changed.
pub const DEFAULT_DB_LATENCY_MS: u64 = 10;

/// How the server listens and how the example flow behaves.
#[derive(Clone, Debug, clap::Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], proto::DEFAULT_PORT)))]
    pub listen: SocketAddr,

    /// Simulated database query latency, in milliseconds.
    #[arg(long, env = "DB_LATENCY_MS", default_value_t = DEFAULT_DB_LATENCY_MS)]
    pub db_latency_ms: u64,

    /// Fraction of database queries that fail with UNAVAILABLE, from 0 to 1.
    #[arg(long, env = "FAILURE_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub failure_rate: f64,

    /// Drain, limits and TLS: what every service's server shares.
    #[command(flatten)]
    pub serving: grpc_serving::Config,
}

impl Config {
    /// The defaults, listening on `listen`, without a drain delay (a test's server has no
    /// fleet to leave): what tests start from.
    pub fn for_address(listen: SocketAddr) -> Self {
        Self {
            listen,
            db_latency_ms: DEFAULT_DB_LATENCY_MS,
            failure_rate: 0.0,
            serving: grpc_serving::Config::for_tests(),
        }
    }

    pub(crate) fn db_latency(&self) -> Duration {
        Duration::from_millis(self.db_latency_ms)
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_flags_are_consistent() {
        // clap checks its definitions only when it parses; a conflict (two argument groups of
        // one name, say) would otherwise first show as a panic when the server starts.
        super::Config::command().debug_assert();
    }
}
