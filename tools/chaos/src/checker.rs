//! The invariant checker: reads every database directly, after healing and
//! draining, and compares it with the ledger of what clients were told.
//!
//! It trusts nothing ordermq says about itself (no API call): orders,
//! payments, stock, the outbox and each downstream system's effect and inbox
//! tables are read through `ordermq_store`'s audit queries. The rules:
//!
//! - an acknowledged payment ends PAID (else **lost**);
//! - a PAID order has exactly one points entry, coupon, SMS and shipment
//!   (none: **lost**; more than one: **doubled**) and one applied payment;
//! - an order never paid, or UNPAID, has no effect at all (**phantom**), and
//!   a payment whose answer was lost is all-or-nothing (the two rules above);
//! - stock: `on_hand = start` (an order takes nothing off the shelf count),
//!   `reserved = Σ quantities of the orders paid or unpaid` (more: taken
//!   twice, **doubled**; fewer: units held but counted free, **oversold**),
//!   never negative, never more sold than there was (**oversold**);
//! - a full refund accepted ends SUCCEEDED and the order REFUNDED, with one
//!   points reversal, one refund SMS, its coupon revoked and its shipment
//!   cancelled (**lost** / **doubled**; a reversal of nothing: **phantom**);
//! - every order's history is one chain from its creation to its status, no
//!   transition twice (**doubled**), every step one the state machine allows
//!   (a close of a paid order: **phantom**); when closes were due, no order
//!   is still UNPAID (**lost**);
//! - every carrier status the carrier was answered 200 for is recorded once
//!   (`carrier_events`), applied once by the warehouse (its inbox), and the
//!   order and its shipment stand at the last status sent or beyond (else
//!   **lost**; a status applied twice: **doubled**; the shipment moved
//!   backwards or past what was sent: a violation);
//! - with the providers as their own process (their call log given): each
//!   paid order had exactly one SMS and one booking done at the providers,
//!   each refund exactly one refund, and nothing was done for an order never
//!   paid (**lost** / **doubled** / **phantom**); one key done twice is a
//!   provider that forgot it (**doubled**). What the providers deduplicated
//!   (a key sent again and answered from their memory) is counted, not judged;
//! - the outbox is empty and no delivery is left failing (**undrained**).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use ordermq_domain::{OrderStatus, System};
use ordermq_fake_provider::CallRecord;
use ordermq_store::{AuditOrder, AuditPayment, AuditStock, Store, SystemAudit};
use serde::Serialize;

use super::driver::Ledger;

mod databases;
mod outside;
mod refunds;
use databases::read_databases;
use outside::{check_carrier, check_providers};
use refunds::check_refunds;

/// What a trial's databases say against its ledger.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// Orders in the database.
    pub orders: usize,
    /// PAID orders in the database.
    pub paid: usize,
    /// Payments acknowledged (200, not refund_required) by the notify endpoint.
    pub acknowledged: usize,
    /// Requests whose answer was lost (crash, timeout).
    pub answers_lost: usize,
    /// Acknowledged payments not PAID, plus PAID orders missing an effect.
    pub lost: usize,
    /// Effects applied more than once (extra rows), plus stock deducted twice.
    pub doubled: usize,
    /// Units sold beyond the stock, plus negative stock.
    pub oversold: usize,
    /// Effects or payments for orders that were never paid.
    pub phantom: usize,
    /// Outbox rows unsent and deliveries still failing after the drain.
    pub undrained: usize,
    /// Second payments recorded as owed back.
    pub refunds_flagged: usize,
    /// Every broken rule, in words (at most 50 kept).
    pub violations: Vec<String>,
    /// What a scenario measured besides the counts, in words (latencies
    /// under attack, for example): reported, never judged here.
    pub figures: Vec<String>,
}

impl Verdict {
    pub fn holds(&self) -> bool {
        self.lost == 0
            && self.doubled == 0
            && self.oversold == 0
            && self.phantom == 0
            && self.undrained == 0
            && self.violations.is_empty()
    }

    pub(crate) fn violation(&mut self, text: String) {
        if self.violations.len() < 50 {
            self.violations.push(text);
        }
    }

    /// Adds another trial's counts to this one.
    pub fn absorb(&mut self, other: Verdict) {
        self.orders += other.orders;
        self.paid += other.paid;
        self.acknowledged += other.acknowledged;
        self.answers_lost += other.answers_lost;
        self.lost += other.lost;
        self.doubled += other.doubled;
        self.oversold += other.oversold;
        self.phantom += other.phantom;
        self.undrained += other.undrained;
        self.refunds_flagged += other.refunds_flagged;
        for v in other.violations {
            self.violation(v);
        }
        self.figures.extend(other.figures);
    }
}

/// What the checker needs besides the databases.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// Stock of each product when the trial started (products not listed are not checked).
    pub start_stock: HashMap<String, i64>,
    /// Events a group is allowed to have left unapplied (dead-lettered on purpose):
    /// `(system, order id)`.
    pub dead_letter_allowed: BTreeSet<(System, String)>,
    /// Every unpaid order's close was due before the check: none may still
    /// be UNPAID (a close lost).
    pub closes_due: bool,
    /// The providers' call log, when they ran as their own process
    /// (`Trial::start_providers`): checked against the orders and refunds.
    pub provider_calls: Option<Vec<CallRecord>>,
    /// The scenario takes the order database away, or restarts ordermq
    /// on it (a `kill -9`: the restart recovers the databases, and a
    /// commit can stall seconds meanwhile): 503 `STORAGE_UNAVAILABLE`,
    /// ordermq's "try again later" when no connection comes within the
    /// acquire timeout, is an answer it may give (a figure; what such a
    /// request changed is checked like any unanswered one). Elsewhere it is
    /// a violation.
    pub storage_may_refuse: bool,
    /// The trial's `order_close_after`, in trials that pay some orders
    /// late: a payment that found its order closed sooner than this
    /// after the order's create was sent (on the client's clock, less
    /// [`CLOSE_TOLERANCE`]) shows an early close.
    pub close_after: Option<Duration>,
}

/// How early a close may come and not be called early: ordermq's own
/// tolerance for a close message (1 s: the broker timer's precision, two
/// hosts' clocks). The client's figure (from sending the create to the
/// answer of the payment that found the order closed) is more than the
/// order's age at its close, so a figure below the delay less this is an
/// early close for certain.
pub const CLOSE_TOLERANCE: Duration = Duration::from_millis(1_000);

/// Checks every invariant. `store` must be quiet (ordermq stopped or drained).
///
/// One step per family of rules, in this order (the order of the
/// violations): the requests' answers, the orders against the ledger, the
/// payments, each order's effects, effects without an order, the stock, the
/// backlogs.
pub async fn check(store: &Store, ledger: &Ledger, expect: &Expectations) -> Verdict {
    let systems = System::ALL.into_iter().map(|s| (s, store)).collect();
    check_apart(store, &systems, ledger, expect).await
}

/// [`check`] with each downstream system's effects read from its own
/// database (`systems`: the systems as processes of their own), the
/// orders, payments and outbox from `orders`.
pub async fn check_apart(
    orders: &Store,
    systems: &BTreeMap<System, &Store>,
    ledger: &Ledger,
    expect: &Expectations,
) -> Verdict {
    let store = orders;
    let mut v = Verdict {
        acknowledged: ledger.acknowledged(),
        answers_lost: ledger.answers_lost(),
        ..Verdict::default()
    };
    for error in &ledger.server_errors {
        v.violation(format!("a request got a server error: {error}"));
    }
    if expect.storage_may_refuse {
        v.figures.push(format!(
            "answered 503 STORAGE_UNAVAILABLE: {}",
            ledger.unavailable
        ));
    } else if ledger.unavailable > 0 {
        v.violation(format!(
            "{} request(s) answered 503 STORAGE_UNAVAILABLE, the database never taken away or restarted",
            ledger.unavailable
        ));
    }
    let Some(db) = read_databases(store, systems, &mut v).await else {
        return v;
    };
    v.orders = db.orders.len();
    let by_id: HashMap<&str, &AuditOrder> =
        db.orders.iter().map(|o| (o.order_id.as_str(), o)).collect();
    check_ledger_orders(&mut v, ledger, &by_id);
    if let Some(close_after) = expect.close_after {
        check_early_closes(&mut v, ledger, close_after);
    }
    let applied_by_order = check_payments(&mut v, ledger, &db.payments);
    let sold = as_sold(&db.orders, &db.history);
    for order in &sold {
        check_order(&mut v, order, &applied_by_order, &db.systems, expect);
    }
    check_history(&mut v, &db.orders, &db.history, expect);
    check_refunds(&mut v, ledger, &db.refunds, &db.reversals);
    check_carrier(&mut v, ledger, &by_id, &db.carrier);
    if let Some(calls) = &expect.provider_calls {
        check_providers(&mut v, calls, &sold, &db.refunds);
    }
    check_orphan_effects(&mut v, &db.systems, &by_id);
    check_stock(&mut v, &sold, &db.stock, expect);
    check_backlogs(&mut v, db.outbox, &db.systems, expect);
    v
}

/// Acknowledged payments are PAID; orders never paid are not; every order
/// answered 201 exists.
fn check_ledger_orders(v: &mut Verdict, ledger: &Ledger, by_id: &HashMap<&str, &AuditOrder>) {
    for (id, record) in &ledger.orders {
        let status = by_id.get(id.as_str()).map(|o| o.status.as_str());
        let refunded = record.refund_asked && status == Some("REFUNDED");
        // Asked for a refund: the payment stands whether or not the refund
        // went through (that is the refund's rule, just below).
        let paid_then_refunding =
            record.refund_asked && matches!(status, Some("REFUNDING" | "REFUNDED"));
        if record.refund_accepted && !refunded {
            v.lost += 1;
            v.violation(format!(
                "order {id}: full refund accepted but the order is {status:?}"
            ));
        }
        // Moved on by its carrier: still paid (the carrier rule checks how far).
        let paid_then_carried =
            !record.carrier_sent.is_empty() && matches!(status, Some("SHIPPED" | "DELIVERED"));
        if record.acknowledged
            && status != Some("PAID")
            && !paid_then_refunding
            && !paid_then_carried
        {
            v.lost += 1;
            v.violation(format!(
                "order {id}: payment acknowledged but the order is {status:?}"
            ));
        }
        if !record.pay_attempted && status == Some("PAID") {
            v.phantom += 1;
            v.violation(format!("order {id}: never paid but PAID"));
        }
        if status.is_none() {
            v.lost += 1;
            v.violation(format!("order {id}: created (201) but not in the database"));
        }
    }
}

/// The orders as sold: one closed before its payment came, whose payment
/// was then refunded (history `CANCELLED → REFUNDING`), is REFUNDING or
/// REFUNDED but was never paid — no effects, no sale — so the effect,
/// provider and stock checks see it CANCELLED. Its refund is checked with
/// the others.
fn as_sold(
    orders: &[AuditOrder],
    history: &HashMap<String, Vec<(Option<String>, String)>>,
) -> Vec<AuditOrder> {
    orders
        .iter()
        .map(|order| {
            let refunded_after_close = history.get(&order.order_id).is_some_and(|chain| {
                chain
                    .iter()
                    .any(|(from, to)| from.as_deref() == Some("CANCELLED") && to == "REFUNDING")
            });
            let mut order = order.clone();
            if refunded_after_close {
                order.status = "CANCELLED".to_owned();
            }
            order
        })
        .collect()
}

/// No order closed before its time: a payment that found its order closed
/// came when the order, on the client's clock, had lived its close delay
/// (less [`CLOSE_TOLERANCE`]).
fn check_early_closes(v: &mut Verdict, ledger: &Ledger, close_after: Duration) {
    let soonest = close_after.saturating_sub(CLOSE_TOLERANCE);
    for (id, record) in &ledger.orders {
        if let Some(age) = record.found_cancelled_at.filter(|age| *age < soonest) {
            v.violation(format!(
                "order {id}: closed early: a payment answered {} ms after its create was \
                 sent found it closed (it closes {} ms after creation)",
                age.as_millis(),
                close_after.as_millis()
            ));
        }
    }
}

/// Every order's history is one unbroken chain: created UNPAID (`None →
/// UNPAID`), each transition leaving from where the previous one arrived,
/// the last arriving at the order's status. A transition recorded twice in
/// a row (a close or a payment applied twice) is **doubled**; any other
/// break is a violation. With `closes_due`, an order still UNPAID lost its
/// close (**lost**).
fn check_history(
    v: &mut Verdict,
    orders: &[AuditOrder],
    history: &HashMap<String, Vec<(Option<String>, String)>>,
    expect: &Expectations,
) {
    for order in orders {
        let id = &order.order_id;
        let chain = history.get(id).map(Vec::as_slice).unwrap_or_default();
        let mut previous: Option<&(Option<String>, String)> = None;
        for step in chain {
            let at = previous.map(|(_, to)| to.as_str());
            if let Some(from) = &step.0 {
                let allowed = OrderStatus::parse(from)
                    .zip(OrderStatus::parse(&step.1))
                    .is_some_and(|(from, to)| from.can_become(to));
                if !allowed {
                    if step.1 == "CANCELLED" {
                        // The close of an order that was no longer unpaid.
                        v.phantom += 1;
                    }
                    v.violation(format!(
                        "order {id}: {from} → {} is not a move the order may make",
                        step.1
                    ));
                }
            }
            if step.0.as_deref() != at {
                if previous == Some(step) {
                    v.doubled += 1;
                    v.violation(format!(
                        "order {id}: {:?} → {} recorded twice",
                        step.0, step.1
                    ));
                } else {
                    v.violation(format!(
                        "order {id}: history jumps from {at:?} to {:?} → {}",
                        step.0, step.1
                    ));
                }
            }
            previous = Some(step);
        }
        if chain
            .first()
            .is_none_or(|(from, to)| from.is_some() || to != "UNPAID")
        {
            v.violation(format!(
                "order {id}: history does not start with its creation"
            ));
        }
        if previous.map(|(_, to)| to.as_str()) != Some(order.status.as_str()) {
            v.violation(format!(
                "order {id}: history ends at {:?}, the order is {}",
                previous.map(|(_, to)| to),
                order.status
            ));
        }
        if expect.closes_due && order.status == "UNPAID" {
            v.lost += 1;
            v.violation(format!("order {id}: still UNPAID after its close was due"));
        }
    }
}

/// An order that was paid: PAID, moved on by its carrier, or refunded since
/// (its payment and effects stay; reversals are beside them).
fn is_paid(status: &str) -> bool {
    matches!(
        status,
        "PAID" | "SHIPPED" | "DELIVERED" | "REFUNDING" | "REFUNDED"
    )
}

/// Payments: tallies the APPLIED ones by order (returned, for
/// [`check_order`]) and the second payments owed back; each payment's
/// recorded outcome must match what its caller was told.
fn check_payments<'a>(
    v: &mut Verdict,
    ledger: &Ledger,
    payments: &'a [AuditPayment],
) -> HashMap<&'a str, Vec<&'a str>> {
    let mut applied_by_order: HashMap<&str, Vec<&str>> = HashMap::new();
    for p in payments {
        match p.outcome.as_str() {
            "APPLIED" => applied_by_order
                .entry(p.order_id.as_str())
                .or_default()
                .push(p.payment_id.as_str()),
            "REFUND_REQUIRED" => v.refunds_flagged += 1,
            other => v.violation(format!("payment {}: unknown outcome {other}", p.payment_id)),
        }
    }
    for (id, record) in &ledger.orders {
        // A payment acknowledged as the applied one must be the one recorded,
        // and one acknowledged as refund_required must be owed back.
        for (payment_id, acked_as_applied) in &record.payments {
            let row = payments.iter().find(|p| &p.payment_id == payment_id);
            match (acked_as_applied, row) {
                (Some(true), Some(p)) if p.outcome == "APPLIED" && &p.order_id == id => {}
                (Some(false), Some(p)) if p.outcome == "REFUND_REQUIRED" => {}
                (None, _) => {} // answer lost or rejected: either way is fine
                (ack, row) => {
                    v.lost += 1;
                    v.violation(format!(
                        "order {id}: payment {payment_id} answered {ack:?} but recorded as {:?}",
                        row.map(|p| (&p.order_id, &p.outcome))
                    ));
                }
            }
        }
    }
    applied_by_order
}

/// One order: a PAID order has exactly its one applied payment and one
/// effect per system (with its inbox row); any other order has neither.
fn check_order(
    v: &mut Verdict,
    order: &AuditOrder,
    applied_by_order: &HashMap<&str, Vec<&str>>,
    systems: &BTreeMap<System, SystemAudit>,
    expect: &Expectations,
) {
    let id = order.order_id.as_str();
    // Paid, and maybe refunded since: the payment and its effects stay.
    let paid = is_paid(&order.status);
    let applied = applied_by_order.get(id).map(Vec::len).unwrap_or(0);
    if paid {
        v.paid += 1;
        let matches = applied_by_order
            .get(id)
            .is_some_and(|ids| ids.len() == 1 && Some(ids[0]) == order.payment_id.as_deref());
        if !matches {
            v.violation(format!(
                "order {id}: PAID with payment {:?} but applied payments {:?}",
                order.payment_id,
                applied_by_order.get(id)
            ));
        }
    } else if applied > 0 {
        v.phantom += 1;
        v.violation(format!(
            "order {id}: {} but has an applied payment",
            order.status
        ));
    }
    for (system, audit) in systems {
        check_effects(v, order, *system, audit, expect);
    }
}

/// One order in one system: exactly one effect and one inbox row if paid
/// (PAID, or refunded since: the rows stay, the reversals are beside them;
/// none allowed only when dead-lettered on purpose), none otherwise.
fn check_effects(
    v: &mut Verdict,
    order: &AuditOrder,
    system: System,
    audit: &SystemAudit,
    expect: &Expectations,
) {
    let id = order.order_id.as_str();
    let effects = audit.effects.get(id).copied().unwrap_or(0);
    let inbox = audit.inbox.get(id).copied().unwrap_or(0);
    let allowed_missing = expect
        .dead_letter_allowed
        .contains(&(system, id.to_owned()));
    if is_paid(&order.status) {
        if effects == 0 && !allowed_missing {
            v.lost += 1;
            v.violation(format!(
                "order {id}: {} but no {} effect",
                order.status,
                system.name()
            ));
        }
        if effects > 1 {
            v.doubled += (effects - 1) as usize;
            v.violation(format!("order {id}: {effects} {} effects", system.name()));
        }
        if effects != inbox && !(allowed_missing && effects == 0) {
            v.violation(format!(
                "order {id}: {} has {effects} effect rows but {inbox} inbox rows",
                system.name()
            ));
        }
    } else if effects > 0 || inbox > 0 {
        v.phantom += 1;
        v.violation(format!(
            "order {id}: {} but {} applied {effects} effect(s)",
            order.status,
            system.name()
        ));
    }
}

/// Effects for orders that do not exist at all.
fn check_orphan_effects(
    v: &mut Verdict,
    systems: &BTreeMap<System, SystemAudit>,
    by_id: &HashMap<&str, &AuditOrder>,
) {
    for (system, audit) in systems {
        for id in audit.effects.keys() {
            if !by_id.contains_key(id.as_str()) {
                v.phantom += 1;
                v.violation(format!("{} effect for unknown order {id}", system.name()));
            }
        }
    }
}

/// Stock: never negative; for products with a known start, never more sold
/// than there was, `on_hand = start` and `reserved = Σ quantities of the
/// orders paid or unpaid` (a payment keeps its order's units reserved:
/// sold, never free again).
fn check_stock(
    v: &mut Verdict,
    orders: &[AuditOrder],
    stock: &[AuditStock],
    expect: &Expectations,
) {
    let mut paid_qty: HashMap<&str, i64> = HashMap::new();
    let mut unpaid_qty: HashMap<&str, i64> = HashMap::new();
    for order in orders {
        let target = match order.status.as_str() {
            // A refund gives the money back, not the goods: no restock.
            status if is_paid(status) => &mut paid_qty,
            "UNPAID" => &mut unpaid_qty,
            _ => continue,
        };
        for (sku, q) in &order.lines {
            *target.entry(sku.as_str()).or_default() += q;
        }
    }
    for s in stock {
        if s.on_hand < 0 || s.reserved < 0 {
            v.oversold += s.on_hand.min(s.reserved).unsigned_abs() as usize;
            v.violation(format!(
                "{}: negative stock (on hand {}, reserved {})",
                s.sku, s.on_hand, s.reserved
            ));
        }
        let Some(&start) = expect.start_stock.get(&s.sku) else {
            continue;
        };
        let sold = paid_qty.get(s.sku.as_str()).copied().unwrap_or(0);
        let held = sold + unpaid_qty.get(s.sku.as_str()).copied().unwrap_or(0);
        if sold > start {
            v.oversold += (sold - start) as usize;
            v.violation(format!("{}: sold {sold} of {start}", s.sku));
        }
        if s.on_hand != start {
            v.violation(format!(
                "{}: on hand {} but it started at {start} and orders take nothing off it",
                s.sku, s.on_hand
            ));
        }
        if s.reserved != held {
            if s.reserved > held {
                v.doubled += (s.reserved - held) as usize;
            } else {
                v.oversold += (held - s.reserved) as usize;
            }
            v.violation(format!(
                "{}: reserved {} but its orders paid or unpaid hold {held} (paid {sold})",
                s.sku, s.reserved
            ));
        }
    }
}

/// Backlogs: the outbox is empty and no delivery is left failing, bar those
/// dead-lettered on purpose.
fn check_backlogs(
    v: &mut Verdict,
    outbox: i64,
    systems: &BTreeMap<System, SystemAudit>,
    expect: &Expectations,
) {
    if outbox > 0 {
        v.undrained += outbox as usize;
        v.violation(format!(
            "{outbox} outbox row(s) never confirmed by the broker"
        ));
    }
    for (system, audit) in systems {
        for f in &audit.failures {
            // A failure recorded by a duplicate delivery racing the one that
            // applied the event is stale, not a backlog.
            if audit.inbox.get(&f.order_id).copied().unwrap_or(0) > 0 {
                continue;
            }
            let allowed = f.dead_lettered
                && expect
                    .dead_letter_allowed
                    .contains(&(*system, f.order_id.clone()));
            if !allowed {
                v.undrained += 1;
                v.violation(format!(
                    "{}: {} still failing after {} attempts: {}",
                    system.consumer_group(),
                    f.event_id,
                    f.attempts,
                    f.last_error
                ));
            }
        }
    }
}
