//! Scenario 12, `power-loss`: the machine's power cut under load, a few
//! times a trial, ordermq started again on what its disk kept.
//!
//! ordermq's data directory — the order and system databases (SQLite) and
//! the embedded broker's store — is on the power-cut filesystem
//! (`ordermq-powercut`, see `tools/powercut`): a cut `kill -9`s ordermq and
//! takes back every write since its file's last `fsync`, so what a power
//! loss takes from a real disk's page cache is gone: SQLite's commits not
//! synced, the broker's messages acknowledged but not flushed. The third
//! parties are other machines and keep their call logs.
//!
//! With the defaults (`embedded_broker_flush = sync`: a send is answered
//! after its message is on disk; SQLite `synchronous = FULL`) and the
//! reconciler publishing again what some group never acknowledged (after
//! [`RECONCILE_AFTER`] here), nothing acknowledged may be lost: every
//! paid order gets its effects, once. With `--power-loss-unsafe` the trial
//! runs the broker with `async` flush and the reconciler off, to show what
//! those defaults protect against: losses are expected there, and reported.

use std::time::Duration;

use super::{TrialOutcome, closes_soon, settle};
use crate::checker::Expectations;
use crate::driver::{Load, LoadOptions};
use crate::{Options, Trial, catalog_stock};

/// When the reconciler publishes again an event some group has not
/// acknowledged (5 min by default): within the trial.
const RECONCILE_AFTER: Duration = Duration::from_secs(5);

/// Scenario 12: the power cut under load, ordermq restarted on what survived.
pub(super) async fn power_loss(options: &Options) -> TrialOutcome {
    let mut trial = Trial::new(options, false).await?;
    trial.on_power_cut_disk()?;
    closes_soon(&mut trial);
    if options.power_loss_unsafe {
        trial.set("embedded_broker_flush", "async");
        trial.set("reconcile_interval", "0s");
    } else {
        trial.set("reconcile_after", format!("{}s", RECONCILE_AFTER.as_secs()));
        trial.set("reconcile_interval", "1s");
    }
    trial.start_providers().await?;
    trial.start_ordermq().await?;
    let load = Load::start(
        &trial.driver,
        LoadOptions {
            refund_probability: 0.1,
            carrier_probability: 0.1,
            ..LoadOptions::default()
        },
    );
    let mut cuts = 0;
    let mut taken = (0, 0);
    for _ in 0..options.power_cuts_per_trial {
        tokio::time::sleep(options.load_phase / 2 + Duration::from_millis(fastrand::u64(0..1_500)))
            .await;
        let report = match trial.cut_power() {
            Ok(report) => report,
            Err(e) => {
                load.stop().await;
                return Err(e);
            }
        };
        cuts += 1;
        taken.0 += report.pages_restored;
        taken.1 += report.bytes_truncated;
        if let Err(e) = trial.start_ordermq().await {
            load.stop().await;
            return Err(e);
        }
    }
    tokio::time::sleep(options.load_phase).await;
    load.stop().await;
    let (drained, settled) = settle(&trial, options).await;
    options.say(format!(
        "  {cuts} power cuts (took back {} pages, {} bytes past synced ends), drained: {drained}, \
         closes and refunds settled: {settled}",
        taken.0, taken.1
    ));
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            closes_due: true,
            // Restarted on its databases: "try again later" while they recover.
            storage_may_refuse: true,
            ..Expectations::default()
        })
        .await?;
    verdict.figures.push(format!(
        "power cuts: {cuts}, unsynced writes taken back: {} pages, {} bytes{}",
        taken.0,
        taken.1,
        if options.power_loss_unsafe {
            " (broker flush async, reconciler off)"
        } else {
            ""
        }
    ));
    Ok((verdict, cuts, trial))
}
