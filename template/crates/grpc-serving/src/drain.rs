//! The end of a shutdown: what the drain timeout leaves open is cut, and recorded before `run`
//! returns, so no call outlives the telemetry pipeline that records it. The server's layers
//! count the open calls ([`OpenCalls`], outside the telemetry layer) and tell the telemetry
//! layer how the calls they cut are recorded ([`Unfinished`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use telemetry::grpc::Unfinished;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::{Connected, TcpConnectInfo};

pub use crate::calls::OpenCalls;

/// How long the calls cut at the drain timeout have to record themselves: they end as soon as
/// their connection task sees the connection closed.
const CUT_WAIT: Duration = Duration::from_secs(2);

/// The server's open connections, each kept as a second handle on its socket so the drain
/// timeout can close it under the connection task that serves it.
#[derive(Clone, Debug, Default)]
pub struct Connections {
    open: Arc<Mutex<HashMap<u64, std::net::TcpStream>>>,
    next: Arc<AtomicU64>,
}

impl Connections {
    /// The connections `listener` accepts, tracked (serve them with
    /// `serve_with_incoming_shutdown`).
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<Connection>> + use<> {
        let connections = self.clone();
        tokio_stream::wrappers::TcpListenerStream::new(listener)
            .map(move |accepted| connections.track(accepted?))
    }

    fn track(&self, stream: TcpStream) -> io::Result<Connection> {
        let stream = stream.into_std()?;
        let handle = stream.try_clone()?;
        let stream = TcpStream::from_std(stream)?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, handle);
        Ok(Connection {
            stream,
            id,
            connections: self.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, std::net::TcpStream>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes every open connection: the calls on them end (their handlers are dropped).
    fn close_all(&self) {
        for handle in self.lock().values() {
            // A connection that is closing already is fine as it is.
            let _ = handle.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// An accepted connection; it leaves [`Connections`] when the server drops it.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    id: u64,
    connections: Connections,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What a call cut at the drain timeout is recorded as, with UNAVAILABLE: the code gRPC gives a
/// server shutting down, a server failure (`error.type`, an ERROR span status), not a CANCELLED
/// call its client gave up.
const CUT: &str = "cut at shutdown: the server's drain timeout passed first";

/// Runs `serve` (a server on [`Connections::incoming`] with a graceful shutdown) to its end.
/// Once `draining` completes (the graceful shutdown began), it has `drain_timeout` to finish;
/// then the calls still open (`calls`) are cut: recorded as UNAVAILABLE by the telemetry layer
/// whose `unfinished` this is, and their connections closed; and this returns once they are
/// recorded.
pub async fn drain<E>(
    serve: impl Future<Output = Result<(), E>>,
    draining: impl Future<Output = bool>,
    drain_timeout: Duration,
    calls: &OpenCalls,
    unfinished: &Unfinished,
    connections: &Connections,
) -> Result<(), E> {
    let mut serve = std::pin::pin!(serve);
    let deadline = async {
        if draining.await {
            tokio::time::sleep(drain_timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = &mut serve => return result,
        () = deadline => {}
    }
    tracing::warn!(
        "Drain timeout of {:?} passed; cutting the {} calls still open",
        drain_timeout,
        calls.open()
    );
    // From here on a call that ends without its status ends because the connection under it
    // was closed.
    unfinished.record_as(tonic::Code::Unavailable, CUT);
    connections.close_all();
    let recorded = tokio::time::timeout(CUT_WAIT, async {
        // The server ends once its connections are closed; the calls' tasks record them.
        let _ = serve.await;
        calls.all_ended().await;
    })
    .await;
    if recorded.is_err() {
        tracing::warn!(
            "{} cut calls were still not recorded after {CUT_WAIT:?}",
            calls.open()
        );
    }
    Ok(())
}
