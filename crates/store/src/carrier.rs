//! Carrier callbacks: the shipment must be the order's, a repeat changes
//! nothing, the order only moves forward (PAID → SHIPPED → DELIVERED,
//! guarded), and a `ShipmentUpdated` event tells the warehouse. Where the
//! warehouse runs as its own process, the order service checks the
//! shipment against the tracking numbers the warehouse's receipts carried.
//!
//! Operation module: it imports only the base, leaves and the handle.

use ordermq_domain::event::ShipmentUpdated;
use ordermq_domain::ports::StorageError;
use ordermq_domain::view::CarrierReceipt;
use ordermq_domain::{CarrierUpdate, CarrierUpdateError, OrderEvent, OrderId, System};
use sqlx::Row;

use crate::dialect;
use crate::fail::{status_of, storage};
use crate::feed;
use crate::history::record_history;
use crate::outbox;
use crate::store::{Db, Store};
use ordermq_domain::feed::FeedChange;

impl Store {
    /// The tracking number of the order's shipment, if the warehouse booked
    /// one: from the warehouse's table where this store holds it, else (the
    /// warehouse runs as its own process) from the warehouse's receipts.
    pub async fn tracking_no_of(&self, order_id: &OrderId) -> Result<Option<String>, StorageError> {
        if !self.holds(System::Warehouse) {
            return dialect::query("SELECT tracking_no FROM shipment_receipts WHERE order_id = $1")
                .bind(order_id.as_str())
                .fetch_optional(&self.receipts)
                .await
                .map_err(storage)?
                .map(|r| r.try_get("tracking_no").map_err(storage))
                .transpose();
        }
        self.tracking_no(
            "SELECT tracking_no FROM warehouse_shipments WHERE order_id = $1",
            order_id,
        )
        .await
    }

    /// The tracking number of the order's shipment if the carrier has not
    /// collected it yet (`CREATED`): the booking a full refund cancels.
    pub async fn cancellable_tracking_no(
        &self,
        order_id: &OrderId,
    ) -> Result<Option<String>, StorageError> {
        self.tracking_no(
            "SELECT tracking_no FROM warehouse_shipments WHERE order_id = $1 AND status = 'CREATED'",
            order_id,
        )
        .await
    }

    /// The `tracking_no` of the one shipment `query` finds for the order.
    async fn tracking_no(
        &self,
        query: &'static str,
        order_id: &OrderId,
    ) -> Result<Option<String>, StorageError> {
        dialect::query(query)
            .bind(order_id.as_str())
            .fetch_optional(self.system_pool(System::Warehouse))
            .await
            .map_err(storage)?
            .map(|r| r.try_get("tracking_no").map_err(storage))
            .transpose()
    }

    /// Applies a carrier's update: the shipment must be the order's; a repeated
    /// update changes nothing; the order only moves forward (PAID → SHIPPED →
    /// DELIVERED, guarded); a `ShipmentUpdated` event tells the warehouse.
    pub async fn carrier_update(
        &self,
        update: &CarrierUpdate,
        now: i64,
    ) -> Result<CarrierReceipt, CarrierUpdateError> {
        let order_id = update.order_id.as_str();
        match self.tracking_no_of(&update.order_id).await? {
            Some(tracking) if tracking == update.tracking_no.as_str() => {}
            Some(_) => {
                return Err(CarrierUpdateError::TrackingMismatch {
                    order_id: order_id.to_owned(),
                    given: update.tracking_no.to_string(),
                });
            }
            None => {
                let exists = dialect::query("SELECT 1 AS one FROM orders WHERE order_id = $1")
                    .bind(order_id)
                    .fetch_optional(&self.orders)
                    .await
                    .map_err(storage)?
                    .is_some();
                return Err(if exists {
                    CarrierUpdateError::ShipmentNotFound(order_id.to_owned())
                } else {
                    CarrierUpdateError::OrderNotFound(order_id.to_owned())
                });
            }
        }
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        let fresh = dialect::query(
            "INSERT INTO carrier_events (order_id, status, tracking_no, received_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (order_id, status) DO NOTHING",
        )
        .bind(order_id)
        .bind(update.status.as_str())
        .bind(update.tracking_no.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(storage)?
        .rows_affected()
            == 1;
        let raw: String = dialect::query("SELECT status FROM orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage)?
            .ok_or_else(|| CarrierUpdateError::OrderNotFound(order_id.to_owned()))?
            .try_get("status")
            .map_err(storage)?;
        let current = status_of(&raw)?;
        if !fresh {
            return Ok(CarrierReceipt {
                order_id: update.order_id.clone(),
                status: current,
                applied: false,
                duplicate: true,
            });
        }
        let target = update.status.order_status();
        let mut status = current;
        if current != target && current.can_become(target) {
            let moved = dialect::query(
                "UPDATE orders SET status = $1, updated_at = $2, order_seq = order_seq + 1 \
                 WHERE order_id = $3 AND status = $4",
            )
            .bind(target.as_str())
            .bind(now)
            .bind(order_id)
            .bind(current.as_str())
            .execute(&mut *tx)
            .await
            .map_err(storage)?
            .rows_affected()
                == 1;
            if moved {
                record_history(&mut tx, order_id, Some(current), target, now)
                    .await
                    .map_err(storage)?;
                let change = match target {
                    ordermq_domain::OrderStatus::Shipped => FeedChange::Shipped,
                    _ => FeedChange::Delivered,
                };
                feed::record(&mut tx, self.feed, order_id, change, now)
                    .await
                    .map_err(storage)?;
                status = target;
            }
        }
        let event = OrderEvent::ShipmentUpdated(ShipmentUpdated {
            order_id: update.order_id.clone(),
            tracking_no: update.tracking_no.clone(),
            status: update.status,
            at: now,
        });
        outbox::enqueue(&mut tx, &event, None, now)
            .await
            .map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        Ok(CarrierReceipt {
            order_id: update.order_id.clone(),
            status,
            applied: true,
            duplicate: false,
        })
    }
}
