//! Flash sales in the order database: creating a sale (its units leave the
//! product's stock), leasing chunks of units to an instance, the admitted
//! attempt with its outbox row, and the attempt's end (order created or
//! rejected).
//!
//! Why leases: the order service admits or refuses attempts in memory, so
//! the losers of a sale never reach the database; several instances share
//! one sale without overselling because each admits only from units it has
//! leased here. A lease is written down (`sale_leases`): an admission
//! takes its units from the lease in the same transaction as the attempt
//! and its message, so the database always knows where every unit is
//! (`allocated` = units in leases + units held by attempts, never more
//! than `units`). A restarted instance rebuilds its budget from its lease;
//! a dead instance's lease expires and the next lease of anyone returns it
//! to the sale.
//!
//! Operation module: it imports only the base, leaves and the handle.

use ordermq_domain::event::FlashAttemptQueued;
use ordermq_domain::flash::lease_size;
use ordermq_domain::ports::StorageError;
use ordermq_domain::{
    Attempt, AttemptId, AttemptState, CreateSaleError, NewSale, OrderEvent, OrderId, RejectReason,
    Sale, SaleId, SaleProgress, SaleStatus, UserId,
};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::dialect::{self, is_mysql};
use crate::fail::{corrupt, get, storage};
use crate::outbox;
use crate::sale_units::{expired_leases_in, give_back_in, take_attempt_units_in};
use crate::sql::{self, Backend};
use crate::store::{Db, Store};

/// Where a sale's units are, from the database (tests, operators): `units` = `unallocated` + `leased` + held by attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SaleCounts {
    /// Units the sale offers.
    pub units: i64,
    /// Units neither leased nor held by an attempt.
    pub unallocated: i64,
    /// Units in instances' leases, not yet admitted.
    pub leased: i64,
    /// Attempts queued (their order not created yet).
    pub queued: i64,
    /// Attempts whose order was created.
    pub created: i64,
    /// Attempts rejected.
    pub rejected: i64,
    /// Units held by attempts: queued, or created and not returned.
    pub held: i64,
}

/// What a lease did: the units the owner's lease holds now, and how many
/// of them this lease added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leased {
    /// Units in the owner's lease, not yet taken by admissions.
    pub holds: u32,
    /// Units this lease moved from the sale to the owner's lease.
    pub granted: u32,
}

/// What an admission's write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// The attempt and its message are written (committed with the batch).
    Queued,
    /// The instance's lease no longer holds the units (it expired and was
    /// returned, or another process wrote it): nothing written; lease again.
    LeaseLost,
    /// The user already has an attempt at this sale: nothing written.
    AlreadyAttempted,
}

/// An admitted attempt, to be written with its message.
#[derive(Debug, Clone)]
pub struct AttemptWrite {
    /// The attempt and its message's body.
    pub event: FlashAttemptQueued,
    /// The instance whose lease the units come from.
    pub owner: String,
    /// The lease is renewed until this long after the admission.
    pub lease_ttl_ms: i64,
}

const SALE_COLUMNS: &str = "sale_id, sku, units, start_at, end_at, per_user_limit";
const ATTEMPT_COLUMNS: &str =
    "attempt_id, sale_id, user_id, quantity, order_id, state, reason, queued_at";

impl Store {
    /// Creates a sale of `sale.units` units taken out of its product's
    /// stock (units on hand and not reserved), in one transaction.
    ///
    /// # Errors
    /// `UnknownSku`, `OutOfStock` (nothing taken), or a storage failure.
    pub async fn create_sale(
        &self,
        sale: &NewSale,
        sale_id: &SaleId,
        now: i64,
    ) -> Result<Sale, CreateSaleError> {
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        let taken = dialect::query(
            "UPDATE products SET on_hand = on_hand - $1 WHERE sku = $2 AND on_hand - reserved >= $1",
        )
        .bind(i64::from(sale.units))
        .bind(sale.sku.as_str())
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        if taken.rows_affected() != 1 {
            let row = dialect::query(
                "SELECT on_hand - reserved AS available FROM products WHERE sku = $1",
            )
            .bind(sale.sku.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage)?;
            return Err(match row {
                None => CreateSaleError::UnknownSku(sale.sku.to_string()),
                Some(row) => CreateSaleError::OutOfStock {
                    available: get(&row, "available")?,
                    requested: sale.units,
                },
            });
        }
        dialect::query(
            "INSERT INTO sales (sale_id, sku, units, allocated, start_at, end_at, per_user_limit, created_at) \
             VALUES ($1, $2, $3, 0, $4, $5, $6, $7)",
        )
        .bind(sale_id.as_str())
        .bind(sale.sku.as_str())
        .bind(i64::from(sale.units))
        .bind(sale.start)
        .bind(sale.end)
        .bind(i64::from(sale.per_user_limit))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        Ok(Sale {
            sale_id: sale_id.clone(),
            sku: sale.sku.clone(),
            units: sale.units,
            start: sale.start,
            end: sale.end,
            per_user_limit: sale.per_user_limit,
        })
    }

    /// The sale `sale_id`, if there is one.
    ///
    /// # Errors
    /// A storage failure, or a stored row that does not decode.
    pub async fn sale(&self, sale_id: &SaleId) -> Result<Option<Sale>, StorageError> {
        let sql = format!("SELECT {SALE_COLUMNS} FROM sales WHERE sale_id = $1");
        let row = dialect::query(&sql)
            .bind(sale_id.as_str())
            .fetch_optional(&self.orders)
            .await
            .map_err(storage)?;
        row.as_ref().map(sale_of).transpose()
    }

    /// Leases units of `sale_id` to `owner` and answers how many its lease
    /// now holds (what it had, plus a chunk of `chunk` units, at least
    /// `need` if the sale has that many left, at most what is left) and how
    /// many it added: the instance's budget, from the database. Leases of other
    /// owners that expired before `now` are returned to the sale first.
    /// The lease lives `ttl_ms` from now; every admission renews it.
    ///
    /// # Errors
    /// A storage failure (nothing leased).
    pub async fn lease_units(
        &self,
        sale_id: &SaleId,
        owner: &str,
        chunk: u32,
        need: u32,
        ttl_ms: i64,
        now: i64,
    ) -> Result<Leased, StorageError> {
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        // The sale's row first: concurrent leases of one sale take turns
        // here, and each statement after it sees the other's commit.
        let mysql = is_mysql(&tx);
        let lock = if mysql {
            "SELECT units, allocated FROM sales WHERE sale_id = $1 FOR UPDATE"
        } else {
            "UPDATE sales SET allocated = allocated WHERE sale_id = $1 RETURNING units, allocated"
        };
        let row = dialect::query(lock)
            .bind(sale_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage)?;
        let Some(row) = row else {
            return Ok(Leased {
                holds: 0,
                granted: 0,
            });
        };
        let units: i64 = get(&row, "units")?;
        let dead = expired_leases_in(&mut tx, sale_id.as_str(), owner, now)
            .await
            .map_err(storage)?;
        let returned: i64 = dead.iter().sum();
        if returned > 0 {
            give_back_in(&mut tx, sale_id.as_str(), returned)
                .await
                .map_err(storage)?;
            tracing::info!(sale_id = %sale_id, units = returned, leases = dead.len(),
                "expired leases of flash-sale units returned to the sale");
        }
        let allocated: i64 = get(&row, "allocated")?;
        let left = u32::try_from(units - (allocated - returned)).unwrap_or(0);
        let mut size = i64::from(lease_size(left, chunk, need));
        if size > 0 {
            let granted = dialect::query(
                "UPDATE sales SET allocated = allocated + $1 WHERE sale_id = $2 AND allocated + $1 <= units",
            )
            .bind(size)
            .bind(sale_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
            // The guard is the last word: a lease holds only units the sale gave.
            if granted.rows_affected() != 1 {
                size = 0;
            }
        }
        let upsert = "INSERT INTO sale_leases (sale_id, owner, units_left, expires_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (sale_id, owner) DO UPDATE \
             SET units_left = sale_leases.units_left + $3, expires_at = $4";
        let lease = if mysql {
            // No RETURNING: the row is this owner's, read back under the
            // sale's lock.
            dialect::query(upsert)
                .bind(sale_id.as_str())
                .bind(owner)
                .bind(size)
                .bind(now + ttl_ms)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
            dialect::query("SELECT units_left FROM sale_leases WHERE sale_id = $1 AND owner = $2")
                .bind(sale_id.as_str())
                .bind(owner)
                .fetch_one(&mut *tx)
                .await
        } else {
            dialect::query(&format!("{upsert} RETURNING units_left"))
                .bind(sale_id.as_str())
                .bind(owner)
                .bind(size)
                .bind(now + ttl_ms)
                .fetch_one(&mut *tx)
                .await
        }
        .map_err(storage)?;
        let holds: i64 = get(&lease, "units_left")?;
        tx.commit().await.map_err(storage)?;
        Ok(Leased {
            holds: u32::try_from(holds).unwrap_or(0),
            granted: u32::try_from(size).unwrap_or(0),
        })
    }

    /// The attempt `attempt_id`, if there is one.
    ///
    /// # Errors
    /// A storage failure, or a stored row that does not decode.
    pub async fn attempt(&self, attempt_id: &AttemptId) -> Result<Option<Attempt>, StorageError> {
        let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM sale_attempts WHERE attempt_id = $1");
        let row = dialect::query(&sql)
            .bind(attempt_id.as_str())
            .fetch_optional(&self.orders)
            .await
            .map_err(storage)?;
        row.as_ref().map(attempt_of).transpose()
    }

    /// Where the units of `sale_id` are (zeros for no such sale).
    ///
    /// # Errors
    /// A storage failure.
    pub async fn sale_counts(&self, sale_id: &SaleId) -> Result<SaleCounts, StorageError> {
        // SUM is a DECIMAL on MySQL: cast to its 64-bit integer.
        let int = match self.backend() {
            Backend::Mysql => "SIGNED",
            _ => "BIGINT",
        };
        let of_attempts = |expression: &str| {
            format!(
                "(SELECT CAST(COALESCE(SUM({expression}), 0) AS {int}) \
                 FROM sale_attempts a WHERE a.sale_id = s.sale_id)"
            )
        };
        // One statement, so one snapshot: read apart, a unit given back
        // between two reads was counted in neither place (or in both).
        let row = dialect::query(&format!(
            "SELECT s.units, s.allocated, \
               (SELECT CAST(COALESCE(SUM(units_left), 0) AS {int}) \
                FROM sale_leases l WHERE l.sale_id = s.sale_id) AS leased, \
               {} AS queued, {} AS created, {} AS rejected, {} AS held \
             FROM sales s WHERE s.sale_id = $1",
            of_attempts("CASE WHEN state = 'QUEUED' THEN 1 ELSE 0 END"),
            of_attempts("CASE WHEN state = 'CREATED' THEN 1 ELSE 0 END"),
            of_attempts("CASE WHEN state = 'REJECTED' THEN 1 ELSE 0 END"),
            of_attempts("CASE WHEN returned_at IS NULL THEN quantity ELSE 0 END"),
        ))
        .bind(sale_id.as_str())
        .fetch_optional(&self.orders)
        .await
        .map_err(storage)?;
        let Some(row) = row else {
            return Ok(SaleCounts::default());
        };
        let units: i64 = get(&row, "units")?;
        let allocated: i64 = get(&row, "allocated")?;
        Ok(SaleCounts {
            units,
            unallocated: units - allocated,
            leased: get(&row, "leased")?,
            queued: get(&row, "queued")?,
            created: get(&row, "created")?,
            rejected: get(&row, "rejected")?,
            held: get(&row, "held")?,
        })
    }
}

/// How long after its end a sale is still listed by [`Store::sales_progress`].
pub const ENDED_SALES_LISTED_MS: i64 = 3_600_000;
/// The window of [`SaleProgress::created_per_s`].
const RATE_WINDOW_MS: i64 = 10_000;
/// The most sales [`Store::sales_progress`] lists (the latest first).
const SALES_LISTED: i64 = 20;

impl Store {
    /// Sales not ended longer than [`ENDED_SALES_LISTED_MS`] before `now`,
    /// the latest start first (at most 20), each with its progress: one
    /// statement (see `Store::progress`).
    ///
    /// # Errors
    /// A storage failure, or a stored row that does not decode.
    pub async fn sales_progress(&self, now: i64) -> Result<Vec<SaleProgress>, StorageError> {
        let chosen = format!(
            "SELECT {SALE_COLUMNS} FROM sales WHERE end_at >= $1 \
             ORDER BY start_at DESC, sale_id LIMIT {SALES_LISTED}"
        );
        self.progress(&chosen, now - ENDED_SALES_LISTED_MS, now)
            .await
    }

    /// The progress of `sale_id` at `now`, if there is such a sale: one
    /// statement (see `Store::progress`).
    ///
    /// # Errors
    /// A storage failure, or a stored row that does not decode.
    pub async fn sale_progress(
        &self,
        sale_id: &SaleId,
        now: i64,
    ) -> Result<Option<SaleProgress>, StorageError> {
        let chosen = format!("SELECT {SALE_COLUMNS} FROM sales WHERE sale_id = $1");
        let mut found = self
            .progress(&chosen, sale_id.as_str().to_owned(), now)
            .await?;
        Ok(found.pop())
    }

    /// The sales `chosen` selects (a statement over `sales` with one
    /// parameter, `$1` = `first`) and where their units and attempts are,
    /// in one statement grouped by sale, state and reason: one snapshot, so
    /// units left, queued, created and rejected always add up, and one
    /// round trip however many sales are listed (the dashboard asks every
    /// second). An attempt's `updated_at` is when it became CREATED
    /// (nothing moves it after), which gives the rate.
    async fn progress<T>(
        &self,
        chosen: &str,
        first: T,
        now: i64,
    ) -> Result<Vec<SaleProgress>, StorageError>
    where
        T: for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any> + Send + 'static,
    {
        // SUM is a DECIMAL on MySQL: cast to its 64-bit integer.
        let int = match self.backend() {
            Backend::Mysql => "SIGNED",
            _ => "BIGINT",
        };
        let sql = format!(
            "SELECT s.sale_id, s.sku, s.units, s.start_at, s.end_at, s.per_user_limit, \
               a.state, a.reason, COUNT(a.attempt_id) AS n, \
               CAST(COALESCE(SUM(CASE WHEN a.returned_at IS NULL THEN a.quantity ELSE 0 END), 0) AS {int}) AS held, \
               CAST(COALESCE(SUM(CASE WHEN a.updated_at >= $2 THEN 1 ELSE 0 END), 0) AS {int}) AS recent \
             FROM ({chosen}) s LEFT JOIN sale_attempts a ON a.sale_id = s.sale_id \
             GROUP BY s.sale_id, s.sku, s.units, s.start_at, s.end_at, s.per_user_limit, a.state, a.reason"
        );
        let rows = dialect::query(&sql)
            .bind(first)
            .bind(now - RATE_WINDOW_MS)
            .fetch_all(&self.orders)
            .await
            .map_err(storage)?;
        let mut listed: Vec<SaleProgress> = Vec::new();
        for row in &rows {
            let sale = sale_of(row)?;
            let at = match listed.iter().position(|p| p.sale.sale_id == sale.sale_id) {
                Some(at) => at,
                None => {
                    listed.push(SaleProgress {
                        status: SaleStatus::of(&sale, now),
                        units_left: i64::from(sale.units),
                        queued: 0,
                        created: 0,
                        rejected: 0,
                        rejected_by_reason: std::collections::BTreeMap::new(),
                        created_per_s: 0.0,
                        // The service's, from memory.
                        refused_here: std::collections::BTreeMap::new(),
                        sale,
                    });
                    listed.len() - 1
                }
            };
            let progress = &mut listed[at];
            // A sale without attempts: one row, its state NULL.
            let Some(state) = get::<Option<String>>(row, "state")? else {
                continue;
            };
            let n: i64 = get(row, "n")?;
            progress.units_left -= get::<i64>(row, "held")?;
            match state.as_str() {
                "QUEUED" => progress.queued += n,
                "CREATED" => {
                    progress.created += n;
                    progress.created_per_s +=
                        get::<i64>(row, "recent")? as f64 * 1000.0 / RATE_WINDOW_MS as f64;
                }
                "REJECTED" => {
                    progress.rejected += n;
                    let reason: Option<String> = get(row, "reason")?;
                    *progress
                        .rejected_by_reason
                        .entry(reason.unwrap_or_else(|| "UNKNOWN".to_owned()))
                        .or_insert(0) += n;
                }
                _ => return Err(corrupt("attempt state", &state)),
            }
        }
        listed.sort_by(|a, b| {
            (b.sale.start, a.sale.sale_id.as_str()).cmp(&(a.sale.start, b.sale.sale_id.as_str()))
        });
        Ok(listed)
    }
}

/// Writes an admitted attempt and its message, its units taken from the
/// owner's lease, inside the caller's transaction (a batch's savepoint).
pub(crate) async fn admit_in(
    tx: &mut AnyConnection,
    write: &AttemptWrite,
    now: i64,
) -> Result<Admitted, sqlx::Error> {
    let e = &write.event;
    let earlier = dialect::query(sql::ATTEMPT_OF_USER)
        .bind(e.sale_id.as_str())
        .bind(e.user_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if earlier.is_some() {
        return Ok(Admitted::AlreadyAttempted);
    }
    let taken = dialect::query(sql::TAKE_LEASED_UNITS)
        .bind(i64::from(e.quantity))
        .bind(now + write.lease_ttl_ms)
        .bind(e.sale_id.as_str())
        .bind(write.owner.as_str())
        .execute(&mut *tx)
        .await?;
    if taken.rows_affected() != 1 {
        return Ok(Admitted::LeaseLost);
    }
    // Another instance may have written the user's attempt since the check
    // (PostgreSQL: this waits for its commit): then it is theirs.
    let inserted = dialect::query(sql::INSERT_ATTEMPT)
        .bind(e.attempt_id.as_str())
        .bind(e.sale_id.as_str())
        .bind(e.user_id.as_str())
        .bind(i64::from(e.quantity))
        .bind(e.order_id.as_str())
        .bind(e.queued_at)
        .execute(&mut *tx)
        .await?;
    if inserted.rows_affected() != 1 {
        return Ok(Admitted::AlreadyAttempted);
    }
    outbox::enqueue(tx, &OrderEvent::FlashAttemptQueued(e.clone()), None, now).await?;
    Ok(Admitted::Queued)
}

/// The state of `attempt_id` as the transaction sees it; `None`: no such attempt.
pub(crate) async fn state_in(
    tx: &mut AnyConnection,
    attempt_id: &AttemptId,
) -> Result<Option<AttemptState>, StorageError> {
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM sale_attempts WHERE attempt_id = $1");
    let row = dialect::query(&sql)
        .bind(attempt_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(storage)?;
    Ok(row.as_ref().map(attempt_of).transpose()?.map(|a| a.state))
}

/// Puts the units of a queued attempt's coming order into its product's
/// stock, so that the order reserves them as any other (run just before
/// the order is created, in its savepoint).
pub(crate) async fn restock_for_order_in(
    tx: &mut AnyConnection,
    event: &FlashAttemptQueued,
) -> Result<(), sqlx::Error> {
    dialect::query("UPDATE products SET on_hand = on_hand + $1 WHERE sku = $2")
        .bind(i64::from(event.quantity))
        .bind(event.sku.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Marks a queued attempt `CREATED` (its order was just created); false if
/// it was not queued.
pub(crate) async fn mark_created_in(
    tx: &mut AnyConnection,
    attempt_id: &AttemptId,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = dialect::query(
        "UPDATE sale_attempts SET state = 'CREATED', updated_at = $1 \
         WHERE attempt_id = $2 AND state = 'QUEUED'",
    )
    .bind(now)
    .bind(attempt_id.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Rejects a queued attempt for `reason` and gives its units back to the
/// sale; an attempt no longer queued keeps its state (a redelivery).
pub(crate) async fn reject_in(
    tx: &mut AnyConnection,
    attempt_id: &AttemptId,
    reason: RejectReason,
    now: i64,
) -> Result<(), sqlx::Error> {
    let taken = take_attempt_units_in(
        tx,
        "state = 'REJECTED', reason = $1, returned_at = $2, updated_at = $2",
        "attempt_id = $3 AND state = 'QUEUED'",
        (Some(reason.as_str()), now, attempt_id.as_str()),
    )
    .await?;
    if let Some((sale_id, quantity)) = taken {
        give_back_in(tx, &sale_id, quantity).await?;
    }
    Ok(())
}

fn sale_of(row: &AnyRow) -> Result<Sale, StorageError> {
    let id: String = get(row, "sale_id")?;
    let sku: String = get(row, "sku")?;
    let count = |column: &str| -> Result<u32, StorageError> {
        let n: i64 = get(row, column)?;
        u32::try_from(n).map_err(|_| corrupt(column, &n.to_string()))
    };
    Ok(Sale {
        sale_id: SaleId::parse(&id).map_err(|_| corrupt("sale id", &id))?,
        sku: ordermq_domain::Sku::parse(&sku).map_err(|_| corrupt("sku", &sku))?,
        units: count("units")?,
        start: get(row, "start_at")?,
        end: get(row, "end_at")?,
        per_user_limit: count("per_user_limit")?,
    })
}

fn attempt_of(row: &AnyRow) -> Result<Attempt, StorageError> {
    let text = |column: &str| -> Result<String, StorageError> { get(row, column) };
    let state: String = text("state")?;
    let order: String = text("order_id")?;
    let state = match state.as_str() {
        "QUEUED" => AttemptState::Queued,
        "CREATED" => AttemptState::Created {
            order_id: OrderId::parse(&order).map_err(|_| corrupt("order id", &order))?,
        },
        "REJECTED" => {
            let reason: Option<String> = get(row, "reason")?;
            let reason = reason.unwrap_or_default();
            AttemptState::Rejected {
                reason: RejectReason::parse(&reason)
                    .ok_or_else(|| corrupt("reject reason", &reason))?,
            }
        }
        other => return Err(corrupt("attempt state", other)),
    };
    let (attempt, sale, user) = (text("attempt_id")?, text("sale_id")?, text("user_id")?);
    let quantity: i64 = get(row, "quantity")?;
    Ok(Attempt {
        attempt_id: AttemptId::parse(&attempt).map_err(|_| corrupt("attempt id", &attempt))?,
        sale_id: SaleId::parse(&sale).map_err(|_| corrupt("sale id", &sale))?,
        user_id: UserId::parse(&user).map_err(|_| corrupt("user id", &user))?,
        quantity: u32::try_from(quantity)
            .map_err(|_| corrupt("quantity", &quantity.to_string()))?,
        state,
        queued_at: get(row, "queued_at")?,
    })
}
