//! Deadlines on the server: a call's `grpc-timeout` becomes a [`Deadline`] its handler can read
//! (`request.extensions().get::<Deadline>()`) and pass to the calls it makes downstream
//! (`client.with_timeout(deadline.remaining())`), and when it passes before the handler has
//! answered, the handler's future is dropped (its work stops at its next `.await`) and the caller
//! gets DEADLINE_EXCEEDED. tonic would answer CANCELLED ("Timeout expired") at the same instant,
//! and the caller's own timer, which started a network hop earlier, would cancel the call at
//! about that instant too: this layer acts a few milliseconds earlier, so the status on the wire,
//! on the server span and in the metrics is DEADLINE_EXCEEDED, as gRPC specifies. tonic enforces
//! `grpc-timeout` only until the response headers: a response stream still open at the deadline
//! is ended here too, with DEADLINE_EXCEEDED trailers, and its handler's stream dropped. Sits
//! inside the telemetry layer, like the load shedding, so the span and the metrics record either
//! ending as they record any status.

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

/// Gives every call with a `grpc-timeout` its [`Deadline`] and ends it, response stream included,
/// when the deadline passes.
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
            sleep: Some(Box::pin(tokio::time::sleep_until(
                at.checked_sub(AHEAD).unwrap_or(at),
            ))),
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's response, unless the deadline passes first.
    #[project = DeadlineFutureProjection]
    pub enum DeadlineFuture<F> {
        Untimed { #[pin] inner: F },
        // The timer moves on into the response's body: it is `None` only once it has.
        Timed { #[pin] inner: F, sleep: Option<Pin<Box<tokio::time::Sleep>>> },
        Expired,
    }
}

impl<F, ResBody, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<DeadlineBody<ResBody>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (inner, sleep) = match self.as_mut().project() {
            DeadlineFutureProjection::Untimed { inner } => (inner, None),
            DeadlineFutureProjection::Timed { inner, sleep } => {
                if sleep
                    .as_mut()
                    .is_some_and(|s| s.as_mut().poll(cx).is_ready())
                {
                    // Dropping the handler's future, in place, drops its work.
                    self.set(Self::Expired);
                    return Poll::Ready(Ok(expired()));
                }
                (inner, Some(sleep))
            }
            DeadlineFutureProjection::Expired => return Poll::Ready(Ok(expired())),
        };
        let response = ready!(inner.poll(cx))?;
        // The response's body (a stream's messages) goes on under the same timer.
        let sleep = sleep.and_then(Option::take);
        Poll::Ready(Ok(response.map(|body| DeadlineBody::Served { body, sleep })))
    }
}

/// A trailers-only DEADLINE_EXCEEDED response.
fn expired<B>() -> http::Response<DeadlineBody<B>> {
    tonic::Status::deadline_exceeded("the call's deadline passed before the server answered")
        .into_http::<()>()
        .map(|()| DeadlineBody::Ended)
}

/// The trailers that end a response stream still open at its deadline. The message is the one
/// the server span has always carried for such a stream; the caller reads it too.
fn expired_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::with_capacity(2);
    trailers.insert("grpc-status", http::HeaderValue::from_static("4"));
    trailers.insert(
        "grpc-message",
        http::HeaderValue::from_static("the%20deadline%20passed%20before%20the%20stream%20ended"),
    );
    trailers
}

pin_project_lite::pin_project! {
    /// The handler's response body, under the call's deadline when it has one; or the end of a
    /// response: the empty body of an expired call, or what follows a stream's expiry trailers.
    #[project = DeadlineBodyProjection]
    pub enum DeadlineBody<B> {
        Served { #[pin] body: B, sleep: Option<Pin<Box<tokio::time::Sleep>>> },
        Ended,
    }
}

impl<B: http_body::Body> http_body::Body for DeadlineBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let DeadlineBodyProjection::Served { body, sleep } = self.as_mut().project() else {
            return Poll::Ready(None);
        };
        if sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
        {
            // The handler's stream is dropped here, not with the response.
            self.set(Self::Ended);
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(expired_trailers()))));
        }
        let frame = ready!(body.poll_frame(cx));
        // The stream ended on its own: the deadline no longer applies.
        if frame
            .as_ref()
            .is_none_or(|f| f.as_ref().is_ok_and(http_body::Frame::is_trailers))
        {
            *sleep = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Served { body, .. } => body.is_end_stream(),
            Self::Ended => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Served { body, .. } => body.size_hint(),
            Self::Ended => http_body::SizeHint::with_exact(0),
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

    /// A response stream: `data` frames, then `trailers` and its end, or without trailers, a
    /// wait on something that never comes.
    struct Stream {
        data: usize,
        trailers: Option<http::HeaderMap>,
        ended: bool,
        _guard: Dropped,
    }

    impl http_body::Body for Stream {
        type Data = &'static [u8];
        type Error = Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            use std::task::Poll;
            if self.data > 0 {
                self.data -= 1;
                return Poll::Ready(Some(Ok(http_body::Frame::data(&[0, 0, 0, 0, 0][..]))));
            }
            if let Some(trailers) = self.trailers.take() {
                self.ended = true;
                return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
            }
            if self.ended {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        }
    }

    /// Serves a [`Stream`] with `grpc-timeout: 50m`; its frames as they come, each with the time
    /// it came, until the body ends; and whether the stream was dropped by then.
    async fn frames_of(
        data: usize,
        trailers: Option<http::HeaderMap>,
    ) -> (Vec<(Duration, String)>, bool) {
        use http_body::Body as _;
        let dropped = Arc::new(AtomicBool::new(false));
        let stream = Stream {
            data,
            trailers,
            ended: false,
            _guard: Dropped(Arc::clone(&dropped)),
        };
        let mut stream = Some(stream);
        let handler = tower::service_fn(move |_: http::Request<()>| {
            let response = http::Response::new(stream.take().expect("one call"));
            async move { Ok::<_, Infallible>(response) }
        });
        let request = http::Request::post("/a.v1.A/Stream")
            .header("grpc-timeout", "50m")
            .body(())
            .expect("a request");
        let started = tokio::time::Instant::now();
        let response = DeadlineLayer
            .layer(handler)
            .oneshot(request)
            .await
            .expect("an answer");
        let mut body = std::pin::pin!(response.into_body());
        let mut frames = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            let frame = frame.expect("no error");
            let what = match frame.trailers_ref() {
                Some(trailers) => format!(
                    "{:?} {:?}",
                    trailers.get("grpc-status"),
                    trailers.get("grpc-message")
                ),
                None => "data".to_owned(),
            };
            let trailers = frame.is_trailers();
            frames.push((started.elapsed(), what));
            if trailers {
                // Past the deadline after the status: nothing more may come.
                tokio::time::advance(Duration::from_millis(100)).await;
            }
        }
        (frames, dropped.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_past_its_deadline_ends_with_deadline_exceeded_trailers() {
        let (frames, dropped) = frames_of(2, None).await;
        let expiry = (
            Duration::from_millis(50) - AHEAD,
            r#"Some("4") Some("the%20deadline%20passed%20before%20the%20stream%20ended")"#
                .to_owned(),
        );
        let data = (Duration::ZERO, "data".to_owned());
        assert_eq!(frames, [data.clone(), data, expiry]);
        assert!(dropped, "the handler's stream was dropped at the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_first_keeps_its_own_status() {
        let mut ok = http::HeaderMap::new();
        ok.insert("grpc-status", http::HeaderValue::from_static("0"));
        let (frames, _) = frames_of(1, Some(ok)).await;
        let data = (Duration::ZERO, "data".to_owned());
        let end = (Duration::ZERO, r#"Some("0") None"#.to_owned());
        assert_eq!(
            frames,
            [data, end],
            "no DEADLINE_EXCEEDED after the stream's own end"
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
