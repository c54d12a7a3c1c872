//! The exporters' network I/O runs on a runtime of its own, on one thread, instead of on the
//! service's runtime: a saturated service's request tasks do not delay its export batches (the SDK
//! drops spans when its queue fills while a batch waits), telemetry starts without a runtime, and
//! shutting it down cannot deadlock on the service's workers.

use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The `telemetry-io` thread and its runtime; dropping it stops both, after the providers have
/// been shut down.
#[derive(Debug)]
pub(crate) struct IoThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl IoThread {
    pub(crate) fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        // The runtime lives and is dropped on its own thread, never inside another runtime.
        let thread = std::thread::Builder::new()
            .name("telemetry-io".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Enter it while building the exporters: tonic spawns their connection tasks there.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
