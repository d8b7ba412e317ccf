//! Scenario 9, `pause`: ordermq frozen with SIGSTOP under load for longer
//! than the relay's lease (30 s) and every client's timeout, then thawed
//! with SIGCONT.
//!
//! A pause is not a crash: the process comes back with its memory, its
//! open connections and its timers, but every deadline it set has passed at
//! once. Its in-flight sends to the broker time out though the broker may
//! have stored them (the relay must send them again, the inboxes must skip
//! the copies), the closes and hops that fell due meanwhile all fire
//! together, the relay's claimed rows are past their lease, and the
//! shoppers' requests that were waiting got no answer (the ledger treats
//! those as maybe-applied). The broker is a process of its own and keeps
//! running, so the consumer groups' connections are the ones that lapse.
//! After each thaw ordermq must answer payments again within
//! [`SERVES_AGAIN`]; after the trial the checker wants every order's effects
//! once, every due close fired once and every refund done.
//!
//! One instance only: a second one taking the paused one's lease is the
//! topology's fault (several order instances), not this scenario's.

use std::time::Duration;

use super::{TrialOutcome, closes_soon, settle};
use crate::checker::Expectations;
use crate::driver::{Load, LoadOptions};
use crate::{ChaosError, Options, Trial, catalog_stock};

/// How soon after a thaw a payment must be acknowledged again.
const SERVES_AGAIN: Duration = Duration::from_secs(30);

/// Scenario 9: SIGSTOP ordermq under load past its lease, SIGCONT, repeat.
pub(super) async fn pause(options: &Options) -> TrialOutcome {
    let mut trial = Trial::new(options, true).await?;
    trial.start_broker().await?;
    closes_soon(&mut trial);
    trial.set("feed", "on");
    trial.start_ordermq().await?;
    trial.start_feed_sink()?;
    let load = Load::start(
        &trial.driver,
        LoadOptions {
            refund_probability: 0.1,
            ..LoadOptions::default()
        },
    );
    let mut notes = Vec::new();
    let mut pauses = 0;
    let result = async {
        for _ in 0..options.pauses_per_trial {
            tokio::time::sleep(options.load_phase).await;
            trial.pause_ordermq()?;
            pauses += 1;
            tokio::time::sleep(options.pause).await;
            let before = load.acknowledged();
            trial.resume_ordermq()?;
            let served = load.acknowledged_past(before, SERVES_AGAIN).await;
            options.say(format!(
                "  paused {:?}; a payment acknowledged {} after the thaw",
                options.pause,
                match served {
                    Some(took) => format!("{took:?}"),
                    None => format!("not within {SERVES_AGAIN:?}"),
                }
            ));
            if served.is_none() {
                notes.push(format!(
                    "no payment acknowledged within {SERVES_AGAIN:?} of a thaw"
                ));
            }
        }
        tokio::time::sleep(options.load_phase).await;
        Ok::<(), ChaosError>(())
    }
    .await;
    if result.is_err() {
        // Never leave a frozen process behind.
        let _ = trial.resume_ordermq();
    }
    load.stop().await;
    result?;
    let (drained, settled) = settle(&trial, options).await;
    options.say(format!(
        "  {pauses} pauses, drained: {drained}, closes and refunds settled: {settled}"
    ));
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            closes_due: true,
            ..Expectations::default()
        })
        .await?;
    verdict.violations.extend(notes);
    Ok((verdict, pauses, trial))
}
