//! Answers an oversized request with RESOURCE_EXHAUSTED, as the gRPC spec asks; tonic's decoder
//! answers OUT_OF_RANGE, which clients and dashboards read as a bug in the caller's arguments.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tower::{Layer, Service};

/// What tonic (0.14) says when a message exceeds `max_decoding_message_size`. The test
/// `errors::an_oversized_message_is_resource_exhausted` (`tests/serving`) fails if tonic changes
/// it.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// Rewrites tonic's OUT_OF_RANGE for oversized messages to RESOURCE_EXHAUSTED.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MessageLimitLayer;

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit { inner }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct MessageLimit<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for MessageLimit<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RewriteStatus<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        RewriteStatus {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct RewriteStatus<F> {
        #[pin]
        inner: F,
    }
}

impl<F, ResBody, E> Future for RewriteStatus<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut result = ready!(self.project().inner.poll(cx));
        if let Ok(response) = &mut result {
            let headers = response.headers_mut();
            // Decode errors come back trailers-only: the status is in the headers.
            let too_large = headers.get("grpc-status").is_some_and(|v| v == "11")
                && tonic::Status::from_header_map(headers)
                    .is_some_and(|status| status.message().starts_with(TONIC_TOO_LARGE));
            if too_large {
                headers.insert("grpc-status", http::HeaderValue::from_static("8"));
            }
        }
        Poll::Ready(result)
    }
}
