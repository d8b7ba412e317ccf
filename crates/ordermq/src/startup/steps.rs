//! The steps of [`Application::build`](super::Application::build), one
//! function per component: the fan-out runtime, the databases, the broker
//! (embedded or found), the producer, the consumer groups, the listeners,
//! and the periodic checkpoint.
//!
//! Why apart: `mod.rs` reads as the order of the steps and the shutdown in
//! reverse; each step's details (timeouts, retries, what is logged) are
//! here, one function each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ordermq_api::auth::{DEMO_OPERATOR_TOKEN, DEMO_SHOP_TOKEN};
use ordermq_domain::System;
use ordermq_domain::ports::Handler;
use ordermq_domain::signing::Keyring;
use ordermq_domain::topology::{CONSUMER_GROUPS, Concurrency, Consumer, PRODUCER_GROUP, TOPICS};
use ordermq_messaging::{ClientSecurity, DEFAULT_BATCH, MqClient, MqError, SubscribeOptions};
use ordermq_store::{Store, StoreOptions, ThreadStart};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use ordermq_service::consumers::{
    CloseHandler, FlashOrderHandler, FlashOrderSettings, ReceiptHandler, RefundHandler,
    SystemHandler,
};
use ordermq_service::{EffectWriter, OrderWriter};

use crate::config::{Config, ProcessRole, PublicCredential};
use crate::gateways::Gateways;

use super::{Consumers, DEMO_CATALOG, EmbeddedBroker, StartError};
use crate::runtime::{Background, lower_current_thread_priority};

/// The fan-out runtime: the broker, the RocketMQ clients, the relay, the
/// consumer groups and the downstream systems' lanes run below the payment path.
pub(super) fn start_fanout_runtime(config: &Config) -> Result<Background, StartError> {
    Background::start(
        "ordermq-fanout",
        std::thread::available_parallelism().map_or(2, |n| n.get()),
        config.fanout_nice,
    )
    .map_err(StartError::Runtime)
}

/// Opens the databases of the process's role (the order database and the
/// systems', the order database alone, or one system's), seeding the demo
/// catalog if asked and the order database is among them.
pub(super) async fn open_store(config: &Config) -> Result<Store, StartError> {
    let nice = config.fanout_nice;
    let (database_url, databases) = config.role_database()?;
    let store = Store::open(
        &database_url,
        &StoreOptions {
            on_system_lane_start: Some(ThreadStart(Arc::new(move || {
                lower_current_thread_priority(nice)
            }))),
            databases,
            ..config.store_options()
        },
    )
    .await?;
    tracing::info!(
        database = %ordermq_store::redact(&database_url),
        role = %config.role,
        "database ready"
    );
    check_durability(&store, config.database_allow_unsafe_durability).await?;
    if config.seed_catalog && store.holds_orders() {
        let added = store
            .seed_catalog(DEMO_CATALOG)
            .await
            .map_err(StartError::Seed)?;
        if added > 0 {
            tracing::info!(products = added, "seeded the demo catalog");
        }
    }
    Ok(store)
}

/// Reads and logs the database server's durability settings (PostgreSQL's
/// or MySQL's); refuses to go on when
/// an acknowledged commit would not survive a crash, unless `allow_unsafe`.
async fn check_durability(store: &Store, allow_unsafe: bool) -> Result<(), StartError> {
    let Some(durability) = store.durability().await.map_err(StartError::Durability)? else {
        return Ok(());
    };
    tracing::info!(settings = %durability.summary(), "database durability");
    for warning in &durability.warnings {
        tracing::warn!("{warning}");
    }
    let unsafe_settings = durability.unsafe_settings;
    if unsafe_settings.is_empty() {
        return Ok(());
    }
    let what = unsafe_settings.join(", ");
    if !allow_unsafe {
        return Err(StartError::UnsafeDurability(what));
    }
    tracing::warn!(
        settings = %what,
        "the database may lose acknowledged payments in a crash; \
         started anyway (database_allow_unsafe_durability)"
    );
    Ok(())
}

/// The configured cluster's NameServer, or an embedded NameServer + broker.
pub(super) async fn start_or_find_broker(
    config: &Config,
    background: &Background,
) -> Result<(Option<EmbeddedBroker>, String), StartError> {
    if let Some(addr) = &config.namesrv_addr {
        tracing::info!(namesrv = %addr, "using the configured RocketMQ cluster");
        return Ok((None, addr.clone()));
    }
    #[cfg(not(feature = "embedded-broker"))]
    {
        let _ = background;
        Err(StartError::NoNameServer)
    }
    #[cfg(feature = "embedded-broker")]
    {
        let broker = background
            .run(EmbeddedBroker::start(config.embedded_options()))
            .await
            .map_err(StartError::Background)??;
        let addr = broker.namesrv_addr();
        tracing::info!(namesrv = %addr, "embedded RocketMQ NameServer + broker started");
        Ok((Some(broker), addr))
    }
}

/// Connects the producer ([`PRODUCER_GROUP`]) and creates every topic of [`TOPICS`].
pub(super) async fn connect_producer(
    config: &Config,
    background: &Background,
    namesrv_addr: &str,
    security: ClientSecurity,
) -> Result<MqClient, StartError> {
    let (addr, topic_queues) = (namesrv_addr.to_owned(), config.topic_queues);
    let delayed = config.delayed_delivery();
    if security.acl.is_some() {
        tracing::info!("RocketMQ ACL credentials set: every request to the cluster is signed");
    }
    let external = config.namesrv_addr.is_some();
    let mq = background
        .run(async move {
            let mq = MqClient::connect_with(&addr, PRODUCER_GROUP, delayed, security).await?;
            for topic in TOPICS {
                mq.ensure_topic(topic, topic_queues).await?;
            }
            if external {
                log_cluster_durability(&mq).await;
            }
            Ok::<_, MqError>(mq)
        })
        .await
        .map_err(StartError::Background)??;
    Ok(mq)
}

/// An external cluster decides what `SEND_OK` means (each broker's
/// `flushDiskType` and `brokerRole`; the embedded broker logs its own mode):
/// logs what its brokers say, or that they would not say.
pub(super) async fn log_cluster_durability(mq: &MqClient) {
    const WHY: &str = "the relay marks an event sent on SEND_OK; what survives a broker host's \
                       power loss depends on the brokers' flushDiskType and brokerRole (docs/reliability.md)";
    match mq.broker_durability().await {
        Ok(brokers) if !brokers.is_empty() => {
            for broker in brokers {
                let flush = broker.flush_disk_type.as_deref().unwrap_or("unknown");
                let role = broker.broker_role.as_deref().unwrap_or("unknown");
                match broker.survives_power_loss() {
                    Some(true) => tracing::info!(
                        broker = %broker.broker, addr = %broker.addr, flush, role,
                        "RocketMQ broker: SEND_OK means the message is on disk or on a slave"
                    ),
                    Some(false) => tracing::warn!(
                        broker = %broker.broker, addr = %broker.addr, flush, role,
                        "RocketMQ broker: SEND_OK comes before the message is on disk or a slave; \
                         a power loss of its host can lose events ordermq counts as sent. {WHY}"
                    ),
                    None => tracing::warn!(
                        broker = %broker.broker, addr = %broker.addr, flush, role,
                        "RocketMQ broker did not say how it stores messages. {WHY}"
                    ),
                }
            }
        }
        Ok(_) => tracing::warn!("the NameServer listed no broker to ask. {WHY}"),
        Err(e) => tracing::warn!(
            error = %e,
            "could not read the brokers' settings (an ACL without the permission, or a proxy). {WHY}"
        ),
    }
}

/// The order database's side of the consumers: its group-commit writer, and
/// the relay's wake-up for the events their writes leave in the outbox.
pub(super) struct OrderSide<'a> {
    pub(super) writer: &'a OrderWriter,
    pub(super) relay_wake: &'a Arc<Notify>,
}

/// Subscribes every group of [`CONSUMER_GROUPS`] with its handler, on the
/// fan-out runtime: what they spawn, and RocketMQ's listener threads, run there.
pub(super) async fn subscribe_consumers(
    config: &Config,
    background: &Background,
    mq: MqClient,
    store: &Store,
    orders: OrderSide<'_>,
    gateways: &Gateways,
    keys: &Keyring,
) -> Result<Consumers, StartError> {
    let (writer, relay_wake) = (orders.writer, orders.relay_wake.clone());
    let flash_orders = FlashOrderSettings {
        rate: config.flash_sale_order_rate,
        max_wait: config.flash_sale_max_wait,
        close_after: config.flash_sale_order_close_after,
    };
    let (store, writer, gateways) = (store.clone(), writer.clone(), gateways.clone());
    let keys = keys.clone();
    let effect_linger = config.effect_linger;
    let (max_reconsume_times, configured, refund_attempts) = (
        config.max_reconsume_times,
        config.consumer_concurrency,
        config.refund_attempts,
    );
    let role = config.role;
    let retry_levels = config.retry_levels();
    let subscribed = background.run(async move {
        let mut effect_tasks = Vec::with_capacity(System::ALL.len());
        for group in CONSUMER_GROUPS.iter().filter(|g| runs(role, g.consumer)) {
            let handler: Arc<dyn Handler> = match group.consumer {
                Consumer::System(system) => {
                    let (effects, task) =
                        EffectWriter::spawn_lingering(store.clone(), effect_linger);
                    effect_tasks.push(task);
                    Arc::new(SystemHandler::new(
                        system,
                        store.clone(),
                        effects,
                        gateways.for_systems(),
                        keys.clone(),
                    ))
                }
                Consumer::Close => Arc::new(CloseHandler::new(writer.clone(), store.clone())),
                Consumer::Receipt => Arc::new(ReceiptHandler::new(store.clone())),
                Consumer::FlashSale => Arc::new(FlashOrderHandler::new(
                    writer.clone(),
                    store.clone(),
                    flash_orders.clone(),
                    relay_wake.clone(),
                )),
                Consumer::Refund => Arc::new(RefundHandler::new(
                    store.clone(),
                    gateways.payments.clone(),
                    refund_attempts,
                    REFUND_BACKOFF,
                    gateways.payments_timeout,
                )),
            };
            let concurrency = match group.concurrency {
                Concurrency::Configured => configured,
                Concurrency::Fixed(n) => n,
            };
            mq.subscribe(
                SubscribeOptions {
                    group: group.name.into(),
                    subscriptions: group.subscription_pairs(),
                    max_reconsume_times,
                    concurrency,
                    batch: DEFAULT_BATCH,
                    retry_levels: retry_levels.clone(),
                },
                handler,
            )
            .await?;
        }
        Ok::<_, MqError>(Consumers { mq, effect_tasks })
    });
    let consumers = subscribed.await.map_err(StartError::Background)??;
    let names: Vec<&str> = CONSUMER_GROUPS
        .iter()
        .filter(|g| runs(role, g.consumer))
        .map(|g| g.name)
        .collect();
    tracing::info!(role = %role, "consumer groups {} subscribed", names.join(", "));
    Ok(consumers)
}

/// Whether a process of `role` runs `consumer`'s group: a system's own
/// process runs that system's group only; the order service every group
/// that writes the order database.
pub(super) fn runs(role: ProcessRole, consumer: Consumer) -> bool {
    match (role, consumer) {
        (ProcessRole::All, _) => true,
        (ProcessRole::Order, Consumer::System(_)) => false,
        (ProcessRole::Order, _) => true,
        (ProcessRole::System(own), Consumer::System(system)) => own == system,
        (ProcessRole::System(_), _) => false,
    }
}

/// The first wait of a refund's gateway retries within one delivery (doubling).
pub(super) const REFUND_BACKOFF: Duration = Duration::from_millis(200);

/// Binds an HTTP listener (port 0: the OS picks one).
pub(super) async fn bind_http(addr: SocketAddr) -> Result<TcpListener, StartError> {
    crate::http::bind(addr).map_err(|source| StartError::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Says loudly which public credentials are in use (only ever on loopback,
/// or with dev_mode): they are printed so that the quick start's requests
/// can be copied, and because they are public anyway.
pub(super) fn warn_public_credentials(public: &[PublicCredential]) {
    for credential in public {
        match credential {
            PublicCredential::PaymentSecret => tracing::warn!(
                "payment callbacks use the PUBLIC development secret {:?} (key id default): \
                 accepted on loopback only; set ORDERMQ_PAYMENT_SECRET",
                crate::config::DEV_PAYMENT_SECRET
            ),
            PublicCredential::LogisticsSecret => tracing::warn!(
                "carrier callbacks use the PUBLIC development secret {:?} (key id default): \
                 accepted on loopback only; set ORDERMQ_LOGISTICS_SECRET",
                crate::config::DEV_LOGISTICS_SECRET
            ),
            PublicCredential::DemoTokens => tracing::warn!(
                "no ORDERMQ_API_TOKENS: the PUBLIC demo tokens are accepted (loopback only): \
                 shop {DEMO_SHOP_TOKEN:?}, operator {DEMO_OPERATOR_TOKEN:?}; \
                 `ordermq token` makes real ones"
            ),
        }
    }
}

/// A checkpoint slower than this is logged: it competes with commits for the disk.
pub(super) const SLOW_CHECKPOINT: Duration = Duration::from_millis(50);

/// Runs the SQLite WAL checkpoint every second, off the commit path (see
/// `Store::checkpoint`), until `stop`.
pub(super) async fn checkpoint_periodically(store: Store, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        match store.checkpoint().await {
            Ok(done) => {
                for c in done.iter().filter(|c| c.took > SLOW_CHECKPOINT) {
                    tracing::warn!(
                        database = c.database,
                        took_ms = c.took.as_millis() as u64,
                        wal_frames = c.wal_frames,
                        copied_frames = c.copied_frames,
                        "slow WAL checkpoint"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will retry"),
        }
    }
}
