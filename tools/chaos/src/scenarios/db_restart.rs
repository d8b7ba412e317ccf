//! Scenario 10, `db-restart`: the order database's PostgreSQL server — one
//! of the trial's own, `fsync` on — stopped under load and started again,
//! then crashed (`immediate`: no shutdown checkpoint, the WAL replayed at the
//! next start) and started again. ordermq itself is never restarted.
//!
//! A database that goes away is not a process crash: ordermq keeps running
//! with its pool's connections all broken at once, the relay's claimed rows
//! and the consumer groups' effect commits failing mid-transaction, and a
//! commit whose answer was lost with the connection (applied or not,
//! ordermq cannot tell: the shopper's answer is 503 and the ledger treats
//! it as maybe-applied). While the server is away a request must be
//! answered 503 `STORAGE_UNAVAILABLE` promptly (the pool's acquire timeout,
//! 2 s by default), not hang; once it is back ordermq must acknowledge
//! payments again within [`SERVES_AGAIN`] with no restart of its own, and
//! after the trial every acknowledged payment is `PAID` with its effects
//! once, every due close fired once and every refund done. The consumer
//! groups' failures while the server is away are retried by the listener
//! bridge on the broker's schedule (the chaos levels: 1–2 s), so a failed
//! effect comes back after the outage instead of reaching the DLQ.

use std::time::{Duration, Instant};

use ordermq_testkit::postgres::PgServer;

use super::{TrialOutcome, closes_soon, settle};
use crate::checker::Expectations;
use crate::driver::{Answer, Load, LoadOptions};
use crate::{ChaosError, Options, Trial, catalog_stock};

/// How soon after the server is back a payment must be acknowledged again.
const SERVES_AGAIN: Duration = Duration::from_secs(30);

/// The longest a request may take to be refused while the server is away.
const REFUSED_WITHIN: Duration = Duration::from_secs(10);

/// How the server goes away.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// `pg_ctl stop -m fast`: clients cut, a clean shutdown.
    Stop,
    /// `pg_ctl stop -m immediate`: as a crash, recovered from the WAL.
    Crash,
}

/// Scenario 10: the order database's server stopped, then crashed, under load.
pub(super) async fn db_restart(options: &Options) -> TrialOutcome {
    let mut trial = Trial::with_own_postgres(options, false).await?;
    closes_soon(&mut trial);
    trial.start_ordermq().await?;
    let load = Load::start(
        &trial.driver,
        LoadOptions {
            refund_probability: 0.1,
            ..LoadOptions::default()
        },
    );
    let mut notes = Vec::new();
    let mut outages = 0;
    // Long enough for closes, retries and the relay to fail against it.
    let away = (options.outage / 3).max(Duration::from_secs(3));
    let result = async {
        for outage in [Outage::Stop, Outage::Crash] {
            tokio::time::sleep(options.load_phase).await;
            match outage {
                Outage::Stop => trial.postgres_server("stop", PgServer::stop).await?,
                Outage::Crash => trial.postgres_server("crash", PgServer::kill).await?,
            }
            outages += 1;
            let went = Instant::now();
            // A request while it is away: refused promptly, with the code.
            let asked = Instant::now();
            let answer = trial.driver.create("chaos-db-probe", &[("SKU-1", 1)]).await;
            let took = asked.elapsed();
            match &answer {
                Answer::Got(503, body)
                    if body["code"] == "STORAGE_UNAVAILABLE" && took <= REFUSED_WITHIN => {}
                other => notes.push(format!(
                    "{outage:?}: an order created while the server was away was answered \
                     {other:?} after {took:?} (want 503 STORAGE_UNAVAILABLE within {REFUSED_WITHIN:?})"
                )),
            }
            tokio::time::sleep(away.saturating_sub(went.elapsed())).await;
            let before = load.acknowledged();
            trial.postgres_server("start", PgServer::resume).await?;
            let served = load.acknowledged_past(before, SERVES_AGAIN).await;
            options.say(format!(
                "  {outage:?} for {away:?}: refused in {took:?}; a payment acknowledged {} after the server was back",
                match served {
                    Some(took) => format!("{took:?}"),
                    None => format!("not within {SERVES_AGAIN:?}"),
                }
            ));
            if served.is_none() {
                notes.push(format!(
                    "{outage:?}: no payment acknowledged within {SERVES_AGAIN:?} of the server's return"
                ));
            }
        }
        tokio::time::sleep(options.load_phase).await;
        Ok::<(), ChaosError>(())
    }
    .await;
    if result.is_err() {
        // Never check (or leave) a trial whose server is down.
        let _ = trial.postgres_server("start", PgServer::resume).await;
    }
    load.stop().await;
    result?;
    let (drained, settled) = settle(&trial, options).await;
    options.say(format!(
        "  {outages} outages, drained: {drained}, closes and refunds settled: {settled}"
    ));
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            closes_due: true,
            storage_may_refuse: true,
            ..Expectations::default()
        })
        .await?;
    verdict.violations.extend(notes);
    Ok((verdict, outages, trial))
}
