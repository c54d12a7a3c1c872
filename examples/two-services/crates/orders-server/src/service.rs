//! The service's RPC: `ProcessRequest`, the flow of the Python grpclib reference service (its
//! own span, metrics and status come from `telemetry::grpc::GrpcServerLayer`; the handler adds
//! only its inner spans and log lines). Replace it with the service's own work; add an RPC with
//! an `rpc` line in the proto and a method in the `impl` below.

use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use proto::{MyRequest, MyResponse};
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::Config;
use crate::error::ProcessError;

/// Implements the service's RPCs.
#[derive(Clone, Debug)]
pub(crate) struct Handler {
    db_latency: Duration,
    failure_rate: f64,
}

impl Handler {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            db_latency: config.db_latency(),
            failure_rate: config.failure_rate,
        }
    }

    async fn business_logic(
        &self,
        request: &MyRequest,
        started: Instant,
    ) -> Result<MyResponse, ProcessError> {
        let result = self.answer(request).await;
        match &result {
            Ok(_) => tracing::info!(
                "Request processed successfully in {:.3}s",
                started.elapsed().as_secs_f64()
            ),
            Err(error) => {
                record_failure(error);
                tracing::error!("Business logic failed: {error}");
            }
        }
        result
    }

    async fn answer(&self, request: &MyRequest) -> Result<MyResponse, ProcessError> {
        if request.id.is_empty() {
            return Err(ProcessError::EmptyId);
        }
        let result = self.query().instrument(database_query_span()).await?;
        Ok(MyResponse { result })
    }

    async fn query(&self) -> Result<String, ProcessError> {
        tracing::info!("Executing database query");
        // A zero sleep still waits for the timer's next 1 ms tick.
        if !self.db_latency.is_zero() {
            tokio::time::sleep(self.db_latency).await;
        }
        if self.failure_rate > 0.0 && fastrand::f64() < self.failure_rate {
            return Err(ProcessError::Database(
                "connection reset (injected failure)".into(),
            ));
        }
        Ok("success".into())
    }
}

/// The span of one (simulated) database query.
/// A call to a database server: a CLIENT span with the database conventions' stable names
/// (semconv v1.33.0 and later).
fn database_query_span() -> Span {
    tracing::info_span!(
        "database-query",
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = "SELECT",
    )
}

/// Records `error` on the current (inner) span: an `exception` event and an error status.
fn record_failure(error: &ProcessError) {
    let span = Span::current();
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", error.kind()),
            KeyValue::new("exception.message", error.to_string()),
        ],
    );
    span.set_status(opentelemetry::trace::Status::error(error.to_string()));
}

#[tonic::async_trait]
impl proto::Service for Handler {
    async fn process_request(
        &self,
        request: Request<MyRequest>,
    ) -> Result<Response<MyResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        // The current span is the SERVER span the telemetry layer opened for this call.
        let shown = telemetry::bounded(&request.id);
        Span::current().set_attribute("request.id", shown.to_owned());
        tracing::info!("Processing request: {shown}");

        let span = tracing::info_span!("process-business-logic", request.id = shown);
        let response = self
            .business_logic(&request, started)
            .instrument(span)
            .await?;
        Ok(Response::new(response))
    }
}
