//! The ceiling the relay and the consumers work under: raw produce and
//! consume rates through the embedded broker, with ordermq's own adapter
//! (batched sends per queue, batched push consumption).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use ordermq_domain::OutboxMessage;
use ordermq_domain::ports::{BoxFuture, Delivery, Handler, Outcome};
use ordermq_messaging::{
    DelayedDelivery, EmbeddedBroker, EmbeddedOptions, MqClient, SubscribeOptions,
};
use serde_json::json;

use super::load::{self, Sample};
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
    }
}

pub(crate) async fn run(args: BrokerArgs) -> BenchResult<serde_json::Value> {
    println!(
        "ordermq-bench broker: {} messages in batches of {} through the embedded broker (ASYNC_FLUSH)",
        args.messages, args.batch
    );
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let broker = EmbeddedBroker::start(EmbeddedOptions {
        store_dir: dir.path().join("rocketmq"),
        namesrv_port: 0,
        broker_port: 0,
        delay_levels: None,
        timer_wheel: false,
        message_index: false,
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
        },
        counter.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;

    super::warn_if_disk_nearly_full();
    // Batched production, as the relay does it.
    let begun = Instant::now();
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
    let produce_secs = begun.elapsed().as_secs_f64();
    let produce_per_s = (args.messages - failed) as f64 / produce_secs;

    // Consumption: from the first send until everything arrived (+1 for the warm-up).
    let expected = (args.messages + 1) as u64;
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
    let consume_per_s = consumed as f64 / consume_secs;

    // One message per send, all offered at once.
    let publisher = Arc::new(publisher);
    let (singles, single_wall) = load::run_open_loop("single sends", 1e9, args.single_sends, |i| {
        let publisher = publisher.clone();
        async move {
            publisher
                .publish(&[message(args.messages + i)])
                .await
                .iter()
                .all(Result::is_ok)
        }
    })
    .await;
    let single = load::summarize(&singles, single_wall);

    mq.shutdown().await;
    broker.shutdown().await;

    let batch_summary = load::summarize(&batch_latencies, Duration::from_secs_f64(produce_secs));
    let report = json!({
        "scenario": "broker",
        "machine": super::machine(),
        "broker_flush": "ASYNC_FLUSH",
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
