//! The hot write paths on SQLite, one dedicated thread per database file.
//!
//! sqlx runs a SQLite connection on a worker thread and sends it every
//! statement (and every returned row) as a message, so each statement costs
//! two thread hand-offs. On a busy two-core machine a hand-off waits for the
//! scheduler: `ordermq bench capacity` measured a group-commit batch of two
//! writes at ~3 ms (a dozen statements) with the disk's fsync at 0.15 ms,
//! and the order writer busy 96 % of the time at 600 payments/s.
//!
//! Here a *lane* — one thread owning one rusqlite connection with cached
//! prepared statements — runs a whole batch as one job: one hand-off per
//! batch, a few microseconds per statement. Only the paths every payment
//! takes run here (payments that apply, the relay's round, the downstream
//! systems' new effects); anything unusual (a duplicate callback, a closed
//! order, a reversal) is handed back and takes the general sqlx path, which
//! explains it. Both connections write the same file; [`Store::write_gate`]
//! keeps them from meeting in SQLite's busy handler.
//!
//! [`Store::write_gate`]: crate::Store

use std::path::Path;
use std::sync::mpsc;

use ordermq_domain::event::PaidLine;
use ordermq_domain::fanout::Effect;
use ordermq_domain::ports::StorageError;
use ordermq_domain::view::PaymentReceipt;
use ordermq_domain::{
    Amount, OrderEvent, OrderPaid, OrderStatus, OutboxMessage, PayOrderError, PaymentNotice, Sku,
    UserId,
};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::effects::{Applied, EffectRecord};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A failed statement, or stored data this code cannot read.
#[derive(Debug)]
pub(crate) struct LaneError(String);

impl From<rusqlite::Error> for LaneError {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.to_string())
    }
}

impl std::fmt::Display for LaneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type LaneResult<T> = Result<T, LaneError>;

/// A thread owning one connection; jobs run in the order they are sent. The
/// thread ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Lane {
    jobs: mpsc::Sender<Job>,
}

impl Lane {
    /// Opens `path` (created by the sqlx pool already) with ordermq's
    /// durability settings and starts the lane's thread, which runs
    /// `on_start` first.
    pub(crate) fn open(
        path: &Path,
        name: &str,
        on_start: Option<crate::ThreadStart>,
    ) -> LaneResult<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch(crate::SQLITE_SETTINGS)?;
        conn.set_prepared_statement_cache_capacity(64);
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("sqlite-{name}"))
            .spawn(move || {
                if let Some(on_start) = on_start {
                    (on_start.0)();
                }
                let mut conn = conn;
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| LaneError(e.to_string()))?;
        Ok(Self { jobs })
    }

    /// Runs `job` on the lane's thread and waits for its answer.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = reply.send(job(conn));
            }))
            .map_err(|_| StorageError("the SQLite lane has stopped".into()))?;
        answer
            .await
            .map_err(|_| StorageError("the SQLite lane stopped mid-job".into()))
    }
}

/// What one payment of a fast batch came to.
pub(crate) enum FastPay {
    Paid(Result<PaymentReceipt, PayOrderError>),
    /// Not payable as notified (duplicate, closed, wrong amount, unknown…):
    /// nothing was written; the general path decides and explains it.
    Undecided,
}

/// The relay's round inside a fast batch.
pub(crate) struct RelayRound {
    pub owner: String,
    pub acked: Vec<i64>,
    pub limit: usize,
    pub lease_ms: i64,
}

/// What [`pay_batch`] committed: per payment, and per relay round (the rows it claimed).
pub(crate) struct PayBatch {
    pub payments: Vec<FastPay>,
    pub relay: Vec<LaneResult<Vec<OutboxMessage>>>,
    /// Statements, then `COMMIT` (the WAL write and its fsync): where a slow batch spent its time.
    pub timing: BatchTiming,
}

/// Where one lane job's time went.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BatchTiming {
    /// Waiting in the lane's queue for its thread (set by the caller).
    pub queued: std::time::Duration,
    pub statements: std::time::Duration,
    pub commit: std::time::Duration,
}

/// Applies `payments` and runs the relay's rounds (after them, so they see
/// these payments' events) in one transaction. `Err` means the transaction
/// failed as a whole and nothing was written.
pub(crate) fn pay_batch(
    conn: &mut Connection,
    payments: &[PaymentNotice],
    relay: &[RelayRound],
    now: i64,
) -> LaneResult<PayBatch> {
    let begun = std::time::Instant::now();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(payments.len());
    for notice in payments {
        savepoint(&tx, "SAVEPOINT pay")?;
        match pay_one(&tx, notice, now) {
            Ok(outcome) => {
                if matches!(outcome, FastPay::Undecided | FastPay::Paid(Err(_))) {
                    savepoint(&tx, "ROLLBACK TO pay")?;
                }
                savepoint(&tx, "RELEASE pay")?;
                outcomes.push(outcome);
            }
            Err(e) => {
                // This payment alone is undone; the general path retries it
                // and reports what went wrong.
                tracing::warn!(error = %e, order_id = %notice.order_id, "fast payment path failed; retrying on the general path");
                savepoint(&tx, "ROLLBACK TO pay")?;
                savepoint(&tx, "RELEASE pay")?;
                outcomes.push(FastPay::Undecided);
            }
        }
    }
    let mut rounds = Vec::with_capacity(relay.len());
    for round in relay {
        savepoint(&tx, "SAVEPOINT relay")?;
        let claimed = relay_round(&tx, round, now);
        if claimed.is_err() {
            savepoint(&tx, "ROLLBACK TO relay")?;
        }
        savepoint(&tx, "RELEASE relay")?;
        rounds.push(claimed);
    }
    let statements = begun.elapsed();
    tx.commit()?;
    Ok(PayBatch {
        payments: outcomes,
        relay: rounds,
        timing: BatchTiming {
            queued: std::time::Duration::ZERO,
            statements,
            commit: begun.elapsed() - statements,
        },
    })
}

/// Runs a savepoint statement from the statement cache: `execute_batch`
/// parsed it again for every payment (~2 % of the lane's time).
fn savepoint(tx: &rusqlite::Transaction<'_>, sql: &str) -> LaneResult<()> {
    tx.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn pay_one(
    tx: &rusqlite::Transaction<'_>,
    notice: &PaymentNotice,
    now: i64,
) -> LaneResult<FastPay> {
    let order_id = notice.order_id.as_str();
    let user_id: Option<String> = tx
        .prepare_cached(
            "UPDATE orders SET status = ?1, payment_id = ?2, paid_at = ?3, updated_at = ?3 \
             WHERE order_id = ?4 AND status = ?5 AND amount = ?6 RETURNING user_id",
        )?
        .query_row(
            params![
                OrderStatus::Paid.as_str(),
                notice.payment_id.as_str(),
                now,
                order_id,
                OrderStatus::Unpaid.as_str(),
                notice.amount.minor_units()
            ],
            |row| row.get(0),
        )
        .optional()?;
    let Some(user_id) = user_id else {
        return Ok(FastPay::Undecided);
    };
    let recorded = tx
        .prepare_cached(
            "INSERT INTO payments (payment_id, order_id, amount, outcome, received_at) \
             VALUES (?1, ?2, ?3, 'APPLIED', ?4) ON CONFLICT (payment_id) DO NOTHING",
        )?
        .execute(params![
            notice.payment_id.as_str(),
            order_id,
            notice.amount.minor_units(),
            now
        ])?;
    if recorded == 0 {
        // This payment id already paid another order; the caller rolls back.
        return Ok(FastPay::Paid(Err(PayOrderError::PaymentIdReused {
            payment_id: notice.payment_id.to_string(),
        })));
    }
    let mut lines = Vec::new();
    {
        let mut select = tx.prepare_cached(
            "SELECT sku, quantity, unit_price FROM order_lines WHERE order_id = ?1 ORDER BY sku",
        )?;
        let mut rows = select.query([order_id])?;
        while let Some(row) = rows.next()? {
            let sku: String = row.get(0)?;
            let quantity: i64 = row.get(1)?;
            let unit_price: i64 = row.get(2)?;
            lines.push((sku, quantity, unit_price));
        }
    }
    let mut paid_lines = Vec::with_capacity(lines.len());
    for (sku, quantity, unit_price) in lines {
        let deducted = tx
            .prepare_cached(
                "UPDATE products SET on_hand = on_hand - ?1, reserved = reserved - ?1 \
                 WHERE sku = ?2 AND reserved >= ?1 AND on_hand >= ?1",
            )?
            .execute(params![quantity, sku])?;
        if deducted != 1 {
            return Err(LaneError(format!(
                "reservation of {quantity} x {sku} for order {order_id} is missing"
            )));
        }
        let invalid = |e: ordermq_domain::ValidationError| {
            LaneError(format!("stored line of {order_id}: {e}"))
        };
        paid_lines.push(PaidLine {
            sku: Sku::parse(&sku).map_err(invalid)?,
            quantity: u32::try_from(quantity).map_err(|e| LaneError(e.to_string()))?,
            unit_price: Amount::parse(unit_price).map_err(invalid)?,
        });
    }
    tx.prepare_cached(
        "INSERT INTO order_history (order_id, from_status, to_status, at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        order_id,
        OrderStatus::Unpaid.as_str(),
        OrderStatus::Paid.as_str(),
        now
    ])?;
    let event = OrderEvent::OrderPaid(OrderPaid {
        order_id: notice.order_id.clone(),
        user_id: UserId::parse(&user_id).map_err(|e| LaneError(format!("stored user id: {e}")))?,
        payment_id: notice.payment_id.clone(),
        amount: notice.amount,
        paid_at: now,
        lines: paid_lines,
    });
    let kind = event.kind();
    tx.prepare_cached(
        "INSERT INTO outbox (topic, tag, msg_key, event_id, body, deliver_at, created_at, attempts, next_attempt_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, 0, ?6)",
    )?
    .execute(params![
        kind.topic(),
        kind.tag(),
        order_id,
        event.event_id(),
        event.to_json(),
        now
    ])?;
    Ok(FastPay::Paid(Ok(PaymentReceipt {
        order_id: notice.order_id.clone(),
        status: OrderStatus::Paid,
        duplicate: false,
        refund_required: false,
    })))
}

/// Marks the relay's acknowledged rows sent and claims the next due rows
/// (the SQLite form of `outbox::ack_and_claim_in`).
fn relay_round(
    tx: &rusqlite::Transaction<'_>,
    round: &RelayRound,
    now: i64,
) -> LaneResult<Vec<OutboxMessage>> {
    {
        let mut mark = tx.prepare_cached(
            "UPDATE outbox SET sent_at = ?1, lease_owner = NULL, last_error = NULL WHERE id = ?2",
        )?;
        for id in &round.acked {
            mark.execute(params![now, id])?;
        }
    }
    let mut claim = tx.prepare_cached(
        "UPDATE outbox SET lease_owner = ?1, next_attempt_at = ?2, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL AND next_attempt_at <= ?3 \
                      ORDER BY next_attempt_at, id LIMIT ?4) \
         RETURNING id, topic, tag, msg_key, event_id, body, deliver_at",
    )?;
    let mut claimed = claim
        .query_map(
            params![round.owner, now + round.lease_ms, now, round.limit as i64],
            |r| {
                Ok(OutboxMessage {
                    id: r.get(0)?,
                    topic: r.get(1)?,
                    tag: r.get(2)?,
                    key: r.get(3)?,
                    event_id: r.get(4)?,
                    body: r.get(5)?,
                    deliver_at: r.get(6)?,
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    claimed.sort_by_key(|m| m.id);
    Ok(claimed)
}

/// Whether every record is a new row this lane can insert (the effects of
/// `OrderPaid`); reversals and the like take the general path.
pub(crate) fn handles(records: &[EffectRecord]) -> bool {
    records.iter().all(|r| {
        matches!(
            r.effect,
            Effect::Points { .. }
                | Effect::Coupon { .. }
                | Effect::Sms { .. }
                | Effect::Shipment { .. }
                | Effect::Nothing { .. }
        )
    })
}

/// Records each new event's effect with its inbox row, in one transaction;
/// events already in the inbox are skipped (see `Store::apply_effects`).
pub(crate) fn apply_effects(
    conn: &mut Connection,
    group: &str,
    records: &[EffectRecord],
    now: i64,
) -> LaneResult<Vec<Applied>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(records.len());
    {
        let mut inbox = tx.prepare_cached(
            "INSERT INTO inbox (consumer_group, event_id, order_id, msg_id, applied_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (consumer_group, event_id) DO NOTHING",
        )?;
        for record in records {
            let fresh = inbox.execute(params![
                group,
                record.event_id,
                record.effect.order_id().as_str(),
                record.msg_id,
                now
            ])? == 1;
            if !fresh {
                outcomes.push(Applied::Already);
                continue;
            }
            insert_effect(&tx, &record.effect, now)?;
            outcomes.push(Applied::Now);
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

fn insert_effect(tx: &rusqlite::Transaction<'_>, effect: &Effect, now: i64) -> LaneResult<()> {
    match effect {
        Effect::Points {
            user_id,
            order_id,
            points,
        } => tx
            .prepare_cached(
                "INSERT INTO credit_points (user_id, order_id, points, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![user_id.as_str(), order_id.as_str(), points, now])?,
        Effect::Coupon {
            user_id,
            order_id,
            coupon_code,
            value,
        } => tx
            .prepare_cached(
                "INSERT INTO marketing_coupons (code, user_id, order_id, value, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                coupon_code,
                user_id.as_str(),
                order_id.as_str(),
                value.minor_units(),
                now
            ])?,
        Effect::Sms {
            user_id,
            order_id,
            text,
            external_ref,
        } => tx
            .prepare_cached(
                "INSERT INTO push_sms (user_id, order_id, text, provider_ref, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                user_id.as_str(),
                order_id.as_str(),
                text,
                external_ref,
                now
            ])?,
        Effect::Shipment {
            user_id,
            order_id,
            tracking_no,
        } => tx
            .prepare_cached(
                "INSERT INTO warehouse_shipments (user_id, order_id, tracking_no, created_at, updated_at, status) \
                 VALUES (?1, ?2, ?3, ?4, ?4, 'CREATED')",
            )?
            .execute(params![
                user_id.as_str(),
                order_id.as_str(),
                tracking_no.as_str(),
                now
            ])?,
        // Only the inbox row: the event needed nothing of this system.
        _ => 0,
    };
    Ok(())
}
