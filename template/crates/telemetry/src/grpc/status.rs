//! A gRPC span's status comes from its gRPC code alone.
//!
//! [`super::CallRecord::finish`] decides it: ERROR, with `error.type`, for the codes that mean the
//! side failed, otherwise unset. tracing-opentelemetry 0.34 also marks a span ERROR for any event
//! logged at ERROR level inside it, with no switch to turn that off, and the SDK lets no status
//! but OK replace an ERROR; so a handler's `error!` about a caller's mistake would mark the server
//! span failed. This processor, between the SDK and the batch processor, clears an ERROR status
//! from every gRPC span whose code did not set one (no `error.type`): the events stay on the span,
//! the status follows the code.

use opentelemetry::trace::Status;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use super::attr;

/// Wraps the processor that exports spans; see the module's documentation.
#[derive(Debug)]
pub(crate) struct StatusFromCode<P>(pub(crate) P);

impl<P: SpanProcessor> SpanProcessor for StatusFromCode<P> {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        // Most spans are not ERROR: one comparison, no attribute scan.
        if matches!(span.status, Status::Error { .. }) && !code_failed(&span) {
            span.status = Status::Unset;
        }
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

/// Whether `span` may keep an ERROR status: it is no gRPC call's span (other spans' statuses are
/// their code's business), or its gRPC code marked it failed (`error.type`).
fn code_failed(span: &SpanData) -> bool {
    let (mut grpc, mut coded, mut error_type) = (false, false, false);
    for kv in &span.attributes {
        match kv.key.as_str() {
            attr::RPC_SYSTEM_NAME => grpc = kv.value.as_str() == "grpc",
            attr::RPC_STATUS_CODE => coded = true,
            attr::ERROR_TYPE => error_type = true,
            _ => {}
        }
    }
    !(grpc && coded) || error_type
}
