//! A batch of payments as one statement: every guarded `UNPAID → PAID`, the
//! payments, the history rows and the `OrderPaid` events, with arrays for
//! parameters. It touches no product: the units stay as the orders'
//! creation reserved them (the `pay` module), so batches of several writers and
//! instances paying orders of one hot SKU do not take turns on its row.
//!
//! Each event is built before the statement, for every payment that may
//! apply (the order's user and lines never change), and inserted only for
//! the orders the guarded update returned.

use std::collections::{BTreeMap, HashSet};

use ordermq_domain::event::PaidLine;
use ordermq_domain::feed::{FeedChange, FeedEvent, OrderState, TOPIC_ORDER_CHANGE_FEED};
use ordermq_domain::view::PaymentReceipt;
use ordermq_domain::{
    EventKind, OrderEvent, OrderPaid, OrderStatus, PayOrderError, PaymentNotice, UserId,
};
use sqlx::postgres::PgConnection;

use crate::sql::{self, Feed};
use sqlx::{Postgres, Row, Transaction};

/// One payment the statement tries: its notice's index, and its event.
#[derive(Debug)]
pub(super) struct Candidate {
    index: usize,
    event: OrderEvent,
    /// The order's `order_seq` once paid (the guard: what it was read + 1).
    seq: i64,
    /// Its change-feed event (id, body), when the feed is on.
    feed: Option<(String, String)>,
}

/// Reads the user and the lines of each order the batch may pay: the first
/// notice of each order and of each payment id. The others, and notices of
/// orders that do not exist, are left to the general path.
pub(super) async fn prepare(
    conn: &mut PgConnection,
    feed: Feed,
    payments: &[PaymentNotice],
    now: i64,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let mut orders = HashSet::new();
    let mut payment_ids = HashSet::new();
    let tried: Vec<usize> = (0..payments.len())
        .filter(|&i| {
            let fresh_order = orders.insert(payments[i].order_id.as_str());
            let fresh_payment = payment_ids.insert(payments[i].payment_id.as_str());
            fresh_order && fresh_payment
        })
        .collect();
    if tried.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = tried
        .iter()
        .map(|&i| payments[i].order_id.as_str())
        .collect();
    let rows = sqlx::query(READ_ORDERS)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
    let bad = |e: String| sqlx::Error::Decode(e.into());
    let mut found: BTreeMap<String, (String, Vec<PaidLine>)> = BTreeMap::new();
    let mut seqs: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for row in rows {
        let order: String = row.try_get("order_id")?;
        let user: String = row.try_get("user_id")?;
        seqs.insert(
            order.clone(),
            (row.try_get("order_seq")?, row.try_get("created_at")?),
        );
        let sku: String = row.try_get("sku")?;
        let line = sql::paid_line(&sku, row.try_get("quantity")?, row.try_get("unit_price")?)
            .map_err(|e| bad(format!("stored line of {order}: {e}")))?;
        found
            .entry(order)
            .or_insert_with(|| (user, Vec::new()))
            .1
            .push(line);
    }
    let mut candidates = Vec::with_capacity(tried.len());
    for index in tried {
        let notice = &payments[index];
        let Some((user, lines)) = found.remove(notice.order_id.as_str()) else {
            continue;
        };
        // An order that can still be paid is UNPAID, and no change but its
        // creation has counted: the guard `order_seq + 1 = seq` in the
        // statement makes sure of it.
        let (seq, created_at) = seqs[notice.order_id.as_str()];
        let seq = seq + 1;
        let feed = (feed == Feed::On).then(|| {
            let state = OrderState::paid(notice, &user, &lines, created_at, now);
            let event = FeedEvent::new(FeedChange::Paid, seq, state, now);
            (event.id.clone(), event.to_json())
        });
        let event = OrderEvent::OrderPaid(OrderPaid {
            order_id: notice.order_id.clone(),
            user_id: UserId::parse(&user).map_err(|e| bad(e.to_string()))?,
            payment_id: notice.payment_id.clone(),
            amount: notice.amount,
            paid_at: now,
            lines,
        });
        candidates.push(Candidate {
            index,
            event,
            seq,
            feed,
        });
    }
    Ok(candidates)
}

/// Per payment, its receipt if this path applied it, `None` for the
/// general path.
pub(super) type Decided = Vec<Option<Result<PaymentReceipt, PayOrderError>>>;

/// What the batch's statement did.
#[derive(Debug)]
pub(super) enum Applied {
    /// Nothing to try: no statement ran.
    Nothing(Decided),
    /// The statement ran; with the transaction's id (`commit::TXID`).
    Ran { decided: Decided, txid: i64 },
    /// The counts did not add up: the caller rolls back and leaves every
    /// payment to the general path.
    Undecided,
}

/// Runs the batch's statement.
pub(super) async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    payments: &[PaymentNotice],
    candidates: Vec<Candidate>,
    now: i64,
) -> Result<Applied, sqlx::Error> {
    let mut decided: Decided = (0..payments.len()).map(|_| None).collect();
    if candidates.is_empty() {
        return Ok(Applied::Nothing(decided));
    }
    let notice = |c: &Candidate| &payments[c.index];
    let order_ids: Vec<&str> = candidates
        .iter()
        .map(|c| notice(c).order_id.as_str())
        .collect();
    let payment_ids: Vec<&str> = candidates
        .iter()
        .map(|c| notice(c).payment_id.as_str())
        .collect();
    let amounts: Vec<i64> = candidates
        .iter()
        .map(|c| notice(c).amount.minor_units())
        .collect();
    let event_ids: Vec<String> = candidates.iter().map(|c| c.event.event_id()).collect();
    let bodies: Vec<String> = candidates.iter().map(|c| c.event.to_json()).collect();
    let kind = EventKind::OrderPaid;
    let seqs: Vec<i64> = candidates.iter().map(|c| c.seq).collect();
    let feed_ids: Vec<Option<&str>> = candidates
        .iter()
        .map(|c| c.feed.as_ref().map(|(id, _)| id.as_str()))
        .collect();
    let feed_bodies: Vec<Option<&str>> = candidates
        .iter()
        .map(|c| c.feed.as_ref().map(|(_, body)| body.as_str()))
        .collect();
    let feeding = candidates.iter().any(|c| c.feed.is_some());
    let row = sqlx::query(PAY_BATCH)
        .bind(&order_ids)
        .bind(&payment_ids)
        .bind(&amounts)
        .bind(now)
        .bind(OrderStatus::Paid.as_str())
        .bind(OrderStatus::Unpaid.as_str())
        .bind(kind.topic())
        .bind(kind.tag())
        .bind(&event_ids)
        .bind(&bodies)
        .bind(&seqs)
        .bind(&feed_ids)
        .bind(&feed_bodies)
        .bind(TOPIC_ORDER_CHANGE_FEED)
        .bind(FeedChange::Paid.tag())
        .fetch_one(&mut **tx)
        .await?;
    let txid: i64 = row.try_get("txid")?;
    let paid: Vec<String> = row
        .try_get::<Option<Vec<String>>, _>("paid")?
        .unwrap_or_default();
    let recorded: i64 = row.try_get("recorded")?;
    let events: i64 = row.try_get("events")?;
    let feed_events: i64 = row.try_get("feed_events")?;
    let n = paid.len() as i64;
    let feed_expected = if feeding { n } else { 0 };
    if recorded != n || events != n || feed_events != feed_expected {
        tracing::warn!(
            paid = n,
            recorded,
            events,
            feed_events,
            "set-based payment batch did not add up; deciding it on the general path"
        );
        return Ok(Applied::Undecided);
    }
    let paid: HashSet<String> = paid.into_iter().collect();
    for c in &candidates {
        let notice = notice(c);
        if paid.contains(notice.order_id.as_str()) {
            decided[c.index] = Some(Ok(PaymentReceipt {
                order_id: notice.order_id.clone(),
                status: OrderStatus::Paid,
                duplicate: false,
                refund_required: false,
            }));
        }
    }
    Ok(Applied::Ran { decided, txid })
}

/// The candidates' users and lines. `$1` order ids.
///
/// Both tables are filtered by the ids, not only joined: a plan made while
/// the tables were small (a fresh database, statistics not yet gathered, or
/// the connection's cached generic plan) then still reads `order_lines`
/// through its primary key. Joined only, such a plan hashed the whole table
/// on every call: 50–70 ms at 200,000 orders instead of 0.3 ms.
const READ_ORDERS: &str = "SELECT o.order_id, o.user_id, o.order_seq, o.created_at, \
     l.sku, l.quantity, l.unit_price \
     FROM orders o JOIN order_lines l ON l.order_id = o.order_id \
     WHERE o.order_id = ANY($1::text[]) AND l.order_id = ANY($1::text[]) \
     ORDER BY o.order_id, l.sku";

/// The batch. `$1` order ids, `$2` payment ids, `$3` amounts, `$4` now,
/// `$5` PAID, `$6` UNPAID, `$7` topic, `$8` tag, `$9` event ids, `$10`
/// bodies, `$11` each order's `order_seq` once paid, `$12` feed event ids
/// and `$13` feed bodies (NULL: the feed is off), `$14` the feed's topic,
/// `$15` its tag (arrays aligned).
///
/// The orders are locked first, in order id order (`sql::lock_orders`):
/// `locked` is materialized in full by the one-time filter on `v` before
/// `v` yields its first row, and every write of the statement is driven by
/// `v`. Another instance's batch may hold some of the same orders (two
/// notices of one payment, a close), and would take them in the same order.
///
/// The guarded update skips a payment id already
/// recorded (a duplicate or a reuse: the general path explains it); one
/// recorded meanwhile by another transaction makes `recorded` fall short.
const PAY_BATCH: &str = "WITH locked AS MATERIALIZED ( \
       SELECT order_id FROM orders WHERE order_id = ANY($1::text[]) ORDER BY order_id FOR UPDATE \
     ), v AS ( \
       SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $9::text[], $10::text[], \
         $11::int8[], $12::text[], $13::text[]) \
         WITH ORDINALITY AS v(oid, pid, amt, eid, body, seq, fid, fbody, n) \
       WHERE (SELECT count(*) FROM locked) >= 0 \
     ), paid AS ( \
       UPDATE orders SET status = $5, payment_id = v.pid, paid_at = $4, updated_at = $4, \
         order_seq = v.seq \
       FROM v \
       WHERE orders.order_id = v.oid AND orders.status = $6 AND orders.amount = v.amt \
         AND orders.order_seq + 1 = v.seq \
         AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.payment_id = v.pid) \
       RETURNING orders.order_id, v.pid, v.amt, v.eid, v.body, v.fid, v.fbody, v.n \
     ), recorded AS ( \
       INSERT INTO payments (payment_id, order_id, amount, outcome, received_at) \
       SELECT pid, order_id, amt, 'APPLIED', $4 FROM paid ORDER BY n \
       ON CONFLICT (payment_id) DO NOTHING RETURNING 1 \
     ), history AS ( \
       INSERT INTO order_history (order_id, from_status, to_status, at) \
       SELECT order_id, $6, $5, $4 FROM paid ORDER BY n RETURNING 1 \
     ), events AS ( \
       INSERT INTO outbox (topic, tag, msg_key, event_id, body, deliver_at, created_at, attempts, next_attempt_at) \
       SELECT $7, $8, order_id, eid, body, NULL, $4, 0, $4 FROM paid ORDER BY n RETURNING 1 \
     ), feed_events AS ( \
       INSERT INTO outbox (topic, tag, msg_key, event_id, body, deliver_at, created_at, attempts, next_attempt_at) \
       SELECT $14, $15, order_id, fid, fbody, NULL, $4, 0, $4 FROM paid \
       WHERE fid IS NOT NULL ORDER BY n RETURNING 1 \
     ) \
     SELECT (SELECT array_agg(order_id ORDER BY n) FROM paid) AS paid, \
            (SELECT count(*) FROM recorded) AS recorded, \
            (SELECT count(*) FROM history) AS history, \
            (SELECT count(*) FROM events) AS events, \
            (SELECT count(*) FROM feed_events) AS feed_events, \
            txid_current() AS txid";

/// The batch's read keeps reading `order_lines` through its key on a large
/// table whose statistics were never gathered, with the generic plan a
/// connection caches after five runs. (`PAY_BATCH` was index-driven in the
/// same conditions without help: its join starts from the updated orders.)
#[cfg(test)]
mod plans {
    use sqlx::{Connection, Executor, PgConnection, Row};

    /// A fresh database with ordermq's tables and 200,000 orders of one line
    /// each, not analyzed; `None` without `ORDERMQ_TEST_POSTGRES_URL`
    /// outside CI.
    async fn big_unanalyzed_database() -> Option<PgConnection> {
        let (_store, url) = fresh_store().await?;
        let mut conn = PgConnection::connect(&url).await.unwrap();
        conn.execute(format!("{FILL}; SET plan_cache_mode = force_generic_plan").as_str())
            .await
            .unwrap();
        Some(conn)
    }

    /// 200,000 unpaid orders of one line each.
    const FILL: &str = "INSERT INTO orders (order_id, user_id, status, amount, created_at, updated_at) \
           SELECT 'o' || g, 'u' || (g % 1000), 'UNPAID', 100, 1, 1 \
           FROM generate_series(1, 200000) g; \
         INSERT INTO order_lines (order_id, sku, quantity, unit_price) \
           SELECT 'o' || g, 'HOT', 1, 100 FROM generate_series(1, 200000) g";

    /// A store on a fresh, empty database, and the database's URL; `None`
    /// without `ORDERMQ_TEST_POSTGRES_URL` outside CI.
    async fn fresh_store() -> Option<(crate::Store, String)> {
        let Ok(admin_url) = std::env::var("ORDERMQ_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the store tests on PostgreSQL: set ORDERMQ_TEST_POSTGRES_URL"
            );
            eprintln!("skipping PostgreSQL: ORDERMQ_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!("ordermq_test_{:016x}", fastrand::u64(..));
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let (base, _) = admin_url.rsplit_once('/').expect("URL with a database");
        let url = format!("{base}/{name}");
        let store = crate::Store::open(&url, &crate::StoreOptions::default())
            .await
            .unwrap();
        Some((store, url))
    }

    /// The plan's node types over `table`, from `EXPLAIN (FORMAT JSON)`.
    async fn scans_of(conn: &mut PgConnection, explain: &str, table: &str) -> Vec<String> {
        let row = sqlx::query(explain).fetch_one(&mut *conn).await.unwrap();
        let plan: serde_json::Value = row.try_get(0).unwrap();
        let mut found = Vec::new();
        let mut stack = vec![&plan];
        while let Some(node) = stack.pop() {
            match node {
                serde_json::Value::Array(items) => stack.extend(items),
                serde_json::Value::Object(fields) => {
                    if fields.get("Relation Name").and_then(|v| v.as_str()) == Some(table) {
                        let kind = fields["Node Type"].as_str().unwrap_or("?");
                        found.push(kind.to_owned());
                    }
                    stack.extend(fields.values());
                }
                _ => {}
            }
        }
        found
    }

    #[tokio::test]
    async fn the_batch_reads_order_lines_by_key_whatever_the_statistics() {
        let Some(mut conn) = big_unanalyzed_database().await else {
            return;
        };
        conn.execute(format!("PREPARE read_orders(text[]) AS {}", super::READ_ORDERS).as_str())
            .await
            .unwrap();
        let explain = "EXPLAIN (FORMAT JSON) EXECUTE read_orders('{o1,o5,o77,o999}')";
        let scans = scans_of(&mut conn, explain, "order_lines").await;
        assert!(!scans.is_empty(), "the read no longer reads order_lines?");
        assert!(
            !scans.iter().any(|s| s == "Seq Scan"),
            "the batch's read scans all of order_lines: {scans:?}"
        );
    }

    /// A statement the store's sessions prepared while the tables were
    /// empty is planned again for the tables as they are: a session keeping
    /// the generic plan of its sixth execution (PostgreSQL's default) reads
    /// 200,000 orders by scanning them (`settings::PLAN_EVERY_EXECUTION`).
    #[tokio::test]
    async fn the_stores_sessions_plan_for_the_tables_as_they_are_now() {
        let Some((store, url)) = fresh_store().await else {
            return;
        };
        let mut fast = store
            .pg
            .as_ref()
            .expect("PostgreSQL's pool")
            .acquire()
            .await
            .unwrap();
        let mut general = store.orders.acquire().await.unwrap();
        fast.execute(format!("PREPARE read_orders(text[]) AS {}", super::READ_ORDERS).as_str())
            .await
            .unwrap();
        for _ in 0..8 {
            fast.execute("EXECUTE read_orders('{o1,o5}')")
                .await
                .unwrap();
        }
        let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
            .fetch_one(&mut *general)
            .await
            .unwrap();
        assert_eq!(mode, "force_custom_plan", "the general pool's sessions");
        let mut filler = PgConnection::connect(&url).await.unwrap();
        filler.execute(FILL).await.unwrap();
        let explain = "EXPLAIN (FORMAT JSON) EXECUTE read_orders('{o1,o5,o77,o999}')";
        for table in ["orders", "order_lines"] {
            let scans = scans_of(&mut fast, explain, table).await;
            assert!(
                !scans.iter().any(|s| s == "Seq Scan"),
                "the fast path's session scans {table}: {scans:?}"
            );
        }
    }
}
