//! Playing another producer on ordermq's broker: an event built as the
//! outbox would hold it, published by a client that is not ordermq.
//!
//! Why here: the end-to-end tests and the fault suite's `security` scenario
//! both send forged events (unsigned, or signed with keys ordermq does not
//! hold) straight to the broker and check that no group applies them; the
//! event and the producer are written once for both.

use ordermq_domain::event::{OrderPaid, PaidLine};
use ordermq_domain::signing::Keyring;
use ordermq_domain::{
    Amount, OrderEvent, OrderId, OutboxMessage, PaymentId, Sku, TOPIC_ORDER_PAY_SUCCESS, UserId,
    now_millis,
};
use ordermq_messaging::{ClientSecurity, DelayedDelivery, MqClient, MqError};

/// An `OrderPaid` for `order_id` (one unit of `sku` at `amount`), as the
/// outbox would hold it: the body a forger copies from a real event.
///
/// # Panics
/// If `order_id`, `user` or `sku` is not a valid identifier, or `amount` is
/// not a valid amount (test input).
pub fn order_paid(order_id: &str, user: &str, sku: &str, amount: i64) -> OutboxMessage {
    let event = OrderEvent::OrderPaid(OrderPaid {
        order_id: OrderId::parse(order_id).expect("an order id"),
        user_id: UserId::parse(user).expect("a user id"),
        payment_id: PaymentId::parse(&format!("pay-{order_id}")).expect("a payment id"),
        amount: Amount::parse(amount).expect("an amount"),
        paid_at: now_millis(),
        lines: vec![PaidLine {
            sku: Sku::parse(sku).expect("a SKU"),
            quantity: 1,
            unit_price: Amount::parse(amount).expect("an amount"),
        }],
    });
    OutboxMessage {
        id: 0,
        topic: TOPIC_ORDER_PAY_SUCCESS.into(),
        tag: event.kind().tag().into(),
        key: order_id.into(),
        event_id: event.event_id(),
        body: event.to_json(),
        deliver_at: None,
        attempts: 0,
    }
}

/// A producer on the broker behind `namesrv_addr` that is not ordermq: it
/// signs with `keys` (`None`: unsigned), as another team's producer on a
/// shared cluster, or an attacker, would. Shut it down when done.
///
/// # Errors
/// [`MqError`] when it cannot reach the NameServer or start its producer.
pub async fn foreign_producer(
    namesrv_addr: &str,
    keys: Option<Keyring>,
) -> Result<MqClient, MqError> {
    MqClient::connect_with(
        namesrv_addr,
        "foreign_producer_group",
        DelayedDelivery::default(),
        ClientSecurity {
            event_keys: keys,
            ..ClientSecurity::default()
        },
    )
    .await
}

/// Publishes `message` from a [`foreign_producer`] signing with `keys`,
/// trying a refused send again up to twice, half a second apart, as a
/// RocketMQ producer does by default (`retryTimesWhenSendFailed` = 2): a
/// fresh producer's first send to a broker busy with its own flushes can be
/// refused once (seen on a loaded 2-core machine as "Broker operation
/// failed"), and the tests that use this are about what the consumers do
/// with the message, not about that send.
///
/// # Errors
/// [`MqError`] when the producer cannot start; a send refused three times is
/// returned as its last error text.
pub async fn publish_as(
    namesrv_addr: &str,
    keys: Option<Keyring>,
    message: &OutboxMessage,
) -> Result<(), String> {
    let producer = foreign_producer(namesrv_addr, keys)
        .await
        .map_err(|e| e.to_string())?;
    let mut result = Ok(());
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        result = producer
            .publisher()
            .publish(std::slice::from_ref(message))
            .await
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), |e| Err(e.to_string()));
        if result.is_ok() {
            break;
        }
    }
    producer.shutdown().await;
    result
}
