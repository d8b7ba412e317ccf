//! Open-loop load: requests start on a schedule, whether or not earlier ones
//! have finished, so a slow server shows up as latency rather than silently
//! lowering the offered load (coordinated omission).

use std::future::Future;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

/// One request's result: when it started (since the run began) and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Which request (the `i` passed to the request function).
    pub index: usize,
    pub start: Duration,
    pub latency: Duration,
    pub ok: bool,
}

/// Latency percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Summary {
    pub count: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Successful requests per second over the run's wall time.
    pub throughput_per_s: f64,
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summarize(samples: &[Sample], wall: Duration) -> Summary {
    let mut ms: Vec<f64> = samples
        .iter()
        .filter(|s| s.ok)
        .map(|s| s.latency.as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    let ok = ms.len();
    Summary {
        count: samples.len(),
        errors: samples.len() - ok,
        p50_ms: percentile(&ms, 50.0),
        p95_ms: percentile(&ms, 95.0),
        p99_ms: percentile(&ms, 99.0),
        max_ms: ms.last().copied().unwrap_or(0.0),
        mean_ms: if ok == 0 {
            0.0
        } else {
            ms.iter().sum::<f64>() / ok as f64
        },
        throughput_per_s: ok as f64 / wall.as_secs_f64().max(1e-9),
    }
}

/// Successful requests completed per second, bucketed by start second.
pub fn throughput_series(samples: &[Sample]) -> Vec<(f64, f64)> {
    let seconds = samples.iter().map(|s| s.start.as_secs()).max().unwrap_or(0) as usize + 1;
    let mut buckets = vec![0u64; seconds];
    for s in samples.iter().filter(|s| s.ok) {
        buckets[s.start.as_secs() as usize] += 1;
    }
    buckets
        .iter()
        .enumerate()
        .map(|(i, n)| (i as f64, *n as f64))
        .collect()
}

/// The answers slower than `over` counted per `window` of their scheduled
/// start, the windows that have some, with each window's slowest:
/// `[{"from_s", "slow", "of", "max_ms"}]`. A p99 says how many were slow; this
/// says when, which separates a stall at the start from a tail throughout.
pub fn slow_by_window(samples: &[Sample], window: Duration, over: Duration) -> serde_json::Value {
    let mut windows: std::collections::BTreeMap<u128, (usize, usize, Duration)> =
        std::collections::BTreeMap::new();
    let width = window.as_nanos().max(1);
    for s in samples.iter().filter(|s| s.ok) {
        let entry = windows
            .entry(s.start.as_nanos() / width)
            .or_insert((0, 0, Duration::ZERO));
        entry.1 += 1;
        if s.latency > over {
            entry.0 += 1;
            entry.2 = entry.2.max(s.latency);
        }
    }
    windows
        .into_iter()
        .filter(|(_, (slow, _, _))| *slow > 0)
        .map(|(at, (slow, of, max))| {
            serde_json::json!({
                "from_s": (at * width) as f64 / 1e9,
                "slow": slow,
                "of": of,
                "max_ms": max.as_secs_f64() * 1e3,
            })
        })
        .collect()
}

/// The `n` slowest samples and when they started (seconds into the run):
/// tails have causes, and their timing is the first clue.
pub fn slowest(samples: &[Sample], n: usize) -> serde_json::Value {
    let mut by_latency: Vec<&Sample> = samples.iter().collect();
    by_latency.sort_by_key(|s| std::cmp::Reverse(s.latency));
    by_latency
        .iter()
        .take(n)
        .map(|s| serde_json::json!({"at_s": s.start.as_secs_f64(), "ms": s.latency.as_secs_f64() * 1e3}))
        .collect()
}

/// Fires `count` requests at `rate` per second, calling `request(i)` for the
/// i-th; returns every sample and the wall time until the last one finished.
/// A progress line is drawn on stderr under `label`.
pub async fn run_open_loop<F, Fut>(
    label: &str,
    rate: f64,
    count: usize,
    request: F,
) -> (Vec<Sample>, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let run = run_open_loop_bounded(label, rate, count, usize::MAX, request).await;
    (run.samples, run.wall)
}

/// What [`run_open_loop_bounded`] did.
#[derive(Debug)]
pub struct OpenLoopRun {
    /// One per request sent, in order of their scheduled start.
    pub samples: Vec<Sample>,
    pub wall: Duration,
    /// Sending stopped early: this many requests were unanswered at once.
    pub stopped_at_in_flight: Option<usize>,
}

/// As [`run_open_loop`], but stops sending once `max_in_flight` requests are
/// unanswered: past that the server is not keeping up, and every further
/// request would only hold a connection and memory (tens of thousands of
/// them took the process past 800 MiB in an overloaded step).
pub async fn run_open_loop_bounded<F, Fut>(
    label: &str,
    rate: f64,
    count: usize,
    max_in_flight: usize,
    request: F,
) -> OpenLoopRun
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let begun = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let mut last_draw = Instant::now();
    let mut stopped_at_in_flight = None;
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        // A finished task keeps its whole allocation (sized for the request's
        // future, kilobytes) until joined: reap them as we go, or a step of
        // 60,000 payments holds ~130 MB until it ends.
        while let Some(joined) = tasks.try_join_next() {
            samples.extend(joined.ok());
        }
        let in_flight = i - done.load(Ordering::Relaxed) as usize;
        if in_flight >= max_in_flight {
            stopped_at_in_flight = Some(in_flight);
            break;
        }
        let due = begun + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let future = request(i);
        let answered = done.clone();
        tasks.spawn(async move {
            let ok = future.await;
            answered.fetch_add(1, Ordering::Relaxed);
            Sample {
                index: i,
                start: due.saturating_duration_since(begun),
                // From the scheduled time: a late start is the system's delay too.
                latency: Instant::now().saturating_duration_since(due),
                ok,
            }
        });
        if last_draw.elapsed() > Duration::from_millis(250) {
            progress(
                label,
                i + 1,
                count,
                done.load(Ordering::Relaxed),
                begun.elapsed(),
            );
            last_draw = Instant::now();
        }
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok(sample) = joined {
            samples.push(sample);
        }
        if last_draw.elapsed() > Duration::from_millis(250) {
            progress(
                label,
                count,
                count,
                done.load(Ordering::Relaxed),
                begun.elapsed(),
            );
            last_draw = Instant::now();
        }
    }
    let wall = begun.elapsed();
    let sent = samples.len();
    progress(label, sent, count, sent as u64, wall);
    eprintln!();
    samples.sort_by_key(|s| s.start);
    OpenLoopRun {
        samples,
        wall,
        stopped_at_in_flight,
    }
}

/// Draws `[label] ####----- sent/total  done  elapsed` on one stderr line.
pub fn progress(label: &str, sent: usize, total: usize, done: u64, elapsed: Duration) {
    let width = 30;
    let filled = (sent * width).checked_div(total).unwrap_or(width);
    eprint!(
        "\r  {label:<22} [{}{}] {sent:>7}/{total:<7} answered {done:>7}  {:>5.1}s ",
        "#".repeat(filled),
        "-".repeat(width - filled),
        elapsed.as_secs_f64()
    );
    let _ = std::io::stderr().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn slow_answers_are_counted_in_the_window_they_started_in() {
        let sample = |start_ms: u64, latency_ms: u64| Sample {
            index: 0,
            start: Duration::from_millis(start_ms),
            latency: Duration::from_millis(latency_ms),
            ok: true,
        };
        let samples = [
            sample(0, 30),
            sample(10, 2),
            sample(49, 12),
            sample(60, 1),
            sample(120, 40),
        ];
        let windows = slow_by_window(
            &samples,
            Duration::from_millis(50),
            Duration::from_millis(10),
        );
        assert_eq!(
            windows,
            serde_json::json!([
                {"from_s": 0.0, "slow": 2, "of": 3, "max_ms": 30.0},
                {"from_s": 0.1, "slow": 1, "of": 1, "max_ms": 40.0},
            ])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_open_loop_stops_sending_when_too_many_are_unanswered() {
        let run = run_open_loop_bounded("test", 100.0, 1_000, 50, |_| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            true
        })
        .await;
        assert_eq!(run.stopped_at_in_flight, Some(50));
        assert_eq!(run.samples.len(), 50, "no request after the bound");
        assert!(run.samples.iter().all(|s| s.ok));

        let run = run_open_loop_bounded("test", 100.0, 200, 50, |_| async { true }).await;
        assert_eq!(
            run.stopped_at_in_flight, None,
            "fast answers never reach it"
        );
        assert_eq!(run.samples.len(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_keeps_its_schedule_when_requests_are_slow() {
        let (samples, wall) = run_open_loop("test", 100.0, 50, |_| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            true
        })
        .await;
        assert_eq!(samples.len(), 50);
        // 50 requests at 100/s are all sent within ~0.5 s even though each takes 0.5 s.
        assert!(wall < Duration::from_millis(1_100), "{wall:?}");
        let summary = summarize(&samples, wall);
        assert!(
            summary.p50_ms >= 500.0 && summary.p50_ms < 510.0,
            "{summary:?}"
        );
        assert_eq!(summary.errors, 0);
    }
}
