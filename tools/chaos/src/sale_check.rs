//! The flash-sale scenario's own rules, apart from the trial that gathers
//! the facts, so the suite's self-test can plant a fault in facts and see
//! it reported (as it does for the checker of every order).
//!
//! A sale's units live in three places in the order database — unallocated
//! in the sale, in an instance's lease, held by an attempt — and each sale
//! order is an ordinary order whose units came out of the sale. The rules:
//! every attempt answered `QUEUED` ended; the three places add up to the
//! sale's units; the units held are exactly those of the sale's open
//! orders; one order per created attempt; never more units sold than the
//! sale has; once the sale was answered `SOLD_OUT` after every lease could
//! expire, no unit sits in a lease; the product's stock agrees.

use ordermq_domain::SaleId;
use ordermq_domain::ports::StorageError;
use ordermq_store::{SaleCounts, Store};

use crate::checker::Verdict;

/// What the databases say of the sale once ordermq stopped.
#[derive(Debug, Clone, Default)]
pub struct SaleFacts {
    /// The product on sale (only sale orders buy it).
    pub sku: String,
    /// The product's stock before the sale took its units.
    pub start_stock: i64,
    /// Units the sale offers.
    pub units: i64,
    /// Where the sale's units are.
    pub counts: SaleCounts,
    /// Each attempt answered `QUEUED` and its state in the database (`None`:
    /// not there).
    pub acknowledged: Vec<(String, Option<String>)>,
    /// The sale's orders: status and units.
    pub orders: Vec<(String, String, i64)>,
    /// The product's (on hand, reserved).
    pub stock: (i64, i64),
    /// The sweep was answered `SOLD_OUT`.
    pub swept: bool,
}

impl SaleFacts {
    /// Reads the sale `sale_id` of `units` units of `sku` (which had
    /// `start_stock` units before) and the attempts answered `QUEUED`
    /// (`queued`) from a quiet `store`.
    ///
    /// # Errors
    /// A storage failure.
    pub async fn read(
        store: &Store,
        sale: (&SaleId, &str, i64),
        start_stock: i64,
        queued: &[String],
        swept: bool,
    ) -> Result<Self, StorageError> {
        let (sale_id, sku, units) = sale;
        let counts = store.sale_counts(sale_id).await?;
        let mut acknowledged = Vec::with_capacity(queued.len());
        for id in queued {
            let state = match ordermq_domain::AttemptId::parse(id) {
                Ok(attempt_id) => store
                    .attempt(&attempt_id)
                    .await?
                    .map(|a| a.state.name().to_owned()),
                Err(_) => None,
            };
            acknowledged.push((id.clone(), state));
        }
        let orders = store
            .audit_orders()
            .await?
            .into_iter()
            .filter_map(|o| {
                let units: i64 = o
                    .lines
                    .iter()
                    .filter(|(line_sku, _)| line_sku == sku)
                    .map(|(_, q)| q)
                    .sum();
                (units > 0).then_some((o.order_id, o.status, units))
            })
            .collect();
        let stock = store
            .audit_stock()
            .await?
            .into_iter()
            .find(|s| s.sku == sku)
            .map_or((-1, -1), |s| (s.on_hand, s.reserved));
        Ok(Self {
            sku: sku.to_owned(),
            start_stock,
            units,
            counts,
            acknowledged,
            orders,
            stock,
            swept,
        })
    }
}

/// The sale's rules, each broken one a violation (and lost, doubled or
/// oversold where it is one of those).
pub fn judge(facts: &SaleFacts, v: &mut Verdict) {
    let c = &facts.counts;
    for (id, state) in &facts.acknowledged {
        match state.as_deref() {
            None => {
                v.lost += 1;
                v.violations.push(format!(
                    "attempt {id}: answered QUEUED but not in the database"
                ));
            }
            Some("QUEUED") => {
                v.lost += 1;
                v.violations
                    .push(format!("attempt {id}: answered QUEUED and never ended"));
            }
            Some(_) => {}
        }
    }
    if c.queued != 0 {
        v.violations.push(format!(
            "{} attempts still QUEUED after the drain",
            c.queued
        ));
    }
    if c.unallocated + c.leased + c.held != facts.units || c.unallocated < 0 || c.leased < 0 {
        v.violations.push(format!(
            "the sale's books do not balance: {} units, {} unallocated + {} leased + {} held",
            facts.units, c.unallocated, c.leased, c.held
        ));
    }
    let open: i64 = facts
        .orders
        .iter()
        .filter(|(_, status, _)| status != "CANCELLED")
        .map(|(_, _, units)| units)
        .sum();
    if open > facts.units {
        v.oversold += usize::try_from(open - facts.units).unwrap_or(0);
        v.violations.push(format!(
            "{open} units in open sale orders, the sale has {}",
            facts.units
        ));
    }
    if c.held != open {
        v.violations.push(format!(
            "attempts hold {} units, open sale orders {open}: a close or a rejection \
             did not give its units back exactly once",
            c.held
        ));
    }
    let orders = i64::try_from(facts.orders.len()).unwrap_or(i64::MAX);
    if orders > c.created {
        v.doubled += usize::try_from(orders - c.created).unwrap_or(0);
        v.violations.push(format!(
            "{orders} sale orders for {} created attempts",
            c.created
        ));
    } else if orders < c.created {
        v.lost += usize::try_from(c.created - orders).unwrap_or(0);
        v.violations.push(format!(
            "{} created attempts but {orders} sale orders",
            c.created
        ));
    }
    if !facts.swept {
        v.violations
            .push("the sweep after the kills was never answered SOLD_OUT".into());
    } else if c.leased != 0 {
        v.violations.push(format!(
            "{} units stuck in leases after the sale was answered SOLD_OUT",
            c.leased
        ));
    }
    let held: i64 = facts
        .orders
        .iter()
        .filter(|(_, status, _)| status != "CANCELLED")
        .map(|(_, _, units)| units)
        .sum();
    // Created orders put their units back into the product's stock and
    // reserve them; a close releases them and takes them out again, a
    // payment keeps them reserved (sold): what is on hand beyond the sale's
    // share is what its orders not cancelled hold.
    let expected_on_hand = facts.start_stock - facts.units + held;
    if facts.stock != (expected_on_hand, held) {
        v.violations.push(format!(
            "{}: on hand {}, reserved {}; expected {expected_on_hand} and {held}",
            facts.sku, facts.stock.0, facts.stock.1
        ));
    }
}
