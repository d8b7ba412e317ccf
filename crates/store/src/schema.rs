//! Tables, created at start-up if missing (`CREATE ... IF NOT EXISTS`).
//!
//! The same statements serve SQLite and PostgreSQL; only the auto-increment
//! column differs. Every status, amount and count is an integer or a short
//! string, so nothing depends on a backend's own types.

use ordermq_domain::System;

use crate::Backend;

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

fn render(backend: Backend, ddl: &str) -> String {
    let auto_id = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    };
    ddl.replace("{AUTO_ID}", auto_id)
}

pub(crate) fn orders(backend: Backend) -> Vec<String> {
    ORDERS.iter().map(|ddl| render(backend, ddl)).collect()
}

pub(crate) fn system(backend: Backend, system: System) -> Vec<String> {
    SYSTEM_COMMON
        .iter()
        .chain(system_tables(system))
        .map(|ddl| render(backend, ddl))
        .collect()
}
