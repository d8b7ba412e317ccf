//! Configuration keys: where ordermq runs and who may talk to it — its
//! addresses and databases, the process's role, tokens and callback
//! secrets, the event-signing keys, the RocketMQ cluster and the broker
//! `ordermq broker` (or the embedded one) runs as.
//!
//! One section of the one table (see `keys/mod.rs`): the macro below hands
//! these entries on to the next section, so the struct and `KEYS` are still
//! generated once, in this order.

/// Appends this section's entries to those it is given and passes them on.
macro_rules! deployment_keys {
    ($next:ident $(, $rest:ident)* => $($entries:tt)*) => {
        $next! { $($rest),* => $($entries)*
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
        }
    };
}
