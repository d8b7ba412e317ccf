//! The ceiling the relay and the consumers work under: raw produce and
//! consume rates through the embedded broker, with ordermq's own adapter
//! (batched sends per queue, batched push consumption).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use ordermq_domain::OutboxMessage;
use ordermq_domain::ports::{BoxFuture, Delivery, Handler, Outcome, Publisher};
use ordermq_messaging::{
    BrokerFlush, DelayedDelivery, EmbeddedBroker, EmbeddedOptions, MqClient, SubscribeOptions,
};
use serde_json::json;

use super::load::{self, Sample, Summary};
use super::report::Chart;
use super::{BenchResult, Output, ms};

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Messages to produce and consume.
    #[arg(long, default_value_t = 100_000)]
    pub messages: usize,
    /// Messages per publish call (the relay's round size).
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Single-message sends for the one-at-a-time measurement.
    #[arg(long, default_value_t = 5_000)]
    pub single_sends: usize,
    /// When the broker answers a send: `sync` (once on disk, ordermq's
    /// default) or `async` (once in memory).
    #[arg(long, value_name = "sync|async", default_value_t = BrokerFlush::Sync)]
    pub broker_flush: BrokerFlush,
    #[command(flatten)]
    pub output: Output,
}

struct Counter {
    received: AtomicU64,
}

impl Handler for Counter {
    fn handle(&self, batch: Vec<Delivery>) -> BoxFuture<'_, Outcome> {
        self.received
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Box::pin(async { Outcome::Consumed })
    }
}

fn message(i: usize) -> OutboxMessage {
    OutboxMessage {
        id: i as i64,
        topic: "BenchTopic".into(),
        tag: "Bench".into(),
        key: format!("K{i}"),
        event_id: format!("Bench:{i}"),
        body: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(200)),
        deliver_at: None,
        attempts: 0,
    }
}

/// The embedded broker and a client of it, with the bench topic created,
/// the route warmed up and one push group counting what it receives.
struct Rig {
    broker: EmbeddedBroker,
    mq: MqClient,
    publisher: Arc<dyn Publisher>,
    counter: Arc<Counter>,
}

/// What the batched production measured.
struct Produced {
    /// One sample per publish call.
    batch_latencies: Vec<Sample>,
    /// Messages the broker refused.
    failed: usize,
    /// From the first send until the last batch was acknowledged.
    secs: f64,
    per_s: f64,
}

/// The broker scenario: set up, batched production, consumption until all
/// arrived, single sends, then the report.
pub(crate) async fn run(args: BrokerArgs) -> BenchResult<serde_json::Value> {
    println!(
        "ordermq-bench broker: {} messages in batches of {} through the embedded broker ({})",
        args.messages,
        args.batch,
        args.broker_flush.rocketmq_name()
    );
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let Rig {
        broker,
        mq,
        publisher,
        counter,
    } = set_up(dir.path(), args.broker_flush).await?;

    super::warn_if_disk_nearly_full();
    let begun = Instant::now();
    let produced = produce(publisher.as_ref(), &args, begun).await;
    let (consumed, consume_per_s) = consume(&counter, args.messages, produced.failed, begun).await;
    let single = single_sends(publisher, args.messages, args.single_sends).await;

    mq.shutdown().await;
    broker.shutdown().await;

    summarise(&args, &produced, consumed, consume_per_s, &single)
}

/// Starts the broker with its store under `dir`, connects a client, creates
/// the topic, sends one message to warm up the route and the connection, and
/// subscribes the counting group.
async fn set_up(dir: &Path, flush: BrokerFlush) -> BenchResult<Rig> {
    let broker = EmbeddedBroker::start(EmbeddedOptions {
        store_dir: dir.join("rocketmq"),
        namesrv_port: 0,
        broker_port: 0,
        delay_levels: None,
        timer_wheel: false,
        message_index: false,
        flush,
        member: ordermq_messaging::ClusterMember::default(),
    })
    .await
    .map_err(|e| e.to_string())?;
    let mq = MqClient::connect(
        &broker.namesrv_addr(),
        "bench_producer_group",
        DelayedDelivery::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    mq.ensure_topic("BenchTopic", 8)
        .await
        .map_err(|e| e.to_string())?;
    let publisher = mq.publisher();
    // Warm up the route and the connection.
    let _ = publisher.publish(&[message(usize::MAX / 2)]).await;

    let counter = Arc::new(Counter {
        received: AtomicU64::new(0),
    });
    mq.subscribe(
        SubscribeOptions {
            group: "bench_consumer_group".into(),
            subscriptions: vec![("BenchTopic".into(), "*".into())],
            max_reconsume_times: 1,
            concurrency: 16,
            batch: ordermq_messaging::DEFAULT_BATCH,
            retry_levels: Default::default(),
        },
        counter.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(Rig {
        broker,
        mq,
        publisher,
        counter,
    })
}

/// Batched production, as the relay does it: `args.messages` in publish
/// calls of `args.batch`, timed from `begun`.
async fn produce(publisher: &dyn Publisher, args: &BrokerArgs, begun: Instant) -> Produced {
    let mut batch_latencies = Vec::new();
    let mut failed = 0usize;
    let mut produced = 0usize;
    while produced < args.messages {
        let n = args.batch.min(args.messages - produced);
        let batch: Vec<OutboxMessage> = (produced..produced + n).map(message).collect();
        let sent = Instant::now();
        failed += publisher
            .publish(&batch)
            .await
            .iter()
            .filter(|r| r.is_err())
            .count();
        batch_latencies.push(Sample {
            index: batch_latencies.len(),
            start: sent - begun,
            latency: sent.elapsed(),
            ok: true,
        });
        produced += n;
        load::progress(
            "produce (batched)",
            produced,
            args.messages,
            produced as u64,
            begun.elapsed(),
        );
    }
    eprintln!();
    let secs = begun.elapsed().as_secs_f64();
    Produced {
        per_s: (args.messages - failed) as f64 / secs,
        batch_latencies,
        failed,
        secs,
    }
}

/// Consumption: from the first send (`begun`) until every message the
/// broker took arrived (+1 for the warm-up), or 300 s. Returns how many
/// arrived and how many a second.
async fn consume(counter: &Counter, messages: usize, failed: usize, begun: Instant) -> (u64, f64) {
    let expected = (messages + 1) as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while counter.received.load(Ordering::Relaxed) < expected - failed as u64
        && Instant::now() < deadline
    {
        load::progress(
            "consume",
            counter.received.load(Ordering::Relaxed) as usize,
            expected as usize,
            0,
            begun.elapsed(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!();
    let consumed = counter.received.load(Ordering::Relaxed);
    let consume_secs = begun.elapsed().as_secs_f64();
    (consumed, consumed as f64 / consume_secs)
}

/// One message per send, `count` of them all offered at once (numbered
/// after the `messages` of the batched production).
async fn single_sends(publisher: Arc<dyn Publisher>, messages: usize, count: usize) -> Summary {
    let publisher = Arc::new(publisher);
    let (singles, single_wall) = load::run_open_loop("single sends", 1e9, count, |i| {
        let publisher = publisher.clone();
        async move {
            publisher
                .publish(&[message(messages + i)])
                .await
                .iter()
                .all(Result::is_ok)
        }
    })
    .await;
    load::summarize(&singles, single_wall)
}

/// The JSON report, the printed table and the HTML chart, written out.
fn summarise(
    args: &BrokerArgs,
    produced: &Produced,
    consumed: u64,
    consume_per_s: f64,
    single: &Summary,
) -> BenchResult<serde_json::Value> {
    let Produced {
        batch_latencies,
        failed,
        secs: produce_secs,
        per_s: produce_per_s,
    } = produced;
    let (failed, produce_per_s) = (*failed, *produce_per_s);
    let batch_summary = load::summarize(batch_latencies, Duration::from_secs_f64(*produce_secs));
    let report = json!({
        "scenario": "broker",
        "machine": super::machine(),
        "broker_flush": args.broker_flush.rocketmq_name(),
        "messages": args.messages,
        "batch": args.batch,
        "produce_per_s": produce_per_s,
        "produce_failed": failed,
        "consume_per_s": consume_per_s,
        "consumed": consumed,
        "batch_send_p50_ms": batch_summary.p50_ms,
        "batch_send_p99_ms": batch_summary.p99_ms,
        "single_send_per_s": single.throughput_per_s,
        "single_send_p50_ms": single.p50_ms,
        "single_send_p99_ms": single.p99_ms,
        "single_send_errors": single.errors,
    });
    let table = vec![
        ["measure", "per second", "p50 ms", "p99 ms"]
            .map(String::from)
            .to_vec(),
        vec![
            format!("produce, batches of {}", args.batch),
            format!("{produce_per_s:.0}"),
            ms(batch_summary.p50_ms),
            ms(batch_summary.p99_ms),
        ],
        vec![
            "consume (one push group)".into(),
            format!("{consume_per_s:.0}"),
            "".into(),
            "".into(),
        ],
        vec![
            format!("single sends ({} at once)", args.single_sends),
            format!("{:.0}", single.throughput_per_s),
            ms(single.p50_ms),
            ms(single.p99_ms),
        ],
    ];
    let charts = vec![Chart::Bars {
        title: "Embedded broker throughput".into(),
        unit: "messages/s".into(),
        groups: vec![
            (
                "produce (batched)".into(),
                vec![("msg/s".into(), produce_per_s)],
            ),
            ("consume".into(), vec![("msg/s".into(), consume_per_s)]),
            (
                "single sends".into(),
                vec![("msg/s".into(), single.throughput_per_s)],
            ),
        ],
    }];
    super::write_reports(
        "broker",
        &args.output,
        "ordermq-bench broker",
        &report,
        &table,
        &charts,
    )?;
    Ok(report)
}
