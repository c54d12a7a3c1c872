//! The calls the CLI makes, one printed or many measured (the workspace's
//! [`grpc_channel::cli`]): which method, with which arguments.

use grpc_channel::cli;
use grpc_channel::load::Outcome;

use crate::Client;

/// Which RPC the CLI calls.
#[derive(Clone, Copy, Debug)]
pub enum Call {
    /// `ProcessRequest`: one unary call each.
    ProcessRequest,
}

impl cli::Calls for Call {
    type Client = Client;

    fn span(&self) -> tracing::Span {
        match self {
            Self::ProcessRequest => tracing::info_span!("cli.process_request"),
        }
    }

    async fn once(&self, client: &mut Client, id: String) -> Result<(), tonic::Status> {
        match *self {
            Self::ProcessRequest => {
                let response = client.process_request(id).await?;
                println!("result: {}", response.result);
            }
        }
        Ok(())
    }

    async fn call(&self, client: &mut Client, id: String) -> Outcome {
        match *self {
            Self::ProcessRequest => Outcome::of(client.process_request(id).await),
        }
    }

    fn streams(&self) -> bool {
        false
    }
}
