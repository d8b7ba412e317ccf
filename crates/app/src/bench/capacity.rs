//! How many durable payments per second this machine sustains.
//!
//! No simulated latency. Open-loop load rises step by step; a step passes when
//! the payment call's p99 stays within the limit, nothing fails, the offered
//! rate is achieved, and the fan-out keeps up: the slowest consumer group is
//! less than one second of payments behind at the step's end, and the
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
//! SQLite `synchronous=FULL` (an fsync per commit), broker `ASYNC_FLUSH`.
//!
//! Yardsticks measured in the same run: the raw fsync rate of the data
//! directory's disk, and a plain one-row-per-commit SQLite loop.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use ordermq_store::{Store, StoreOptions};
use serde_json::json;

use super::load::{self, Summary};
use super::report::Chart;
use super::target::{self, Target, TargetArgs};
use super::{BenchResult, Output, ms};

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

#[derive(Debug, Clone)]
struct Step {
    rate: f64,
    /// Run while narrowing after the first failure.
    refining: bool,
    /// Failed while the host paused, and was run again.
    repeated: bool,
    /// The worst the host probe saw during the load (local targets only;
    /// `None` if it recorded nothing).
    host: Option<super::HostPause>,
    /// Order-database commits slower than 100 ms during the step, and their ms.
    slow_commits: (u64, u64),
    summary: Summary,
    fanout_lag: i64,
    slowest: serde_json::Value,
    /// Paid → all four effects, p50 / p99 ms, and how many were measured.
    e2e: (f64, f64, usize),
    /// See `EndToEnd::drift_ms`.
    e2e_drift_ms: Option<f64>,
    /// Writes per order-database commit, and the writer's busy fraction.
    per_commit: f64,
    writer_busy: f64,
    /// CPU time of the whole process (load generator included) per payment,
    /// from the step's first payment until its fan-out was applied.
    cpu_us_per_payment: Option<f64>,
    passed: bool,
    why: String,
}

impl Step {
    fn phase(&self) -> &'static str {
        if self.refining { "refine" } else { "ramp" }
    }
}

pub async fn run(args: CapacityArgs) -> BenchResult<serde_json::Value> {
    println!(
        "ordermq bench capacity: rising from {}/s ×{} per {:?} step until p99 > {} ms, then {} refining steps (SQLite synchronous=FULL, broker ASYNC_FLUSH)",
        args.start_rate, args.growth, args.step_duration, args.p99_limit_ms, args.refine
    );
    let target = Arc::new(
        Target::start(&args.target, |c| {
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
        .await?,
    );
    eprintln!("  target: {}", target.describe());
    if !args.target.settings.is_empty() {
        eprintln!("  settings: {}", args.target.settings.join(" "));
    }
    super::warn_if_disk_nearly_full();
    eprintln!(
        "  measuring yardsticks ({:?} each, on this machine's disk)...",
        args.yardstick_duration
    );
    let memory = target.is_local().then(super::MemorySampler::start);
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let disk = target.local_dir().unwrap_or(scratch.path());
    let fsync_per_s = fsync_rate(disk, args.yardstick_duration)?;
    let sqlite_commit_per_s = sqlite_commit_rate(disk, args.yardstick_duration).await?;
    // After the yardsticks, so it does not share the disk with them.
    let probe = target
        .local_dir()
        .map(super::HostProbe::start)
        .transpose()?;

    let mut steps: Vec<Step> = Vec::new();
    // When the last step's load stopped: what was left, and how long it took to apply.
    let mut backlog_at_end = 0;
    let mut drained = None;
    let mut paid_total: i64 = super::warm_up(&target, 20).await?;
    // Two seconds at the first step's rate, not reported: the broker creates
    // its queue files and the consumers settle on first traffic, a one-time
    // stall that would otherwise land in the first step.
    let warm = (args.start_rate * 2.0).round() as usize;
    let warm_orders = Arc::new(target.create_orders(warm, "warm-up: create").await?);
    let (warm_samples, _) = load::run_open_loop("warm-up: pay", args.start_rate, warm, |i| {
        super::pay_over_http(target.clone(), warm_orders.clone(), i)
    })
    .await;
    paid_total += warm_samples.iter().filter(|s| s.ok).count() as i64;
    let warm_up_payments = paid_total;
    let mut search = RateSearch::new(&args);
    let mut next_rate = (args.start_rate <= args.max_rate).then_some(args.start_rate);
    let mut series = Vec::new();
    let mut offset = 0.0;
    let mut retries_left = if args.retry_host_pauses {
        MAX_RETRIES
    } else {
        0
    };
    while let Some(rate) = next_rate {
        let refining = search.refining();
        let count = (rate * args.step_duration.as_secs_f64()).round() as usize;
        let orders = Arc::new(
            target
                .create_orders(count, &format!("{rate:.0}/s: create"))
                .await?,
        );
        // Let the previous step's fan-out settle so each step starts clean.
        super::wait_for_fanout(&target, paid_total, Duration::from_secs(30)).await?;
        let writer_before = target.group_commit().await?;
        let begun_epoch = ordermq_domain::now_millis();
        let cpu_before = super::process_cpu().filter(|_| target.is_local());
        let load_begun = Instant::now();
        let load::OpenLoopRun {
            samples,
            wall,
            stopped_at_in_flight,
        } = load::run_open_loop_bounded(
            &format!("{rate:.0}/s: pay"),
            rate,
            count,
            MAX_IN_FLIGHT,
            |i| super::pay_over_http(target.clone(), orders.clone(), i),
        )
        .await;
        let host = probe
            .as_ref()
            .and_then(|p| p.between(load_begun, Instant::now()));
        let summary = load::summarize(&samples, wall);
        paid_total += (summary.count - summary.errors) as i64;
        let fanout_lag = super::fanout_lag(&target, paid_total).await?;
        backlog_at_end = fanout_lag + target.outbox_backlog().await?;
        let writer_after = target.group_commit().await?;
        let [commits, operations, busy_ms, slow_commits, slow_commit_ms] =
            [0, 1, 2, 3, 4].map(|i| writer_after[i].saturating_sub(writer_before[i]));
        let [commits, operations, busy_ms] = [commits, operations, busy_ms].map(|n| n as f64);
        // End to end once the step's events are all applied (or 180 s passed).
        drained = super::wait_for_fanout(&target, paid_total, Duration::from_secs(180)).await?;
        let cpu_us_per_payment = cpu_before.zip(super::process_cpu()).map(|(before, after)| {
            (after - before).as_secs_f64() * 1e6 / (summary.count - summary.errors).max(1) as f64
        });
        let e2e = super::end_to_end(&target, &orders, &samples, begun_epoch).await?;
        series.extend(
            load::throughput_series(&samples)
                .into_iter()
                .map(|(t, v)| (t + offset, v)),
        );
        offset += wall.as_secs_f64();
        let mut why = Vec::new();
        if let Some(in_flight) = stopped_at_in_flight {
            why.push(format!(
                "stopped after {} of {count} payments: {in_flight} unanswered at once",
                samples.len()
            ));
        }
        if summary.p99_ms > args.p99_limit_ms {
            why.push(format!(
                "p99 {:.1} ms > {} ms",
                summary.p99_ms, args.p99_limit_ms
            ));
        }
        if summary.errors > 0 {
            why.push(format!("{} errors", summary.errors));
        }
        if summary.throughput_per_s < rate * 0.95 {
            why.push(format!("achieved {:.0}/s", summary.throughput_per_s));
        }
        if fanout_lag as f64 > rate {
            why.push(format!("fan-out {fanout_lag} behind"));
        }
        if let Some(drift) = e2e.drift_ms.filter(|d| *d > MAX_E2E_DRIFT_MS) {
            why.push(format!("fan-out falling behind: e2e grew {drift:.0} ms"));
        }
        let passed = why.is_empty();
        let paused = host.filter(|h| h.worst_ms() > args.p99_limit_ms);
        let repeat = !passed && paused.is_some() && retries_left > 0;
        if let Some(h) = paused.filter(|_| !passed) {
            why.push(format!(
                "host paused: probe fsync {:.0} ms, wake-up {:.0} ms late{}",
                h.fsync_ms,
                h.wake_late_ms,
                if repeat { "; repeating the step" } else { "" }
            ));
        }
        if slow_commits > 0 && !passed {
            why.push(format!(
                "{slow_commits} commit(s) over 100 ms ({slow_commit_ms} ms in all)"
            ));
        }
        eprintln!(
            "{} {rate:>7.0}/s  p50 {:>7} ms  p99 {:>7} ms  achieved {:>7.0}/s  fan-out lag {fanout_lag:>6}  e2e p99 {:>6} ms (drift {:>+5.0})  {:.1} writes/commit  writer busy {:.0} %  CPU {} µs/payment  {}",
            if refining { "refine" } else { "  ramp" },
            ms(summary.p50_ms),
            ms(summary.p99_ms),
            summary.throughput_per_s,
            ms(load::percentile(&e2e.all, 99.0)),
            e2e.drift_ms.unwrap_or(0.0),
            operations / commits.max(1.0),
            100.0 * busy_ms / (wall.as_secs_f64() * 1e3),
            cpu_us_per_payment.map_or("?".into(), |us| format!("{us:.0}")),
            if passed {
                "ok".to_owned()
            } else {
                why.join(", ")
            }
        );
        steps.push(Step {
            rate,
            refining,
            repeated: repeat,
            host,
            slow_commits: (slow_commits, slow_commit_ms),
            summary,
            fanout_lag,
            slowest: load::slowest(&samples, 10),
            e2e: (
                load::percentile(&e2e.all, 50.0),
                load::percentile(&e2e.all, 99.0),
                e2e.all.len(),
            ),
            e2e_drift_ms: e2e.drift_ms,
            per_commit: operations / commits.max(1.0),
            writer_busy: busy_ms / (wall.as_secs_f64() * 1e3),
            cpu_us_per_payment,
            passed,
            why: why.join(", "),
        });
        if repeat {
            retries_left -= 1;
            continue;
        }
        next_rate = search.next(rate, passed);
    }
    drop(probe);

    // The relay marks rows sent in its next round (up to its linger + 20 ms later).
    let mut outbox_after = target.outbox_backlog().await?;
    let acked_by = Instant::now() + Duration::from_secs(10);
    while outbox_after > 0 && Instant::now() < acked_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
        outbox_after = target.outbox_backlog().await?;
    }
    // Only an in-process ordermq's memory is this process's.
    let peak_rss_mb = if target.is_local() {
        super::peak_rss_mb()
    } else {
        None
    };
    let [peak_anon_mb, peak_file_mb] = memory.map_or([None; 2], |m| m.finish().map(Some));
    let described = target.describe();
    target::into_inner(target)?.stop().await?;

    // The highest passing rate; refining steps need not run in rising order.
    let best = steps
        .iter()
        .filter(|s| s.passed)
        .max_by(|a, b| a.rate.total_cmp(&b.rate));
    let max_sustained = best.map_or(0.0, |s| s.summary.throughput_per_s);
    let step_reports: Vec<serde_json::Value> = steps
        .iter()
        .map(|s| {
            let mut step = json!({
            "offered_per_s": s.rate, "payments": s.summary.count, "achieved_per_s": s.summary.throughput_per_s,
            "p50_ms": s.summary.p50_ms, "p95_ms": s.summary.p95_ms, "p99_ms": s.summary.p99_ms, "max_ms": s.summary.max_ms,
            "errors": s.summary.errors, "fanout_lag_at_end": s.fanout_lag, "slowest": s.slowest,
            "e2e_p50_ms": s.e2e.0, "e2e_p99_ms": s.e2e.1, "e2e_measured": s.e2e.2, "e2e_drift_ms": s.e2e_drift_ms,
            "writes_per_commit": s.per_commit, "writer_busy_fraction": s.writer_busy,
            "cpu_us_per_payment": s.cpu_us_per_payment, "passed": s.passed, "why_not": s.why,
            "repeated": s.repeated,
            "host_pause_ms": s.host.map(|h| json!({"fsync": h.fsync_ms, "wake_late": h.wake_late_ms})),
            "slow_commits": s.slow_commits.0, "slow_commit_ms": s.slow_commits.1,
        });
            step["phase"] = s.phase().into();
            step
        })
        .collect();
    let report = json!({
        "scenario": "capacity",
        "machine": super::machine(),
        "settings": args.target.settings,
        "target": described,
        "durability": {"sqlite_synchronous": "FULL", "sqlite_journal": "WAL", "broker_flush": "ASYNC_FLUSH"},
        "p99_limit_ms": args.p99_limit_ms,
        "step_duration_s": args.step_duration.as_secs_f64(),
        "refine_steps": args.refine,
        "repeated_steps": steps.iter().filter(|s| s.repeated).count(),
        "max_sustained_per_s": max_sustained,
        "max_sustained_offered_per_s": best.map(|s| s.rate),
        "p50_ms_at_max": best.map(|s| s.summary.p50_ms),
        "p99_ms_at_max": best.map(|s| s.summary.p99_ms),
        "e2e_p99_ms_at_max": best.map(|s| s.e2e.1),
        "yardsticks": {"fsync_per_s": fsync_per_s, "sqlite_commit_per_s": sqlite_commit_per_s},
        "multiple_of_fsync": max_sustained / fsync_per_s.max(1e-9),
        "multiple_of_sqlite_commit": max_sustained / sqlite_commit_per_s.max(1e-9),
        "paid_total": paid_total,
        "warm_up_payments": warm_up_payments,
        "backlog_at_end": backlog_at_end,
        "drained_after_s": drained.map(|d| d.as_secs_f64()),
        "fanned_out_all": drained.is_some() && outbox_after == 0,
        "peak_rss_mb": peak_rss_mb,
        "peak_rss_anon_mb": peak_anon_mb,
        "peak_rss_file_mb": peak_file_mb,
        "steps": step_reports,
    });

    let mut table = vec![
        [
            "offered/s",
            "achieved/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "fan-out lag",
            "e2e p99 ms",
            "result",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in &steps {
        table.push(vec![
            format!(
                "{:.0}{}",
                s.rate,
                match (s.repeated, s.refining) {
                    (true, _) => " (repeated)",
                    (false, true) => " (refine)",
                    (false, false) => "",
                }
            ),
            format!("{:.0}", s.summary.throughput_per_s),
            ms(s.summary.p50_ms),
            ms(s.summary.p99_ms),
            ms(s.summary.max_ms),
            s.fanout_lag.to_string(),
            ms(s.e2e.1),
            if s.passed { "ok".into() } else { s.why.clone() },
        ]);
    }
    table.push(vec![
        "max sustained/s".into(),
        format!("{max_sustained:.0}"),
        "".into(),
        "".into(),
        "".into(),
        "".into(),
        "".into(),
        "".into(),
    ]);
    table.push(vec![
        "fsync/s (yardstick)".into(),
        format!("{fsync_per_s:.0}"),
        "".into(),
        "".into(),
        "".into(),
        "".into(),
        "".into(),
        format!("ordermq = {:.1}x", max_sustained / fsync_per_s.max(1e-9)),
    ]);
    table.push(vec![
        "SQLite 1 row/commit/s".into(),
        format!("{sqlite_commit_per_s:.0}"),
        "".into(),
        "".into(),
        "".into(),
        "".into(),
        "".into(),
        format!(
            "ordermq = {:.1}x",
            max_sustained / sqlite_commit_per_s.max(1e-9)
        ),
    ]);
    table.push(vec![
        "backlog at end / drained".into(),
        backlog_at_end.to_string(),
        "".into(),
        "".into(),
        "".into(),
        "".into(),
        "".into(),
        drained.map_or("not drained in 180 s".into(), |d| {
            format!("drained in {:.1}s", d.as_secs_f64())
        }),
    ]);
    table.push(vec![
        "peak RSS MiB".into(),
        peak_rss_mb.map_or("?".into(), |m| format!("{m:.0}")),
        "".into(),
        "".into(),
        "".into(),
        "".into(),
        "".into(),
        peak_anon_mb
            .zip(peak_file_mb)
            .map_or(String::new(), |(anon, file)| {
                format!("anonymous ≤{anon:.0}, file-backed ≤{file:.0}")
            }),
    ]);
    let mut by_rate: Vec<&Step> = steps.iter().collect();
    by_rate.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let charts = vec![
        Chart::Lines {
            title: "Payment latency vs offered load".into(),
            x_label: "offered payments/s".into(),
            y_label: "ms (log)".into(),
            series: vec![
                (
                    "p50".into(),
                    by_rate.iter().map(|s| (s.rate, s.summary.p50_ms)).collect(),
                ),
                (
                    "p99".into(),
                    by_rate.iter().map(|s| (s.rate, s.summary.p99_ms)).collect(),
                ),
            ],
            log_y: true,
        },
        Chart::Lines {
            title: "Payments answered per second over the run".into(),
            x_label: "seconds of load".into(),
            y_label: "payments/s".into(),
            series: vec![("answered".into(), series)],
            log_y: false,
        },
    ];
    super::write_reports(
        "capacity",
        &args.output,
        "ordermq bench capacity",
        &report,
        &table,
        &charts,
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

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
