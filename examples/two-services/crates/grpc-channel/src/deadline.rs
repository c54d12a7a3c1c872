//! A committed call's response stream ends at the call's deadline. tonic enforces `grpc-timeout`
//! only until the response headers: a stream from a server that does not enforce it (not every
//! server is one of this workspace's) would otherwise go on past the deadline, and a caller
//! reading it would wait as long as the server streams.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};

pin_project_lite::pin_project! {
    /// A response body that, when the call's deadline passes before its status, drops the stream
    /// (and with it the attempt's and the call's records, which then say DEADLINE_EXCEEDED) and
    /// ends with DEADLINE_EXCEEDED trailers.
    #[project = StreamDeadlineProjection]
    pub(crate) enum StreamDeadline<B> {
        Open {
            #[pin]
            body: B,
            deadline: tokio::time::Instant,
            timeout: Duration,
            // Made the first time the stream waits: a unary answer, already whole, needs no timer.
            sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        },
        Ended,
    }
}

impl<B> StreamDeadline<B> {
    /// `body`, ended at `deadline`; `timeout` is the call's, for the status message.
    pub(crate) fn new(body: B, deadline: tokio::time::Instant, timeout: Duration) -> Self {
        Self::Open {
            body,
            deadline,
            timeout,
            sleep: None,
        }
    }
}

fn deadline_exceeded(timeout: Duration) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    let status = tonic::Status::deadline_exceeded(format!(
        "the call's deadline ({timeout:?}) passed before the stream ended"
    ));
    if status.add_header(&mut trailers).is_err() {
        // The message is ours and plain: this is not expected, but the code alone still says it.
        trailers.insert("grpc-status", http::HeaderValue::from_static("4"));
    }
    trailers
}

impl<B: Body> Body for StreamDeadline<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let StreamDeadlineProjection::Open {
            body,
            deadline,
            timeout,
            sleep,
        } = self.as_mut().project()
        else {
            return Poll::Ready(None);
        };
        let timeout = *timeout;
        // A stream that never waits (a server streaming flat out) is checked by the clock.
        let expired = match sleep {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => tokio::time::Instant::now() >= *deadline,
        };
        if !expired {
            match body.poll_frame(cx) {
                Poll::Ready(frame) => return Poll::Ready(frame),
                Poll::Pending => {
                    let sleep =
                        sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(*deadline)));
                    ready!(sleep.as_mut().poll(cx));
                }
            }
        }
        // The stream is dropped here, not with the response: the server sees the call cancelled.
        self.set(Self::Ended);
        Poll::Ready(Some(Ok(Frame::trailers(deadline_exceeded(timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Open { body, .. } => body.is_end_stream(),
            Self::Ended => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Open { body, .. } => body.size_hint(),
            Self::Ended => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tonic::codegen::Bytes;

    /// A body that never sends anything, and says when it is dropped.
    struct Silent(std::sync::Arc<std::sync::atomic::AtomicBool>);

    impl Body for Silent {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    impl Drop for Silent {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_still_open_at_the_deadline_is_dropped_and_ends_deadline_exceeded() {
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let timeout = Duration::from_millis(200);
        let started = tokio::time::Instant::now();
        let mut body = std::pin::pin!(StreamDeadline::new(
            Silent(dropped.clone()),
            started + timeout,
            timeout
        ));
        let frame = body.frame().await.expect("a frame").expect("no error");
        assert_eq!(
            started.elapsed(),
            timeout,
            "at the deadline, not before or after"
        );
        let trailers = frame.into_trailers().expect("trailers");
        let status = tonic::Status::from_header_map(&trailers).expect("a status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("200ms"), "{status:?}");
        assert!(
            dropped.load(std::sync::atomic::Ordering::SeqCst),
            "the stream went away"
        );
        assert!(body.frame().await.is_none(), "and the body ended there");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_in_time_is_passed_through_whole() {
        let timeout = Duration::from_secs(1);
        let inner = http_body_util::StreamBody::new(tokio_stream::iter([
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"one"))),
            Ok(Frame::trailers(http::HeaderMap::new())),
        ]));
        let body = StreamDeadline::new(inner, tokio::time::Instant::now() + timeout, timeout);
        let collected = body.collect().await.expect("no error");
        assert!(collected.trailers().is_some());
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"one"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_never_waits_still_ends_at_the_deadline() {
        let timeout = Duration::from_millis(50);
        let deadline = tokio::time::Instant::now() + timeout;
        let endless =
            http_body_util::StreamBody::new(tokio_stream::iter(std::iter::repeat_with(|| {
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"x")))
            })));
        let mut body = std::pin::pin!(StreamDeadline::new(endless, deadline, timeout));
        assert!(
            body.frame()
                .await
                .expect("a frame")
                .expect("no error")
                .is_data()
        );
        tokio::time::advance(timeout).await;
        let frame = body.frame().await.expect("a frame").expect("no error");
        assert!(
            frame.is_trailers(),
            "the deadline ends it though data is ready"
        );
    }
}
