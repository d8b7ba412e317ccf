//! The per-user limits, counted inside the create's transaction: what a
//! user holds unpaid is capped, a refusal changes nothing, and concurrent
//! creates of one user cannot both take the last place.

use std::sync::Arc;

use ordermq_domain::{CreateOrderError, OrderStatus, UserLimits};
use ordermq_store::Store;

use crate::helpers::*;

/// Everything a refused create could have changed.
async fn snapshot(store: &Store) -> String {
    format!(
        "{:?}\n{:?}\n{:?}",
        store.audit_orders().await.unwrap(),
        store.audit_stock().await.unwrap(),
        store.outbox_backlog().await.unwrap(),
    )
}

async fn a_user_holds_at_most_the_limits_and_a_refusal_changes_nothing(store: Store) {
    seed(&store, "A", 100, 100).await;
    seed(&store, "B", 100, 100).await;
    let limits = UserLimits::new(3, 10);
    let create = |n: u32, user: &'static str, items: &'static [(&'static str, i64)]| {
        let store = store.clone();
        async move {
            store
                .create_order_limited(&new_order(user, items), &order_id(n), 1, None, limits)
                .await
        }
    };
    create(1, "u1", &[("A", 4)]).await.unwrap();
    create(2, "u1", &[("A", 4), ("B", 1)]).await.unwrap();
    let before = snapshot(&store).await;
    let over_units = create(3, "u1", &[("A", 3)]).await;
    assert!(
        matches!(
            &over_units,
            Err(CreateOrderError::SkuLimitExceeded { sku, limit: 10, held: 8, requested: 3 })
                if sku == "A"
        ),
        "{over_units:?}"
    );
    assert_eq!(
        snapshot(&store).await,
        before,
        "a refused create changes nothing"
    );
    create(3, "u1", &[("A", 2)]).await.unwrap();
    let before = snapshot(&store).await;
    let over_orders = create(4, "u1", &[("B", 1)]).await;
    assert!(
        matches!(
            over_orders,
            Err(CreateOrderError::TooManyUnpaidOrders { limit: 3 })
        ),
        "{over_orders:?}"
    );
    assert_eq!(
        snapshot(&store).await,
        before,
        "a refused create changes nothing"
    );
    // Another user has limits of its own.
    create(5, "u2", &[("A", 10)]).await.unwrap();
    // A paid order no longer counts, nor do its units.
    store
        .pay_order(&notice(&order_id(1), "p1", 400), 2)
        .await
        .unwrap();
    create(6, "u1", &[("A", 4)]).await.unwrap();
    // The paid order's 4 units are sold: still taken from what can be ordered.
    assert_eq!(store.stock("A").await.unwrap(), Some((100, 24)));
    // Without limits (tools that load data) nothing is counted.
    store
        .create_order(&new_order("u1", &[("A", 50)]), &order_id(7), 1, None)
        .await
        .unwrap();
}
on_every_backend!(
    user_limits,
    a_user_holds_at_most_the_limits_and_a_refusal_changes_nothing
);

/// A user at one below the limit sends several creates at once, each for
/// another SKU (so no product row makes them take turns): exactly one wins.
/// On PostgreSQL the user's advisory lock is what makes the second count
/// the first's order; on SQLite the write gate.
async fn concurrent_creates_at_the_limit_have_one_winner(store: Store) {
    const SKUS: [&str; 6] = ["C1", "C2", "C3", "C4", "C5", "C6"];
    for sku in SKUS {
        seed(&store, sku, 100, 1_000).await;
    }
    let limits = UserLimits::new(3, 0);
    let store = Arc::new(store);
    for round in 0..4u32 {
        let user: &'static str = ["r0", "r1", "r2", "r3"][round as usize];
        for n in 0..2 {
            store
                .create_order_limited(
                    &new_order(user, &[("C1", 1)]),
                    &order_id(round * 100 + n),
                    1,
                    None,
                    limits,
                )
                .await
                .unwrap();
        }
        let tasks: Vec<_> = SKUS
            .iter()
            .enumerate()
            .map(|(i, sku)| {
                let store = store.clone();
                let id = order_id(round * 100 + 10 + i as u32);
                tokio::spawn(async move {
                    store
                        .create_order_limited(&new_order(user, &[(sku, 1)]), &id, 1, None, limits)
                        .await
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(CreateOrderError::TooManyUnpaidOrders { limit: 3 }) => {}
                Err(other) => panic!("unexpected error {other}"),
            }
        }
        assert_eq!(won, 1, "round {round}: one create takes the last place");
    }
    let unpaid = store
        .order_ids_with_status(OrderStatus::Unpaid)
        .await
        .unwrap();
    assert_eq!(unpaid.len(), 4 * 3);
}
on_every_backend!(
    concurrent_limits,
    concurrent_creates_at_the_limit_have_one_winner
);
