//! `flash-sale`: a crowd against a flash sale, and the same crowd against
//! the plain order path, in one run.
//!
//! Why: a flash sale is the order database's worst spike (one hot SKU, a
//! crowd many times the stock). ordermq admits or refuses each attempt in
//! memory and creates the admitted attempts' orders at
//! `flash_sale_order_rate` through RocketMQ; the plain path runs every
//! request, winner or loser, as a transaction. The report shows the
//! admission's decisions per second and latency, the orders per second the
//! database saw, the time until every admitted attempt ended, and the plain
//! path's figures for the same crowd beside them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use ordermq_domain::{SaleId, now_millis};
use ordermq_store::{DemoProduct, Store};
use ordermq_testkit::{LocalApp, SHOP_TOKEN};
use reqwest::Method;
use serde_json::{Value, json};

use super::crowd;
use super::load;
use super::report;
use super::target;
use super::{BenchResult, Output, ms};

#[derive(Debug, Clone, Args)]
pub struct FlashArgs {
    /// Attempts, one per shopper.
    #[arg(long, default_value_t = 100_000)]
    pub attempts: usize,
    /// Units the sale offers.
    #[arg(long, default_value_t = 1_000)]
    pub units: usize,
    /// Attempts started per second (open loop; a latency counts from the
    /// attempt's scheduled start, so waiting for a connection is counted).
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    /// Connections the crowd shares (keep-alive), as a load balancer in
    /// front of ordermq would hold them: opened before each crowd starts.
    /// Must stay under the server's
    /// `http_max_connections` (1,024 by default): over it, a new connection
    /// waits up to a second for a slot and is then closed, which measures
    /// the cap, not the sale.
    #[arg(long, default_value_t = 256)]
    pub connections: usize,
    /// `flash_sale_order_rate`: orders created per second.
    #[arg(long, default_value_t = 200)]
    pub order_rate: u32,
    /// Stop sending once this many requests are unanswered.
    #[arg(long, default_value_t = 4_096)]
    pub max_in_flight: usize,
    /// Runs the in-process ordermq with this setting, e.g. `--set
    /// flash_sale_lease_chunk=200`: any key of `ordermq config` except where
    /// it runs. Repeatable. The bench sets the third parties' latencies to 0,
    /// `flash_sale_order_rate` from `--order-rate`, no per-user or per-token
    /// order limits and a `flash_sale_max_wait` of an hour (it measures the
    /// shaping, not the cap) over them.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    #[command(flatten)]
    pub output: Output,
}

/// The plain path's product: as many units as the sale, bought one each.
const PLAIN_SKU: &str = "FLASHCMP-1";

/// What one crowd's requests were answered.
#[derive(Debug, Default)]
struct Answers {
    /// Attempt ids answered 202 (or orders answered 201).
    won: Vec<String>,
    /// Which requests (their index) were answered 201/202: a winner's
    /// answer waits for a durable write, a refusal's for nothing, so
    /// their latencies are reported apart too.
    won_at: Vec<usize>,
    /// Answered 409 (sold out, or out of stock).
    refused: usize,
}

/// The latencies of the winners' answers and of the others', apart.
fn split(samples: &[load::Sample], won_at: &[usize], wall: Duration) -> Value {
    let won: std::collections::HashSet<usize> = won_at.iter().copied().collect();
    let (winners, others): (Vec<load::Sample>, Vec<load::Sample>) = samples
        .iter()
        .cloned()
        .partition(|s| won.contains(&s.index));
    let part = |samples: &[load::Sample]| {
        let summary = load::summarize(samples, wall);
        json!({"count": summary.count, "p50_ms": summary.p50_ms,
               "p99_ms": summary.p99_ms, "max_ms": summary.max_ms})
    };
    json!({"won": part(&winners), "refused": part(&others)})
}

fn summary_json(summary: &load::Summary, wall: Duration) -> Value {
    json!({
        "requests": summary.count,
        "errors": summary.errors,
        "decisions_per_s": (summary.count - summary.errors) as f64 / wall.as_secs_f64().max(1e-9),
        "p50_ms": summary.p50_ms,
        "p99_ms": summary.p99_ms,
        "max_ms": summary.max_ms,
        "wall_s": wall.as_secs_f64(),
    })
}

/// Sends `count` POSTs of `body(i)` to `path` through the crowd's client
/// ([`crowd`]); a 2xx is a win, a 409 a refusal, anything else an error.
async fn send_crowd(
    app: &LocalApp,
    args: &FlashArgs,
    label: &str,
    path: String,
    body: fn(usize) -> String,
) -> BenchResult<(crowd::CrowdRun, Answers)> {
    let host = app.addr.to_string();
    let build: Arc<crowd::Build> = Arc::new(move |i, out: &mut Vec<u8>| {
        crowd::post_json(out, &host, &path, SHOP_TOKEN, &body(i));
    });
    let plan = crowd::Plan {
        label: label.to_owned(),
        addr: app.addr,
        rate: args.rate,
        count: args.attempts,
        connections: args.connections,
        max_in_flight: args.max_in_flight,
        answers: &[201, 202, 409],
    };
    let run = crowd::run(plan, build).await?;
    let summary = load::summarize(&run.run.samples, run.run.wall);
    eprintln!(
        "  {label}: {} answered in {:.2} s, p50 {:.2} ms, p99 {:.2} ms{}",
        summary.count - summary.errors,
        run.run.wall.as_secs_f64(),
        summary.p50_ms,
        summary.p99_ms,
        run.run
            .stopped_at_in_flight
            .map(|n| format!(
                "; stopped sending with {n} due and unanswered (the rate was more than it could answer)"
            ))
            .unwrap_or_default(),
    );
    let mut answers = Answers::default();
    for won in &run.won {
        let answer: Value = serde_json::from_slice(&won.body)
            .map_err(|e| format!("a {} answer that is not JSON: {e}", won.status))?;
        let id = answer["attempt_id"]
            .as_str()
            .or(answer["order_id"].as_str())
            .ok_or_else(|| format!("a {} answer without an id: {answer}", won.status))?;
        answers.won.push(id.to_owned());
        answers.won_at.push(won.index);
    }
    answers.refused = run
        .statuses
        .iter()
        .filter(|(status, _)| *status == 409)
        .map(|(_, n)| n)
        .sum();
    Ok((run, answers))
}

/// What the order writer did between two readings of its counters
/// ([`target::local_group_commit`]): the crowd's admissions, and whatever
/// else committed meanwhile (the relay's rounds, the sale's first orders).
fn writer_during(before: &[u64; 5], after: &[u64; 5]) -> Value {
    let [commits, operations, busy_ms, slow_commits, _] =
        std::array::from_fn(|i| after[i].saturating_sub(before[i]));
    json!({
        "commits": commits,
        "operations": operations,
        "operations_per_commit": if commits == 0 { 0.0 } else { operations as f64 / commits as f64 },
        "busy_ms": busy_ms,
        "slow_commits": slow_commits,
    })
}

/// The table's word for a crowd that stopped sending (or did not).
fn stopped(at: Option<usize>) -> String {
    at.map_or_else(|| "no (all sent)".into(), |n| n.to_string())
}

/// `{"202": 1000, "409": 99000}`: how each crowd was answered.
fn statuses_json(statuses: &[(u16, usize)]) -> Value {
    statuses
        .iter()
        .map(|(status, n)| (status.to_string(), json!(n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Polls the sale every 100 ms from the crowd's start until the crowd is
/// over and no attempt is queued: `(seconds since `begun`, orders created)`,
/// and whether it drained within `limit`. It follows the crowd too, since
/// the paced orders start while the crowd is still arriving (a small sale
/// is created before the crowd is over).
async fn follow(
    store: Store,
    sale: SaleId,
    begun: Instant,
    crowd_over: Arc<AtomicBool>,
    limit: Duration,
) -> BenchResult<(Vec<(f64, i64)>, bool)> {
    let mut series = Vec::new();
    loop {
        let over = crowd_over.load(Ordering::Acquire);
        let counts = store.sale_counts(&sale).await.map_err(|e| e.to_string())?;
        series.push((begun.elapsed().as_secs_f64(), counts.created));
        if over && counts.queued == 0 {
            return Ok((series, true));
        }
        if begun.elapsed() > limit {
            return Ok((series, false));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Orders per second while they were being created: from the first to the
/// last increase of the created count.
fn creation_rate(series: &[(f64, i64)]) -> f64 {
    let most = series.iter().map(|(_, c)| *c).max().unwrap_or(0);
    let first = series.iter().find(|(_, c)| *c > 0);
    let last = series.iter().find(|(_, c)| *c == most);
    match (first, last) {
        (Some(&(t0, c0)), Some(&(t1, c1))) if t1 > t0 => (c1 - c0) as f64 / (t1 - t0),
        _ => 0.0,
    }
}

pub(crate) async fn run(args: FlashArgs) -> BenchResult<Value> {
    let order_rate = args.order_rate;
    let tuned = target::parse_settings(&args.settings)?.without_limits();
    let app = LocalApp::start(|c| {
        target::place(c, tuned, None);
        ordermq_testkit::fast_third_parties(c);
        c.flash_sale_order_rate = order_rate;
        // Measure the shaping, not the cap: nothing is turned away for waiting.
        c.flash_sale_max_wait = Duration::from_secs(3_600);
    })
    .await
    .map_err(|e| e.to_string())?;
    let start = now_millis() - 1_000;
    let response = app
        .as_operator(Method::POST, "/api/sales")
        .json(&json!({"sku": "SKU-4", "units": args.units, "start": start,
                      "end": start + 3_600_000, "per_user_limit": 1}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let sale: Value = response.json().await.map_err(|e| e.to_string())?;
    let sale_id = sale["sale_id"].as_str().ok_or(format!("no sale: {sale}"))?;
    let sale = SaleId::parse(sale_id).map_err(|e| e.to_string())?;

    eprintln!(
        "flash-sale: {} attempts for {} units, {}/s over {} connections",
        args.attempts, args.units, args.rate, args.connections
    );
    let writer_before = target::local_group_commit(&app).await?;
    let begun = Instant::now();
    let crowd_over = Arc::new(AtomicBool::new(false));
    let following = tokio::spawn(follow(
        app.store.clone(),
        sale.clone(),
        begun,
        Arc::clone(&crowd_over),
        Duration::from_secs(1_800),
    ));
    let flash_crowd = send_crowd(
        &app,
        &args,
        "flash-sale attempts",
        format!("/api/sales/{sale_id}/attempts"),
        |i| format!(r#"{{"user_id":"fs{i}"}}"#),
    )
    .await;
    crowd_over.store(true, Ordering::Release);
    let writer = writer_during(&writer_before, &target::local_group_commit(&app).await?);
    eprintln!(
        "  order writer during the crowd: {} commits, {} operations ({:.1} a commit), {} ms busy",
        writer["commits"],
        writer["operations"],
        writer["operations_per_commit"].as_f64().unwrap_or(0.0),
        writer["busy_ms"]
    );
    let (flash_crowd, admitted) = match flash_crowd {
        Ok(crowd) => crowd,
        Err(e) => {
            following.abort();
            return Err(e);
        }
    };
    let (series, drained) = following
        .await
        .map_err(|e| format!("following the sale failed: {e}"))??;
    let drain_s = series.last().map_or(0.0, |(t, _)| *t);
    let counts = app
        .store
        .sale_counts(&sale)
        .await
        .map_err(|e| e.to_string())?;

    app.store
        .upsert_product(&DemoProduct {
            sku: PLAIN_SKU,
            name: "Flash-sale comparison",
            price: 999,
            stock: args.units as i64,
        })
        .await
        .map_err(|e| e.to_string())?;
    let (plain_crowd, ordered) = send_crowd(
        &app,
        &args,
        "plain POST /api/orders",
        "/api/orders".into(),
        |i| format!(r#"{{"user_id":"po{i}","items":[{{"sku":"{PLAIN_SKU}","quantity":1}}]}}"#),
    )
    .await?;

    let (flash, plain) = (&flash_crowd.run, &plain_crowd.run);
    let flash_summary = load::summarize(&flash.samples, flash.wall);
    let plain_summary = load::summarize(&plain.samples, plain.wall);
    let report = json!({
        "scenario": "flash-sale",
        "attempts": args.attempts,
        "units": args.units,
        "order_rate": args.order_rate,
        "rate": args.rate,
        "connections": args.connections,
        "settings": args.settings,
        "flash": {
            "admission": summary_json(&flash_summary, flash.wall),
            "latency_by_answer": split(&flash.samples, &admitted.won_at, flash.wall),
            "stopped_at_in_flight": flash.stopped_at_in_flight,
            "statuses": statuses_json(&flash_crowd.statuses),
            "client_cpu_s": flash_crowd.client_cpu_s,
            "writer_during_crowd": writer,
            "over_10ms_by_50ms_window": load::slow_by_window(
                &flash.samples, Duration::from_millis(50), Duration::from_millis(10)),
            "queued": admitted.won.len(),
            "sold_out": admitted.refused,
            "drained": drained,
            "drain_s": drain_s,
            "orders_per_s_at_db": creation_rate(&series),
            "created": counts.created,
            "rejected": counts.rejected,
            "held": counts.held,
            "oversold": (counts.held - args.units as i64).max(0),
        },
        "plain": {
            "orders": summary_json(&plain_summary, plain.wall),
            "latency_by_answer": split(&plain.samples, &ordered.won_at, plain.wall),
            "stopped_at_in_flight": plain.stopped_at_in_flight,
            "statuses": statuses_json(&plain_crowd.statuses),
            "client_cpu_s": plain_crowd.client_cpu_s,
            "created": ordered.won.len(),
            "out_of_stock": ordered.refused,
        },
    });
    let table = vec![
        vec!["".into(), "flash sale".into(), "plain orders".into()],
        vec![
            "decisions/s".into(),
            ms(report["flash"]["admission"]["decisions_per_s"]
                .as_f64()
                .unwrap_or(0.0)),
            ms(report["plain"]["orders"]["decisions_per_s"]
                .as_f64()
                .unwrap_or(0.0)),
        ],
        vec![
            "p50 ms".into(),
            ms(flash_summary.p50_ms),
            ms(plain_summary.p50_ms),
        ],
        vec![
            "p99 ms".into(),
            ms(flash_summary.p99_ms),
            ms(plain_summary.p99_ms),
        ],
        vec![
            "p99 ms, refused".into(),
            ms(report["flash"]["latency_by_answer"]["refused"]["p99_ms"]
                .as_f64()
                .unwrap_or(0.0)),
            ms(report["plain"]["latency_by_answer"]["refused"]["p99_ms"]
                .as_f64()
                .unwrap_or(0.0)),
        ],
        vec![
            "p99 ms, won".into(),
            ms(report["flash"]["latency_by_answer"]["won"]["p99_ms"]
                .as_f64()
                .unwrap_or(0.0)),
            ms(report["plain"]["latency_by_answer"]["won"]["p99_ms"]
                .as_f64()
                .unwrap_or(0.0)),
        ],
        vec![
            "won".into(),
            admitted.won.len().to_string(),
            ordered.won.len().to_string(),
        ],
        vec![
            "stopped at unanswered".into(),
            stopped(flash.stopped_at_in_flight),
            stopped(plain.stopped_at_in_flight),
        ],
        vec![
            "orders/s at the DB".into(),
            ms(creation_rate(&series)),
            "(every request)".into(),
        ],
        vec![
            "until all ended, s".into(),
            ms(drain_s),
            ms(plain.wall.as_secs_f64()),
        ],
    ];
    report::print_table(&table);
    let (json_path, html_path) = args.output.paths("flash-sale");
    let charts = [
        report::Chart::Lines {
            title: "Flash-sale orders created (the database's load, shaped)".into(),
            x_label: "seconds since the first attempt".into(),
            y_label: "orders created".into(),
            series: vec![(
                "created".into(),
                series.iter().map(|&(t, c)| (t, c as f64)).collect(),
            )],
            log_y: false,
        },
        report::Chart::Bars {
            title: "Latency of a decision".into(),
            unit: "ms".into(),
            groups: vec![
                (
                    "flash sale".into(),
                    vec![
                        ("p50".into(), flash_summary.p50_ms),
                        ("p99".into(), flash_summary.p99_ms),
                    ],
                ),
                (
                    "plain orders".into(),
                    vec![
                        ("p50".into(), plain_summary.p50_ms),
                        ("p99".into(), plain_summary.p99_ms),
                    ],
                ),
            ],
        },
    ];
    report::write(
        &json_path,
        &html_path,
        "ordermq flash sale",
        &report,
        &table,
        &charts,
    )
    .map_err(|e| e.to_string())?;
    app.stop().await.map_err(|e| e.to_string())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_creation_rate_spans_the_first_to_the_last_order() {
        let series = [(0.0, 0), (1.0, 0), (2.0, 100), (3.0, 300), (4.0, 300)];
        assert_eq!(creation_rate(&series), 200.0);
        assert_eq!(creation_rate(&[(0.0, 0)]), 0.0);
    }
}
