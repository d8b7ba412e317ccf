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

use ordermq_domain::event::FlashAttemptQueued;
use ordermq_domain::ports::StorageError;
use ordermq_domain::{
    AttemptState, CreateOrderError, Effect, NewOrder, OrderLine, OutboxMessage, PaymentNotice,
    Quantity, UserLimits,
};
use sqlx::AnyConnection;

use crate::close::close_order_in;
use crate::commit;
use crate::dialect;
use crate::effects::write::apply_effects_in;
use crate::effects::{Applied, EffectRecord, lane_handles};
use crate::fail::{lost_lock_race, storage};
use crate::flash::{
    AttemptWrite, admit_in, mark_created_in, reject_in, restock_for_order_in, state_in,
};
use crate::lane::batch::{PayBatch, pay_batch};
use crate::lane::pay::FastPay;
use crate::locks;
use crate::orders::create_order_in;
use crate::outbox::ack_and_claim_in;
use crate::pay::{PAYMENTS_PER_RUN, pay_order_in, pay_run_set_based};
use crate::sql::Feed;
use crate::sql::{Backend, RelayRound};
use crate::store::{Db, LaneWait, Store};

mod lost_commit;
mod op;

pub use op::{WriteOp, WriteResult};
use op::{fail_all, fail_all_with};

/// A fast-path batch slower than this is logged with where its time went.
const SLOW_COMMIT: Duration = Duration::from_millis(50);

/// How many times a batch runs when it keeps losing lock races (a deadlock's
/// victim, a lock wait timeout) before its operations are answered with the
/// error: batches lock their products in one order, so this is for what
/// that order cannot cover (another instance's older version, an operator's
/// statement), and three tries are plenty.
const LOCK_RACE_ATTEMPTS: u32 = 3;

impl Store {
    /// Runs many creates and payments in **one** transaction (group commit): one
    /// fsync for the whole batch instead of one per request. Each operation runs
    /// inside its own savepoint, so a rejected one (out of stock, amount
    /// mismatch, …) is rolled back alone and the others still commit. Results
    /// come back in order; if the commit itself fails, every operation fails.
    ///
    /// On SQLite, the payments that apply, the flash-sale admissions and the
    /// relay's rounds run first, on the order database's lane (see `lane`)
    /// in one transaction; the rest (creates, closes, payments and
    /// admissions that need explaining) follow through the general path in
    /// a second one.
    pub async fn write_batch(&self, ops: &[WriteOp], now: i64) -> Vec<WriteResult> {
        // The lane also admits flash-sale attempts; PostgreSQL's path does not.
        let lane = self.has_lanes();
        let fast: Vec<usize> = (0..ops.len())
            .filter(|&i| match ops[i] {
                WriteOp::Pay(_) | WriteOp::RelayOutbox { .. } => true,
                WriteOp::Attempt(_) => lane,
                _ => false,
            })
            .collect();
        if fast.is_empty() || !(self.has_lanes() || self.pg.is_some()) {
            return self.write_batch_general(ops, now).await;
        }
        let mut results: Vec<Option<WriteResult>> = (0..ops.len()).map(|_| None).collect();
        if self.pg.is_some() {
            let mut attempt = 1;
            while let Err(e) = self.write_batch_on_pg(ops, &fast, now, &mut results).await {
                if !lost_lock_race(&e) || attempt >= LOCK_RACE_ATTEMPTS {
                    return fail_all(ops, e);
                }
                log_lost_race(attempt, ops.len(), &storage(e));
                attempt += 1;
            }
        } else if let Some(batch) = self.write_batch_on_lane(ops, &fast, now).await {
            let mut paid = batch.payments.into_iter();
            let mut admitted = batch.attempts.into_iter();
            let mut claimed = batch.relay.into_iter();
            for &i in &fast {
                results[i] = match &ops[i] {
                    WriteOp::Pay(_) => match paid.next() {
                        Some(FastPay::Paid(r)) => Some(WriteResult::Paid(r)),
                        _ => None,
                    },
                    WriteOp::Attempt(_) => admitted
                        .next()
                        .flatten()
                        .map(|a| WriteResult::Attempted(Ok(a))),
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
        let (payments, attempts, rounds) = fast_part(ops, fast);
        let asked = Instant::now();
        let feed = self.feed;
        let outcome = self
            .run_on_lane(Db::Orders, move |conn| {
                pay_batch(conn, feed, &payments, &attempts, &rounds, now)
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
        let (payments, _, rounds) = fast_part(ops, fast);
        let asked = Instant::now();
        let mut batch = crate::pg::pay_batch(pool, self.feed, &payments, &rounds, now).await?;
        if let Some((txid, lost)) = batch.commit_lost.take() {
            self.resolve_lost_commit(
                commit::Ticket::Txid(txid),
                payments.len() + rounds.len(),
                lost,
            )
            .await?;
        }
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
    /// A batch that loses a lock race (a deadlock's victim, a lock wait
    /// timeout: nothing of it was committed) runs again, up to
    /// [`LOCK_RACE_ATTEMPTS`] times, each logged.
    async fn write_batch_general(&self, ops: &[WriteOp], now: i64) -> Vec<WriteResult> {
        let mut attempt = 1;
        loop {
            match self.write_batch_general_once(ops, now).await {
                Ok(results) => return results,
                Err(e) if attempt < LOCK_RACE_ATTEMPTS => {
                    log_lost_race(attempt, ops.len(), &e);
                    attempt += 1;
                }
                Err(e) => return fail_all_with(ops, e),
            }
        }
    }

    /// One try of [`Store::write_batch_general`]; `Err` when it lost a lock
    /// race, its transaction rolled back.
    async fn write_batch_general_once(
        &self,
        ops: &[WriteOp],
        now: i64,
    ) -> Result<Vec<WriteResult>, StorageError> {
        let failed = |e: sqlx::Error| {
            if lost_lock_race(&e) {
                Err(storage(e))
            } else {
                Ok(fail_all(ops, e))
            }
        };
        let mut tx = match self.begin_write(Db::Orders).await {
            Ok(tx) => tx,
            Err(e) => return failed(e),
        };
        // What to ask by should its commit's answer be lost (`commit`).
        let ticket = match self.commit_ticket(&mut tx, now).await {
            Ok(ticket) => ticket,
            Err(e) => return failed(e),
        };
        if self.backend != Backend::Sqlite
            && let Err(e) = lock_rows_in(&mut tx, ops).await
        {
            return failed(e);
        }
        // A batch of one needs no savepoint: the transaction is its savepoint.
        if let [op] = ops {
            let result = apply_op(&mut tx, self.backend, self.feed, op, now).await;
            if !result.is_ok() {
                // Rejected: nothing of it may stay.
                let _ = tx.rollback().await;
                return Ok(vec![result.or_lost_race()?]);
            }
            return match self.commit_resolved(tx, ticket, ops.len()).await {
                Ok(()) => Ok(vec![result]),
                Err(e) => failed(e),
            };
        }
        let mut results = match pay_runs(&mut tx, self.feed, ops, now).await {
            Ok(results) => results,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e);
            }
        };
        // The relay's claims last, so they see the events written before them.
        let relay_last = (0..ops.len())
            .filter(|&i| !matches!(ops[i], WriteOp::RelayOutbox { .. }))
            .chain((0..ops.len()).filter(|&i| matches!(ops[i], WriteOp::RelayOutbox { .. })));
        for index in relay_last {
            if results[index].is_none() {
                match apply_in_savepoint(&mut tx, self.backend, self.feed, &ops[index], now).await {
                    Ok(Ok(result)) => results[index] = Some(result),
                    Ok(Err(lost)) => {
                        let _ = tx.rollback().await;
                        return Err(lost);
                    }
                    Err(e) => return failed(e),
                }
            }
        }
        let committing = Instant::now();
        let committed = self.commit_resolved(tx, ticket, ops.len()).await;
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
            Ok(()) => Ok(results
                .into_iter()
                .map(|r| r.expect("every operation was decided"))
                .collect()),
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
            acked_at: now,
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
/// Locks, in SKU order, every product `ops` may touch, then, in order id
/// order, every existing order they may change (`locks`): the lines of the
/// orders closed and the SKUs of the orders created (a payment touches no
/// product), then the orders paid or closed. PostgreSQL and MySQL: SQLite
/// has one writer.
async fn lock_rows_in(tx: &mut AnyConnection, ops: &[WriteOp]) -> Result<(), sqlx::Error> {
    let mut closed = Vec::new();
    let mut changed = Vec::new();
    let mut skus = std::collections::BTreeSet::new();
    for op in ops {
        match op {
            WriteOp::Pay(notice) => changed.push(notice.order_id.as_str()),
            WriteOp::Close(order_id) => {
                closed.push(order_id.as_str());
                changed.push(order_id.as_str());
            }
            WriteOp::Create { order, .. } => {
                skus.extend(order.lines().iter().map(|l| l.sku.to_string()));
            }
            // A sale order reserves its SKU as a create does.
            WriteOp::CreateSaleOrder { event, .. } => {
                skus.insert(event.sku.to_string());
            }
            // Touch a sale's rows only, and every operation of one sale
            // goes to one writer (`OrderWriter`'s routing by sale).
            WriteOp::RelayOutbox { .. } | WriteOp::Attempt(_) | WriteOp::RejectAttempt { .. } => {}
        }
    }
    locks::lock_products_in(tx, &closed, skus).await?;
    changed.sort_unstable();
    changed.dedup();
    locks::lock_orders_in(tx, &changed).await
}

/// The fast part of a batch (`fast`: indexes into `ops`) as the lane and
/// PostgreSQL's path take it: its payments, its admissions (the lane's
/// only) and its relay rounds.
fn fast_part(
    ops: &[WriteOp],
    fast: &[usize],
) -> (Vec<PaymentNotice>, Vec<AttemptWrite>, Vec<RelayRound>) {
    let mut payments = Vec::new();
    let mut attempts = Vec::new();
    let mut rounds = Vec::new();
    for &i in fast {
        match &ops[i] {
            WriteOp::Pay(notice) => payments.push(notice.clone()),
            WriteOp::Attempt(write) => attempts.push(write.clone()),
            WriteOp::RelayOutbox {
                owner,
                acked,
                acked_at,
                limit,
                lease_ms,
            } => rounds.push(RelayRound {
                owner: owner.clone(),
                acked: acked.clone(),
                acked_at: *acked_at,
                limit: *limit,
                lease_ms: *lease_ms,
            }),
            WriteOp::Create { .. }
            | WriteOp::Close(_)
            | WriteOp::CreateSaleOrder { .. }
            | WriteOp::RejectAttempt { .. } => {}
        }
    }
    (payments, attempts, rounds)
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
async fn pay_runs(
    tx: &mut AnyConnection,
    feed: Feed,
    ops: &[WriteOp],
    now: i64,
) -> Result<Vec<Option<WriteResult>>, StorageError> {
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
        match pay_run_set_based(&mut *tx, feed, &notices, now).await {
            Ok(decided) => {
                for (offset, outcome) in decided.into_iter().enumerate() {
                    results[start + offset] = outcome.map(WriteResult::Paid);
                }
            }
            Err(e) if lost_lock_race(&e) => return Err(storage(e)),
            Err(e) => {
                tracing::warn!(error = %e, "set-based payment run failed; applying one by one");
            }
        }
        start += run;
    }
    Ok(results)
}

/// One operation in its own savepoint, rolled back alone if rejected. `Err`
/// is a failed savepoint statement: the transaction is lost.
async fn apply_in_savepoint(
    tx: &mut AnyConnection,
    backend: Backend,
    feed: Feed,
    op: &WriteOp,
    now: i64,
) -> Result<Result<WriteResult, StorageError>, sqlx::Error> {
    dialect::query("SAVEPOINT op").execute(&mut *tx).await?;
    let result = match apply_op(&mut *tx, backend, feed, op, now)
        .await
        .or_lost_race()
    {
        Ok(result) => result,
        // The transaction is lost (MySQL: rolled back, savepoint and all).
        lost @ Err(_) => return Ok(lost),
    };
    if !result.is_ok() {
        dialect::query("ROLLBACK TO SAVEPOINT op")
            .execute(&mut *tx)
            .await?;
    }
    dialect::query("RELEASE SAVEPOINT op")
        .execute(&mut *tx)
        .await?;
    Ok(Ok(result))
}

/// Says that a batch lost a lock race and runs again.
fn log_lost_race(attempt: u32, operations: usize, error: &StorageError) {
    let cause = std::error::Error::source(error).map_or_else(String::new, |s| s.to_string());
    tracing::warn!(
        attempt,
        operations,
        error = %cause,
        "order-database batch lost a lock race (deadlock or lock wait); running it again"
    );
}

/// Runs one operation inside the caller's transaction.
async fn apply_op(
    tx: &mut AnyConnection,
    backend: Backend,
    feed: Feed,
    op: &WriteOp,
    now: i64,
) -> WriteResult {
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
                feed,
                order,
                order_id,
                now,
                *close_after_ms,
                *limits,
            )
            .await,
        ),
        WriteOp::Pay(notice) => WriteResult::Paid(pay_order_in(&mut *tx, feed, notice, now).await),
        WriteOp::Close(order_id) => WriteResult::Closed(
            close_order_in(&mut *tx, feed, order_id, now)
                .await
                .map_err(storage),
        ),
        WriteOp::RelayOutbox {
            owner,
            acked,
            acked_at,
            limit,
            lease_ms,
        } => WriteResult::Relayed(
            ack_and_claim_in(
                &mut *tx,
                backend,
                owner,
                (acked, *acked_at),
                *limit,
                *lease_ms,
                now,
            )
            .await
            .map_err(storage),
        ),
        WriteOp::Attempt(write) => {
            WriteResult::Attempted(admit_in(&mut *tx, write, now).await.map_err(storage))
        }
        WriteOp::CreateSaleOrder {
            event,
            close_after_ms,
        } => WriteResult::SaleOrder(
            create_sale_order_in(&mut *tx, backend, feed, event, *close_after_ms, now).await,
        ),
        WriteOp::RejectAttempt {
            attempt_id, reason, ..
        } => WriteResult::SaleOrder(match reject_in(&mut *tx, attempt_id, *reason, now).await {
            Ok(()) => state_in(&mut *tx, attempt_id)
                .await
                .and_then(|s| s.ok_or_else(|| StorageError::corrupt("no such attempt"))),
            Err(e) => Err(storage(e)),
        }),
    }
}

/// The order of a queued flash-sale attempt: its units back in the
/// product's stock, reserved by an ordinary order with the id drawn at
/// admission, the attempt `CREATED` — or, if the attempt is no longer
/// queued (a redelivery), its state unchanged.
async fn create_sale_order_in(
    tx: &mut AnyConnection,
    backend: Backend,
    feed: Feed,
    event: &FlashAttemptQueued,
    close_after_ms: i64,
    now: i64,
) -> Result<AttemptState, StorageError> {
    match state_in(&mut *tx, &event.attempt_id).await? {
        Some(AttemptState::Queued) => {}
        Some(done) => return Ok(done),
        None => return Err(StorageError::corrupt("a message names no stored attempt")),
    }
    restock_for_order_in(&mut *tx, event)
        .await
        .map_err(storage)?;
    let line = OrderLine {
        sku: event.sku.clone(),
        quantity: Quantity::parse(i64::from(event.quantity)).map_err(StorageError::corrupt)?,
    };
    let order = NewOrder::new(event.user_id.clone(), vec![line]).map_err(StorageError::corrupt)?;
    create_order_in(
        &mut *tx,
        backend,
        feed,
        &order,
        &event.order_id,
        now,
        Some(close_after_ms),
        UserLimits::OFF,
    )
    .await
    .map_err(|e| match e {
        CreateOrderError::Storage(e) => e,
        other => StorageError::corrupt(format!("a sale order could not be created: {other}")),
    })?;
    mark_created_in(&mut *tx, &event.attempt_id, now)
        .await
        .map_err(storage)?;
    Ok(AttemptState::Created {
        order_id: event.order_id.clone(),
    })
}
