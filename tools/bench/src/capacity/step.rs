//! One step of the capacity search: create the step's orders, pay them at
//! the offered rate, wait for the fan-out, and judge the step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::load::{self, Summary};
use super::super::{BenchResult, ms};
use super::{MAX_E2E_DRIFT_MS, MAX_IN_FLIGHT, MAX_RETRIES, RateSearch, Run};

#[derive(Debug, Clone)]
pub(super) struct Step {
    pub(super) rate: f64,
    /// Run while narrowing after the first failure.
    pub(super) refining: bool,
    /// Failed while the host paused, and was run again.
    pub(super) repeated: bool,
    /// The worst the host probe saw during the load (local targets only;
    /// `None` if it recorded nothing).
    pub(super) host: Option<super::super::HostPause>,
    /// Order-database commits slower than 100 ms during the step, and their ms.
    pub(super) slow_commits: (u64, u64),
    pub(super) summary: Summary,
    pub(super) fanout_lag: i64,
    pub(super) slowest: serde_json::Value,
    /// Paid → all four effects, p50 / p99 ms, and how many were measured.
    pub(super) e2e: (f64, f64, usize),
    /// See `EndToEnd::drift_ms`.
    pub(super) e2e_drift_ms: Option<f64>,
    /// Writes per order-database commit, and the writer's busy fraction.
    pub(super) per_commit: f64,
    pub(super) writer_busy: f64,
    /// CPU time of the whole process (load generator included) per payment,
    /// from the step's first payment until its fan-out was applied.
    pub(super) cpu_us_per_payment: Option<f64>,
    pub(super) passed: bool,
    pub(super) why: String,
}

impl Step {
    pub(super) fn phase(&self) -> &'static str {
        if self.refining { "refine" } else { "ramp" }
    }
}

/// What a step measured, before it is judged.
struct Measured {
    rate: f64,
    count: usize,
    summary: Summary,
    stopped_at_in_flight: Option<usize>,
    fanout_lag: i64,
    e2e_drift_ms: Option<f64>,
    /// What the host probe saw during the load.
    host: Option<super::super::HostPause>,
    /// Order-database commits over 100 ms, and their ms in all.
    slow_commits: (u64, u64),
}

/// A step judged.
struct Judgement {
    passed: bool,
    /// It failed while the host paused, and may be repeated.
    repeat: bool,
    /// Why it failed (empty: it passed).
    why: Vec<String>,
}

/// Why a step failed (empty: it passed).
fn verdict(m: &Measured, p99_limit_ms: f64, sent: usize) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(in_flight) = m.stopped_at_in_flight {
        why.push(format!(
            "stopped after {sent} of {} payments: {in_flight} unanswered at once",
            m.count
        ));
    }
    if m.summary.p99_ms > p99_limit_ms {
        why.push(format!(
            "p99 {:.1} ms > {} ms",
            m.summary.p99_ms, p99_limit_ms
        ));
    }
    if m.summary.errors > 0 {
        why.push(format!("{} errors", m.summary.errors));
    }
    if m.summary.throughput_per_s < m.rate * 0.95 {
        why.push(format!("achieved {:.0}/s", m.summary.throughput_per_s));
    }
    if m.fanout_lag as f64 > m.rate {
        why.push(format!("fan-out {} behind", m.fanout_lag));
    }
    if let Some(drift) = m.e2e_drift_ms.filter(|d| *d > MAX_E2E_DRIFT_MS) {
        why.push(format!("fan-out falling behind: e2e grew {drift:.0} ms"));
    }
    why
}

/// Judges a step by its [`verdict`]; a failed one also names a host pause
/// longer than the p99 limit (and is to be repeated when `may_repeat`) and
/// the slow commits.
fn judge(m: &Measured, p99_limit_ms: f64, sent: usize, may_repeat: bool) -> Judgement {
    let mut why = verdict(m, p99_limit_ms, sent);
    let passed = why.is_empty();
    let paused = m.host.filter(|h| h.worst_ms() > p99_limit_ms);
    let repeat = !passed && paused.is_some() && may_repeat;
    if let Some(h) = paused.filter(|_| !passed) {
        why.push(format!(
            "host paused: probe fsync {:.0} ms, wake-up {:.0} ms late{}",
            h.fsync_ms,
            h.wake_late_ms,
            if repeat { "; repeating the step" } else { "" }
        ));
    }
    let (slow_commits, slow_commit_ms) = m.slow_commits;
    if slow_commits > 0 && !passed {
        why.push(format!(
            "{slow_commits} commit(s) over 100 ms ({slow_commit_ms} ms in all)"
        ));
    }
    Judgement {
        passed,
        repeat,
        why,
    }
}

impl Run<'_> {
    /// Two seconds at the first step's rate, not reported: the broker creates
    /// its queue files and the consumers settle on first traffic, a one-time
    /// stall that would otherwise land in the first step. Returns the
    /// payments made so far (warm-up included).
    pub(super) async fn warm_up(&mut self) -> BenchResult<i64> {
        let warm = (self.args.start_rate * 2.0).round() as usize;
        let warm_orders = Arc::new(self.target.create_orders(warm, "warm-up: create").await?);
        let target = self.target.clone();
        let (warm_samples, _) =
            load::run_open_loop("warm-up: pay", self.args.start_rate, warm, |i| {
                super::super::pay_over_http(target.clone(), warm_orders.clone(), i)
            })
            .await;
        self.paid_total += warm_samples.iter().filter(|s| s.ok).count() as i64;
        Ok(self.paid_total)
    }

    /// Steps until the search ends; a step failed in a host pause is
    /// repeated (at most [`MAX_RETRIES`] a run, unless turned off).
    pub(super) async fn search(&mut self) -> BenchResult<Vec<Step>> {
        let mut steps = Vec::new();
        let mut search = RateSearch::new(self.args);
        let mut next_rate =
            (self.args.start_rate <= self.args.max_rate).then_some(self.args.start_rate);
        let mut retries_left = if self.args.retry_host_pauses {
            MAX_RETRIES
        } else {
            0
        };
        while let Some(rate) = next_rate {
            let step = self.step(rate, search.refining(), retries_left > 0).await?;
            let (repeat, passed) = (step.repeated, step.passed);
            steps.push(step);
            if repeat {
                retries_left -= 1;
                continue;
            }
            next_rate = search.next(rate, passed);
        }
        Ok(steps)
    }

    /// One step at `rate`; `may_repeat`: a failure in a host pause is marked
    /// to be repeated.
    async fn step(&mut self, rate: f64, refining: bool, may_repeat: bool) -> BenchResult<Step> {
        let (target, args) = (self.target.clone(), self.args);
        let count = (rate * args.step_duration.as_secs_f64()).round() as usize;
        let orders = Arc::new(
            target
                .create_orders(count, &format!("{rate:.0}/s: create"))
                .await?,
        );
        // Let the previous step's fan-out settle so each step starts clean.
        super::super::wait_for_fanout(&target, self.paid_total, Duration::from_secs(30)).await?;
        let writer_before = target.group_commit().await?;
        let begun_epoch = ordermq_domain::now_millis();
        let cpu_before = super::super::process_cpu().filter(|_| target.is_local());
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
            |i| super::super::pay_over_http(target.clone(), orders.clone(), i),
        )
        .await;
        let host = self
            .probe
            .as_ref()
            .and_then(|p| p.between(load_begun, Instant::now()));
        let ended_epoch = ordermq_domain::now_millis();
        let summary = load::summarize(&samples, wall);
        let paid = summary.count - summary.errors;
        self.paid_total += paid as i64;
        // What the target shows now; the step is judged by what had been
        // applied at its end (below), which a separate system reports later.
        let visible_lag = super::super::fanout_lag(&target, self.paid_total).await?;
        self.backlog_at_end = visible_lag + target.outbox_backlog().await?;
        let writer_after = target.group_commit().await?;
        let [commits, operations, busy_ms, slow_commits, slow_commit_ms] =
            [0, 1, 2, 3, 4].map(|i| writer_after[i].saturating_sub(writer_before[i]));
        let [commits, operations, busy_ms] = [commits, operations, busy_ms].map(|n| n as f64);
        // End to end once the step's events are all applied (or 180 s passed).
        self.drained =
            super::super::wait_for_fanout(&target, self.paid_total, Duration::from_secs(180))
                .await?;
        let cpu_us_per_payment = cpu_before
            .zip(super::super::process_cpu())
            .map(|(before, after)| (after - before).as_secs_f64() * 1e6 / paid.max(1) as f64);
        let e2e = super::super::end_to_end(&target, &orders, &samples, begun_epoch).await?;
        let fanout_lag = e2e.behind_at(paid, ended_epoch);
        self.series.extend(
            load::throughput_series(&samples)
                .into_iter()
                .map(|(t, v)| (t + self.offset, v)),
        );
        self.offset += wall.as_secs_f64();
        let measured = Measured {
            rate,
            count,
            summary,
            stopped_at_in_flight,
            fanout_lag,
            e2e_drift_ms: e2e.drift_ms,
            host,
            slow_commits: (slow_commits, slow_commit_ms),
        };
        let Judgement {
            passed,
            repeat,
            why,
        } = judge(&measured, args.p99_limit_ms, samples.len(), may_repeat);
        let Measured { summary, .. } = measured;
        let e2e_p99 = load::percentile(&e2e.all, 99.0);
        eprintln!(
            "{} {rate:>7.0}/s  p50 {:>7} ms  p99 {:>7} ms  achieved {:>7.0}/s  fan-out lag {fanout_lag:>6}  e2e p99 {:>6} ms (drift {:>+5.0})  {:.1} writes/commit  writer busy {:.0} %  CPU {} µs/payment  {}",
            if refining { "refine" } else { "  ramp" },
            ms(summary.p50_ms),
            ms(summary.p99_ms),
            summary.throughput_per_s,
            ms(e2e_p99),
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
        Ok(Step {
            rate,
            refining,
            repeated: repeat,
            host,
            slow_commits: (slow_commits, slow_commit_ms),
            summary,
            fanout_lag,
            slowest: load::slowest(&samples, 10),
            e2e: (load::percentile(&e2e.all, 50.0), e2e_p99, e2e.all.len()),
            e2e_drift_ms: e2e.drift_ms,
            per_commit: operations / commits.max(1.0),
            writer_busy: busy_ms / (wall.as_secs_f64() * 1e3),
            cpu_us_per_payment,
            passed,
            why: why.join(", "),
        })
    }
}
