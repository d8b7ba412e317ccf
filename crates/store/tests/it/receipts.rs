//! Receipts and the reconciler's reads and writes: a group's receipt is
//! written per batch with its effects (the SQLite lane, the general path,
//! PostgreSQL, MySQL) and again when an event comes back; the order database records
//! each (event, group) once; unsettled sent rows are read oldest first,
//! settled or put back.

use ordermq_domain::reconcile::Receipt as ReceiptMessage;
use ordermq_domain::{Effect, OrderId, System, UserId};
use ordermq_store::{Applied, EffectRecord, Receipt, Store, StoreOptions};

use crate::helpers::*;

async fn paid_order(store: &Store, n: u32) -> OrderId {
    let id = order_id(n);
    store
        .create_order(&new_order("u1", &[("A", 1)]), &id, 1, None)
        .await
        .unwrap();
    store
        .pay_order(&notice(&id, &format!("p{n}"), 100), 2)
        .await
        .unwrap();
    id
}

fn points(id: &OrderId) -> EffectRecord {
    EffectRecord {
        event_id: format!("OrderPaid:{id}"),
        msg_id: "m1".to_owned(),
        effect: Effect::Points {
            user_id: UserId::parse("u1").unwrap(),
            order_id: id.clone(),
            points: 1,
        },
    }
}

fn receipt_of(row: &ordermq_domain::OutboxMessage) -> ReceiptMessage {
    ReceiptMessage::from_json(row.body.as_bytes()).unwrap()
}

async fn receipts_go_out_with_their_effects(store: Store) {
    seed(&store, "A", 100, 5).await;
    let id = paid_order(&store, 1).await;
    let other = paid_order(&store, 2).await;
    let record = points(&id);
    // One batch of two events: one receipt naming both.
    assert_eq!(
        store
            .apply_effects(&[record.clone(), points(&other)], 10)
            .await
            .unwrap(),
        [Applied::Now, Applied::Now]
    );
    let claimed = store
        .relay_receipts(System::Credit, "r", &[], 10, 1_000, 11)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let receipt = &claimed[0];
    assert_eq!(receipt.topic, "TopicOrderReceipt");
    assert_eq!(receipt.tag, "EffectsApplied");
    assert_eq!(receipt.key, "credit_group");
    assert!(
        receipt
            .event_id
            .starts_with("EffectsApplied:credit_group:10:"),
        "{}",
        receipt.event_id
    );
    assert_eq!(
        receipt_of(receipt),
        ReceiptMessage {
            consumer_group: "credit_group".to_owned(),
            event_ids: vec![record.event_id.clone(), format!("OrderPaid:{other}")],
            applied_at: 10,
            // Credit books no shipment.
            shipments: Default::default(),
        }
    );
    // Another system's outbox has nothing of it.
    assert!(
        store
            .relay_receipts(System::Marketing, "r", &[], 10, 1_000, 11)
            .await
            .unwrap()
            .is_empty()
    );
    // Acknowledged: sent, nothing more to claim.
    assert!(
        store
            .relay_receipts(System::Credit, "r", &[receipt.id], 10, 1_000, 12)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.receipt_backlog(System::Credit).await.unwrap(), 0);
    // The event comes back (the reconciler published it again): nothing is
    // applied twice, and a new receipt names it again.
    assert_eq!(
        store
            .apply_effects(std::slice::from_ref(&record), 20)
            .await
            .unwrap(),
        [Applied::Already]
    );
    let again = store
        .relay_receipts(System::Credit, "r", &[], 10, 1_000, 21)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].id, receipt.id);
    assert_ne!(again[0].event_id, receipt.event_id);
    assert_eq!(receipt_of(&again[0]).event_ids, [record.event_id]);
}
on_every_backend!(receipts_with_effects, receipts_go_out_with_their_effects);

/// Several receipts acknowledged at once are all marked sent, by the
/// relay's round and by `mark_sent_of`, and only those.
async fn several_acknowledged_receipts_are_all_marked_sent(store: Store) {
    seed(&store, "A", 100, 5).await;
    for n in 1..=3 {
        let id = paid_order(&store, n).await;
        // A batch each: a receipt each.
        store.apply_effects(&[points(&id)], 10).await.unwrap();
    }
    let claimed = store
        .relay_receipts(System::Credit, "r", &[], 10, 1_000, 11)
        .await
        .unwrap();
    let ids: Vec<i64> = claimed.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 3, "{claimed:?}");
    assert_eq!(store.receipt_backlog(System::Credit).await.unwrap(), 3);
    store
        .relay_receipts(System::Credit, "r", &ids[..2], 10, 1_000, 12)
        .await
        .unwrap();
    assert_eq!(
        store.receipt_backlog(System::Credit).await.unwrap(),
        1,
        "the two acknowledged are sent, the third is not"
    );
    store
        .mark_sent_of(
            ordermq_store::Outbox::Receipts(System::Credit),
            &ids[2..],
            13,
        )
        .await
        .unwrap();
    assert_eq!(store.receipt_backlog(System::Credit).await.unwrap(), 0);
}
on_every_backend!(
    receipts_marked_together,
    several_acknowledged_receipts_are_all_marked_sent
);

/// The general path on SQLite (the lane off) writes the same receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipts_go_out_with_their_effects_on_sqlites_general_path() {
    let db = sqlite_with(&StoreOptions {
        lanes: false,
        ..fanout_only()
    })
    .await;
    receipts_go_out_with_their_effects(db.store).await;
}

async fn a_receipt_is_recorded_once(store: Store) {
    let receipt = Receipt {
        event_id: "OrderPaid:O1".to_owned(),
        consumer_group: "push_group".to_owned(),
        applied_at: 5,
    };
    assert_eq!(
        store
            .record_receipts(std::slice::from_ref(&receipt), 6)
            .await
            .unwrap(),
        1
    );
    // Delivered again, or sent twice: nothing changes.
    let mut twice = receipt.clone();
    twice.applied_at = 9;
    assert_eq!(
        store
            .record_receipts(&[receipt.clone(), twice], 7)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .receipts_of(&["OrderPaid:O1".to_owned(), "OrderPaid:O2".to_owned()])
            .await
            .unwrap(),
        [receipt]
    );
}
on_every_backend!(receipt_once, a_receipt_is_recorded_once);

async fn unsettled_rows_are_read_oldest_first_settled_or_put_back(store: Store) {
    seed(&store, "A", 100, 5).await;
    let first = paid_order(&store, 1).await;
    let second = paid_order(&store, 2).await;
    let claimed = store.claim_outbox("r", 10, 1_000, 3).await.unwrap();
    let ids: Vec<i64> = claimed.iter().map(|m| m.id).collect();
    store.mark_sent(&ids, 10).await.unwrap();
    // Not yet old enough.
    assert!(
        store
            .unsettled_outbox(9, (i64::MIN, 0), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let paid = |rows: &[ordermq_store::SentRow]| -> Vec<String> {
        rows.iter()
            .filter(|r| r.tag == "OrderPaid")
            .map(|r| r.key.clone())
            .collect()
    };
    let rows = store
        .unsettled_outbox(10, (i64::MIN, 0), 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(paid(&rows), [first.to_string(), second.to_string()]);
    // Keyset paging: after the first row, the rest.
    let page = store
        .unsettled_outbox(10, (rows[0].sent_at, rows[0].id), 100)
        .await
        .unwrap();
    assert_eq!(page, rows[1..]);
    assert_eq!(store.unsettled(10).await.unwrap().rows, 2);
    assert_eq!(store.unsettled(10).await.unwrap().oldest_sent_at, Some(10));

    let of = |key: &OrderId| {
        rows.iter()
            .find(|r| r.tag == "OrderPaid" && r.key == key.as_str())
            .unwrap()
            .id
    };
    let settle: Vec<i64> = rows
        .iter()
        .filter(|r| r.id != of(&second))
        .map(|r| r.id)
        .collect();
    assert_eq!(
        store
            .reconcile_rows(&settle, &[of(&second)], 50)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.unsettled(100).await.unwrap().rows, 0);
    // Put back: the relay claims it again, from attempt one.
    let again = store.claim_outbox("r", 10, 1_000, 51).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, of(&second));
    assert_eq!(again[0].attempts, 1);
    store.mark_sent(&[again[0].id], 60).await.unwrap();
    let rows = store
        .unsettled_outbox(60, (i64::MIN, 0), 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].republished, 1);
    assert_eq!(rows[0].sent_at, 60);
    assert_eq!(store.missing_outbox(1, 10).await.unwrap(), rows);
    assert!(store.missing_outbox(2, 10).await.unwrap().is_empty());
    // A settled row is never put back.
    assert_eq!(
        store.reconcile_rows(&[], &[of(&first)], 70).await.unwrap(),
        0
    );
}
on_every_backend!(
    unsettled_rows,
    unsettled_rows_are_read_oldest_first_settled_or_put_back
);
