//! What the checker reads: the order database and each downstream
//! system's, in one pass after the trial (ordermq stopped or drained).
//!
//! Apart from the rules so that one place knows where each fact lives: in
//! one process's databases, or — the systems running as processes of their
//! own — in each system's own database.

use std::collections::{BTreeMap, HashMap};

use ordermq_domain::System;
use ordermq_domain::ports::StorageError;
use ordermq_store::{
    AuditCarrier, AuditOrder, AuditPayment, AuditRefund, AuditReversals, AuditStock, Store,
    SystemAudit,
};

use super::Verdict;

/// Everything the checker reads, in one consistent pass after the trial.
pub(super) struct Databases {
    pub(super) orders: Vec<AuditOrder>,
    pub(super) payments: Vec<AuditPayment>,
    pub(super) stock: Vec<AuditStock>,
    /// Outbox rows never confirmed by the broker, parked ones included.
    pub(super) outbox: i64,
    pub(super) systems: BTreeMap<System, SystemAudit>,
    /// order id → its status transitions `(from, to)`, oldest first.
    pub(super) history: HashMap<String, Vec<(Option<String>, String)>>,
    pub(super) refunds: Vec<AuditRefund>,
    pub(super) reversals: AuditReversals,
    pub(super) carrier: AuditCarrier,
}

/// Outbox rows the broker never confirmed: waiting, or parked after
/// failing every attempt.
async fn unconfirmed_outbox(store: &Store) -> Result<i64, StorageError> {
    Ok(store.outbox_backlog().await? + store.outbox_parked().await?)
}

/// What every system took back for refunds, each from its own database.
async fn reversals(own: &[(System, &Store)]) -> Result<AuditReversals, StorageError> {
    let mut all = AuditReversals::default();
    for &(system, store) in own {
        all.extend(store.audit_reversals_of(system).await?);
    }
    Ok(all)
}

/// The carrier events from the order database, the shipments from the
/// warehouse's.
async fn carrier(orders: &Store, warehouse: &Store) -> Result<AuditCarrier, StorageError> {
    Ok(AuditCarrier {
        events: orders.audit_carrier_events().await?,
        ..warehouse.audit_warehouse_carrier().await?
    })
}

/// Reads the order database and every system's (each system's from its
/// store in `system_stores`); `None` (with the violation recorded) if one
/// cannot be read.
pub(super) async fn read_databases(
    store: &Store,
    system_stores: &BTreeMap<System, &Store>,
    v: &mut Verdict,
) -> Option<Databases> {
    let mut own = Vec::new();
    for system in System::ALL {
        let Some(store) = system_stores.get(&system) else {
            v.violation(format!("no database given for {}", system.name()));
            return None;
        };
        own.push((system, *store));
    }
    let warehouse = system_stores[&System::Warehouse];
    let (orders, payments, stock, outbox) = match (
        store.audit_orders().await,
        store.audit_payments().await,
        store.audit_stock().await,
        // A parked row is as unconfirmed as one still waiting.
        unconfirmed_outbox(store).await,
    ) {
        (Ok(o), Ok(p), Ok(s), Ok(b)) => (o, p, s, b),
        (o, p, s, b) => {
            v.violation(format!(
                "cannot read the order database: {:?} {:?} {:?} {:?}",
                o.err(),
                p.err(),
                s.err(),
                b.err()
            ));
            return None;
        }
    };
    let (history, refunds, reversals, carrier) = match (
        store.audit_history().await,
        store.audit_refunds().await,
        reversals(&own).await,
        carrier(store, warehouse).await,
    ) {
        (Ok(h), Ok(r), Ok(x), Ok(c)) => (h, r, x, c),
        (h, r, x, c) => {
            v.violation(format!(
                "cannot read the history, refunds, reversals or carrier events: {:?} {:?} {:?} {:?}",
                h.err(),
                r.err(),
                x.err(),
                c.err()
            ));
            return None;
        }
    };
    let mut systems = BTreeMap::new();
    for (system, own) in own {
        match own.audit_system(system).await {
            Ok(audit) => {
                systems.insert(system, audit);
            }
            Err(e) => {
                v.violation(format!("cannot read the {} database: {e}", system.name()));
                return None;
            }
        }
    }
    Some(Databases {
        orders,
        payments,
        stock,
        outbox,
        systems,
        history,
        refunds,
        reversals,
        carrier,
    })
}
