//! Scenario 1, `crash`: ordermq killed with `kill -9` at random moments under
//! load — sometimes while it is still starting — and restarted, twenty times
//! a trial.
//!
//! The crudest fault and the one every other guarantee rests on: whatever a
//! process was doing when it died (a payment half written, an outbox row not
//! yet relayed, a broker store mid-append), the restart must finish it
//! without losing or repeating anything.
//!
//! Unpaid orders close after [`CLOSE_AFTER`](super::CLOSE_AFTER) here (30 min by default), so
//! closes fire between and during the kills, and one paid order in ten is
//! refunded in full right after its payment: after the drain the trial waits
//! until every close was due and every refund answered, and the checker
//! wants each order's history to be one chain (a close applied twice breaks
//! it), no order left UNPAID, and each refund done and taken back once.
//!
//! `ordermq feed sink` runs beside it as a process of its own, loses its
//! broker at every kill, and is itself killed with `kill -9` at one kill in
//! three; after the trial `ordermq feed verify` must find the sink equal to
//! the order database (0 differences, 0 gaps, 0 reorderings).
//!
//! The third parties are a process of their own too
//! (`ordermq-fake-provider`, called over HTTP, its idempotency keys and call
//! log on disk), so a second SMS, booking or refund sent after a kill is
//! seen in its call log, not hidden by a row the database refuses twice;
//! and one paid order in ten is moved by its carrier (picked up, in
//! transit, delivered: signed callbacks sent again while unanswered), so
//! carrier updates ride through the kills as well.

use std::time::Duration;

use super::{TrialOutcome, closes_soon, settle};
use crate::checker::Expectations;
use crate::driver::{Load, LoadOptions};
use crate::{Options, Trial, catalog_stock};

/// The share of paid orders refunded in full during the trial (the
/// refund's event, the gateway's call and every system's reversal then ride
/// through the kills too).
const REFUND_PROBABILITY: f64 = 0.1;

/// The share of paid orders (not refunded) whose carrier then reports
/// them picked up, in transit and delivered during the trial.
const CARRIER_PROBABILITY: f64 = 0.1;

/// A random pause of `min_ms` to `max_ms` milliseconds.
fn random_duration(min_ms: u64, max_ms: u64) -> Duration {
    Duration::from_millis(fastrand::u64(min_ms..=max_ms))
}

/// Scenario 1: `kill -9` at random moments under load, restart, repeat.
pub(super) async fn crash(options: &Options) -> TrialOutcome {
    let mut trial = Trial::new(options, false).await?;
    closes_soon(&mut trial);
    trial.set("feed", "on");
    trial.start_providers().await?;
    trial.start_ordermq().await?;
    trial.start_feed_sink()?;
    let load = Load::start(
        &trial.driver,
        LoadOptions {
            refund_probability: REFUND_PROBABILITY,
            carrier_probability: CARRIER_PROBABILITY,
            ..LoadOptions::default()
        },
    );
    let mut kills = 0;
    for _ in 0..options.crashes_per_trial {
        if fastrand::f64() < 0.2 {
            // Killed while starting: recovering its databases and the broker's store.
            trial.spawn_ordermq()?;
            tokio::time::sleep(random_duration(50, 1_000)).await;
            trial.kill_ordermq();
            kills += 1;
            if let Err(e) = trial.start_ordermq().await {
                load.stop().await;
                return Err(e);
            }
            continue;
        }
        tokio::time::sleep(random_duration(200, 1_500)).await;
        trial.kill_ordermq();
        kills += 1;
        let sink_too = fastrand::u8(..3) == 0;
        if sink_too {
            trial.kill_feed_sink();
        }
        tokio::time::sleep(random_duration(0, 300)).await;
        if let Err(e) = trial.start_ordermq().await {
            load.stop().await;
            return Err(e);
        }
        if sink_too && let Err(e) = trial.start_feed_sink() {
            load.stop().await;
            return Err(e);
        }
    }
    tokio::time::sleep(options.load_phase).await;
    load.stop().await;
    let (drained, settled) = settle(&trial, options).await;
    options.say(format!(
        "  {kills} kills, drained: {drained}, closes and refunds settled: {settled}"
    ));
    let verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            closes_due: true,
            // Restarted on its databases: "try again later" while they recover.
            storage_may_refuse: true,
            ..Expectations::default()
        })
        .await?;
    Ok((verdict, kills, trial))
}
