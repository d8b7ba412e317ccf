//! Wiring: builds every component from a [`Config`] and runs them until shutdown.
//!
//! `Application::build` is a list of named steps, one function per component:
//! before anything else the credentials are resolved and checked (ordermq
//! refuses to start with a public secret or the demo tokens where others
//! can reach it); then it resolves the event keys, opens the databases,
//! starts the embedded broker (when no NameServer is configured), connects
//! the producer (signing events, with ACL credentials if set), subscribes
//! every consumer group of the topology table (verifying events, parking
//! failures in the store) and binds the HTTP listeners (the API, and
//! operator routes on their own when `operator_http_addr` is set), each
//! with the server's timeouts and connection cap. `run_until_stopped` serves
//! until the shutdown future completes, then stops everything in reverse:
//! HTTP first (no new payments), then the relay, the consumers, the broker,
//! and the databases last.
//!
//! This file is that order; each step's function is in `steps`.
//!
//! Roles (`role`): the same steps build every process; the role decides
//! which databases the store opens, which consumer groups subscribe
//! (`steps::runs`), whether the order service's relay, reconciler and
//! sweep run (where the order database is), whose receipts are relayed,
//! and which routes the HTTP listener serves. A second composition per
//! role would let the parts drift apart.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use ordermq_api::auth::Auth;
use ordermq_api::rate_limit::RateLimits;
use ordermq_api::routes::Listener;
use ordermq_api::session::Sessions;
use ordermq_api::signature::CallbackSigner;
use ordermq_api::{ApiState, router_for};
use ordermq_domain::System;
use ordermq_domain::ports::{ParkingLot, StorageError};
#[cfg(feature = "embedded-broker")]
use ordermq_messaging::EmbeddedBroker;
use ordermq_messaging::{ClientSecurity, Deliveries, MqClient, MqError};
use ordermq_store::{DemoProduct, OpenError, Store};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use ordermq_gateways::FakeGateway;
use ordermq_service::reconcile::{self, ReconcileCounters, ReconcileOptions, Reconciler};
use ordermq_service::relay::{self, RelayOptions};
use ordermq_service::{FlashSales, FlashSettings, OrderWriter, Orders, sweep};

use crate::config::{Config, ConfigError, ProcessRole, SecurityError};
use crate::event_keys::{EventKeysError, event_keys};
use crate::gateways::{Gateways, GatewaysError};
use crate::http::HttpLimits;
use crate::runtime::Background;

mod steps;
use steps::{
    OrderSide, bind_http, checkpoint_periodically, connect_producer, open_store,
    start_fanout_runtime, start_or_find_broker, subscribe_consumers, warn_public_credentials,
};

/// The demo catalog seeded on first start (prices in cents).
pub const DEMO_CATALOG: &[DemoProduct] = &[
    DemoProduct {
        sku: "SKU-1",
        name: "Mechanical keyboard",
        price: 8_900,
        stock: 10_000,
    },
    DemoProduct {
        sku: "SKU-2",
        name: "Wireless mouse",
        price: 2_950,
        stock: 10_000,
    },
    DemoProduct {
        sku: "SKU-3",
        name: "27-inch monitor",
        price: 22_900,
        stock: 5_000,
    },
    DemoProduct {
        sku: "SKU-4",
        name: "USB-C hub",
        price: 3_499,
        stock: 20_000,
    },
    DemoProduct {
        sku: "SKU-5",
        name: "Laptop stand",
        price: 4_500,
        stock: 100,
    },
    DemoProduct {
        sku: "FLASH-1",
        name: "Flash-sale headphones (limited)",
        price: 999,
        stock: 10,
    },
];

/// Why ordermq could not start (or stopped serving).
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    EventKeys(#[from] EventKeysError),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot get randomness from the operating system for the session key: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("cannot seed the demo catalog")]
    Seed(#[source] StorageError),
    #[error("cannot read the database's durability settings")]
    Durability(#[source] StorageError),
    #[error(
        "the database would lose acknowledged commits in a crash ({0}): fix the server, \
         or set ORDERMQ_DATABASE_ALLOW_UNSAFE_DURABILITY=true (test servers only)"
    )]
    UnsafeDurability(String),
    #[error(transparent)]
    Messaging(#[from] MqError),
    #[error("cannot set up the third parties")]
    Gateways(#[from] GatewaysError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
    #[error("cannot start the fan-out runtime")]
    Runtime(#[source] std::io::Error),
    #[error("a start-up task on the fan-out runtime failed")]
    Background(#[source] tokio::task::JoinError),
    #[error(
        "no RocketMQ NameServer configured, and this build has no embedded broker: \
         set ORDERMQ_NAMESRV_ADDR, or build with the `embedded-broker` feature"
    )]
    NoNameServer,
}

/// Stands in for the embedded broker in a build without it: no value exists.
#[cfg(not(feature = "embedded-broker"))]
#[derive(Debug)]
enum EmbeddedBroker {}

#[cfg(not(feature = "embedded-broker"))]
impl EmbeddedBroker {
    async fn shutdown(self) {
        match self {}
    }
}

/// How long an instance believes "nothing left to lease" for a flash sale
/// before asking the database again: units come back (rejected attempts,
/// sale orders closed unpaid) at most this much later to the crowd.
const FLASH_SOLD_OUT_RECHECK: Duration = Duration::from_millis(500);

/// The consumer side, started on the fan-out runtime.
struct Consumers {
    mq: MqClient,
    effect_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A built, not yet serving, ordermq.
pub struct Application {
    /// What this process runs (`role`).
    role: ProcessRole,
    listener: TcpListener,
    http_addr: SocketAddr,
    /// The operator routes' own listener, when `operator_http_addr` is set.
    operator_listener: Option<(TcpListener, SocketAddr)>,
    auth: Auth,
    store: Store,
    broker: Option<EmbeddedBroker>,
    mq: MqClient,
    namesrv_addr: String,
    orders: Orders,
    flash: FlashSales,
    writer: OrderWriter,
    close_sweep_interval: Duration,
    carrier_signer: CallbackSigner,
    gateways: Gateways,
    /// The group-commit writers: orders, then one per downstream system.
    writer_tasks: Vec<tokio::task::JoinHandle<()>>,
    signer: CallbackSigner,
    relay_wake: Arc<Notify>,
    relay_options: RelayOptions,
    reconciler: Reconciler,
    reconcile_interval: Duration,
    http_limits: HttpLimits,
    rate_limits: RateLimits,
    /// Dropped last: the tasks above that run on it are stopped first.
    background: Background,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("http_addr", &self.http_addr)
            .field("namesrv_addr", &self.namesrv_addr)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Builds every component in dependency order; nothing serves yet.
    ///
    /// # Errors
    /// [`StartError`] names the component that could not start; whatever was
    /// started before it is dropped (and so stopped).
    pub async fn build(config: &Config) -> Result<Self, StartError> {
        let security = config.security()?;
        warn_public_credentials(&security.public);
        // The steps that hold RocketMQ futures are boxed: nested, those
        // futures are deep enough to pass the compiler's layout depth limit
        // in every crate that awaits `build`.
        let gateways = Gateways::from_config(config)?;
        gateways.warn_about_fakes();
        let keys = event_keys(config)?;
        let background = start_fanout_runtime(config)?;
        let store = open_store(config).await?;
        let (broker, namesrv_addr) = Box::pin(start_or_find_broker(config, &background)).await?;
        let client_security = ClientSecurity {
            event_keys: Some(keys.clone()),
            parking: Some(Arc::new(store.clone()) as Arc<dyn ParkingLot>),
            acl: config.rocketmq_acl(),
        };
        let mq = Box::pin(connect_producer(
            config,
            &background,
            &namesrv_addr,
            client_security,
        ))
        .await?;
        let relay_wake = Arc::new(Notify::new());
        let (writer, writer_task) = OrderWriter::spawn_parallel(
            store.clone(),
            config.write_batch_max,
            config.write_linger,
            config.postgres_writers,
        );
        let Consumers { mq, effect_tasks } = Box::pin(subscribe_consumers(
            config,
            &background,
            mq,
            &store,
            OrderSide {
                writer: &writer,
                relay_wake: &relay_wake,
            },
            &gateways,
            &keys,
        ))
        .await?;
        let mut writer_tasks = vec![writer_task];
        writer_tasks.extend(effect_tasks);
        let listener = bind_http(config.http_addr).await?;
        let http_addr = listener.local_addr().map_err(StartError::Serve)?;
        // A system's own process serves no operator routes.
        let operator_addr = config
            .operator_http_addr
            .filter(|_| !matches!(config.role, ProcessRole::System(_)));
        let operator_listener = match operator_addr {
            Some(addr) => {
                let listener = bind_http(addr).await?;
                let addr = listener.local_addr().map_err(StartError::Serve)?;
                Some((listener, addr))
            }
            None => None,
        };
        // The dashboard's cookie is Secure unless it is served on loopback (plain http).
        let dashboard_addr = operator_listener
            .as_ref()
            .map_or(http_addr, |(_, addr)| *addr);
        let sessions = Sessions::random(!dashboard_addr.ip().is_loopback())
            .map_err(|e| StartError::Random(e.to_string()))?;
        let auth = Auth::new(security.tokens, sessions);
        let (signer, carrier_signer) = (security.payment, security.carrier);
        let reconcile_counters = Arc::new(ReconcileCounters::default());
        let reconciler = Reconciler::new(
            store.clone(),
            ReconcileOptions {
                after: config.reconcile_after,
                interval: config.reconcile_interval,
                window: config.reconcile_window,
                batch: config.reconcile_batch as usize,
                max: config.reconcile_max,
            },
            reconcile_counters.clone(),
        );
        Ok(Self {
            role: config.role,
            listener,
            http_addr,
            operator_listener,
            auth,
            orders: Orders::new(
                store.clone(),
                writer.clone(),
                relay_wake.clone(),
                config.order_close_after.as_millis() as i64,
                config.user_limits(),
            )
            .with_reconcile(reconcile_counters)
            .with_deliveries(Arc::new(mq.deliveries())),
            flash: FlashSales::new(
                store.clone(),
                writer.clone(),
                relay_wake.clone(),
                FlashSettings {
                    // A new name per start: a crashed instance's lease
                    // expires and goes back to the sale (flash_sale_lease_ttl).
                    owner: format!("flash-{:016x}", fastrand::u64(..)),
                    chunk: config.flash_sale_lease_chunk,
                    lease_ttl: config.flash_sale_lease_ttl,
                    sold_out_recheck: FLASH_SOLD_OUT_RECHECK,
                },
            ),
            writer,
            close_sweep_interval: config.close_sweep_interval,
            carrier_signer,
            gateways,
            writer_tasks,
            store,
            broker,
            mq,
            namesrv_addr,
            signer,
            relay_wake,
            relay_options: RelayOptions {
                owner: format!("relay-{:08x}", fastrand::u32(..)),
                batch_size: config.relay_batch_size,
                linger: config.relay_linger,
                park_after: config.relay_park_after_attempts,
            },
            reconciler,
            reconcile_interval: config.reconcile_interval,
            http_limits: HttpLimits::from_config(config),
            rate_limits: RateLimits::new(config.rate_settings()),
            background,
        })
    }

    /// The address the HTTP API listens on (the real port when configured as 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The NameServer address in use (embedded or configured).
    pub fn namesrv_addr(&self) -> &str {
        &self.namesrv_addr
    }

    /// What this process runs.
    pub fn role(&self) -> ProcessRole {
        self.role
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The reconciler (tests and tools run a pass with it at a time of their choosing).
    pub fn reconciler(&self) -> &Reconciler {
        &self.reconciler
    }

    /// The operator listener's address, when operator routes have their own.
    pub fn operator_addr(&self) -> Option<SocketAddr> {
        self.operator_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// Verifies (and, for tests and tools, signs) payment callbacks.
    pub fn signer(&self) -> &CallbackSigner {
        &self.signer
    }

    /// What each consumer group's handler was given and how it answered.
    pub fn deliveries(&self) -> Deliveries {
        self.mq.deliveries()
    }

    /// The fake SMS gateway, to change its behaviour in fault tests
    /// (`None` when the SMS gateway is reached over HTTP).
    pub fn sms_gateway(&self) -> Option<Arc<FakeGateway>> {
        self.gateways.fakes.sms.clone()
    }

    /// The fake logistics system, to change its behaviour in fault tests
    /// (`None` over HTTP).
    pub fn logistics_gateway(&self) -> Option<Arc<FakeGateway>> {
        self.gateways.fakes.logistics.clone()
    }

    /// The fake payment gateway (refunds), to change its behaviour in fault
    /// tests (`None` over HTTP).
    pub fn payment_gateway(&self) -> Option<Arc<FakeGateway>> {
        self.gateways.fakes.payments.clone()
    }

    /// Signs carrier callbacks (tests and tools).
    pub fn carrier_signer(&self) -> &CallbackSigner {
        &self.carrier_signer
    }

    /// Serves until `shutdown` completes, then stops every component in order.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let stop = CancellationToken::new();
        // The order service's work runs where the order database is.
        let orders_here = self.store.holds_orders();
        let relay = orders_here.then(|| {
            self.background.handle().spawn(relay::run(
                self.store.clone(),
                self.writer.clone(),
                self.mq.publisher(),
                self.relay_wake.clone(),
                self.relay_options.clone(),
                stop.clone(),
            ))
        });
        // Each downstream system's receipts, by the same relay, where its
        // database is.
        let receipt_relays: Vec<_> = System::ALL
            .into_iter()
            .filter(|system| self.store.holds(*system))
            .map(|system| {
                let options = RelayOptions {
                    owner: format!("{}-{}", system.name(), self.relay_options.owner),
                    ..self.relay_options.clone()
                };
                self.background.handle().spawn(relay::run_receipts(
                    self.store.clone(),
                    system,
                    self.mq.publisher(),
                    options,
                    stop.clone(),
                ))
            })
            .collect();
        let reconciler = (orders_here && !self.reconcile_interval.is_zero())
            .then(|| tokio::spawn(reconcile::run(self.reconciler.clone(), stop.clone())));
        let checkpointer = tokio::spawn(checkpoint_periodically(self.store.clone(), stop.clone()));
        let sweeper = orders_here.then(|| {
            tokio::spawn(sweep::sweep_overdue(
                self.store.clone(),
                self.writer.clone(),
                self.close_sweep_interval,
                stop.clone(),
            ))
        });
        let state = ApiState {
            service: Arc::new(self.orders.clone()),
            flash: Arc::new(self.flash.clone()),
            signer: self.signer.clone(),
            carrier_signer: self.carrier_signer.clone(),
            auth: self.auth.clone(),
            rate_limits: self.rate_limits.clone(),
        };
        let http_stop = CancellationToken::new();
        let on_shutdown = {
            let http_stop = http_stop.clone();
            async move {
                shutdown.await;
                http_stop.cancel();
            }
        };
        let stopper = tokio::spawn(on_shutdown);
        let operator = self.operator_listener.map(|(listener, addr)| {
            tracing::info!("operator routes and the dashboard on http://{addr} (only there)");
            let app = router_for(state.clone(), Listener::Operator);
            tokio::spawn(crate::http::serve(
                listener,
                app,
                self.http_limits,
                http_stop.clone().cancelled_owned(),
            ))
        });
        let listener_kind = match (self.role, operator.is_some()) {
            (ProcessRole::System(_), _) => Listener::System,
            (_, true) => Listener::Public,
            (_, false) => Listener::Combined,
        };
        tracing::info!(
            role = %self.role,
            "ordermq serving on http://{} ({})",
            self.http_addr,
            match listener_kind {
                Listener::System => "a user's records at /api/users/{id}",
                Listener::Combined => "API under /api, dashboard at /",
                _ => "API under /api",
            }
        );
        let mut served = crate::http::serve(
            self.listener,
            router_for(state, listener_kind),
            self.http_limits,
            http_stop.clone().cancelled_owned(),
        )
        .await;
        // If one listener fails, stop the other too.
        http_stop.cancel();
        if let Some(operator) = operator {
            let operator_served = operator
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            served = served.and(operator_served);
        }
        stopper.abort();
        tracing::info!("shutting down: HTTP stopped; stopping relay, consumers and broker");
        stop.cancel();
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        let _ = join_all(receipt_relays).await;
        if let Some(reconciler) = reconciler {
            let _ = reconciler.await;
        }
        let _ = checkpointer.await;
        if let Some(sweeper) = sweeper {
            let _ = sweeper.await;
        }
        // Consumers are stopped, so only our handles keep the writers alive:
        // dropping them lets each writer finish what is queued, then stop.
        drop(self.orders);
        drop(self.writer);
        let _ = self.background.run(self.mq.shutdown()).await;
        // One deadline for all writers: each finishes what is queued, but a
        // listener the RocketMQ client still references keeps its writer's
        // channel open, so do not wait for the channels to close.
        let _ = tokio::time::timeout(Duration::from_secs(2), join_all(self.writer_tasks)).await;
        if let Some(broker) = self.broker {
            let _ = self.background.run(broker.shutdown()).await;
        }
        self.store.close().await;
        tracing::info!("ordermq stopped");
        served.map_err(StartError::Serve)
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
