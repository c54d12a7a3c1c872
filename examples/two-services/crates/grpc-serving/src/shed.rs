//! Load shedding: a limit on the calls in flight, all connections together. A call beyond it is
//! refused at once with UNAVAILABLE, before any handler runs and without queueing, so its client
//! can retry it on another replica; a burst then costs the caller a round trip, not a queue's
//! latency. The refusal passes back through `telemetry::grpc::GrpcServerLayer` (this layer sits
//! inside it): the server span and the RPC metrics record it as UNAVAILABLE, and
//! `<prefix>.requests.shed` counts it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use opentelemetry::metrics::Counter;
use tower::{Layer, Service};

/// Paths never refused: a health check must answer while the server is busy (a busy replica is
/// not a dead one), and reflection is an operator's tool.
const NEVER_SHED: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

/// What a refused call's client reads; it names the setting.
const REFUSED: &str = "the server is at its limit of concurrent calls (MAX_CONCURRENT_CALLS); \
                       try another replica";

/// Refuses the calls beyond `limit` in flight; add it inside the telemetry layer.
#[derive(Clone, Debug)]
pub(crate) struct LoadShedLayer {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: AtomicUsize,
    shed: Counter<u64>,
}

impl State {
    /// Takes a place if one is free: a load, and a compare-exchange when admitted. A refusal
    /// writes nothing, so a burst of refusals never makes the count overshoot the limit.
    fn admit(self: &Arc<Self>) -> Option<Permit> {
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= self.limit {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Permit(Arc::clone(self))),
                Err(now) => current = now,
            }
        }
    }
}

impl LoadShedLayer {
    /// `limit` calls in flight at most (at least 1); `metric_prefix` names the shed counter
    /// (`<prefix>.requests.shed`). Build it after `telemetry::init`, which installs the meter
    /// provider.
    pub(crate) fn new(limit: usize, metric_prefix: &str) -> Self {
        let shed = opentelemetry::global::meter("telemetry")
            .u64_counter(format!("{metric_prefix}.requests.shed"))
            .with_unit("{requests}")
            .with_description(
                "Requests refused with UNAVAILABLE, before any handler ran, because the server \
                 was at its limit of concurrent calls",
            )
            .build();
        Self {
            state: Arc::new(State {
                limit: limit.max(1),
                in_flight: AtomicUsize::new(0),
                shed,
            }),
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct LoadShed<S> {
    inner: S,
    state: Arc<State>,
}

/// A place among the calls in flight, held until the call's response body is dropped (its
/// last message and trailers are sent, or the call is cancelled).
#[derive(Debug)]
pub(crate) struct Permit(Arc<State>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for LoadShed<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ShedBody<ResBody>>;
    type Error = S::Error;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        if NEVER_SHED.iter().any(|prefix| path.starts_with(prefix)) {
            return ShedFuture::Admitted {
                inner: self.inner.call(request),
                permit: None,
            };
        }
        match self.state.admit() {
            Some(permit) => ShedFuture::Admitted {
                inner: self.inner.call(request),
                permit: Some(permit),
            },
            None => {
                self.state.shed.add(1, &[]);
                ShedFuture::Refused
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's response, its body holding the call's permit; or the refusal.
    #[project = ShedFutureProjection]
    pub(crate) enum ShedFuture<F> {
        Admitted { #[pin] inner: F, permit: Option<Permit> },
        Refused,
    }
}

impl<F, ResBody, E> Future for ShedFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<ShedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShedFutureProjection::Admitted { inner, permit } => {
                let response = ready!(inner.poll(cx))?;
                let permit = permit.take();
                Poll::Ready(Ok(response.map(|body| ShedBody::Served { body, permit })))
            }
            ShedFutureProjection::Refused => Poll::Ready(Ok(refusal())),
        }
    }
}

/// A trailers-only UNAVAILABLE response.
fn refusal<B>() -> http::Response<ShedBody<B>> {
    tonic::Status::unavailable(REFUSED)
        .into_http::<()>()
        .map(|()| ShedBody::Refused)
}

pin_project_lite::pin_project! {
    /// The response body of an admitted call, releasing its permit when dropped; or the empty
    /// body of a refusal.
    #[project = ShedBodyProjection]
    pub(crate) enum ShedBody<B> {
        Served { #[pin] body: B, permit: Option<Permit> },
        Refused,
    }
}

impl<B: http_body::Body> http_body::Body for ShedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.project() {
            ShedBodyProjection::Served { body, .. } => body.poll_frame(cx),
            ShedBodyProjection::Refused => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Served { body, .. } => body.is_end_stream(),
            Self::Refused => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Served { body, .. } => body.size_hint(),
            Self::Refused => http_body::SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::State;

    fn state(limit: usize) -> Arc<State> {
        Arc::new(State {
            limit,
            in_flight: AtomicUsize::new(0),
            shed: opentelemetry::global::meter("test")
                .u64_counter("shed")
                .build(),
        })
    }

    #[test]
    fn admits_up_to_the_limit_and_again_once_a_permit_is_dropped() {
        let state = state(2);
        let first = state.admit().expect("1 of 2");
        let _second = state.admit().expect("2 of 2");
        assert!(state.admit().is_none(), "a third is refused");
        assert!(state.admit().is_none(), "refusals leave no trace");
        drop(first);
        assert!(state.admit().is_some(), "a dropped permit frees its place");
    }
}
