//! The statements both drivers run, each written once.
//!
//! The SQLite lane (rusqlite) and the general path (sqlx, on SQLite and
//! PostgreSQL) apply the same rules; a rule that lives in a statement lives
//! here, and both drivers prepare this text. Parameters are `$1, $2, …`,
//! which sqlx binds by number on both backends. SQLite treats `$1` as a
//! *name* and numbers names in order of first appearance, which rusqlite's
//! positional binding follows: so in every statement here `$n` first appears
//! after `$n-1` (a test checks each one).
//!
//! Base module: it imports nothing from the crate.

/// Which SQL server the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// MySQL 8 or MariaDB 10.11+ (`mysql://`; InnoDB).
    Mysql,
}

/// Whether the store writes the change feed (`feed` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// One feed row per order change.
    On,
    /// No feed rows (the default): a shop that does not need the feed pays
    /// nothing for it.
    Off,
}

/// SQLite's settings on every connection, the pools' and the lanes' alike.
/// WAL lets readers run beside the one writer; FULL makes every commit
/// durable (fsync) before a payment is acknowledged. wal_autocheckpoint = 0:
/// a checkpoint copies the WAL into the database and fsyncs it, ~100 ms that
/// would land inside some unlucky commit; `Store::checkpoint` runs it off
/// the commit path instead. temp_store = MEMORY keeps each transaction's
/// statement journal (what a savepoint rolls back to: every payment of a
/// group-commit batch runs in one) in memory; by default it spills to a temp
/// file past 64 KiB, and `strace` counted ~11 `pwrite`s per payment into it
/// — most of the order lane's CPU time, spent in the kernel.
pub(crate) const SQLITE_SETTINGS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
     PRAGMA wal_autocheckpoint = 0; PRAGMA temp_store = MEMORY;";

/// MySQL's and MariaDB's settings on every connection. READ COMMITTED, as
/// PostgreSQL runs: each statement reads what is committed when it starts
/// (InnoDB's default, REPEATABLE READ, would let a read after a guarded
/// update that matched nothing see an older snapshot than the update saw,
/// and takes gap locks that make concurrent inserts wait on each other).
/// Strict mode for every table: a value that does not fit is an error,
/// never cut or replaced (`PIPES_AS_CONCAT` is sqlx's own).
pub(crate) const MYSQL_SETTINGS: &[&str] = &[
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    // Values and literals in the tables' collation: byte-wise, as the keys.
    "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,\
     ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,PIPES_AS_CONCAT'",
];

macro_rules! pay_order {
    () => {
        "UPDATE orders SET status = $1, payment_id = $2, paid_at = $3, updated_at = $3, \
         order_seq = order_seq + 1 WHERE order_id = $4 AND status = $5 AND amount = $6"
    };
}

/// The payment: UNPAID → PAID only if the amount is the order's.
/// `$1` PAID, `$2` payment id, `$3` now, `$4` order id, `$5` UNPAID, `$6` amount.
/// Returns what the payment's feed event needs besides the lines.
pub(crate) const PAY_ORDER: &str =
    concat!(pay_order!(), " RETURNING user_id, order_seq, created_at");

/// [`PAY_ORDER`] without `RETURNING`, for MySQL (`mysql::pay_order`).
pub(crate) const PAY_ORDER_UPDATE: &str = pay_order!();

/// A payment applied; a payment id already recorded inserts nothing.
/// `$1` payment id, `$2` order id, `$3` amount, `$4` now.
pub(crate) const RECORD_APPLIED_PAYMENT: &str = "INSERT INTO payments (payment_id, order_id, amount, outcome, received_at) \
     VALUES ($1, $2, $3, 'APPLIED', $4) ON CONFLICT (payment_id) DO NOTHING";

/// A payment that cannot be applied, owed back. Same parameters as
/// [`RECORD_APPLIED_PAYMENT`].
pub(crate) const RECORD_OWED_PAYMENT: &str = "INSERT INTO payments (payment_id, order_id, amount, outcome, received_at) \
     VALUES ($1, $2, $3, 'REFUND_REQUIRED', $4) ON CONFLICT (payment_id) DO NOTHING";

/// A paid order's lines, for its `OrderPaid` event. `$1` order id.
pub(crate) const PAID_LINES: &str =
    "SELECT sku, quantity, unit_price FROM order_lines WHERE order_id = $1 ORDER BY sku";

/// A stored line (`sku`, `quantity`, `unit_price` of `order_lines`) as an
/// event's line. Every write path reads lines back through this, so a row the
/// domain would refuse is reported the same way everywhere: the `Err` says
/// which value is wrong, for the caller's "corrupt" error.
pub(crate) fn paid_line(
    sku: &str,
    quantity: i64,
    unit_price: i64,
) -> Result<ordermq_domain::event::PaidLine, String> {
    Ok(ordermq_domain::event::PaidLine {
        sku: ordermq_domain::Sku::parse(sku).map_err(|e| format!("sku {sku:?}: {e}"))?,
        quantity: u32::try_from(quantity).map_err(|e| format!("quantity {quantity}: {e}"))?,
        unit_price: ordermq_domain::Amount::parse(unit_price)
            .map_err(|e| format!("unit price {unit_price}: {e}"))?,
    })
}

/// One status change. `$1` order id, `$2` from (NULL at creation), `$3` to, `$4` at.
pub(crate) const INSERT_HISTORY: &str =
    "INSERT INTO order_history (order_id, from_status, to_status, at) VALUES ($1, $2, $3, $4)";

/// Who asked for a refund or a retry (`history::record_action`).
pub(crate) const INSERT_ACTION: &str = "INSERT INTO order_actions (order_id, action, refund_id, actor, at) \
     VALUES ($1, $2, $3, $4, $5)";

/// Columns of an outbox row up to `VALUES`, shared by the one-row and the
/// multi-row inserts.
pub(crate) const OUTBOX_COLUMNS: &str = "INSERT INTO outbox (topic, tag, msg_key, event_id, body, deliver_at, created_at, attempts, next_attempt_at) VALUES ";

/// One outbox row. `$1` topic, `$2` tag, `$3` key, `$4` event id, `$5` body,
/// `$6` deliver at (NULL: now), `$7` now.
pub(crate) const INSERT_OUTBOX: &str = "INSERT INTO outbox (topic, tag, msg_key, event_id, body, deliver_at, created_at, attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $7)";

/// What marking an outbox row sent sets (`$1` now); the caller adds `WHERE`.
pub(crate) const MARK_SENT: &str =
    "UPDATE outbox SET sent_at = $1, lease_owner = NULL, last_error = NULL ";

/// One row marked sent. `$1` now, `$2` id.
pub(crate) const MARK_ONE_SENT: &str =
    "UPDATE outbox SET sent_at = $1, lease_owner = NULL, last_error = NULL WHERE id = $2";

/// The change feed's claim rule, the one thing that keeps each order's feed
/// events in commit order across relays and instances: a row of
/// `TopicOrderChangeFeed` may be claimed only when no earlier row of the
/// same order (key) on that topic is unsent — sent meaning the broker
/// stored it. A claimed row still unsent (leased, in flight, refused,
/// parked) holds back the order's later ones, and only that order's.
///
/// Why row id order is commit order for one order: every feed row is
/// inserted after the guarded `UPDATE orders … WHERE order_id = …` of its
/// change, in the same transaction, and that update holds the order's row
/// lock to the commit (PostgreSQL, InnoDB; SQLite has one writer). So a
/// later change of the order draws its row id (sequence, auto-increment)
/// only after the earlier one committed, and a claim that sees the later
/// row sees the earlier one too. Written once, used by the claims of all
/// three databases (`CLAIM_OUTBOX*`, MySQL's `outbox::claim_outbox_mysql`);
/// `c` is the claimed row's alias. Served by the `outbox_feed_order` index.
macro_rules! feed_claim_rule {
    () => {
        " AND (c.topic <> 'TopicOrderChangeFeed' OR NOT EXISTS (SELECT 1 FROM outbox e \
         WHERE e.msg_key = c.msg_key AND e.sent_at IS NULL AND e.id < c.id \
         AND e.topic = 'TopicOrderChangeFeed'))"
    };
}

/// [`feed_claim_rule!`] as text, for statements built at run time.
pub(crate) const FEED_CLAIM_RULE: &str = feed_claim_rule!();

/// The claim's "due" test on a row `c`, `$now` its parameter: its next
/// attempt has come, or it is further ahead than anything this code sets
/// (the relay's lease is 30 s, its longest backoff 20 s; 60 s): such a lease was
/// stamped by a clock that was ahead — an instance killed while its clock
/// was stepped forward — and would otherwise keep the row unsent for as
/// long as the step (docs/reliability.md, "Clock steps"). Written once,
/// used by the claims of all three databases.
macro_rules! due_rule {
    ($now:literal) => {
        concat!(
            "(c.next_attempt_at <= ",
            $now,
            " OR c.next_attempt_at > ",
            $now,
            " + 60000)"
        )
    };
}

/// [`due_rule!`] for a claim whose `$1` is now (MySQL's).
pub(crate) const DUE_RULE_1: &str = due_rule!("$1");

macro_rules! claim_outbox {
    ($table:literal, $rule:expr, $lock:literal) => {
        concat!(
            "UPDATE ",
            $table,
            " SET lease_owner = $1, next_attempt_at = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT c.id FROM ",
            $table,
            " c WHERE c.sent_at IS NULL AND c.parked_at IS NULL \
             AND ",
            due_rule!("$3"),
            $rule,
            " ORDER BY c.next_attempt_at, c.id LIMIT $4",
            $lock,
            ") RETURNING id, topic, tag, msg_key, event_id, body, deliver_at, attempts"
        )
    };
}

/// The relay's claim: up to `$4` due unsent rows, not parked, leased to `$1`
/// until `$2` (`$3` now), oldest first; feed rows only in order
/// ([`feed_claim_rule!`]).
pub(crate) const CLAIM_OUTBOX: &str = claim_outbox!("outbox", feed_claim_rule!(), "");

/// [`CLAIM_OUTBOX`] on PostgreSQL: rows another instance is claiming are skipped.
pub(crate) const CLAIM_OUTBOX_SKIP_LOCKED: &str =
    claim_outbox!("outbox", feed_claim_rule!(), " FOR UPDATE OF c SKIP LOCKED");

/// [`CLAIM_OUTBOX`] for a system's receipts (`receipt_outbox`).
pub(crate) const CLAIM_RECEIPTS: &str = claim_outbox!("receipt_outbox", "", "");

/// [`CLAIM_OUTBOX_SKIP_LOCKED`] for a system's receipts.
pub(crate) const CLAIM_RECEIPTS_SKIP_LOCKED: &str =
    claim_outbox!("receipt_outbox", "", " FOR UPDATE SKIP LOCKED");

/// An order's state for its feed event, after the change.
/// `$1` order id.
pub(crate) const FEED_ORDER_STATE: &str = "SELECT user_id, status, amount, payment_id, created_at, updated_at, order_seq \
     FROM orders WHERE order_id = $1";

/// An order's lines for its feed event. `$1` order id.
pub(crate) const FEED_ORDER_LINES: &str =
    "SELECT sku, quantity, unit_price, refunded FROM order_lines WHERE order_id = $1 ORDER BY sku";

/// A change that moves no status (a partial refund) still counts in the
/// order's sequence, and in `updated_at` (`feed snapshot --since` selects
/// by it). `$1` order id, `$2` now.
pub(crate) const BUMP_ORDER_SEQ: &str =
    "UPDATE orders SET order_seq = order_seq + 1, updated_at = $1 WHERE order_id = $2";

/// Whether the user already attempted the sale. `$1` sale, `$2` user.
pub(crate) const ATTEMPT_OF_USER: &str =
    "SELECT 1 AS one FROM sale_attempts WHERE sale_id = $1 AND user_id = $2";

/// Takes an attempt's units from this instance's lease of the sale, and
/// renews the lease. `$1` units, `$2` the lease's new expiry, `$3` sale, `$4`
/// owner; no row changed: the lease no longer holds them.
pub(crate) const TAKE_LEASED_UNITS: &str = "UPDATE sale_leases \
     SET units_left = units_left - $1, expires_at = $2 \
     WHERE sale_id = $3 AND owner = $4 AND units_left >= $1";

/// A queued attempt, unless the user has one already. `$1` attempt id, `$2`
/// sale, `$3` user, `$4` quantity, `$5` the order id drawn for it, `$6`
/// queued at.
pub(crate) const INSERT_ATTEMPT: &str = "INSERT INTO sale_attempts \
     (attempt_id, sale_id, user_id, quantity, order_id, state, queued_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, 'QUEUED', $6, $6) ON CONFLICT (sale_id, user_id) DO NOTHING";

/// What marking a receipt row sent sets (`$1` now); the caller adds
/// `WHERE` ([`MARK_SENT`] for `receipt_outbox`).
pub(crate) const MARK_RECEIPTS_SENT: &str =
    "UPDATE receipt_outbox SET sent_at = $1, lease_owner = NULL, last_error = NULL ";

/// One receipt row: a group's receipt of one batch, always a new row (its
/// event id is drawn at random). `$1` topic, `$2` tag, `$3` key (the
/// group), `$4` event id, `$5` body, `$6` now.
pub(crate) const INSERT_RECEIPT: &str = "INSERT INTO receipt_outbox \
     (topic, tag, msg_key, event_id, body, deliver_at, created_at, attempts, next_attempt_at) \
     VALUES ($1, $2, $3, $4, $5, NULL, $6, 0, $6)";

/// The relay's round inside a batch: mark `acked` sent at `acked_at`, then
/// claim up to `limit` due rows for `owner`, leased for `lease_ms`. The
/// SQLite lane (`lane::relay`) and PostgreSQL's path (`pg::relay`) each run
/// it.
#[derive(Debug, Clone)]
pub(crate) struct RelayRound {
    pub owner: String,
    pub acked: Vec<i64>,
    pub acked_at: i64,
    pub limit: usize,
    pub lease_ms: i64,
}

/// The messages a claim returned ([`CLAIM_OUTBOX`]'s columns), oldest
/// first: read the same way from a pooled `Any` connection (`outbox`) and
/// on PostgreSQL's own path (`pg::relay`).
pub(crate) fn claimed<R>(rows: &[R]) -> Result<Vec<ordermq_domain::OutboxMessage>, sqlx::Error>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut claimed = rows
        .iter()
        .map(|r| {
            Ok(ordermq_domain::OutboxMessage {
                id: r.try_get("id")?,
                topic: r.try_get("topic")?,
                tag: r.try_get("tag")?,
                key: r.try_get("msg_key")?,
                event_id: r.try_get("event_id")?,
                body: r.try_get("body")?,
                deliver_at: r.try_get("deliver_at")?,
                attempts: r.try_get("attempts")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    claimed.sort_by_key(|m| m.id);
    Ok(claimed)
}

macro_rules! inbox_insert {
    () => {
        "INSERT INTO inbox (consumer_group, event_id, order_id, msg_id, applied_at) VALUES "
    };
}
macro_rules! inbox_on_conflict {
    () => {
        " ON CONFLICT (consumer_group, event_id) DO NOTHING"
    };
}

/// The inbox insert up to `VALUES` (multi-row form: the caller adds rows and
/// [`INBOX_ON_CONFLICT`]).
pub(crate) const INBOX_INSERT: &str = inbox_insert!();
/// An event seen before inserts nothing.
pub(crate) const INBOX_ON_CONFLICT: &str = inbox_on_conflict!();
/// One inbox row. `$1` group, `$2` event id, `$3` order id, `$4` message id, `$5` now.
pub(crate) const INSERT_INBOX: &str = concat!(
    inbox_insert!(),
    "($1, $2, $3, $4, $5)",
    inbox_on_conflict!()
);

/// An effect that is one new row: its table and columns, and the values
/// every row ends with after its own (`$t` is the time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRow {
    /// `table (columns)`; the row's own values first, then the tail's.
    pub target: &'static str,
    /// The row's own values, bound in `target`'s order.
    pub width: usize,
    /// What follows the own values, with `$t` for the time.
    pub tail: &'static str,
    /// The one-row insert, own values as `$1..`, the time as `$width+1`.
    pub insert_one: &'static str,
}

pub(crate) const CREDIT_POINTS: NewRow = NewRow {
    target: "credit_points (user_id, order_id, points, created_at)",
    width: 3,
    tail: "$t",
    insert_one: "INSERT INTO credit_points (user_id, order_id, points, created_at) VALUES ($1, $2, $3, $4)",
};

pub(crate) const MARKETING_COUPONS: NewRow = NewRow {
    target: "marketing_coupons (code, user_id, order_id, value, created_at)",
    width: 4,
    tail: "$t",
    insert_one: "INSERT INTO marketing_coupons (code, user_id, order_id, value, created_at) VALUES ($1, $2, $3, $4, $5)",
};

pub(crate) const PUSH_SMS: NewRow = NewRow {
    target: "push_sms (user_id, order_id, text, provider_ref, created_at)",
    width: 4,
    tail: "$t",
    insert_one: "INSERT INTO push_sms (user_id, order_id, text, provider_ref, created_at) VALUES ($1, $2, $3, $4, $5)",
};

/// Shipments start CREATED.
pub(crate) const WAREHOUSE_SHIPMENTS: NewRow = NewRow {
    target: "warehouse_shipments (user_id, order_id, tracking_no, created_at, updated_at, status)",
    width: 3,
    tail: "$t, $t, 'CREATED'",
    insert_one: "INSERT INTO warehouse_shipments (user_id, order_id, tracking_no, created_at, updated_at, status) VALUES ($1, $2, $3, $4, $4, 'CREATED')",
};

/// Placeholders `$1, $2, …, $n` starting after `offset` parameters, for `IN (…)` lists.
pub(crate) fn placeholders(offset: usize, n: usize) -> String {
    (1..=n)
        .map(|i| format!("${}", offset + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Locks the products a PostgreSQL or MySQL batch will touch, in one order (by SKU)
/// at the start of its transaction: the products of the orders `$1..$k`
/// (closes) and the SKUs after them (creates), `orders` and `skus`
/// placeholders long. Every writer — and every instance — takes the shared
/// rows in the same order, so two batches never hold one product each while
/// waiting for the other's (a deadlock PostgreSQL would break after
/// `deadlock_timeout` by failing one of them, InnoDB at once). MySQL locks as
/// it reads, before sorting: there the SKUs are read first and locked with
/// `orders` 0 (`locks`). Payments lock no product (`pay`).
pub(crate) fn lock_products(orders: usize, skus: usize) -> String {
    let mut wanted = Vec::new();
    if orders > 0 {
        wanted.push(format!(
            "sku IN (SELECT sku FROM order_lines WHERE order_id IN ({}))",
            placeholders(0, orders)
        ));
    }
    if skus > 0 {
        wanted.push(format!("sku IN ({})", placeholders(orders, skus)));
    }
    format!(
        "SELECT sku FROM products WHERE {} ORDER BY sku FOR UPDATE",
        wanted.join(" OR ")
    )
}

/// Locks existing orders `$1..$n` in order id order, after the products
/// ([`lock_products`]): payments and closes of one order may reach batches
/// of different instances, and two batches taking the same orders in
/// different orders could each hold one the other waits for. PostgreSQL
/// locks the sorted rows; InnoDB locks as it reads, and reads an `IN` list
/// on the primary key in key order.
pub(crate) fn lock_orders(orders: usize) -> String {
    format!(
        "SELECT order_id FROM orders WHERE order_id IN ({}) ORDER BY order_id FOR UPDATE",
        placeholders(0, orders)
    )
}

/// `(SELECT $a AS c1, $b AS c2 UNION ALL SELECT $c, $d ...)`: a parameter
/// table both SQLite and PostgreSQL accept in `FROM`, starting after `offset`
/// parameters, `rows` rows of `columns`.
pub(crate) fn parameter_table(offset: usize, rows: usize, columns: &[&str]) -> String {
    let mut p = offset;
    let selects = (0..rows)
        .map(|row| {
            let cells = columns
                .iter()
                .map(|name| {
                    p += 1;
                    if row == 0 {
                        format!("${p} AS {name}")
                    } else {
                        format!("${p}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("SELECT {cells}")
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    format!("({selects})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_from_offset() {
        assert_eq!(placeholders(1, 3), "$2, $3, $4");
    }

    #[test]
    fn products_are_locked_in_one_order() {
        assert_eq!(
            lock_products(2, 1),
            "SELECT sku FROM products WHERE sku IN (SELECT sku FROM order_lines \
             WHERE order_id IN ($1, $2)) OR sku IN ($3) ORDER BY sku FOR UPDATE"
        );
        assert_eq!(
            lock_products(0, 2),
            "SELECT sku FROM products WHERE sku IN ($1, $2) ORDER BY sku FOR UPDATE"
        );
        assert_eq!(
            lock_orders(2),
            "SELECT order_id FROM orders WHERE order_id IN ($1, $2) ORDER BY order_id FOR UPDATE"
        );
    }

    #[test]
    fn new_rows_single_form_matches_multi_row_form() {
        for row in [
            CREDIT_POINTS,
            MARKETING_COUPONS,
            PUSH_SMS,
            WAREHOUSE_SHIPMENTS,
        ] {
            let own = placeholders(0, row.width);
            let time = format!("${}", row.width + 1);
            let built = format!(
                "INSERT INTO {} VALUES ({own}, {})",
                row.target,
                row.tail.replace("$t", &time)
            );
            assert_eq!(built, row.insert_one);
        }
    }

    /// rusqlite binds by position and SQLite numbers `$n` names in order of
    /// first appearance: each shared statement must name `$n` as the n-th.
    #[test]
    fn shared_statements_number_their_parameters_in_order() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut migrations = crate::schema::orders(Backend::Sqlite);
        for system in ordermq_domain::System::ALL {
            migrations.extend(crate::schema::system(Backend::Sqlite, system));
        }
        for migration in migrations {
            for statement in &migration.statements {
                conn.execute_batch(statement).unwrap();
            }
        }
        let mut statements = vec![
            PAY_ORDER,
            RECORD_APPLIED_PAYMENT,
            RECORD_OWED_PAYMENT,
            PAID_LINES,
            INSERT_HISTORY,
            INSERT_OUTBOX,
            MARK_ONE_SENT,
            CLAIM_OUTBOX,
            FEED_ORDER_STATE,
            FEED_ORDER_LINES,
            BUMP_ORDER_SEQ,
            INSERT_INBOX,
            CLAIM_RECEIPTS,
            INSERT_RECEIPT,
            ATTEMPT_OF_USER,
            TAKE_LEASED_UNITS,
            INSERT_ATTEMPT,
        ];
        statements.extend(
            [
                CREDIT_POINTS,
                MARKETING_COUPONS,
                PUSH_SMS,
                WAREHOUSE_SHIPMENTS,
            ]
            .map(|r| r.insert_one),
        );
        // The marks that take their `WHERE` from the caller, as it adds one.
        let marks = [MARK_SENT, MARK_RECEIPTS_SENT].map(|mark| format!("{mark}WHERE id IN ($2)"));
        statements.extend(marks.iter().map(String::as_str));
        for sql in statements {
            let statement = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            for i in 1..=statement.parameter_count() {
                assert_eq!(
                    statement.parameter_name(i),
                    Some(format!("${i}").as_str()),
                    "{sql}"
                );
            }
        }
    }
}
