//! What the embedded broker is given (its directory, ports, options and
//! place in a cluster) and how full its disk may get: plain data, compiled
//! in every build, so configuration and tools need not know whether this
//! build embeds the broker (the `embedded-broker` feature, on by default).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// When the embedded broker answers `SEND_OK`: after the message is on disk
/// (`sync`, the default) or once it is in the page cache (`async`).
///
/// The relay marks an outbox row sent on `SEND_OK` and never looks at it
/// again, so under `async` a power loss (not a process crash: the page cache
/// survives that) can lose events ordermq counts as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BrokerFlush {
    /// RocketMQ's `SYNC_FLUSH`: each send waits for the commit log's group
    /// commit, an `msync` covering every message appended meanwhile; a flush
    /// not done within the store's `syncFlushTimeout` (5 s) is answered
    /// `FLUSH_DISK_TIMEOUT`, which the relay treats as a failed send.
    #[default]
    Sync,
    /// RocketMQ's `ASYNC_FLUSH`: answered once appended; a background task
    /// flushes every 500 ms, and only once 4 pages (16 KiB) are dirty, with a
    /// full flush at least every 10 s: at low traffic a message can sit in
    /// the page cache for up to ~10 s.
    Async,
}

impl BrokerFlush {
    /// RocketMQ's name of the mode (`flushDiskType`).
    pub fn rocketmq_name(self) -> &'static str {
        match self {
            Self::Sync => "SYNC_FLUSH",
            Self::Async => "ASYNC_FLUSH",
        }
    }
}

impl FromStr for BrokerFlush {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "sync" => Ok(Self::Sync),
            "async" => Ok(Self::Async),
            other => Err(format!("{other:?} is neither sync nor async")),
        }
    }
}

impl fmt::Display for BrokerFlush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sync => "sync",
            Self::Async => "async",
        })
    }
}

/// A broker's part in a master/slave pair (RocketMQ's `brokerRole`).
///
/// A master takes sends; a slave (same broker name, a non-zero id) copies
/// its master's commit log over the HA port and serves reads. A
/// `SYNC_MASTER` answers a send only once a slave holds the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BrokerRole {
    /// `ASYNC_MASTER`: answers before any slave has the message.
    #[default]
    AsyncMaster,
    /// `SYNC_MASTER`: answers once a slave has the message too.
    SyncMaster,
    /// `SLAVE`: a replica of the master with the same broker name.
    Slave,
}

impl BrokerRole {
    /// RocketMQ's name of the role (`brokerRole`).
    pub fn rocketmq_name(self) -> &'static str {
        match self {
            Self::AsyncMaster => "ASYNC_MASTER",
            Self::SyncMaster => "SYNC_MASTER",
            Self::Slave => "SLAVE",
        }
    }

    /// Whether the role takes sends (broker id 0).
    pub fn is_master(self) -> bool {
        !matches!(self, Self::Slave)
    }
}

impl FromStr for BrokerRole {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "async_master" => Ok(Self::AsyncMaster),
            "sync_master" => Ok(Self::SyncMaster),
            "slave" => Ok(Self::Slave),
            other => Err(format!(
                "{other:?} is not async_master, sync_master or slave"
            )),
        }
    }
}

impl fmt::Display for BrokerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AsyncMaster => "async_master",
            Self::SyncMaster => "sync_master",
            Self::Slave => "slave",
        })
    }
}

/// Where a broker stands in a cluster: its names, id and role, the address
/// it binds and advertises, and the NameServers it registers with.
///
/// The default is the embedded single broker: cluster `OrdermqEmbedded`,
/// broker `ordermq-embedded`, id 0, an async master on loopback with its
/// own NameServer in the same process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    /// RocketMQ's `brokerClusterName`: the cluster the broker joins.
    pub cluster: String,
    /// RocketMQ's `brokerName`: a master and its slaves share it; topics'
    /// queues are per broker name.
    pub name: String,
    /// RocketMQ's `brokerId`: 0 for a master, 1.. for its slaves.
    pub id: u64,
    /// Master (sync or async) or slave; must agree with `id`.
    pub role: BrokerRole,
    /// The address the broker binds and advertises (`brokerIP1`): what
    /// clients and the NameServers are told to connect to.
    pub ip: IpAddr,
    /// The NameServers (`host:port;host:port`) the broker registers with.
    /// `None`: start a NameServer in the same process (the embedded default).
    pub namesrv_addr: Option<String>,
}

impl Default for ClusterMember {
    fn default() -> Self {
        Self {
            cluster: "OrdermqEmbedded".into(),
            name: "ordermq-embedded".into(),
            id: 0,
            role: BrokerRole::AsyncMaster,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            namesrv_addr: None,
        }
    }
}

/// Where the embedded broker keeps its files and which ports it binds.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Root of everything the NameServer and broker write.
    pub store_dir: PathBuf,
    /// NameServer port; 0 picks a free one.
    pub namesrv_port: u16,
    /// Broker port; 0 picks a free one. The broker also binds `port - 2`
    /// (its "fast" port) and `port + 1` (HA).
    pub broker_port: u16,
    /// RocketMQ's `messageDelayLevel`: 18 delays such as `1s 5s 10s 30s 1m …`.
    /// The n-th redelivery of a failed message waits level `3 + n`. `None`
    /// keeps RocketMQ's default (10 s, 30 s, 1 m, 2 m, …).
    pub delay_levels: Option<String>,
    /// Accept timer messages ([`DelayedDelivery::Timer`](crate::DelayedDelivery)).
    /// The broker then keeps a seven-day timer wheel in memory (~37 MiB);
    /// without it, a timer message is refused and delays use the levels.
    pub timer_wheel: bool,
    /// Index every message by key and unique id (RocketMQ's query by key).
    /// The index file is written at every message and stays mapped, so it
    /// costs CPU and resident memory as the broker fills.
    pub message_index: bool,
    /// When a send is answered: after an fsync of the commit log, or before.
    pub flush: BrokerFlush,
    /// Its cluster, names, role and NameServers.
    pub member: ClusterMember,
}

/// The broker refuses every message once the file system holding its store
/// is more than this full (RocketMQ's `diskSpaceWarningLevelRatio`, 90 %,
/// counted as `1 − available / total`, so space reserved for root counts as used).
pub const BROKER_DISK_FULL_PERCENT: f64 = 90.0;

/// How full the file system holding `path` is, in percent, the way the
/// broker counts it; `None` if it cannot be read.
pub fn disk_used_percent(path: &Path) -> Option<f64> {
    let total = fs2::total_space(path).ok()?;
    let available = fs2::available_space(path).ok()?;
    (total > 0 && available <= total).then(|| 100.0 * (1.0 - available as f64 / total as f64))
}
