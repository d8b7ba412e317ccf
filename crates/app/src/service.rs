//! The order service behind the HTTP API: the store plus what the store does
//! not do — minting order ids, routing writes through the group-commit
//! [`OrderWriter`], and waking the relay after a payment commits, so a paid
//! event leaves within milliseconds instead of on the next poll.

use std::sync::Arc;

use ordermq_domain::ports::{BoxFuture, OrderService, StorageError};
use ordermq_domain::view::{OrderView, PaymentReceipt, Stats, UserActivity};
use ordermq_domain::{
    CreateOrderError, NewOrder, OrderId, PayOrderError, PaymentNotice, Product, UserId, now_millis,
};
use ordermq_store::{Store, WriteOp};
use tokio::sync::Notify;

use crate::writer::OrderWriter;

#[derive(Debug, Clone)]
pub struct Orders {
    store: Store,
    writer: OrderWriter,
    relay_wake: Arc<Notify>,
}

impl Orders {
    pub fn new(store: Store, writer: OrderWriter, relay_wake: Arc<Notify>) -> Self {
        Self {
            store,
            writer,
            relay_wake,
        }
    }
}

impl OrderService for Orders {
    fn products(&self) -> BoxFuture<'_, Result<Vec<Product>, StorageError>> {
        Box::pin(self.store.products())
    }

    fn create_order(&self, order: NewOrder) -> BoxFuture<'_, Result<OrderView, CreateOrderError>> {
        Box::pin(async move {
            let now = now_millis();
            let order_id = OrderId::generate(now, fastrand::u32(..));
            self.writer
                .create(WriteOp::Create { order, order_id })
                .await
        })
    }

    fn pay(&self, notice: PaymentNotice) -> BoxFuture<'_, Result<PaymentReceipt, PayOrderError>> {
        Box::pin(async move {
            let receipt = self.writer.pay(WriteOp::Pay(notice)).await?;
            if !receipt.duplicate && !receipt.refund_required {
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
        Box::pin(self.store.stats())
    }
}
