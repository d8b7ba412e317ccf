//! The flash-sale scenario's rules are not blind: the facts of a sale that
//! went right hold, and each fault planted in them is reported.

use ordermq_chaos::checker::Verdict;
use ordermq_chaos::sale_check::{SaleFacts, judge};
use ordermq_store::SaleCounts;

/// A sale of 10 units that went right: 12 attempts answered `QUEUED`, 11
/// created an order (3 closed unpaid, their units back in the sale and
/// taken again, 8 paid), 1 rejected; the sweep was answered `SOLD_OUT`.
fn sound() -> SaleFacts {
    let mut acknowledged: Vec<(String, Option<String>)> = (0..11)
        .map(|i| (format!("A{i}"), Some("CREATED".to_owned())))
        .collect();
    acknowledged.push(("A11".to_owned(), Some("REJECTED".to_owned())));
    let mut orders: Vec<(String, String, i64)> = (0..8)
        .map(|i| (format!("O{i}"), "PAID".to_owned(), 1))
        .collect();
    orders.extend((8..11).map(|i| (format!("O{i}"), "CANCELLED".to_owned(), 1)));
    SaleFacts {
        sku: "FLASH-CHAOS".to_owned(),
        start_stock: 100,
        units: 10,
        counts: SaleCounts {
            units: 10,
            unallocated: 2,
            leased: 0,
            queued: 0,
            created: 11,
            rejected: 1,
            held: 8,
        },
        acknowledged,
        orders,
        // Each created order put its unit back on hand and reserved it; a
        // close released it and took it out again; the 8 paid keep theirs.
        stock: (98, 8),
        swept: true,
    }
}

fn judged(facts: &SaleFacts) -> Verdict {
    let mut verdict = Verdict::default();
    judge(facts, &mut verdict);
    verdict
}

/// Whether some violation of `verdict` contains `text`.
fn says(verdict: &Verdict, text: &str) -> bool {
    verdict.violations.iter().any(|v| v.contains(text))
}

#[test]
fn a_sound_sale_holds() {
    let verdict = judged(&sound());
    assert!(verdict.holds(), "{:?}", verdict.violations);
}

#[test]
fn an_acknowledged_attempt_missing_or_never_ended_is_lost() {
    let mut facts = sound();
    facts.acknowledged[0].1 = None;
    facts.acknowledged[1].1 = Some("QUEUED".to_owned());
    let verdict = judged(&facts);
    assert_eq!(verdict.lost, 2, "{:?}", verdict.violations);
    assert!(says(
        &verdict,
        "A0: answered QUEUED but not in the database"
    ));
    assert!(says(&verdict, "A1: answered QUEUED and never ended"));
}

#[test]
fn an_attempt_still_queued_in_the_database_is_reported() {
    let mut facts = sound();
    facts.counts.queued = 1;
    assert!(says(&judged(&facts), "1 attempts still QUEUED"));
}

#[test]
fn books_that_do_not_balance_are_reported() {
    let mut facts = sound();
    facts.counts.unallocated += 1;
    assert!(says(&judged(&facts), "books do not balance"));
}

#[test]
fn units_given_back_twice_are_reported() {
    // A close that returned its unit twice: one held unit fewer, one
    // unallocated more (the books still balance).
    let mut facts = sound();
    facts.counts.held -= 1;
    facts.counts.unallocated += 1;
    let verdict = judged(&facts);
    assert!(!says(&verdict, "books do not balance"));
    assert!(says(&verdict, "did not give its units back exactly once"));
}

#[test]
fn an_order_created_twice_is_doubled() {
    let mut facts = sound();
    facts
        .orders
        .push(("O0-again".to_owned(), "CANCELLED".to_owned(), 1));
    let verdict = judged(&facts);
    assert_eq!(verdict.doubled, 1, "{:?}", verdict.violations);
}

#[test]
fn a_created_attempt_without_its_order_is_lost() {
    let mut facts = sound();
    facts.orders.pop();
    let verdict = judged(&facts);
    assert_eq!(verdict.lost, 1, "{:?}", verdict.violations);
}

#[test]
fn more_units_in_open_orders_than_the_sale_has_are_oversold() {
    let mut facts = sound();
    for (_, status, _) in facts.orders.iter_mut().skip(8) {
        *status = "PAID".to_owned();
    }
    facts.counts.held = 11;
    facts.counts.unallocated = -1;
    let verdict = judged(&facts);
    assert_eq!(verdict.oversold, 1, "{:?}", verdict.violations);
}

#[test]
fn units_left_in_a_lease_after_sold_out_are_stuck() {
    let mut facts = sound();
    facts.counts.unallocated = 0;
    facts.counts.leased = 2;
    assert!(says(&judged(&facts), "2 units stuck in leases"));
}

#[test]
fn a_sweep_never_sold_out_is_reported() {
    let mut facts = sound();
    facts.swept = false;
    assert!(says(&judged(&facts), "never answered SOLD_OUT"));
}

#[test]
fn the_product_stock_must_agree() {
    let mut facts = sound();
    facts.stock = (99, 8);
    assert!(says(&judged(&facts), "FLASH-CHAOS: on hand 99"));
    let mut facts = sound();
    facts.stock = (98, 7);
    assert!(says(&judged(&facts), "reserved 7"));
}
