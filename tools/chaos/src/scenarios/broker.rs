//! Scenario 2, `broker-outage`: the broker, run as its own process, stopped
//! gracefully for a long outage under load, brought back, then killed with
//! `kill -9` and brought back again.
//!
//! It stands apart because it is the one fault outside ordermq: payments
//! must go on while the broker is away (the outbox holds their events), and
//! everything must be delivered once it is back.
//!
//! `ordermq feed sink` runs as a process of its own through both outages
//! (and is killed with `kill -9` with the broker); after the trial `ordermq
//! feed verify` must find 0 differences, 0 gaps and 0 reorderings.

use super::TrialOutcome;
use crate::checker::Expectations;
use crate::driver::{Load, LoadOptions};
use crate::{ChaosError, Options, Trial, catalog_stock};

/// Scenario 2: The broker, as its own process, stopped for `options.outage` under load
/// (payments must keep succeeding), brought back, then killed with `kill -9`
/// and brought back again; everything must be delivered afterwards.
pub(super) async fn broker_outage(options: &Options) -> TrialOutcome {
    let mut trial = Trial::new(options, true).await?;
    trial.start_broker().await?;
    trial.set("feed", "on");
    trial.start_ordermq().await?;
    trial.start_feed_sink()?;
    let load = Load::start(&trial.driver, LoadOptions::default());
    let mut faults = 0;
    let mut notes = Vec::new();
    tokio::time::sleep(options.load_phase).await;

    // Graceful stop, long outage.
    trial.stop_broker().await;
    faults += 1;
    let before = load.acknowledged();
    tokio::time::sleep(options.outage).await;
    let during = load.acknowledged() - before;
    options.say(format!(
        "  broker stopped for {:?}: {during} payments acknowledged meanwhile",
        options.outage
    ));
    if during == 0 {
        notes.push(format!(
            "no payment succeeded during the {:?} broker outage",
            options.outage
        ));
    }
    let backlog = trial
        .stats()
        .await
        .and_then(|s| s["outbox_backlog"].as_i64())
        .unwrap_or(0);
    if backlog == 0 && during > 0 {
        notes.push("the outbox did not grow while the broker was down".into());
    }
    let result = async {
        trial.start_broker().await?;
        tokio::time::sleep(options.load_phase).await;

        // kill -9, short outage.
        trial.kill_broker();
        trial.kill_feed_sink();
        faults += 1;
        tokio::time::sleep(options.outage / 3).await;
        trial.start_broker().await?;
        trial.start_feed_sink()?;
        tokio::time::sleep(options.load_phase).await;
        Ok::<(), ChaosError>(())
    }
    .await;
    load.stop().await;
    result?;
    let drained = trial.wait_drained(options.drain_timeout).await;
    options.say(format!(
        "  outbox backlog at the end of the outage: {backlog}; drained: {drained}"
    ));
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            ..Expectations::default()
        })
        .await?;
    verdict.violations.extend(notes);
    Ok((verdict, faults, trial))
}
