//! Group commit: many writes in **one** transaction, one fsync for all.
//!
//! The order database's batch ([`Store::write_batch`]: creates, payments,
//! closes, the relay's round) and a system's batch of effects
//! ([`Store::apply_effects`]). On SQLite, the hot part of each runs on its
//! database's lane (`lane`); the rest, and every backend's batch, through
//! sqlx, each operation in its own savepoint.
//!
//! Dispatcher: it imports operation modules and nothing imports it.

use std::time::{Duration, Instant};

use ordermq_domain::ports::StorageError;
use ordermq_domain::view::{OrderView, PaymentReceipt};
use ordermq_domain::{
    CreateOrderError, Effect, NewOrder, OrderId, OutboxMessage, PayOrderError, PaymentNotice,
    UserLimits,
};
use sqlx::AnyConnection;

use crate::close::{CloseOutcome, close_order_in};
use crate::dialect;
use crate::effects::write::apply_effects_in;
use crate::effects::{Applied, EffectRecord, lane_handles};
use crate::fail::storage;
use crate::lane::batch::{PayBatch, pay_batch};
use crate::lane::pay::FastPay;
use crate::orders::create_order_in;
use crate::outbox::ack_and_claim_in;
use crate::pay::{PAYMENTS_PER_RUN, pay_order_in, pay_run_set_based};
use crate::sql::{self, Backend, RelayRound};
use crate::store::{Db, LaneWait, Store};

/// One write of the order database, for [`Store::write_batch`].
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Creates an order that closes itself `close_after_ms` after creation if
    /// unpaid (`None`: never; tools that load data only), if its user stays
    /// within `limits` (`UserLimits::OFF`: tools that load data only).
    Create {
        order: NewOrder,
        order_id: OrderId,
        close_after_ms: Option<i64>,
        limits: UserLimits,
    },
    Pay(PaymentNotice),
    /// Closes the order if it is still unpaid and due.
    Close(OrderId),
    /// The outbox relay's round: marks `acked` rows sent and claims up to
    /// `limit` due rows for `lease_ms`. Riding in a batch, it shares the
    /// payments' commit (and fsync) instead of taking turns with them for the
    /// database's one write lock; it runs after the batch's other operations,
    /// so it already claims the events they wrote.
    RelayOutbox {
        owner: String,
        acked: Vec<i64>,
        limit: usize,
        lease_ms: i64,
    },
}

/// The outcome of one [`WriteOp`].
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per operation into its caller's oneshot; boxing the order view would cost every create an allocation"
)]
pub enum WriteResult {
    Created(Result<OrderView, CreateOrderError>),
    Paid(Result<PaymentReceipt, PayOrderError>),
    Closed(Result<CloseOutcome, StorageError>),
    Relayed(Result<Vec<OutboxMessage>, StorageError>),
}

impl WriteResult {
    fn is_ok(&self) -> bool {
        match self {
            Self::Created(r) => r.is_ok(),
            Self::Paid(r) => r.is_ok(),
            Self::Closed(r) => r.is_ok(),
            Self::Relayed(r) => r.is_ok(),
        }
    }
}

impl WriteOp {
    /// This operation's answer when the whole transaction failed.
    fn failed(&self, e: StorageError) -> WriteResult {
        match self {
            Self::Create { .. } => WriteResult::Created(Err(e.into())),
            Self::Pay(_) => WriteResult::Paid(Err(e.into())),
            Self::Close(_) => WriteResult::Closed(Err(e)),
            Self::RelayOutbox { .. } => WriteResult::Relayed(Err(e)),
        }
    }
}

/// Every operation's answer when the transaction failed with `e`: the first
/// keeps the driver's error as its source, the others (sqlx errors are not
/// `Clone`) its kind and its text.
fn fail_all(ops: &[WriteOp], e: sqlx::Error) -> Vec<WriteResult> {
    let first = storage(e);
    let kind = first.kind();
    let text = std::error::Error::source(&first).map_or_else(String::new, |s| s.to_string());
    let mut first = Some(first);
    ops.iter()
        .map(|op| {
            op.failed(
                first
                    .take()
                    .unwrap_or_else(|| StorageError::new(kind, text.clone())),
            )
        })
        .collect()
}

/// A fast-path batch slower than this is logged with where its time went.
const SLOW_COMMIT: Duration = Duration::from_millis(50);

impl Store {
    /// Runs many creates and payments in **one** transaction (group commit): one
    /// fsync for the whole batch instead of one per request. Each operation runs
    /// inside its own savepoint, so a rejected one (out of stock, amount
    /// mismatch, …) is rolled back alone and the others still commit. Results
    /// come back in order; if the commit itself fails, every operation fails.
    ///
    /// On SQLite, the payments that apply and the relay's rounds run first, on
    /// the order database's lane (see `lane`) in one transaction; the
    /// rest (creates, closes, payments that need explaining) follow through
    /// the general path in a second one.
    pub async fn write_batch(&self, ops: &[WriteOp], now: i64) -> Vec<WriteResult> {
        let fast: Vec<usize> = (0..ops.len())
            .filter(|&i| matches!(ops[i], WriteOp::Pay(_) | WriteOp::RelayOutbox { .. }))
            .collect();
        if fast.is_empty() || !(self.has_lanes() || self.pg.is_some()) {
            return self.write_batch_general(ops, now).await;
        }
        let mut results: Vec<Option<WriteResult>> = (0..ops.len()).map(|_| None).collect();
        if self.pg.is_some() {
            if let Err(e) = self.write_batch_on_pg(ops, &fast, now, &mut results).await {
                return fail_all(ops, e);
            }
        } else if let Some(batch) = self.write_batch_on_lane(ops, &fast, now).await {
            let mut paid = batch.payments.into_iter();
            let mut claimed = batch.relay.into_iter();
            for &i in &fast {
                results[i] = match &ops[i] {
                    WriteOp::Pay(_) => match paid.next() {
                        Some(FastPay::Paid(r)) => Some(WriteResult::Paid(r)),
                        _ => None,
                    },
                    _ => claimed
                        .next()
                        .map(|r| WriteResult::Relayed(r.map_err(|e| e.0))),
                };
            }
        }
        let rest: Vec<usize> = (0..ops.len()).filter(|&i| results[i].is_none()).collect();
        if !rest.is_empty() {
            let rest_ops: Vec<WriteOp> = rest.iter().map(|&i| ops[i].clone()).collect();
            for (i, result) in rest
                .into_iter()
                .zip(self.write_batch_general(&rest_ops, now).await)
            {
                results[i] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every operation was decided"))
            .collect()
    }

    /// The fast part of a batch (`fast`: its payments and relay rounds) on
    /// the order database's lane; `None` if the lane failed as a whole.
    async fn write_batch_on_lane(
        &self,
        ops: &[WriteOp],
        fast: &[usize],
        now: i64,
    ) -> Option<PayBatch> {
        let (payments, rounds) = fast_part(ops, fast);
        let asked = Instant::now();
        let outcome = self
            .run_on_lane(Db::Orders, move |conn| {
                pay_batch(conn, &payments, &rounds, now)
            })
            .await?;
        match outcome {
            Ok((Ok(batch), wait)) => {
                log_if_slow(&batch, wait, asked.elapsed());
                Some(batch)
            }
            Ok((Err(e), _)) => {
                tracing::warn!(error = %e, "fast write path failed; retrying on the general path");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "fast write path unavailable; using the general path");
                None
            }
        }
    }

    /// The fast part of a batch (`fast`: its payments and relay rounds) on
    /// PostgreSQL's set-based path (`pg`), deciding what it applied in
    /// `results`. `Err`: its transaction failed, nothing of it was written.
    async fn write_batch_on_pg(
        &self,
        ops: &[WriteOp],
        fast: &[usize],
        now: i64,
        results: &mut [Option<WriteResult>],
    ) -> Result<(), sqlx::Error> {
        let Some(pool) = &self.pg else {
            return Ok(());
        };
        let (payments, rounds) = fast_part(ops, fast);
        let asked = Instant::now();
        let batch = crate::pg::pay_batch(pool, &payments, &rounds, now).await?;
        if asked.elapsed() > SLOW_COMMIT {
            let t = batch.timing;
            tracing::warn!(
                took_ms = asked.elapsed().as_millis() as u64,
                acquire_ms = t.acquire.as_millis() as u64,
                read_ms = t.read.as_millis() as u64,
                pay_ms = t.pay.as_millis() as u64,
                relay_ms = t.relay.as_millis() as u64,
                commit_ms = t.commit.as_millis() as u64,
                payments = payments.len(),
                "slow order-database commit"
            );
        }
        let mut paid = batch.payments.into_iter();
        let mut claimed = batch.relay.into_iter();
        for &i in fast {
            results[i] = match &ops[i] {
                WriteOp::Pay(_) => paid.next().flatten().map(WriteResult::Paid),
                _ => claimed.next().map(|r| WriteResult::Relayed(Ok(r))),
            };
        }
        Ok(())
    }

    /// [`Store::write_batch`] through sqlx, for every backend and operation.
    async fn write_batch_general(&self, ops: &[WriteOp], now: i64) -> Vec<WriteResult> {
        let failed = |e: sqlx::Error| fail_all(ops, e);
        let mut tx = match self.begin_write(Db::Orders).await {
            Ok(tx) => tx,
            Err(e) => return failed(e),
        };
        if self.backend != Backend::Sqlite
            && let Err(e) = lock_products_in(&mut tx, ops).await
        {
            return failed(e);
        }
        // A batch of one needs no savepoint: the transaction is its savepoint.
        if let [op] = ops {
            let result = apply_op(&mut tx, self.backend, op, now).await;
            if !result.is_ok() {
                // Rejected: nothing of it may stay.
                let _ = tx.rollback().await;
                return vec![result];
            }
            return match tx.commit().await {
                Ok(()) => vec![result],
                Err(e) => failed(e),
            };
        }
        let mut results = pay_runs(&mut tx, ops, now).await;
        // The relay's claims last, so they see the events written before them.
        let relay_last = (0..ops.len())
            .filter(|&i| !matches!(ops[i], WriteOp::RelayOutbox { .. }))
            .chain((0..ops.len()).filter(|&i| matches!(ops[i], WriteOp::RelayOutbox { .. })));
        for index in relay_last {
            if results[index].is_none() {
                match apply_in_savepoint(&mut tx, self.backend, &ops[index], now).await {
                    Ok(result) => results[index] = Some(result),
                    Err(e) => return failed(e),
                }
            }
        }
        let committing = Instant::now();
        let committed = tx.commit().await;
        let took = committing.elapsed();
        if took > Duration::from_millis(100) {
            // The disk's flush, almost always: worth knowing when payments slow down.
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                operations = ops.len(),
                "slow commit"
            );
        }
        match committed {
            Ok(()) => results
                .into_iter()
                .map(|r| r.expect("every operation was decided"))
                .collect(),
            Err(e) => failed(e),
        }
    }

    /// Claims up to `limit` due, unsent rows for `lease_ms`, oldest first.
    pub async fn claim_outbox(
        &self,
        owner: &str,
        limit: usize,
        lease_ms: i64,
        now: i64,
    ) -> Result<Vec<OutboxMessage>, StorageError> {
        self.ack_and_claim_outbox(owner, &[], limit, lease_ms, now)
            .await
    }

    /// Marks `acked` rows sent (the broker stored them) and claims the next
    /// rows, in **one** transaction: the relay's round costs one commit (one
    /// fsync) instead of two. The same path as the relay's
    /// [`WriteOp::RelayOutbox`], as a batch of one.
    pub async fn ack_and_claim_outbox(
        &self,
        owner: &str,
        acked: &[i64],
        limit: usize,
        lease_ms: i64,
        now: i64,
    ) -> Result<Vec<OutboxMessage>, StorageError> {
        let round = WriteOp::RelayOutbox {
            owner: owner.to_owned(),
            acked: acked.to_vec(),
            limit,
            lease_ms,
        };
        match self.write_batch(&[round], now).await.pop() {
            Some(WriteResult::Relayed(claimed)) => claimed,
            _ => Err(StorageError::corrupt(
                "a relay round is answered with a relay result",
            )),
        }
    }

    /// Records `effect` and the inbox row for `event_id` in one transaction.
    pub async fn apply_effect(
        &self,
        event_id: &str,
        msg_id: &str,
        effect: &Effect,
        now: i64,
    ) -> Result<Applied, StorageError> {
        let record = EffectRecord {
            event_id: event_id.to_owned(),
            msg_id: msg_id.to_owned(),
            effect: effect.clone(),
        };
        let applied = self.apply_effects(&[record], now).await?;
        Ok(applied[0])
    }

    /// Records many effects of **one** system, each with its inbox row, in one
    /// transaction (one fsync for a whole consumed batch). Effects whose event
    /// is already in the inbox are skipped. All records must belong to the same
    /// system.
    pub async fn apply_effects(
        &self,
        records: &[EffectRecord],
        now: i64,
    ) -> Result<Vec<Applied>, StorageError> {
        let Some(first) = records.first() else {
            return Ok(Vec::new());
        };
        let system = first.effect.system();
        if records.iter().any(|r| r.effect.system() != system) {
            return Err(StorageError::corrupt(
                "a batch of effects must belong to one system",
            ));
        }
        let group = system.consumer_group();
        if lane_handles(records) {
            // SQLite, new effects only (the hot path): one job on the lane.
            let owned = records.to_vec();
            let job = move |conn: &mut rusqlite::Connection| {
                crate::lane::effects::apply_effects(conn, group, &owned, now)
            };
            if let Some(answer) = self.run_on_lane(Db::System(system), job).await {
                let (applied, _) = answer?;
                return applied.map_err(|e| e.0);
            }
        }
        let mut tx = self
            .begin_write(Db::System(system))
            .await
            .map_err(storage)?;
        let outcomes = apply_effects_in(&mut tx, group, records, now).await?;
        tx.commit().await.map_err(storage)?;
        Ok(outcomes)
    }
}

/// Which part of a slow lane batch was slow tells disk (commit) from CPU
/// (statements, or a lane thread waiting to be scheduled) from other writers
/// (the gate).
/// Locks, in SKU order, every product `ops` may touch (`sql::lock_products`):
/// the lines of the orders paid or closed, the SKUs of the orders created.
/// PostgreSQL and MySQL: SQLite has one writer.
async fn lock_products_in(tx: &mut AnyConnection, ops: &[WriteOp]) -> Result<(), sqlx::Error> {
    let mut orders = Vec::new();
    let mut skus = std::collections::BTreeSet::new();
    for op in ops {
        match op {
            WriteOp::Pay(notice) => orders.push(notice.order_id.as_str()),
            WriteOp::Close(order_id) => orders.push(order_id.as_str()),
            WriteOp::Create { order, .. } => {
                skus.extend(order.lines().iter().map(|l| l.sku.to_string()));
            }
            WriteOp::RelayOutbox { .. } => {}
        }
    }
    if orders.is_empty() && skus.is_empty() {
        return Ok(());
    }
    if dialect::is_mysql(tx) {
        // InnoDB locks rows as it reads them, before an `ORDER BY` sorts
        // them, and may read the orders' lines first: the SKUs are read
        // (lines never change), then locked by one ascending scan of the
        // products' key.
        if !orders.is_empty() {
            let statement = format!(
                "SELECT DISTINCT sku FROM order_lines WHERE order_id IN ({})",
                sql::placeholders(0, orders.len())
            );
            let mut query = dialect::query(&statement);
            for order in &orders {
                query = query.bind(*order);
            }
            for row in query.fetch_all(&mut *tx).await? {
                skus.insert(crate::fail::column(&row, "sku")?);
            }
        }
        orders.clear();
    }
    let statement = sql::lock_products(orders.len(), skus.len());
    let mut query = dialect::query(&statement);
    for order in orders {
        query = query.bind(order.to_owned());
    }
    for sku in skus {
        query = query.bind(sku);
    }
    query.fetch_all(tx).await?;
    Ok(())
}

/// The fast part of a batch (`fast`: indexes into `ops`) as the lane and
/// PostgreSQL's path take it: its payments and its relay rounds.
fn fast_part(ops: &[WriteOp], fast: &[usize]) -> (Vec<PaymentNotice>, Vec<RelayRound>) {
    let mut payments = Vec::new();
    let mut rounds = Vec::new();
    for &i in fast {
        match &ops[i] {
            WriteOp::Pay(notice) => payments.push(notice.clone()),
            WriteOp::RelayOutbox {
                owner,
                acked,
                limit,
                lease_ms,
            } => rounds.push(RelayRound {
                owner: owner.clone(),
                acked: acked.clone(),
                limit: *limit,
                lease_ms: *lease_ms,
            }),
            WriteOp::Create { .. } | WriteOp::Close(_) => {}
        }
    }
    (payments, rounds)
}

fn log_if_slow(batch: &PayBatch, wait: LaneWait, took: Duration) {
    if took > SLOW_COMMIT {
        tracing::warn!(
            took_ms = took.as_millis() as u64,
            gate_ms = wait.gate.as_millis() as u64,
            lane_queue_ms = wait.queue.as_millis() as u64,
            statements_ms = batch.statements.as_millis() as u64,
            commit_ms = batch.commit.as_millis() as u64,
            payments = batch.payments.len(),
            "slow order-database commit"
        );
    }
}

/// Runs of consecutive payments, applied set-based first: a few statements
/// for the whole run instead of several per payment (every statement is a
/// round trip to the database's worker thread). What the set-based path
/// leaves undecided goes through the one-by-one path.
async fn pay_runs(tx: &mut AnyConnection, ops: &[WriteOp], now: i64) -> Vec<Option<WriteResult>> {
    let mut results: Vec<Option<WriteResult>> = (0..ops.len()).map(|_| None).collect();
    let mut start = 0;
    while start < ops.len() {
        let run = ops[start..]
            .iter()
            .take_while(|op| matches!(op, WriteOp::Pay(_)))
            .count()
            .min(PAYMENTS_PER_RUN);
        if run < 2 {
            start += 1;
            continue;
        }
        let notices: Vec<&PaymentNotice> = ops[start..start + run]
            .iter()
            .filter_map(|op| match op {
                WriteOp::Pay(notice) => Some(notice),
                _ => None,
            })
            .collect();
        match pay_run_set_based(&mut *tx, &notices, now).await {
            Ok(decided) => {
                for (offset, outcome) in decided.into_iter().enumerate() {
                    results[start + offset] = outcome.map(WriteResult::Paid);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "set-based payment run failed; applying one by one");
            }
        }
        start += run;
    }
    results
}

/// One operation in its own savepoint, rolled back alone if rejected. `Err`
/// is a failed savepoint statement: the transaction is lost.
async fn apply_in_savepoint(
    tx: &mut AnyConnection,
    backend: Backend,
    op: &WriteOp,
    now: i64,
) -> Result<WriteResult, sqlx::Error> {
    dialect::query("SAVEPOINT op").execute(&mut *tx).await?;
    let result = apply_op(&mut *tx, backend, op, now).await;
    if !result.is_ok() {
        dialect::query("ROLLBACK TO SAVEPOINT op")
            .execute(&mut *tx)
            .await?;
    }
    dialect::query("RELEASE SAVEPOINT op")
        .execute(&mut *tx)
        .await?;
    Ok(result)
}

/// Runs one operation inside the caller's transaction.
async fn apply_op(tx: &mut AnyConnection, backend: Backend, op: &WriteOp, now: i64) -> WriteResult {
    match op {
        WriteOp::Create {
            order,
            order_id,
            close_after_ms,
            limits,
        } => WriteResult::Created(
            create_order_in(
                &mut *tx,
                backend,
                order,
                order_id,
                now,
                *close_after_ms,
                *limits,
            )
            .await,
        ),
        WriteOp::Pay(notice) => WriteResult::Paid(pay_order_in(&mut *tx, notice, now).await),
        WriteOp::Close(order_id) => WriteResult::Closed(
            close_order_in(&mut *tx, order_id, now)
                .await
                .map_err(storage),
        ),
        WriteOp::RelayOutbox {
            owner,
            acked,
            limit,
            lease_ms,
        } => WriteResult::Relayed(
            ack_and_claim_in(&mut *tx, backend, owner, acked, *limit, *lease_ms, now)
                .await
                .map_err(storage),
        ),
    }
}
