//! A capacity run's report: the JSON for comparing runs, the table printed
//! at the end, and the charts of the HTML page.

use std::time::Duration;

use serde_json::json;

use super::super::ms;
use super::super::report::Chart;
use super::{CapacityArgs, Step, Yardsticks};

/// The process's memory at its peak (local targets only).
#[derive(Debug, Clone, Copy)]
pub(super) struct Memory {
    pub(super) peak_rss_mb: Option<f64>,
    pub(super) peak_anon_mb: Option<f64>,
    pub(super) peak_file_mb: Option<f64>,
}

/// Everything a finished run measured.
pub(super) struct Outcome {
    pub(super) steps: Vec<Step>,
    pub(super) yardsticks: Yardsticks,
    pub(super) paid_total: i64,
    pub(super) warm_up_payments: i64,
    pub(super) backlog_at_end: i64,
    pub(super) drained: Option<Duration>,
    /// Outbox rows not yet acknowledged when the run ended.
    pub(super) outbox_after: i64,
    pub(super) memory: Memory,
}

impl Outcome {
    /// The highest passing step; refining steps need not run in rising order.
    fn best(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.passed)
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
    }

    fn max_sustained(&self) -> f64 {
        self.best().map_or(0.0, |s| s.summary.throughput_per_s)
    }

    pub(super) fn json(
        &self,
        args: &CapacityArgs,
        target: String,
        broker_flush: &str,
    ) -> serde_json::Value {
        let best = self.best();
        let max_sustained = self.max_sustained();
        let Yardsticks {
            fsync_per_s,
            sqlite_commit_per_s,
            postgres,
            mysql,
        } = self.yardsticks.clone();
        let database = if postgres.is_some() {
            "postgres"
        } else if mysql.is_some() {
            "mysql"
        } else {
            "sqlite"
        };
        json!({
            "database": database,
            "mysql_yardsticks": mysql.map(|m| json!({
                "version": m.version,
                "innodb_flush_log_at_trx_commit": m.flush_log_at_trx_commit,
                "insert_1_connection_per_s": m.insert_1_per_s,
                "insert_8_connections_per_s": m.insert_8_per_s,
                "naive_payments_8_connections_per_s": m.naive_pay_8_per_s,
                "ordermq_multiple_of_naive_payments": max_sustained / m.naive_pay_8_per_s.max(1e-9),
            })),
            "postgres_yardsticks": postgres.map(|p| json!({
                "fsync": p.fsync,
                "synchronous_commit": p.synchronous_commit,
                "insert_1_connection_per_s": p.insert_1_per_s,
                "insert_8_connections_per_s": p.insert_8_per_s,
                "naive_payments_8_connections_per_s": p.naive_pay_8_per_s,
                "ordermq_multiple_of_naive_payments": max_sustained / p.naive_pay_8_per_s.max(1e-9),
            })),
            "scenario": "capacity",
            "machine": super::super::machine(),
            "settings": args.target.settings,
            "target": target,
            "durability": {"sqlite_synchronous": "FULL", "sqlite_journal": "WAL", "broker_flush": broker_flush},
            "p99_limit_ms": args.p99_limit_ms,
            "step_duration_s": args.step_duration.as_secs_f64(),
            "refine_steps": args.refine,
            "repeated_steps": self.steps.iter().filter(|s| s.repeated).count(),
            "max_sustained_per_s": max_sustained,
            "max_sustained_offered_per_s": best.map(|s| s.rate),
            "p50_ms_at_max": best.map(|s| s.summary.p50_ms),
            "p99_ms_at_max": best.map(|s| s.summary.p99_ms),
            "e2e_p99_ms_at_max": best.map(|s| s.e2e.1),
            "yardsticks": {"fsync_per_s": fsync_per_s, "sqlite_commit_per_s": sqlite_commit_per_s},
            "multiple_of_fsync": max_sustained / fsync_per_s.max(1e-9),
            "multiple_of_sqlite_commit": max_sustained / sqlite_commit_per_s.max(1e-9),
            "paid_total": self.paid_total,
            "warm_up_payments": self.warm_up_payments,
            "backlog_at_end": self.backlog_at_end,
            "drained_after_s": self.drained.map(|d| d.as_secs_f64()),
            "fanned_out_all": self.drained.is_some() && self.outbox_after == 0,
            "peak_rss_mb": self.memory.peak_rss_mb,
            "peak_rss_anon_mb": self.memory.peak_anon_mb,
            "peak_rss_file_mb": self.memory.peak_file_mb,
            "steps": self.steps.iter().map(step_json).collect::<Vec<_>>(),
        })
    }

    /// The table printed at the end: one row per step, then the totals.
    pub(super) fn table(&self) -> Vec<Vec<String>> {
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
        for s in &self.steps {
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
        let max_sustained = self.max_sustained();
        let Yardsticks {
            fsync_per_s,
            sqlite_commit_per_s,
            postgres,
            mysql,
        } = self.yardsticks.clone();
        let Memory {
            peak_rss_mb,
            peak_anon_mb,
            peak_file_mb,
        } = self.memory;
        let times =
            |yardstick: f64| format!("ordermq = {:.1}x", max_sustained / yardstick.max(1e-9));
        let server_rows = postgres
            .map(|p| {
                (
                    "PostgreSQL",
                    p.insert_1_per_s,
                    p.insert_8_per_s,
                    p.naive_pay_8_per_s,
                )
            })
            .or(mysql.map(|m| {
                (
                    "MySQL",
                    m.insert_1_per_s,
                    m.insert_8_per_s,
                    m.naive_pay_8_per_s,
                )
            }));
        let server_rows = server_rows.map(|(server, insert_1, insert_8, naive_8)| {
            [
                (
                    format!("{server} 1 row/txn, 1 conn/s"),
                    format!("{insert_1:.0}"),
                    times(insert_1),
                ),
                (
                    format!("{server} 1 row/txn, 8 conns/s"),
                    format!("{insert_8:.0}"),
                    times(insert_8),
                ),
                (
                    format!("{server} naive payments, 8 conns/s"),
                    format!("{naive_8:.0}"),
                    times(naive_8),
                ),
            ]
        });
        let totals = [
            (
                "max sustained/s",
                format!("{max_sustained:.0}"),
                String::new(),
            ),
            (
                "fsync/s (yardstick)",
                format!("{fsync_per_s:.0}"),
                format!("ordermq = {:.1}x", max_sustained / fsync_per_s.max(1e-9)),
            ),
            (
                "SQLite 1 row/commit/s",
                format!("{sqlite_commit_per_s:.0}"),
                format!(
                    "ordermq = {:.1}x",
                    max_sustained / sqlite_commit_per_s.max(1e-9)
                ),
            ),
            (
                "backlog at end / drained",
                self.backlog_at_end.to_string(),
                self.drained.map_or("not drained in 180 s".into(), |d| {
                    format!("drained in {:.1}s", d.as_secs_f64())
                }),
            ),
            (
                "peak RSS MiB",
                peak_rss_mb.map_or("?".into(), |m| format!("{m:.0}")),
                peak_anon_mb
                    .zip(peak_file_mb)
                    .map_or(String::new(), |(anon, file)| {
                        format!("anonymous ≤{anon:.0}, file-backed ≤{file:.0}")
                    }),
            ),
        ];
        for (label, value, note) in totals
            .into_iter()
            .map(|(label, value, note)| (label.to_owned(), value, note))
            .chain(server_rows.into_iter().flatten())
        {
            let mut row = vec![label, value];
            row.extend(std::iter::repeat_n(String::new(), 5));
            row.push(note);
            table.push(row);
        }
        table
    }

    /// Latency against offered load, and payments answered over the run.
    pub(super) fn charts(&self, series: Vec<(f64, f64)>) -> Vec<Chart> {
        let mut by_rate: Vec<&Step> = self.steps.iter().collect();
        by_rate.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        vec![
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
        ]
    }
}

fn step_json(s: &Step) -> serde_json::Value {
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
}
