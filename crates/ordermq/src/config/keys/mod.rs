//! The one table of configuration keys. Each entry is the key's field and
//! type, its form (how it is parsed), its TOML name, the earlier flat name
//! still accepted, its default and its documentation. The struct, its
//! defaults, loading, `ordermq config` and the README's table all come from
//! it (see `table.rs`): adding a key is adding one entry.
//!
//! The table is written in three sections, one file each, in the order
//! `ordermq config` lists them: `deployment` (where ordermq runs and who
//! may talk to it), `tuning` (how it moves work) and `edges` (the third
//! parties, client limits, logging and the fakes' knobs). Each file defines
//! a macro that appends its entries to those it is handed and passes them
//! on; the last hands them all to `config_table!`, so the struct and `KEYS`
//! are still generated once, from one list. The names the entries use are
//! imported here, where the table expands.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::secret::{ApiTokens, DatabaseUrl, Secret, SigningKeys};
use super::table::{Form, Key, Raw, check_range, config_table, optional};
use super::types::{
    Addr, BrokerName, DeliveryMode, Dir, FeedMode, Flag, Flush, GatewayMode, HttpUrl, Int, Ip,
    LogFilter, Millis, NameServers, Optional, Probability, ProcessRole, RetryLevels, Role,
    RoleOfProcess, Span,
};
use ordermq_messaging::embedded_options::{BrokerFlush, BrokerRole};

/// The default log filter. The RocketMQ crates log first-run chatter at WARN
/// (missing state files, dev security profile, empty retry routes): show
/// their errors only. Every ordermq crate logs at INFO.
const DEFAULT_LOG: &str = "warn,rocketmq_broker=error,rocketmq_store=error,\
    rocketmq_namesrv=error,rocketmq_runtime=error,rocketmq_transport=error,\
    rocketmq_client_rust=error,ordermq=info,ordermq_store=info,\
    ordermq_messaging=info,ordermq_api=info,ordermq_service=info,ordermq_gateways=info";

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[macro_use]
mod deployment;
#[macro_use]
mod tuning;
#[macro_use]
mod edges;

deployment_keys! { tuning_keys, edges_keys, config_table => }
