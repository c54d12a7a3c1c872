//! The calls open through a server layer, so the server's shutdown can cut the ones its drain
//! timeout leaves and know when all of them are recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Shared by a server layer's calls: how many are open, and whether the server cut them.
#[derive(Debug, Default)]
pub(super) struct OpenCalls {
    open: AtomicUsize,
    cut: AtomicBool,
    none_open: tokio::sync::Notify,
}

impl OpenCalls {
    pub(super) fn opened(&self) {
        self.open.fetch_add(1, Ordering::SeqCst);
    }

    /// A call is recorded (span ended, metrics recorded).
    pub(super) fn recorded(&self) {
        // Waiters exist only once the calls are cut: no lock on the way otherwise.
        if self.open.fetch_sub(1, Ordering::SeqCst) == 1 && self.cut.load(Ordering::SeqCst) {
            self.none_open.notify_waiters();
        }
    }

    /// Whether a call that ends without its status was cut by the server, not by its peer.
    pub(super) fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }
}

/// A handle on the calls open through one [`super::GrpcServerLayer`], for the server's shutdown
/// ([`super::GrpcServerLayer::calls`]).
#[derive(Clone, Debug)]
pub struct ServerCalls(pub(super) Arc<OpenCalls>);

impl ServerCalls {
    /// How many calls are open (not yet recorded).
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::SeqCst)
    }

    /// From now on, a call that ends before its status is known ends because the server cut it
    /// (its connection closed after the drain timeout): it is recorded as UNAVAILABLE, with
    /// `error.type` and an ERROR status, not as a CANCELLED call its client gave up.
    pub fn cut(&self) {
        self.0.cut.store(true, Ordering::SeqCst);
    }

    /// Completes once no call is open: each one's span has ended (into the span processor, ahead
    /// of the exporters' shutdown) and its metrics are recorded. Call [`Self::cut`] first.
    pub async fn all_recorded(&self) {
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
