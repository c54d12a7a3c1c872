//! The calls the CLI makes, one printed or many measured (the workspace's
//! [`grpc_channel::cli`]): which method, with which arguments.
{%- unless is_init %}

use std::time::Duration;
{%- endunless %}

use grpc_channel::cli;
use grpc_channel::load::Outcome;

use crate::Client;

/// Which RPC the CLI calls.
#[derive(Clone, Copy, Debug)]
pub enum Call {
    /// `ProcessRequest`: one unary call each.
    ProcessRequest,
{%- unless is_init %}
    /// `StreamResults`: each call asks for `count` results `interval` apart and reads them all.
    StreamResults {
        /// Results asked of each stream.
        count: u32,
        /// The pause the server makes between two results.
        interval: Duration,
    },
{%- endunless %}
}

impl cli::Calls for Call {
    type Client = Client;

    fn span(&self) -> tracing::Span {
        match self {
            Self::ProcessRequest => tracing::info_span!("cli.process_request"),
{%- unless is_init %}
            Self::StreamResults { .. } => tracing::info_span!("cli.stream_results"),
{%- endunless %}
        }
    }

    async fn once(&self, client: &mut Client, id: String) -> Result<(), tonic::Status> {
        match *self {
            Self::ProcessRequest => {
                let response = client.process_request(id).await?;
                println!("result: {}", response.result);
            }
{%- unless is_init %}
            // Each result is printed as it arrives; an error after some ends the stream.
            Self::StreamResults { count, interval } => {
                let mut stream = client.stream_results(id, count, interval).await?;
                while let Some(result) = stream.message().await? {
                    println!("result {}: {}", result.sequence, result.result);
                }
            }
{%- endunless %}
        }
        Ok(())
    }

    async fn call(&self, client: &mut Client, id: String) -> Outcome {
        match *self {
            Self::ProcessRequest => Outcome::of(client.process_request(id).await),
{%- unless is_init %}
            Self::StreamResults { count, interval } => {
                Outcome::of_stream(client.stream_results(id, count, interval).await).await
            }
{%- endunless %}
        }
    }

    fn streams(&self) -> bool {
{%- if is_init %}
        false
{%- else %}
        matches!(self, Self::StreamResults { .. })
{%- endif %}
    }
}
