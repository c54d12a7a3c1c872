//! The request body a retrying call can send again: each attempt reads the caller's body through a
//! [`ReplayBody`], which keeps a copy of every frame sent, so a retry replays the copy and then
//! goes on with what the caller has not sent yet (a stream the caller is still writing included).
//! The copy is bounded (the retry buffer of grpc-go and grpc-java): once a call has sent more than
//! the limit, the copy is dropped and the call is committed to its attempt, never retried.
//!
//! A unary call's body is one message the caller has already encoded: [`Replay::new`] reads it
//! before the first attempt, and every attempt sends its own handle on the same bytes, with no
//! lock and no shared state. Most calls are unary: this is the path their cost is made of.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http_body::{Body as _, Frame};
use tonic::codegen::Bytes;

type FrameResult = Result<Frame<Bytes>, tonic::Status>;

/// What the attempts of a call still being written share: the copy so far, and the caller's body.
pub(crate) struct Shared {
    /// The data frames sent so far, while they fit in `limit`.
    frames: Vec<Bytes>,
    size: usize,
    limit: usize,
    /// Frames [`Replay::new`] read from the caller's body before it knew the body goes on.
    read_ahead: VecDeque<FrameResult>,
    /// The caller's body, where the attempts have left it.
    rest: tonic::body::Body,
    ended: bool,
    /// More than `limit` was sent: the copy is gone and the call cannot be retried.
    overflowed: bool,
    /// The attempt that may read: an earlier one still held by the transport reads nothing.
    current: u32,
}

impl Shared {
    fn next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        match self.read_ahead.pop_front() {
            Some(frame) => Poll::Ready(Some(frame)),
            // `tonic::body::Body` is a boxed body, so `Unpin`.
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }
}

/// The replayable body of one call; [`Replay::attempt`] makes each attempt's body.
pub(crate) enum Replay {
    /// The caller's whole body (`None`: an empty one), read before the first attempt.
    Whole(Option<Bytes>),
    /// A body the caller was still writing when the call started.
    Streaming(Arc<Mutex<Shared>>),
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay").finish_non_exhaustive()
    }
}

/// Polls `body` once, in the task that runs the call.
async fn next_frame(body: &mut tonic::body::Body) -> Poll<Option<FrameResult>> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await
}

impl Replay {
    /// Keeps a copy of up to `limit` bytes of `body`. A body that is already whole, one data
    /// frame within `limit` and its end (a unary call's), is read here; any other is read as the
    /// attempts send it. Never waits for the caller: what is not ready yet is read by the attempts.
    pub(crate) async fn new(mut body: tonic::body::Body, limit: usize) -> Self {
        let read_ahead = match next_frame(&mut body).await {
            Poll::Ready(None) => return Self::Whole(None),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if data.len() <= limit => {
                    if body.is_end_stream() {
                        return Self::Whole(Some(data));
                    }
                    match next_frame(&mut body).await {
                        Poll::Ready(None) => return Self::Whole(Some(data)),
                        Poll::Ready(Some(second)) => {
                            VecDeque::from([Ok(Frame::data(data)), second])
                        }
                        Poll::Pending => VecDeque::from([Ok(Frame::data(data))]),
                    }
                }
                Ok(data) => VecDeque::from([Ok(Frame::data(data))]),
                Err(frame) => VecDeque::from([Ok(frame)]),
            },
            Poll::Ready(Some(Err(status))) => VecDeque::from([Err(status)]),
            Poll::Pending => VecDeque::new(),
        };
        Self::Streaming(Arc::new(Mutex::new(Shared {
            frames: Vec::new(),
            size: 0,
            limit,
            read_ahead,
            rest: body,
            ended: false,
            overflowed: false,
            current: 0,
        })))
    }

    /// The body of attempt `number`; the bodies of earlier attempts end at once from now on.
    pub(crate) fn attempt(&self, number: u32) -> ReplayBody {
        ReplayBody(match self {
            Self::Whole(data) => Kind::Whole(data.clone()),
            Self::Streaming(shared) => {
                lock(shared).current = number;
                Kind::Streaming {
                    shared: Arc::clone(shared),
                    number,
                    next: 0,
                }
            }
        })
    }

    /// Whether the call sent more than the copy holds: it cannot be sent again.
    pub(crate) fn overflowed(&self) -> bool {
        match self {
            Self::Whole(_) => false,
            Self::Streaming(shared) => lock(shared).overflowed,
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One attempt's request body: the copy first, then the rest of the caller's body.
pub struct ReplayBody(Kind);

enum Kind {
    /// The whole body, until it is sent.
    Whole(Option<Bytes>),
    Streaming {
        shared: Arc<Mutex<Shared>>,
        number: u32,
        /// The next frame of the copy to send.
        next: usize,
    },
}

impl std::fmt::Debug for ReplayBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody").finish_non_exhaustive()
    }
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let (shared, number, next) = match &mut self.get_mut().0 {
            Kind::Whole(data) => return Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
            Kind::Streaming {
                shared,
                number,
                next,
            } => (shared, *number, next),
        };
        let mut shared = lock(shared);
        if shared.current != number {
            return Poll::Ready(None);
        }
        if let Some(frame) = shared.frames.get(*next) {
            *next += 1;
            return Poll::Ready(Some(Ok(Frame::data(frame.clone()))));
        }
        if shared.ended {
            return Poll::Ready(None);
        }
        match shared.next_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && !shared.overflowed
                {
                    if shared.size + data.len() <= shared.limit {
                        shared.size += data.len();
                        shared.frames.push(data.clone());
                        *next += 1;
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

    /// A whole body says it ends with its one frame, so the transport sends the frame with the
    /// stream's end (one HTTP/2 DATA frame, not a second, empty one). No exact size hint: the
    /// transport would add a `content-length` that gRPC requests do not carry.
    fn is_end_stream(&self) -> bool {
        matches!(self.0, Kind::Whole(None))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    fn body(chunks: &[&'static [u8]]) -> tonic::body::Body {
        let frames: Vec<FrameResult> = chunks
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
        let replay = Replay::new(body(&[b"ab", b"cd", b"ef"]), 16).await;
        assert!(matches!(replay, Replay::Streaming(_)), "the body goes on");
        let mut first = replay.attempt(1);
        assert!(
            first.frame().await.is_some(),
            "the first attempt read a frame"
        );
        let second = replay.attempt(2);
        assert_eq!(read(first).await, b"", "a superseded attempt ends");
        assert_eq!(read(second).await, b"abcdef", "the copy, then the rest");
        assert_eq!(read(replay.attempt(3)).await, b"abcdef");
        assert!(!replay.overflowed());
    }

    #[tokio::test]
    async fn past_the_limit_the_copy_is_dropped_and_the_call_committed() {
        let replay = Replay::new(body(&[b"abc", b"def"]), 4).await;
        assert_eq!(
            read(replay.attempt(1)).await,
            b"abcdef",
            "the attempt gets it all"
        );
        assert!(replay.overflowed());
    }

    #[tokio::test]
    async fn a_whole_body_is_sent_by_every_attempt_with_its_end() {
        let replay = Replay::new(body(&[b"abc"]), 16).await;
        assert!(
            matches!(replay, Replay::Whole(Some(_))),
            "one frame, then the end"
        );
        let mut first = replay.attempt(1);
        assert!(!first.is_end_stream());
        assert!(first.frame().await.is_some());
        assert!(first.is_end_stream(), "the frame carries the end");
        assert_eq!(read(replay.attempt(2)).await, b"abc");
        assert!(!replay.overflowed());

        let empty = Replay::new(tonic::body::Body::empty(), 16).await;
        assert!(empty.attempt(1).is_end_stream());
    }

    #[tokio::test]
    async fn one_frame_past_the_limit_commits_the_call() {
        let replay = Replay::new(body(&[b"abcdef"]), 4).await;
        assert_eq!(read(replay.attempt(1)).await, b"abcdef");
        assert!(replay.overflowed());
    }

    #[tokio::test]
    async fn a_body_not_ready_yet_is_read_by_the_attempts() {
        let (sender, receiver) = tokio::sync::mpsc::channel::<FrameResult>(2);
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        let replay = Replay::new(
            tonic::body::Body::new(http_body_util::StreamBody::new(stream)),
            16,
        )
        .await;
        assert!(
            matches!(replay, Replay::Streaming(_)),
            "nothing to read yet"
        );
        for chunk in [b"ab", b"cd"] {
            sender
                .send(Ok(Frame::data(Bytes::from_static(chunk))))
                .await
                .unwrap_or_else(|_| panic!("the body is read"));
        }
        drop(sender);
        assert_eq!(read(replay.attempt(1)).await, b"abcd");
        assert_eq!(read(replay.attempt(2)).await, b"abcd");
    }
}
