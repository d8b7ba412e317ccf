//! The HTTP server's accept loop: how long a client may take, and how many
//! may be connected at once.
//!
//! Why not `axum::serve`: it has no header, request or idle timeout and no
//! connection cap, so a client that opens connections and sends half a
//! header holds a descriptor each for ever, and the embedded broker and
//! SQLite need descriptors from the same table. This loop serves the same
//! router with hyper (axum's own server, already in the tree) and adds:
//!
//! - a header-read timeout (hyper's): the request's headers must arrive
//!   within `header_timeout` of the connection waiting for them — which
//!   also closes a keep-alive connection idle that long;
//! - a request timeout: a request (its body included) not answered within
//!   `request_timeout` is answered 408 `REQUEST_TIMEOUT` and its connection
//!   closed;
//! - an idle timeout: a connection with no request in flight for
//!   `idle_timeout` is closed;
//! - a connection cap: at most `max_connections` at once; over it a new
//!   connection waits up to `over_cap_wait` for one to close, then is closed.
//!   Connections beyond the one waiting stay in the kernel's backlog, not in
//!   this process's descriptor table.
//!
//! The listener itself ([`bind`]) queues up to [`LISTEN_BACKLOG`] connections
//! for the accept loop, not the 128 that Rust and mio ask of the kernel.
//!
//! Each request carries its client's address (axum's `ConnectInfo`), for
//! limits kept per address (failed dashboard sign-ins).
//!
//! On shutdown it stops accepting, asks every connection to finish its
//! request and close, and returns when all have.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ordermq_api::error::ApiError;
use ordermq_domain::ErrorCode;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// How long clients may take and how many may be connected.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A request's headers must arrive within this of the connection
    /// waiting for them.
    pub header_timeout: Duration,
    /// A request (body included) must be answered within this.
    pub request_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
    /// Most connections at once.
    pub max_connections: usize,
    /// How long a connection over the cap waits for a slot before it is closed.
    pub over_cap_wait: Duration,
}

/// How long a connection over the cap waits for a slot.
pub const OVER_CAP_WAIT: Duration = Duration::from_secs(1);

/// Connections the kernel holds for the accept loop (the `listen` backlog;
/// Linux caps it at `net.core.somaxconn`, 4096 by default). Rust's and mio's
/// 128 is the queue a burst of new connections meets while the loop is
/// busy — a flash sale's first second, a load balancer opening its pool —
/// and a handshake beyond it is dropped, its client trying again a second
/// later (then three): a second added to an answer that takes milliseconds.
pub const LISTEN_BACKLOG: u32 = 4096;

/// An HTTP listener on `addr` with [`LISTEN_BACKLOG`] (port 0: the OS picks one).
///
/// # Errors
/// The address cannot be bound (in use, not this host's, not permitted).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std and mio do: a restart may bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl HttpLimits {
    /// The limits `config` asks for.
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            header_timeout: config.http_header_timeout,
            request_timeout: config.http_request_timeout,
            idle_timeout: config.http_idle_timeout,
            max_connections: config.http_max_connections,
            over_cap_wait: OVER_CAP_WAIT,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes,
/// then until every connection has finished.
///
/// # Errors
///
/// None today: a failed accept (out of descriptors, a connection reset
/// before it was accepted) is logged and the loop goes on.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    // `acquire_many` below counts in u32.
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: give the table a moment to drain.
                    tracing::warn!(error = %e, "could not accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = tokio::select! {
            slot = tokio::time::timeout(limits.over_cap_wait, Arc::clone(&slots).acquire_owned()) => slot,
            () = &mut shutdown => break,
        };
        match slot {
            Ok(Ok(slot)) => {
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    app.clone(),
                    limits,
                    stop.clone(),
                    slot,
                ));
            }
            _ => {
                tracing::warn!(
                    %peer,
                    max_connections = max,
                    "HTTP connections at the cap for {:?}: closing a new one",
                    limits.over_cap_wait
                );
                drop(stream);
            }
        }
    }
    drop(listener);
    stop.cancel();
    // Every connection holds a slot until it ends.
    let _all = slots.acquire_many(max as u32).await;
    Ok(())
}

/// When a connection last finished a request, and how many it has in flight.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    fn last(&self) -> Instant {
        *self.last.lock().expect("activity lock")
    }

    fn is_idle_for(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && self.last().elapsed() >= idle
    }
}

/// A request in flight on a connection; counts as activity when it ends.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock().expect("activity lock") = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The answer to a request that took longer than `request_timeout`.
fn request_timed_out(timeout: Duration) -> Response {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        ErrorCode::RequestTimeout,
        format!(
            "the request was not completed within {} ms; send it again",
            timeout.as_millis()
        ),
    )
    .into_response();
    // Its body may not have been read: the connection cannot carry another.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Serves one connection until it closes, times out or is asked to stop.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: HttpLimits,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let (app, busy) = (app.clone(), Busy::begin(&activity));
            request.extensions_mut().insert(ConnectInfo(peer));
            async move {
                let answered = tokio::time::timeout(
                    limits.request_timeout,
                    app.oneshot(request.map(axum::body::Body::new)),
                )
                .await;
                let response = match answered {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => request_timed_out(limits.request_timeout),
                };
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let idle_at = activity.last() + limits.idle_timeout;
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "HTTP connection ended");
                }
                return;
            }
            () = stop.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(idle_at), if !closing => {
                if activity.is_idle_for(limits.idle_timeout) {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of connections the accept loop has not taken yet waits in
    /// the kernel's queue: with the default backlog of 128 the connections
    /// past ~129 here got no handshake within the half second.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_burst_of_connections_waits_for_the_accept_loop() {
        let listener = bind("127.0.0.1:0".parse().expect("an address")).expect("bound");
        let addr = listener.local_addr().expect("its address");
        // Nothing accepts: every handshake must complete in the backlog.
        let burst = 600;
        let mut connecting = tokio::task::JoinSet::new();
        for _ in 0..burst {
            connecting.spawn(tokio::time::timeout(
                Duration::from_millis(500),
                TcpStream::connect(addr),
            ));
        }
        let mut open = Vec::new();
        while let Some(connected) = connecting.join_next().await {
            if let Ok(Ok(Ok(stream))) = connected {
                open.push(stream);
            }
        }
        assert_eq!(
            open.len(),
            burst,
            "connections handshaken without an accept"
        );
        drop(listener);
    }
}
