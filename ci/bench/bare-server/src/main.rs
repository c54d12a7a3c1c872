//! `ProcessRequest` as the render answers it (an empty id is INVALID_ARGUMENT, the query waits
//! `DB_LATENCY_MS`), with nothing else: no telemetry, no layers, no health or reflection. The
//! benchmark sends no `StreamResults`, so that one is UNIMPLEMENTED here.

use std::net::SocketAddr;
use std::time::Duration;

use proto::{MyRequest, MyResponse, StreamRequest, StreamResult};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

struct Handler {
    db_latency: Duration,
}

#[tonic::async_trait]
impl proto::Service for Handler {
    async fn process_request(
        &self,
        request: Request<MyRequest>,
    ) -> Result<Response<MyResponse>, Status> {
        if request.get_ref().id.is_empty() {
            return Err(Status::invalid_argument("request id must not be empty"));
        }
        if !self.db_latency.is_zero() {
            tokio::time::sleep(self.db_latency).await;
        }
        Ok(Response::new(MyResponse {
            result: "success".into(),
        }))
    }

    type StreamResultsStream = BoxStream<StreamResult>;

    async fn stream_results(
        &self,
        _request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamResultsStream>, Status> {
        Err(Status::unimplemented("the benchmark baseline serves ProcessRequest only"))
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|_| {
            eprintln!("error: {name}={value:?} does not parse");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

#[tokio::main]
async fn main() {
    let listen: SocketAddr = env_or("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 50051)));
    let db_latency = Duration::from_millis(env_or("DB_LATENCY_MS", 10));
    let server = tonic::transport::Server::builder()
        .add_service(proto::ServiceServer::new(Handler { db_latency }))
        .serve_with_shutdown(listen, async {
            let _ = tokio::signal::ctrl_c().await;
        });
    if let Err(error) = server.await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
