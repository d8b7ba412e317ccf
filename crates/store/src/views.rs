//! The views that read across modules: the order page (the order, its
//! refunds, each system's progress) and the dashboard's counters.
//!
//! Dispatcher-level module: it composes the operation modules' reads
//! (`refunds`, `effects::read`, `relay`), and nothing imports it.

use std::collections::BTreeMap;

use ordermq_domain::ports::StorageError;
use ordermq_domain::view::{
    OperatorAction, OrderLineView, OrderView, Stats, StatusChange, SystemStats,
};
use ordermq_domain::{
    Actor, Amount, EventKind, FanoutState, OrderEvent, OrderId, PaymentId, RefundId, Sku, System,
    UserId,
};
use sqlx::any::AnyRow;

use crate::dialect;
use crate::fail::{corrupt, get, status_of, storage};
use crate::store::Store;

impl Store {
    /// Every row `sql` selects for one order (its one parameter, `$1`), each
    /// made a `T` by `decode`: the order page's lines, history and actions.
    async fn rows_of_order<T>(
        &self,
        sql: &str,
        order_id: &OrderId,
        decode: impl Fn(&AnyRow) -> Result<T, StorageError>,
    ) -> Result<Vec<T>, StorageError> {
        dialect::query(sql)
            .bind(order_id.as_str())
            .fetch_all(&self.orders)
            .await
            .map_err(storage)?
            .iter()
            .map(decode)
            .collect()
    }

    /// An order with its lines, history and each system's progress.
    pub async fn order(&self, order_id: &OrderId) -> Result<Option<OrderView>, StorageError> {
        let Some(row) = dialect::query(
            "SELECT order_id, user_id, status, amount, payment_id, created_at, paid_at, close_at \
             FROM orders WHERE order_id = $1",
        )
        .bind(order_id.as_str())
        .fetch_optional(&self.orders)
        .await
        .map_err(storage)?
        else {
            return Ok(None);
        };
        let lines = self
            .rows_of_order(
                "SELECT sku, quantity, refunded, unit_price FROM order_lines \
                 WHERE order_id = $1 ORDER BY sku",
                order_id,
                line_view,
            )
            .await?;
        let history = self
            .rows_of_order(
                "SELECT from_status, to_status, at FROM order_history \
                 WHERE order_id = $1 ORDER BY id",
                order_id,
                status_change,
            )
            .await?;
        let actions = self
            .rows_of_order(
                "SELECT action, refund_id, actor, at FROM order_actions \
                 WHERE order_id = $1 ORDER BY id",
                order_id,
                operator_action,
            )
            .await?;

        let user_id: String = get(&row, "user_id")?;
        let payment_id: Option<String> = get(&row, "payment_id")?;
        let paid_at: Option<i64> = get(&row, "paid_at")?;
        let refunds = self.refunds_of(order_id).await?;
        // The events each group is expected to handle, so one not delivered
        // yet shows as pending rather than missing.
        let paid_event = OrderEvent::paid_event_id(order_id);
        let mut expected: Vec<(System, String)> = Vec::new();
        if paid_at.is_some() {
            expected.extend(System::ALL.map(|s| (s, paid_event.clone())));
        }
        for refund in &refunds {
            let id = format!(
                "{}:{}",
                EventKind::OrderRefundRequested.tag(),
                refund.refund_id
            );
            expected.extend(System::ALL.map(|s| (s, id.clone())));
        }
        for carrier in dialect::query("SELECT status FROM carrier_events WHERE order_id = $1")
            .bind(order_id.as_str())
            .fetch_all(&self.orders)
            .await
            .map_err(storage)?
        {
            let status: String = get(&carrier, "status")?;
            expected.push((
                System::Warehouse,
                format!("{}:{order_id}:{status}", EventKind::ShipmentUpdated.tag()),
            ));
        }
        let mut consumers = self.consumer_progress(order_id, &expected).await?;
        let event_ids: Vec<String> = consumers.iter().map(|c| c.event_id.clone()).collect();
        for receipt in self.receipts_of(&event_ids).await? {
            if let Some(progress) = consumers
                .iter_mut()
                .find(|c| c.event_id == receipt.event_id && c.group == receipt.consumer_group)
            {
                progress.receipt_at = Some(receipt.applied_at);
                // A system whose database is elsewhere (`role`): its receipt
                // is what this database knows of its progress.
                let elsewhere = System::ALL
                    .into_iter()
                    .any(|s| s.consumer_group() == progress.group && !self.holds(s));
                if elsewhere {
                    progress.state = FanoutState::Done;
                    progress.applied_at = Some(receipt.applied_at);
                    progress.updated_at = Some(receipt.applied_at);
                }
            }
        }
        let fanout = System::ALL
            .into_iter()
            .map(|system| {
                let state = consumers
                    .iter()
                    .find(|p| p.group == system.consumer_group() && p.event_id == paid_event)
                    .map_or(FanoutState::Pending, |p| p.state);
                (system, state)
            })
            .collect::<BTreeMap<_, _>>();
        Ok(Some(OrderView {
            order_id: order_id.clone(),
            user_id: UserId::parse(&user_id).map_err(|_| corrupt("user id", &user_id))?,
            status: status_of(&get::<String>(&row, "status")?)?,
            amount: Amount::parse(get(&row, "amount")?)
                .map_err(|_| corrupt("amount", order_id.as_str()))?,
            payment_id: payment_id
                .as_deref()
                .map(|p| PaymentId::parse(p).map_err(|_| corrupt("payment id", p)))
                .transpose()?,
            created_at: get(&row, "created_at")?,
            paid_at,
            close_at: get(&row, "close_at")?,
            lines,
            fanout,
            history,
            actions,
            consumers,
            refunds,
        }))
    }

    /// Counters for the dashboard.
    pub async fn stats(&self) -> Result<Stats, StorageError> {
        let mut orders_by_status = BTreeMap::new();
        for row in dialect::query("SELECT status, COUNT(*) AS n FROM orders GROUP BY status")
            .fetch_all(&self.orders)
            .await
            .map_err(storage)?
        {
            orders_by_status.insert(get::<String>(&row, "status")?, get::<i64>(&row, "n")?);
        }
        let outbox_backlog = self.outbox_backlog().await?;
        let outbox_parked = self.outbox_parked().await?;
        let payments_refund_required: i64 = get(
            &dialect::query("SELECT COUNT(*) AS n FROM payments WHERE outcome = 'REFUND_REQUIRED'")
                .fetch_one(&self.orders)
                .await
                .map_err(storage)?,
            "n",
        )?;
        let mut systems = BTreeMap::new();
        for system in System::ALL {
            let (applied, failed) = self.system_counts(system).await?;
            systems.insert(system, SystemStats { applied, failed });
        }
        let mut refunds_by_status = BTreeMap::new();
        for row in dialect::query("SELECT status, COUNT(*) AS n FROM refunds GROUP BY status")
            .fetch_all(&self.orders)
            .await
            .map_err(storage)?
        {
            refunds_by_status.insert(get::<String>(&row, "status")?, get::<i64>(&row, "n")?);
        }
        let parked = self.parked_counts().await?;
        Ok(Stats {
            orders_by_status,
            outbox_backlog,
            outbox_parked,
            systems,
            payments_refund_required,
            refunds_by_status,
            parked,
            // The writer in front of the store fills this in.
            group_commit: Default::default(),
            // The reconciler fills this in.
            reconcile: Default::default(),
            // The messaging adapter's counts fill this in.
            deliveries: Default::default(),
        })
    }
}

/// One `order_lines` row as the order page shows it.
fn line_view(r: &AnyRow) -> Result<OrderLineView, StorageError> {
    let sku: String = get(r, "sku")?;
    Ok(OrderLineView {
        sku: Sku::parse(&sku).map_err(|_| corrupt("sku", &sku))?,
        quantity: u32::try_from(get::<i64>(r, "quantity")?)
            .map_err(|_| corrupt("quantity", &sku))?,
        unit_price: Amount::parse(get(r, "unit_price")?)
            .map_err(|_| corrupt("unit price", &sku))?,
        refunded: u32::try_from(get::<i64>(r, "refunded")?)
            .map_err(|_| corrupt("refunded quantity", &sku))?,
    })
}

/// One `order_history` row.
fn status_change(r: &AnyRow) -> Result<StatusChange, StorageError> {
    let from: Option<String> = get(r, "from_status")?;
    Ok(StatusChange {
        from: from.as_deref().map(status_of).transpose()?,
        to: status_of(&get::<String>(r, "to_status")?)?,
        at: get(r, "at")?,
    })
}

/// One `order_actions` row.
fn operator_action(r: &AnyRow) -> Result<OperatorAction, StorageError> {
    let refund_id: String = get(r, "refund_id")?;
    let actor: String = get(r, "actor")?;
    Ok(OperatorAction {
        action: get(r, "action")?,
        refund_id: RefundId::parse(&refund_id).map_err(|_| corrupt("refund id", &refund_id))?,
        actor: Actor::parse(&actor).map_err(|_| corrupt("actor", &actor))?,
        at: get(r, "at")?,
    })
}
