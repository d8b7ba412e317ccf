//! Group commit for the order database.
//!
//! A durable commit costs an fsync (1–4 ms on a small machine), so one commit
//! per payment caps a server at a few hundred payments a second. Instead, one
//! writer task takes every create and payment that arrived while the previous
//! commit was in progress and runs them in **one** transaction, each in its own
//! savepoint ([`Store::write_batch`]). Every caller is answered only after that
//! commit, so an acknowledged payment is as durable as before; the cost of the
//! fsync is shared by the whole batch. Under light load a batch is one request
//! and nothing waits. The outbox relay's rounds are operations here too, so
//! under load they share the payments' commit instead of adding their own.
//! On PostgreSQL several writer tasks commit at once (`spawn_parallel`):
//! the server has its own group commit, and row locks keep them apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ordermq_domain::ports::StorageError;
use ordermq_domain::view::GroupCommitStats;
use ordermq_domain::{CreateOrderError, OrderId, PayOrderError, now_millis};
use ordermq_store::{Backend, CloseOutcome, Store, WriteOp, WriteResult};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A batch slower than this is logged and counted: every payment in it waited that long.
const SLOW_BATCH: Duration = Duration::from_millis(100);

/// The batch size from which the writer counts as loaded and lingers (like
/// PostgreSQL's `commit_siblings`): with it at 2, the linger doubled payment
/// p50 at 500-1,300/s (2.3 → 5.4 ms) where commits are cheap anyway; at
/// 5,000/s batches hold 14 without the linger and ~36 with it.
const LINGER_FROM: usize = 4;

struct Request {
    op: WriteOp,
    reply: oneshot::Sender<WriteResult>,
}

/// Handle to the writer task; cloning shares the task. The task ends when
/// every handle is dropped, after finishing the batches already queued.
#[derive(Debug, Clone)]
pub struct OrderWriter {
    /// One queue per writer task (see [`OrderWriter::spawn_parallel`]).
    requests: Arc<[mpsc::Sender<Request>]>,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    operations: AtomicU64,
    busy_us: AtomicU64,
    slow: AtomicU64,
    slow_us: AtomicU64,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("op", &self.op)
            .finish_non_exhaustive()
    }
}

impl OrderWriter {
    /// Starts the writer task; batches hold at most `max_batch` operations.
    pub fn spawn(store: Store, max_batch: usize) -> (Self, JoinHandle<()>) {
        Self::spawn_lingering(store, max_batch, Duration::ZERO)
    }

    /// As [`spawn`](Self::spawn); while requests are queuing (the last batch
    /// carried at least `LINGER_FROM`), a batch also waits up to `linger`
    /// for more before it commits. A lightly loaded writer never waits.
    pub fn spawn_lingering(
        store: Store,
        max_batch: usize,
        linger: Duration,
    ) -> (Self, JoinHandle<()>) {
        Self::spawn_parallel(store, max_batch, linger, 1)
    }

    /// As [`spawn_lingering`](Self::spawn_lingering), with `writers` writer
    /// tasks committing at once on PostgreSQL and MySQL (one on SQLite, whose
    /// file has one writer). PostgreSQL and InnoDB flush the commits that
    /// arrive together with one log flush of their own, so while one batch waits for its
    /// flush the next is already being written. An order's payments and
    /// closes always go to the same writer (by order id), a user's creates
    /// too (by user id), so two concurrent batches never contend for one
    /// order or one user's limits; the relay's rounds go to the first.
    pub fn spawn_parallel(
        store: Store,
        max_batch: usize,
        linger: Duration,
        writers: usize,
    ) -> (Self, JoinHandle<()>) {
        let writers = match store.backend() {
            Backend::Postgres | Backend::Mysql => writers.max(1),
            Backend::Sqlite => 1,
        };
        let counters = Arc::new(Counters::default());
        let mut queues = Vec::with_capacity(writers);
        let mut tasks = Vec::with_capacity(writers);
        for _ in 0..writers {
            let (requests, queue) = mpsc::channel::<Request>(max_batch * 8);
            queues.push(requests);
            tasks.push(tokio::spawn(write_batches(
                store.clone(),
                queue,
                max_batch,
                linger,
                counters.clone(),
            )));
        }
        let task = tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
        });
        (
            Self {
                requests: queues.into(),
                counters,
            },
            task,
        )
    }

    /// Commits, operations and busy time since the writer started.
    pub fn group_commit(&self) -> GroupCommitStats {
        GroupCommitStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            operations: self.counters.operations.load(Ordering::Relaxed),
            busy_ms: self.counters.busy_us.load(Ordering::Relaxed) / 1_000,
            slow_commits: self.counters.slow.load(Ordering::Relaxed),
            slow_commit_ms: self.counters.slow_us.load(Ordering::Relaxed) / 1_000,
        }
    }

    async fn submit(&self, op: WriteOp) -> Option<WriteResult> {
        let (reply, answer) = oneshot::channel();
        let writer = &self.requests[writer_of(&op, self.requests.len())];
        writer.send(Request { op, reply }).await.ok()?;
        answer.await.ok()
    }

    pub async fn create(
        &self,
        op: WriteOp,
    ) -> Result<ordermq_domain::view::OrderView, CreateOrderError> {
        match self.submit(op).await {
            Some(WriteResult::Created(result)) => result,
            Some(_) => unreachable!("a create is answered with a create result"),
            None => Err(StorageError::unavailable("the order writer has stopped").into()),
        }
    }

    pub async fn pay(
        &self,
        op: WriteOp,
    ) -> Result<ordermq_domain::view::PaymentReceipt, PayOrderError> {
        match self.submit(op).await {
            Some(WriteResult::Paid(result)) => result,
            Some(_) => unreachable!("a payment is answered with a payment result"),
            None => Err(StorageError::unavailable("the order writer has stopped").into()),
        }
    }

    /// The relay's round (see [`WriteOp::RelayOutbox`]): marks `acked` rows
    /// sent at `acked_at` and claims the next due rows, in the next batch's
    /// transaction.
    pub async fn relay_outbox(
        &self,
        owner: &str,
        acked: Vec<i64>,
        acked_at: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<ordermq_domain::OutboxMessage>, StorageError> {
        let op = WriteOp::RelayOutbox {
            owner: owner.to_owned(),
            acked,
            acked_at,
            limit,
            lease_ms,
        };
        match self.submit(op).await {
            Some(WriteResult::Relayed(result)) => result,
            Some(_) => unreachable!("a relay round is answered with a relay result"),
            None => Err(StorageError::unavailable("the order writer has stopped")),
        }
    }

    /// Writes an admitted flash-sale attempt with its message (see
    /// [`WriteOp::Attempt`]), committed with the next batch.
    pub async fn admit(
        &self,
        write: ordermq_store::AttemptWrite,
    ) -> Result<ordermq_store::Admitted, StorageError> {
        match self.submit(WriteOp::Attempt(write)).await {
            Some(WriteResult::Attempted(result)) => result,
            Some(_) => unreachable!("an attempt is answered with an attempt result"),
            None => Err(StorageError::unavailable("the order writer has stopped")),
        }
    }

    /// Creates a queued attempt's order, or rejects the attempt
    /// ([`WriteOp::CreateSaleOrder`], [`WriteOp::RejectAttempt`]): the
    /// attempt's state after it.
    pub async fn end_attempt(
        &self,
        op: WriteOp,
    ) -> Result<ordermq_domain::AttemptState, StorageError> {
        match self.submit(op).await {
            Some(WriteResult::SaleOrder(result)) => result,
            Some(_) => unreachable!("a sale order is answered with an attempt's state"),
            None => Err(StorageError::unavailable("the order writer has stopped")),
        }
    }

    /// Closes the order if it is still unpaid and due.
    pub async fn close(&self, order_id: OrderId) -> Result<CloseOutcome, StorageError> {
        match self.submit(WriteOp::Close(order_id)).await {
            Some(WriteResult::Closed(result)) => result,
            Some(_) => unreachable!("a close is answered with a close result"),
            None => Err(StorageError::unavailable("the order writer has stopped")),
        }
    }
}

/// One writer task: gathers a batch from its queue, writes it, answers.
async fn write_batches(
    store: Store,
    mut queue: mpsc::Receiver<Request>,
    max_batch: usize,
    linger: Duration,
    counting: Arc<Counters>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut last_batch = 0;
    while let Some(first) = queue.recv().await {
        batch.push(first);
        let lingers = last_batch >= LINGER_FROM;
        gather(&mut queue, &mut batch, max_batch, lingers.then_some(linger)).await;
        last_batch = batch.len();
        let ops: Vec<WriteOp> = batch.iter().map(|r| r.op.clone()).collect();
        let begun = std::time::Instant::now();
        let results = store.write_batch(&ops, now_millis()).await;
        let took = begun.elapsed();
        counting.commits.fetch_add(1, Ordering::Relaxed);
        counting
            .operations
            .fetch_add(ops.len() as u64, Ordering::Relaxed);
        counting
            .busy_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if took > SLOW_BATCH {
            counting.slow.fetch_add(1, Ordering::Relaxed);
            counting
                .slow_us
                .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
            tracing::warn!(
                operations = ops.len(),
                took_ms = took.as_millis() as u64,
                "slow order-database batch"
            );
        }
        for (request, result) in batch.drain(..).zip(results) {
            // The caller may have gone (client disconnected); the write stands.
            let _ = request.reply.send(result);
        }
    }
}

/// Which of `writers` writer tasks takes `op`: an order's payments and
/// closes by its id, creates by their user, a flash sale's attempts and
/// their ends by the sale (its rows then meet one writer only: no two
/// concurrent batches lock them in opposite orders), the relay's rounds the
/// first.
fn writer_of(op: &WriteOp, writers: usize) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    if writers <= 1 {
        return 0;
    }
    let key = match op {
        WriteOp::Create { order, .. } => order.user_id().as_str(),
        WriteOp::Pay(notice) => notice.order_id.as_str(),
        WriteOp::Close(order_id) => order_id.as_str(),
        WriteOp::RelayOutbox { .. } => return 0,
        WriteOp::Attempt(write) => write.event.sale_id.as_str(),
        WriteOp::CreateSaleOrder { event, .. } => event.sale_id.as_str(),
        WriteOp::RejectAttempt { sale_id, .. } => sale_id.as_str(),
    };
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
    (hash % writers as u64) as usize
}

type EffectReply = oneshot::Sender<Vec<Result<ordermq_store::Applied, String>>>;

/// Group commit for one downstream system's effects: concurrent consumer
/// batches (a group runs many at once while third parties answer) are merged
/// into one transaction, so the system's disk sees one fsync per round instead
/// of one per batch — and leaves the payments' fsyncs alone.
#[derive(Debug, Clone)]
pub struct EffectWriter {
    requests: mpsc::Sender<(Vec<ordermq_store::EffectRecord>, EffectReply)>,
}

/// Adds what is already queued to `batch` (which holds the request that woke
/// the writer), up to `max`; with `linger`, also waits up to that long for
/// more. A zero linger never waits.
async fn gather<T>(
    queue: &mut mpsc::Receiver<T>,
    batch: &mut Vec<T>,
    max: usize,
    linger: Option<Duration>,
) {
    while batch.len() < max {
        match queue.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    let Some(linger) = linger.filter(|l| !l.is_zero()) else {
        return;
    };
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, queue.recv()).await {
            Ok(Some(next)) => batch.push(next),
            _ => break,
        }
    }
}

/// Each record in a transaction of its own: after a merged commit failed,
/// only the records that cannot apply fail.
async fn apply_one_by_one(
    store: &Store,
    records: &[ordermq_store::EffectRecord],
) -> Vec<Result<ordermq_store::Applied, String>> {
    let mut answers = Vec::with_capacity(records.len());
    for record in records {
        answers.push(
            match store
                .apply_effects(std::slice::from_ref(record), now_millis())
                .await
            {
                Ok(mut applied) => applied.pop().ok_or_else(|| "no answer".to_owned()),
                Err(e) => Err(e.to_string()),
            },
        );
    }
    answers
}

/// Most consumer batches merged into one effect commit.
const EFFECT_BATCH_MAX: usize = 256;

/// The effect commit size from which the writer counts as loaded and
/// lingers. A relay round reaches a group as one batch per queue, arriving
/// within a few milliseconds of each other: without a linger the first was
/// committed alone and the rest together, two commits per round.
const EFFECT_LINGER_FROM: usize = 2;

impl EffectWriter {
    /// Starts the writer task; it stops when every handle is dropped.
    pub fn spawn(store: Store) -> (Self, JoinHandle<()>) {
        Self::spawn_lingering(store, Duration::ZERO)
    }

    /// As [`spawn`](Self::spawn); while batches are queuing (the last commit
    /// merged at least `EFFECT_LINGER_FROM`), a commit also waits up to
    /// `linger` for more. A lightly loaded system never waits.
    pub fn spawn_lingering(store: Store, linger: Duration) -> (Self, JoinHandle<()>) {
        let (requests, mut queue) =
            mpsc::channel::<(Vec<ordermq_store::EffectRecord>, EffectReply)>(1_024);
        let task = tokio::spawn(async move {
            let mut waiting = Vec::new();
            let mut last_commit = 0;
            while let Some(first) = queue.recv().await {
                waiting.push(first);
                let lingers = last_commit >= EFFECT_LINGER_FROM;
                gather(
                    &mut queue,
                    &mut waiting,
                    EFFECT_BATCH_MAX,
                    lingers.then_some(linger),
                )
                .await;
                last_commit = waiting.len();
                let records: Vec<_> = waiting
                    .iter()
                    .flat_map(|(r, _)| r.iter().cloned())
                    .collect();
                match store.apply_effects(&records, now_millis()).await {
                    Ok(applied) => {
                        let mut applied = applied.into_iter().map(Ok);
                        for (records, reply) in waiting.drain(..) {
                            let _ = reply.send(applied.by_ref().take(records.len()).collect());
                        }
                    }
                    // One bad record fails the whole transaction: find it
                    // alone, so the batches merged with it still commit.
                    Err(e) if records.len() > 1 => {
                        tracing::warn!(error = %e, records = records.len(), "an effect commit failed; applying its records one by one");
                        for (records, reply) in waiting.drain(..) {
                            let _ = reply.send(apply_one_by_one(&store, &records).await);
                        }
                    }
                    Err(e) => {
                        for (records, reply) in waiting.drain(..) {
                            let _ = reply.send(vec![Err(e.to_string()); records.len()]);
                        }
                    }
                }
            }
        });
        (Self { requests }, task)
    }

    /// Records `records` (all of one system); answers, record by record,
    /// after they are committed. They commit together with whatever else is
    /// queued; if that transaction fails, each record is tried in one of
    /// its own, so only a record that cannot apply fails.
    pub async fn apply(
        &self,
        records: Vec<ordermq_store::EffectRecord>,
    ) -> Vec<Result<ordermq_store::Applied, String>> {
        if records.is_empty() {
            return Vec::new();
        }
        let count = records.len();
        let stopped = || vec![Err("the effect writer has stopped".to_owned()); count];
        let (reply, answer) = oneshot::channel();
        if self.requests.send((records, reply)).await.is_err() {
            return stopped();
        }
        answer.await.unwrap_or_else(|_| stopped())
    }
}

#[cfg(test)]
mod tests {
    use futures_util::future::join_all;
    use ordermq_domain::ports::OrderService;
    use ordermq_domain::{NewOrder, OrderLine, Quantity, Sku, UserId};

    use crate::testing::{Fixture, SKU};

    fn one_unit(user: &str) -> NewOrder {
        NewOrder::new(
            UserId::parse(user).unwrap(),
            vec![OrderLine {
                sku: Sku::parse(SKU).unwrap(),
                quantity: Quantity::parse(1).unwrap(),
            }],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn requests_that_queue_during_a_commit_share_the_next_one() {
        let fixture = Fixture::new().await;
        // All submitted before the writer task runs (one-threaded test runtime).
        let created = join_all((0..20).map(|i| {
            let orders = fixture.orders.clone();
            async move { orders.create_order(one_unit(&format!("u{i}"))).await }
        }))
        .await;
        assert!(created.iter().all(Result::is_ok), "{created:?}");
        let stats = fixture.writer.group_commit();
        assert_eq!(stats.operations, 20);
        assert!(
            stats.commits <= 2,
            "20 queued creates took {} commits",
            stats.commits
        );
    }

    #[test]
    fn an_orders_writes_and_a_users_creates_always_meet_the_same_writer() {
        use ordermq_domain::{Amount, OrderId, PaymentId, PaymentNotice, UserLimits};
        use ordermq_store::WriteOp;

        use super::writer_of;
        let pay = |order: u32, payment: &str| {
            WriteOp::Pay(PaymentNotice {
                order_id: OrderId::generate(1, order),
                payment_id: PaymentId::parse(payment).unwrap(),
                amount: Amount::parse(1).unwrap(),
            })
        };
        let create = |user: &str, order: u32| WriteOp::Create {
            order: one_unit(user),
            order_id: OrderId::generate(1, order),
            close_after_ms: None,
            limits: UserLimits::OFF,
        };
        let writers: Vec<usize> = (0..64).map(|n| writer_of(&pay(n, "p"), 4)).collect();
        assert!(writers.iter().all(|&w| w < 4));
        assert!((0..4).all(|w| writers.contains(&w)), "{writers:?}");
        for n in 0..64 {
            assert_eq!(writer_of(&pay(n, "p"), 4), writer_of(&pay(n, "q"), 4));
            assert_eq!(
                writer_of(&pay(n, "p"), 4),
                writer_of(&WriteOp::Close(OrderId::generate(1, n)), 4)
            );
            let user = format!("u{n}");
            assert_eq!(
                writer_of(&create(&user, 1), 4),
                writer_of(&create(&user, 2), 4)
            );
        }
        let relay = WriteOp::RelayOutbox {
            owner: "r".into(),
            acked: Vec::new(),
            acked_at: 0,
            limit: 1,
            lease_ms: 1,
        };
        assert_eq!(writer_of(&relay, 4), 0);
        assert_eq!(writer_of(&pay(7, "p"), 1), 0);
    }

    #[tokio::test]
    async fn a_failing_request_does_not_fail_the_batch_it_rides_in() {
        let fixture = Fixture::new().await;
        // Stock is 100: the 150-unit order fails alone, its neighbours commit.
        let big = NewOrder::new(
            UserId::parse("greedy").unwrap(),
            vec![OrderLine {
                sku: Sku::parse(SKU).unwrap(),
                quantity: Quantity::parse(150).unwrap(),
            }],
        )
        .unwrap();
        let (a, b, c) = tokio::join!(
            fixture.orders.create_order(one_unit("a")),
            fixture.orders.create_order(big),
            fixture.orders.create_order(one_unit("c")),
        );
        assert!(a.is_ok() && c.is_ok(), "{a:?} {c:?}");
        assert!(
            matches!(b, Err(ordermq_domain::CreateOrderError::OutOfStock { .. })),
            "{b:?}"
        );
        assert_eq!(fixture.writer.group_commit().commits, 1);
    }

    /// A record that cannot apply (a second points entry for an order,
    /// refused by the table's UNIQUE order id) fails alone: the records
    /// committed with it, in its call and in a concurrent one, apply.
    #[tokio::test]
    async fn a_record_that_cannot_apply_fails_alone() {
        use ordermq_domain::{Effect, OrderId, System};
        use ordermq_store::{Applied, EffectRecord};

        let fixture = Fixture::new().await;
        let (writer, _task) = super::EffectWriter::spawn(fixture.store.clone());
        let points = |event: &str, order: &str| EffectRecord {
            event_id: format!("OrderPaid:{order}{event}"),
            msg_id: format!("msg-{order}{event}"),
            effect: Effect::Points {
                user_id: UserId::parse("u1").unwrap(),
                order_id: OrderId::parse(order).unwrap(),
                points: 1,
            },
        };
        let first = writer.apply(vec![points("", "O1")]).await;
        assert_eq!(first, [Ok(Applied::Now)]);
        // Another event claiming the same order's points: the store refuses it.
        let (mixed, other) = tokio::join!(
            writer.apply(vec![
                points("", "O2"),
                points("-again", "O1"),
                points("", "O3")
            ]),
            writer.apply(vec![points("", "O4")]),
        );
        assert_eq!(mixed[0], Ok(Applied::Now));
        assert!(mixed[1].is_err(), "{mixed:?}");
        assert_eq!(mixed[2], Ok(Applied::Now));
        assert_eq!(other, [Ok(Applied::Now)]);
        let applied = fixture
            .store
            .applied_among(
                System::Credit,
                &[
                    "OrderPaid:O2".into(),
                    "OrderPaid:O3".into(),
                    "OrderPaid:O4".into(),
                ],
            )
            .await
            .unwrap();
        assert_eq!(applied.len(), 3);
    }
}
