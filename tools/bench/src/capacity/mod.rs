//! How many durable payments per second this machine sustains.
//!
//! No simulated latency. Open-loop load rises step by step; a step passes when
//! the payment call's p99 stays within the limit, nothing fails, the offered
//! rate is achieved, and the fan-out keeps up: the slowest consumer group is
//! less than one second of payments behind at the step's end (by the
//! systems' own commit times, read once the step's events are applied: a
//! separate system's receipts reach the order instance's progress up to a
//! second later, which alone would fail a topology at any rate), and the
//! end-to-end time did not grow over the step (a fan-out that is slower than
//! the payments shows as a growing delay long before a big backlog). After the
//! first failure the search narrows: a few more steps between the best pass
//! and the lowest failure, so the result is not just wherever a ×1.5 ramp
//! happened to land. The highest passing step is the sustained rate.
//!
//! A shared machine sometimes stops for a few hundred milliseconds (the disk
//! does not answer an fsync, or nothing gets scheduled), and one such pause
//! in a 5 s step fails it at any rate. A probe thread watches for that beside
//! the load ([`super::HostProbe`]); a step that fails while the probe itself
//! was held up longer than the p99 limit is run again (at most [`MAX_RETRIES`]
//! times a run, so a machine that keeps pausing is reported as it is). Both
//! runs are in the report. When one bystander fsync takes longer than the
//! whole latency budget, every payment committing then does too (a payment
//! waits for the commit in progress and then its own). The probe cannot tell
//! a neighbour's I/O from ordermq's own bursts (checkpoints, the broker's
//! flushes): near saturation it sees 40–70 ms, so failing steps up there may
//! be repeated too; a repeat is a second sample of the same rate, and
//! `--retry-host-pauses false` turns repeats off.
//! Durability is as in production:
//! SQLite `synchronous=FULL` (an fsync per commit), the broker as
//! `--broker-flush` says (`SYNC_FLUSH` by default), stated in every report;
//! with `--database postgres`, PostgreSQL with `fsync`, `synchronous_commit`
//! and `full_page_writes` on (a throwaway server of the run's own, or
//! `--database-url`).
//!
//! Yardsticks measured in the same run: the raw fsync rate of the data
//! directory's disk, and a plain one-row-per-commit SQLite loop; on
//! PostgreSQL also one row per transaction with 1 and 8 connections and a
//! naive payment loop (one transaction per payment) with 8, on the same
//! server (`postgres`).

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use ordermq_store::{Store, StoreOptions};

use super::mysql::{self, MysqlYardsticks};
use super::postgres::{self, PgYardsticks};
use super::target::{self, Target, TargetArgs};
use super::{BenchResult, Output};

mod report;
mod step;

use step::Step;

#[derive(Debug, Clone, Args)]
pub struct CapacityArgs {
    /// Offered payments/s of the first step.
    #[arg(long, default_value_t = 250.0)]
    pub start_rate: f64,
    /// Stop rising here even if every step passed.
    #[arg(long, default_value_t = 16_000.0)]
    pub max_rate: f64,
    /// Each step multiplies the rate by this factor.
    #[arg(long, default_value_t = 1.5)]
    pub growth: f64,
    /// How long each step lasts.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration)]
    pub step_duration: Duration,
    /// After the first failing step, up to this many more steps, each at the
    /// geometric midpoint between the best passing and the lowest failing
    /// rate (stops early once they are within 5 %). 0: stop at the first failure.
    #[arg(long, default_value_t = 3)]
    pub refine: u32,
    /// A step fails when the payment call's p99 exceeds this (ms).
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,
    /// Run a failed step once more when, during it, the machine itself paused
    /// longer than --p99-limit-ms (a probe's 4 KiB fsync in the data directory,
    /// or its 50 ms sleep, took that much longer); at most 2 repeats a run,
    /// both results reported. false: the first result of each step counts.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub retry_host_pauses: bool,
    /// How long each yardstick loop runs.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    pub yardstick_duration: Duration,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub output: Output,
}

/// Which rate to offer next: rise by `growth` until a step fails, then
/// bisect (geometric midpoint) between the best pass and the lowest failure.
#[derive(Debug, Clone)]
struct RateSearch {
    growth: f64,
    max_rate: f64,
    refine_left: u32,
    best_pass: Option<f64>,
    lowest_fail: Option<f64>,
}

/// Refinement stops once the best pass and the lowest failure are this close.
const RESOLUTION: f64 = 1.05;

impl RateSearch {
    fn new(args: &CapacityArgs) -> Self {
        Self {
            growth: args.growth,
            max_rate: args.max_rate,
            refine_left: args.refine,
            best_pass: None,
            lowest_fail: None,
        }
    }

    /// True once a step has failed: later steps refine.
    fn refining(&self) -> bool {
        self.lowest_fail.is_some()
    }

    /// Records a step's outcome and returns the next rate, if any.
    fn next(&mut self, rate: f64, passed: bool) -> Option<f64> {
        if passed {
            self.best_pass = Some(self.best_pass.map_or(rate, |b| b.max(rate)));
        } else {
            self.lowest_fail = Some(self.lowest_fail.map_or(rate, |f| f.min(rate)));
        }
        let Some(fail) = self.lowest_fail else {
            let next = (rate * self.growth).round();
            return (next <= self.max_rate && next > rate).then_some(next);
        };
        // Nothing passed: there is no range to narrow.
        let pass = self.best_pass?;
        if self.refine_left == 0 || fail <= pass * RESOLUTION {
            return None;
        }
        self.refine_left -= 1;
        Some((pass * fail).sqrt().round())
    }
}

/// Durable 4 KiB writes per second (write + fdatasync) in `dir`.
fn fsync_rate(dir: &std::path::Path, duration: Duration) -> BenchResult<f64> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let block = [7u8; 4096];
    let begun = Instant::now();
    let mut n = 0u64;
    while begun.elapsed() < duration {
        file.write_all(&block).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
        n += 1;
    }
    let _ = std::fs::remove_file(&path);
    Ok(n as f64 / begun.elapsed().as_secs_f64())
}

/// One-row transactions per second on SQLite with ordermq's settings (WAL, synchronous=FULL).
async fn sqlite_commit_rate(dir: &std::path::Path, duration: Duration) -> BenchResult<f64> {
    let url = format!("sqlite://{}/yardstick.db", dir.display());
    let store = Store::open(&url, &StoreOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let begun = Instant::now();
    let mut n = 0u64;
    while begun.elapsed() < duration {
        store
            .upsert_product(&ordermq_store::DemoProduct {
                sku: "Y",
                name: "yardstick",
                price: n as i64,
                stock: 1,
            })
            .await
            .map_err(|e| e.to_string())?;
        n += 1;
    }
    store.close().await;
    Ok(n as f64 / begun.elapsed().as_secs_f64())
}

/// Sending stops once this many payments are unanswered at once: such a
/// step has failed already, and more requests would only hold memory.
const MAX_IN_FLIGHT: usize = 2_000;

/// A step fails when the end-to-end time of its last fifth's payments exceeds
/// that of its first fifth by more than this: the fan-out is falling behind
/// (over a 5 s step, by more than ~5 % of the payment rate).
const MAX_E2E_DRIFT_MS: f64 = 200.0;

/// At most this many steps a run are repeated for a host pause.
const MAX_RETRIES: u32 = 2;

/// The running totals of one capacity run, shared by its steps.
struct Run<'a> {
    args: &'a CapacityArgs,
    target: Arc<Target>,
    probe: Option<super::HostProbe>,
    /// Payments answered OK so far (warm-up included): what the fan-out must reach.
    paid_total: i64,
    /// When the last step's load stopped: what was left, and how long it took to apply.
    backlog_at_end: i64,
    drained: Option<Duration>,
    /// Payments answered per second over the whole run, and where the next step starts.
    series: Vec<(f64, f64)>,
    offset: f64,
}

/// The machine's own rates, measured in the same run on the same disk
/// (and PostgreSQL's, on the server ordermq runs on).
#[derive(Debug, Clone)]
struct Yardsticks {
    fsync_per_s: f64,
    sqlite_commit_per_s: f64,
    postgres: Option<PgYardsticks>,
    mysql: Option<MysqlYardsticks>,
}

impl Yardsticks {
    async fn measure(
        target: &Target,
        database_url: Option<&str>,
        duration: Duration,
    ) -> BenchResult<Self> {
        eprintln!("  measuring yardsticks ({duration:?} each, on this machine's disk)...");
        let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
        let disk = target.local_dir().unwrap_or(scratch.path());
        let (postgres, mysql) = match database_url {
            Some(url) if mysql::is_mysql_url(url) => {
                (None, Some(MysqlYardsticks::measure(url, duration).await?))
            }
            Some(url) => (Some(PgYardsticks::measure(url, duration).await?), None),
            None => (None, None),
        };
        Ok(Self {
            fsync_per_s: fsync_rate(disk, duration)?,
            sqlite_commit_per_s: sqlite_commit_rate(disk, duration).await?,
            postgres,
            mysql,
        })
    }
}

/// The database as the run's first line states it: the in-process
/// ordermq's, with its durability; with `--url`, that ordermq's own, which
/// the bench does not see.
fn database_label(args: &TargetArgs) -> &'static str {
    if !args.url.is_empty() {
        return "the database of the ordermq at --url (not visible to the bench)";
    }
    match args.database_url.as_deref() {
        Some(url) if mysql::is_mysql_url(url) => "MySQL/MariaDB (durability read and reported)",
        Some(_) => "PostgreSQL fsync=on synchronous_commit=on",
        None if args.database == target::Database::Postgres => {
            "PostgreSQL fsync=on synchronous_commit=on"
        }
        None => "SQLite synchronous=FULL",
    }
}

pub(crate) async fn run(mut args: CapacityArgs) -> BenchResult<serde_json::Value> {
    let broker_flush = args.target.broker_flush_label()?;
    mysql::check(&args.target)?;
    let database = database_label(&args.target);
    println!(
        "ordermq-bench capacity: rising from {}/s ×{} per {:?} step until p99 > {} ms, then {} refining steps ({database}, broker {broker_flush})",
        args.start_rate, args.growth, args.step_duration, args.p99_limit_ms, args.refine
    );
    // Lives until the run's end: the throwaway PostgreSQL server, if any.
    let _server = postgres::prepare(&mut args.target).await?;
    let target = start_target(&args).await?;
    super::warn_if_disk_nearly_full();
    let memory = target.is_local().then(super::MemorySampler::start);
    let yardsticks = Yardsticks::measure(
        &target,
        args.target.database_url.as_deref(),
        args.yardstick_duration,
    )
    .await?;
    let database_url = args.target.database_url.clone();
    let counting_statements = match &database_url {
        Some(url) if !mysql::is_mysql_url(url) => postgres::reset_statements(url).await,
        _ => false,
    };
    // After the yardsticks, so it does not share the disk with them.
    let probe = target
        .local_dir()
        .map(super::HostProbe::start)
        .transpose()?;
    let paid_total = super::warm_up(&target, 20).await?;
    let mut run = Run {
        args: &args,
        target,
        probe,
        paid_total,
        backlog_at_end: 0,
        drained: None,
        series: Vec::new(),
        offset: 0.0,
    };
    let warm_up_payments = run.warm_up().await?;
    let steps = run.search().await?;
    let Run {
        target,
        probe,
        paid_total,
        backlog_at_end,
        drained,
        series,
        ..
    } = run;
    drop(probe);
    let outbox_after = wait_for_acknowledgements(&target).await?;
    // Only an in-process ordermq's memory is this process's.
    let peak_rss_mb = if target.is_local() {
        super::peak_rss_mb()
    } else {
        None
    };
    let [peak_anon_mb, peak_file_mb] = memory.map_or([None; 2], |m| m.finish().map(Some));
    let described = target.describe();
    let statements = match (&database_url, counting_statements) {
        (Some(url), true) => postgres::top_statements(url, 12).await,
        _ => None,
    };
    target::into_inner(target)?.stop().await?;

    let outcome = report::Outcome {
        steps,
        yardsticks,
        paid_total,
        warm_up_payments,
        backlog_at_end,
        drained,
        outbox_after,
        memory: report::Memory {
            peak_rss_mb,
            peak_anon_mb,
            peak_file_mb,
        },
    };
    let mut report = outcome.json(&args, described, &broker_flush);
    if let Some(statements) = statements {
        eprintln!("  PostgreSQL's busiest statements (pg_stat_statements) over the run:");
        for s in statements.as_array().into_iter().flatten() {
            eprintln!(
                "    {:>9.0} ms {:>9} calls {:>8.3} ms each  {}",
                s["total_ms"].as_f64().unwrap_or(0.0),
                s["calls"],
                s["mean_ms"].as_f64().unwrap_or(0.0),
                s["query"].as_str().unwrap_or("")
            );
        }
        report["postgres_statements"] = statements;
    }
    super::write_reports(
        "capacity",
        &args.output,
        &format!("ordermq-bench capacity (broker {broker_flush})"),
        &report,
        &outcome.table(),
        &outcome.charts(series),
    )?;
    Ok(report)
}

/// Starts (or connects to) the ordermq under test, with no simulated
/// third-party latency: capacity measures ordermq, not the fakes.
async fn start_target(args: &CapacityArgs) -> BenchResult<Arc<Target>> {
    let target = Target::start(&args.target, |c| {
        for latency in [
            &mut c.sms_latency,
            &mut c.sms_jitter,
            &mut c.logistics_latency,
            &mut c.logistics_jitter,
        ] {
            *latency = Duration::ZERO;
        }
        c.sms_spike_probability = 0.0;
        c.logistics_spike_probability = 0.0;
    })
    .await?;
    eprintln!("  target: {}", target.describe());
    if !args.target.settings.is_empty() {
        eprintln!("  settings: {}", args.target.settings.join(" "));
    }
    Ok(Arc::new(target))
}

/// The relay marks rows sent in its next round (up to its linger + 20 ms
/// later): waits up to 10 s for that; the backlog left.
async fn wait_for_acknowledgements(target: &Target) -> BenchResult<i64> {
    let mut outbox_after = target.outbox_backlog().await?;
    let acked_by = Instant::now() + Duration::from_secs(10);
    while outbox_after > 0 && Instant::now() < acked_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
        outbox_after = target.outbox_backlog().await?;
    }
    Ok(outbox_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_named_only_for_the_in_process_ordermq() {
        use target::Database;
        let args = |database, database_url: Option<&str>, url: Option<&str>| TargetArgs {
            database,
            database_url: database_url.map(str::to_owned),
            url: url.map(str::to_owned).into_iter().collect(),
            ..TargetArgs::default()
        };
        assert!(database_label(&args(Database::Sqlite, None, None)).starts_with("SQLite"));
        assert!(database_label(&args(Database::Postgres, None, None)).starts_with("PostgreSQL"));
        assert!(
            database_label(&args(
                Database::Mysql,
                Some("mysql://root@127.0.0.1/x"),
                None
            ))
            .starts_with("MySQL")
        );
        // The default database (SQLite) is not what an ordermq at --url runs on.
        assert!(
            database_label(&args(Database::Sqlite, None, Some("http://127.0.0.1:8080")))
                .contains("--url")
        );
    }

    fn search(refine: u32) -> RateSearch {
        RateSearch {
            growth: 1.5,
            max_rate: 16_000.0,
            refine_left: refine,
            best_pass: None,
            lowest_fail: None,
        }
    }

    #[test]
    fn rises_until_a_failure_then_bisects_between_pass_and_fail() {
        let mut s = search(3);
        assert_eq!(s.next(250.0, true), Some(375.0));
        assert!(!s.refining());
        assert_eq!(s.next(4_280.0, true), Some(6_420.0));
        // 6,420 fails: the geometric midpoint of 4,280 and 6,420.
        assert_eq!(s.next(6_420.0, false), Some(5_242.0));
        assert!(s.refining());
        assert_eq!(s.next(5_242.0, true), Some(5_801.0));
        assert_eq!(s.next(5_801.0, false), Some(5_514.0));
        // Three refining steps were allowed.
        assert_eq!(s.next(5_514.0, true), None);
        assert_eq!(s.best_pass, Some(5_514.0));
    }

    #[test]
    fn stops_when_nothing_passed_when_close_enough_or_at_the_cap() {
        let mut s = search(3);
        assert_eq!(s.next(250.0, false), None, "no passing rate to narrow from");

        let mut s = search(10);
        s.next(1_000.0, true);
        let mut rate = s.next(1_500.0, false);
        let mut steps = 0;
        while let Some(r) = rate {
            steps += 1;
            rate = s.next(r, true);
        }
        assert!(steps < 10, "stops within 5 %, not after all ten");
        assert!(s.lowest_fail.unwrap() <= s.best_pass.unwrap() * RESOLUTION);

        let mut s = search(0);
        s.next(1_000.0, true);
        assert_eq!(s.next(1_500.0, false), None, "--refine 0");

        let mut s = RateSearch {
            max_rate: 500.0,
            ..search(3)
        };
        assert_eq!(s.next(400.0, true), None, "600 would pass --max-rate");
    }
}
