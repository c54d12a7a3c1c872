//! The calls open on the server, for its shutdown: how many are left when the drain timeout
//! passes, and when the last of those it cut has ended. The layer sits outside the telemetry
//! layer, and what counts a call holds on to it until after the telemetry layer's own part of the
//! call (response future or body) is dropped, which is when that part records the call: a count
//! of zero means every call is recorded, with no word about shutdown in the telemetry crate.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use tower::{Layer, Service};

/// What the layer's calls share.
#[derive(Debug, Default)]
struct State {
    open: AtomicUsize,
    /// Whether someone waits for the count to reach zero: until then a call's end takes no lock.
    waiting: AtomicBool,
    none_open: tokio::sync::Notify,
}

/// One open call; dropped after the call's inner parts (see the module's documentation).
#[derive(Debug)]
struct Open(Arc<State>);

impl Open {
    fn new(state: &Arc<State>) -> Self {
        state.open.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(state))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 && self.0.waiting.load(Ordering::SeqCst)
        {
            self.0.none_open.notify_waiters();
        }
    }
}

/// Counts the calls through it; add it outside the telemetry layer.
#[derive(Clone, Debug, Default)]
pub(crate) struct OpenCallsLayer {
    state: Arc<State>,
}

impl OpenCallsLayer {
    /// The calls open through this layer, for the shutdown.
    pub(crate) fn calls(&self) -> OpenCalls {
        OpenCalls(Arc::clone(&self.state))
    }
}

/// A handle on the calls open through one server's layers, for its shutdown
/// ([`crate::drain::drain`]).
#[derive(Clone, Debug)]
pub struct OpenCalls(Arc<State>);

impl OpenCalls {
    /// How many calls are open: not yet ended, and so perhaps not yet recorded.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::SeqCst)
    }

    /// Completes once no call is open: each one has ended and been recorded (its span ended,
    /// into the span processor ahead of the exporters' shutdown, and its metrics recorded).
    pub async fn all_ended(&self) {
        self.0.waiting.store(true, Ordering::SeqCst);
        loop {
            let notified = self.0.none_open.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl<S> Layer<S> for OpenCallsLayer {
    type Service = OpenCallsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OpenCallsService {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

/// The service [`OpenCallsLayer`] wraps.
#[derive(Clone, Debug)]
pub(crate) struct OpenCallsService<S> {
    inner: S,
    state: Arc<State>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for OpenCallsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<OpenCallBody<ResBody>>;
    type Error = S::Error;
    type Future = OpenCallFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let open = Open::new(&self.state);
        OpenCallFuture {
            inner: self.inner.call(request),
            open: Some(open),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner response future, then its body, holding the call's count.
    pub(crate) struct OpenCallFuture<F> {
        // Fields drop in declaration order: the inner future (which records a call dropped
        // before its response) goes before the count.
        #[pin]
        inner: F,
        open: Option<Open>,
    }
}

impl<F, ResBody, E> Future for OpenCallFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<OpenCallBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        // An error is no response: the call ended (and was recorded) in the inner future.
        let open = this.open.take();
        Poll::Ready(result.map(|response| response.map(|inner| OpenCallBody { inner, open })))
    }
}

pin_project_lite::pin_project! {
    /// The response body, holding the call's count until it is dropped.
    pub(crate) struct OpenCallBody<B> {
        // As in `OpenCallFuture`: the inner body (which records the call) drops first.
        #[pin]
        inner: B,
        open: Option<Open>,
    }
}

impl<B: http_body::Body> http_body::Body for OpenCallBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    use tower::{Layer as _, Service as _, ServiceExt as _};

    use super::{OpenCalls, OpenCallsLayer};

    /// A part of a call (its response future or body) that, when dropped, notes how many calls
    /// were open then: what the telemetry layer's part sees as it records the call.
    struct Records {
        calls: OpenCalls,
        seen: Arc<Mutex<Vec<usize>>>,
    }

    impl Drop for Records {
        fn drop(&mut self) {
            self.seen
                .lock()
                .expect("not poisoned")
                .push(self.calls.open());
        }
    }

    impl http_body::Body for Records {
        type Data = &'static [u8];
        type Error = Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(None)
        }
    }

    fn layer_and_seen() -> (OpenCallsLayer, Arc<Mutex<Vec<usize>>>) {
        (OpenCallsLayer::default(), Arc::new(Mutex::new(Vec::new())))
    }

    #[tokio::test]
    async fn a_call_counts_until_its_body_has_recorded_it() {
        let (layer, seen) = layer_and_seen();
        let calls = layer.calls();
        let handler = tower::service_fn({
            let (calls, seen) = (calls.clone(), Arc::clone(&seen));
            move |_: http::Request<()>| {
                let body = Records {
                    calls: calls.clone(),
                    seen: Arc::clone(&seen),
                };
                async move { Ok::<_, Infallible>(http::Response::new(body)) }
            }
        });
        let response = layer
            .layer(handler)
            .oneshot(http::Request::new(()))
            .await
            .expect("a response");
        assert_eq!(calls.open(), 1, "open while its body is");
        drop(response);
        assert_eq!(
            *seen.lock().expect("not poisoned"),
            [1],
            "open as it recorded"
        );
        assert_eq!(calls.open(), 0, "ended once its body dropped");
    }

    #[test]
    fn a_call_dropped_before_its_response_counts_until_its_future_has_recorded_it() {
        let (layer, seen) = layer_and_seen();
        let calls = layer.calls();
        let handler = tower::service_fn({
            let (calls, seen) = (calls.clone(), Arc::clone(&seen));
            move |_: http::Request<()>| {
                let records = Records {
                    calls: calls.clone(),
                    seen: Arc::clone(&seen),
                };
                async move {
                    let _records = records;
                    std::future::pending::<Result<http::Response<()>, Infallible>>().await
                }
            }
        });
        let future = layer.layer(handler).call(http::Request::new(()));
        assert_eq!(calls.open(), 1);
        drop(future);
        assert_eq!(
            *seen.lock().expect("not poisoned"),
            [1],
            "open as it recorded"
        );
        assert_eq!(calls.open(), 0);
    }

    #[test]
    fn all_ended_waits_for_the_last_call() {
        let layer = OpenCallsLayer::default();
        let calls = layer.calls();
        let first = super::Open::new(&layer.state);
        let second = super::Open::new(&layer.state);
        let mut waiting = std::pin::pin!(calls.all_ended());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending(), "two open");
        drop(first);
        assert!(waiting.as_mut().poll(&mut cx).is_pending(), "one open");
        drop(second);
        assert!(waiting.as_mut().poll(&mut cx).is_ready(), "none open");
    }
}
