//! An embedded RocketMQ NameServer + broker (rocketmq-rust), on loopback by
//! default, and the same pieces as cluster members of their own.
//!
//! This is what makes `cargo run` a complete system with no install step. Every
//! listener binds 127.0.0.1 unless told otherwise (the broker otherwise
//! advertises the LAN address) and every file goes under one directory (the
//! crates otherwise write under `$HOME`).
//!
//! The same code runs a cluster's processes: [`EmbeddedNameServer`] alone
//! (`ordermq namesrv`), and a broker that registers with NameServers
//! elsewhere under its own cluster, broker name, id and role
//! ([`ClusterMember`](crate::ClusterMember); `ordermq broker`), so two NameServers and two brokers
//! are four processes of the one binary. Production may run Apache
//! RocketMQ's instead: ordermq only needs `namesrv_addr`.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rocketmq_broker::config::broker_config::BrokerConfig;
use rocketmq_broker::config::validated::ValidatedBrokerConfig;
use rocketmq_broker::{BrokerBootstrap, Builder as BrokerBuilder, Running};
use rocketmq_namesrv::NamesrvConfig;
use rocketmq_namesrv::bootstrap::Builder as NamesrvBuilder;
use rocketmq_observability::{TelemetryHandle, TelemetryRuntimeGuard};
use rocketmq_runtime::RuntimeContext;
use rocketmq_store::{FlushDiskType, MessageStoreConfig};
use rocketmq_transport::api::ServerConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::MqError;
use crate::embedded_options::{
    BROKER_DISK_FULL_PERCENT, BrokerFlush, BrokerRole, EmbeddedOptions, disk_used_percent,
};

/// A running embedded NameServer + broker. Call [`EmbeddedBroker::shutdown`] to stop it.
pub struct EmbeddedBroker {
    broker: Option<BrokerBootstrap<Running>>,
    namesrv_stop: Option<oneshot::Sender<()>>,
    namesrv_task: Option<JoinHandle<()>>,
    namesrv_addr: String,
    broker_addr: String,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("namesrv_addr", &self.namesrv_addr)
            .field("broker_addr", &self.broker_addr)
            .finish()
    }
}

/// How long the embedded broker lets a write hold the commit log before it
/// answers sends SYSTEM_BUSY (see where it is set).
const PAGE_CACHE_BUSY_MS: u64 = 3_000;
/// How long a send may wait in the embedded broker's queue before it is
/// answered SYSTEM_BUSY (see where it is set).
const SEND_QUEUE_WAIT_MS: u64 = 1_000;

fn port_free(port: u16) -> bool {
    port_free_on(IpAddr::from([127, 0, 0, 1]), port)
}

fn port_free_on(ip: IpAddr, port: u16) -> bool {
    TcpListener::bind((ip, port)).is_ok()
}

/// A free port `p` such that `p - 2` and `p + 1` are free too (the broker's three listeners).
fn free_broker_port() -> Result<u16, MqError> {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| MqError::Broker(format!("cannot probe for a free port: {e}")))?;
        let port = probe.port();
        if port > 1026 && port < u16::MAX && port_free(port - 2) && port_free(port + 1) {
            return Ok(port);
        }
    }
    Err(MqError::Broker(
        "no free port triple found on 127.0.0.1".into(),
    ))
}

fn free_port() -> Result<u16, MqError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| MqError::NameServer(format!("cannot probe for a free port: {e}")))
}

async fn wait_for_port(ip: IpAddr, port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect((ip, port)).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

fn absolute(path: &Path) -> Result<PathBuf, MqError> {
    std::fs::create_dir_all(path)
        .map_err(|e| MqError::Broker(format!("cannot create {}: {e}", path.display())))?;
    path.canonicalize()
        .map_err(|e| MqError::Broker(format!("cannot resolve {}: {e}", path.display())))
}

/// A broker that refuses messages looks like an outage from the outside
/// (`broker.operation.failed`, events piling up in the outbox): say why before it happens.
fn warn_if_disk_nearly_full(store_dir: &Path) {
    if let Some(used) = disk_used_percent(store_dir)
        && used >= BROKER_DISK_FULL_PERCENT - 5.0
    {
        tracing::warn!(
            dir = %store_dir.display(),
            used_percent = format_args!("{used:.1}"),
            "the disk holding the embedded broker's store is nearly full: above {BROKER_DISK_FULL_PERCENT} % \
             the broker refuses every message (events then wait in the outbox, payments go on); free space or move data_dir"
        );
    }
}

/// A broker that would not start, with the likeliest cause when the disk
/// under its store is nearly full (`used`, percent, as the broker counts
/// it): RocketMQ's own error says only `core.service.failed`.
fn start_failure(error: MqError, store_dir: &Path, used: Option<f64>) -> MqError {
    let Some(used) = used.filter(|&u| u >= BROKER_DISK_FULL_PERCENT - 5.0) else {
        return error;
    };
    let what = match error {
        MqError::Broker(what) => what,
        other => other.to_string(),
    };
    MqError::Broker(format!(
        "{what}; the disk holding its store ({}) is {used:.1} % used as the broker counts it \
         (space reserved for root counts as used), and above {BROKER_DISK_FULL_PERCENT} % it \
         refuses to work: free space or move data_dir",
        store_dir.display()
    ))
}

/// The directories the embedded broker writes: one root, absolute, with the
/// NameServer's and the broker store's directories under it.
#[derive(Debug)]
struct Dirs {
    root: PathBuf,
    namesrv: PathBuf,
    store: PathBuf,
}

impl Dirs {
    /// Creates them under `store_dir`.
    fn create(store_dir: &Path) -> Result<Self, MqError> {
        let root = absolute(store_dir)?;
        let namesrv = root.join("namesrv");
        let store = root.join("store");
        for dir in [&namesrv, &store] {
            std::fs::create_dir_all(dir)
                .map_err(|e| MqError::Broker(format!("cannot create {}: {e}", dir.display())))?;
        }
        Ok(Self {
            root,
            namesrv,
            store,
        })
    }
}

/// The NameServer's port (`None` when the broker registers with
/// NameServers elsewhere) and the broker's (free ones for those given as
/// 0), once every listener's port is known to be free.
fn ports(options: &EmbeddedOptions) -> Result<(Option<u16>, u16), MqError> {
    let ip = options.member.ip;
    let namesrv_port = match (&options.member.namesrv_addr, options.namesrv_port) {
        (Some(_), _) => None,
        (None, 0) => Some(free_port()?),
        (None, port) => Some(port),
    };
    let broker_port = match options.broker_port {
        0 => free_broker_port()?,
        port => port,
    };
    let mut listeners = vec![
        ("broker", broker_port),
        ("broker fast", broker_port.saturating_sub(2)),
        ("broker HA", broker_port.saturating_add(1)),
    ];
    listeners.extend(namesrv_port.map(|port| ("NameServer", port)));
    for (what, port) in listeners {
        if !port_free_on(ip, port) {
            return Err(MqError::Broker(format!(
                "the {what} port {} is in use; another ordermq or broker running? \
                 Set ORDERMQ_EMBEDDED_NAMESRV_PORT / ORDERMQ_EMBEDDED_BROKER_PORT, or ORDERMQ_NAMESRV_ADDR to use an existing cluster",
                SocketAddr::new(ip, port)
            )));
        }
    }
    Ok((namesrv_port, broker_port))
}

/// A NameServer running in a task until its stop signal.
#[derive(Debug)]
struct Namesrv {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Starts the NameServer on `listen` and waits until it listens (20 s at
/// most).
async fn start_namesrv(
    context: &RuntimeContext,
    dirs: &Dirs,
    listen: SocketAddr,
) -> Result<Namesrv, MqError> {
    let namesrv = NamesrvBuilder::new(context.service_context("namesrv"), TelemetryHandle::noop())
        .set_name_server_config(NamesrvConfig {
            rocketmq_home: dirs.root.to_string_lossy().into_owned(),
            kv_config_path: dirs
                .namesrv
                .join("kvConfig.json")
                .to_string_lossy()
                .into_owned(),
            config_store_path: dirs
                .namesrv
                .join("namesrv.properties")
                .to_string_lossy()
                .into_owned(),
            ..NamesrvConfig::default()
        })
        .set_server_config(ServerConfig {
            listen_port: u32::from(listen.port()),
            bind_address: listen.ip().to_string(),
            ..ServerConfig::default()
        })
        .build();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        if let Err(e) = namesrv
            .boot_with_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
        {
            tracing::error!(error = %e, "embedded NameServer stopped with an error");
        }
    });
    if !wait_for_port(listen.ip(), listen.port(), Duration::from_secs(20)).await {
        task.abort();
        return Err(MqError::NameServer(format!(
            "did not listen on {listen} within 20 s"
        )));
    }
    Ok(Namesrv { stop, task })
}

/// The broker's configuration: bound to and advertising `member.ip`,
/// registered with the NameServers at `namesrv_addr` under the member's
/// cluster, name, id and role, its store under `dirs.store`.
fn broker_config(
    options: EmbeddedOptions,
    dirs: &Dirs,
    broker_port: u16,
    namesrv_addr: &str,
) -> Result<ValidatedBrokerConfig, MqError> {
    let store_root = dirs.store.to_string_lossy().into_owned();
    let member = options.member.clone();
    let ip = member.ip.to_string();
    let mut broker = BrokerConfig {
        broker_ip1: ip.clone().into(),
        broker_ip2: Some(ip.clone().into()),
        listen_port: u32::from(broker_port),
        store_path_root_dir: store_root.clone().into(),
        namesrv_addr: Some(namesrv_addr.to_owned().into()),
        auto_create_topic_enable: true,
        auto_create_subscription_group: true,
        auth_config_path: dirs.root.join("auth").to_string_lossy().into_owned().into(),
        broker_role: rocketmq_role(member.role),
        // A request waits this long in the send queue before the broker
        // answers SYSTEM_BUSY (RocketMQ's default: 200 ms): below the
        // clients' 3 s send timeout, long enough for a loaded machine's
        // fsync; see `PAGE_CACHE_BUSY_MS`.
        wait_time_mills_in_send_queue: SEND_QUEUE_WAIT_MS,
        ..BrokerConfig::default()
    };
    broker.broker_server_config.bind_address = ip;
    broker.broker_identity.broker_name = member.name.as_str().into();
    broker.broker_identity.broker_cluster_name = member.cluster.as_str().into();
    broker.broker_identity.broker_id = member.id;
    let store = store_config(options, store_root, broker_port);
    ValidatedBrokerConfig::try_from_parts(broker, store)
        .map_err(|e| MqError::Broker(format!("invalid configuration: {e}")))
}

fn rocketmq_role(role: BrokerRole) -> rocketmq_model::common::broker::broker_role::BrokerRole {
    use rocketmq_model::common::broker::broker_role::BrokerRole as Rocketmq;
    match role {
        BrokerRole::AsyncMaster => Rocketmq::AsyncMaster,
        BrokerRole::SyncMaster => Rocketmq::SyncMaster,
        BrokerRole::Slave => Rocketmq::Slave,
    }
}

/// The broker store's configuration: flushed as `options.flush` says, sized
/// for a developer's data directory rather than a dedicated host.
fn store_config(
    options: EmbeddedOptions,
    store_root: String,
    broker_port: u16,
) -> MessageStoreConfig {
    let store = MessageStoreConfig {
        store_path_root_dir: store_root.into(),
        // SYNC_FLUSH: a send is answered once the group-commit service has
        // msync()ed the commit log up to it (one msync for every message
        // appended meanwhile); not within `sync_flush_timeout` (5 s), it is
        // answered FLUSH_DISK_TIMEOUT and the relay sends it again.
        flush_disk_type: match options.flush {
            BrokerFlush::Sync => FlushDiskType::SyncFlush,
            BrokerFlush::Async => FlushDiskType::AsyncFlush,
        },
        ha_listen_port: usize::from(broker_port) + 1,
        ha_listen_address: options.member.ip,
        broker_role: rocketmq_role(options.member.role),
        // rocketmq-rust (as Apache RocketMQ 5) makes a SYNC_MASTER wait for
        // `inSyncReplicas` copies, 1 (itself) by default: without 2 (of
        // `totalReplicas` 2: itself and one slave), a "sync" master
        // answers before any slave has the message.
        in_sync_replicas: match options.member.role {
            BrokerRole::SyncMaster => 2,
            _ => 1,
        },
        total_replicas: match options.member.role {
            BrokerRole::SyncMaster => 2,
            _ => 1,
        },
        // The append worker otherwise arms a 50 µs timer per micro-batch,
        // which Tokio rounds up to 1 ms: ~1,000 appends/s at most.
        commit_log_micro_batch_max_wait_micros: 0,
        // Files are fallocate()d up front; the 1 GiB / 420 MB defaults are
        // sized for dedicated broker hosts, not a developer's data dir.
        mapped_file_size_commit_log: 128 * 1024 * 1024,
        max_hash_slot_num: 500_000,
        max_index_num: 2_000_000,
        // With `timer_wheel`, timer messages (unpaid orders' closes) fire
        // on wheel slots; 1 s slots (the default) made closes ~0.8 s late.
        // 100 ms slots cost ten wheel steps a second instead of one.
        timer_precision_ms: 100,
        timer_wheel_enable: options.timer_wheel,
        message_index_enable: options.message_index,
        // A pull returns at most 32 messages by default, so a consumer
        // group that falls behind catches up 32 at a time, one round
        // trip, decode and listener call each. Larger pulls let the
        // per-pull costs shrink as the backlog grows.
        max_transfer_count_on_message_in_memory: 256,
        max_transfer_bytes_on_message_in_memory: 1024 * 1024,
        // RocketMQ's default deletes commit-log files before their
        // retention (72 h) is up, read or not, once the disk is more than
        // 85 % full (counted as 1 − available / total, so a file system
        // with a large root reserve reaches it early): messages no group
        // has consumed would vanish without an error anywhere. Off, old
        // files still go when their retention is up, and a full disk makes
        // the broker refuse sends (at 90 %), which the outbox survives: the
        // relay sends them again once there is room.
        clean_file_forcibly_enable: false,
        // A write holding the commit log's lock longer than this (a slow
        // fsync on a loaded machine, with `sync` flush) makes the broker
        // answer every send SYSTEM_BUSY at once (RocketMQ's default: 1 s).
        // A refused *send-back* is what loses a message (the client's
        // fallback is dead-lettered by the 1.0.0 broker: docs/reliability.md,
        // defect 4), so the embedded broker waits longer before refusing.
        os_page_cache_busy_timeout_mills: PAGE_CACHE_BUSY_MS,
        ..MessageStoreConfig::default()
    };
    match options.delay_levels {
        Some(levels) => MessageStoreConfig {
            message_delay_level: levels,
            ..store
        },
        None => store,
    }
}

/// Initialises and starts the broker; returns once it reports ready (store
/// writable, listeners bound, registered with the NameServer).
async fn start_broker(
    context: &RuntimeContext,
    config: ValidatedBrokerConfig,
) -> Result<BrokerBootstrap<Running>, MqError> {
    BrokerBuilder::new(
        context.service_context("broker"),
        TelemetryRuntimeGuard::noop(),
    )
    .with_validated_config(config)
    .build()
    .initialize()
    .await
    .map_err(|e| MqError::Broker(format!("initialize: {e}")))?
    .start()
    .await
    .map_err(|e| MqError::Broker(format!("start: {e}")))
}

/// A NameServer alone (`ordermq namesrv`): brokers register with it,
/// clients ask it for routes. Keeps no state worth keeping: its routes are
/// what the brokers registered since it started.
pub struct EmbeddedNameServer {
    namesrv: Option<Namesrv>,
    addr: SocketAddr,
}

impl std::fmt::Debug for EmbeddedNameServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedNameServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl EmbeddedNameServer {
    /// Starts a NameServer listening on `listen` (port 0: a free one), its
    /// files under `dir`; returns once it accepts connections.
    pub async fn start(dir: &Path, listen: SocketAddr) -> Result<Self, MqError> {
        let dirs = Dirs::create(dir)?;
        let listen = match listen.port() {
            0 => SocketAddr::new(listen.ip(), free_port()?),
            _ => listen,
        };
        if !port_free_on(listen.ip(), listen.port()) {
            return Err(MqError::NameServer(format!("{listen} is in use")));
        }
        let context = RuntimeContext::try_from_current("ordermq-namesrv")
            .map_err(|e| MqError::Runtime(e.to_string()))?;
        let namesrv = start_namesrv(&context, &dirs, listen).await?;
        Ok(Self {
            namesrv: Some(namesrv),
            addr: listen,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it (10 s at most).
    pub async fn shutdown(mut self) {
        if let Some(Namesrv { stop, task }) = self.namesrv.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl EmbeddedBroker {
    /// Starts the NameServer, waits for it, then starts the broker registered
    /// with it; or, when `options.member` names NameServers, only the broker,
    /// registered with those. Returns once the broker reports ready (store
    /// writable, listeners bound, registered).
    pub async fn start(options: EmbeddedOptions) -> Result<Self, MqError> {
        let dirs = Dirs::create(&options.store_dir)?;
        warn_if_disk_nearly_full(&dirs.store);
        let flush = options.flush;
        let member = options.member.clone();
        let (namesrv_port, broker_port) = ports(&options)?;

        let context = RuntimeContext::try_from_current("ordermq-embedded-mq")
            .map_err(|e| MqError::Runtime(e.to_string()))?;

        let (namesrv, namesrv_addr) = match (namesrv_port, &member.namesrv_addr) {
            (Some(port), _) => {
                let listen = SocketAddr::new(member.ip, port);
                (
                    Some(start_namesrv(&context, &dirs, listen).await?),
                    listen.to_string(),
                )
            }
            (None, Some(list)) => (None, list.clone()),
            (None, None) => unreachable!("ports() picks a NameServer port without a list"),
        };

        let config = broker_config(options, &dirs, broker_port, &namesrv_addr)?;
        let running = match start_broker(&context, config).await {
            Ok(running) => running,
            Err(e) => {
                if let Some(namesrv) = namesrv {
                    let _ = namesrv.stop.send(());
                    let _ = namesrv.task.await;
                }
                let used = disk_used_percent(&dirs.store);
                return Err(start_failure(e, &dirs.store, used));
            }
        };
        let (namesrv_stop, namesrv_task) = match namesrv {
            Some(Namesrv { stop, task }) => (Some(stop), Some(task)),
            None => (None, None),
        };
        match flush {
            BrokerFlush::Sync => tracing::info!(
                flush = flush.rocketmq_name(),
                "embedded broker: a send is answered once its message is on disk"
            ),
            BrokerFlush::Async => tracing::warn!(
                flush = flush.rocketmq_name(),
                "embedded broker: a send is answered before its message is on disk; \
                 a power loss can lose events already marked sent (embedded_broker_flush = sync to wait)"
            ),
        }
        tracing::info!(
            cluster = %member.cluster,
            broker = %member.name,
            id = member.id,
            role = member.role.rocketmq_name(),
            namesrv = %namesrv_addr,
            "broker registered"
        );
        Ok(Self {
            broker: Some(running),
            namesrv_stop,
            namesrv_task,
            namesrv_addr,
            broker_addr: SocketAddr::new(member.ip, broker_port).to_string(),
        })
    }

    /// The NameServer list the broker registered with (its own one's
    /// `127.0.0.1:<port>` when it started one), as clients want it.
    pub fn namesrv_addr(&self) -> String {
        self.namesrv_addr.clone()
    }

    /// `<ip>:<port>` of the broker.
    pub fn broker_addr(&self) -> &str {
        &self.broker_addr
    }

    /// Stops the broker (it unregisters from the NameServer), then the NameServer.
    pub async fn shutdown(mut self) {
        if let Some(broker) = self.broker.take() {
            broker.shutdown().await;
        }
        if let Some(stop) = self.namesrv_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.namesrv_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterMember;

    fn options(flush: BrokerFlush) -> EmbeddedOptions {
        EmbeddedOptions {
            store_dir: PathBuf::from("/nonexistent"),
            namesrv_port: 0,
            broker_port: 0,
            delay_levels: None,
            timer_wheel: false,
            message_index: false,
            flush,
            member: ClusterMember::default(),
        }
    }

    #[test]
    fn a_start_failure_names_a_nearly_full_disk_and_only_then() {
        let failed = || MqError::Broker("start: core.service.failed".into());
        let dir = Path::new("/data/mq/store");
        let full = start_failure(failed(), dir, Some(89.2)).to_string();
        assert!(
            full.starts_with("embedded broker: start: core.service.failed; the disk holding its store (/data/mq/store) is 89.2 % used"),
            "{full}"
        );
        for used in [Some(40.0), Some(84.9), None] {
            assert_eq!(
                start_failure(failed(), dir, used).to_string(),
                "embedded broker: start: core.service.failed"
            );
        }
    }

    #[test]
    fn the_flush_mode_reaches_the_store() {
        for (flush, expected) in [
            (BrokerFlush::Sync, FlushDiskType::SyncFlush),
            (BrokerFlush::Async, FlushDiskType::AsyncFlush),
        ] {
            let store = store_config(options(flush), "/nonexistent".into(), 20911);
            assert_eq!(store.flush_disk_type, expected, "{flush}");
        }
        assert_eq!(BrokerFlush::default(), BrokerFlush::Sync);
    }
}
