//! The refund checks: every full refund accepted ends once and SUCCEEDED,
//! and each one that takes the effects back has taken back exactly what the
//! payment gave. Apart from the checker's core so each stays readable; the
//! rules are listed in the checker's header.

use std::collections::{BTreeSet, HashMap};

use ordermq_store::{AuditRefund, AuditReversals};

use super::Verdict;
use crate::driver::Ledger;

/// Refunds: every full refund asked for and accepted exists once and
/// SUCCEEDED (else **lost**; twice: **doubled**), and each refund that takes
/// the effects back has exactly one points reversal and one refund SMS, its
/// coupon revoked and its shipment cancelled (missing: **lost**); a reversal
/// for no such refund is **phantom**.
pub(super) fn check_refunds(
    v: &mut Verdict,
    ledger: &Ledger,
    refunds: &[AuditRefund],
    reversals: &AuditReversals,
) {
    let mut by_order: HashMap<&str, Vec<&AuditRefund>> = HashMap::new();
    for refund in refunds.iter().filter(|r| r.reverse_effects) {
        by_order
            .entry(refund.order_id.as_str())
            .or_default()
            .push(refund);
    }
    for (id, record) in ledger.orders.iter().filter(|(_, r)| r.refund_accepted) {
        match by_order
            .get(id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            [] => {
                v.lost += 1;
                v.violation(format!("order {id}: refund accepted but none recorded"));
            }
            [one] if one.status != "SUCCEEDED" => {
                v.lost += 1;
                v.violation(format!(
                    "order {id}: refund {} is {}",
                    one.refund_id, one.status
                ));
            }
            [_] => {}
            many => {
                v.doubled += many.len() - 1;
                v.violation(format!(
                    "order {id}: {} refunds for one request (record {record:?})",
                    many.len()
                ));
            }
        }
    }
    for refund in refunds.iter().filter(|r| r.reverse_effects) {
        let (id, order) = (&refund.refund_id, &refund.order_id);
        for (what, n) in [
            ("points reversal", reversals.points.get(id)),
            ("refund SMS", reversals.sms.get(id)),
        ] {
            match n.copied().unwrap_or(0) {
                1 => {}
                0 => {
                    v.lost += 1;
                    v.violation(format!("refund {id} of order {order}: no {what}"));
                }
                n => {
                    v.doubled += n as usize - 1;
                    v.violation(format!("refund {id} of order {order}: {n} × {what}"));
                }
            }
        }
        if refund.full_refund {
            for (what, done) in [
                ("coupon revoked", &reversals.revoked_coupons),
                ("shipment cancelled", &reversals.cancelled_shipments),
            ] {
                if !done.contains(order) {
                    v.lost += 1;
                    v.violation(format!("refund {id} of order {order}: no {what}"));
                }
            }
        }
    }
    let known: BTreeSet<&str> = refunds
        .iter()
        .filter(|r| r.reverse_effects)
        .map(|r| r.refund_id.as_str())
        .collect();
    for id in reversals.points.keys().chain(reversals.sms.keys()) {
        if !known.contains(id.as_str()) {
            v.phantom += 1;
            v.violation(format!(
                "a reversal for refund {id}, which takes nothing back"
            ));
        }
    }
}
