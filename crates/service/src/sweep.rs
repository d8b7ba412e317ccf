//! The close sweep: the backstop for close messages that never came (a lost
//! delayed message, an outbox row restored from a backup). It reads only
//! overdue unpaid orders, through an index, once per interval — never a
//! table scan (see ARCHITECTURE.md). "Overdue" is read on the deadline
//! clock ([`deadline_millis`]): a wall clock stepped ahead closes nothing
//! early.

use std::time::Duration;

use ordermq_domain::clock::{deadline_millis, now_millis};
use ordermq_store::{CloseOutcome, Store};
use tokio_util::sync::CancellationToken;

use crate::group_commit::OrderWriter;

/// Closes UNPAID orders overdue by more than one `interval`, every
/// `interval`, until `stop`: the backstop for close messages that never came.
pub async fn sweep_overdue(
    store: Store,
    writer: OrderWriter,
    interval: Duration,
    stop: CancellationToken,
) {
    if interval.is_zero() {
        return;
    }
    let grace = interval.as_millis() as i64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = deadline_millis();
        let ahead = now_millis() - now;
        if ahead > grace {
            tracing::warn!(
                ahead_ms = ahead,
                "the wall clock is ahead of the time this process has counted (stepped \
                 forward?): closes wait for the time counted until the step has held 10 minutes"
            );
        }
        let overdue = match store.overdue_unpaid(now, grace, 500).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "close sweep cannot read overdue orders; will retry");
                continue;
            }
        };
        let mut closed = 0;
        for order_id in overdue {
            if let Ok(CloseOutcome::Closed) = writer.close(order_id).await {
                closed += 1;
            }
        }
        if closed > 0 {
            tracing::warn!(
                closed,
                "close sweep closed overdue orders whose close message did not arrive"
            );
        }
    }
}
