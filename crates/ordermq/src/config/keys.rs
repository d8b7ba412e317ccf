//! The one table of configuration keys. Each entry is the key's field and
//! type, its form (how it is parsed), its TOML name, the earlier flat name
//! still accepted, its default and its documentation. The struct, its
//! defaults, loading, `ordermq config` and the README's table all come from
//! here (see `table.rs`): adding a key is adding one entry.
//!
//! Production keys come first and keep their flat names. The knobs of the
//! fake third parties (SMS gateway, logistics system, payment gateway) live
//! under `fakes.` so they cannot be mistaken for production settings; their
//! flat names and variables (`sms_latency_ms`, `ORDERMQ_SMS_LATENCY_MS`)
//! still work.

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

config_table! {
    /// Address the HTTP API and dashboard listen on.
    http_addr: SocketAddr = Addr {
        key: "http_addr",
        default: SocketAddr::from(([127, 0, 0, 1], 8080)),
    }
    /// Directory for SQLite databases and the embedded broker's store.
    data_dir: PathBuf = Dir {
        key: "data_dir",
        default: PathBuf::from("./data"),
    }
    /// The database (its password is never printed). Unset: SQLite under
    /// data_dir, plus one file per downstream system and one for their
    /// receipts (receipts.db).
    database_url: Option<DatabaseUrl> = Optional<DatabaseUrl> {
        key: "database_url",
        default: None,
        unset: "sqlite://<data_dir>/orders.db",
    }
    /// What this process runs. all: the order service and the four
    /// downstream systems in one process. order: the HTTP API, group
    /// commit, the relay, the reconciler and the close, refund, receipt and
    /// flash-sale groups. credit, marketing, push or warehouse: that
    /// system's consumer group on its own database (credit.database_url,
    /// marketing.database_url …), the relay of its receipts, and on http_addr its part of
    /// GET /api/users/{id}. A system role needs namesrv_addr (the order
    /// role may run the embedded broker for them).
    role: ProcessRole = RoleOfProcess {
        key: "role",
        default: ProcessRole::All,
    }
    /// role credit: the credit system's database. Unset: SQLite
    /// <data_dir>/credit.db while database_url is unset; with a database
    /// server, required.
    credit_database_url: Option<DatabaseUrl> = Optional<DatabaseUrl> {
        key: "credit.database_url",
        default: None,
        unset: "sqlite://<data_dir>/credit.db (SQLite only)",
    }
    /// role marketing: the marketing system's database (as
    /// credit.database_url).
    marketing_database_url: Option<DatabaseUrl> = Optional<DatabaseUrl> {
        key: "marketing.database_url",
        default: None,
        unset: "sqlite://<data_dir>/marketing.db (SQLite only)",
    }
    /// role push: the push system's database (as credit.database_url).
    push_database_url: Option<DatabaseUrl> = Optional<DatabaseUrl> {
        key: "push.database_url",
        default: None,
        unset: "sqlite://<data_dir>/push.db (SQLite only)",
    }
    /// role warehouse: the warehouse system's database (as
    /// credit.database_url).
    warehouse_database_url: Option<DatabaseUrl> = Optional<DatabaseUrl> {
        key: "warehouse.database_url",
        default: None,
        unset: "sqlite://<data_dir>/warehouse.db (SQLite only)",
    }
    /// Address of a separate listener for operator routes (refunds,
    /// retries, stats, the dashboard). Set: they are served only there (404
    /// on http_addr). Unset: everything on http_addr.
    operator_http_addr: Option<SocketAddr> = Optional<Addr> {
        key: "operator_http_addr",
        default: None,
        unset: "operator routes on http_addr",
    }
    /// Accepted API tokens (Authorization: Bearer), each as its SHA-256:
    /// shop tokens create and read orders and users; operator tokens also
    /// refund, retry, read stats and sign in to the dashboard. Unset: the
    /// public demo tokens, only while every listener is on loopback (or
    /// dev_mode).
    api_tokens: Option<ApiTokens> = Optional<ApiTokens> {
        key: "api_tokens",
        default: None,
        unset: "public demo tokens, loopback only",
    }
    /// Shared secret of payment-gateway callbacks: a one-key ring whose key
    /// id is `default` (X-Signature = hex HMAC-SHA256 of X-Timestamp "."
    /// body). Unset (and no payment_keys): the public dev secret, only while
    /// every listener is on loopback (or dev_mode). Empty: refused.
    payment_secret: Option<Secret> = Optional<Secret> {
        key: "payment_secret",
        default: None,
        unset: "public dev secret, loopback only",
    }
    /// Payment-gateway callback keys for rotation: the gateway names its key
    /// in X-Key-Id; every key listed verifies. Instead of payment_secret
    /// (not both).
    payment_keys: Option<SigningKeys> = Optional<SigningKeys> {
        key: "payment_keys",
        default: None,
        unset: "payment_secret as key default",
    }
    /// Shared secret of carrier callbacks (POST /api/logistics/notify,
    /// signed as payments are), key id `default`. Unset (and no
    /// logistics_keys): the public dev secret, loopback only. Empty: refused.
    logistics_secret: Option<Secret> = Optional<Secret> {
        key: "logistics_secret",
        default: None,
        unset: "public dev secret, loopback only",
    }
    /// Carrier callback keys for rotation (X-Key-Id), instead of
    /// logistics_secret (not both).
    logistics_keys: Option<SigningKeys> = Optional<SigningKeys> {
        key: "logistics_keys",
        default: None,
        unset: "logistics_secret as key default",
    }
    /// How far a callback's X-Timestamp may be from ordermq's clock, either
    /// way; further: 401 SIGNATURE_EXPIRED (a replay, or a skewed clock).
    callback_max_age: Duration = Span {
        key: "callback_max_age",
        default: Duration::from_secs(5 * 60),
    }
    /// Development only: accept the public dev secrets and demo tokens on a
    /// non-loopback address (each with a warning). Never in production.
    dev_mode: bool = Flag {
        key: "dev_mode",
        default: false,
    }
    /// Keys that sign every event ordermq publishes and verify every one its
    /// consumer groups receive (HMAC-SHA256 of event id and body, with the
    /// key's id in the message); a message that fails is parked, never
    /// applied. The first key signs, all verify: to rotate, add the new key
    /// second, deploy, move it first, deploy, drop the old one. Instances
    /// sharing a cluster must share them. Unset: a random key generated once
    /// in data_dir (event-signing.key), with the embedded broker or a
    /// loopback NameServer only; a remote cluster refuses to start without.
    event_keys: Option<SigningKeys> = Optional<SigningKeys> {
        key: "event_keys",
        default: None,
        unset: "a key generated in data_dir; required with a remote cluster",
    }
    /// RocketMQ NameServer list. Set: use that cluster. Unset: start an
    /// embedded NameServer + broker on loopback.
    namesrv_addr: Option<String> = Optional<NameServers> {
        key: "namesrv_addr",
        default: None,
        unset: "embedded broker",
    }
    /// RocketMQ ACL access key, for a cluster that requires ACL (set with
    /// rocketmq.secret_key; both or neither). Every request to the cluster
    /// is signed with them (the Java client's AclClientRPCHook scheme).
    rocketmq_access_key: Option<Secret> = Optional<Secret> {
        key: "rocketmq.access_key",
        alias: "rocketmq_access_key",
        default: None,
        unset: "no ACL",
    }
    /// RocketMQ ACL secret key (set with rocketmq.access_key).
    rocketmq_secret_key: Option<Secret> = Optional<Secret> {
        key: "rocketmq.secret_key",
        alias: "rocketmq_secret_key",
        default: None,
        unset: "no ACL",
    }
    /// Port of the embedded NameServer, and of `ordermq namesrv` without
    /// --listen (0 = any free port).
    embedded_namesrv_port: u16 = Int<u16> {
        key: "embedded_namesrv_port",
        default: 19876,
    }
    /// Port of the embedded broker and of `ordermq broker` (0 = any free
    /// port); it also uses port-2 (fast/VIP) and port+1 (HA, where slaves
    /// connect).
    embedded_broker_port: u16 = Int<u16> {
        key: "embedded_broker_port",
        default: 20911,
    }
    /// `ordermq broker`: the NameServers it registers with (RocketMQ's
    /// namesrvAddr), host:port separated by ';'. Unset: it starts its own
    /// NameServer on embedded_namesrv_port in the same process.
    broker_namesrv_addr: Option<String> = Optional<NameServers> {
        key: "broker.namesrv_addr",
        default: None,
        unset: "a NameServer in the same process",
    }
    /// `ordermq broker` and the embedded broker: the cluster it joins
    /// (RocketMQ's brokerClusterName).
    broker_cluster: String = BrokerName {
        key: "broker.cluster",
        default: "OrdermqEmbedded".to_owned(),
    }
    /// `ordermq broker` and the embedded broker: its name (brokerName). A
    /// master and its slaves share it; each master of a cluster has its
    /// own, and every topic has queues on each.
    broker_name: String = BrokerName {
        key: "broker.name",
        default: "ordermq-embedded".to_owned(),
    }
    /// `ordermq broker`: its id (brokerId): 0 for a master, 1 and up for
    /// the slaves of the master with the same broker.name.
    broker_id: u32 = Int<u32> {
        key: "broker.id",
        default: 0,
    }
    /// `ordermq broker`: async_master (answers a send once it holds the
    /// message), sync_master (once a slave holds it too) or slave (copies
    /// its master; broker.id 1 and up). See docs/reliability.md for what
    /// rocketmq-rust's replication does.
    broker_role: BrokerRole = Role {
        key: "broker.role",
        default: BrokerRole::AsyncMaster,
    }
    /// `ordermq broker` and the embedded broker: the IP address it binds
    /// and advertises to NameServers and clients (brokerIP1). Loopback by
    /// default; a host's own address in a real cluster.
    broker_ip: IpAddr = Ip {
        key: "broker.ip",
        default: IpAddr::from([127, 0, 0, 1]),
    }
    /// `ordermq broker` and the embedded broker: where its commit log,
    /// queues and offsets live (storePathRootDir). Each broker process on a
    /// host needs its own.
    broker_store_dir: Option<PathBuf> = Optional<Dir> {
        key: "broker.store_dir",
        default: None,
        unset: "<data_dir>/rocketmq",
    }
    /// RocketMQ messageDelayLevel: the embedded broker's (the n-th
    /// redelivery of a failed message waits level 3+n), and the levels
    /// delayed closes hop through (delayed_delivery = levels). With an
    /// external cluster whose messageDelayLevel is not the default, set it
    /// to the cluster's.
    retry_delay_levels: Option<RetryLevels> = Optional<RetryLevels> {
        key: "retry_delay_levels",
        default: None,
        unset: "RocketMQ's default, 1s 5s 10s 30s 1m ... 2h",
    }
    /// How unpaid orders' closes are delayed. levels: RocketMQ delay levels,
    /// on any RocketMQ 4.x/5.x; a close hops through the levels until due
    /// and fires at most one shortest level (1 s) late. timer: RocketMQ 5
    /// timer messages (the broker must enable its timer wheel; the embedded
    /// one then holds ~37 MiB more memory).
    delayed_delivery: DeliveryMode = DeliveryMode {
        key: "delayed_delivery",
        default: DeliveryMode::Levels,
    }
    /// Embedded broker only: index messages by key for RocketMQ's query by
    /// key (mqadmin queryMsgByKey). Off: less CPU and memory per message;
    /// orders' events are still visible in ordermq's own API.
    embedded_message_index: bool = Flag {
        key: "embedded_message_index",
        default: false,
    }
    /// Embedded broker and `ordermq broker`: when a send is answered. sync: once the message
    /// is on disk (RocketMQ's SYNC_FLUSH, one group-committed msync for every
    /// send waiting), so nothing the relay marked sent is lost with the
    /// power. async: once it is in memory (ASYNC_FLUSH, flushed within
    /// ~0.5-10 s): less disk work, but a power loss can lose events already
    /// marked sent. An external cluster decides this itself (its
    /// flushDiskType and brokerRole; see docs/reliability.md).
    embedded_broker_flush: BrokerFlush = Flush {
        key: "embedded_broker_flush",
        default: BrokerFlush::Sync,
    }
    /// Redeliveries of a failing message before RocketMQ moves it to the
    /// group's dead-letter queue (`%DLQ%` and the group's name).
    max_reconsume_times: i32 = Int<i32> {
        key: "max_reconsume_times",
        default: 16,
        range: 0..,
    }
    /// Deliveries each consumer group handles at once (needs rate x
    /// third-party latency).
    consumer_concurrency: u32 = Int<u32> {
        key: "consumer_concurrency",
        default: 64,
        range: 1..,
    }
    /// Most creates/payments sharing one commit (group commit).
    write_batch_max: usize = Int<usize> {
        key: "write_batch_max",
        default: 256,
        range: 1..,
    }
    /// Group commit under load: when payments are queuing (the last commit
    /// carried 4 or more), wait up to this long for more before committing.
    /// Fewer, larger commits (less CPU per payment) for up to this much
    /// payment latency. 0 = commit what is queued.
    // Side by side at 5,000/s (docs/benchmarks.md): 307-335 µs of CPU per
    // payment with 2 ms against 371-396 without, payment p99 lower.
    write_linger: Duration = Millis {
        key: "write_linger_ms",
        default: ms(2),
    }
    /// PostgreSQL and MySQL/MariaDB: order-database batches committing at
    /// once (group commit), each on its own connection; the server flushes
    /// commits that arrive together with one log flush. An order's payments
    /// always go to the same one. SQLite has one writer.
    postgres_writers: usize = Int<usize> {
        key: "postgres_writers",
        default: 4,
        range: 1..=64,
    }
    /// PostgreSQL: a batch's payments as one set-based statement (the
    /// default). Off: each payment through the general path, one savepoint
    /// each (for comparison; the same answers and rows).
    postgres_set_based: bool = Flag {
        key: "postgres_set_based",
        default: true,
    }
    /// The data team's change feed (TopicOrderChangeFeed): on, every order
    /// change also writes one outbox row, relayed as an ordered message;
    /// off, none is written (order_seq is still counted).
    feed: FeedMode = FeedMode {
        key: "feed",
        default: FeedMode::On,
    }
    /// How long a request waits for a database connection before it is
    /// answered 503 STORAGE_UNAVAILABLE (a database outage is answered
    /// quickly instead of every request queueing).
    database_acquire_timeout: Duration = Millis {
        key: "database_acquire_timeout_ms",
        default: ms(2_000),
    }
    /// PostgreSQL and MySQL/MariaDB: the longest one statement may run
    /// before the server cancels it (PostgreSQL statement_timeout; MariaDB
    /// max_statement_time; MySQL max_execution_time, reads only). 0 = the
    /// server's.
    database_statement_timeout: Duration = Millis {
        key: "database_statement_timeout_ms",
        default: ms(30_000),
    }
    /// PostgreSQL and MySQL/MariaDB: the longest a statement waits for a
    /// lock (PostgreSQL lock_timeout; innodb_lock_wait_timeout, whole
    /// seconds, at least 1). 0 = the server's.
    database_lock_timeout: Duration = Millis {
        key: "database_lock_timeout_ms",
        default: ms(10_000),
    }
    /// PostgreSQL and MariaDB: a session idle this long inside a
    /// transaction is ended and its locks released (PostgreSQL
    /// idle_in_transaction_session_timeout; MariaDB idle_transaction_timeout,
    /// whole seconds; MySQL has none). 0 = the server's.
    database_idle_in_transaction_timeout: Duration = Millis {
        key: "database_idle_in_transaction_timeout_ms",
        default: ms(60_000),
    }
    /// Start even though acknowledged commits would not survive a crash
    /// (PostgreSQL: fsync = off, or synchronous_commit = off for ordermq's
    /// sessions; MySQL/MariaDB: innodb_flush_log_at_trx_commit other than
    /// 1), with a warning. Off: ordermq refuses to start. For test servers
    /// only.
    database_allow_unsafe_durability: bool = Flag {
        key: "database_allow_unsafe_durability",
        default: false,
    }
    /// Group commit in each downstream system under load: when its consumer
    /// batches are queuing (the last commit carried 2 or more), wait up to
    /// this long for more before committing. Fewer commits (less CPU and
    /// disk per event) for up to this much fan-out delay. 0 = commit what is
    /// queued.
    effect_linger: Duration = Millis {
        key: "effect_linger_ms",
        default: ms(5),
    }
    /// How much lower the fan-out's threads run than the payment path (nice
    /// value added to the broker, relay, consumers and downstream systems'
    /// threads): a waking payment runs ahead of them. 0 = same priority.
    fanout_nice: i32 = Int<i32> {
        key: "fanout_nice",
        default: 10,
        range: 0..=19,
    }
    /// Outbox rows the relay claims and publishes per round.
    relay_batch_size: usize = Int<usize> {
        key: "relay_batch_size",
        default: 512,
        range: 1..,
    }
    /// After a round that published, the relay lets events gather this long
    /// before the next (unless a full batch waits): fewer, larger sends and
    /// pulls for up to this much fan-out delay. 0 = go on the next commit.
    // Side by side at 1,000 payments/s (docs/benchmarks.md): 10 ms and 4
    // queues took 1,060-1,100 µs of CPU per payment against 1,870-1,890 with
    // no linger and 8 queues; later, 25 ms took 1,090-1,120 against 10 ms's
    // 1,370-1,400 on a slower machine (and 750-780 against 840-860 at
    // 1,900/s), for end-to-end p99 60 ms instead of 50. 50 ms saved ~6 %
    // more but pushed e2e p99 past 100 ms at 1,900/s.
    relay_linger: Duration = Millis {
        key: "relay_linger_ms",
        default: ms(25),
    }
    /// An outbox row the broker refuses this many times while it takes
    /// other rows is parked: no longer tried, counted in /api/stats (outbox
    /// parked), listed by `ordermq outbox parked` and put back by `ordermq
    /// outbox requeue`. Until then it waits on its own backoff (100 ms
    /// doubling to 10 s) without holding back the rows behind it. During an
    /// outage (the broker takes nothing) no row is parked.
    relay_park_after_attempts: u32 = Int<u32> {
        key: "relay_park_after_attempts",
        default: 20,
        range: 1..,
    }
    /// Queues per topic when ordermq creates its topics (embedded broker, or
    /// a cluster that allows it). At least the instances consuming each
    /// group; fewer queues mean larger batches per pull.
    topic_queues: i32 = Int<i32> {
        key: "topic_queues",
        default: 4,
        range: 1..,
    }
    /// An unpaid order closes itself (stock released) this long after
    /// creation.
    order_close_after: Duration = Span {
        key: "order_close_after",
        default: Duration::from_secs(30 * 60),
    }
    /// Backstop for lost close messages: every interval, close UNPAID orders
    /// overdue by more than one interval (indexed, never a scan). 0s
    /// disables it.
    close_sweep_interval: Duration = Span {
        key: "close_sweep_interval",
        default: Duration::from_secs(60),
    }
    /// The reconciler: a sent event that some subscribed group has not
    /// acknowledged this long after its send (a receipt from each
    /// downstream system; a close due this long ago with the order still
    /// unpaid; a refund still REQUESTED) is published again.
    reconcile_after: Duration = Span {
        key: "reconcile_after",
        default: Duration::from_secs(300),
    }
    /// Time between the reconciler's passes. 0s disables it.
    reconcile_interval: Duration = Span {
        key: "reconcile_interval",
        default: Duration::from_secs(60),
    }
    /// Events first written longer ago than this are no longer published
    /// again by the reconciler (counted and listed by `ordermq outbox
    /// missing` instead).
    reconcile_window: Duration = Span {
        key: "reconcile_window",
        default: Duration::from_secs(7 * 24 * 3600),
    }
    /// Most events the reconciler publishes again per pass, oldest first.
    reconcile_batch: u32 = Int<u32> {
        key: "reconcile_batch",
        default: 500,
        range: 1..,
    }
    /// Times the reconciler publishes one event again before leaving it for
    /// an operator (`ordermq outbox missing`).
    reconcile_max: u32 = Int<u32> {
        key: "reconcile_max",
        default: 5,
        range: 1..,
    }
    /// Flash-sale orders created per second, evenly spaced (peak shaving:
    /// the order database sees at most this rate of sale orders, however
    /// many attempts were admitted at once). 0 = as fast as they come.
    flash_sale_order_rate: u32 = Int<u32> {
        key: "flash_sale_order_rate",
        default: 200,
        range: 0..=100_000,
    }
    /// The longest an admitted flash-sale attempt may wait for its order
    /// (from its admission to its turn at flash_sale_order_rate); one that
    /// would wait longer is REJECTED (QUEUE_TIMEOUT) and its units go back
    /// to the sale. 0s = no cap.
    flash_sale_max_wait: Duration = Span {
        key: "flash_sale_max_wait",
        default: Duration::from_secs(60),
    }
    /// How long a flash-sale order may stay unpaid before it closes (its
    /// units going back to the sale): shorter than order_close_after, since
    /// other shoppers wait for the units.
    flash_sale_order_close_after: Duration = Span {
        key: "flash_sale_order_close_after",
        default: Duration::from_secs(5 * 60),
    }
    /// Units of a flash sale an instance leases from the database at once
    /// for its in-memory admission budget (the next chunk is leased ahead
    /// when half is left; leases less than a second apart double it, up to
    /// 8 times). Larger: fewer database trips; smaller: less stranded in one
    /// instance's lease at the end of a sale.
    flash_sale_lease_chunk: u32 = Int<u32> {
        key: "flash_sale_lease_chunk",
        default: 50,
        range: 1..=10_000,
    }
    /// A lease of flash-sale units that no admission renewed for this long
    /// (its instance died or went idle) is returned to the sale by the next
    /// lease of another instance.
    flash_sale_lease_ttl: Duration = Span {
        key: "flash_sale_lease_ttl",
        default: Duration::from_secs(30),
    }
    /// Gateway refund attempts per delivery (with backoff) before RocketMQ
    /// redelivers later; after max_reconsume_times deliveries the refund is
    /// FAILED.
    refund_attempts: u32 = Int<u32> {
        key: "refund_attempts",
        default: 3,
        range: 1..,
    }
    /// How long the warehouse waits for the logistics system before retrying
    /// later.
    logistics_timeout: Duration = Millis {
        key: "logistics_timeout_ms",
        default: ms(5_000),
    }
    /// HTTP: how long a client has to send a request's headers, counted from
    /// when the connection starts waiting for a request (so it also closes a
    /// keep-alive connection idle this long). Slow or half-sent headers are
    /// cut off instead of holding a descriptor.
    http_header_timeout: Duration = Span {
        key: "http_header_timeout",
        default: Duration::from_secs(10),
    }
    /// HTTP: the longest a request may take, its body included, before it is
    /// answered 408 REQUEST_TIMEOUT and its connection closed.
    http_request_timeout: Duration = Span {
        key: "http_request_timeout",
        default: Duration::from_secs(30),
    }
    /// HTTP: a keep-alive connection with no request in flight for this long
    /// is closed (http_header_timeout closes it too, whichever is shorter).
    http_idle_timeout: Duration = Span {
        key: "http_idle_timeout",
        default: Duration::from_secs(5),
    }
    /// HTTP: most connections open at once. Over it a new connection waits
    /// up to a second for one to close, then is closed: slow clients cannot
    /// take every descriptor (the broker and SQLite need them too).
    http_max_connections: usize = Int<usize> {
        key: "http_max_connections",
        default: 1_024,
        range: 1..,
    }
    /// SMS gateway: fake (in process, nothing leaves ordermq; the default) or
    /// http (the provider at gateways.sms.url, protocol in docs/gateways.md).
    gateways_sms_mode: GatewayMode = GatewayMode {
        key: "gateways.sms.mode",
        default: GatewayMode::Fake,
    }
    /// SMS gateway over http: the provider's base URL (required in http mode).
    gateways_sms_url: Option<HttpUrl> = Optional<HttpUrl> {
        key: "gateways.sms.url",
        default: None,
        unset: "none; required in http mode",
    }
    /// SMS gateway over http: the keys requests are signed with (the first
    /// signs; required in http mode).
    gateways_sms_keys: Option<SigningKeys> = Optional<SigningKeys> {
        key: "gateways.sms.keys",
        default: None,
        unset: "none; required in http mode",
    }
    /// SMS gateway: how long one attempt may take. Each call is
    /// bounded by (retries + 1) x timeout plus the waits between attempts,
    /// in fake mode too.
    gateways_sms_timeout: Duration = Span {
        key: "gateways.sms.timeout",
        default: Duration::from_secs(2),
    }
    /// SMS gateway over http: attempts after the first, on connection errors,
    /// timeouts, 5xx and 429 (never on another 4xx), with exponential
    /// backoff and jitter; the same idempotency key every time.
    gateways_sms_retries: u32 = Int<u32> {
        key: "gateways.sms.retries",
        default: 2,
        range: 0..=10,
    }
    /// Logistics system: fake (in process, nothing leaves ordermq; the default) or
    /// http (the provider at gateways.logistics.url, protocol in docs/gateways.md).
    gateways_logistics_mode: GatewayMode = GatewayMode {
        key: "gateways.logistics.mode",
        default: GatewayMode::Fake,
    }
    /// Logistics system over http: the provider's base URL (required in http mode).
    gateways_logistics_url: Option<HttpUrl> = Optional<HttpUrl> {
        key: "gateways.logistics.url",
        default: None,
        unset: "none; required in http mode",
    }
    /// Logistics system over http: the keys requests are signed with (the first
    /// signs; required in http mode).
    gateways_logistics_keys: Option<SigningKeys> = Optional<SigningKeys> {
        key: "gateways.logistics.keys",
        default: None,
        unset: "none; required in http mode",
    }
    /// Logistics system: how long one attempt may take (the warehouse also gives up at logistics_timeout_ms). Each call is
    /// bounded by (retries + 1) x timeout plus the waits between attempts,
    /// in fake mode too.
    gateways_logistics_timeout: Duration = Span {
        key: "gateways.logistics.timeout",
        default: Duration::from_secs(2),
    }
    /// Logistics system over http: attempts after the first, on connection errors,
    /// timeouts, 5xx and 429 (never on another 4xx), with exponential
    /// backoff and jitter; the same idempotency key every time.
    gateways_logistics_retries: u32 = Int<u32> {
        key: "gateways.logistics.retries",
        default: 2,
        range: 0..=10,
    }
    /// Payment gateway (refunds): fake (in process, nothing leaves ordermq; the default) or
    /// http (the provider at gateways.payments.url, protocol in docs/gateways.md).
    gateways_payments_mode: GatewayMode = GatewayMode {
        key: "gateways.payments.mode",
        default: GatewayMode::Fake,
    }
    /// Payment gateway (refunds) over http: the provider's base URL (required in http mode).
    gateways_payments_url: Option<HttpUrl> = Optional<HttpUrl> {
        key: "gateways.payments.url",
        default: None,
        unset: "none; required in http mode",
    }
    /// Payment gateway (refunds) over http: the keys requests are signed with (the first
    /// signs; required in http mode).
    gateways_payments_keys: Option<SigningKeys> = Optional<SigningKeys> {
        key: "gateways.payments.keys",
        default: None,
        unset: "none; required in http mode",
    }
    /// Payment gateway (refunds): how long one attempt may take. Each call is
    /// bounded by (retries + 1) x timeout plus the waits between attempts,
    /// in fake mode too.
    gateways_payments_timeout: Duration = Span {
        key: "gateways.payments.timeout",
        default: Duration::from_secs(5),
    }
    /// Payment gateway (refunds) over http: attempts after the first, on connection errors,
    /// timeouts, 5xx and 429 (never on another 4xx), with exponential
    /// backoff and jitter; the same idempotency key every time.
    gateways_payments_retries: u32 = Int<u32> {
        key: "gateways.payments.retries",
        default: 2,
        range: 0..=10,
    }
    /// Most unpaid orders one user may have at once; one more is refused
    /// (409 TOO_MANY_UNPAID_ORDERS) until one is paid or closes. A shopper
    /// rarely has more than one or two checkouts open; 5 leaves room for
    /// retries and a second device while capping what a script can hold
    /// for order_close_after. 0 = no limit.
    limits_unpaid_orders_per_user: u32 = Int<u32> {
        key: "limits.unpaid_orders_per_user",
        default: 5,
    }
    /// Most units of one SKU a user may hold across its unpaid orders (409
    /// SKU_LIMIT_EXCEEDED beyond). 20 covers a household's order of one
    /// item (a case of 12, a few spares) while one script can hold no more
    /// than 20 units of a scarce product instead of the whole stock (up to
    /// 10,000 a line before); raise it for bulk buyers. 0 = no limit.
    limits_units_per_sku_per_user: u32 = Int<u32> {
        key: "limits.units_per_sku_per_user",
        default: 20,
    }
    /// Orders one caller may create for one user per minute (one bucket per
    /// API token and user id), after a burst of limits.order_burst_per_user;
    /// over it: 429 RATE_LIMITED with Retry-After. 30 a minute is one every
    /// 2 s, far above a shopper's pace. 0 = no limit.
    limits_orders_per_minute_per_user: u32 = Int<u32> {
        key: "limits.orders_per_minute_per_user",
        default: 30,
    }
    /// Orders one caller may create for one user at once before
    /// limits.orders_per_minute_per_user applies.
    limits_order_burst_per_user: u32 = Int<u32> {
        key: "limits.order_burst_per_user",
        default: 10,
        range: 1..,
    }
    /// Orders one API token may create per second for all its users
    /// together (a ceiling for the shop's whole traffic, and for a script
    /// rotating user ids); over it: 429 RATE_LIMITED. Set it near what the
    /// database sustains. 0 = no limit.
    limits_orders_per_second_per_token: u32 = Int<u32> {
        key: "limits.orders_per_second_per_token",
        default: 1_000,
    }
    /// Orders one API token may create at once before
    /// limits.orders_per_second_per_token applies.
    limits_order_burst_per_token: u32 = Int<u32> {
        key: "limits.order_burst_per_token",
        default: 2_000,
        range: 1..,
    }
    /// Failed dashboard sign-ins (an unknown token, or not an operator's)
    /// one client address (IPv6: its /64) may make per minute, all at once
    /// or spread; past them every sign-in from it is 429 RATE_LIMITED, with
    /// Retry-After, until a failure has aged out (one every 60/N s). Behind
    /// a reverse proxy every client has the proxy's address: limit sign-ins
    /// there too. 0 = no limit.
    limits_signin_failures_per_minute: u32 = Int<u32> {
        key: "limits.signin_failures_per_minute",
        default: 10,
    }
    /// Most clients each rate limit keeps track of at once (about 200 bytes
    /// each); past it, idle ones are forgotten first, so rotating user ids
    /// or addresses cannot grow memory.
    limits_tracked_clients: usize = Int<usize> {
        key: "limits.tracked_clients",
        default: 100_000,
        range: 1..,
    }
    /// Seed the demo catalog on start (only products not yet present).
    seed_catalog: bool = Flag {
        key: "seed_catalog",
        default: true,
    }
    /// Log filter (tracing's EnvFilter syntax).
    log: String = LogFilter {
        key: "log",
        default: DEFAULT_LOG.to_owned(),
    }

    // The fakes. The seed document: SMS ~100 ms, logistics ~500 ms, both
    // with spikes past 1 s.

    /// Fake SMS gateway: typical latency.
    sms_latency: Duration = Millis {
        key: "fakes.sms.latency_ms",
        alias: "sms_latency_ms",
        default: ms(100),
    }
    /// Fake SMS gateway: uniform jitter added to the latency (0..=jitter).
    sms_jitter: Duration = Millis {
        key: "fakes.sms.jitter_ms",
        alias: "sms_jitter_ms",
        default: ms(40),
    }
    /// Fake SMS gateway: probability that a call hits a latency spike.
    sms_spike_probability: f64 = Probability {
        key: "fakes.sms.spike_probability",
        alias: "sms_spike_probability",
        default: 0.02,
    }
    /// Fake SMS gateway: latency of a spike.
    sms_spike: Duration = Millis {
        key: "fakes.sms.spike_ms",
        alias: "sms_spike_ms",
        default: ms(1_200),
    }
    /// Fake SMS gateway: probability that a call fails.
    sms_failure_rate: f64 = Probability {
        key: "fakes.sms.failure_rate",
        alias: "sms_failure_rate",
        default: 0.0,
    }
    /// Fake logistics system: typical latency.
    logistics_latency: Duration = Millis {
        key: "fakes.logistics.latency_ms",
        alias: "logistics_latency_ms",
        default: ms(500),
    }
    /// Fake logistics system: uniform jitter added to the latency.
    logistics_jitter: Duration = Millis {
        key: "fakes.logistics.jitter_ms",
        alias: "logistics_jitter_ms",
        default: ms(150),
    }
    /// Fake logistics system: probability of a latency spike.
    logistics_spike_probability: f64 = Probability {
        key: "fakes.logistics.spike_probability",
        alias: "logistics_spike_probability",
        default: 0.02,
    }
    /// Fake logistics system: latency of a spike.
    logistics_spike: Duration = Millis {
        key: "fakes.logistics.spike_ms",
        alias: "logistics_spike_ms",
        default: ms(1_500),
    }
    /// Fake logistics system: probability that a call fails.
    logistics_failure_rate: f64 = Probability {
        key: "fakes.logistics.failure_rate",
        alias: "logistics_failure_rate",
        default: 0.0,
    }
    /// Fake payment gateway (refunds): typical latency (jitter: a quarter of it).
    payment_gateway_latency: Duration = Millis {
        key: "fakes.payment_gateway.latency_ms",
        alias: "payment_gateway_latency_ms",
        default: ms(200),
    }
    /// Fake payment gateway: probability that a refund call fails.
    payment_gateway_failure_rate: f64 = Probability {
        key: "fakes.payment_gateway.failure_rate",
        alias: "payment_gateway_failure_rate",
        default: 0.0,
    }
}
