//! Unit-test fixtures: a temporary SQLite store with one product, the order
//! service on its group-commit writer, and a publisher that records what it
//! is given (or refuses it, as a broker that is down would). No broker.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use ordermq_domain::ports::{BoxFuture, Delivery, OrderService, PublishError, Publisher};
use ordermq_domain::view::OrderView;
use ordermq_domain::{
    Amount, NewOrder, OrderLine, OutboxMessage, PaymentId, PaymentNotice, Quantity, Sku, UserId,
    UserLimits,
};
use ordermq_store::{DemoProduct, Feed, Store, StoreOptions};
use tokio::sync::Notify;

use crate::{OrderWriter, Orders};

pub(crate) const SKU: &str = "T-1";
pub(crate) const PRICE: i64 = 1_000;

pub(crate) struct Fixture {
    pub(crate) store: Store,
    pub(crate) writer: OrderWriter,
    pub(crate) orders: Orders,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub(crate) async fn new() -> Self {
        Self::closing_after(30 * 60 * 1_000).await
    }

    /// As [`Fixture::new`], with unpaid orders closing `close_after_ms` after creation.
    pub(crate) async fn closing_after(close_after_ms: i64) -> Self {
        Self::with(close_after_ms, UserLimits::OFF).await
    }

    /// As [`Fixture::new`], holding users to `limits`.
    pub(crate) async fn limited(limits: UserLimits) -> Self {
        Self::with(30 * 60 * 1_000, limits).await
    }

    /// As [`Fixture::new`], with the change feed on: the other fixtures
    /// leave it off, as their tests count the fan-out's messages.
    pub(crate) async fn with_feed() -> Self {
        Self::open(30 * 60 * 1_000, UserLimits::OFF, Feed::On).await
    }

    async fn with(close_after_ms: i64, limits: UserLimits) -> Self {
        Self::open(close_after_ms, limits, Feed::Off).await
    }

    async fn open(close_after_ms: i64, limits: UserLimits, feed: Feed) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let options = StoreOptions {
            feed,
            ..StoreOptions::default()
        };
        let store = Store::open(&url, &options).await.expect("store opens");
        store
            .seed_catalog(&[DemoProduct {
                sku: SKU,
                name: "Test product",
                price: PRICE,
                stock: 100,
            }])
            .await
            .expect("catalog seeds");
        let (writer, _task) = OrderWriter::spawn(store.clone(), 64);
        let orders = Orders::new(
            store.clone(),
            writer.clone(),
            Arc::new(Notify::new()),
            close_after_ms,
            limits,
        );
        Self {
            store,
            writer,
            orders,
            _dir: dir,
        }
    }

    /// Creates an unpaid order of `quantity` units for `user`.
    pub(crate) async fn unpaid_order(&self, user: &str, quantity: u32) -> OrderView {
        self.orders
            .create_order(
                NewOrder::new(
                    UserId::parse(user).expect("user id"),
                    vec![OrderLine {
                        sku: Sku::parse(SKU).expect("sku"),
                        quantity: Quantity::parse(i64::from(quantity)).expect("quantity"),
                    }],
                )
                .expect("valid order"),
            )
            .await
            .expect("order created")
    }

    /// Creates an order of `quantity` units for `user` and pays it.
    pub(crate) async fn paid_order(&self, user: &str, quantity: u32) -> OrderView {
        let order = self.unpaid_order(user, quantity).await;
        self.orders
            .pay(PaymentNotice {
                order_id: order.order_id.clone(),
                payment_id: PaymentId::parse(&format!("pay-{}", order.order_id))
                    .expect("payment id"),
                amount: Amount::parse(PRICE * i64::from(quantity)).expect("amount"),
            })
            .await
            .expect("order paid");
        order
    }
}

/// Records every message it is asked to publish; refuses them while `down`.
#[derive(Default)]
pub(crate) struct RecordingPublisher {
    pub(crate) down: AtomicBool,
    /// Event ids the broker refuses, and with them every message sent in
    /// the same call (as a RocketMQ batch send fails as a whole).
    pub(crate) poison: Mutex<Vec<String>>,
    pub(crate) sent: Mutex<Vec<OutboxMessage>>,
}

impl Publisher for RecordingPublisher {
    fn publish<'a>(
        &'a self,
        batch: &'a [OutboxMessage],
    ) -> BoxFuture<'a, Vec<Result<(), PublishError>>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return batch
                    .iter()
                    .map(|_| Err(PublishError("broker down (test)".into())))
                    .collect();
            }
            let poison = self.poison.lock().expect("not poisoned");
            if batch.iter().any(|m| poison.contains(&m.event_id)) {
                return batch
                    .iter()
                    .map(|_| Err(PublishError("message refused (test)".into())))
                    .collect();
            }
            drop(poison);
            self.sent
                .lock()
                .expect("not poisoned")
                .extend(batch.iter().cloned());
            batch.iter().map(|_| Ok(())).collect()
        })
    }
}

/// `message` as the broker would deliver it to a consumer group.
pub(crate) fn delivery_of(message: &OutboxMessage) -> Delivery {
    Delivery {
        msg_id: format!("msg-{}", message.id),
        topic: message.topic.clone(),
        tag: message.tag.clone(),
        key: message.key.clone(),
        body: message.body.clone().into_bytes(),
        reconsume_times: 0,
        max_reconsume_times: 16,
    }
}

/// A third party that answers at once and counts its calls (SMS and logistics).
#[derive(Default)]
pub(crate) struct CountingGateway {
    pub(crate) calls: std::sync::atomic::AtomicUsize,
}

impl ordermq_domain::ports::SmsGateway for CountingGateway {
    fn send<'a>(
        &'a self,
        idempotency_key: &'a str,
        _to_user: &'a str,
        _text: &'a str,
    ) -> BoxFuture<'a, Result<String, ordermq_domain::ports::GatewayError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(format!("sms-{idempotency_key}")) })
    }
}

impl ordermq_domain::ports::LogisticsGateway for CountingGateway {
    fn create_shipment<'a>(
        &'a self,
        idempotency_key: &'a str,
        _order: &'a ordermq_domain::OrderPaid,
    ) -> BoxFuture<'a, Result<String, ordermq_domain::ports::GatewayError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(format!("track-{idempotency_key}")) })
    }

    fn cancel_shipment<'a>(
        &'a self,
        _idempotency_key: &'a str,
        _order_id: &'a str,
        _tracking_no: &'a str,
    ) -> BoxFuture<
        'a,
        Result<ordermq_domain::ports::Cancellation, ordermq_domain::ports::GatewayError>,
    > {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(ordermq_domain::ports::Cancellation::Cancelled) })
    }
}

/// Publishes everything due through a [`RecordingPublisher`] and returns the messages.
pub(crate) async fn relay_all(fixture: &Fixture) -> Vec<OutboxMessage> {
    let publisher = Arc::new(RecordingPublisher::default());
    let mut relay = crate::relay::Relay::new(
        fixture.store.clone(),
        fixture.writer.clone(),
        publisher.clone(),
        crate::relay::RelayOptions {
            owner: "relay-test".into(),
            batch_size: 1_000,
            linger: std::time::Duration::ZERO,
            park_after: 20,
        },
    );
    relay.round().await;
    relay.finish().await;
    publisher.sent.lock().expect("not poisoned").clone()
}

/// The event keys the tests' handlers derive coupon codes with.
pub(crate) fn event_keys() -> ordermq_domain::signing::Keyring {
    ordermq_domain::signing::Keyring::new([("test".to_owned(), b"test-event-secret")])
        .expect("a valid keyring")
}
