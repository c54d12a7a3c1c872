//! The example RPCs: `ProcessRequest`, the flow of the Python grpclib reference service, and
//! `StreamResults`, the same work as a server stream. Each RPC's own span, metrics and status
//! come from `telemetry::grpc::GrpcServerLayer`, to the end of a stream; these handlers add only
//! their inner spans and log lines.

use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use proto::{MyRequest, MyResponse, StreamRequest, StreamResult};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::Config;
use crate::error::ProcessError;

/// The most results one `StreamResults` call may ask for: a stream's work stays bounded.
pub const MAX_STREAM_COUNT: u32 = 1000;

/// The longest pause between two results a `StreamResults` call may ask for, in milliseconds.
pub const MAX_STREAM_INTERVAL_MS: u32 = 10_000;

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

    /// Sends the results of one `StreamResults` call into `sender`, one `stream-result` span
    /// each; ends after the last one, after the first failure (sent as the stream's status), or
    /// as soon as the caller stops listening (cancelled, deadline passed), so that neither the
    /// work nor the call's span outlives the call.
    async fn stream(
        self,
        request: StreamRequest,
        sender: mpsc::Sender<Result<StreamResult, Status>>,
    ) {
        let started = Instant::now();
        let count = request.count;
        let interval = Duration::from_millis(u64::from(request.interval_ms));
        // Whether the caller listened to the end (or to the failure).
        let produce = async {
            for sequence in 1..=count {
                let span = tracing::info_span!("stream-result", result.sequence = sequence);
                let result = self.stream_step(sequence, count).instrument(span).await;
                let failed = result.is_err();
                // The error becomes a `Status` in error.rs, like the unary call's `?`.
                if sender.send(result.map_err(Status::from)).await.is_err() {
                    return false;
                }
                if failed {
                    return true;
                }
                if sequence < count && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
            }
            tracing::info!(
                "Streamed {count} results in {:.3}s",
                started.elapsed().as_secs_f64()
            );
            true
        };
        let listened = tokio::select! {
            listened = produce => listened,
            () = sender.closed() => false,
        };
        if !listened {
            tracing::info!("The caller stopped listening; stream ended");
        }
    }

    /// One result of a stream: the same query as `ProcessRequest`, inside the result's span.
    async fn stream_step(&self, sequence: u32, count: u32) -> Result<StreamResult, ProcessError> {
        match self.query().instrument(database_query_span()).await {
            Ok(result) => {
                tracing::info!("Result {sequence} of {count} ready");
                Ok(StreamResult { sequence, result })
            }
            Err(error) => {
                record_failure(&error);
                tracing::error!("Result {sequence} of {count} failed: {error}");
                Err(error)
            }
        }
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

/// Checks a `StreamResults` request before any work starts.
fn validate(request: &StreamRequest) -> Result<(), ProcessError> {
    if request.id.is_empty() {
        return Err(ProcessError::EmptyId);
    }
    if !(1..=MAX_STREAM_COUNT).contains(&request.count) {
        return Err(ProcessError::InvalidCount {
            count: request.count,
            max: MAX_STREAM_COUNT,
        });
    }
    if request.interval_ms > MAX_STREAM_INTERVAL_MS {
        return Err(ProcessError::InvalidInterval {
            interval_ms: request.interval_ms,
            max: MAX_STREAM_INTERVAL_MS,
        });
    }
    Ok(())
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

    type StreamResultsStream = ReceiverStream<Result<StreamResult, Status>>;

    async fn stream_results(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamResultsStream>, Status> {
        let request = request.into_inner();
        // As in `process_request`, the current span is the call's SERVER span; it stays open
        // until the stream's last message, whatever this function does.
        let shown = telemetry::bounded(&request.id);
        Span::current().set_attribute("request.id", shown.to_owned());
        if let Err(error) = validate(&request) {
            tracing::warn!("Stream request rejected: {error}");
            return Err(error.into());
        }
        tracing::info!("Streaming {} results for request: {shown}", request.count);

        // One result waits in the channel at most: the stream goes at the caller's pace.
        let (sender, receiver) = mpsc::channel(1);
        // The task runs outside this call's future: `in_current_span` carries the SERVER span
        // (and so the trace) into it, so its spans and log lines are the call's children.
        tokio::spawn(self.clone().stream(request, sender).in_current_span());
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
