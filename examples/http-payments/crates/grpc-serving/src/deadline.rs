//! Deadlines on the server: a call's `grpc-timeout` becomes a [`Deadline`] its handler can read
//! (`request.extensions().get::<Deadline>()`) and pass to the calls it makes downstream
//! (`client.with_timeout(deadline.remaining())`), and when it passes before the handler has
//! answered, the handler's future is dropped (its work stops at its next `.await`) and the caller
//! gets DEADLINE_EXCEEDED. tonic would answer CANCELLED ("Timeout expired") at the same instant,
//! and the caller's own timer, which started a network hop earlier, would cancel the call at
//! about that instant too: this layer acts a few milliseconds earlier, so the status on the wire,
//! on the server span and in the metrics is DEADLINE_EXCEEDED, as gRPC specifies. Sits inside the
//! telemetry layer, like the load shedding. A stream that outlives its deadline is ended by the
//! telemetry layer.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tower::{Layer, Service};

/// How much earlier than the deadline this layer gives up: before tonic's own timer (which starts
/// first), and before the caller's cancel (its clock started a hop earlier) arrives, with room for
/// the timer wheel's millisecond ticks and a busy runtime's late wake-ups.
const AHEAD: Duration = Duration::from_millis(5);

/// When the caller stops waiting for this call (from its `grpc-timeout`); absent when the caller
/// set no deadline.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(tokio::time::Instant);

impl Deadline {
    /// A deadline `timeout` from now: for work that starts outside a call, and for tests.
    pub fn after(timeout: Duration) -> Self {
        Self(tokio::time::Instant::now() + timeout)
    }

    /// The instant the call's deadline passes.
    pub fn instant(&self) -> tokio::time::Instant {
        self.0
    }

    /// The time left: what a call made downstream may take at most.
    pub fn remaining(&self) -> Duration {
        self.0
            .saturating_duration_since(tokio::time::Instant::now())
    }
}

/// Gives every call with a `grpc-timeout` its [`Deadline`] and ends it when the deadline passes.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService { inner }
    }
}

/// The service [`DeadlineLayer`] wraps.
#[derive(Clone, Debug)]
pub struct DeadlineService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for DeadlineService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<DeadlineBody<ResBody>>;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let Some(timeout) = telemetry::grpc::grpc_timeout(request.headers()) else {
            return DeadlineFuture::Untimed {
                inner: self.inner.call(request),
            };
        };
        let at = tokio::time::Instant::now() + timeout;
        request.extensions_mut().insert(Deadline(at));
        DeadlineFuture::Timed {
            inner: self.inner.call(request),
            sleep: Box::pin(tokio::time::sleep_until(
                at.checked_sub(AHEAD).unwrap_or(at),
            )),
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's response, unless the deadline passes first.
    #[project = DeadlineFutureProjection]
    pub enum DeadlineFuture<F> {
        Untimed { #[pin] inner: F },
        Timed { #[pin] inner: F, sleep: Pin<Box<tokio::time::Sleep>> },
        Expired,
    }
}

impl<F, ResBody, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<DeadlineBody<ResBody>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = match self.as_mut().project() {
            DeadlineFutureProjection::Untimed { inner } => inner,
            DeadlineFutureProjection::Timed { inner, sleep } => {
                if sleep.as_mut().poll(cx).is_ready() {
                    // Dropping the handler's future, in place, drops its work.
                    self.set(Self::Expired);
                    return Poll::Ready(Ok(expired()));
                }
                inner
            }
            DeadlineFutureProjection::Expired => return Poll::Ready(Ok(expired())),
        };
        let response = ready!(inner.poll(cx))?;
        Poll::Ready(Ok(response.map(|body| DeadlineBody::Served { body })))
    }
}

/// A trailers-only DEADLINE_EXCEEDED response.
fn expired<B>() -> http::Response<DeadlineBody<B>> {
    tonic::Status::deadline_exceeded("the call's deadline passed before the server answered")
        .into_http::<()>()
        .map(|()| DeadlineBody::Expired)
}

pin_project_lite::pin_project! {
    /// The handler's response body, or the empty body of an expired call.
    #[project = DeadlineBodyProjection]
    pub enum DeadlineBody<B> {
        Served { #[pin] body: B },
        Expired,
    }
}

impl<B: http_body::Body> http_body::Body for DeadlineBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.project() {
            DeadlineBodyProjection::Served { body } => body.poll_frame(cx),
            DeadlineBodyProjection::Expired => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Served { body } => body.is_end_stream(),
            Self::Expired => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Served { body } => body.size_hint(),
            Self::Expired => http_body::SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use tower::{Layer as _, ServiceExt as _};

    use super::{AHEAD, Deadline, DeadlineLayer};

    /// Sets its flag when dropped: the handler's work went away.
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    // Paused time: the clock moves only when every task waits, so "answered before the deadline"
    // is exact however busy the machine (a real clock made this flaky on a loaded CI runner).
    #[tokio::test(start_paused = true)]
    async fn a_handler_past_its_deadline_is_dropped_and_answered_deadline_exceeded() {
        let dropped = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new(None));
        let handler = tower::service_fn({
            let dropped = Arc::clone(&dropped);
            let seen = Arc::clone(&seen);
            move |request: http::Request<()>| {
                let guard = Dropped(Arc::clone(&dropped));
                *seen.lock().expect("not poisoned") =
                    request.extensions().get::<Deadline>().copied();
                async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    drop(guard);
                    Ok::<_, Infallible>(http::Response::new(()))
                }
            }
        });
        let request = http::Request::post("/a.v1.A/Call")
            .header("grpc-timeout", "50m")
            .body(())
            .expect("a request");
        let started = tokio::time::Instant::now();
        let response = DeadlineLayer
            .layer(handler)
            .oneshot(request)
            .await
            .expect("an answer");
        let took = started.elapsed();
        assert_eq!(
            took,
            Duration::from_millis(50) - AHEAD,
            "answered after {took:?}"
        );
        assert_eq!(
            response.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"4"[..]),
            "DEADLINE_EXCEEDED on the wire"
        );
        assert!(
            dropped.load(Ordering::SeqCst),
            "the handler's work was dropped"
        );
        let deadline = seen
            .lock()
            .expect("not poisoned")
            .expect("the handler saw its deadline");
        // 50 ms from when the layer saw the call, which was between `started` and the answer.
        let timeout = Duration::from_millis(50);
        assert!(
            (started + timeout..=started + took + timeout).contains(&deadline.instant()),
            "{deadline:?}"
        );
    }

    #[tokio::test]
    async fn a_call_without_grpc_timeout_has_no_deadline() {
        let handler = tower::service_fn(|request: http::Request<()>| async move {
            assert!(request.extensions().get::<Deadline>().is_none());
            Ok::<_, Infallible>(http::Response::new(()))
        });
        let request = http::Request::post("/a.v1.A/Call")
            .body(())
            .expect("a request");
        let response = DeadlineLayer
            .layer(handler)
            .oneshot(request)
            .await
            .expect("an answer");
        assert!(response.headers().get("grpc-status").is_none());
    }
}
