//! Flash-sale admission: who gets a unit is decided here, in memory, so
//! that the crowd that loses never reaches the database or the broker.
//!
//! Each sale has a budget in this process: units leased from the database
//! in chunks ([`Store::lease_units`]), the users admitted here, and the
//! admissions being written. An attempt is refused at once if the sale is
//! not open, if the user already tried here, or if the budget is empty and
//! the database said so moments ago (when that answer is due to be checked,
//! one attempt asks the database again while the rest are still refused).
//! An admitted attempt takes its units
//! from the budget, then the attempt, its message and the units' move out
//! of this instance's lease are committed together (the group commit's
//! [`WriteOp::Attempt`](ordermq_store::WriteOp::Attempt)) before the shopper hears `QUEUED`: there is no
//! moment when a unit is taken and its order's message is not durable.
//!
//! Several instances share a sale without overselling: each admits only
//! from its own lease, and the database refuses an admission its lease no
//! longer covers. The budget is never trusted over the database: it grows
//! only by what a lease granted, and is the lease's figure whole whenever no
//! admission is in flight, so a restarted instance starts from what its
//! lease holds, and a lease that expired (its units returned to the sale by
//! another instance) is leased again.
//!
//! A crowd should not queue behind the database for units: once the budget
//! is down to half a chunk, the next chunk is leased in the background, and
//! while leases follow each other within a second each asks for twice the
//! last (up to eight chunks), so a crowd that empties chunks fast makes few
//! trips. A lease that finds the sale short stops this: the end of a sale
//! is leased on demand, as before.
//!
//! The refusals are counted here, per sale and code, for the operator's
//! view of a sale ([`SaleProgress::refused_here`]): they never reach the
//! database, so nothing else could count them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordermq_domain::ErrorCode;
use ordermq_domain::event::FlashAttemptQueued;
use ordermq_domain::ports::{BoxFuture, FlashSaleService, StorageError};
use ordermq_domain::{
    Attempt, AttemptId, AttemptRefusal, AttemptState, CreateSaleError, NewSale, OrderId, Sale,
    SaleId, SaleProgress, UserId, now_millis,
};
use ordermq_store::{Admitted, AttemptWrite, Store};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::group_commit::OrderWriter;
use crate::orders::random_suffix;

/// How the admission leases and how long it believes a sold-out answer.
#[derive(Debug, Clone)]
pub struct FlashSettings {
    /// This instance's name in the database's leases (unique per instance,
    /// the same after a restart so the instance finds its lease again).
    pub owner: String,
    /// Units leased at once.
    pub chunk: u32,
    /// A lease not renewed by an admission for this long may be returned
    /// to the sale by another instance.
    pub lease_ttl: Duration,
    /// After the database said the sale has nothing left, attempts are
    /// refused `SOLD_OUT` from memory for this long before it is asked again
    /// (units come back when attempts are rejected or orders close unpaid).
    pub sold_out_recheck: Duration,
}

/// One sale's budget in this process.
#[derive(Debug)]
struct Budget {
    sale: Sale,
    state: Mutex<BudgetState>,
    /// One lease at a time per sale: a crowd waiting for units makes one
    /// trip to the database, not one each.
    leasing: tokio::sync::Mutex<()>,
    /// Attempts refused here since this process started, per code of
    /// [`REFUSALS_COUNTED`] (no lock on the refusals' hot path).
    refused: [AtomicI64; REFUSALS_COUNTED.len()],
}

/// The refusals of a sale's attempts counted per sale (not `SALE_NOT_FOUND`:
/// there is no such sale to count it for; nor storage failures).
const REFUSALS_COUNTED: [ErrorCode; 4] = [
    ErrorCode::SaleNotActive,
    ErrorCode::SaleLimitExceeded,
    ErrorCode::AlreadyAttempted,
    ErrorCode::SoldOut,
];

impl Budget {
    fn count_refusal(&self, refusal: &AttemptRefusal) {
        let code = refusal.code();
        if let Some(at) = REFUSALS_COUNTED.iter().position(|c| *c == code) {
            self.refused[at].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The refusals counted, the codes that have some.
    fn refused(&self) -> BTreeMap<String, i64> {
        REFUSALS_COUNTED
            .iter()
            .zip(&self.refused)
            .map(|(code, n)| (code.as_str().to_owned(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[derive(Debug, Default)]
struct BudgetState {
    /// The lease's units as the database last said, less what was admitted
    /// since (committed or in flight).
    units: u32,
    /// Whether the lease was read since this process started.
    loaded: bool,
    /// Units of admissions being written.
    in_flight: u32,
    /// Users admitted (or told `ALREADY_ATTEMPTED`) here.
    users: HashSet<UserId>,
    /// Until when an empty budget means sold out without asking.
    sold_out_until: Option<Instant>,
    /// Units the next lease asks for: the configured chunk, doubled (up to
    /// [`MAX_CHUNK_GROWTH`] times) while leases follow each other within
    /// [`FAST_LEASES`], back to the chunk when they do not.
    chunk: u32,
    /// When the last lease was granted.
    leased_at: Option<Instant>,
    /// The last lease got all it asked for: the sale may have more.
    more_left: bool,
    /// A lease ahead of need is on its way.
    leasing_ahead: bool,
    /// An attempt is asking the database whether a sold-out sale has units
    /// again: the others are refused from memory meanwhile, instead of
    /// queueing behind its lease (a crowd at a sold-out sale would stall
    /// every `sold_out_recheck`).
    rechecking: bool,
}

/// Leases closer together than this mean a fast crowd: the next asks for
/// twice as many units, so the crowd waits on fewer database trips.
const FAST_LEASES: Duration = Duration::from_secs(1);

/// The most a lease's size grows over the configured chunk: what one
/// instance may strand in its lease if it dies (until `lease_ttl`) or hold
/// while another instance already answers `SOLD_OUT`.
const MAX_CHUNK_GROWTH: u32 = 8;

/// How long before a sale created here opens its first units are leased:
/// well inside the lease's time to live, so that an instance that then
/// dies strands them only briefly.
const LEASE_BEFORE_OPENING: Duration = Duration::from_secs(2);

/// The flash-sale service behind the HTTP API.
#[derive(Debug, Clone)]
pub struct FlashSales {
    store: Store,
    writer: OrderWriter,
    relay_wake: Arc<Notify>,
    settings: Arc<FlashSettings>,
    budgets: Arc<Mutex<HashMap<SaleId, BudgetCell>>>,
}

/// A sale's budget here, once read (or set up when the sale was created
/// here): attempts that arrive while it is read wait for that one read.
type BudgetCell = Arc<tokio::sync::OnceCell<Arc<Budget>>>;

/// What taking units from the budget decided.
enum Take {
    Taken,
    Refused(AttemptRefusal),
    /// The budget is out of units: lease (the attempt waits for it).
    Lease,
    /// The sold-out answer is due to be checked again: this attempt asks
    /// the database while the others are still refused from memory.
    Recheck,
}

/// Marks the end of a sold-out recheck however the rechecking attempt
/// ends (an attempt's future is dropped when its client goes away).
struct Rechecking<'a>(&'a Budget);

impl Drop for Rechecking<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).rechecking = false;
    }
}

impl FlashSales {
    /// The service on `store`, writing through `writer`.
    pub fn new(
        store: Store,
        writer: OrderWriter,
        relay_wake: Arc<Notify>,
        settings: FlashSettings,
    ) -> Self {
        Self {
            store,
            writer,
            relay_wake,
            settings: Arc::new(settings),
            budgets: Arc::default(),
        }
    }

    /// The sale's budget here, read from the database at the sale's first
    /// attempt on this instance: once, however many attempts arrive while
    /// it is read. A sale not found leaves nothing behind (it may be
    /// created on another instance later, and ids made up by clients must
    /// not fill the map).
    async fn budget(&self, sale_id: &SaleId) -> Result<Arc<Budget>, AttemptRefusal> {
        let cell = {
            let mut budgets = lock(&self.budgets);
            match budgets.get(sale_id).and_then(|cell| cell.get()) {
                Some(budget) => return Ok(budget.clone()),
                None => budgets.entry(sale_id.clone()).or_default().clone(),
            }
        };
        let read = cell
            .get_or_try_init(|| async {
                match self.store.sale(sale_id).await {
                    Ok(Some(sale)) => Ok(Arc::new(self.new_budget(sale))),
                    Ok(None) => Err(AttemptRefusal::SaleNotFound(sale_id.to_string())),
                    Err(e) => Err(AttemptRefusal::Storage(e)),
                }
            })
            .await;
        match read {
            Ok(budget) => Ok(budget.clone()),
            Err(refusal) => {
                let mut budgets = lock(&self.budgets);
                if budgets
                    .get(sale_id)
                    .is_some_and(|c| Arc::ptr_eq(c, &cell) && c.get().is_none())
                {
                    budgets.remove(sale_id);
                }
                Err(refusal)
            }
        }
    }

    fn new_budget(&self, sale: Sale) -> Budget {
        Budget {
            sale,
            state: Mutex::new(BudgetState {
                chunk: self.settings.chunk,
                ..BudgetState::default()
            }),
            leasing: tokio::sync::Mutex::new(()),
            refused: Default::default(),
        }
    }

    /// Gets a sale just created here ready for its crowd: its budget is
    /// set up from the sale as created (no read at its first attempt) and
    /// its first units are leased shortly before it opens
    /// ([`LEASE_BEFORE_OPENING`]), so the first attempts find units in
    /// memory instead of queueing behind the sale's read and first lease.
    /// Other instances lease at their first attempt (or ahead, once they
    /// run low). A lease that fails here is retried on demand by the first
    /// attempt.
    fn prepare(&self, sale: Sale) {
        if sale.end <= now_millis() {
            return;
        }
        let budget = Arc::new(self.new_budget(sale.clone()));
        let cell = Arc::new(tokio::sync::OnceCell::new_with(Some(budget.clone())));
        lock(&self.budgets).insert(sale.sale_id.clone(), cell);
        let this = self.clone();
        tokio::spawn(async move {
            let lead = LEASE_BEFORE_OPENING.min(this.settings.lease_ttl / 2);
            let lead = lead.as_millis() as i64;
            let wait = sale.start - lead - now_millis();
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            if let Err(e) = this.lease(&budget, 1).await {
                tracing::warn!(sale_id = %sale.sale_id, error = %e,
                    "leasing a new flash sale's first units failed (its first attempt will)");
            }
        });
    }

    /// Takes `quantity` units for `user` from the budget, if it has them.
    /// `first`: the attempt has not asked the database yet, so it may be
    /// the one to recheck a sold-out answer that is due.
    fn take(budget: &Budget, user: &UserId, quantity: u32, now: Instant, first: bool) -> Take {
        let mut state = lock(&budget.state);
        if state.users.contains(user) {
            return Take::Refused(AttemptRefusal::AlreadyAttempted);
        }
        if state.loaded && state.units >= quantity {
            state.units -= quantity;
            state.in_flight += quantity;
            state.users.insert(user.clone());
            return Take::Taken;
        }
        match state.sold_out_until {
            None => Take::Lease,
            Some(until) if now < until || state.rechecking || !first => {
                Take::Refused(AttemptRefusal::SoldOut)
            }
            Some(_) => {
                state.rechecking = true;
                Take::Recheck
            }
        }
    }

    /// Leases more units (or reads the lease after a restart) and sets the
    /// budget from the database's answer.
    async fn lease(&self, budget: &Budget, quantity: u32) -> Result<(), StorageError> {
        let _turn = budget.leasing.lock().await;
        let chunk = {
            let state = lock(&budget.state);
            if state.loaded && state.units >= quantity {
                return Ok(()); // another attempt leased while this one waited
            }
            if state
                .sold_out_until
                .is_some_and(|until| Instant::now() < until)
            {
                return Ok(());
            }
            state.chunk
        };
        let leased = self.lease_units(budget, chunk, quantity).await?;
        self.settle(&mut lock(&budget.state), leased, chunk, quantity);
        Ok(())
    }

    /// Starts leasing the next chunk in the background once the budget is
    /// down to half a chunk, so that a crowd finds units already leased
    /// instead of queueing behind a database trip. Not when the last lease
    /// found the sale short (it is ending: the on-demand lease and the
    /// sold-out recheck take over), nor twice at once.
    fn lease_ahead_if_low(&self, budget: &Arc<Budget>) {
        {
            let mut state = lock(&budget.state);
            if !state.loaded
                || !state.more_left
                || state.leasing_ahead
                || state.units > state.chunk / 2
            {
                return;
            }
            state.leasing_ahead = true;
        }
        let (this, budget) = (self.clone(), Arc::clone(budget));
        tokio::spawn(async move {
            let leased = {
                let _turn = budget.leasing.lock().await;
                let chunk = {
                    let state = lock(&budget.state);
                    // An on-demand lease came first and refilled it.
                    (state.units <= state.chunk / 2 && state.more_left).then_some(state.chunk)
                };
                match chunk {
                    None => Ok(()),
                    Some(chunk) => this.lease_units(&budget, chunk, 1).await.map(|leased| {
                        this.settle(&mut lock(&budget.state), leased, chunk, 1);
                    }),
                }
            };
            lock(&budget.state).leasing_ahead = false;
            if let Err(e) = leased {
                // The next attempt that finds the budget empty leases on demand.
                tracing::warn!(sale_id = %budget.sale.sale_id, error = %e,
                    "leasing flash-sale units ahead failed");
            }
        });
    }

    async fn lease_units(
        &self,
        budget: &Budget,
        chunk: u32,
        quantity: u32,
    ) -> Result<ordermq_store::Leased, StorageError> {
        self.store
            .lease_units(
                &budget.sale.sale_id,
                &self.settings.owner,
                chunk,
                quantity,
                self.settings.lease_ttl.as_millis() as i64,
                now_millis(),
            )
            .await
    }

    /// Sets the budget from a lease's answer (asked: `chunk`, at least
    /// `quantity`), and the size of the next one.
    fn settle(
        &self,
        state: &mut BudgetState,
        leased: ordermq_store::Leased,
        chunk: u32,
        quantity: u32,
    ) {
        // The lease's figure counts admissions committed or not; one that
        // committed may still be in flight here (its answer on the way). So
        // the budget adds what this lease granted, and takes the figure
        // whole only when nothing is in flight (after a restart, a lost
        // lease, or to pick up units a miscount left behind).
        if state.in_flight == 0 {
            state.units = leased.holds;
        } else if state.loaded {
            state.units += leased.granted;
        } else {
            state.units = leased.holds.saturating_sub(state.in_flight);
        }
        state.loaded = true;
        let now = Instant::now();
        state.sold_out_until =
            (state.units < quantity).then(|| now + self.settings.sold_out_recheck);
        let fast = state
            .leased_at
            .is_some_and(|at| now.duration_since(at) < FAST_LEASES);
        state.more_left = leased.granted >= chunk;
        state.leased_at = Some(now);
        let base = self.settings.chunk;
        state.chunk = if fast {
            chunk
                .saturating_mul(2)
                .min(base.saturating_mul(MAX_CHUNK_GROWTH))
        } else {
            base
        };
    }

    /// Writes an admitted attempt; the budget is settled by the answer.
    async fn write(
        &self,
        budget: &Budget,
        user: &UserId,
        quantity: u32,
    ) -> Result<Option<Attempt>, AttemptRefusal> {
        let now = now_millis();
        let random = random_suffix()?;
        let event = FlashAttemptQueued {
            attempt_id: AttemptId::generate(now, random),
            sale_id: budget.sale.sale_id.clone(),
            user_id: user.clone(),
            sku: budget.sale.sku.clone(),
            quantity,
            order_id: OrderId::generate(now, random_suffix()?),
            queued_at: now,
        };
        let written = self
            .writer
            .admit(AttemptWrite {
                event: event.clone(),
                owner: self.settings.owner.clone(),
                lease_ttl_ms: self.settings.lease_ttl.as_millis() as i64,
            })
            .await;
        let mut state = lock(&budget.state);
        state.in_flight -= quantity;
        match written {
            Ok(Admitted::Queued) => {
                drop(state);
                self.relay_wake.notify_one();
                Ok(Some(Attempt {
                    attempt_id: event.attempt_id,
                    sale_id: event.sale_id,
                    user_id: event.user_id,
                    quantity,
                    state: AttemptState::Queued,
                    queued_at: now,
                }))
            }
            Ok(Admitted::AlreadyAttempted) => {
                state.units += quantity;
                Err(AttemptRefusal::AlreadyAttempted)
            }
            Ok(Admitted::LeaseLost) => {
                // The lease is not what this budget thought: read it again.
                state.users.remove(user);
                state.loaded = false;
                state.sold_out_until = None;
                Ok(None)
            }
            Err(e) => {
                state.units += quantity;
                state.users.remove(user);
                Err(e.into())
            }
        }
    }

    async fn admit(
        &self,
        sale_id: SaleId,
        user: UserId,
        quantity: u32,
    ) -> Result<Attempt, AttemptRefusal> {
        let budget = self.budget(&sale_id).await?;
        let admitted = self.admit_from(&budget, user, quantity).await;
        if let Err(refusal) = &admitted {
            budget.count_refusal(refusal);
        }
        admitted
    }

    async fn admit_from(
        &self,
        budget: &Arc<Budget>,
        user: UserId,
        quantity: u32,
    ) -> Result<Attempt, AttemptRefusal> {
        budget.sale.check(quantity, now_millis())?;
        // A lease lost under an admission is read again once; twice in a
        // row means another process is taking this instance's lease.
        for _ in 0..2 {
            match Self::take(budget, &user, quantity, Instant::now(), true) {
                Take::Refused(refusal) => return Err(refusal),
                took @ (Take::Lease | Take::Recheck) => {
                    let _rechecking = matches!(took, Take::Recheck).then(|| Rechecking(budget));
                    self.lease(budget, quantity).await?;
                    match Self::take(budget, &user, quantity, Instant::now(), false) {
                        Take::Taken => {}
                        Take::Refused(refusal) => return Err(refusal),
                        Take::Lease | Take::Recheck => return Err(AttemptRefusal::SoldOut),
                    }
                }
                Take::Taken => {}
            }
            self.lease_ahead_if_low(budget);
            if let Some(attempt) = self.write(budget, &user, quantity).await? {
                return Ok(attempt);
            }
        }
        Err(AttemptRefusal::Storage(StorageError::unavailable(
            "this instance's lease of the sale's units was taken twice in a row",
        )))
    }
}

impl FlashSales {
    /// The refusals this instance counted for the sale of `progress`.
    fn add_refusals(&self, progress: &mut SaleProgress) {
        if let Some(budget) = lock(&self.budgets)
            .get(&progress.sale.sale_id)
            .and_then(|cell| cell.get())
        {
            progress.refused_here = budget.refused();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FlashSaleService for FlashSales {
    fn create_sale(&self, sale: NewSale) -> BoxFuture<'_, Result<Sale, CreateSaleError>> {
        Box::pin(async move {
            let now = now_millis();
            let sale_id = SaleId::generate(now, random_suffix()?);
            let created = self.store.create_sale(&sale, &sale_id, now).await?;
            self.prepare(created.clone());
            Ok(created)
        })
    }

    fn attempt(
        &self,
        sale: SaleId,
        user: UserId,
        quantity: u32,
    ) -> BoxFuture<'_, Result<Attempt, AttemptRefusal>> {
        Box::pin(self.admit(sale, user, quantity))
    }

    fn attempt_state(
        &self,
        attempt: AttemptId,
    ) -> BoxFuture<'_, Result<Option<Attempt>, StorageError>> {
        Box::pin(async move { self.store.attempt(&attempt).await })
    }

    fn sales(&self) -> BoxFuture<'_, Result<Vec<SaleProgress>, StorageError>> {
        Box::pin(async move {
            let mut listed = self.store.sales_progress(now_millis()).await?;
            listed.iter_mut().for_each(|p| self.add_refusals(p));
            Ok(listed)
        })
    }

    fn sale(&self, sale: SaleId) -> BoxFuture<'_, Result<Option<SaleProgress>, StorageError>> {
        Box::pin(async move {
            let mut found = self.store.sale_progress(&sale, now_millis()).await?;
            found.iter_mut().for_each(|p| self.add_refusals(p));
            Ok(found)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::future::join_all;
    use ordermq_domain::ports::FlashSaleService;
    use std::collections::BTreeMap;

    use ordermq_domain::{AttemptRefusal, NewSale, SaleId, SaleProgress, Sku, UserId, now_millis};
    use ordermq_store::{DemoProduct, Store, StoreOptions};
    use tokio::sync::Notify;

    use super::{FlashSales, FlashSettings};
    use crate::group_commit::OrderWriter;

    const SKU: &str = "FLASH-1";

    /// One database, as several instances share it.
    struct Db {
        first: Store,
        _dir: tempfile::TempDir,
    }

    async fn db() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let first = Store::open(&url, &StoreOptions::default()).await.unwrap();
        first
            .seed_catalog(&[DemoProduct {
                sku: SKU,
                name: "Flash product",
                price: 999,
                stock: 1_000,
            }])
            .await
            .unwrap();
        Db { first, _dir: dir }
    }

    /// An instance of the service: its own writer, owner name and budgets.
    /// (One SQLite file takes one process's writes: instances of one test
    /// share the store's handle, and with it its write gate.)
    struct Instance {
        flash: FlashSales,
        writer: OrderWriter,
    }

    async fn instance(db: &Db, owner: &str, ttl: Duration, recheck: Duration) -> Instance {
        let store = db.first.clone();
        let (writer, _task) = OrderWriter::spawn(store.clone(), 64);
        let flash = FlashSales::new(
            store,
            writer.clone(),
            Arc::new(Notify::new()),
            FlashSettings {
                owner: owner.to_owned(),
                chunk: 5,
                lease_ttl: ttl,
                sold_out_recheck: recheck,
            },
        );
        Instance { flash, writer }
    }

    async fn sale(db: &Db, units: i64, opens_in_ms: i64) -> SaleId {
        let now = now_millis();
        let new = NewSale::new(
            Sku::parse(SKU).unwrap(),
            units,
            now + opens_in_ms,
            now + opens_in_ms + 600_000,
            1,
        )
        .unwrap();
        let id = SaleId::generate(now, crate::orders::random_suffix().unwrap());
        db.first.create_sale(&new, &id, now).await.unwrap();
        id
    }

    fn user(n: usize) -> UserId {
        UserId::parse(&format!("u{n}")).unwrap()
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_instances_on_one_database_sell_every_unit_and_not_one_more() {
        let db = db().await;
        let sale_id = sale(&db, 37, -1_000).await;
        let a = instance(&db, "A", LONG, Duration::from_millis(50)).await;
        let b = instance(&db, "B", LONG, Duration::from_millis(50)).await;
        let attempts = (0..200).map(|n| {
            let flash = if n % 2 == 0 { &a.flash } else { &b.flash };
            flash.attempt(sale_id.clone(), user(n), 1)
        });
        let answers = join_all(attempts).await;
        let admitted = answers.iter().filter(|a| a.is_ok()).count();
        assert_eq!(admitted, 37, "{answers:?}");
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Ok(_) | Err(AttemptRefusal::SoldOut))),
            "{answers:?}"
        );
        let counts = db.first.sale_counts(&sale_id).await.unwrap();
        assert_eq!(
            (
                counts.queued,
                counts.held,
                counts.leased,
                counts.unallocated
            ),
            (37, 37, 0, 0),
            "{counts:?}"
        );
        // Sold out on both, whoever asks.
        for flash in [&a.flash, &b.flash] {
            let late = flash.attempt(sale_id.clone(), user(1_000), 1).await;
            assert!(matches!(late, Err(AttemptRefusal::SoldOut)), "{late:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_attempt_per_user_whichever_instance_it_reaches() {
        let db = db().await;
        let sale_id = sale(&db, 10, -1_000).await;
        let a = instance(&db, "A", LONG, LONG).await;
        let b = instance(&db, "B", LONG, LONG).await;
        a.flash.attempt(sale_id.clone(), user(0), 1).await.unwrap();
        // A knows the user; B learns it from the database's unique attempt,
        // and the unit it took for the user goes back into its budget.
        for flash in [&a.flash, &b.flash] {
            let again = flash.attempt(sale_id.clone(), user(0), 1).await;
            assert!(
                matches!(again, Err(AttemptRefusal::AlreadyAttempted)),
                "{again:?}"
            );
        }
        let rest = join_all((1..10).map(|n| b.flash.attempt(sale_id.clone(), user(n), 1))).await;
        let admitted = rest.iter().filter(|r| r.is_ok()).count();
        // B leased 5 and lost none to the refusal; A holds 4 of its 5.
        assert_eq!(admitted, 5, "{rest:?}");
        let counts = db.first.sale_counts(&sale_id).await.unwrap();
        assert_eq!((counts.held, counts.leased), (6, 4), "{counts:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn refused_attempts_write_nothing() {
        let db = db().await;
        let sale_id = sale(&db, 3, -1_000).await;
        let later = sale(&db, 3, 3_600_000).await;
        let a = instance(&db, "A", LONG, LONG).await;
        for n in 0..3 {
            a.flash.attempt(sale_id.clone(), user(n), 1).await.unwrap();
        }
        let sold_out = a.flash.attempt(sale_id.clone(), user(3), 1).await;
        assert!(
            matches!(sold_out, Err(AttemptRefusal::SoldOut)),
            "{sold_out:?}"
        );
        let writes = a.writer.group_commit().operations;
        let refusals =
            join_all((4..104).map(|n| a.flash.attempt(sale_id.clone(), user(n), 1))).await;
        assert!(
            refusals
                .iter()
                .all(|r| matches!(r, Err(AttemptRefusal::SoldOut)))
        );
        let again = a.flash.attempt(sale_id.clone(), user(0), 1).await;
        assert!(
            matches!(again, Err(AttemptRefusal::AlreadyAttempted)),
            "{again:?}"
        );
        let early = a.flash.attempt(later.clone(), user(0), 1).await;
        assert!(
            matches!(early, Err(AttemptRefusal::SaleNotActive { .. })),
            "{early:?}"
        );
        let greedy = a.flash.attempt(sale_id.clone(), user(500), 2).await;
        assert!(
            matches!(greedy, Err(AttemptRefusal::OverUserLimit { limit: 1 })),
            "{greedy:?}"
        );
        assert_eq!(
            a.writer.group_commit().operations,
            writes,
            "a refusal wrote"
        );
        let messages = db
            .first
            .claim_outbox("t", 1_000, 60_000, now_millis())
            .await
            .unwrap();
        assert_eq!(messages.len(), 3, "one message per admitted attempt");
        // The operator's view counts each refusal by its code, per sale.
        let refused = |progress: Option<SaleProgress>| progress.unwrap().refused_here;
        let counted = |pairs: &[(&str, i64)]| {
            pairs
                .iter()
                .map(|(code, n)| ((*code).to_owned(), *n))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            refused(a.flash.sale(sale_id.clone()).await.unwrap()),
            counted(&[
                ("SOLD_OUT", 101),
                ("ALREADY_ATTEMPTED", 1),
                ("SALE_LIMIT_EXCEEDED", 1)
            ])
        );
        let listed = a.flash.sales().await.unwrap();
        let early = listed.into_iter().find(|p| p.sale.sale_id == later);
        assert_eq!(refused(early), counted(&[("SALE_NOT_ACTIVE", 1)]));
        // Another instance refused nothing of it.
        let b = instance(&db, "B", LONG, LONG).await;
        assert!(refused(b.flash.sale(sale_id).await.unwrap()).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_crashed_instances_lease_comes_back_and_every_unit_sells() {
        let db = db().await;
        let sale_id = sale(&db, 10, -1_000).await;
        let ttl = Duration::from_millis(300);
        let crashed = instance(&db, "A", ttl, LONG).await;
        for n in 0..3 {
            crashed
                .flash
                .attempt(sale_id.clone(), user(n), 1)
                .await
                .unwrap();
        }
        // A holds more units in its lease when it dies (2, and the 5 it
        // leased ahead; nothing cleans up).
        drop(crashed);
        let b = instance(&db, "B", ttl, Duration::ZERO).await;
        let mut admitted = 3;
        let mut n = 100;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while admitted < 10 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{admitted} of 10 units sold"
            );
            match b.flash.attempt(sale_id.clone(), user(n), 1).await {
                Ok(_) => admitted += 1,
                Err(AttemptRefusal::SoldOut) => tokio::time::sleep(ttl / 4).await,
                Err(e) => panic!("{e:?}"),
            }
            n += 1;
        }
        let counts = db.first.sale_counts(&sale_id).await.unwrap();
        assert_eq!(
            (counts.held, counts.leased, counts.unallocated),
            (10, 0, 0),
            "{counts:?}"
        );
        let over = b.flash.attempt(sale_id.clone(), user(n), 1).await;
        assert!(matches!(over, Err(AttemptRefusal::SoldOut)), "{over:?}");
    }

    /// Waits until the sale has `unallocated` units left outside leases.
    async fn until_unallocated(db: &Db, sale_id: &SaleId, unallocated: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let counts = db.first.sale_counts(sale_id).await.unwrap();
            if counts.unallocated == unallocated {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {unallocated} unallocated: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_next_chunk_is_leased_ahead_and_grows_while_the_crowd_is_fast() {
        let db = db().await;
        let sale_id = sale(&db, 100, -1_000).await;
        let a = instance(&db, "A", LONG, LONG).await;
        let mut n = 0;
        let mut admit = |count: usize| {
            let range = n..n + count;
            n += count;
            let flash = a.flash.clone();
            let sale_id = sale_id.clone();
            async move {
                for n in range {
                    flash.attempt(sale_id.clone(), user(n), 1).await.unwrap();
                }
            }
        };
        // Chunk 5: the first lease, on demand.
        admit(1).await;
        until_unallocated(&db, &sale_id, 95).await;
        // Down to 2 left (half a chunk): the next 5 are leased in the
        // background, before any attempt finds the budget empty.
        admit(2).await;
        until_unallocated(&db, &sale_id, 90).await;
        // Two leases within a second: the next asks for 10.
        admit(5).await;
        until_unallocated(&db, &sale_id, 80).await;
        let counts = db.first.sale_counts(&sale_id).await.unwrap();
        assert_eq!((counts.held, counts.leased), (8, 12), "{counts:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_sale_created_here_leases_its_first_units_before_it_opens() {
        let db = db().await;
        let a = instance(&db, "A", LONG, LONG).await;
        let new_sale = |opens_in_ms: i64| {
            let now = now_millis();
            let (start, end) = (now + opens_in_ms, now + opens_in_ms + 600_000);
            NewSale::new(Sku::parse(SKU).unwrap(), 20, start, end, 1).unwrap()
        };
        let soon = a.flash.create_sale(new_sale(500)).await.unwrap();
        let later = a.flash.create_sale(new_sale(600_000)).await.unwrap();
        // Chunk 5, leased while the sale is not open yet.
        until_unallocated(&db, &soon.sale_id, 15).await;
        let counts = db.first.sale_counts(&soon.sale_id).await.unwrap();
        assert_eq!((counts.leased, counts.held), (5, 0), "{counts:?}");
        let counts = db.first.sale_counts(&later.sale_id).await.unwrap();
        assert_eq!(counts.leased, 0, "ten minutes ahead: {counts:?}");
        // Once open, its first attempts take from that lease.
        tokio::time::sleep(Duration::from_millis(600)).await;
        a.flash
            .attempt(soon.sale_id.clone(), user(0), 1)
            .await
            .unwrap();
        let counts = db.first.sale_counts(&soon.sale_id).await.unwrap();
        assert_eq!((counts.leased, counts.held), (4, 1), "{counts:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_sold_out_recheck_holds_up_only_the_attempt_that_asks() {
        let db = db().await;
        let sale_id = sale(&db, 1, -1_000).await;
        let recheck = Duration::from_millis(50);
        let a = instance(&db, "A", LONG, recheck).await;
        a.flash.attempt(sale_id.clone(), user(0), 1).await.unwrap();
        let sold_out = a.flash.attempt(sale_id.clone(), user(1), 1).await;
        assert!(
            matches!(sold_out, Err(AttemptRefusal::SoldOut)),
            "{sold_out:?}"
        );
        let budget = a.flash.budget(&sale_id).await.unwrap();
        let refused_at_once = |n: usize| {
            let flash = a.flash.clone();
            let sale_id = sale_id.clone();
            async move {
                let answer = tokio::time::timeout(
                    Duration::from_secs(1),
                    flash.attempt(sale_id, user(n), 1),
                )
                .await;
                assert!(
                    matches!(answer, Ok(Err(AttemptRefusal::SoldOut))),
                    "attempt {n}: {answer:?}"
                );
            }
        };

        let ask = |n: usize| {
            let (flash, sale_id) = (a.flash.clone(), sale_id.clone());
            tokio::spawn(async move { flash.attempt(sale_id, user(n), 1).await })
        };

        // The answer is due again; the database is slow to answer (its
        // lease held here): one attempt waits for it, the next is refused.
        tokio::time::sleep(recheck * 2).await;
        let slow_database = budget.leasing.lock().await;
        let asking = ask(2);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!asking.is_finished(), "the recheck waits for the database");
        refused_at_once(3).await;
        drop(slow_database);
        let asked = asking.await.unwrap();
        assert!(matches!(asked, Err(AttemptRefusal::SoldOut)), "{asked:?}");

        // An attempt dropped while it asks (its client went away) does not
        // leave the others refused without a recheck for good.
        tokio::time::sleep(recheck * 2).await;
        let slow_database = budget.leasing.lock().await;
        let asking = ask(4);
        tokio::time::sleep(Duration::from_millis(20)).await;
        asking.abort();
        let _ = asking.await;
        drop(slow_database);
        assert!(!super::lock(&budget.state).rechecking);
    }
}
