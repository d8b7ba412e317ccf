//! `ordermq-bench`: measures ordermq on this machine and writes comparable reports.
//!
//! Scenarios (each prints a table and writes `<out>/<scenario>.json` + `.html`):
//! - `seed`: the design's claim, side by side in one run — the original inline
//!   `payOrderSuccess` (serial), the same with the four downstream calls in
//!   parallel, and ordermq (one transaction + outbox, consumers via RocketMQ),
//!   all at the same paced load with the seed's third-party latencies.
//! - `capacity`: no simulated latency; an open-loop load that rises until the
//!   payment call's p99 passes the limit or the fan-out stops keeping up (then
//!   narrows between the last pass and the first failure), with
//!   the machine's fsync rate and a one-commit-per-row SQLite loop as yardsticks.
//! - `broker`: raw produce and consume rates through the embedded broker.
//! - `flash-sale`: a crowd against a flash sale (admission decisions/s and
//!   latency, orders/s at the database, time until every attempt ended),
//!   and the same crowd against plain `POST /api/orders` for comparison.
//! - `feed`: the change feed — lag from commit to the sink at a fixed paid
//!   rate, events/s the sink applies, and `feed snapshot`'s orders/s.
//!
//! Each run starts its own ordermq in-process on a fresh temporary directory,
//! so runs do not disturb each other or `./data` — or, with `--url`, drives an
//! ordermq already running elsewhere through its HTTP API ([`target`]). With
//! `--database postgres` the in-process ordermq runs on PostgreSQL: a
//! throwaway durable server of the run's own, or `--database-url`
//! ([`postgres`], which also measures PostgreSQL's yardsticks); with
//! `--database mysql --database-url mysql://…` on MySQL or MariaDB
//! ([`mysql`], and MySQL's yardsticks).

mod broker;
mod capacity;
pub mod crowd;
mod feed;
mod flash;
pub mod load;
pub mod mysql;
pub mod postgres;
pub mod report;
mod seed;
pub mod target;
mod yardstick;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use ordermq_domain::{
    NewOrder, OrderId, OrderLine, Quantity, Sku, System, UserId, UserLimits, now_millis,
};
use ordermq_store::{DemoProduct, Store, WriteOp, WriteResult};

use self::target::Target;

pub use broker::BrokerArgs;
pub use capacity::CapacityArgs;
pub use feed::{FeedArgs, FeedPhase};
pub use flash::FlashArgs;
pub use seed::SeedArgs;

/// The benchmark to run.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// The seed's "~1 s → ~120 ms": serial inline calls vs. parallel inline calls vs. ordermq,
    /// at the same paced load (default 50 payments/s for 30 s), with the seed's latencies
    /// (points 50 ms, coupon 60 ms, SMS ~100 ms, logistics ~500 ms, spikes past 1 s).
    Seed(SeedArgs),
    /// Highest sustained durable payments/s: open-loop load rising step by step until the
    /// payment p99 passes --p99-limit-ms or the fan-out to the four groups falls behind,
    /// then a few steps narrowing in between (--refine).
    Capacity(CapacityArgs),
    /// Raw RocketMQ produce/consume rates and send latency through the embedded broker.
    Broker(BrokerArgs),
    /// A crowd (default 100,000 shoppers) against a flash sale of 1,000 units: admission
    /// decisions/s and p50/p99, orders/s at the database, time until every attempt ended;
    /// and the same crowd against plain POST /api/orders on a product of as many units.
    FlashSale(FlashArgs),
    /// The change feed (issue 22): lag p50/p99 from commit to the sink's database at
    /// --rate paid orders/s (default 1,000) with the four groups running; events/s the
    /// sink applies draining --events pre-loaded events (default 100,000); `feed
    /// snapshot` of --orders orders (default 1,000,000) and the sink applying it.
    Feed(FeedArgs),
}

/// Where reports go.
#[derive(Debug, Clone, Args)]
pub struct Output {
    /// Write the JSON report here (default: `bench-results/<scenario>.json`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the HTML report here (default: next to the JSON, .html).
    #[arg(long)]
    pub html: Option<PathBuf>,
}

impl Output {
    fn paths(&self, scenario: &str) -> (PathBuf, PathBuf) {
        let json = self
            .json
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("bench-results/{scenario}.json")));
        let html = self
            .html
            .clone()
            .unwrap_or_else(|| json.with_extension("html"));
        (json, html)
    }
}

pub type BenchResult<T> = Result<T, String>;

/// Runs one scenario; the JSON report is also returned (tests check it).
pub async fn run(scenario: Scenario) -> BenchResult<serde_json::Value> {
    match scenario {
        Scenario::Seed(args) => seed::run(args).await,
        Scenario::Capacity(args) => capacity::run(args).await,
        Scenario::Broker(args) => broker::run(args).await,
        Scenario::FlashSale(args) => flash::run(args).await,
        Scenario::Feed(args) => feed::run(args).await,
    }
}

pub use ordermq::config::parse_duration;

/// The product every benchmark order buys: price 10.00, stock enough for any run.
const BENCH_SKU: &str = "BENCH-1";
const BENCH_PRICE: i64 = 1_000;

/// Creates `count` one-unit orders directly in the store, in large group
/// commits (creation is not what is measured). Returns their ids.
/// Suffix of the next pre-created order id (unique within this process).
static NEXT_BENCH_ORDER: AtomicU32 = AtomicU32::new(0);

async fn precreate_orders(store: &Store, count: usize, label: &str) -> BenchResult<Vec<OrderId>> {
    store
        .upsert_product(&DemoProduct {
            sku: BENCH_SKU,
            name: "Benchmark item",
            price: BENCH_PRICE,
            stock: 1_000_000_000,
        })
        .await
        .map_err(|e| e.to_string())?;
    let line = OrderLine {
        sku: Sku::parse(BENCH_SKU).map_err(|e| e.to_string())?,
        quantity: Quantity::parse(1).map_err(|e| e.to_string())?,
    };
    let begun = Instant::now();
    let mut ids = Vec::with_capacity(count);
    let base = now_millis();
    for chunk_start in (0..count).step_by(1_000) {
        let ops: Vec<WriteOp> = (chunk_start..count.min(chunk_start + 1_000))
            .map(|i| {
                let user =
                    UserId::parse(&format!("bench-user-{}", i % 1_000)).expect("valid user id");
                WriteOp::Create {
                    order: NewOrder::new(user, vec![line.clone()]).expect("one line"),
                    // A counter, not randomness: thousands of ids share one
                    // millisecond here, and 32 random bits collide (birthday)
                    // about once per 10,000 orders.
                    order_id: OrderId::generate(
                        base,
                        NEXT_BENCH_ORDER.fetch_add(1, Ordering::Relaxed),
                    ),
                    // Loaded, not measured: no scheduled close to relay.
                    close_after_ms: None,
                    // Loaded, not bought: a thousand users hold far more
                    // unpaid orders than the per-user limits allow.
                    limits: UserLimits::OFF,
                }
            })
            .collect();
        for (op, result) in ops.iter().zip(store.write_batch(&ops, now_millis()).await) {
            match (op, result) {
                (WriteOp::Create { order_id, .. }, WriteResult::Created(Ok(_))) => {
                    ids.push(order_id.clone())
                }
                (_, other) => return Err(format!("creating benchmark orders failed: {other:?}")),
            }
        }
        load::progress(label, ids.len(), count, ids.len() as u64, begun.elapsed());
    }
    eprintln!();
    // Copy the new rows out of the write-ahead log now. Otherwise the first
    // periodic checkpoint of the measured step does it: thousands of pages
    // written and fsynced while payments commit, which showed up as 40-120 ms
    // commits half a second into a step (`slow order-database commit`).
    store.checkpoint().await.map_err(|e| e.to_string())?;
    Ok(ids)
}

/// Pays `n` orders one by one and waits for their fan-out, so consumer groups
/// have finished rebalancing and connections are open before measuring.
/// Returns how many payments it made.
async fn warm_up(target: &Target, n: usize) -> BenchResult<i64> {
    let orders = target.create_orders(n, "warm-up: create").await?;
    let before = paid_applied(target).await?;
    for id in &orders {
        if !target.pay(id).await {
            return Err(format!("warm-up payment of {id} failed"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if wait_for_fanout(target, before + n as i64, Duration::from_secs(120))
        .await?
        .is_none()
    {
        return Err("warm-up payments were not fanned out within 120 s".into());
    }
    Ok(before + n as i64)
}

/// Pays order `orders[i]` through the signed HTTP callback; true on a 2xx.
async fn pay_over_http(target: Arc<Target>, orders: Arc<Vec<OrderId>>, i: usize) -> bool {
    target.pay(&orders[i]).await
}

/// The fewest payments any system has applied so far.
async fn paid_applied(target: &Target) -> BenchResult<i64> {
    Ok(target.applied().await?.values().copied().min().unwrap_or(0))
}

/// Waits until every system has applied at least `expected` events, or `timeout`.
/// Returns how long it took, or `None` on timeout.
async fn wait_for_fanout(
    target: &Target,
    expected: i64,
    timeout: Duration,
) -> BenchResult<Option<Duration>> {
    let begun = Instant::now();
    loop {
        let lag = fanout_lag(target, expected).await?;
        if lag == 0 {
            return Ok(Some(begun.elapsed()));
        }
        if begun.elapsed() > timeout {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// End-to-end times of paid orders: from the payment request's scheduled
/// start to the last of the four effects committed (ms, sorted), and each
/// system's p50/p99. Orders not yet applied everywhere are left out (count
/// them with `all.len()`).
struct EndToEnd {
    all: Vec<f64>,
    by_system: serde_json::Map<String, serde_json::Value>,
    /// Median end-to-end time of the payments of the run's last fifth minus
    /// that of its first fifth (ms): near zero while the fan-out keeps up,
    /// growing with the run when it falls behind. `None` under 50 orders.
    drift_ms: Option<f64>,
    /// When each order applied everywhere got its last effect (epoch ms),
    /// by the systems' own commit times.
    done_at: Vec<i64>,
}

impl EndToEnd {
    /// How many of `paid` payments had not reached all four systems at
    /// `at` (epoch ms), by the systems' own commit times: orders applied
    /// later, or not yet everywhere, count. Unlike the progress an order
    /// instance shows (which learns of a separate system's effects from its
    /// receipts, up to a second later), this is how far behind the fan-out
    /// itself was.
    fn behind_at(&self, paid: usize, at: i64) -> i64 {
        let done = self.done_at.iter().filter(|&&t| t <= at).count();
        paid.saturating_sub(done) as i64
    }
}

/// See [`EndToEnd::drift_ms`]: `(sent_at, e2e_ms)` of every complete order.
fn drift(mut sent_and_e2e: Vec<(i64, f64)>) -> Option<f64> {
    if sent_and_e2e.len() < 50 {
        return None;
    }
    sent_and_e2e.sort_by_key(|&(sent, _)| sent);
    let first = sent_and_e2e.first()?.0;
    let last = sent_and_e2e.last()?.0;
    let fifth = (last - first) / 5;
    let median_where = |keep: &dyn Fn(i64) -> bool| {
        let mut e2e: Vec<f64> = sent_and_e2e
            .iter()
            .filter(|(sent, _)| keep(*sent))
            .map(|&(_, e)| e)
            .collect();
        e2e.sort_by(f64::total_cmp);
        load::percentile(&e2e, 50.0)
    };
    Some(median_where(&|sent| sent >= last - fifth) - median_where(&|sent| sent <= first + fifth))
}

async fn end_to_end(
    target: &Target,
    orders: &[OrderId],
    samples: &[load::Sample],
    begun_epoch: i64,
) -> BenchResult<EndToEnd> {
    let sent_at: HashMap<&str, i64> = samples
        .iter()
        .filter(|s| s.ok)
        .map(|s| {
            (
                orders[s.index].as_str(),
                begun_epoch + s.start.as_millis() as i64,
            )
        })
        .collect();
    let mut latest: HashMap<String, (i64, usize)> = HashMap::new();
    let mut by_system = serde_json::Map::new();
    // Effects of this run's orders were applied after its first request.
    target
        .applied_times(orders, begun_epoch, |system, times| {
            let mut lags: Vec<f64> = Vec::new();
            for (order, at) in times {
                let Some(sent) = sent_at.get(order.as_str()) else {
                    continue;
                };
                lags.push((at - sent).max(0) as f64);
                let entry = latest.entry(order).or_insert((at, 0));
                entry.0 = entry.0.max(at);
                entry.1 += 1;
            }
            lags.sort_by(f64::total_cmp);
            by_system.insert(
                system.name().to_owned(),
                serde_json::json!({"p50_ms": load::percentile(&lags, 50.0), "p99_ms": load::percentile(&lags, 99.0)}),
            );
        })
        .await?;
    let (complete, done_at): (Vec<(i64, f64)>, Vec<i64>) = latest
        .iter()
        .filter(|(_, (_, systems))| *systems == System::ALL.len())
        .map(|(order, &(at, _))| {
            let sent = sent_at[order.as_str()];
            ((sent, (at - sent).max(0) as f64), at)
        })
        .unzip();
    let mut all: Vec<f64> = complete.iter().map(|&(_, e2e)| e2e).collect();
    all.sort_by(f64::total_cmp);
    Ok(EndToEnd {
        all,
        by_system,
        drift_ms: drift(complete),
        done_at,
    })
}

/// How many of `expected` events the slowest system has not applied yet.
async fn fanout_lag(target: &Target, expected: i64) -> BenchResult<i64> {
    Ok((expected - paid_applied(target).await?).max(0))
}

/// A plain thread of the bench's own that repeats `round` (which paces
/// itself) until stopped or until `round` returns false, then hands back its
/// state. Plain, so that a stalled async runtime cannot delay what it samples.
struct Watcher<T> {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<T>>,
}

impl<T: Send + 'static> Watcher<T> {
    fn spawn(mut state: T, mut round: impl FnMut(&mut T) -> bool + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) && round(&mut state) {}
            state
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread and returns its state (`None` if it panicked).
    fn finish(mut self) -> Option<T> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take()?.join().ok()
    }
}

impl<T> Drop for Watcher<T> {
    /// A run that ends early (an error) stops watching too.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The largest anonymous and file-backed resident memory (MiB) seen while it
/// runs, sampled from `/proc/self/status` every 200 ms. VmHWM is the exact
/// peak of their sum but does not say what it was made of: file-backed pages
/// are mostly the embedded broker's memory-mapped commit log (page cache the
/// kernel may drop) and the binary's code; anonymous ones are the heap.
pub(crate) struct MemorySampler(Watcher<[f64; 2]>);

impl MemorySampler {
    pub(crate) fn start() -> Self {
        Self(Watcher::spawn([0.0_f64; 2], |peaks| {
            if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
                for (peak, key) in peaks.iter_mut().zip(["RssAnon:", "RssFile:"]) {
                    if let Some(mib) = status_mib(&status, key) {
                        *peak = peak.max(mib);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
            true
        }))
    }

    /// `[anonymous, file-backed]` peaks in MiB (zero where /proc has no such line).
    pub(crate) fn finish(self) -> [f64; 2] {
        self.0.finish().unwrap_or([0.0; 2])
    }
}

/// Watches the machine beside a run, so a failing step can be told apart
/// from a machine that paused: every 50 ms a thread of its own writes 4 KiB
/// and fdatasyncs it in the data directory (the disk ordermq commits to) and
/// notes how late its sleep ended (the host did not run it). On a shared
/// machine both stall now and then for hundreds of milliseconds; ordermq's
/// commits wait the same, and a step's p99 shows it.
pub(crate) struct HostProbe {
    samples: Arc<std::sync::Mutex<Vec<ProbeSample>>>,
    _watcher: Watcher<std::fs::File>,
}

/// One round of the [`HostProbe`].
#[derive(Debug, Clone, Copy)]
struct ProbeSample {
    began: Instant,
    ended: Instant,
    fsync_ms: f64,
    wake_late_ms: f64,
}

/// The worst the [`HostProbe`] saw in a window.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HostPause {
    /// Slowest 4 KiB write + fdatasync.
    pub(crate) fsync_ms: f64,
    /// Latest wake-up of the probe's 50 ms sleep.
    pub(crate) wake_late_ms: f64,
}

impl HostPause {
    pub(crate) fn worst_ms(&self) -> f64 {
        self.fsync_ms.max(self.wake_late_ms)
    }
}

const HOST_PROBE_EVERY: Duration = Duration::from_millis(50);

impl HostProbe {
    /// `dir` is the in-process ordermq's temporary data directory, removed
    /// with it, probe file included.
    pub(crate) fn start(dir: &Path) -> BenchResult<Self> {
        let file = std::fs::File::create(dir.join("host-probe")).map_err(|e| e.to_string())?;
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recording = samples.clone();
        let watcher = Watcher::spawn(file, move |file| {
            use std::io::{Seek as _, Write as _};
            let began = Instant::now();
            // Overwrite one block: the file stays 4 KiB however long the run.
            let synced = file
                .seek(std::io::SeekFrom::Start(0))
                .and_then(|_| file.write_all(&[0u8; 4096]))
                .and_then(|()| file.sync_data());
            let fsync_ms = began.elapsed().as_secs_f64() * 1e3;
            if synced.is_err() {
                return false;
            }
            let slept = Instant::now();
            std::thread::sleep(HOST_PROBE_EVERY);
            let wake_late_ms = slept
                .elapsed()
                .saturating_sub(HOST_PROBE_EVERY)
                .as_secs_f64()
                * 1e3;
            if let Ok(mut samples) = recording.lock() {
                samples.push(ProbeSample {
                    began,
                    ended: Instant::now(),
                    fsync_ms,
                    wake_late_ms,
                });
            }
            true
        });
        Ok(Self {
            samples,
            _watcher: watcher,
        })
    }

    /// The worst pauses among probe rounds that overlapped `from..to`, or
    /// `None` if none did (the probe could not write: unknown, not calm).
    pub(crate) fn between(&self, from: Instant, to: Instant) -> Option<HostPause> {
        let samples = self.samples.lock().ok()?;
        let mut overlapping = samples
            .iter()
            .filter(|s| s.began < to && s.ended > from)
            .peekable();
        overlapping.peek()?;
        Some(
            overlapping.fold(HostPause::default(), |worst, s| HostPause {
                fsync_ms: worst.fsync_ms.max(s.fsync_ms),
                wake_late_ms: worst.wake_late_ms.max(s.wake_late_ms),
            }),
        )
    }
}

/// A `kB` line of `/proc/<pid>/status`, in MiB.
fn status_mib(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// This process's peak resident memory (VmHWM), in MiB.
fn peak_rss_mb() -> Option<f64> {
    status_mib(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmHWM:",
    )
}

/// CPU time this process has used so far (user + system, all threads), or
/// `None` off Linux. `/proc` counts it in USER_HZ ticks, 100 per second on
/// every Linux ABI.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is parenthesised and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// How full the disk under the bench's temporary directories is, as the
/// embedded broker counts it.
fn disk_used_percent() -> Option<f64> {
    ordermq_messaging::embedded_options::disk_used_percent(&std::env::temp_dir())
}

/// Says so up front when the broker is about to refuse messages for lack of
/// disk: a run would then measure an outage, not ordermq.
fn warn_if_disk_nearly_full() {
    let full = ordermq_messaging::embedded_options::BROKER_DISK_FULL_PERCENT;
    if let Some(used) = disk_used_percent().filter(|used| *used >= full - 5.0) {
        eprintln!(
            "  warning: the disk under {} is {used:.1} % full; above {full} % the broker refuses \
             every message and the fan-out stops (the figures would show that, not ordermq)",
            std::env::temp_dir().display()
        );
    }
}

/// A short description of the machine for reports.
fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "os": std::env::consts::OS,
        "ordermq_version": env!("CARGO_PKG_VERSION"),
        "debug_build": cfg!(debug_assertions),
        "disk_used_percent": disk_used_percent(),
    })
}

fn write_reports(
    scenario: &str,
    output: &Output,
    title: &str,
    report: &serde_json::Value,
    table: &[Vec<String>],
    charts: &[report::Chart],
) -> BenchResult<()> {
    let (json, html) = output.paths(scenario);
    report::write(&json, &html, title, report, table, charts)
        .map_err(|e| format!("cannot write the report: {e}"))?;
    report::print_table(table);
    println!("\n  report: {}  {}", display(&json), display(&html));
    Ok(())
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_at_counts_orders_applied_later_or_not_everywhere() {
        let e2e = EndToEnd {
            all: Vec::new(),
            by_system: serde_json::Map::new(),
            drift_ms: None,
            done_at: vec![100, 200, 300],
        };
        // Five paid: two applied by 200, one at 300, two never everywhere.
        assert_eq!(e2e.behind_at(5, 200), 3);
        assert_eq!(e2e.behind_at(5, 300), 2);
        assert_eq!(e2e.behind_at(3, 1_000), 0);
    }

    #[test]
    fn drift_tells_a_fanout_that_keeps_up_from_one_that_falls_behind() {
        // One payment every 10 ms for 5 s.
        let steady: Vec<(i64, f64)> = (0..500).map(|i| (i * 10, 40.0 + (i % 7) as f64)).collect();
        let d = drift(steady).unwrap();
        assert!(d.abs() < 10.0, "steady: {d}");
        // Effects 10 % slower than payments: the delay grows 0.1 ms per ms.
        let behind: Vec<(i64, f64)> = (0..500).map(|i| (i * 10, 40.0 + i as f64)).collect();
        let d = drift(behind).unwrap();
        assert!((350.0..450.0).contains(&d), "behind: {d}");
        assert_eq!(drift((0..49).map(|i| (i, 1.0)).collect()), None);
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
