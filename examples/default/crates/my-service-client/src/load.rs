//! Load mode: the service's calls under the workspace's load runner ([`grpc_channel::load`]),
//! which measures throughput, errors by code and latency percentiles.

use std::time::Duration;

pub use grpc_channel::load::{Amount, Outcome, Summary, parse_duration};

use crate::Client;

/// Which RPC the load sends.
#[derive(Clone, Copy, Debug)]
pub enum Call {
    /// `ProcessRequest`: one unary call each.
    ProcessRequest,
    /// `StreamResults`: each call asks for `count` results `interval` apart and reads them all.
    StreamResults {
        /// Results asked of each stream.
        count: u32,
        /// The pause the server makes between two results.
        interval: Duration,
    },
}

/// A worker's client and the call it makes.
#[derive(Clone, Debug)]
struct Caller {
    client: Client,
    call: Call,
}

impl grpc_channel::load::Caller for Caller {
    async fn call(&mut self, id: String) -> Outcome {
        match self.call {
            Call::ProcessRequest => Outcome::of(self.client.process_request(id).await),
            Call::StreamResults { count, interval } => {
                Outcome::of_stream(self.client.stream_results(id, count, interval).await).await
            }
        }
    }

    fn streams(&self) -> bool {
        matches!(self.call, Call::StreamResults { .. })
    }
}

/// Sends `amount` calls of `call` with `concurrency` in flight; `on_done` runs after each call
/// (progress).
pub async fn run(
    client: &Client,
    call: Call,
    amount: Amount,
    concurrency: usize,
    id_prefix: &str,
    on_done: impl Fn() + Send + Sync + 'static,
) -> Summary {
    let caller = Caller {
        client: client.clone(),
        call,
    };
    grpc_channel::load::run(&caller, amount, concurrency, id_prefix, on_done).await
}
