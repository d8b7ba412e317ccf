//! The fault scenarios. Each trial starts from an empty data directory,
//! injects its fault under load, heals, waits for the backlogs to drain and
//! hands the databases to the checker.
//!
//! This file is the suite's view of them: the [`Scenario`] names, and
//! [`Scenario::run`], which runs a scenario's trials and totals their
//! verdicts. Each scenario is a trial function in a file of its own, since
//! each tells one story (a fault, how it is healed, what must hold after)
//! that reads best without the others around it:
//! - `crash`: `kill -9` of ordermq under load;
//! - `broker`: the broker stopped, then killed, under load;
//! - `flaky`: failing third parties, then the dead-letter queue and replay;
//! - `redelivery`: duplicate, reordered and double payments, then every
//!   message again from offset zero;
//! - `stampede`: many buyers for the last unit(s) of stock;
//! - `bad_input`: generated hostile requests against the live binary;
//! - `security`: strangers on every guarded route, forged callbacks and
//!   events, slow clients beside real shoppers;
//! - `flash_sale`: a crowd at a flash sale under `kill -9`, then a sweep
//!   of what is left;
//! - `pause`: ordermq frozen (SIGSTOP) under load past its relay lease and
//!   its clients' timeouts, then thawed;
//! - `db_restart`: the order database's PostgreSQL server stopped, then
//!   crashed, under load, and started again;
//! - `poison`: signed messages that are no event among real ones, on the
//!   payment, refund and close topics;
//! - `power_loss`: the power cut under load (ordermq's data directory on a
//!   filesystem that forgets every write not fsynced), restarted on what
//!   the disk kept;
//! - `disk_full`: the data directory's disk filled to its last byte under
//!   load, then freed; ordermq comes through without a restart;
//! - `clock`: ordermq's wall clock stepped ahead (and ordermq killed
//!   there), then back, under load;
//! - `topology`: the seed's topology (three order instances, the systems
//!   as processes of their own): `instance-crash`, `system-crash`,
//!   `broker-failover` (on two brokers) and `rolling-restart`.

mod bad_input;
mod broker;
mod clock;
mod crash;
mod db_restart;
mod disk_full;
mod flaky;
mod flash_sale;
mod pause;
mod poison;
mod power_loss;
mod redelivery;
mod security;
mod stampede;
mod topology;

use std::time::{Duration, Instant};

use super::checker::Verdict;
use super::report::ScenarioResult;
use super::{ChaosError, Options, Trial};

/// How long an unpaid order lives in the scenarios that let closes fire
/// (30 min by default): short enough that closes fire during the trial,
/// long enough that a payment retried after a fault usually still finds its
/// order open.
const CLOSE_AFTER: Duration = Duration::from_secs(4);

/// Lets unpaid orders close during the trial, after [`CLOSE_AFTER`].
fn closes_soon(trial: &mut Trial) {
    trial.set("order_close_after", format!("{}s", CLOSE_AFTER.as_secs()));
}

/// Waits, once the load stopped, for the backlogs to drain and then for
/// every close and refund to settle (the last orders' closes are due
/// [`CLOSE_AFTER`] after the load stopped, then at most a hop late; a
/// refund answered late still has its reversals to deliver). Returns
/// (drained, settled).
async fn settle(trial: &Trial, options: &Options) -> (bool, bool) {
    let drained = trial.wait_drained(options.drain_timeout).await;
    let settled = trial.wait_settled(CLOSE_AFTER * 8).await
        && trial.wait_drained(options.drain_timeout).await;
    (drained, settled)
}

/// A scenario of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `kill -9` ordermq at random moments under load, restart, repeat.
    Crash,
    /// Stop the broker (its own process) under load, bring it back; then `kill -9` it.
    BrokerOutage,
    /// SMS and logistics failing 30 %; then a gateway down for good → DLQ → replay.
    Flaky,
    /// Consumer offsets reset to zero; duplicate, reordered and double payments.
    Redelivery,
    /// Many concurrent orders for the last unit(s) of stock.
    LastUnit,
    /// Generated malformed and hostile requests against every endpoint.
    BadInput,
    /// Calls without or with the wrong credentials, forged callbacks and
    /// events, hundreds of slow connections beside real shoppers.
    Security,
    /// A crowd at a flash sale while ordermq is killed and restarted; then
    /// a sweep that buys what is left.
    FlashSale,
    /// SIGSTOP ordermq under load past its relay lease and its clients'
    /// timeouts, then SIGCONT.
    Pause,
    /// The order database's PostgreSQL server (the trial's own) stopped,
    /// then crashed, under load, and started again.
    DbRestart,
    /// Signed messages that are no event among real ones, under load.
    Poison,
    /// The power cut under load: every write not fsynced lost, restarted.
    PowerLoss,
    /// The data directory's disk full under load, then freed.
    DiskFull,
    /// ordermq's wall clock stepped ahead and back under load.
    Clock,
    /// `kill -9` of one of three order instances at a time under load.
    InstanceCrash,
    /// `kill -9` of one downstream system's instance at a time under load.
    SystemCrash,
    /// Every process of the topology stopped and started again in turn.
    RollingRestart,
    /// One of two brokers killed under load and brought back, then the other.
    BrokerFailover,
}

impl Scenario {
    /// Every scenario, in the order `--scenario all` runs them.
    pub const ALL: [Scenario; 18] = [
        Self::Crash,
        Self::BrokerOutage,
        Self::Flaky,
        Self::Redelivery,
        Self::LastUnit,
        Self::BadInput,
        Self::Security,
        Self::FlashSale,
        Self::Pause,
        Self::DbRestart,
        Self::Poison,
        Self::PowerLoss,
        Self::DiskFull,
        Self::Clock,
        Self::InstanceCrash,
        Self::SystemCrash,
        Self::RollingRestart,
        Self::BrokerFailover,
    ];

    /// The scenario's name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Crash => "crash",
            Self::BrokerOutage => "broker-outage",
            Self::Flaky => "flaky",
            Self::Redelivery => "redelivery",
            Self::LastUnit => "last-unit",
            Self::BadInput => "bad-input",
            Self::Security => "security",
            Self::FlashSale => "flash-sale",
            Self::Pause => "pause",
            Self::DbRestart => "db-restart",
            Self::Poison => "poison",
            Self::PowerLoss => "power-loss",
            Self::DiskFull => "disk-full",
            Self::Clock => "clock",
            Self::InstanceCrash => "instance-crash",
            Self::SystemCrash => "system-crash",
            Self::RollingRestart => "rolling-restart",
            Self::BrokerFailover => "broker-failover",
        }
    }

    /// What the scenario injects, for the report's fault column.
    fn fault_kind(self) -> &'static str {
        match self {
            Self::Crash => "kill -9 of ordermq",
            Self::BrokerOutage => "broker stops + kill -9s",
            Self::Flaky => "failed third-party calls",
            Self::Redelivery => "redeliveries + duplicate/double payments",
            Self::LastUnit => "concurrent contenders",
            Self::BadInput => "bad requests",
            Self::Security => "forged or hostile calls",
            Self::FlashSale => "kill -9 during a flash sale",
            Self::Pause => "SIGSTOP past the relay lease",
            Self::DbRestart => "PostgreSQL stopped + crashed",
            Self::Poison => "undecodable messages",
            Self::PowerLoss => "power cuts (unsynced writes lost)",
            Self::DiskFull => "disk full (no space left)",
            Self::Clock => "wall clock steps of 75 s",
            Self::InstanceCrash => "kill -9 of an order instance",
            Self::SystemCrash => "kill -9 of a system's instance",
            Self::RollingRestart => "SIGTERM + restart of each process",
            Self::BrokerFailover => "kill -9 of one of two brokers",
        }
    }

    /// Runs `options.trials` trials and totals them.
    pub async fn run(self, options: &Options) -> ScenarioResult {
        let mut result = ScenarioResult::new(self.name(), self.fault_kind());
        let started = Instant::now();
        for trial in 0..options.trials {
            options.say(format!(
                "{} trial {}/{}",
                self.name(),
                trial + 1,
                options.trials
            ));
            // Boxed: eighteen trial futures in one match outgrow the compiler's
            // layout depth (and the stack).
            let trial: std::pin::Pin<Box<dyn std::future::Future<Output = TrialOutcome> + '_>> =
                match self {
                    Self::Crash => Box::pin(crash::crash(options)),
                    Self::BrokerOutage => Box::pin(broker::broker_outage(options)),
                    Self::Flaky => Box::pin(flaky::flaky(options)),
                    Self::Redelivery => Box::pin(redelivery::redelivery(options)),
                    Self::LastUnit => Box::pin(stampede::last_unit(options)),
                    Self::BadInput => Box::pin(bad_input::bad_input(options)),
                    Self::Security => Box::pin(security::security(options)),
                    Self::FlashSale => Box::pin(flash_sale::flash_sale(options)),
                    Self::Pause => Box::pin(pause::pause(options)),
                    Self::DbRestart => Box::pin(db_restart::db_restart(options)),
                    Self::Poison => Box::pin(poison::poison(options)),
                    Self::PowerLoss => Box::pin(power_loss::power_loss(options)),
                    Self::DiskFull => Box::pin(disk_full::disk_full(options)),
                    Self::Clock => Box::pin(clock::clock(options)),
                    Self::InstanceCrash => Box::pin(topology::instance_crash(options)),
                    Self::SystemCrash => Box::pin(topology::system_crash(options)),
                    Self::RollingRestart => Box::pin(topology::rolling_restart(options)),
                    Self::BrokerFailover => Box::pin(topology::broker_failover(options)),
                };
            let outcome = trial.await;
            match outcome {
                Ok((verdict, faults, trial)) => {
                    let holds = verdict.holds();
                    options.say(format!(
                        "  {} faults, {} orders, {} acknowledged, lost {}, doubled {}, oversold {}{}",
                        faults,
                        verdict.orders,
                        verdict.acknowledged,
                        verdict.lost,
                        verdict.doubled,
                        verdict.oversold,
                        if holds { "" } else { " — VIOLATIONS" }
                    ));
                    if !holds || options.keep {
                        let kept = trial.keep();
                        options.say(format!("  kept {kept}"));
                        result.kept.push(kept);
                    } else {
                        trial.discard().await;
                    }
                    result.add(verdict, faults);
                }
                Err(e) => {
                    options.say(format!("  could not run: {e}"));
                    result.failed_to_run(e.to_string());
                }
            }
        }
        result.seconds = started.elapsed().as_secs_f64();
        result
    }
}

/// What a trial function returns: its verdict, how many faults it injected,
/// and the trial (kept on request or when an invariant broke).
type TrialOutcome = Result<(Verdict, usize, Trial), ChaosError>;
