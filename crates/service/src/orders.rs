//! The order service behind the HTTP API: the store plus what the store does
//! not do — minting order and refund ids (from a cryptographic generator), routing writes through the group-commit
//! [`OrderWriter`], holding the per-user limits every create is checked
//! against (in the store's transaction; a line no user could ever order is
//! refused before it is queued), and waking the relay after a payment
//! commits, so a paid event leaves within milliseconds instead of on the
//! next poll.

use std::sync::Arc;

use ordermq_domain::ports::{BoxFuture, DeliveryCounts, OrderService, StorageError};
use ordermq_domain::view::{
    CarrierReceipt, OrderView, PaymentReceipt, RefundView, Stats, UserActivity,
};
use ordermq_domain::{
    Actor, CarrierUpdate, CarrierUpdateError, CreateOrderError, NewOrder, OrderId, PayOrderError,
    PaymentNotice, Product, RefundError, RefundId, RefundRequest, RetryRefundError, UserId,
    UserLimits, now_millis,
};
use ordermq_store::{Store, WriteOp};
use tokio::sync::Notify;

use crate::group_commit::OrderWriter;
use crate::reconcile::ReconcileCounters;

/// 64 bits from the operating system's cryptographic generator, for the
/// random part of order and refund ids: an id cannot be predicted from
/// another (fastrand's generator could be, from a few outputs).
pub(crate) fn random_suffix() -> Result<u64, StorageError> {
    // The OS generator does not fail once the system has booted; if it ever
    // did, nothing was written and the client may retry (503).
    getrandom::u64().map_err(|e| {
        StorageError::unavailable(format!("the system's random generator failed: {e}"))
    })
}

#[derive(Debug, Clone)]
pub struct Orders {
    store: Store,
    writer: OrderWriter,
    relay_wake: Arc<Notify>,
    close_after_ms: i64,
    limits: UserLimits,
    reconcile: Option<Arc<ReconcileCounters>>,
    deliveries: Option<Arc<dyn DeliveryCounts>>,
}

impl Orders {
    /// An unpaid order closes itself `close_after_ms` after creation; a user
    /// may hold what `limits` allow in unpaid orders.
    pub fn new(
        store: Store,
        writer: OrderWriter,
        relay_wake: Arc<Notify>,
        close_after_ms: i64,
        limits: UserLimits,
    ) -> Self {
        Self {
            store,
            writer,
            relay_wake,
            close_after_ms,
            limits,
            reconcile: None,
            deliveries: None,
        }
    }

    /// `/api/stats` shows the reconciler's counts from `counters`.
    pub fn with_reconcile(mut self, counters: Arc<ReconcileCounters>) -> Self {
        self.reconcile = Some(counters);
        self
    }

    /// `/api/stats` shows this instance's consumer groups' deliveries from
    /// `counts`.
    pub fn with_deliveries(mut self, counts: Arc<dyn DeliveryCounts>) -> Self {
        self.deliveries = Some(counts);
        self
    }
}

impl OrderService for Orders {
    fn products(&self) -> BoxFuture<'_, Result<Vec<Product>, StorageError>> {
        Box::pin(self.store.products())
    }

    fn create_order(&self, order: NewOrder) -> BoxFuture<'_, Result<OrderView, CreateOrderError>> {
        Box::pin(async move {
            self.limits.check_lines(&order)?;
            let now = now_millis();
            let order_id = OrderId::generate(now, random_suffix()?);
            let view = self
                .writer
                .create(WriteOp::Create {
                    order,
                    order_id,
                    close_after_ms: Some(self.close_after_ms),
                    limits: self.limits,
                })
                .await?;
            // Its delayed close is in the outbox: hand it to the broker now.
            self.relay_wake.notify_one();
            Ok(view)
        })
    }

    fn pay(&self, notice: PaymentNotice) -> BoxFuture<'_, Result<PaymentReceipt, PayOrderError>> {
        Box::pin(async move {
            let receipt = self.writer.pay(WriteOp::Pay(notice)).await?;
            if !receipt.duplicate {
                self.relay_wake.notify_one();
            }
            Ok(receipt)
        })
    }

    fn order(&self, id: OrderId) -> BoxFuture<'_, Result<Option<OrderView>, StorageError>> {
        Box::pin(async move { self.store.order(&id).await })
    }

    fn user_activity(&self, user: UserId) -> BoxFuture<'_, Result<UserActivity, StorageError>> {
        Box::pin(async move { self.store.user_activity(&user).await })
    }

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StorageError>> {
        Box::pin(async move {
            let mut stats = self.store.stats().await?;
            stats.group_commit = self.writer.group_commit();
            if let Some(reconcile) = &self.reconcile {
                stats.reconcile = reconcile.snapshot();
            }
            if let Some(deliveries) = &self.deliveries {
                stats.deliveries = deliveries.by_group();
            }
            Ok(stats)
        })
    }

    fn refund(&self, request: RefundRequest) -> BoxFuture<'_, Result<RefundView, RefundError>> {
        Box::pin(async move {
            let now = now_millis();
            let refund_id = RefundId::generate(now, random_suffix()?);
            let view = self.store.request_refund(&request, &refund_id, now).await?;
            if !view.duplicate {
                self.relay_wake.notify_one();
            }
            Ok(view)
        })
    }

    fn retry_refund(
        &self,
        refund_id: RefundId,
        actor: Actor,
    ) -> BoxFuture<'_, Result<RefundView, RetryRefundError>> {
        Box::pin(async move {
            let view = self
                .store
                .retry_refund(&refund_id, Some(&actor), now_millis())
                .await?;
            self.relay_wake.notify_one();
            Ok(view)
        })
    }

    fn carrier_update(
        &self,
        update: CarrierUpdate,
    ) -> BoxFuture<'_, Result<CarrierReceipt, CarrierUpdateError>> {
        Box::pin(async move {
            let receipt = self.store.carrier_update(&update, now_millis()).await?;
            if receipt.applied {
                self.relay_wake.notify_one();
            }
            Ok(receipt)
        })
    }
}

#[cfg(test)]
mod tests {
    use ordermq_domain::ports::OrderService;
    use ordermq_domain::{
        CreateOrderError, NewOrder, OrderLine, Quantity, Sku, UserId, UserLimits,
    };

    use crate::testing::{Fixture, SKU};

    fn order(user: &str, quantity: i64) -> NewOrder {
        NewOrder::new(
            UserId::parse(user).unwrap(),
            vec![OrderLine {
                sku: Sku::parse(SKU).unwrap(),
                quantity: Quantity::parse(quantity).unwrap(),
            }],
        )
        .unwrap()
    }

    /// The service's limits reach the store's transaction: the third unpaid
    /// order of a user is refused and reserves nothing, another user is not
    /// affected, and a line over the per-SKU limit is refused before it is
    /// queued.
    #[tokio::test]
    async fn creates_are_held_to_the_services_limits() {
        let fixture = Fixture::limited(UserLimits::new(2, 5)).await;
        fixture.unpaid_order("hoarder", 1).await;
        fixture.unpaid_order("hoarder", 1).await;
        let third = fixture.orders.create_order(order("hoarder", 1)).await;
        assert!(
            matches!(
                third,
                Err(CreateOrderError::TooManyUnpaidOrders { limit: 2 })
            ),
            "{third:?}"
        );
        assert_eq!(fixture.store.stock(SKU).await.unwrap(), Some((100, 2)));
        let too_many_units = fixture.orders.create_order(order("other", 6)).await;
        assert!(
            matches!(
                too_many_units,
                Err(CreateOrderError::SkuLimitExceeded {
                    limit: 5,
                    held: 0,
                    requested: 6,
                    ..
                })
            ),
            "{too_many_units:?}"
        );
        fixture.unpaid_order("other", 5).await;
        assert_eq!(fixture.store.stock(SKU).await.unwrap(), Some((100, 7)));
    }
}
