//! Flash sales in the order database: a sale's units leave its product's
//! stock, leases never hand out more than the sale has (a dead owner's
//! lease comes back), an admitted attempt is written with its message and
//! its units taken from its owner's lease, and every unit of an attempt
//! that ends without a paid order goes back to the sale.

use ordermq_domain::event::FlashAttemptQueued;
use ordermq_domain::{
    AttemptId, AttemptState, CreateSaleError, NewSale, OrderId, OrderStatus, RejectReason, SaleId,
    SaleStatus, Sku, TOPIC_FLASH_SALE_ATTEMPT, UserId,
};
use ordermq_store::{
    Admitted, AttemptWrite, CloseOutcome, Leased, SaleCounts, Store, WriteOp, WriteResult,
};

use crate::helpers::*;

const SKU: &str = "FLASH-1";
const NOW: i64 = 1_700_000_000_000;

async fn stock(store: &Store) -> i64 {
    let products = store.products().await.unwrap();
    products
        .iter()
        .find(|p| p.sku.as_str() == SKU)
        .map(|p| p.stock)
        .unwrap()
}

async fn sale(store: &Store, units: i64) -> SaleId {
    let sale_id = SaleId::generate(NOW, 1u64);
    let new = NewSale::new(Sku::parse(SKU).unwrap(), units, NOW, NOW + 60_000, 2).unwrap();
    store.create_sale(&new, &sale_id, NOW).await.unwrap();
    sale_id
}

fn queued(sale: &SaleId, user: &str, n: u32) -> FlashAttemptQueued {
    FlashAttemptQueued {
        attempt_id: AttemptId::generate(NOW, u64::from(n)),
        sale_id: sale.clone(),
        user_id: UserId::parse(user).unwrap(),
        sku: Sku::parse(SKU).unwrap(),
        quantity: 1,
        order_id: OrderId::generate(NOW, u64::from(n)),
        queued_at: NOW,
    }
}

async fn admit(store: &Store, event: &FlashAttemptQueued, owner: &str) -> Admitted {
    let op = WriteOp::Attempt(AttemptWrite {
        event: event.clone(),
        owner: owner.to_owned(),
        lease_ttl_ms: 30_000,
    });
    match store.write_batch(&[op], NOW).await.pop() {
        Some(WriteResult::Attempted(result)) => result.unwrap(),
        other => panic!("{other:?}"),
    }
}

async fn end(store: &Store, op: WriteOp, now: i64) -> AttemptState {
    match store.write_batch(&[op], now).await.pop() {
        Some(WriteResult::SaleOrder(result)) => result.unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Every unit is somewhere: not allocated, in a lease, or held by an attempt.
fn assert_accounted(counts: SaleCounts) {
    assert_eq!(
        counts.unallocated + counts.leased + counts.held,
        counts.units,
        "{counts:?}"
    );
}

async fn a_sale_takes_its_units_out_of_stock_or_nothing(store: Store) {
    seed(&store, SKU, 100, 10).await;
    let too_many = NewSale::new(Sku::parse(SKU).unwrap(), 11, NOW, NOW + 1, 1).unwrap();
    let refused = store
        .create_sale(&too_many, &SaleId::generate(NOW, 9u64), NOW)
        .await;
    assert!(
        matches!(
            refused,
            Err(CreateSaleError::OutOfStock {
                available: 10,
                requested: 11
            })
        ),
        "{refused:?}"
    );
    let unknown = NewSale::new(Sku::parse("NOPE").unwrap(), 1, NOW, NOW + 1, 1).unwrap();
    assert!(matches!(
        store
            .create_sale(&unknown, &SaleId::generate(NOW, 8u64), NOW)
            .await,
        Err(CreateSaleError::UnknownSku(_))
    ));
    assert_eq!(stock(&store).await, 10, "a refused sale takes nothing");
    let sale_id = sale(&store, 4).await;
    assert_eq!(stock(&store).await, 6);
    let stored = store.sale(&sale_id).await.unwrap().unwrap();
    assert_eq!((stored.units, stored.per_user_limit), (4, 2));
    let counts = store.sale_counts(&sale_id).await.unwrap();
    assert_eq!((counts.units, counts.unallocated), (4, 4));
}
on_every_backend!(
    sale_takes_units_out_of_stock,
    a_sale_takes_its_units_out_of_stock_or_nothing
);

async fn leases_never_exceed_the_sale_and_a_dead_owners_comes_back(store: Store) {
    seed(&store, SKU, 100, 10).await;
    let sale_id = sale(&store, 10).await;
    let lease = |owner: &'static str, ttl: i64, now: i64| {
        let (store, sale_id) = (store.clone(), sale_id.clone());
        async move {
            store
                .lease_units(&sale_id, owner, 4, 1, ttl, now)
                .await
                .unwrap()
                .holds
        }
    };
    assert_eq!(lease("a", 10_000, NOW).await, 4);
    assert_eq!(lease("b", 1_000, NOW).await, 4);
    // Only 2 left: a lease takes what there is, and "a" holds 4 + 2.
    assert_eq!(lease("a", 10_000, NOW).await, 6);
    assert_eq!(lease("c", 1_000, NOW).await, 0);
    assert_accounted(store.sale_counts(&sale_id).await.unwrap());
    // "b" died: after its lease expired, the next lease returns its units
    // ("a"'s lease, still live, stays).
    let later = NOW + 1_001;
    assert_eq!(lease("c", 1_000, later).await, 4);
    let counts = store.sale_counts(&sale_id).await.unwrap();
    assert_eq!((counts.leased, counts.unallocated), (10, 0), "{counts:?}");
    assert_accounted(counts);
    // Nothing left to lease: a lease answers what the owner already holds
    // (a restarted owner's budget, read from the database).
    assert_eq!(lease("a", 10_000, later).await, 6);
}
on_every_backend!(
    leases_never_exceed_the_sale,
    leases_never_exceed_the_sale_and_a_dead_owners_comes_back
);

async fn an_admitted_attempt_is_written_with_its_message_from_its_lease(store: Store) {
    seed(&store, SKU, 100, 10).await;
    let sale_id = sale(&store, 3).await;
    // No lease yet: nothing is written.
    let first = queued(&sale_id, "u1", 1);
    assert_eq!(admit(&store, &first, "a").await, Admitted::LeaseLost);
    assert!(store.attempt(&first.attempt_id).await.unwrap().is_none());
    assert_eq!(
        store
            .lease_units(&sale_id, "a", 2, 1, 30_000, NOW)
            .await
            .unwrap(),
        Leased {
            holds: 2,
            granted: 2
        }
    );
    assert_eq!(admit(&store, &first, "a").await, Admitted::Queued);
    let again = queued(&sale_id, "u1", 2);
    assert_eq!(admit(&store, &again, "a").await, Admitted::AlreadyAttempted);
    assert_eq!(
        admit(&store, &queued(&sale_id, "u2", 3), "a").await,
        Admitted::Queued
    );
    // The lease is spent: the third user's attempt needs a new lease.
    assert_eq!(
        admit(&store, &queued(&sale_id, "u3", 4), "a").await,
        Admitted::LeaseLost
    );
    let stored = store.attempt(&first.attempt_id).await.unwrap().unwrap();
    assert_eq!(stored.state, AttemptState::Queued);
    let counts = store.sale_counts(&sale_id).await.unwrap();
    assert_eq!(
        (counts.queued, counts.held, counts.leased),
        (2, 2, 0),
        "{counts:?}"
    );
    assert_accounted(counts);
    // Each admitted attempt has its message, keyed by the attempt's id.
    let messages = store.claim_outbox("t", 100, 60_000, NOW).await.unwrap();
    let attempts: Vec<_> = messages
        .iter()
        .filter(|m| m.topic == TOPIC_FLASH_SALE_ATTEMPT)
        .collect();
    assert_eq!(attempts.len(), 2, "{messages:?}");
    assert_eq!(attempts[0].key, first.attempt_id.as_str());
}
on_every_backend!(
    admitted_attempt_written_with_message,
    an_admitted_attempt_is_written_with_its_message_from_its_lease
);

/// Admissions that share a batch (a crowd's winners) are decided as they
/// would be alone: a user's second attempt in the same batch or after an
/// earlier one is refused, and when the lease holds fewer units than the
/// batch's winners the first ones take them and the rest find it spent.
async fn admissions_sharing_a_batch_are_decided_as_alone(store: Store) {
    seed(&store, SKU, 100, 10).await;
    let sale_id = sale(&store, 5).await;
    store
        .lease_units(&sale_id, "a", 4, 1, 30_000, NOW)
        .await
        .unwrap();
    assert_eq!(
        admit(&store, &queued(&sale_id, "u0", 1), "a").await,
        Admitted::Queued
    );
    let batch = |events: &[FlashAttemptQueued]| {
        let ops: Vec<WriteOp> = events
            .iter()
            .map(|event| {
                WriteOp::Attempt(AttemptWrite {
                    event: event.clone(),
                    owner: "a".to_owned(),
                    lease_ttl_ms: 30_000,
                })
            })
            .collect();
        let store = store.clone();
        async move {
            store
                .write_batch(&ops, NOW)
                .await
                .into_iter()
                .map(|r| match r {
                    WriteResult::Attempted(result) => result.unwrap(),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        }
    };
    let first = [
        queued(&sale_id, "u1", 2),
        queued(&sale_id, "u1", 3),
        queued(&sale_id, "u0", 4),
        queued(&sale_id, "u2", 5),
    ];
    assert_eq!(
        batch(&first).await,
        [
            Admitted::Queued,
            Admitted::AlreadyAttempted,
            Admitted::AlreadyAttempted,
            Admitted::Queued
        ]
    );
    for (event, written) in first.iter().zip([true, false, false, true]) {
        let stored = store.attempt(&event.attempt_id).await.unwrap();
        assert_eq!(stored.is_some(), written, "{}", event.attempt_id);
    }
    // One unit left in the lease for two winners.
    let second = [queued(&sale_id, "u3", 6), queued(&sale_id, "u4", 7)];
    assert_eq!(
        batch(&second).await,
        [Admitted::Queued, Admitted::LeaseLost]
    );
    assert!(
        store
            .attempt(&second[1].attempt_id)
            .await
            .unwrap()
            .is_none()
    );
    let counts = store.sale_counts(&sale_id).await.unwrap();
    assert_eq!(
        (
            counts.queued,
            counts.held,
            counts.leased,
            counts.unallocated
        ),
        (4, 4, 0, 1),
        "{counts:?}"
    );
    assert_accounted(counts);
    // A message for each admitted attempt, none for the others.
    let messages = store.claim_outbox("t", 100, 60_000, NOW).await.unwrap();
    let mut keys: Vec<_> = messages
        .iter()
        .filter(|m| m.topic == TOPIC_FLASH_SALE_ATTEMPT)
        .map(|m| m.key.clone())
        .collect();
    keys.sort();
    let mut expected: Vec<_> = [1u32, 2, 5, 6]
        .iter()
        .map(|&n| AttemptId::generate(NOW, u64::from(n)).as_str().to_owned())
        .collect();
    expected.sort();
    assert_eq!(keys, expected);
}
on_every_backend!(
    admissions_sharing_a_batch,
    admissions_sharing_a_batch_are_decided_as_alone
);

async fn units_of_attempts_without_a_paid_order_go_back_to_the_sale(store: Store) {
    seed(&store, SKU, 100, 10).await;
    let sale_id = sale(&store, 2).await;
    store
        .lease_units(&sale_id, "a", 2, 1, 30_000, NOW)
        .await
        .unwrap();
    let (made, turned_away) = (queued(&sale_id, "u1", 1), queued(&sale_id, "u2", 2));
    admit(&store, &made, "a").await;
    admit(&store, &turned_away, "a").await;
    assert_eq!(stock(&store).await, 8);

    let create = || WriteOp::CreateSaleOrder {
        event: made.clone(),
        close_after_ms: 1_000,
    };
    let created = AttemptState::Created {
        order_id: made.order_id.clone(),
    };
    assert_eq!(end(&store, create(), NOW).await, created);
    // Redelivered: the same order, nothing more.
    assert_eq!(end(&store, create(), NOW).await, created);
    let order = store.order(&made.order_id).await.unwrap().unwrap();
    assert_eq!(
        (order.status, order.amount.minor_units()),
        (OrderStatus::Unpaid, 100)
    );
    // The order reserved its unit from stock the sale had put back: the
    // product's available stock is unchanged.
    assert_eq!(stock(&store).await, 8);

    let reject = WriteOp::RejectAttempt {
        sale_id: sale_id.clone(),
        attempt_id: turned_away.attempt_id.clone(),
        reason: RejectReason::QueueTimeout,
    };
    let rejected = AttemptState::Rejected {
        reason: RejectReason::QueueTimeout,
    };
    assert_eq!(end(&store, reject.clone(), NOW).await, rejected);
    assert_eq!(
        end(&store, reject, NOW).await,
        rejected,
        "a rejection is final"
    );
    // A created attempt is not rejected by a late message.
    let late = WriteOp::RejectAttempt {
        sale_id: sale_id.clone(),
        attempt_id: made.attempt_id.clone(),
        reason: RejectReason::QueueTimeout,
    };
    assert_eq!(end(&store, late, NOW).await, created);
    let counts = store.sale_counts(&sale_id).await.unwrap();
    assert_eq!(
        (counts.unallocated, counts.held, counts.rejected),
        (1, 1, 1),
        "{counts:?}"
    );

    // The order closes unpaid: its unit goes back to the sale, not to the product.
    let closed = store
        .write_batch(&[WriteOp::Close(made.order_id.clone())], NOW + 1_000)
        .await
        .pop();
    assert!(
        matches!(closed, Some(WriteResult::Closed(Ok(CloseOutcome::Closed)))),
        "{closed:?}"
    );
    assert_eq!(stock(&store).await, 8);
    let counts = store.sale_counts(&sale_id).await.unwrap();
    assert_eq!(
        (counts.unallocated, counts.held, counts.created),
        (2, 0, 1),
        "{counts:?}"
    );
    assert_accounted(counts);
}
on_every_backend!(
    units_go_back_to_the_sale,
    units_of_attempts_without_a_paid_order_go_back_to_the_sale
);

async fn concurrent_leases_of_many_owners_never_oversell(store: Store) {
    seed(&store, SKU, 100, 100).await;
    let sale_id = sale(&store, 37).await;
    let leases = (0..8).map(|owner| {
        let (store, sale_id) = (store.clone(), sale_id.clone());
        tokio::spawn(async move {
            let mut got = 0;
            for _ in 0..10 {
                let holds = store
                    .lease_units(&sale_id, &format!("o{owner}"), 3, 1, 30_000, NOW)
                    .await
                    .unwrap()
                    .holds;
                got = holds;
            }
            got
        })
    });
    let mut total = 0;
    for lease in leases {
        total += lease.await.unwrap();
    }
    assert_eq!(total, 37);
    let counts = store.sale_counts(&sale_id).await.unwrap();
    assert_eq!((counts.leased, counts.unallocated), (37, 0), "{counts:?}");
}
on_every_backend!(
    concurrent_leases_never_oversell,
    concurrent_leases_of_many_owners_never_oversell
);

async fn a_sales_progress_counts_units_left_outcomes_by_reason_and_the_rate(store: Store) {
    seed(&store, SKU, 100, 10).await;
    let sale_id = sale(&store, 4).await;
    store
        .lease_units(&sale_id, "a", 4, 1, 30_000, NOW)
        .await
        .unwrap();
    let (made, turned_away, too_late, waiting) = (
        queued(&sale_id, "u1", 1),
        queued(&sale_id, "u2", 2),
        queued(&sale_id, "u3", 3),
        queued(&sale_id, "u4", 4),
    );
    for attempt in [&made, &turned_away, &too_late, &waiting] {
        assert_eq!(admit(&store, attempt, "a").await, Admitted::Queued);
    }
    let create = WriteOp::CreateSaleOrder {
        event: made.clone(),
        close_after_ms: 60_000,
    };
    end(&store, create, NOW + 1_000).await;
    for (attempt, reason) in [
        (&turned_away, RejectReason::QueueTimeout),
        (&too_late, RejectReason::SaleEnded),
    ] {
        let reject = WriteOp::RejectAttempt {
            sale_id: sale_id.clone(),
            attempt_id: attempt.attempt_id.clone(),
            reason,
        };
        end(&store, reject, NOW + 1_000).await;
    }
    // A second sale, not started, without attempts: listed first (the
    // latest start), all its units left, nothing of the first one's.
    let later_id = SaleId::generate(NOW, 2u64);
    let later = NewSale::new(Sku::parse(SKU).unwrap(), 3, NOW + 5_000, NOW + 60_000, 1).unwrap();
    store.create_sale(&later, &later_id, NOW).await.unwrap();

    let listed = store.sales_progress(NOW + 2_000).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let scheduled = &listed[0];
    assert_eq!(scheduled.sale.sale_id, later_id, "{listed:?}");
    assert_eq!(
        (
            scheduled.status,
            scheduled.units_left,
            scheduled.queued,
            scheduled.created,
            scheduled.rejected,
            scheduled.rejected_by_reason.len(),
            scheduled.created_per_s
        ),
        (SaleStatus::Scheduled, 3, 0, 0, 0, 0, 0.0),
        "{scheduled:?}"
    );
    let progress = &listed[1];
    assert_eq!(progress.sale.sale_id, sale_id);
    assert_eq!((progress.sale.units, progress.sale.per_user_limit), (4, 2));
    assert_eq!(progress.status, SaleStatus::Running);
    // Four units: one sold, one held by the queued attempt, the rejected
    // ones' back.
    assert_eq!(
        (
            progress.units_left,
            progress.queued,
            progress.created,
            progress.rejected
        ),
        (2, 1, 1, 2),
        "{progress:?}"
    );
    assert_eq!(
        progress.rejected_by_reason,
        [
            ("QUEUE_TIMEOUT".to_owned(), 1),
            ("SALE_ENDED".to_owned(), 1)
        ]
        .into_iter()
        .collect()
    );
    // One order created in the last ten seconds.
    assert_eq!(progress.created_per_s, 0.1);
    assert_eq!(
        store
            .sale_progress(&sale_id, NOW + 2_000)
            .await
            .unwrap()
            .as_ref(),
        Some(progress)
    );
    // Later: the rate is back to 0 and the sale has ended; an hour after
    // its end it is no longer listed, but still read by its id.
    let ended = store
        .sale_progress(&sale_id, NOW + 61_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ended.status, ended.created_per_s),
        (SaleStatus::Ended, 0.0)
    );
    let much_later = NOW + 60_000 + ordermq_store::ENDED_SALES_LISTED_MS + 1;
    assert!(store.sales_progress(much_later).await.unwrap().is_empty());
    assert!(
        store
            .sale_progress(&sale_id, much_later)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .sale_progress(&SaleId::generate(NOW, 77u64), NOW)
            .await
            .unwrap()
            .is_none()
    );
}
on_every_backend!(
    sales_progress,
    a_sales_progress_counts_units_left_outcomes_by_reason_and_the_rate
);
