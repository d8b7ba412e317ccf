//! The checks of what happened outside ordermq's own tables: the carrier's
//! status updates (recorded, applied once, in order) and the third parties'
//! call log (one SMS, booking and refund per effect owed, none for an order
//! never paid). Apart from the checker's core so each stays readable; the
//! rules are listed in the checker's header.

use std::collections::{BTreeMap, HashMap};

use ordermq_fake_provider::{CallOutcome, CallRecord};
use ordermq_store::{AuditCarrier, AuditOrder, AuditRefund};

use super::{Verdict, is_paid};
use crate::driver::Ledger;

/// How far a carrier status or a shipment status has come (a shipment that
/// was `CANCELLED` never moves: ranked apart).
fn progress(status: &str) -> Option<u8> {
    match status {
        "CREATED" => Some(0),
        "PICKED_UP" => Some(1),
        "IN_TRANSIT" => Some(2),
        "DELIVERED" => Some(3),
        _ => None,
    }
}

/// Carrier updates: each status answered 200 is recorded once in
/// `carrier_events` (missing: **lost**) and applied once by the warehouse
/// (`ShipmentUpdated` inbox row; none: **lost**, more: **doubled**); the
/// order stands at `SHIPPED` or `DELIVERED` as the last status sent says
/// (**lost** if behind), and the shipment at that status or beyond, never
/// beyond what the carrier sent (the updates applied out of order).
pub(super) fn check_carrier(
    v: &mut Verdict,
    ledger: &Ledger,
    orders: &HashMap<&str, &AuditOrder>,
    carrier: &AuditCarrier,
) {
    for (id, record) in ledger.orders.iter() {
        let Some(last) = record.carrier_acked.last() else {
            continue;
        };
        let recorded = carrier
            .events
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for status in &record.carrier_acked {
            match recorded.iter().filter(|s| *s == status).count() {
                1 => {}
                0 => {
                    v.lost += 1;
                    v.violation(format!(
                        "order {id}: carrier {status} answered 200 but not recorded"
                    ));
                }
                n => {
                    v.doubled += n - 1;
                    v.violation(format!("order {id}: carrier {status} recorded {n} times"));
                }
            }
            let event_id = format!("ShipmentUpdated:{id}:{status}");
            match carrier.applied.get(&event_id).copied().unwrap_or(0) {
                1 => {}
                0 => {
                    v.lost += 1;
                    v.violation(format!(
                        "order {id}: the warehouse never applied carrier {status}"
                    ));
                }
                n => {
                    v.doubled += n as usize - 1;
                    v.violation(format!(
                        "order {id}: the warehouse applied carrier {status} {n} times"
                    ));
                }
            }
        }
        let wanted = if last == "DELIVERED" {
            "DELIVERED"
        } else {
            "SHIPPED"
        };
        let status = orders.get(id.as_str()).map(|o| o.status.as_str());
        let far_enough =
            status == Some(wanted) || (wanted == "SHIPPED" && status == Some("DELIVERED"));
        if !far_enough {
            v.lost += 1;
            v.violation(format!(
                "order {id}: carrier sent {last} but the order is {status:?}"
            ));
        }
        // At least the last status answered, at most the last one sent
        // (its answer may have been lost after it was applied).
        let furthest = |statuses: &[String]| statuses.iter().filter_map(|s| progress(s)).max();
        let (acked, sent) = (
            furthest(&record.carrier_acked).unwrap_or(0),
            furthest(&record.carrier_sent).unwrap_or(3),
        );
        let shipment = carrier.shipments.get(id).map(String::as_str);
        match shipment.and_then(progress) {
            Some(at) if (acked..=sent).contains(&at) => {}
            Some(at) if at < acked => {
                v.lost += 1;
                v.violation(format!(
                    "order {id}: carrier sent {last} but the shipment is {shipment:?} (applied out of order)"
                ));
            }
            at => v.violation(format!(
                "order {id}: shipment {shipment:?} (progress {at:?}) but the carrier was answered up to {acked} and sent up to {sent}"
            )),
        }
    }
}

/// The providers' endpoints the checker counts, with what one call there does.
const SMS: &str = "/sms/send";
const BOOK: &str = "/logistics/shipments";
const REFUND: &str = "/payments/refunds";

/// What the providers did, from their call log: per order, one SMS and one
/// booking for a paid order (key `OrderPaid:<order>`), none for any other;
/// per refund that succeeded, one refund (key: the refund id); and no key
/// done twice at one endpoint. Counts (calls, effects, calls the providers
/// answered from memory, duplicates) go to the figures.
pub(super) fn check_providers(
    v: &mut Verdict,
    calls: &[CallRecord],
    orders: &[AuditOrder],
    refunds: &[AuditRefund],
) {
    // (endpoint, key) → effects done.
    let mut done: HashMap<(&str, &str), usize> = HashMap::new();
    let mut replayed = 0;
    for call in calls {
        match (call.outcome, call.idempotency_key.as_deref()) {
            (CallOutcome::Effect, Some(key)) => {
                *done.entry((call.endpoint.as_str(), key)).or_default() += 1;
            }
            (CallOutcome::Replay, _) => replayed += 1,
            _ => {}
        }
    }
    let mut duplicates: BTreeMap<&str, usize> = BTreeMap::new();
    for ((endpoint, key), n) in &done {
        if *n > 1 {
            *duplicates.entry(endpoint).or_default() += n - 1;
            v.doubled += n - 1;
            v.violation(format!(
                "provider {endpoint}: key {key} done {n} times (the provider forgot it)"
            ));
        }
    }
    let exactly_one = |v: &mut Verdict, endpoint: &str, key: &str, what: String| match done
        .get(&(endpoint, key))
        .copied()
        .unwrap_or(0)
    {
        1 => {}
        0 => {
            v.lost += 1;
            v.violation(format!("{what}: not done at the provider"));
        }
        // Counted above.
        _ => {}
    };
    for order in orders {
        let key = format!("OrderPaid:{}", order.order_id);
        if is_paid(&order.status) {
            for endpoint in [SMS, BOOK] {
                exactly_one(
                    v,
                    endpoint,
                    &key,
                    format!("order {}: {endpoint} for its payment", order.order_id),
                );
            }
        } else {
            for endpoint in [SMS, BOOK] {
                if done.contains_key(&(endpoint, key.as_str())) {
                    v.phantom += 1;
                    v.violation(format!(
                        "order {} is {} but {endpoint} was done for its payment",
                        order.order_id, order.status
                    ));
                }
            }
        }
    }
    for refund in refunds.iter().filter(|r| r.status == "SUCCEEDED") {
        exactly_one(
            v,
            REFUND,
            &refund.refund_id,
            format!("refund {} of order {}", refund.refund_id, refund.order_id),
        );
    }
    let effects: usize = done.values().sum();
    v.figures.push(format!(
        "providers: {} calls, {effects} done, {replayed} deduplicated (a key again), \
         duplicates: {} SMS, {} bookings, {} refunds",
        calls.len(),
        duplicates.get(SMS).copied().unwrap_or(0),
        duplicates.get(BOOK).copied().unwrap_or(0),
        duplicates.get(REFUND).copied().unwrap_or(0),
    ));
}
