//! `feed`: the change feed's three figures (issue 22's benchmark), each on
//! an in-process ordermq with the sink (`order_feed_sink_group`, as
//! `ordermq feed sink` runs it) writing an analytics SQLite file in the
//! run's temporary directory.
//!
//! Why these three: they are what the data team would ask of the feed.
//! - **lag**: paid orders at a fixed rate (open loop, signed callbacks),
//!   the four consumer groups running; the lag of each `paid` event is the
//!   sink's `applied_at` minus the event's `time`. Both are stamped inside
//!   their transactions (the order's, just before its commit; the sink's,
//!   before its own commit), so the figure is commit → applied within the
//!   time of one commit on each side. Split at the outbox's `sent_at` (the
//!   relay's clock when the broker confirmed the message): the relay's
//!   part before it, the delivery's after.
//! - **drain**: feed events pre-loaded while the sink is stopped (one
//!   `created` event per order, relayed to the broker), then the sink
//!   started and timed until it applied them all: events/s.
//! - **snapshot**: orders seeded with the feed off (as an order database
//!   from before the feed, which a snapshot exists for), then `ordermq
//!   feed snapshot` timed, and, separately, the sink applying it.
//!
//! The sink's database is read only between measurements: it has one
//! connection, and a poll would take it from the sink. While the sink
//! works, progress comes from its group's in-memory counter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use ordermq::config::FeedMode;
use ordermq::feed::{ProgressLine, RunningSink, SnapshotReport};
use ordermq_domain::feed::{FeedChange, TOPIC_ORDER_CHANGE_FEED, parse_time_millis};
use ordermq_domain::now_millis;
use ordermq_testkit::LocalApp;
use serde_json::{Value, json};

use super::target::{self, Target, TargetArgs};
use super::{BenchResult, Output, load, machine, ms, pay_over_http, report, warm_up};

/// The targets, printed beside the figures.
const TARGET_LAG_P99_MS: f64 = 100.0;
const TARGET_LAG_RATE: f64 = 1_000.0;
const TARGET_EVENTS_PER_S: f64 = 20_000.0;
/// 1,000,000 orders in 60 s.
const TARGET_SNAPSHOT_ORDERS_PER_S: f64 = 1_000_000.0 / 60.0;

/// Payments (and their fan-out) before the lag is measured.
const WARM_UP: usize = 50;

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FeedPhase {
    /// Feed lag p50/p99 at --rate paid orders/s.
    Lag,
    /// Events/s the sink applies, draining --events pre-loaded events.
    Drain,
    /// `feed snapshot` of --orders orders, and the sink applying it.
    Snapshot,
}

#[derive(Debug, Clone, Args)]
pub struct FeedArgs {
    /// Paid orders per second while the lag is measured (open loop).
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// How long payments come at --rate.
    #[arg(long, default_value = "20s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// Feed events pre-loaded while the sink is stopped, then drained.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Orders seeded for the snapshot.
    #[arg(long, default_value_t = 1_000_000)]
    pub orders: usize,
    /// The phases to run, comma-separated (default: all three).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "lag,drain,snapshot"
    )]
    pub phases: Vec<FeedPhase>,
    /// Runs the in-process ordermq with this setting (any key of `ordermq
    /// config` except where it runs, and `feed`, which each phase sets).
    /// Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    #[command(flatten)]
    pub output: Output,
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// An in-process ordermq with no simulated third-party latency and the
/// feed `on` or `off`, and the URL of an analytics file in its directory.
async fn start(args: &FeedArgs, feed: FeedMode) -> BenchResult<(Arc<Target>, String)> {
    let target_args = TargetArgs {
        settings: args.settings.clone(),
        ..TargetArgs::default()
    };
    let target = Target::start(&target_args, |c| {
        ordermq_testkit::fast_third_parties(c);
        c.feed = feed;
    })
    .await?;
    let url = format!(
        "sqlite://{}",
        local(&target)?.data_dir().join("analytics.db").display()
    );
    Ok((Arc::new(target), url))
}

fn local(target: &Target) -> BenchResult<&LocalApp> {
    match target {
        Target::Local(app) => Ok(app),
        Target::Remote(_) => Err("the feed benchmark runs its own ordermq".into()),
    }
}

async fn stop(target: Arc<Target>) -> BenchResult<()> {
    target::into_inner(target)?.stop().await
}

/// Waits until the sink's group has consumed `count` more messages than
/// `from` (its in-memory counter: no read of the sink's one connection),
/// drawing progress under `label`. Returns how long it took, or an error
/// after `limit`.
async fn wait_handled(
    sink: &RunningSink,
    from: u64,
    count: usize,
    label: &str,
    limit: Duration,
) -> BenchResult<Duration> {
    let begun = Instant::now();
    let mut drawn = Instant::now();
    loop {
        let done = sink.handled().saturating_sub(from);
        if done >= count as u64 {
            load::progress(label, count, count, done, begun.elapsed());
            eprintln!();
            return Ok(begun.elapsed());
        }
        if begun.elapsed() > limit {
            eprintln!();
            return Err(format!(
                "{label}: the sink consumed {done} of {count} messages in {} s",
                limit.as_secs()
            ));
        }
        if drawn.elapsed() > Duration::from_millis(500) {
            load::progress(label, done as usize, count, done, begun.elapsed());
            drawn = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the sink's history holds `count` events (reads its
/// database: only between measurements).
async fn wait_history(sink: &RunningSink, count: i64, limit: Duration) -> BenchResult<()> {
    let begun = Instant::now();
    loop {
        let (events, _) = sink.sink.history().await.map_err(text)?;
        if events >= count {
            return Ok(());
        }
        if begun.elapsed() > limit {
            return Err(format!(
                "the sink's history holds {events} of {count} events after {} s",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A generous limit for `count` messages: a debug build applies a few
/// hundred a second.
fn limit_for(count: usize) -> Duration {
    Duration::from_secs(120 + count as u64 / 100)
}

/// (a) Feed lag at `args.rate` paid orders/s for `args.duration`.
async fn lag(args: &FeedArgs) -> BenchResult<Value> {
    let (target, url) = start(args, FeedMode::On).await?;
    let app = local(&target)?;
    let sink = RunningSink::start(&app.tool_config(), &url)
        .await
        .map_err(text)?;
    eprintln!("feed lag: warm-up ({WARM_UP} payments, their fan-out and their feed)");
    warm_up(&target, WARM_UP).await?;
    wait_history(&sink, 2 * WARM_UP as i64, limit_for(2 * WARM_UP)).await?;

    let count = (args.rate * args.duration.as_secs_f64()).round().max(1.0) as usize;
    let orders = Arc::new(target.create_orders(count, "lag: create orders").await?);
    // Their `created` events reach the sink before the payments start.
    wait_history(&sink, (2 * WARM_UP + count) as i64, limit_for(count)).await?;

    let since = now_millis();
    let before = sink.handled();
    let (samples, wall) = load::run_open_loop("lag: pay", args.rate, count, |i| {
        pay_over_http(target.clone(), orders.clone(), i)
    })
    .await;
    let paid = samples.iter().filter(|s| s.ok).count();
    let caught_up = wait_handled(&sink, before, paid, "lag: sink (paid)", limit_for(paid)).await?;
    let fanout = super::wait_for_fanout(&target, (WARM_UP + paid) as i64, limit_for(paid)).await?;
    // The four groups' figure for the same payments, for comparison: from
    // each payment request's scheduled start to its last effect.
    let fanout_e2e = super::end_to_end(&target, &orders, &samples, since).await?;

    let paid_type = FeedChange::Paid.event_type();
    let applied = sink
        .sink
        .applied_times(&paid_type, since)
        .await
        .map_err(text)?;
    let sent = app
        .store
        .sent_times(TOPIC_ORDER_CHANGE_FEED, since)
        .await
        .map_err(text)?;
    let split = LagSplit::of(&applied, &sent);
    let payments = load::summarize(&samples, wall);
    sink.stop().await;
    stop(target).await?;
    Ok(json!({
        "rate": args.rate,
        "duration_s": args.duration.as_secs_f64(),
        "payments": paid,
        "payment_errors": payments.errors,
        "payment_p99_ms": payments.p99_ms,
        "paid_events_applied": split.total.len(),
        "lag_p50_ms": load::percentile(&split.total, 50.0),
        "lag_p99_ms": load::percentile(&split.total, 99.0),
        "lag_max_ms": split.total.last().copied().unwrap_or(0.0),
        "relay_p50_ms": load::percentile(&split.relay, 50.0),
        "relay_p99_ms": load::percentile(&split.relay, 99.0),
        "delivery_p50_ms": load::percentile(&split.delivery, 50.0),
        "delivery_p99_ms": load::percentile(&split.delivery, 99.0),
        "sink_caught_up_after_load_s": caught_up.as_secs_f64(),
        "fanout_caught_up_after_load_s": fanout.map(|d| d.as_secs_f64()),
        "fanout_e2e_p50_ms": load::percentile(&fanout_e2e.all, 50.0),
        "fanout_e2e_p99_ms": load::percentile(&fanout_e2e.all, 99.0),
        "target_lag_p99_ms": TARGET_LAG_P99_MS,
        "target_at_rate": TARGET_LAG_RATE,
    }))
}

/// A `paid` event's lag and its two parts, each sorted: `relay`, from the
/// change's time to the relay's `sent_at` (the order's commit, the relay's
/// linger and claim, the broker's SEND_OK after its flush), and
/// `delivery`, from `sent_at` to the sink's `applied_at` (the broker's
/// hand-over to the consumer, the listener, the sink's wait for its
/// connection).
#[derive(Debug, Default)]
struct LagSplit {
    total: Vec<f64>,
    relay: Vec<f64>,
    delivery: Vec<f64>,
}

impl LagSplit {
    /// From the sink's `(event id, time, applied_at)` and the outbox's
    /// event id → `sent_at`. An event whose `time` cannot be read is left
    /// out; one without `sent_at` counts in the total only.
    fn of(applied: &[(String, String, i64)], sent: &HashMap<String, i64>) -> Self {
        let mut split = Self::default();
        for (event_id, time, applied_at) in applied {
            let Some(t) = parse_time_millis(time) else {
                continue;
            };
            split.total.push((applied_at - t).max(0) as f64);
            if let Some(&sent_at) = sent.get(event_id) {
                split.relay.push((sent_at - t).max(0) as f64);
                split.delivery.push((applied_at - sent_at).max(0) as f64);
            }
        }
        for v in [&mut split.total, &mut split.relay, &mut split.delivery] {
            v.sort_by(f64::total_cmp);
        }
        split
    }
}

/// (b) Events/s: `args.events` feed events pre-loaded while the sink is
/// stopped, then drained.
async fn drain(args: &FeedArgs) -> BenchResult<Value> {
    let (target, url) = start(args, FeedMode::On).await?;
    let app = local(&target)?;
    // The group exists (and has its offsets) before the load, as a sink
    // that was stopped for a while.
    let sink = RunningSink::start(&app.tool_config(), &url)
        .await
        .map_err(text)?;
    sink.stop().await;
    target
        .create_orders(args.events, "drain: pre-load events")
        .await?;
    // Every feed row handed to the broker before the sink starts.
    let begun = Instant::now();
    loop {
        let backlog = target.outbox_backlog().await?;
        let sent = args.events - (backlog.max(0) as usize).min(args.events);
        load::progress(
            "drain: relay to broker",
            sent,
            args.events,
            sent as u64,
            begun.elapsed(),
        );
        if backlog == 0 {
            eprintln!();
            break;
        }
        if begun.elapsed() > limit_for(args.events) {
            return Err(format!("drain: the relay left {backlog} rows unsent"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let since = now_millis();
    let started = Instant::now();
    let sink = RunningSink::start(&app.tool_config(), &url)
        .await
        .map_err(text)?;
    wait_handled(&sink, 0, args.events, "drain: sink", limit_for(args.events)).await?;
    let total = started.elapsed();
    let (applied, first, last) = sink.sink.applied_span(since).await.map_err(text)?;
    sink.stop().await;
    stop(target).await?;
    let span_s = (last - first) as f64 / 1e3;
    Ok(json!({
        "events": args.events,
        "applied": applied,
        "from_sink_start_s": total.as_secs_f64(),
        "first_to_last_applied_s": span_s,
        "events_per_s": per_s(applied, span_s),
        "events_per_s_from_sink_start": per_s(applied, total.as_secs_f64()),
        "target_events_per_s": TARGET_EVENTS_PER_S,
    }))
}

fn per_s(count: i64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// (c) `feed snapshot` of `args.orders` orders, then the sink applying it.
async fn snapshot(args: &FeedArgs) -> BenchResult<Value> {
    let (target, url) = start(args, FeedMode::Off).await?;
    let app = local(&target)?;
    target
        .create_orders(args.orders, "snapshot: seed orders")
        .await?;
    let config = app.tool_config();
    let mut line = ProgressLine::new(Duration::from_secs(2));
    let mut progress = |r: &SnapshotReport| {
        if let Some(text) = line.line(r, false) {
            eprintln!("  {text}");
        }
    };
    let begun = Instant::now();
    let sent = ordermq::feed::snapshot(&config, i64::MIN, &mut progress)
        .await
        .map_err(text)?;
    let send_s = begun.elapsed().as_secs_f64();
    eprintln!("  snapshot: {} orders sent in {send_s:.1} s", sent.orders);

    let since = now_millis();
    let started = Instant::now();
    let sink = RunningSink::start(&config, &url).await.map_err(text)?;
    let count = usize::try_from(sent.orders).unwrap_or(usize::MAX);
    wait_handled(&sink, 0, count, "snapshot: sink", limit_for(count)).await?;
    let apply_s = started.elapsed().as_secs_f64();
    let (applied, first, last) = sink.sink.applied_span(since).await.map_err(text)?;
    sink.stop().await;
    stop(target).await?;
    let span_s = (last - first) as f64 / 1e3;
    Ok(json!({
        "orders": args.orders,
        "sent": sent.orders,
        "pages": sent.pages,
        "send_s": send_s,
        "send_orders_per_s": per_s(sent.orders as i64, send_s),
        "applied": applied,
        "apply_from_sink_start_s": apply_s,
        "apply_first_to_last_s": span_s,
        "apply_orders_per_s": per_s(applied, span_s),
        "send_and_apply_s": send_s + apply_s,
        "target_orders_per_s": TARGET_SNAPSHOT_ORDERS_PER_S,
    }))
}

/// `yes`/`no` against a target, or `-` when the phase did not run.
fn met(value: Option<f64>, ok: impl Fn(f64) -> bool) -> String {
    match value {
        Some(v) if ok(v) => "yes".into(),
        Some(_) => "no".into(),
        None => "-".into(),
    }
}

fn table(report: &Value) -> Vec<Vec<String>> {
    let f = |path: &[&str]| {
        path.iter()
            .try_fold(report, |v, k| v.get(*k))
            .and_then(Value::as_f64)
    };
    let shown = |v: Option<f64>| v.map_or_else(|| "-".into(), ms);
    let pair = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{} / {}", ms(a), ms(b)),
        _ => "-".into(),
    };
    let lag_p99 = f(&["lag", "lag_p99_ms"]);
    let at_target_rate = f(&["lag", "rate"]).is_some_and(|r| r >= TARGET_LAG_RATE);
    let events = f(&["drain", "events_per_s"]);
    let snap_send = f(&["snapshot", "send_orders_per_s"]);
    let snap_apply = f(&["snapshot", "apply_orders_per_s"]);
    vec![
        vec![
            "figure".into(),
            "measured".into(),
            "target".into(),
            "met".into(),
        ],
        vec![
            format!(
                "lag p50 ms at {}/s",
                f(&["lag", "rate"]).map_or("-".into(), |r| format!("{r:.0}"))
            ),
            shown(f(&["lag", "lag_p50_ms"])),
            "".into(),
            "".into(),
        ],
        vec![
            "lag p99 ms".into(),
            shown(lag_p99),
            format!("≤ {TARGET_LAG_P99_MS:.0} at {TARGET_LAG_RATE:.0}/s"),
            if at_target_rate {
                met(lag_p99, |v| v <= TARGET_LAG_P99_MS)
            } else {
                "(other rate)".into()
            },
        ],
        vec![
            "  relay part p50 / p99 ms".into(),
            pair(f(&["lag", "relay_p50_ms"]), f(&["lag", "relay_p99_ms"])),
            "".into(),
            "".into(),
        ],
        vec![
            "  delivery part p50 / p99 ms".into(),
            pair(
                f(&["lag", "delivery_p50_ms"]),
                f(&["lag", "delivery_p99_ms"]),
            ),
            "".into(),
            "".into(),
        ],
        vec![
            "(fan-out e2e p99 ms, same payments)".into(),
            shown(f(&["lag", "fanout_e2e_p99_ms"])),
            "".into(),
            "".into(),
        ],
        vec![
            "sink events/s (drain)".into(),
            shown(events),
            format!("≥ {TARGET_EVENTS_PER_S:.0}"),
            met(events, |v| v >= TARGET_EVENTS_PER_S),
        ],
        vec![
            "snapshot sent, orders/s".into(),
            shown(snap_send),
            format!("≥ {TARGET_SNAPSHOT_ORDERS_PER_S:.0} (1,000,000 in 60 s)"),
            met(snap_send, |v| v >= TARGET_SNAPSHOT_ORDERS_PER_S),
        ],
        vec![
            "snapshot applied, orders/s".into(),
            shown(snap_apply),
            format!("≥ {TARGET_SNAPSHOT_ORDERS_PER_S:.0}"),
            met(snap_apply, |v| v >= TARGET_SNAPSHOT_ORDERS_PER_S),
        ],
    ]
}

pub(crate) async fn run(args: FeedArgs) -> BenchResult<Value> {
    if args.rate <= 0.0 || args.events == 0 || args.orders == 0 {
        return Err("--rate, --events and --orders must be above zero".into());
    }
    super::warn_if_disk_nearly_full();
    let mut report = json!({"scenario": "feed", "machine": machine()});
    for phase in [FeedPhase::Lag, FeedPhase::Drain, FeedPhase::Snapshot] {
        if !args.phases.contains(&phase) {
            continue;
        }
        let (key, result) = match phase {
            FeedPhase::Lag => {
                eprintln!(
                    "feed lag: {}/s paid orders for {} s, four groups and the sink running",
                    args.rate,
                    args.duration.as_secs_f64()
                );
                ("lag", lag(&args).await?)
            }
            FeedPhase::Drain => {
                eprintln!(
                    "feed drain: {} events pre-loaded, then the sink",
                    args.events
                );
                ("drain", drain(&args).await?)
            }
            FeedPhase::Snapshot => {
                eprintln!("feed snapshot: {} orders", args.orders);
                ("snapshot", snapshot(&args).await?)
            }
        };
        report[key] = result;
    }
    let table = table(&report);
    let bars = |path: [&str; 2], name: &str| {
        report[path[0]][path[1]]
            .as_f64()
            .map(|v| (name.to_owned(), v))
    };
    let lag_bars: Vec<(String, f64)> = [
        bars(["lag", "lag_p50_ms"], "p50"),
        bars(["lag", "lag_p99_ms"], "p99"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let rate_bars: Vec<(String, f64)> = [
        bars(["drain", "events_per_s"], "drain events/s"),
        bars(["snapshot", "send_orders_per_s"], "snapshot sent/s"),
        bars(["snapshot", "apply_orders_per_s"], "snapshot applied/s"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut charts = Vec::new();
    if !lag_bars.is_empty() {
        charts.push(report::Chart::Bars {
            title: "Feed lag, commit → applied in the sink".into(),
            unit: "ms".into(),
            groups: vec![("lag".into(), lag_bars)],
        });
    }
    if !rate_bars.is_empty() {
        charts.push(report::Chart::Bars {
            title: "The sink's and the snapshot's rates".into(),
            unit: "per s".into(),
            groups: rate_bars
                .into_iter()
                .map(|(name, v)| (name.clone(), vec![(name, v)]))
                .collect(),
        });
    }
    super::write_reports(
        "feed",
        &args.output,
        "ordermq change feed",
        &report,
        &table,
        &charts,
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_whether_each_target_is_met() {
        let report = json!({
            "lag": {"rate": 1000.0, "lag_p50_ms": 12.0, "lag_p99_ms": 150.0},
            "drain": {"events_per_s": 25_000.0},
        });
        let rows = table(&report);
        let row = |name: &str| {
            rows.iter()
                .find(|r| r[0].starts_with(name))
                .unwrap()
                .clone()
        };
        assert_eq!(row("lag p99")[3], "no");
        assert_eq!(row("sink events/s")[3], "yes");
        assert_eq!(row("snapshot sent")[3], "-");
        let slower = json!({"lag": {"rate": 100.0, "lag_p99_ms": 5.0}});
        assert_eq!(table(&slower)[2][3], "(other rate)");
    }

    #[test]
    fn a_lag_splits_at_the_relays_stamp() {
        let t = 1_700_000_000_000_i64;
        let time = |ms: i64| (t + ms).to_string();
        let applied = vec![
            ("e1".to_owned(), time(0), t + 50),
            ("e2".to_owned(), time(10), t + 90),
            ("e3".to_owned(), time(0), t + 30),
            ("bad".to_owned(), "not a time".to_owned(), t),
        ];
        let sent = HashMap::from([("e1".to_owned(), t + 20), ("e2".to_owned(), t + 70)]);
        let split = LagSplit::of(&applied, &sent);
        assert_eq!(split.total, vec![30.0, 50.0, 80.0]);
        assert_eq!(split.relay, vec![20.0, 60.0]);
        assert_eq!(split.delivery, vec![20.0, 30.0]);
    }
}
