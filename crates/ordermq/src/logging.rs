//! The log filter every ordermq process starts from.
//!
//! One rule, shared by the server, `ordermq broker` and the benchmark (which
//! runs a whole ordermq in-process): the embedded NameServer's refused
//! self-connection is silenced under the default filter, and a user's own
//! filter (`log` / `ORDERMQ_LOG`) is used exactly as given.

use tracing_subscriber::EnvFilter;

use crate::Config;

/// Silences the embedded NameServer's refused self-connection. rocketmq-namesrv
/// 1.0 gives its own internal client the address of the machine's network
/// interface while ordermq binds it to loopback, so that client's connection
/// is refused at start and every 30 s after, and the transport logs each
/// refusal as an ERROR. The broker and the clients use 127.0.0.1 and are
/// unaffected. Added to default filters only: a user's own filter is used as given.
pub const QUIET_NAMESRV_SELF_CONNECT: &str =
    "rocketmq_transport::clients::rocketmq_tokio_client::connect_flight=off";

/// `config.log` as a filter; with the embedded broker and the default filter,
/// also [`QUIET_NAMESRV_SELF_CONNECT`].
pub fn log_filter(config: &Config) -> EnvFilter {
    let mut directives = config.log.clone();
    if config.namesrv_addr.is_none() && config.log == Config::default().log {
        directives = format!("{directives},{QUIET_NAMESRV_SELF_CONNECT}");
    }
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}
