//! Scenario 13, `disk-full`: the disk holding ordermq's data directory
//! fills up under load, stays full a while, then gets its space back.
//!
//! ordermq's databases are on a small disk of the trial's own (a `tmpfs`,
//! see `trial/small_disk.rs`), filled to its last byte by a file that is
//! deleted after [`FULL_FOR`]. The broker runs as its own process with its
//! store on another disk, as a broker cluster would.
//!
//! With `--disk-full-embedded` the embedded broker's store shares the full
//! disk instead, which ordermq does not survive today: rocketmq-store-local
//! 1.0.0 creates a mapped file (a consume queue's, the next commit-log
//! file) whose `fallocate` failed with `ENOSPC` as if it had not (a
//! "degradation event"), and the first write through the mapping kills the
//! process with `SIGBUS` (docs/reliability.md, "Disk full"). ordermq is not
//! restarted: it must come through by itself. While the disk is full a
//! write that needs new space fails, and a request whose write failed is
//! answered 503 `STORAGE_UNAVAILABLE` (try again later) and changed
//! nothing; any other 5xx is a violation, as everywhere. ordermq must still
//! be running when the space comes back and acknowledge a payment again
//! within [`RECOVERS_WITHIN`]; after the trial the checker wants every
//! acknowledged payment's effects once, every due close fired, every refund
//! done: a full disk loses nothing.

use std::time::Duration;

use super::{TrialOutcome, closes_soon, settle};
use crate::checker::Expectations;
use crate::driver::{Load, LoadOptions};
use crate::{ChaosError, Options, Trial, catalog_stock};

/// The small disk: room for the broker's store (its commit log and consume
/// queues are allocated up front) and the databases, with some to spare.
const DISK_BYTES: u64 = 1536 << 20;

/// How long the disk stays full each time.
const FULL_FOR: Duration = Duration::from_secs(6);

/// How soon after the space comes back a payment must be acknowledged.
const RECOVERS_WITHIN: Duration = Duration::from_secs(30);

/// Scenario 13: the data directory's disk full under load, then freed.
pub(super) async fn disk_full(options: &Options) -> TrialOutcome {
    let embedded = options.disk_full_embedded;
    let mut trial = Trial::new(options, !embedded).await?;
    trial.on_small_disk(DISK_BYTES)?;
    if !embedded {
        trial.broker_data_dir = Some(trial.dir.path().join("broker"));
        trial.start_broker().await?;
    }
    closes_soon(&mut trial);
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
    let unavailable = |trial: &Trial| trial.driver.ledger.lock().expect("ledger").unavailable;
    let mut notes = Vec::new();
    let mut fills = 0;
    let mut refused_while_full = 0;
    let result = async {
        for _ in 0..options.disk_fills_per_trial {
            tokio::time::sleep(options.load_phase / 2).await;
            let refused_before = unavailable(&trial);
            let filled = trial.fill_disk()?;
            fills += 1;
            tokio::time::sleep(FULL_FOR).await;
            let refused = unavailable(&trial) - refused_before;
            refused_while_full += refused;
            trial.free_disk()?;
            let before = load.acknowledged();
            let running = trial.ordermq.as_mut().is_some_and(|p| p.is_running());
            let recovered = if running {
                load.acknowledged_past(before, RECOVERS_WITHIN).await
            } else {
                None
            };
            options.say(format!(
                "  disk full for {FULL_FOR:?} (filled with {} MiB): {refused} requests answered \
                 503 meanwhile; {}",
                filled >> 20,
                match (running, recovered) {
                    (false, _) => "ordermq exited".to_owned(),
                    (true, Some(took)) => format!("a payment acknowledged {took:?} after"),
                    (true, None) => format!("no payment acknowledged within {RECOVERS_WITHIN:?}"),
                }
            ));
            if !running {
                return Err(trial
                    .ordermq
                    .as_mut()
                    .map(|p| p.exited("ordermq, on a full disk"))
                    .unwrap_or_else(|| ChaosError::Process("ordermq is not running".into())));
            }
            if recovered.is_none() {
                notes.push(format!(
                    "no payment acknowledged within {RECOVERS_WITHIN:?} of the space coming back"
                ));
            }
        }
        tokio::time::sleep(options.load_phase).await;
        Ok::<(), ChaosError>(())
    }
    .await;
    load.stop().await;
    if let Err(e) = result {
        // Whatever happened, the trial's files are worth keeping.
        let kept = trial.keep();
        return Err(ChaosError::Process(format!("{e} (kept {kept})")));
    }
    let (drained, settled) = settle(&trial, options).await;
    options.say(format!(
        "  {fills} fills, drained: {drained}, closes and refunds settled: {settled}"
    ));
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            closes_due: true,
            // "Try again later" while the disk is full.
            storage_may_refuse: true,
            ..Expectations::default()
        })
        .await?;
    verdict.figures.push(format!(
        "disk fills: {fills} of {FULL_FOR:?} each, requests answered 503 while full: \
         {refused_while_full}"
    ));
    verdict.violations.extend(notes);
    Ok((verdict, fills, trial))
}
