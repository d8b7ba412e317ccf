//! Scenario 14, `clock`: ordermq's wall clock stepped forward and back
//! under load, as an operator's mistake or an NTP correction steps a real
//! machine's.
//!
//! ordermq runs on a wall clock the trial moves (`libfaketime`, see
//! `trial/clock.rs`); its monotonic clock, the broker's and the databases'
//! clocks keep the real time. The orders close [`CLOSE_AFTER`] after
//! creation, the close sweep runs every [`SWEEP_EVERY`] (so that it meets
//! every step), and a third of the paid orders are paid late,
//! [`PAY_LATE_BY`] after their creation: such a payment must find its order
//! open. Each trial:
//!
//! 1. steps the clock [`JUMP`] ahead (longer than the relay's 30 s lease
//!    and than the sweep's grace), holds it there under load, and
//!    `kill -9`s ordermq while it is ahead; restarted on the real time, its
//!    outbox must drain within [`DRAINS_WITHIN`] (rows the dead process
//!    claimed or wrote while its clock was ahead must not wait for the
//!    step plus the lease);
//! 2. steps it [`JUMP`] back under load, then forward again to the real
//!    time (what NTP does to a clock found behind).
//!
//! Must: no early close (the checker's `close_after`: a late payment that
//! finds its order closed before its time is a violation), payments
//! acknowledged again within [`SERVES_AGAIN`] of each step, the outbox
//! drained after the restart, and, after the trial, the usual invariants.
//! A close may come late: an order created while the clock was ahead has
//! its close time stamped a step late, and after the step back and forward
//! ordermq decides deadlines on the time it counted, a step behind the
//! wall clock, until the step has held 10 minutes (`ordermq_domain::clock`):
//! up to two steps late, never early.

use std::time::Duration;

use super::{CLOSE_AFTER, TrialOutcome, closes_soon};
use crate::checker::Expectations;
use crate::driver::{Load, LoadOptions};
use crate::trial::CLOCK_TAKES_EFFECT_WITHIN;
use crate::{ChaosError, Options, Trial, catalog_stock};

/// How far the clock steps: further than a claim trusts a due time ahead
/// (60 s, `due_rule!` in the store), so that what the killed process
/// stamped while ahead would wait the step (plus the lease) without it;
/// past any close.
const JUMP: Duration = Duration::from_secs(75);

/// The close sweep's interval in this scenario (60 s by default).
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// How late the late payments come: within [`CLOSE_AFTER`], less the
/// checker's tolerance.
const PAY_LATE_BY: Duration = Duration::from_secs(2);

/// How soon after a step (or the restart) a payment must be acknowledged.
const SERVES_AGAIN: Duration = Duration::from_secs(30);

/// How soon after the restart on the real time the outbox must be empty
/// (the load stopped meanwhile): what the dead process leased or wrote
/// while a step ahead must not wait for the step.
const DRAINS_WITHIN: Duration = Duration::from_secs(40);

fn load(trial: &Trial) -> Load {
    Load::start(
        &trial.driver,
        LoadOptions {
            refund_probability: 0.1,
            carrier_probability: 0.1,
            late_payments: 0.3,
            late_by: PAY_LATE_BY,
            ..LoadOptions::default()
        },
    )
}

/// Scenario 14: the wall clock stepped ahead (and ordermq killed there),
/// then back, under load.
pub(super) async fn clock(options: &Options) -> TrialOutcome {
    let mut trial = Trial::new(options, true).await?;
    trial.start_broker().await?;
    closes_soon(&mut trial);
    trial.set(
        "close_sweep_interval",
        format!("{}s", SWEEP_EVERY.as_secs()),
    );
    trial.fake_clock()?;
    trial.start_providers().await?;
    trial.start_ordermq().await?;
    let jump = JUMP.as_secs() as i64;
    let mut notes = Vec::new();
    let mut steps = 0;
    let mut running = Some(self::load(&trial));
    let result = async {
        // 1. Ahead, and killed there.
        tokio::time::sleep(options.load_phase).await;
        trial.set_clock(jump)?;
        steps += 1;
        let load = running.as_ref().expect("the load runs");
        served_after(load, "the clock stepped ahead", &mut notes, options).await;
        tokio::time::sleep(options.load_phase).await;
        trial.kill_ordermq();
        trial.set_clock(0)?;
        steps += 1;
        trial.start_ordermq().await?;
        let restarted = std::time::Instant::now();
        // The load stops once ordermq is back (its carriers finish their
        // orders), so that the outbox can drain.
        if let Some(load) = running.take() {
            load.stop().await;
        }
        let drained = trial
            .wait_drained(DRAINS_WITHIN.saturating_sub(restarted.elapsed()))
            .await;
        let left = if drained {
            format!("drained {:?} after the restart", restarted.elapsed())
        } else {
            // What was left: unsent outbox rows (a lease stamped by the
            // clock ahead) or events not yet applied.
            let stats = trial.stats().await.unwrap_or_default();
            format!(
                "not drained within {DRAINS_WITHIN:?}: outbox backlog {}, applied by the \
                 systems {}",
                stats["outbox_backlog"], stats["systems"]
            )
        };
        options.say(format!(
            "  killed {JUMP:?} ahead, restarted on the real time: {left}"
        ));
        if !drained {
            notes.push(format!(
                "after a kill {JUMP:?} ahead and a restart on the real time: {left}"
            ));
        }
        // 2. Behind, then forward to the real time.
        let load = running.insert(self::load(&trial));
        tokio::time::sleep(options.load_phase).await;
        trial.set_clock(-jump)?;
        steps += 1;
        served_after(load, "the clock stepped back", &mut notes, options).await;
        tokio::time::sleep(options.load_phase).await;
        trial.set_clock(0)?;
        steps += 1;
        served_after(
            load,
            "the clock stepped forward to the real time",
            &mut notes,
            options,
        )
        .await;
        // Long enough for the sweep and the closes of what was created
        // behind the real time to come due.
        tokio::time::sleep(CLOSE_AFTER + options.load_phase).await;
        Ok::<(), ChaosError>(())
    }
    .await;
    if let Some(load) = running.take() {
        load.stop().await;
    }
    result?;
    // The last orders' closes, and those stamped while the clock was ahead.
    let stopped = std::time::Instant::now();
    let drained = trial.wait_drained(options.drain_timeout).await;
    // An order created while the clock was ahead has its close stamped a
    // step late, and after the step back and forward ordermq's deadline
    // clock holds back by a step more (it believes a step ahead after 10
    // minutes): such closes come up to two steps late.
    let settled = trial.wait_settled(JUMP * 2 + CLOSE_AFTER * 8).await
        && trial.wait_drained(options.drain_timeout).await;
    options.say(format!(
        "  {steps} clock steps, drained: {drained}, closes and refunds settled: {settled} \
         ({:?} after the load stopped)",
        stopped.elapsed()
    ));
    if !(drained && settled) {
        let stats = trial.stats().await.unwrap_or_default();
        options.say(format!(
            "  left: orders {}, outbox backlog {}, applied by the systems {}",
            stats["orders_by_status"], stats["outbox_backlog"], stats["systems"]
        ));
    }
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            closes_due: true,
            close_after: Some(CLOSE_AFTER),
            // The restart after the kill recovers the databases.
            storage_may_refuse: true,
            ..Expectations::default()
        })
        .await?;
    verdict.figures.push(format!(
        "clock steps of {JUMP:?}: {steps}; late payments (after {PAY_LATE_BY:?}) found \
         their order closed: {}",
        trial
            .driver
            .ledger
            .lock()
            .expect("ledger")
            .orders
            .values()
            .filter(|o| o.found_cancelled_at.is_some())
            .count()
    ));
    verdict.violations.extend(notes);
    Ok((verdict, steps, trial))
}

/// Waits for ordermq to read the new time, then for a payment to be
/// acknowledged; a note if none is within [`SERVES_AGAIN`].
async fn served_after(load: &Load, what: &str, notes: &mut Vec<String>, options: &Options) {
    tokio::time::sleep(CLOCK_TAKES_EFFECT_WITHIN).await;
    let before = load.acknowledged();
    let served = load.acknowledged_past(before, SERVES_AGAIN).await;
    options.say(format!(
        "  {what}: a payment acknowledged {}",
        match served {
            Some(took) => format!("{took:?} after"),
            None => format!("not within {SERVES_AGAIN:?}"),
        }
    ));
    if served.is_none() {
        notes.push(format!(
            "no payment acknowledged within {SERVES_AGAIN:?} after {what}"
        ));
    }
}
