//! A stand-in for ordermq's third parties — the SMS gateway, the logistics
//! system and the payment gateway's refunds — speaking the HTTP protocol of
//! `docs/gateways.md`.
//!
//! Why it exists: ordermq's HTTP adapters must be tested against something
//! that behaves like a provider across a real socket — signatures checked,
//! idempotency keys honoured across a crash, answers slow, lost or never
//! coming — and a team putting a real provider behind the protocol needs a
//! reference that answers exactly as documented. The end-to-end tests and
//! the fault suite run ordermq against it; in a test it runs in-process
//! ([`spawn`]), otherwise as the `ordermq-fake-provider` binary.
//!
//! Every call is checked (signature and freshness: 401), may wait (latency,
//! jitter, a hang), may fail (503 before any effect, or after it: a lost
//! answer), and is written to a call log on disk together with the
//! idempotency keys, so the same key gets the same answer after a `kill -9`
//! and a restart.
//!
//! # Layout
//! - [`options`]: what the provider is told: keys, data directory, [`Knobs`].
//! - [`ledger`]: the call log and idempotency keys, appended to
//!   `<data dir>/calls.jsonl` and read back at start.
//! - `server`: the routes, the checks and each provider's effect.

pub mod ledger;
pub mod options;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use ledger::{CallOutcome, CallRecord};
pub use options::{Knobs, Options, parse_keys};

use server::State;

/// Why the provider could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The data directory or its call log could not be opened.
    #[error("cannot open the call log under {dir}")]
    Ledger {
        /// The data directory.
        dir: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving failed")]
    Serve(#[source] std::io::Error),
    /// The server task panicked.
    #[error("the server task panicked")]
    Panicked(#[source] tokio::task::JoinError),
}

/// A running provider: its call log, its knobs, and a way to stop it.
#[derive(Debug)]
pub struct Handle {
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Starts a provider on `options.listen` (port 0: any free port) and returns
/// the address it listens on.
///
/// # Errors
///
/// [`ProviderError::Bind`] if the address cannot be bound,
/// [`ProviderError::Ledger`] if the data directory or its call log cannot be
/// opened or read.
pub async fn spawn(options: Options) -> Result<(SocketAddr, Handle), ProviderError> {
    let ledger =
        ledger::Ledger::open(&options.data_dir).map_err(|source| ProviderError::Ledger {
            dir: options.data_dir.clone(),
            source,
        })?;
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| ProviderError::Bind {
                addr: options.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ProviderError::Bind {
            addr: options.listen,
            source,
        })?;
    let state = Arc::new(State::new(&options, ledger));
    let (stop, stopped) = oneshot::channel::<()>();
    let app = server::router(state.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok((
        addr,
        Handle {
            state,
            stop: Some(stop),
            task,
        },
    ))
}

impl Handle {
    /// Every call received so far (those before a restart too), oldest first.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.state.calls()
    }

    /// The calls to `endpoint` (e.g. `/sms/send`) that had an effect: one per
    /// distinct idempotency key, whatever the answer's fate.
    pub fn effects(&self, endpoint: &str) -> Vec<CallRecord> {
        self.calls()
            .into_iter()
            .filter(|c| c.endpoint == endpoint && c.outcome == CallOutcome::Effect)
            .collect()
    }

    /// Changes latency, failure and hang behaviour from the next call on.
    pub fn set_knobs(&self, knobs: Knobs) {
        self.state.set_knobs(knobs);
    }

    /// The next `times` calls (after their signature is checked) are
    /// answered `status` with no effect: 503 or 429 for an outage, any 4xx
    /// for a refusal.
    pub fn answer_next(&self, status: u16, times: usize) {
        self.state.force(server::Forced::Status(status), times);
    }

    /// The next `times` calls have their effect, and then their answer is
    /// lost: the client sees a 503 (a provider that did the work but whose
    /// answer never arrived). A retry with the same key gets the answer.
    pub fn lose_next_answers(&self, times: usize) {
        self.state.force(server::Forced::LoseAnswer, times);
    }

    /// Stops serving (calls in flight finish first).
    ///
    /// # Errors
    ///
    /// [`ProviderError::Serve`] if serving had failed,
    /// [`ProviderError::Panicked`] if the server task panicked.
    pub async fn stop(mut self) -> Result<(), ProviderError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(served) => served.map_err(ProviderError::Serve),
            Err(e) => Err(ProviderError::Panicked(e)),
        }
    }
}
