//! The tables on MySQL and MariaDB: the same versions, columns and keys as
//! the shared statements in `schema`, in MySQL's words.
//!
//! Written apart because MySQL differs in what a migration can rely on:
//! DDL is not transactional (each statement commits on its own), MySQL 8
//! has no `CREATE INDEX IF NOT EXISTS` and no partial indexes, and a
//! column's `CHECK` may not name another column. So every index is declared
//! in its table's `CREATE TABLE` or in the same `ALTER TABLE` as its column:
//! one statement, applied whole or not at all, and a migration cut short
//! repeats cleanly. Every table is InnoDB in `utf8mb4` with the binary
//! collation, so keys, comparisons and ordering are byte-wise as on SQLite
//! and PostgreSQL (MySQL's default collations are case-insensitive).
//! Identifiers are the `{AUTO_ID}` and `{TABLE}` of [`render`].

use ordermq_domain::System;

/// The order database, version 1. `user_locks` is MySQL's alone: a create
/// within per-user limits locks its user's row there, where PostgreSQL
/// takes an advisory lock.
const ORDERS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS products (
        sku VARCHAR(64) PRIMARY KEY,
        name VARCHAR(200) NOT NULL,
        price BIGINT NOT NULL CHECK (price >= 0),
        on_hand BIGINT NOT NULL CHECK (on_hand >= 0),
        reserved BIGINT NOT NULL DEFAULT 0,
        CONSTRAINT products_reserved CHECK (reserved >= 0 AND reserved <= on_hand)
    ) {TABLE}",
    "CREATE TABLE IF NOT EXISTS orders (
        order_id VARCHAR(64) PRIMARY KEY,
        user_id VARCHAR(64) NOT NULL,
        status VARCHAR(16) NOT NULL,
        amount BIGINT NOT NULL CHECK (amount >= 0),
        payment_id VARCHAR(64),
        created_at BIGINT NOT NULL,
        paid_at BIGINT,
        updated_at BIGINT NOT NULL,
        INDEX orders_by_user (user_id),
        INDEX orders_by_status (status)
    ) {TABLE}",
    "CREATE TABLE IF NOT EXISTS order_lines (
        order_id VARCHAR(64) NOT NULL,
        sku VARCHAR(64) NOT NULL,
        quantity BIGINT NOT NULL CHECK (quantity > 0),
        unit_price BIGINT NOT NULL CHECK (unit_price >= 0),
        PRIMARY KEY (order_id, sku)
    ) {TABLE}",
    "CREATE TABLE IF NOT EXISTS order_history (
        id {AUTO_ID},
        order_id VARCHAR(64) NOT NULL,
        from_status VARCHAR(16),
        to_status VARCHAR(16) NOT NULL,
        at BIGINT NOT NULL,
        INDEX order_history_by_order (order_id)
    ) {TABLE}",
    "CREATE TABLE IF NOT EXISTS payments (
        payment_id VARCHAR(64) PRIMARY KEY,
        order_id VARCHAR(64) NOT NULL,
        amount BIGINT NOT NULL,
        outcome VARCHAR(32) NOT NULL,
        received_at BIGINT NOT NULL,
        INDEX payments_by_order (order_id)
    ) {TABLE}",
    // No partial index: `sent_at IS NULL` leads the key instead, so the
    // relay's claim reads only unsent rows, in due order.
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
        sent_at BIGINT,
        INDEX outbox_unsent (sent_at, next_attempt_at, id)
    ) {TABLE}",
    "CREATE TABLE IF NOT EXISTS user_locks (
        user_id VARCHAR(64) PRIMARY KEY
    ) {TABLE}",
];

const ORDERS_V2: &[&str] = &[
    "ALTER TABLE orders ADD COLUMN close_at BIGINT, ADD INDEX orders_close_due (status, close_at)",
    "ALTER TABLE order_lines ADD COLUMN refunded BIGINT NOT NULL DEFAULT 0",
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
        UNIQUE (order_id, idempotency_key),
        INDEX refunds_by_status (status)
    ) {TABLE}",
    "CREATE TABLE IF NOT EXISTS carrier_events (
        order_id VARCHAR(64) NOT NULL,
        status VARCHAR(16) NOT NULL,
        tracking_no VARCHAR(64) NOT NULL,
        received_at BIGINT NOT NULL,
        PRIMARY KEY (order_id, status)
    ) {TABLE}",
];

const ORDERS_V3: &[&str] = &["ALTER TABLE orders DROP INDEX orders_by_status"];

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
    ) {TABLE}"];

const ORDERS_V5: &[&str] = &["CREATE TABLE IF NOT EXISTS order_actions (
        id {AUTO_ID},
        order_id VARCHAR(64) NOT NULL,
        action VARCHAR(32) NOT NULL,
        refund_id VARCHAR(64) NOT NULL,
        actor VARCHAR(64) NOT NULL,
        at BIGINT NOT NULL,
        INDEX order_actions_by_order (order_id)
    ) {TABLE}"];

/// Version 6: an outbox row the relay failed `relay_park_after_attempts`
/// times is parked (`parked_at`). PostgreSQL and SQLite keep parked rows
/// out of the relay's index with a partial index; MySQL has none, so
/// `parked_at` joins the relay's key after `sent_at`: the claim's `sent_at
/// IS NULL AND parked_at IS NULL` is an equality prefix of the key, read in
/// `next_attempt_at` order straight from the index, and neither sent nor
/// parked rows are ever scanned. Parked rows are listed by their own index
/// (a range on `parked_at IS NOT NULL`). One statement: applied whole or not.
const ORDERS_V6: &[&str] = &["ALTER TABLE outbox ADD COLUMN parked_at BIGINT, \
     DROP INDEX outbox_unsent, \
     ADD INDEX outbox_unsent (sent_at, parked_at, next_attempt_at, id), \
     ADD INDEX outbox_parked (parked_at, id)"];

/// Version 7: flash sales (see the shared `ORDERS_V7`). The bounds of
/// `allocated` name two columns, so they are a table constraint here.
const ORDERS_V7: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sales (
        sale_id VARCHAR(64) PRIMARY KEY,
        sku VARCHAR(64) NOT NULL,
        units BIGINT NOT NULL CHECK (units > 0),
        allocated BIGINT NOT NULL DEFAULT 0,
        start_at BIGINT NOT NULL,
        end_at BIGINT NOT NULL,
        per_user_limit BIGINT NOT NULL CHECK (per_user_limit > 0),
        created_at BIGINT NOT NULL,
        CONSTRAINT sales_allocated CHECK (allocated >= 0 AND allocated <= units)
    ) {TABLE}",
    "CREATE TABLE IF NOT EXISTS sale_leases (
        sale_id VARCHAR(64) NOT NULL,
        owner VARCHAR(64) NOT NULL,
        units_left BIGINT NOT NULL CHECK (units_left >= 0),
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (sale_id, owner)
    ) {TABLE}",
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
        UNIQUE KEY sale_attempts_by_user (sale_id, user_id)
    ) {TABLE}",
];

/// Version 8: receipts and reconciliation (see the shared `ORDERS_V8`).
/// `outbox_unsettled` leads with `settled_at`: MySQL has no partial index,
/// and the reconciler reads the unsettled sent rows in send order.
const ORDERS_V8: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS event_receipts (
        event_id VARCHAR(160) NOT NULL,
        consumer_group VARCHAR(64) NOT NULL,
        applied_at BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        PRIMARY KEY (event_id, consumer_group)
    ) {TABLE}",
    "ALTER TABLE outbox ADD COLUMN republished BIGINT NOT NULL DEFAULT 0, \
     ADD COLUMN settled_at BIGINT, \
     ADD INDEX outbox_unsettled (settled_at, sent_at, id)",
    "UPDATE outbox SET settled_at = sent_at WHERE sent_at IS NOT NULL",
];

/// Version 9: the change feed (see the shared `ORDERS_V9`). No partial
/// index: `outbox_feed_order` leads with the key, then `sent_at`, so the
/// feed's claim rule reads one order's unsent rows as an equality prefix.
const ORDERS_V9: &[&str] = &[
    "ALTER TABLE orders ADD COLUMN order_seq BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE outbox ADD INDEX outbox_feed_order (msg_key, sent_at, id)",
];

/// Version 10: the receipts' shipments (see the shared `SHIPMENT_RECEIPTS`).
const ORDERS_V10: &[&str] = &["CREATE TABLE IF NOT EXISTS shipment_receipts (
        order_id VARCHAR(64) PRIMARY KEY,
        tracking_no VARCHAR(128) NOT NULL,
        received_at BIGINT NOT NULL
    ) {TABLE}"];

/// Version 11: the commit markers (`commit`): a batch's first write, read
/// back after a commit whose answer was lost.
const ORDERS_V11: &[&str] = &["CREATE TABLE IF NOT EXISTS commit_markers (
        token VARCHAR(64) PRIMARY KEY,
        at BIGINT NOT NULL
    ) {TABLE}"];

/// Version 12: a payment no longer deducts its units (see the shared
/// `ORDERS_V12`), in MySQL's multi-table `UPDATE`.
const ORDERS_V12: &[&str] = &["UPDATE products \
     JOIN (SELECT l.sku AS sku, SUM(l.quantity) AS q FROM order_lines l \
           JOIN orders o ON o.order_id = l.order_id \
           WHERE o.status NOT IN ('UNPAID', 'CANCELLED') GROUP BY l.sku) AS sold \
       ON products.sku = sold.sku \
     SET products.on_hand = products.on_hand + sold.q, \
         products.reserved = products.reserved + sold.q"];

/// Each system's version 3: its outbox of receipts (see the shared
/// `SYSTEM_V3`), indexed as `outbox` is since version 6.
const SYSTEM_V3: &[&str] = &["CREATE TABLE IF NOT EXISTS receipt_outbox (
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
        parked_at BIGINT,
        INDEX receipt_outbox_unsent (sent_at, parked_at, next_attempt_at, id)
    ) {TABLE}"];

const SYSTEM_COMMON: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS inbox (
        consumer_group VARCHAR(64) NOT NULL,
        event_id VARCHAR(160) NOT NULL,
        order_id VARCHAR(64) NOT NULL,
        msg_id VARCHAR(128),
        applied_at BIGINT NOT NULL,
        PRIMARY KEY (consumer_group, event_id)
    ) {TABLE}",
    "CREATE TABLE IF NOT EXISTS consumer_failures (
        consumer_group VARCHAR(64) NOT NULL,
        event_id VARCHAR(160) NOT NULL,
        order_id VARCHAR(64) NOT NULL,
        attempts BIGINT NOT NULL,
        last_error TEXT NOT NULL,
        dead_lettered BIGINT NOT NULL DEFAULT 0,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (consumer_group, event_id)
    ) {TABLE}",
];

fn system_tables(system: System) -> &'static [&'static str] {
    match system {
        System::Credit => &["CREATE TABLE IF NOT EXISTS credit_points (
                id {AUTO_ID},
                user_id VARCHAR(64) NOT NULL,
                order_id VARCHAR(64) NOT NULL UNIQUE,
                points BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                INDEX credit_points_by_user (user_id)
            ) {TABLE}"],
        System::Marketing => &["CREATE TABLE IF NOT EXISTS marketing_coupons (
                code VARCHAR(96) PRIMARY KEY,
                user_id VARCHAR(64) NOT NULL,
                order_id VARCHAR(64) NOT NULL UNIQUE,
                value BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                INDEX marketing_coupons_by_user (user_id)
            ) {TABLE}"],
        System::Push => &["CREATE TABLE IF NOT EXISTS push_sms (
                id {AUTO_ID},
                user_id VARCHAR(64) NOT NULL,
                order_id VARCHAR(64) NOT NULL UNIQUE,
                text TEXT NOT NULL,
                provider_ref VARCHAR(128) NOT NULL,
                created_at BIGINT NOT NULL,
                INDEX push_sms_by_user (user_id)
            ) {TABLE}"],
        System::Warehouse => &["CREATE TABLE IF NOT EXISTS warehouse_shipments (
                id {AUTO_ID},
                user_id VARCHAR(64) NOT NULL,
                order_id VARCHAR(64) NOT NULL UNIQUE,
                tracking_no VARCHAR(128) NOT NULL,
                status VARCHAR(32) NOT NULL,
                created_at BIGINT NOT NULL,
                INDEX warehouse_shipments_by_user (user_id)
            ) {TABLE}"],
    }
}

fn system_tables_v2(system: System) -> &'static [&'static str] {
    match system {
        System::Credit => &["CREATE TABLE IF NOT EXISTS credit_point_reversals (
                refund_id VARCHAR(64) PRIMARY KEY,
                user_id VARCHAR(64) NOT NULL,
                order_id VARCHAR(64) NOT NULL,
                points BIGINT NOT NULL CHECK (points >= 0),
                created_at BIGINT NOT NULL,
                INDEX credit_point_reversals_by_order (order_id)
            ) {TABLE}"],
        System::Marketing => &["ALTER TABLE marketing_coupons \
             ADD COLUMN status VARCHAR(16) NOT NULL DEFAULT 'ACTIVE', \
             ADD COLUMN revoked_at BIGINT"],
        System::Push => &["CREATE TABLE IF NOT EXISTS push_refund_sms (
                refund_id VARCHAR(64) PRIMARY KEY,
                user_id VARCHAR(64) NOT NULL,
                order_id VARCHAR(64) NOT NULL,
                text TEXT NOT NULL,
                provider_ref VARCHAR(128) NOT NULL,
                created_at BIGINT NOT NULL
            ) {TABLE}"],
        System::Warehouse => &["ALTER TABLE warehouse_shipments ADD COLUMN updated_at BIGINT"],
    }
}

/// What follows every `CREATE TABLE`.
pub(super) const TABLE_OPTIONS: &str = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// One statement with its placeholders filled in.
pub(super) fn render(ddl: &str) -> String {
    ddl.replace("{AUTO_ID}", "BIGINT AUTO_INCREMENT PRIMARY KEY")
        .replace("{TABLE}", TABLE_OPTIONS)
}

/// The order database's statements per version, oldest first.
pub(super) fn orders() -> [&'static [&'static str]; 12] {
    [
        ORDERS, ORDERS_V2, ORDERS_V3, ORDERS_V4, ORDERS_V5, ORDERS_V6, ORDERS_V7, ORDERS_V8,
        ORDERS_V9, ORDERS_V10, ORDERS_V11, ORDERS_V12,
    ]
}

/// One system's statements per version, oldest first.
pub(super) fn system(system: System) -> [Vec<&'static str>; 3] {
    [
        SYSTEM_COMMON
            .iter()
            .chain(system_tables(system))
            .copied()
            .collect(),
        system_tables_v2(system).to_vec(),
        SYSTEM_V3.to_vec(),
    ]
}
