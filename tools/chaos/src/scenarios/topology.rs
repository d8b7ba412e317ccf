//! Scenarios 15–18, the topology faults: the seed's production topology on
//! one machine ([`Trial::with_topology`]: three order instances on one
//! PostgreSQL database, the four downstream systems as processes of their
//! own on databases of their own, an `ordermq broker` process), one of its
//! processes taken away at a time under load.
//!
//! - `instance-crash`: `kill -9` of one of the three order instances at a
//!   time, restarted after a moment. The others must keep answering
//!   payments meanwhile; what the dead one had acknowledged, claimed from
//!   the outbox or left half written must be finished by whoever comes
//!   next (the restarted instance or another, through the relay's lease).
//! - `system-crash`: `kill -9` of one instance of one system (two of each
//!   run), restarted a few seconds later. Its group's queues are rebalanced
//!   over the survivor and back; an effect the dead one applied but never
//!   acknowledged comes again and must be recognised.
//! - `broker-failover`: the topology on a RocketMQ cluster of two
//!   NameServers and two brokers (each a process of its own, topics on
//!   both); one broker killed with `kill -9` under load, down for a third
//!   of `--outage-secs` (at least 3 s), restarted; then the other. Payments
//!   must go on, events keep flowing through the surviving broker, and the
//!   dead broker's messages are consumed after it returns. rocketmq-rust's
//!   client refuses an address for 30 s after five failed connections, so
//!   a returned broker is out of reach for up to that long: the second
//!   broker is killed only [`REACHABLE_AGAIN`] after the first returned
//!   (killed sooner, no event flows at all until the first is reachable
//!   again — seen in the first run — while payments are still answered).
//! - `rolling-restart`: every process, order instances first, stopped with
//!   SIGTERM (it finishes what it holds, then leaves) and started again,
//!   one after another under load, as a deployment does. Nothing may be
//!   doubled, and every stop must be clean.
//!
//! Closes fall due after 4 s, one paid order in ten is refunded and one in
//! ten moved by its carrier, and the third parties are a process of their
//! own with their call log on disk: the checker sees a second SMS or
//! booking after a kill. Each trial reports the payments' p50 and p99 over
//! the trial, faults included.

use std::time::Duration;

use super::{TrialOutcome, closes_soon, settle};
use crate::checker::Expectations;
use crate::driver::{Load, LoadOptions};
use crate::trial::{BROKERS, NodeId, Topology};
use crate::{ChaosError, Options, Trial, catalog_stock};

/// Order instances in every topology trial.
const ORDER_INSTANCES: usize = 3;

/// Shares of paid orders refunded and moved by their carrier (as in `crash`).
const REFUND_PROBABILITY: f64 = 0.1;
const CARRIER_PROBABILITY: f64 = 0.1;

/// How long after a broker's return the other one may be killed: past
/// rocketmq-rust's 30 s refusal of an address that failed five
/// connections (not configurable in its 1.0.0 client).
const REACHABLE_AGAIN: Duration = Duration::from_secs(35);

/// A random pause of `min_ms` to `max_ms` milliseconds.
fn random_duration(min_ms: u64, max_ms: u64) -> Duration {
    Duration::from_millis(fastrand::u64(min_ms..=max_ms))
}

/// Faults per trial: a quarter of `--crashes` (5 by default), at least 2.
fn faults_per_trial(options: &Options) -> usize {
    options.crashes_per_trial.div_ceil(4).max(2)
}

/// The topology up, with its broker (or RocketMQ cluster) and providers,
/// and the load on it.
async fn start(
    options: &Options,
    per_system: usize,
    cluster: bool,
) -> Result<(Trial, Load), ChaosError> {
    let mut trial = Trial::with_topology(options, ORDER_INSTANCES, per_system).await?;
    closes_soon(&mut trial);
    if cluster {
        trial = trial.with_mq_cluster()?;
        trial.start_mq_cluster().await?;
    } else {
        trial.start_broker().await?;
    }
    trial.start_providers().await?;
    trial.start_topology().await?;
    let load = Load::start(
        &trial.driver,
        LoadOptions {
            refund_probability: REFUND_PROBABILITY,
            carrier_probability: CARRIER_PROBABILITY,
            ..LoadOptions::default()
        },
    );
    Ok((trial, load))
}

/// What the faults of a trial did: how many, and what went wrong on the
/// way (violations found while injecting them).
#[derive(Default)]
struct Faults {
    count: usize,
    notes: Vec<String>,
}

/// Stops the load (at once if injecting the faults failed), waits for the
/// drain and the closes, and checks.
async fn end(
    mut trial: Trial,
    load: Load,
    options: &Options,
    injected: Result<Faults, ChaosError>,
    storage_may_refuse: bool,
) -> TrialOutcome {
    let faults = match injected {
        Ok(faults) => faults,
        Err(e) => {
            load.stop().await;
            return Err(e);
        }
    };
    tokio::time::sleep(options.load_phase).await;
    load.stop().await;
    let (drained, settled) = settle(&trial, options).await;
    options.say(format!(
        "  {} faults, drained: {drained}, closes and refunds settled: {settled}",
        faults.count
    ));
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            closes_due: true,
            storage_may_refuse,
            ..Expectations::default()
        })
        .await?;
    let ledger = trial.driver.ledger.lock().expect("ledger").clone();
    if let (Some(p50), Some(p99)) = (ledger.payment_quantile(0.5), ledger.payment_quantile(0.99)) {
        verdict.figures.push(format!(
            "payments answered 200: {}, p50 {:.1} ms, p99 {:.1} ms",
            ledger.payment_times.len(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        ));
    }
    verdict.violations.extend(faults.notes);
    Ok((verdict, faults.count, trial))
}

/// `kill -9` of one of `pick`'s nodes at a time, at random, each down for
/// `down_ms` (a range) and started again; a payment must be acknowledged
/// (by another instance) while it is down.
async fn kill_in_turn(
    trial: &mut Trial,
    load: &Load,
    options: &Options,
    pick: fn(&Topology) -> Vec<NodeId>,
    down_ms: (u64, u64),
) -> Result<Faults, ChaosError> {
    let mut faults = Faults::default();
    for _ in 0..faults_per_trial(options) {
        tokio::time::sleep(random_duration(500, 2_000)).await;
        let ids = pick(trial.topology());
        let victim = ids[fastrand::usize(..ids.len())];
        trial.kill_node(victim);
        faults.count += 1;
        let before = load.acknowledged();
        let down = random_duration(down_ms.0, down_ms.1);
        tokio::time::sleep(down).await;
        if load.acknowledged() == before {
            faults.notes.push(format!(
                "no payment acknowledged during the {down:?} {} was down",
                trial.topology().nodes[victim].name
            ));
        }
        trial.start_node(victim).await?;
    }
    Ok(faults)
}

/// Scenario 15: `kill -9` of one order instance at a time under load.
pub(super) async fn instance_crash(options: &Options) -> TrialOutcome {
    let (mut trial, load) = start(options, 1, false).await?;
    let injected = kill_in_turn(&mut trial, &load, options, Topology::orders, (500, 2_000)).await;
    end(trial, load, options, injected, true).await
}

/// Scenario 16: `kill -9` of one system's instance at a time under load,
/// down long enough, at times, for its group to rebalance its queues over
/// the survivor (RocketMQ's client rebalances every 20 s, and at once when
/// a consumer unregisters, which a killed one never does).
pub(super) async fn system_crash(options: &Options) -> TrialOutcome {
    let (mut trial, load) = start(options, 2, false).await?;
    let injected = kill_in_turn(&mut trial, &load, options, Topology::systems, (500, 6_000)).await;
    end(trial, load, options, injected, false).await
}

/// Scenario 17: every process stopped gracefully and started again, one
/// after another, under load.
pub(super) async fn rolling_restart(options: &Options) -> TrialOutcome {
    let (mut trial, load) = start(options, 2, false).await?;
    let injected = async {
        let topology = trial.topology();
        let every: Vec<_> = topology
            .orders()
            .into_iter()
            .chain(topology.systems())
            .collect();
        let mut faults = Faults::default();
        for id in every {
            tokio::time::sleep(random_duration(300, 1_000)).await;
            trial.stop_node(id).await;
            trial.start_node(id).await?;
            faults.count += 1;
        }
        Ok(faults)
    }
    .await;
    end(trial, load, options, injected, false).await
}

/// Scenario 18: each of two brokers killed in turn under load and brought back.
pub(super) async fn broker_failover(options: &Options) -> TrialOutcome {
    let (mut trial, load) = start(options, 1, true).await?;
    let down_for = (options.outage / 3).max(Duration::from_secs(3));
    let injected = async {
        let mut faults = Faults::default();
        // broker-b first: the one the cluster test kills; then broker-a.
        for (n, i) in [1, 0].into_iter().enumerate() {
            tokio::time::sleep(if n == 0 {
                options.load_phase
            } else {
                REACHABLE_AGAIN
            })
            .await;
            trial.kill_cluster_broker(i);
            faults.count += 1;
            let (paid, before) = (load.acknowledged(), applied(&trial).await);
            tokio::time::sleep(down_for).await;
            let after = applied(&trial).await;
            let name = BROKERS[i];
            if load.acknowledged() == paid {
                faults
                    .notes
                    .push(format!("no payment acknowledged while {name} was down"));
            }
            if before.is_some() && after <= before {
                faults.notes.push(format!(
                    "no event applied by the systems while {name} was down ({before:?} → {after:?})"
                ));
            }
            options.say(format!(
                "  {name} down {down_for:?}: {} payments acknowledged, systems' receipts {before:?} → {after:?}",
                load.acknowledged() - paid
            ));
            trial.start_cluster_broker(i).await?;
        }
        Ok(faults)
    }
    .await;
    end(trial, load, options, injected, false).await
}

/// The systems' receipts the order service holds (`/api/stats`
/// `systems.*.applied`), summed: events applied and reported back.
async fn applied(trial: &Trial) -> Option<i64> {
    let stats = trial.stats().await?;
    let systems = stats["systems"].as_object()?;
    Some(
        systems
            .values()
            .map(|s| s["applied"].as_i64().unwrap_or(0))
            .sum(),
    )
}
