//! The seed document's comparison, measured: the same paced payments in three modes.
//!
//! - *serial*: the original `payOrderSuccess` — order status and stock (our real
//!   database transaction), then points, coupon, SMS and logistics called inline,
//!   one after another, each followed by its own database write;
//! - *parallel*: the same, with the four downstream calls concurrent;
//! - *ordermq*: the real path — signed HTTP callback, one transaction with the
//!   outbox, then RocketMQ and the four consumer groups.
//!
//! The legacy modes run in-process (no HTTP) on their own database, so they
//! skip costs ordermq pays (HTTP, JSON, signature check): the comparison is
//! conservative. Third parties use the seed's latencies in every mode.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_util::future::join_all;
use ordermq_domain::fanout::effect_for;
use ordermq_domain::{
    Amount, OrderId, OrderPaid, PaymentId, PaymentNotice, System, UserId, now_millis,
};
use ordermq_store::{Store, StoreOptions};
use serde_json::json;

use super::load::{self, Sample, Summary};
use super::report::Chart;
use super::target::{self, Target, TargetArgs};
use super::{BENCH_PRICE, BenchResult, EndToEnd, Output, ms, precreate_orders};
use ordermq_gateways::{FakeGateway, Profile};

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// Payments per second, in every mode.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long each mode runs (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    pub duration: Duration,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub output: Output,
}

/// The pre-MQ order service: everything inline.
struct Legacy {
    store: Store,
    credit: FakeGateway,
    marketing: FakeGateway,
    sms: FakeGateway,
    logistics: FakeGateway,
}

impl Legacy {
    fn new(store: Store, config: &ordermq::Config) -> Self {
        Self {
            store,
            // Internal services in the seed: points ~50 ms, coupons ~60 ms.
            credit: FakeGateway::new("credit service", Profile::from_millis(50, 10, 0.0, 0, 0.0)),
            marketing: FakeGateway::new(
                "marketing service",
                Profile::from_millis(60, 10, 0.0, 0, 0.0),
            ),
            sms: FakeGateway::new("sms gateway", config.sms_profile()),
            logistics: FakeGateway::new("logistics system", config.logistics_profile()),
        }
    }

    /// One downstream call and its write, as the old service did it.
    async fn downstream(&self, system: System, paid: &OrderPaid) -> Result<(), String> {
        let key = format!("legacy:{}:{}", system.name(), paid.order_id);
        let service = match system {
            System::Credit => &self.credit,
            System::Marketing => &self.marketing,
            System::Push => &self.sms,
            System::Warehouse => &self.logistics,
        };
        let external_ref = service
            .call(&key, system.name())
            .await
            .map_err(|e| e.to_string())?;
        self.store
            .apply_effect(
                &key,
                "legacy",
                &effect_for(system, paid, external_ref),
                now_millis(),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// `payOrderSuccess`: status + stock, then the four calls inline.
    async fn pay_order_success(&self, order_id: OrderId, parallel: bool) -> bool {
        let notice = PaymentNotice {
            payment_id: PaymentId::parse(&format!("pay-{order_id}")).expect("valid id"),
            order_id,
            amount: Amount::parse(BENCH_PRICE).expect("valid amount"),
        };
        let Ok(receipt) = self.store.pay_order(&notice, now_millis()).await else {
            return false;
        };
        let paid = OrderPaid {
            order_id: receipt.order_id,
            user_id: UserId::parse("bench-user").expect("valid id"),
            payment_id: notice.payment_id,
            amount: notice.amount,
            paid_at: now_millis(),
            lines: vec![],
        };
        if parallel {
            join_all(System::ALL.map(|s| self.downstream(s, &paid)))
                .await
                .iter()
                .all(Result::is_ok)
        } else {
            for system in System::ALL {
                if self.downstream(system, &paid).await.is_err() {
                    return false;
                }
            }
            true
        }
    }
}

fn mode_json(summary: &Summary) -> serde_json::Value {
    json!({
        "p50_ms": summary.p50_ms, "p95_ms": summary.p95_ms, "p99_ms": summary.p99_ms,
        "max_ms": summary.max_ms, "mean_ms": summary.mean_ms,
        "throughput_per_s": summary.throughput_per_s,
        "requests": summary.count, "errors": summary.errors,
    })
}

/// One mode's payments: every request's sample and their summary.
struct ModeRun {
    mode: &'static str,
    summary: Summary,
    samples: Vec<Sample>,
}

/// What only the ordermq mode has: the fan-out to the four consumer groups
/// after each payment, and the payments' own detail.
struct FanOut {
    /// Paid → all four effects (ms, sorted), over the orders applied everywhere.
    e2e: Vec<f64>,
    e2e_p50: f64,
    e2e_p99: f64,
    /// Each system's p50/p99 on its own.
    e2e_by_system: serde_json::Map<String, serde_json::Value>,
    /// The slowest payment calls.
    slowest: serde_json::Value,
    /// Payments answered per second of the run.
    throughput: Vec<(f64, f64)>,
    /// How long after the load the fan-out was complete (`None`: not within 180 s).
    waited: Option<Duration>,
}

/// How many times longer the legacy modes' payment call takes than ordermq's.
struct Ratios {
    serial_p50: f64,
    serial_p99: f64,
    parallel_p50: f64,
    parallel_p99: f64,
}

impl Ratios {
    fn of(results: &[ModeRun]) -> Self {
        let by_mode: HashMap<&str, &Summary> =
            results.iter().map(|r| (r.mode, &r.summary)).collect();
        let (serial, parallel, ordermq) =
            (by_mode["serial"], by_mode["parallel"], by_mode["ordermq"]);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Self {
            serial_p50: ratio(serial.p50_ms, ordermq.p50_ms),
            serial_p99: ratio(serial.p99_ms, ordermq.p99_ms),
            parallel_p50: ratio(parallel.p50_ms, ordermq.p50_ms),
            parallel_p99: ratio(parallel.p99_ms, ordermq.p99_ms),
        }
    }
}

/// The seed scenario: the serial and the parallel legacy modes, then
/// ordermq, each paying `rate × duration` orders; then the report.
pub(crate) async fn run(args: SeedArgs) -> BenchResult<serde_json::Value> {
    let count = (args.rate * args.duration.as_secs_f64()).round().max(1.0) as usize;
    let broker_flush = args.target.broker_flush_label()?;
    println!(
        "ordermq-bench seed: {count} payments per mode at {}/s ({:?}), seed latencies, broker {broker_flush}",
        args.rate, args.duration
    );
    let config = ordermq::Config::default();
    let mut results = Vec::new();
    // The legacy modes, each on a fresh database of its own.
    for (mode, parallel) in [("serial", false), ("parallel", true)] {
        results.push(run_legacy(mode, parallel, args.rate, count, &config).await?);
    }
    // ordermq, with the same third-party latencies in its consumers.
    let (ordermq, fanout) = run_ordermq(&args, count).await?;
    results.push(ordermq);
    summarise(&args, count, &config, &results, fanout, &broker_flush)
}

/// One legacy mode (`parallel`: the four downstream calls concurrent) on a
/// fresh database: `count` orders created, then paid at `rate`.
async fn run_legacy(
    mode: &'static str,
    parallel: bool,
    rate: f64,
    count: usize,
    config: &ordermq::Config,
) -> BenchResult<ModeRun> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let url = format!("sqlite://{}/orders.db", dir.path().display());
    let store = Store::open(&url, &StoreOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let orders = precreate_orders(&store, count, &format!("{mode}: create orders")).await?;
    let legacy = Arc::new(Legacy::new(store.clone(), config));
    let (samples, wall) = load::run_open_loop(&format!("{mode}: pay"), rate, count, |i| {
        let (legacy, id) = (legacy.clone(), orders[i].clone());
        async move { legacy.pay_order_success(id, parallel).await }
    })
    .await;
    store.close().await;
    Ok(ModeRun {
        mode,
        summary: load::summarize(&samples, wall),
        samples,
    })
}

/// The ordermq mode: a target started (or reached) and warmed up, `count`
/// orders paid over HTTP at the seed's rate, then the wait for the fan-out
/// and its end-to-end times; the target is stopped before returning.
async fn run_ordermq(args: &SeedArgs, count: usize) -> BenchResult<(ModeRun, FanOut)> {
    let target = Arc::new(Target::start(&args.target, |_| {}).await?);
    eprintln!("  ordermq mode: {}", target.describe());
    if !args.target.settings.is_empty() {
        eprintln!("  settings: {}", args.target.settings.join(" "));
    }
    super::warn_if_disk_nearly_full();
    let warmed = super::warm_up(&target, 20).await?;
    let orders = Arc::new(
        target
            .create_orders(count, "ordermq: create orders")
            .await?,
    );
    let begun_epoch = now_millis();
    let (samples, wall) = load::run_open_loop("ordermq: pay", args.rate, count, |i| {
        super::pay_over_http(target.clone(), orders.clone(), i)
    })
    .await;
    let summary = load::summarize(&samples, wall);
    let waited =
        super::wait_for_fanout(&target, warmed + count as i64, Duration::from_secs(180)).await?;
    let EndToEnd {
        all: e2e,
        by_system: e2e_by_system,
        ..
    } = super::end_to_end(&target, &orders, &samples, begun_epoch).await?;
    let fanout = FanOut {
        e2e_p50: load::percentile(&e2e, 50.0),
        e2e_p99: load::percentile(&e2e, 99.0),
        e2e,
        e2e_by_system,
        slowest: load::slowest(&samples, 10),
        throughput: load::throughput_series(&samples),
        waited,
    };
    target::into_inner(target)?.stop().await?;
    let run = ModeRun {
        mode: "ordermq",
        summary,
        samples,
    };
    Ok((run, fanout))
}

/// The JSON report, the printed table and the HTML charts, written out.
fn summarise(
    args: &SeedArgs,
    count: usize,
    config: &ordermq::Config,
    results: &[ModeRun],
    fanout: FanOut,
    broker_flush: &str,
) -> BenchResult<serde_json::Value> {
    let ratios = Ratios::of(results);
    let mut report = report_json(args, count, config, results, &fanout, &ratios);
    report["durability"] = json!({
        "sqlite_synchronous": "FULL", "sqlite_journal": "WAL", "broker_flush": broker_flush,
    });
    let table = table(results, &fanout, &ratios);
    let charts = charts(results, fanout.throughput);
    super::write_reports(
        "seed",
        &args.output,
        &format!("ordermq-bench seed (ordermq's broker {broker_flush})"),
        &report,
        &table,
        &charts,
    )?;
    Ok(report)
}

fn report_json(
    args: &SeedArgs,
    count: usize,
    config: &ordermq::Config,
    results: &[ModeRun],
    fanout: &FanOut,
    ratios: &Ratios,
) -> serde_json::Value {
    let mut modes = serde_json::Map::new();
    for ModeRun { mode, summary, .. } in results {
        modes.insert((*mode).to_owned(), mode_json(summary));
    }
    modes["ordermq"]["e2e_p50_ms"] = json!(fanout.e2e_p50);
    modes["ordermq"]["e2e_p99_ms"] = json!(fanout.e2e_p99);
    modes["ordermq"]["e2e_measured"] = json!(fanout.e2e.len());
    modes["ordermq"]["e2e_by_system"] = serde_json::Value::Object(fanout.e2e_by_system.clone());
    modes["ordermq"]["slowest"] = json!(fanout.slowest);
    modes["ordermq"]["fanout_complete_after_load_s"] =
        json!(fanout.waited.map(|d| d.as_secs_f64()));
    json!({
        "scenario": "seed",
        "machine": super::machine(),
        "settings": args.target.settings,
        "rate_per_s": args.rate,
        "duration_s": args.duration.as_secs_f64(),
        "payments_per_mode": count,
        "latencies": {
            "credit_ms": 50, "marketing_ms": 60,
            "sms_ms": config.sms_latency.as_millis() as u64, "sms_jitter_ms": config.sms_jitter.as_millis() as u64,
            "sms_spike_probability": config.sms_spike_probability, "sms_spike_ms": config.sms_spike.as_millis() as u64,
            "logistics_ms": config.logistics_latency.as_millis() as u64, "logistics_jitter_ms": config.logistics_jitter.as_millis() as u64,
            "logistics_spike_probability": config.logistics_spike_probability, "logistics_spike_ms": config.logistics_spike.as_millis() as u64,
        },
        "modes": modes,
        "ratios": {
            "serial_over_ordermq_p50": ratios.serial_p50,
            "serial_over_ordermq_p99": ratios.serial_p99,
            "parallel_over_ordermq_p50": ratios.parallel_p50,
            "parallel_over_ordermq_p99": ratios.parallel_p99,
        },
        "peak_rss_mb": super::peak_rss_mb(),
    })
}

/// The printed table: one row per mode, ordermq's end-to-end time, and the ratios.
fn table(results: &[ModeRun], fanout: &FanOut, ratios: &Ratios) -> Vec<Vec<String>> {
    let mut table = vec![
        [
            "mode", "p50 ms", "p95 ms", "p99 ms", "max ms", "paid/s", "errors",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for ModeRun {
        mode, summary: s, ..
    } in results
    {
        table.push(vec![
            (*mode).to_owned(),
            ms(s.p50_ms),
            ms(s.p95_ms),
            ms(s.p99_ms),
            ms(s.max_ms),
            format!("{:.1}", s.throughput_per_s),
            s.errors.to_string(),
        ]);
    }
    table.push(vec![
        "ordermq end-to-end (paid → all 4 groups)".into(),
        ms(fanout.e2e_p50),
        "".into(),
        ms(fanout.e2e_p99),
        "".into(),
        "".into(),
        "".into(),
    ]);
    table.push(vec![
        "serial / ordermq".into(),
        format!("{:.0}x", ratios.serial_p50),
        "".into(),
        format!("{:.0}x", ratios.serial_p99),
        "".into(),
        "".into(),
        "".into(),
    ]);
    table.push(vec![
        "parallel / ordermq".into(),
        format!("{:.0}x", ratios.parallel_p50),
        "".into(),
        format!("{:.0}x", ratios.parallel_p99),
        "".into(),
        "".into(),
        "".into(),
    ]);
    table
}

/// The HTML charts: latency by mode, every payment's latency over the run,
/// and ordermq's payments answered per second.
fn charts(results: &[ModeRun], throughput: Vec<(f64, f64)>) -> Vec<Chart> {
    vec![
        Chart::Bars {
            title: "Payment call latency by mode".into(),
            unit: "ms".into(),
            groups: results
                .iter()
                .map(
                    |ModeRun {
                         mode, summary: s, ..
                     }| {
                        (
                            (*mode).to_owned(),
                            vec![
                                ("p50".into(), s.p50_ms),
                                ("p95".into(), s.p95_ms),
                                ("p99".into(), s.p99_ms),
                                ("max".into(), s.max_ms),
                            ],
                        )
                    },
                )
                .collect(),
        },
        Chart::Lines {
            title: "Payment latency over the run".into(),
            x_label: "seconds into the mode's run".into(),
            y_label: "latency (ms, log)".into(),
            series: results
                .iter()
                .map(|ModeRun { mode, samples, .. }| {
                    (
                        (*mode).to_owned(),
                        samples
                            .iter()
                            .map(|s| (s.start.as_secs_f64(), s.latency.as_secs_f64() * 1e3))
                            .collect(),
                    )
                })
                .collect(),
            log_y: true,
        },
        Chart::Lines {
            title: "ordermq payments answered per second".into(),
            x_label: "seconds".into(),
            y_label: "payments/s".into(),
            series: vec![("ordermq".into(), throughput)],
            log_y: false,
        },
    ]
}
