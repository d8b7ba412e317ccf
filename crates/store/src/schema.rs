//! Tables, as numbered migrations applied at start-up.
//!
//! Each database component (the order database, each system's database)
//! records the last migration it applied in `schema_version`; start-up applies
//! the ones after it, each in one transaction. Version 1 is the first schema,
//! written with `IF NOT EXISTS` so databases created before versioning adopt
//! it unchanged. A migration is never edited once released: changes are new
//! versions. The same statements serve SQLite and PostgreSQL; only the
//! auto-increment column differs. MySQL's are the same versions in its own
//! words (`schema::mysql`: its DDL is not transactional). Every status,
//! amount and count is an integer or a short string, so nothing depends on
//! a backend's own types.
//!
//! Leaf module: it imports only the base (`sql`).

mod mysql;

use ordermq_domain::System;

use crate::sql::Backend;

/// The order database: catalog and stock, orders, payments, history, outbox.
const ORDERS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS products (
        sku VARCHAR(64) PRIMARY KEY,
        name VARCHAR(200) NOT NULL,
        price BIGINT NOT NULL CHECK (price >= 0),
        on_hand BIGINT NOT NULL CHECK (on_hand >= 0),
        reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand)
    )",
    "CREATE TABLE IF NOT EXISTS orders (
        order_id VARCHAR(64) PRIMARY KEY,
        user_id VARCHAR(64) NOT NULL,
        status VARCHAR(16) NOT NULL,
        amount BIGINT NOT NULL CHECK (amount >= 0),
        payment_id VARCHAR(64),
        created_at BIGINT NOT NULL,
        paid_at BIGINT,
        updated_at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id)",
    "CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status)",
    "CREATE TABLE IF NOT EXISTS order_lines (
        order_id VARCHAR(64) NOT NULL,
        sku VARCHAR(64) NOT NULL,
        quantity BIGINT NOT NULL CHECK (quantity > 0),
        unit_price BIGINT NOT NULL CHECK (unit_price >= 0),
        PRIMARY KEY (order_id, sku)
    )",
    "CREATE TABLE IF NOT EXISTS order_history (
        id {AUTO_ID},
        order_id VARCHAR(64) NOT NULL,
        from_status VARCHAR(16),
        to_status VARCHAR(16) NOT NULL,
        at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS order_history_by_order ON order_history (order_id)",
    // Every distinct payment the gateway told us about, including ones that
    // could not be applied (a second payment for a paid order): money taken
    // must never be forgotten.
    "CREATE TABLE IF NOT EXISTS payments (
        payment_id VARCHAR(64) PRIMARY KEY,
        order_id VARCHAR(64) NOT NULL,
        amount BIGINT NOT NULL,
        outcome VARCHAR(32) NOT NULL,
        received_at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS payments_by_order ON payments (order_id)",
    "CREATE TABLE IF NOT EXISTS outbox (
        id {AUTO_ID},
        topic VARCHAR(128) NOT NULL,
        tag VARCHAR(64) NOT NULL,
        msg_key VARCHAR(64) NOT NULL,
        event_id VARCHAR(160) NOT NULL UNIQUE,
        body TEXT NOT NULL,
        deliver_at BIGINT,
        created_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        lease_owner VARCHAR(64),
        last_error TEXT,
        sent_at BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (next_attempt_at, id) WHERE sent_at IS NULL",
];

/// Version 2 of the order database: unpaid orders close themselves
/// (`close_at`, indexed for the backstop sweep), refunds, carrier events.
const ORDERS_V2: &[&str] = &[
    "ALTER TABLE orders ADD COLUMN close_at BIGINT",
    // The backstop sweep reads only overdue UNPAID orders through this index.
    "CREATE INDEX IF NOT EXISTS orders_close_due ON orders (status, close_at)",
    "ALTER TABLE order_lines ADD COLUMN refunded BIGINT NOT NULL DEFAULT 0",
    // One row per refund: asked for by a shopper (idempotency key) or made by
    // ordermq for a payment it could not apply (key `payment:<id>`).
    "CREATE TABLE IF NOT EXISTS refunds (
        refund_id VARCHAR(64) PRIMARY KEY,
        order_id VARCHAR(64) NOT NULL,
        payment_id VARCHAR(64) NOT NULL,
        idempotency_key VARCHAR(80) NOT NULL,
        fingerprint TEXT NOT NULL,
        amount BIGINT NOT NULL CHECK (amount >= 0),
        full_refund BIGINT NOT NULL,
        reverse_effects BIGINT NOT NULL,
        status VARCHAR(16) NOT NULL,
        reason TEXT,
        attempts BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        retries BIGINT NOT NULL DEFAULT 0,
        provider_ref VARCHAR(128),
        requested_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        completed_at BIGINT,
        UNIQUE (order_id, idempotency_key)
    )",
    "CREATE INDEX IF NOT EXISTS refunds_by_status ON refunds (status)",
    // Each carrier status is applied once per order; a repeated callback finds its row.
    "CREATE TABLE IF NOT EXISTS carrier_events (
        order_id VARCHAR(64) NOT NULL,
        status VARCHAR(16) NOT NULL,
        tracking_no VARCHAR(64) NOT NULL,
        received_at BIGINT NOT NULL,
        PRIMARY KEY (order_id, status)
    )",
];

/// Shared by every downstream system: the inbox that makes consumption
/// idempotent, and the record of deliveries that failed.
const SYSTEM_COMMON: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS inbox (
        consumer_group VARCHAR(64) NOT NULL,
        event_id VARCHAR(160) NOT NULL,
        order_id VARCHAR(64) NOT NULL,
        msg_id VARCHAR(128),
        applied_at BIGINT NOT NULL,
        PRIMARY KEY (consumer_group, event_id)
    )",
    "CREATE TABLE IF NOT EXISTS consumer_failures (
        consumer_group VARCHAR(64) NOT NULL,
        event_id VARCHAR(160) NOT NULL,
        order_id VARCHAR(64) NOT NULL,
        attempts BIGINT NOT NULL,
        last_error TEXT NOT NULL,
        dead_lettered BIGINT NOT NULL DEFAULT 0,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (consumer_group, event_id)
    )",
];

/// `orders_by_status` duplicated the leading column of `orders_close_due`
/// (status, close_at), which serves every status lookup and count; each
/// create, payment and close paid for moving an entry in both.
const ORDERS_V3: &[&str] = &["DROP INDEX IF EXISTS orders_by_status"];

/// Version 4 of the order database: messages consumer groups refused because
/// they failed verification (forged, unsigned, under an unknown key). Kept
/// for operators; never applied. One row per (group, message id), so a
/// redelivery changes nothing. Every column comes from the sender and is cut
/// to its width before it is written.
const ORDERS_V4: &[&str] = &["CREATE TABLE IF NOT EXISTS parked_messages (
        id {AUTO_ID},
        consumer_group VARCHAR(64) NOT NULL,
        msg_id VARCHAR(128) NOT NULL,
        topic VARCHAR(128) NOT NULL,
        tag VARCHAR(64) NOT NULL,
        msg_key VARCHAR(128) NOT NULL,
        event_id VARCHAR(160),
        key_id VARCHAR(64),
        reason VARCHAR(32) NOT NULL,
        detail TEXT NOT NULL,
        body TEXT NOT NULL,
        parked_at BIGINT NOT NULL,
        UNIQUE (consumer_group, msg_id)
    )"];
/// Version 5 of the order database: who asked for each refund and each
/// retry (the API token's name), kept with the order's history.
const ORDERS_V5: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS order_actions (
        id {AUTO_ID},
        order_id VARCHAR(64) NOT NULL,
        action VARCHAR(32) NOT NULL,
        refund_id VARCHAR(64) NOT NULL,
        actor VARCHAR(64) NOT NULL,
        at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS order_actions_by_order ON order_actions (order_id)",
];

/// Version 6 of the order database: an outbox row the relay failed to
/// publish `relay_park_after_attempts` times is parked (`parked_at`): no
/// longer claimed, counted in `/api/stats`, listed and put back by `ordermq
/// outbox`. The relay's index leaves parked rows out.
const ORDERS_V6: &[&str] = &[
    "ALTER TABLE outbox ADD COLUMN parked_at BIGINT",
    "DROP INDEX IF EXISTS outbox_unsent",
    "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (next_attempt_at, id) \
     WHERE sent_at IS NULL AND parked_at IS NULL",
    "CREATE INDEX IF NOT EXISTS outbox_parked ON outbox (parked_at) WHERE parked_at IS NOT NULL",
];

/// Version 7 of the order database: flash sales. A sale's units left the
/// product's stock when it was created; `allocated` counts those handed to
/// instances' leases or held by attempts (never more than `units`: the
/// CHECK is the last word on overselling). A lease is one instance's
/// in-memory budget, written down, so a restarted instance rebuilds it and
/// another one returns a dead instance's after `expires_at`. One attempt
/// per (sale, user); an attempt holds its units until it is rejected or
/// its order closes unpaid (`returned_at`).
const ORDERS_V7: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sales (
        sale_id VARCHAR(64) PRIMARY KEY,
        sku VARCHAR(64) NOT NULL,
        units BIGINT NOT NULL CHECK (units > 0),
        allocated BIGINT NOT NULL DEFAULT 0 CHECK (allocated >= 0 AND allocated <= units),
        start_at BIGINT NOT NULL,
        end_at BIGINT NOT NULL,
        per_user_limit BIGINT NOT NULL CHECK (per_user_limit > 0),
        created_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS sale_leases (
        sale_id VARCHAR(64) NOT NULL,
        owner VARCHAR(64) NOT NULL,
        units_left BIGINT NOT NULL CHECK (units_left >= 0),
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (sale_id, owner)
    )",
    "CREATE TABLE IF NOT EXISTS sale_attempts (
        attempt_id VARCHAR(64) PRIMARY KEY,
        sale_id VARCHAR(64) NOT NULL,
        user_id VARCHAR(64) NOT NULL,
        quantity BIGINT NOT NULL CHECK (quantity > 0),
        order_id VARCHAR(64) NOT NULL UNIQUE,
        state VARCHAR(16) NOT NULL,
        reason VARCHAR(32),
        queued_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        returned_at BIGINT,
        UNIQUE (sale_id, user_id)
    )",
];

/// Version 8 of the order database: reconciliation. An outbox row is
/// `settled_at` once every group that subscribes to it is done with it, and
/// counts how often the reconciler published it again (`republished`).
/// Rows sent before receipts existed are settled as they are: nothing would
/// ever acknowledge them. The reconciler reads unsettled sent rows, oldest
/// first, through `outbox_unsettled`. On a server the receipts
/// ([`EVENT_RECEIPTS`]) are created here too; SQLite keeps them in a file
/// of their own ([`receipts`]).
const ORDERS_V8: &[&str] = &[
    "ALTER TABLE outbox ADD COLUMN republished BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE outbox ADD COLUMN settled_at BIGINT",
    "UPDATE outbox SET settled_at = sent_at WHERE sent_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS outbox_unsettled ON outbox (sent_at, id) \
     WHERE settled_at IS NULL AND sent_at IS NOT NULL",
];

/// Version 9 of the order database: the change feed. `order_seq` counts
/// the order's changes (1 at creation), bumped by the statement that makes
/// each change; orders older than this version start from 0 and their next
/// change is their first feed event. `outbox_feed_order` serves the feed's
/// claim rule (`sql::feed_claim_rule!`): the unsent rows of one key.
const ORDERS_V9: &[&str] = &[
    "ALTER TABLE orders ADD COLUMN order_seq BIGINT NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS outbox_feed_order ON outbox (msg_key, id) WHERE sent_at IS NULL",
];

/// Version 12 of the order database: a payment no longer deducts its units
/// (`catalog`): `reserved` counts the units of every order not cancelled,
/// paid or not, and `on_hand` the units sold too. A database written before
/// it had both lowered at each payment: every paid order's units (any
/// status but unpaid or cancelled) go back to both, which leaves what can
/// be ordered as it was. One statement, one pass over the lines.
const ORDERS_V12: &[&str] = &["UPDATE products \
     SET on_hand = products.on_hand + sold.q, reserved = products.reserved + sold.q \
     FROM (SELECT l.sku AS sku, SUM(l.quantity) AS q FROM order_lines l \
           JOIN orders o ON o.order_id = l.order_id \
           WHERE o.status NOT IN ('UNPAID', 'CANCELLED') GROUP BY l.sku) AS sold \
     WHERE products.sku = sold.sku"];

/// `event_receipts`: one row per (event, group) that said it applied the
/// event (`order_receipt_group`; a receipt sent twice inserts nothing).
pub(crate) const EVENT_RECEIPTS: &str = "CREATE TABLE IF NOT EXISTS event_receipts (
        event_id VARCHAR(160) NOT NULL,
        consumer_group VARCHAR(64) NOT NULL,
        applied_at BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        PRIMARY KEY (event_id, consumer_group)
    )";

/// `shipment_receipts`: the warehouse's tracking number of each order, as
/// its receipts carry them (`Receipt::shipments`). A carrier's callback is
/// checked against it where the warehouse's own table is not at hand (the
/// warehouse runs as its own process, `role`).
pub(crate) const SHIPMENT_RECEIPTS: &str = "CREATE TABLE IF NOT EXISTS shipment_receipts (
        order_id VARCHAR(64) PRIMARY KEY,
        tracking_no VARCHAR(128) NOT NULL,
        received_at BIGINT NOT NULL
    )";

/// The receipts' own SQLite file (`receipts.db`): [`EVENT_RECEIPTS`], then
/// [`SHIPMENT_RECEIPTS`].
pub(crate) fn receipts() -> Vec<Migration> {
    vec![
        Migration {
            version: 1,
            statements: vec![EVENT_RECEIPTS.to_owned()],
        },
        Migration {
            version: 2,
            statements: vec![SHIPMENT_RECEIPTS.to_owned()],
        },
    ]
}

/// Version 3 of each system's database: the group's own outbox of receipts
/// (`EffectsApplied`, one per batch), written in the transaction of the
/// batch's effects and inbox rows and relayed to `TopicOrderReceipt` by the same relay as the
/// order database's events (the same columns, so the same statements with
/// another table name). On PostgreSQL the four systems share the table;
/// each receipt's event id names its group.
const SYSTEM_V3: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS receipt_outbox (
        id {AUTO_ID},
        topic VARCHAR(128) NOT NULL,
        tag VARCHAR(64) NOT NULL,
        msg_key VARCHAR(64) NOT NULL,
        event_id VARCHAR(240) NOT NULL UNIQUE,
        body TEXT NOT NULL,
        deliver_at BIGINT,
        created_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        lease_owner VARCHAR(64),
        last_error TEXT,
        sent_at BIGINT,
        parked_at BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS receipt_outbox_unsent ON receipt_outbox (next_attempt_at, id) \
     WHERE sent_at IS NULL AND parked_at IS NULL",
];

fn system_tables(system: System) -> &'static [&'static str] {
    match system {
        System::Credit => &[
            "CREATE TABLE IF NOT EXISTS credit_points (
                id {AUTO_ID},
                user_id VARCHAR(64) NOT NULL,
                order_id VARCHAR(64) NOT NULL UNIQUE,
                points BIGINT NOT NULL,
                created_at BIGINT NOT NULL
            )",
            "CREATE INDEX IF NOT EXISTS credit_points_by_user ON credit_points (user_id)",
        ],
        System::Marketing => &[
            "CREATE TABLE IF NOT EXISTS marketing_coupons (
                code VARCHAR(96) PRIMARY KEY,
                user_id VARCHAR(64) NOT NULL,
                order_id VARCHAR(64) NOT NULL UNIQUE,
                value BIGINT NOT NULL,
                created_at BIGINT NOT NULL
            )",
            "CREATE INDEX IF NOT EXISTS marketing_coupons_by_user ON marketing_coupons (user_id)",
        ],
        System::Push => &[
            "CREATE TABLE IF NOT EXISTS push_sms (
                id {AUTO_ID},
                user_id VARCHAR(64) NOT NULL,
                order_id VARCHAR(64) NOT NULL UNIQUE,
                text TEXT NOT NULL,
                provider_ref VARCHAR(128) NOT NULL,
                created_at BIGINT NOT NULL
            )",
            "CREATE INDEX IF NOT EXISTS push_sms_by_user ON push_sms (user_id)",
        ],
        System::Warehouse => &[
            "CREATE TABLE IF NOT EXISTS warehouse_shipments (
                id {AUTO_ID},
                user_id VARCHAR(64) NOT NULL,
                order_id VARCHAR(64) NOT NULL UNIQUE,
                tracking_no VARCHAR(128) NOT NULL,
                status VARCHAR(32) NOT NULL,
                created_at BIGINT NOT NULL
            )",
            "CREATE INDEX IF NOT EXISTS warehouse_shipments_by_user ON warehouse_shipments (user_id)",
        ],
    }
}

/// Version 2 of each system's database: what refunds and carriers change.
fn system_tables_v2(system: System) -> &'static [&'static str] {
    match system {
        System::Credit => &[
            // Points taken back by refunds, at most once per refund.
            "CREATE TABLE IF NOT EXISTS credit_point_reversals (
                refund_id VARCHAR(64) PRIMARY KEY,
                user_id VARCHAR(64) NOT NULL,
                order_id VARCHAR(64) NOT NULL,
                points BIGINT NOT NULL CHECK (points >= 0),
                created_at BIGINT NOT NULL
            )",
            "CREATE INDEX IF NOT EXISTS credit_point_reversals_by_order ON credit_point_reversals (order_id)",
        ],
        System::Marketing => &[
            "ALTER TABLE marketing_coupons ADD COLUMN status VARCHAR(16) NOT NULL DEFAULT 'ACTIVE'",
            "ALTER TABLE marketing_coupons ADD COLUMN revoked_at BIGINT",
        ],
        System::Push => &["CREATE TABLE IF NOT EXISTS push_refund_sms (
                refund_id VARCHAR(64) PRIMARY KEY,
                user_id VARCHAR(64) NOT NULL,
                order_id VARCHAR(64) NOT NULL,
                text TEXT NOT NULL,
                provider_ref VARCHAR(128) NOT NULL,
                created_at BIGINT NOT NULL
            )"],
        System::Warehouse => &["ALTER TABLE warehouse_shipments ADD COLUMN updated_at BIGINT"],
    }
}

fn render(backend: Backend, ddl: &str) -> String {
    let auto_id = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        Backend::Mysql => return mysql::render(ddl),
    };
    ddl.replace("{AUTO_ID}", auto_id)
}

/// The table that records each component's schema version.
pub(crate) fn version_table(backend: Backend) -> String {
    let ddl = "CREATE TABLE IF NOT EXISTS schema_version (
        component VARCHAR(32) PRIMARY KEY,
        version BIGINT NOT NULL
    )";
    match backend {
        Backend::Mysql => format!("{ddl} {}", mysql::TABLE_OPTIONS),
        Backend::Sqlite | Backend::Postgres => ddl.to_owned(),
    }
}

/// One numbered step of a component's schema.
pub(crate) struct Migration {
    pub version: i64,
    pub statements: Vec<String>,
}

fn rendered<'a>(backend: Backend, ddl: impl IntoIterator<Item = &'a &'a str>) -> Vec<String> {
    ddl.into_iter().map(|d| render(backend, d)).collect()
}

/// The order database's migrations, oldest first.
pub(crate) fn orders(backend: Backend) -> Vec<Migration> {
    if backend == Backend::Mysql {
        return numbered(backend, mysql::orders());
    }
    vec![
        Migration {
            version: 1,
            statements: rendered(backend, ORDERS),
        },
        Migration {
            version: 2,
            statements: rendered(backend, ORDERS_V2),
        },
        Migration {
            version: 3,
            statements: rendered(backend, ORDERS_V3),
        },
        Migration {
            version: 4,
            statements: rendered(backend, ORDERS_V4),
        },
        Migration {
            version: 5,
            statements: rendered(backend, ORDERS_V5),
        },
        Migration {
            version: 6,
            statements: rendered(backend, ORDERS_V6),
        },
        Migration {
            version: 7,
            statements: rendered(backend, ORDERS_V7),
        },
        Migration {
            version: 8,
            statements: if backend == Backend::Sqlite {
                rendered(backend, ORDERS_V8)
            } else {
                rendered(backend, ORDERS_V8.iter().chain(&[EVENT_RECEIPTS]))
            },
        },
        Migration {
            version: 9,
            statements: rendered(backend, ORDERS_V9),
        },
        // Version 10: the receipts' shipments ([`SHIPMENT_RECEIPTS`]), with
        // the other receipts (SQLite: in their own file, [`receipts`]).
        Migration {
            version: 10,
            statements: if backend == Backend::Sqlite {
                Vec::new()
            } else {
                rendered(backend, &[SHIPMENT_RECEIPTS])
            },
        },
        // Version 11: MySQL's commit markers (`commit`); PostgreSQL asks
        // `txid_status` and SQLite's commits are local: nothing here.
        Migration {
            version: 11,
            statements: Vec::new(),
        },
        Migration {
            version: 12,
            statements: rendered(backend, ORDERS_V12),
        },
    ]
}

/// A system's own database (`Databases::System`: the system runs as its
/// own process) parks the messages its group refuses there: the order
/// database's version 4 alone, as component `parked`.
pub(crate) fn parked(backend: Backend) -> Vec<Migration> {
    let ddl: &[&str] = if backend == Backend::Mysql {
        mysql::orders()[3]
    } else {
        ORDERS_V4
    };
    vec![Migration {
        version: 1,
        statements: rendered(backend, ddl),
    }]
}

/// One system's migrations, oldest first.
pub(crate) fn system(backend: Backend, system: System) -> Vec<Migration> {
    if backend == Backend::Mysql {
        return numbered(backend, mysql::system(system));
    }
    vec![
        Migration {
            version: 1,
            statements: rendered(backend, SYSTEM_COMMON.iter().chain(system_tables(system))),
        },
        Migration {
            version: 2,
            statements: rendered(backend, system_tables_v2(system)),
        },
        Migration {
            version: 3,
            statements: rendered(backend, SYSTEM_V3),
        },
    ]
}

/// Versions 1, 2, … of the statements given, oldest first.
fn numbered<S: AsRef<[&'static str]>>(
    backend: Backend,
    versions: impl IntoIterator<Item = S>,
) -> Vec<Migration> {
    versions
        .into_iter()
        .zip(1..)
        .map(|(ddl, version)| Migration {
            version,
            statements: rendered(backend, ddl.as_ref()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(migrations: &[Migration]) -> Vec<i64> {
        migrations.iter().map(|m| m.version).collect()
    }

    /// A version means the same schema on every backend: MySQL's list (in
    /// its own words) must keep step with the shared one.
    #[test]
    fn mysql_has_every_version_of_the_shared_schema() {
        assert_eq!(
            versions(&orders(Backend::Mysql)),
            versions(&orders(Backend::Sqlite))
        );
        for system in System::ALL {
            assert_eq!(
                versions(&self::system(Backend::Mysql, system)),
                versions(&self::system(Backend::Sqlite, system))
            );
        }
        for migration in orders(Backend::Mysql) {
            for statement in migration.statements {
                assert!(!statement.contains('{'), "{statement}");
                if statement.starts_with("CREATE TABLE") {
                    assert!(statement.ends_with(mysql::TABLE_OPTIONS), "{statement}");
                }
            }
        }
    }
}
