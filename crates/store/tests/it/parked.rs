//! Parked messages (events that failed verification): recorded once per
//! group and message id whatever the sender put in them, listed per group
//! oldest first, counted for every group of the topology.

use ordermq_domain::CONSUMER_GROUPS;
use ordermq_domain::parked::{MAX_PARKED_BODY, ParkedMessage};
use ordermq_store::Store;

use crate::helpers::*;

fn parked(group: &str, msg_id: &str, at: i64) -> ParkedMessage {
    ParkedMessage {
        group: group.to_owned(),
        msg_id: msg_id.to_owned(),
        topic: "TopicOrderPaySuccess".to_owned(),
        tag: "OrderPaid".to_owned(),
        key: "O1".to_owned(),
        event_id: Some("OrderPaid:O1".to_owned()),
        key_id: None,
        reason: "UNSIGNED".to_owned(),
        detail: "the message carries no signature".to_owned(),
        body: "{}".to_owned(),
        parked_at: at,
    }
}

async fn a_message_is_parked_once_per_group_and_listed_oldest_first(store: Store) {
    let credit = CONSUMER_GROUPS[0].name;
    let push = CONSUMER_GROUPS[2].name;
    assert!(store.park(&parked(credit, "m2", 20)).await.unwrap());
    assert!(store.park(&parked(credit, "m1", 10)).await.unwrap());
    // Redelivered: the same group and message id again changes nothing.
    let mut again = parked(credit, "m1", 30);
    again.detail = "a second look".to_owned();
    assert!(!store.park(&again).await.unwrap());
    // Another group parks its own copy.
    assert!(store.park(&parked(push, "m1", 15)).await.unwrap());

    let of_credit = store.parked(Some(credit)).await.unwrap();
    let ids: Vec<_> = of_credit
        .iter()
        .map(|m| (m.msg_id.as_str(), m.parked_at))
        .collect();
    assert_eq!(ids, [("m1", 10), ("m2", 20)]);
    assert_eq!(of_credit[0], parked(credit, "m1", 10));
    assert_eq!(store.parked(None).await.unwrap().len(), 3);

    let counts = store.parked_counts().await.unwrap();
    assert_eq!(counts.len(), CONSUMER_GROUPS.len(), "{counts:?}");
    assert_eq!(counts[credit], 2);
    assert_eq!(counts[push], 1);
    assert_eq!(counts.values().sum::<i64>(), 3);
}
on_every_backend!(
    parked_once_per_group_oldest_first,
    a_message_is_parked_once_per_group_and_listed_oldest_first
);

async fn whatever_the_sender_wrote_fits_its_column(store: Store) {
    let group = CONSUMER_GROUPS[1].name;
    let mut m = parked(group, &"i".repeat(300), 1);
    m.topic = "t".repeat(300);
    m.tag = "g".repeat(100);
    m.key = "k".repeat(300);
    m.event_id = Some("e".repeat(400));
    m.key_id = Some("é".repeat(100));
    m.reason = "r".repeat(50);
    m.detail = "d".repeat(5_000);
    // Multi-byte characters: cut on a character boundary.
    m.body = "订单".repeat(MAX_PARKED_BODY);
    assert!(store.park(&m).await.unwrap());
    let stored = store.parked(Some(group)).await.unwrap().remove(0);
    assert_eq!(stored.msg_id.len(), 128);
    assert_eq!(stored.topic.len(), 128);
    assert_eq!(stored.tag.len(), 64);
    assert_eq!(stored.key.len(), 128);
    assert_eq!(stored.event_id.as_deref().map(str::len), Some(160));
    assert_eq!(
        stored.key_id.as_deref().map(|k| k.chars().count()),
        Some(32)
    );
    assert_eq!(stored.reason.len(), 32);
    assert_eq!(stored.detail.len(), 1_000);
    assert!(stored.body.len() <= MAX_PARKED_BODY && stored.body.len() > MAX_PARKED_BODY - 3);
    assert!(stored.body.starts_with("订单"));
}
on_every_backend!(
    parked_fields_fit_their_columns,
    whatever_the_sender_wrote_fits_its_column
);
