//! The fan-out's own runtime, at a lower CPU priority than the payment path.
//!
//! Everything that can wait — the embedded broker, the RocketMQ clients, the
//! outbox relay, the consumer groups and their writers, the downstream
//! systems' SQLite lanes — runs here, on its own worker threads with a
//! higher nice value. The HTTP API, the order writer and the order database's
//! lane stay on the main runtime at normal priority.
//!
//! Why: on one small machine the two compete for the same cores. Sharing one
//! Tokio runtime, every relay round put a burst of broker reads, pulls,
//! decodes and listener hand-offs into the same run queues as the payment
//! callbacks, which then waited behind them; a payment's latency grew with
//! the fan-out's load, not with its own. With separate threads the kernel
//! runs a waking payment thread ahead of fan-out work, and the fan-out gets
//! the rest: under overload it falls behind (the broker buffers, as the
//! design intends), the payments do not. Measured in `docs/benchmarks.md`.

use std::future::Future;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinError;

/// A multi-threaded runtime whose threads (workers and blocking pool alike)
/// run at `nice` above the process's priority. Dropping it stops its tasks
/// without waiting for them: stop what runs on it first.
#[derive(Debug)]
pub struct Background {
    runtime: Option<Runtime>,
}

impl Background {
    /// Starts `threads` worker threads named `name`, each lowering its own
    /// priority by `nice` (0: same priority as the rest of the process).
    pub fn start(name: &str, threads: usize, nice: i32) -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .on_thread_start(move || lower_current_thread_priority(nice))
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    pub fn handle(&self) -> &Handle {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .handle()
    }

    /// Runs `future` on this runtime and waits for it from any runtime:
    /// whatever it starts (tasks, timers, RocketMQ's blocking lanes) belongs
    /// to this runtime.
    pub async fn run<F>(&self, future: F) -> Result<F::Output, JoinError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle().spawn(future).await
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime blocks until its threads stop, which is not
            // allowed inside another runtime; this variant does not wait.
            runtime.shutdown_background();
        }
    }
}

/// Raises the calling thread's nice value by `nice` (Linux: per thread).
/// A failure only costs the priority, so it is logged, not returned.
pub fn lower_current_thread_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(thread)).unwrap_or(0);
        if let Err(e) = rustix::process::setpriority_process(Some(thread), current + nice) {
            tracing::debug!(error = %e, "could not lower a fan-out thread's priority");
        }
    }
}
