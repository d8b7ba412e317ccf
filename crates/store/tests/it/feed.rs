//! The change feed's rows: one per order change, on every write path
//! (the SQLite lane and the general path, PostgreSQL's set-based path,
//! MariaDB), each numbered by the order's `order_seq` and carrying the order
//! as committed; claimed per order only after its predecessor was sent,
//! whichever relay claims; none at all with the feed off.

use ordermq_domain::feed::{FeedChange, FeedEvent, TOPIC_ORDER_CHANGE_FEED};
use ordermq_domain::{OrderId, OrderLine, OutboxMessage, Quantity, Sku};
use ordermq_store::{Feed, Store, StoreOptions, WriteOp, WriteResult};

use crate::helpers::*;

/// The store's options with the change feed on (it is off by default).
fn feed_on() -> StoreOptions {
    StoreOptions {
        feed: Feed::On,
        ..StoreOptions::default()
    }
}

macro_rules! with_feed_on_every_backend {
    ($name:ident, $test:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite_lane() {
                $test(sqlite_with(&feed_on()).await.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite_general() {
                let options = StoreOptions {
                    lanes: false,
                    ..feed_on()
                };
                $test(sqlite_with(&options).await.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(db) = postgres_with(&feed_on()).await {
                    $test(db.store).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn mysql() {
                if let Some(db) = mysql_with(&feed_on()).await {
                    $test(db.store).await;
                }
            }
        }
    };
}

fn refund(
    order: &OrderId,
    key: &str,
    lines: Option<&[(&str, i64)]>,
) -> ordermq_domain::RefundRequest {
    ordermq_domain::RefundRequest::new(
        order.clone(),
        ordermq_domain::IdempotencyKey::parse(key).unwrap(),
        lines.map(|items| {
            items
                .iter()
                .map(|(sku, q)| OrderLine {
                    sku: Sku::parse(sku).unwrap(),
                    quantity: Quantity::parse(*q).unwrap(),
                })
                .collect()
        }),
        None,
    )
    .unwrap()
}

/// Claims and marks sent everything due, as one relay would; returns the
/// feed's messages in claim order.
async fn drain_feed(store: &Store, owner: &str, now: i64) -> Vec<OutboxMessage> {
    let mut feed = Vec::new();
    let mut acked = Vec::new();
    loop {
        let claimed = store
            .ack_and_claim_outbox(owner, &acked, 100, 60_000, now)
            .await
            .unwrap();
        if claimed.is_empty() {
            return feed;
        }
        acked = claimed.iter().map(|m| m.id).collect();
        feed.extend(
            claimed
                .into_iter()
                .filter(|m| m.topic == TOPIC_ORDER_CHANGE_FEED),
        );
    }
}

fn event(m: &OutboxMessage) -> FeedEvent {
    FeedEvent::from_json(m.body.as_bytes()).unwrap()
}

/// Creates, pays (the batch path: lane or set-based; and the one-by-one
/// path), refunds in part, then whole, completes the refunds, and closes
/// an unpaid order; every change is one feed row, numbered 1, 2, 3 … per
/// order, and the last one of each order says what the order database holds.
async fn every_change_is_one_feed_row_in_order(store: Store) {
    seed(&store, "A", 100, 10).await;
    seed(&store, "B", 50, 10).await;
    let (o1, o2, o3, o4) = (order_id(1), order_id(2), order_id(3), order_id(4));
    for id in [&o1, &o2, &o4] {
        store
            .create_order(&new_order("u1", &[("A", 2), ("B", 1)]), id, 1, None)
            .await
            .unwrap();
    }
    store
        .create_order(&new_order("u2", &[("A", 1)]), &o3, 1, None)
        .await
        .unwrap();
    // Two payments in one batch (the lane / PostgreSQL's statement /
    // the set-based run), one alone (the one-by-one path).
    let paid = store
        .write_batch(
            &[
                WriteOp::Pay(notice(&o1, "p1", 250)),
                WriteOp::Pay(notice(&o4, "p4", 250)),
            ],
            2,
        )
        .await;
    assert!(
        paid.iter().all(|r| matches!(r, WriteResult::Paid(Ok(_)))),
        "{paid:?}"
    );
    store.pay_order(&notice(&o2, "p2", 250), 2).await.unwrap();
    store
        .request_refund(&refund(&o1, "k1", Some(&[("A", 1)])), &refund_no(1), 3)
        .await
        .unwrap();
    store
        .request_refund(&refund(&o1, "k2", None), &refund_no(2), 4)
        .await
        .unwrap();
    for r in store.refunds_of(&o1).await.unwrap() {
        store.complete_refund(&r.refund_id, "ref", 5).await.unwrap();
    }
    let closed = store.write_batch(&[WriteOp::Close(o3.clone())], 6).await;
    assert!(
        matches!(closed[0], WriteResult::Closed(Ok(_))),
        "{closed:?}"
    );

    let feed = drain_feed(&store, "relay-a", 10).await;
    let changes = |id: &OrderId| -> Vec<(i64, FeedChange)> {
        feed.iter()
            .map(event)
            .filter(|e| e.subject == id.as_str())
            .map(|e| (e.data.order_seq, e.data.change))
            .collect()
    };
    use FeedChange::*;
    assert_eq!(
        changes(&o1),
        vec![
            (1, Created),
            (2, Paid),
            (3, RefundRequested),
            (4, Refunding),
            (5, Refunded)
        ]
    );
    assert_eq!(changes(&o2), vec![(1, Created), (2, Paid)]);
    assert_eq!(changes(&o4), vec![(1, Created), (2, Paid)]);
    assert_eq!(changes(&o3), vec![(1, Created), (2, Cancelled)]);
    for m in &feed {
        let e = event(m);
        assert_eq!(m.key, e.subject, "the message key is the order id");
        assert_eq!(m.event_id, e.id);
        assert_eq!(m.tag, e.data.change.tag());
    }
    // The last event of each order is the order as the database has it.
    let states = store.feed_states("", 100).await.unwrap();
    assert_eq!(states.len(), 4);
    for (state, seq) in states {
        let last = feed
            .iter()
            .map(event)
            .rfind(|e| e.subject == state.order_id)
            .unwrap();
        assert_eq!(last.data.order_seq, seq);
        assert_eq!(last.data.order, state);
    }
}
with_feed_on_every_backend!(every_change, every_change_is_one_feed_row_in_order);

fn refund_no(n: u32) -> ordermq_domain::RefundId {
    ordermq_domain::RefundId::generate(1_700_000_000_000, n)
}

/// Two relays: while an order's first feed row is claimed and not yet
/// sent, no relay may claim its second, though other orders' rows flow.
async fn a_feed_row_waits_for_its_predecessor_whoever_claims(store: Store) {
    seed(&store, "A", 100, 10).await;
    let (o1, o2) = (order_id(1), order_id(2));
    store
        .create_order(&new_order("u1", &[("A", 1)]), &o1, 1, None)
        .await
        .unwrap();
    store.pay_order(&notice(&o1, "p1", 100), 2).await.unwrap();
    // Relay A claims o1's first feed row only (its second waits), and the
    // fan-out's OrderPaid.
    let first = store.claim_outbox("relay-a", 100, 60_000, 3).await.unwrap();
    let feed_of = |claimed: &[OutboxMessage]| -> Vec<String> {
        claimed
            .iter()
            .filter(|m| m.topic == TOPIC_ORDER_CHANGE_FEED)
            .map(|m| m.event_id.clone())
            .collect()
    };
    assert_eq!(feed_of(&first), vec![FeedEvent::id_of(o1.as_str(), 1)]);
    store
        .create_order(&new_order("u2", &[("A", 1)]), &o2, 4, None)
        .await
        .unwrap();
    // Relay B: o1's second row is held back by the first, in flight at A;
    // o2 flows.
    let second = store.claim_outbox("relay-b", 100, 60_000, 5).await.unwrap();
    assert_eq!(feed_of(&second), vec![FeedEvent::id_of(o2.as_str(), 1)]);
    // Once A's send is confirmed, B may take o1's second.
    let ids: Vec<i64> = first.iter().map(|m| m.id).collect();
    store.mark_sent(&ids, 6).await.unwrap();
    let third = store.claim_outbox("relay-b", 100, 60_000, 7).await.unwrap();
    assert_eq!(feed_of(&third), vec![FeedEvent::id_of(o1.as_str(), 2)]);
}
with_feed_on_every_backend!(
    claim_rule,
    a_feed_row_waits_for_its_predecessor_whoever_claims
);

/// With the feed off nothing of it is written; the order's sequence is
/// still counted.
async fn feed_off_writes_no_feed_rows(store: Store) {
    seed(&store, "A", 100, 10).await;
    let o1 = order_id(1);
    store
        .create_order(&new_order("u1", &[("A", 1)]), &o1, 1, None)
        .await
        .unwrap();
    store
        .write_batch(&[WriteOp::Pay(notice(&o1, "p1", 100))], 2)
        .await;
    assert!(drain_feed(&store, "relay", 3).await.is_empty());
    let states = store.feed_states("", 10).await.unwrap();
    assert_eq!(states[0].1, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feed_off_writes_no_feed_rows_on_sqlite() {
    let options = StoreOptions {
        feed: Feed::Off,
        ..StoreOptions::default()
    };
    feed_off_writes_no_feed_rows(sqlite_with(&options).await.store).await;
}

/// What the feed costs a payment, counted in outbox rows: with the feed on,
/// exactly one row more than without it per paid order (its feed row), in
/// every payment path — a batch (the SQLite lane, the general path's
/// set-based run, PostgreSQL's one statement, MySQL) and a payment alone;
/// with the feed off, only the payment's own `OrderPaid` row, as before
/// the feed existed.
async fn outbox_rows_per_payment(store: Store, feed: Feed) {
    seed(&store, "A", 100, 10).await;
    let orders: Vec<OrderId> = (1..=4).map(order_id).collect();
    for (i, id) in orders.iter().enumerate() {
        store
            .create_order(&new_order(&format!("u{i}"), &[("A", 1)]), id, 1, None)
            .await
            .unwrap();
    }
    let per_payment = if feed == Feed::On { 2 } else { 1 };
    let before = store.outbox_backlog().await.unwrap();
    let batch: Vec<WriteOp> = orders[..3]
        .iter()
        .enumerate()
        .map(|(i, id)| WriteOp::Pay(notice(id, &format!("p{i}"), 100)))
        .collect();
    for result in store.write_batch(&batch, 2).await {
        assert!(matches!(result, WriteResult::Paid(Ok(_))), "{result:?}");
    }
    let after_batch = store.outbox_backlog().await.unwrap();
    assert_eq!(
        after_batch - before,
        3 * per_payment,
        "a batch of 3 ({feed:?})"
    );
    store
        .pay_order(&notice(&orders[3], "p3", 100), 3)
        .await
        .unwrap();
    let after_one = store.outbox_backlog().await.unwrap();
    assert_eq!(
        after_one - after_batch,
        per_payment,
        "a payment alone ({feed:?})"
    );
}

/// [`outbox_rows_per_payment`] with the feed on and off, on every backend.
macro_rules! outbox_rows_on_every_backend {
    ($($name:ident: $feed:expr, $lanes:expr, $open:ident;)*) => {
        mod outbox_rows_per_payment {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let options = StoreOptions {
                        feed: $feed,
                        lanes: $lanes,
                        ..StoreOptions::default()
                    };
                    if let Some(db) = outbox_rows_on_every_backend!(@open $open, &options) {
                        outbox_rows_per_payment(db.store, $feed).await;
                    }
                }
            )*
        }
    };
    (@open sqlite_with, $options:expr) => { Some(sqlite_with($options).await) };
    (@open $open:ident, $options:expr) => { $open($options).await };
}
outbox_rows_on_every_backend! {
    sqlite_lane_on: Feed::On, true, sqlite_with;
    sqlite_lane_off: Feed::Off, true, sqlite_with;
    sqlite_general_on: Feed::On, false, sqlite_with;
    sqlite_general_off: Feed::Off, false, sqlite_with;
    postgres_on: Feed::On, true, postgres_with;
    postgres_off: Feed::Off, true, postgres_with;
    mysql_on: Feed::On, true, mysql_with;
    mysql_off: Feed::Off, true, mysql_with;
}

fn feed_event(order: &str, seq: i64, status: &str) -> FeedEvent {
    let state = ordermq_domain::feed::OrderState {
        order_id: order.into(),
        user_id: "u1".into(),
        status: status.into(),
        amount: 100,
        payment_id: None,
        created_at: 1,
        updated_at: seq,
        lines: vec![ordermq_domain::feed::FeedLine {
            sku: "A".into(),
            quantity: 1,
            unit_price: 100,
            refunded: 0,
        }],
    };
    let change = [FeedChange::Created, FeedChange::Paid, FeedChange::Shipped][seq as usize - 1];
    FeedEvent::new(change, seq, state, seq)
}

/// An event that overtook its predecessor is parked for its order alone;
/// the other orders are applied; the predecessor applies both; a
/// redelivery is skipped.
async fn the_sink_parks_per_order_and_applies_when_the_gap_fills(sink: ordermq_store::FeedSink) {
    let a3 = feed_event("A", 3, "SHIPPED");
    let report = sink
        .apply(
            &[
                feed_event("A", 1, "UNPAID"),
                a3.clone(),
                feed_event("B", 1, "UNPAID"),
            ],
            10,
        )
        .await
        .unwrap();
    assert_eq!((report.applied, report.parked), (2, 1));
    let parked = sink.parked(10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!((parked[0].order_seq, parked[0].waiting_for), (3, 2));
    // B goes on while A waits.
    let report = sink.apply(&[feed_event("B", 2, "PAID")], 11).await.unwrap();
    assert_eq!(report.applied, 1);
    // A's second arrives: it and the parked third apply.
    let report = sink
        .apply(
            &[feed_event("A", 2, "PAID"), feed_event("A", 2, "PAID")],
            12,
        )
        .await
        .unwrap();
    assert_eq!(
        (report.applied, report.unparked, report.duplicates),
        (1, 1, 1)
    );
    assert!(sink.parked(10).await.unwrap().is_empty());
    assert_eq!(sink.apply(&[a3], 13).await.unwrap().duplicates, 1);
    let states = sink.states("", 10).await.unwrap();
    let seqs: Vec<(String, String, i64)> = states
        .into_iter()
        .map(|(s, seq)| (s.order_id, s.status, seq))
        .collect();
    assert_eq!(
        seqs,
        vec![
            ("A".into(), "SHIPPED".into(), 3),
            ("B".into(), "PAID".into(), 2)
        ]
    );
    assert!(sink.gaps().await.unwrap().is_empty());
    // A hole in the history is reported.
    sink.execute("DELETE FROM order_events WHERE event_id = 'OrderChanged:A:2'")
        .await
        .unwrap();
    let gaps = sink.gaps().await.unwrap();
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].order_id, "A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sink_parks_per_order_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    the_sink_parks_per_order_and_applies_when_the_gap_fills(sqlite_sink(&dir).await).await;
}

/// Whatever the order of arrival, the duplicates and the batches, the
/// sink ends with every order at its last event, its whole history, nothing
/// parked, and each event applied exactly once (as it came or unparked).
async fn any_arrival_order_and_batching_ends_in_the_same_sink(sink: ordermq_store::FeedSink) {
    let mut rng = fastrand::Rng::with_seed(7400);
    for round in 0..5 {
        let orders: Vec<String> = (0..40).map(|i| format!("R{round}-{i:02}")).collect();
        let mut events = Vec::new();
        for order in &orders {
            for (seq, status) in [(1, "UNPAID"), (2, "PAID"), (3, "SHIPPED")] {
                events.push(feed_event(order, seq, status));
                if rng.u8(..10) < 3 {
                    events.push(feed_event(order, seq, status));
                }
            }
        }
        rng.shuffle(&mut events);
        let (mut applied, mut batches) = (0, 0);
        let mut rest = events.as_slice();
        while !rest.is_empty() {
            let n = rng.usize(1..=20).min(rest.len());
            let report = sink.apply(&rest[..n], 100 + batches).await.unwrap();
            applied += report.applied + report.unparked;
            rest = &rest[n..];
            batches += 1;
        }
        assert_eq!(
            applied,
            3 * orders.len() as u64,
            "round {round}: each event applied once"
        );
        assert!(
            sink.parked(10).await.unwrap().is_empty(),
            "round {round}: nothing parked"
        );
        assert!(
            sink.gaps().await.unwrap().is_empty(),
            "round {round}: no gaps"
        );
        let after = format!("R{round}-");
        let states = sink.states(&after, 100).await.unwrap();
        let mine: Vec<_> = states
            .iter()
            .filter(|(s, _)| s.order_id.starts_with(&after))
            .collect();
        assert_eq!(mine.len(), orders.len());
        for (state, seq) in mine {
            assert_eq!(
                (state.status.as_str(), *seq),
                ("SHIPPED", 3),
                "{}",
                state.order_id
            );
        }
    }
}

/// A batch that read its time before an earlier-applied one (it waited
/// longer for the connection) is stamped no earlier than that one: an
/// order's events never look applied out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn applied_at_follows_the_order_of_application() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sqlite_sink(&dir).await;
    sink.apply(&[feed_event("S", 1, "UNPAID")], 200)
        .await
        .unwrap();
    // Its time was read before the first batch's, as a lane that waited would.
    sink.apply(&[feed_event("S", 2, "PAID")], 100)
        .await
        .unwrap();
    assert_eq!(
        sink.reorderings().await.unwrap(),
        Vec::<(String, i64)>::new()
    );
    assert_eq!(sink.history().await.unwrap(), (2, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_arrival_order_and_batching_ends_in_the_same_sink_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    any_arrival_order_and_batching_ends_in_the_same_sink(sqlite_sink(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_arrival_order_and_batching_ends_in_the_same_sink_on_postgres() {
    if let Some(sink) = postgres_sink().await {
        any_arrival_order_and_batching_ends_in_the_same_sink(sink).await;
    }
}

/// A fresh, empty database of the test server (the analytics database is
/// never the order database); `None` outside CI without PostgreSQL.
async fn postgres_sink() -> Option<ordermq_store::FeedSink> {
    let url = super::helpers::fresh_postgres_database().await?;
    Some(ordermq_store::FeedSink::open(&url).await.unwrap())
}

async fn sqlite_sink(dir: &tempfile::TempDir) -> ordermq_store::FeedSink {
    let url = format!("sqlite://{}/analytics.db", dir.path().display());
    ordermq_store::FeedSink::open(&url).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sink_parks_per_order_on_postgres() {
    if let Some(sink) = postgres_sink().await {
        the_sink_parks_per_order_and_applies_when_the_gap_fills(sink).await;
    }
}

fn snapshot(order: &str, seq: i64, status: &str) -> FeedEvent {
    let live = feed_event(order, seq.min(3), status);
    let mut state = live.data.order;
    state.updated_at = seq;
    FeedEvent::snapshot(state, seq, 100 + seq)
}

/// A snapshot applies over an older state (and releases what was parked
/// behind the changes it covers), is skipped over a newer or equal one,
/// and leaves no false gap; a real hole after it is still one, and so is
/// an event applied before its predecessor.
async fn snapshots_apply_over_older_states_only(sink: ordermq_store::FeedSink) {
    // A has its first change, and its fourth waits for the second.
    sink.apply(&[feed_event("A", 1, "UNPAID")], 10)
        .await
        .unwrap();
    let mut a4 = feed_event("A", 3, "SHIPPED");
    a4.data.order_seq = 4;
    a4.orderseq = 4;
    a4.id = FeedEvent::id_of("A", 4);
    assert_eq!(sink.apply(&[a4.clone()], 11).await.unwrap().parked, 1);
    // The snapshot at 3 jumps over 2 and lets 4 through.
    let report = sink
        .apply(&[snapshot("A", 3, "PAID"), snapshot("B", 2, "PAID")], 12)
        .await
        .unwrap();
    assert_eq!((report.applied, report.unparked), (2, 1));
    assert!(sink.parked(10).await.unwrap().is_empty());
    // Late live events it covers, and a stale snapshot, change nothing.
    let report = sink
        .apply(
            &[
                feed_event("A", 2, "PAID"),
                feed_event("A", 3, "PAID"),
                snapshot("A", 2, "PAID"),
                snapshot("A", 4, "UNPAID"),
                feed_event("B", 1, "UNPAID"),
            ],
            13,
        )
        .await
        .unwrap();
    assert_eq!((report.applied, report.duplicates), (0, 5));
    // B goes on live after its snapshot.
    assert_eq!(
        sink.apply(&[feed_event("B", 3, "SHIPPED")], 14)
            .await
            .unwrap()
            .applied,
        1
    );
    let states: Vec<(String, String, i64)> = sink
        .states("", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, seq)| (s.order_id, s.status, seq))
        .collect();
    assert_eq!(
        states,
        vec![
            ("A".into(), "SHIPPED".into(), 4),
            ("B".into(), "SHIPPED".into(), 3)
        ]
    );
    assert_eq!(sink.gaps().await.unwrap(), vec![], "no false gap");
    assert!(sink.reorderings().await.unwrap().is_empty());
    // An event applied before its predecessor is a reordering.
    sink.execute("UPDATE order_events SET applied_at = 99 WHERE event_id = 'OrderSnapshot:A:3'")
        .await
        .unwrap();
    assert_eq!(sink.reorderings().await.unwrap(), vec![("A".to_owned(), 4)]);
    // A hole after the snapshot is a gap.
    sink.execute("DELETE FROM order_events WHERE event_id = 'OrderSnapshot:B:2'")
        .await
        .unwrap();
    let gaps = sink.gaps().await.unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].order_id, "B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_apply_over_older_states_only_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    snapshots_apply_over_older_states_only(sqlite_sink(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_apply_over_older_states_only_on_postgres() {
    if let Some(sink) = postgres_sink().await {
        snapshots_apply_over_older_states_only(sink).await;
    }
}
