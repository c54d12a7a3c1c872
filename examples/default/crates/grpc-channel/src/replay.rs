//! The request body a retrying call can send again: each attempt reads the caller's body through a
//! [`ReplayBody`], which keeps a copy of every frame sent, so a retry replays the copy and then
//! goes on with what the caller has not sent yet (a stream the caller is still writing included).
//! The copy is bounded (the retry buffer of grpc-go and grpc-java): once a call has sent more than
//! the limit, the copy is dropped and the call is committed to its attempt, never retried.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http_body::Frame;
use tonic::codegen::Bytes;

/// What the attempts of one call share: the copy so far, and the caller's body.
struct Shared {
    /// The data frames sent so far, while they fit in `limit`.
    frames: Vec<Bytes>,
    size: usize,
    limit: usize,
    /// The caller's body, where the attempts have left it.
    rest: Pin<Box<tonic::body::Body>>,
    ended: bool,
    /// More than `limit` was sent: the copy is gone and the call cannot be retried.
    overflowed: bool,
    /// The attempt that may read: an earlier one still held by the transport reads nothing.
    current: u32,
}

/// The replayable body of one call; [`Replay::attempt`] makes each attempt's body.
#[derive(Clone)]
pub(crate) struct Replay(Arc<Mutex<Shared>>);

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay").finish_non_exhaustive()
    }
}

impl Replay {
    /// Keeps a copy of up to `limit` bytes of `body`.
    pub(crate) fn new(body: tonic::body::Body, limit: usize) -> Self {
        Self(Arc::new(Mutex::new(Shared {
            frames: Vec::new(),
            size: 0,
            limit,
            rest: Box::pin(body),
            ended: false,
            overflowed: false,
            current: 0,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The body of attempt `number`; the bodies of earlier attempts end at once from now on.
    pub(crate) fn attempt(&self, number: u32) -> ReplayBody {
        self.lock().current = number;
        ReplayBody {
            replay: self.clone(),
            number,
            next: 0,
        }
    }

    /// Whether the call sent more than the copy holds: it cannot be sent again.
    pub(crate) fn overflowed(&self) -> bool {
        self.lock().overflowed
    }
}

/// One attempt's request body: the copy first, then the rest of the caller's body.
#[derive(Debug)]
pub struct ReplayBody {
    replay: Replay,
    number: u32,
    /// The next frame of the copy to send.
    next: usize,
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let mut shared = this.replay.lock();
        if shared.current != this.number {
            return Poll::Ready(None);
        }
        if let Some(frame) = shared.frames.get(this.next) {
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(frame.clone()))));
        }
        if shared.ended {
            return Poll::Ready(None);
        }
        let polled = shared.rest.as_mut().poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && !shared.overflowed
                {
                    if shared.size + data.len() <= shared.limit {
                        shared.size += data.len();
                        shared.frames.push(data.clone());
                        this.next += 1;
                    } else {
                        shared.overflowed = true;
                        shared.frames = Vec::new();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                shared.ended = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    fn body(chunks: &[&'static [u8]]) -> tonic::body::Body {
        let frames: Vec<Result<Frame<Bytes>, tonic::Status>> = chunks
            .iter()
            .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk))))
            .collect();
        tonic::body::Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
    }

    async fn read(body: ReplayBody) -> Vec<u8> {
        body.collect()
            .await
            .map(|collected| collected.to_bytes().to_vec())
            .unwrap_or_else(|status| panic!("{status}"))
    }

    #[tokio::test]
    async fn a_retry_replays_what_was_sent_and_an_earlier_attempt_reads_nothing_more() {
        let replay = Replay::new(body(&[b"ab", b"cd"]), 16);
        let mut first = replay.attempt(1);
        assert!(
            first.frame().await.is_some(),
            "the first attempt read a frame"
        );
        let second = replay.attempt(2);
        assert_eq!(read(first).await, b"", "a superseded attempt ends");
        assert_eq!(read(second).await, b"abcd", "the copy, then the rest");
        assert_eq!(read(replay.attempt(3)).await, b"abcd");
        assert!(!replay.overflowed());
    }

    #[tokio::test]
    async fn past_the_limit_the_copy_is_dropped_and_the_call_committed() {
        let replay = Replay::new(body(&[b"abc", b"def"]), 4);
        assert_eq!(
            read(replay.attempt(1)).await,
            b"abcdef",
            "the attempt gets it all"
        );
        assert!(replay.overflowed());
    }
}
