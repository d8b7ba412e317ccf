//! `ordermq feed sink|parked|verify`: the data team's side of the change
//! feed (`TopicOrderChangeFeed`).
//!
//! - `sink` runs the consumer group `order_feed_sink_group` against the
//!   configured cluster (or the embedded broker's NameServer) and applies
//!   every event to the analytics database: `sqlite://<data_dir>/analytics.db`
//!   unless `--database-url` names another file or a PostgreSQL database.
//!   It verifies each event's signature with the server's event keys, as
//!   every group does; what fails is recorded, never applied.
//! - `parked` lists the events waiting for their predecessor, and
//!   `--replay` tries them again (the sink does this by itself when the
//!   predecessor arrives; replay is for a sink that was repaired).
//! - `verify` compares every order's latest state in the order database
//!   with the sink's, checks that no order's history has a hole or an
//!   event applied before its predecessor, and prints each difference; any
//!   difference is a failure (exit 1).
//! - `snapshot [--since]` publishes every order's current state (or of
//!   those changed since a time) as `ordermq.order.snapshot.v1` events on
//!   the feed topic, keyed by order id like the live ones, a page of orders
//!   at a time. It needs no pause of the live feed: the sink applies a
//!   snapshot only over an older state of its order (`FeedEvent::admit`).
//! - `replay --from` moves the sink's group back to a time with RocketMQ's
//!   reset-offset-by-timestamp (see `ordermq_messaging::offsets`): the next
//!   `feed sink` reads the broker's messages again from there, and applies
//!   none of them twice.

use std::sync::Arc;

use std::time::{Duration, Instant};

use ordermq_domain::OutboxMessage;
use ordermq_domain::feed::{
    FEED_SINK_GROUP, FeedChange, FeedEvent, OrderState, TOPIC_ORDER_CHANGE_FEED,
};
use ordermq_domain::now_millis;
use ordermq_domain::ports::Publisher;
use ordermq_messaging::{ClientSecurity, MqClient, MqError, QueueReset, SubscribeOptions};
use ordermq_service::consumers::FeedSinkHandler;
use ordermq_store::{FeedSink, OpenError, ParkedEvent, SeqGap, SinkReport, Store};
use thiserror::Error;

use crate::Config;

/// Why a feed command could not run (not a difference it found).
#[derive(Debug, Error)]
pub enum FeedError {
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("{0}")]
    Storage(#[from] ordermq_domain::ports::StorageError),
    #[error("event keys: {0}")]
    Keys(#[from] crate::event_keys::EventKeysError),
    #[error("RocketMQ ({namesrv}): {source}")]
    Mq { namesrv: String, source: MqError },
    #[error(
        "snapshot of order {order_id}: the broker did not store it after {attempts} attempts: {reason}"
    )]
    Publish {
        order_id: String,
        attempts: u32,
        reason: String,
    },
}

/// The analytics database: `url`, or the SQLite file beside the order database.
pub fn sink_url(config: &Config, url: Option<&str>) -> String {
    url.map_or_else(
        || {
            format!(
                "sqlite://{}",
                config.data_dir.join("analytics.db").display()
            )
        },
        str::to_owned,
    )
}

/// A running sink: its consumer group, until [`RunningSink::stop`].
#[derive(Debug)]
pub struct RunningSink {
    mq: MqClient,
    /// The analytics database it writes.
    pub sink: FeedSink,
}

impl RunningSink {
    /// Opens the analytics database at `url` and subscribes
    /// `order_feed_sink_group` to the feed. Must run inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// The database cannot be opened, the event keys cannot be read, or the
    /// cluster cannot be reached.
    pub async fn start(config: &Config, url: &str) -> Result<Self, FeedError> {
        let sink = FeedSink::open(url).await?;
        let keys = crate::event_keys::event_keys(config)?;
        let namesrv = crate::dlq::namesrv_of(config);
        let mq_error = |source| FeedError::Mq {
            namesrv: namesrv.clone(),
            source,
        };
        let security = ClientSecurity {
            event_keys: Some(keys),
            parking: Some(Arc::new(sink.clone())),
            acl: config.rocketmq_acl(),
        };
        let mq = MqClient::connect_with(
            &namesrv,
            "order_feed_sink_producer",
            config.delayed_delivery(),
            security,
        )
        .await
        .map_err(mq_error)?;
        mq.subscribe(
            SubscribeOptions {
                group: FEED_SINK_GROUP.to_owned(),
                subscriptions: vec![(TOPIC_ORDER_CHANGE_FEED.to_owned(), "*".to_owned())],
                max_reconsume_times: config.max_reconsume_times,
                concurrency: 4,
                batch: config.feed_sink_batch,
                retry_levels: config.retry_levels(),
            },
            Arc::new(FeedSinkHandler::new(sink.clone())),
        )
        .await
        .map_err(mq_error)?;
        Ok(Self { mq, sink })
    }

    /// How many messages the group's handler consumed so far.
    pub fn handled(&self) -> u64 {
        self.mq.deliveries().of(FEED_SINK_GROUP).handled
    }

    /// Stops consuming (unacknowledged messages are redelivered next time).
    pub async fn stop(self) {
        self.mq.shutdown().await;
    }
}

/// Connects a producer that signs with the server's event keys.
async fn producer(config: &Config, producer_group: &str) -> Result<MqClient, FeedError> {
    let keys = crate::event_keys::event_keys(config)?;
    let namesrv = crate::dlq::namesrv_of(config);
    let security = ClientSecurity {
        event_keys: Some(keys),
        parking: None,
        acl: config.rocketmq_acl(),
    };
    MqClient::connect_with(
        &namesrv,
        producer_group,
        config.delayed_delivery(),
        security,
    )
    .await
    .map_err(|source| FeedError::Mq { namesrv, source })
}

/// What a snapshot sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotReport {
    /// Orders sent, each as one snapshot event.
    pub orders: u64,
    /// Pages read from the order database.
    pub pages: u64,
}

/// Orders read, and sent, at a time by a snapshot.
pub const SNAPSHOT_PAGE: i64 = 1_000;
/// Sends of one message before a snapshot gives up.
const SNAPSHOT_ATTEMPTS: u32 = 5;

/// `ordermq feed snapshot`: every order with a feed changed at or after
/// `since` (epoch ms; `i64::MIN` for all), published through the
/// configured cluster. `progress` is called after each page with the
/// running total.
///
/// # Errors
///
/// The order database or the cluster cannot be reached, or the broker
/// refused a message on every attempt (what was sent before stays sent:
/// running the snapshot again is harmless).
pub async fn snapshot(
    config: &Config,
    since: i64,
    progress: &mut dyn FnMut(&SnapshotReport),
) -> Result<SnapshotReport, FeedError> {
    let store = Store::open(&config.database_url(), &config.store_options()).await?;
    let mq = match producer(config, "order_feed_snapshot_producer").await {
        Ok(mq) => mq,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    let result = send_snapshot(
        &store,
        mq.publisher().as_ref(),
        since,
        SNAPSHOT_PAGE,
        progress,
    )
    .await;
    mq.shutdown().await;
    store.close().await;
    result
}

/// [`snapshot`] on an open store and publisher, `page` orders at a time:
/// each page is read in one transaction (an order's lines agree with its
/// `order_seq`) and sent as one batch; a message the broker did not confirm
/// is sent again, alone, up to 5 times.
///
/// # Errors
///
/// As [`snapshot`].
pub async fn send_snapshot(
    store: &Store,
    publisher: &dyn Publisher,
    since: i64,
    page: i64,
    progress: &mut dyn FnMut(&SnapshotReport),
) -> Result<SnapshotReport, FeedError> {
    let mut report = SnapshotReport::default();
    let mut after = String::new();
    loop {
        let states = store.feed_states_since(&after, since, page).await?;
        let Some((last, _)) = states.last() else {
            break;
        };
        after = last.order_id.clone();
        let at = now_millis();
        let count = states.len();
        let mut batch: Vec<OutboxMessage> = states
            .into_iter()
            .map(|(state, seq)| {
                let event = FeedEvent::snapshot(state, seq, at);
                OutboxMessage {
                    id: 0,
                    topic: TOPIC_ORDER_CHANGE_FEED.to_owned(),
                    tag: FeedChange::Snapshot.tag().to_owned(),
                    key: event.subject.clone(),
                    event_id: event.id.clone(),
                    body: event.to_json(),
                    deliver_at: None,
                    attempts: 0,
                }
            })
            .collect();
        let mut attempts = 0;
        while !batch.is_empty() {
            attempts += 1;
            let results = publisher.publish(&batch).await;
            let mut failed = Vec::new();
            let mut reason = String::new();
            for (message, result) in batch.into_iter().zip(results) {
                if let Err(e) = result {
                    reason = e.0;
                    failed.push(message);
                }
            }
            if let Some(first) = failed.first().filter(|_| attempts >= SNAPSHOT_ATTEMPTS) {
                return Err(FeedError::Publish {
                    order_id: first.key.clone(),
                    attempts,
                    reason,
                });
            }
            if !failed.is_empty() {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempts))).await;
            }
            batch = failed;
        }
        report.orders += count as u64;
        report.pages += 1;
        progress(&report);
        if (count as i64) < page {
            break;
        }
    }
    Ok(report)
}

/// A progress line on stderr at most every `every`, and the last one.
#[derive(Debug)]
pub struct ProgressLine {
    started: Instant,
    last: Option<Instant>,
    every: Duration,
}

impl ProgressLine {
    /// A line at most every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            started: Instant::now(),
            last: None,
            every,
        }
    }

    /// The line for `report`, if one is due (or `last`).
    pub fn line(&mut self, report: &SnapshotReport, last: bool) -> Option<String> {
        let now = Instant::now();
        if !last && self.last.is_some_and(|t| now - t < self.every) {
            return None;
        }
        self.last = Some(now);
        let secs = self.started.elapsed().as_secs_f64();
        Some(format!(
            "snapshot: {} orders sent in {:.1} s ({:.0} orders/s){}",
            report.orders,
            secs,
            report.orders as f64 / secs.max(1e-3),
            if last { ", done" } else { "" }
        ))
    }
}

/// `ordermq feed replay --from`: moves `order_feed_sink_group` back to the
/// first feed message each queue stored at or after `from` (epoch ms).
///
/// # Errors
///
/// The cluster cannot be reached or refused the reset.
pub async fn replay_from(config: &Config, from: i64) -> Result<Vec<QueueReset>, FeedError> {
    let mq = producer(config, "order_feed_replay_producer").await?;
    let namesrv = crate::dlq::namesrv_of(config);
    let result = mq
        .reset_offsets_to_time(
            FEED_SINK_GROUP,
            TOPIC_ORDER_CHANGE_FEED,
            u64::try_from(from).unwrap_or(0),
        )
        .await
        .map_err(|source| FeedError::Mq { namesrv, source });
    mq.shutdown().await;
    result
}

/// Parked events (at most `limit`), oldest first.
///
/// # Errors
///
/// The analytics database cannot be opened or read.
pub async fn parked(url: &str, limit: i64) -> Result<Vec<ParkedEvent>, FeedError> {
    Ok(FeedSink::open(url).await?.parked(limit).await?)
}

/// Tries the parked events again.
///
/// # Errors
///
/// The analytics database cannot be opened or written.
pub async fn replay(url: &str) -> Result<SinkReport, FeedError> {
    Ok(FeedSink::open(url)
        .await?
        .replay_parked(now_millis())
        .await?)
}

/// `parked` as a table.
pub fn render_parked(rows: &[ParkedEvent]) -> String {
    let mut out = format!(
        "{:<48}  {:<32}  {:>9}  {:>11}  parked at\n",
        "event id", "order", "order_seq", "waiting for"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<48}  {:<32}  {:>9}  {:>11}  {}\n",
            r.event_id, r.order_id, r.order_seq, r.waiting_for, r.parked_at
        ));
    }
    out.push_str(&format!("{} parked event(s)\n", rows.len()));
    out
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Verification {
    /// Orders compared (those with a feed in the order database).
    pub orders: u64,
    /// One line per difference.
    pub differences: Vec<String>,
    /// Orders whose history in the sink has a hole.
    pub gaps: Vec<SeqGap>,
    /// Events applied before their predecessor: `(order, order_seq)`.
    pub reorderings: Vec<(String, i64)>,
    /// Events still waiting for their predecessor.
    pub parked: usize,
}

impl Verification {
    /// Nothing differs, no hole, nothing parked.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
            && self.gaps.is_empty()
            && self.reorderings.is_empty()
            && self.parked == 0
    }

    /// What `ordermq feed verify` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.differences {
            out.push_str(d);
            out.push('\n');
        }
        for g in &self.gaps {
            out.push_str(&format!(
                "gap: order {} has {} event(s) numbered {}..{}\n",
                g.order_id, g.events, g.first, g.last
            ));
        }
        for (order_id, seq) in &self.reorderings {
            out.push_str(&format!(
                "reordering: order {order_id}'s event {seq} was applied before event {}\n",
                seq - 1
            ));
        }
        out.push_str(&format!(
            "{} orders compared: {} difference(s), {} order_seq gap(s), {} reordering(s), \
             {} parked event(s)\n",
            self.orders,
            self.differences.len(),
            self.gaps.len(),
            self.reorderings.len(),
            self.parked
        ));
        out
    }
}

/// Orders read at a time from each side.
const PAGE: i64 = 1_000;

/// Compares the order database (as configured) with the sink at `url`.
///
/// # Errors
///
/// A database cannot be opened or read.
pub async fn verify(config: &Config, url: &str) -> Result<Verification, FeedError> {
    let store = Store::open(&config.database_url(), &config.store_options()).await?;
    let sink = FeedSink::open(url).await?;
    let result = compare(&store, &sink).await;
    store.close().await;
    result
}

/// [`verify`] on open databases.
///
/// # Errors
///
/// A database cannot be read.
pub async fn compare(store: &Store, sink: &FeedSink) -> Result<Verification, FeedError> {
    let mut report = Verification::default();
    let (mut source, mut copy) = (Pages::default(), Pages::default());
    loop {
        if source.wants_more() {
            let after = source.after.clone();
            source.fill(store.feed_states(&after, PAGE).await?);
        }
        if copy.wants_more() {
            let after = copy.after.clone();
            copy.fill(sink.states(&after, PAGE).await?);
        }
        let (left, right) = (source.peek(), copy.peek());
        match (left, right) {
            (None, None) => break,
            (Some((order, _)), None) => {
                report.orders += 1;
                report
                    .differences
                    .push(format!("order {}: missing in the sink", order.order_id));
                source.next();
            }
            (None, Some((order, _))) => {
                report.differences.push(format!(
                    "order {}: in the sink, not in the order database",
                    order.order_id
                ));
                copy.next();
            }
            (Some((a, a_seq)), Some((b, b_seq))) => match a.order_id.cmp(&b.order_id) {
                std::cmp::Ordering::Less => {
                    report.orders += 1;
                    report
                        .differences
                        .push(format!("order {}: missing in the sink", a.order_id));
                    source.next();
                }
                std::cmp::Ordering::Greater => {
                    report.differences.push(format!(
                        "order {}: in the sink, not in the order database",
                        b.order_id
                    ));
                    copy.next();
                }
                std::cmp::Ordering::Equal => {
                    report.orders += 1;
                    differences(&a, a_seq, &b, b_seq, &mut report.differences);
                    source.next();
                    copy.next();
                }
            },
        }
    }
    report.gaps = sink.gaps().await?;
    report.reorderings = sink.reorderings().await?;
    report.parked = sink.parked(i64::MAX).await?.len();
    Ok(report)
}

/// Each field of the order that the sink has otherwise.
fn differences(a: &OrderState, a_seq: i64, b: &OrderState, b_seq: i64, out: &mut Vec<String>) {
    let id = &a.order_id;
    let mut field = |name: &str, db: String, sink: String| {
        if db != sink {
            out.push(format!(
                "order {id}: {name} is {db} in the order database, {sink} in the sink"
            ));
        }
    };
    field("order_seq", a_seq.to_string(), b_seq.to_string());
    field("status", a.status.clone(), b.status.clone());
    field("user_id", a.user_id.clone(), b.user_id.clone());
    field("amount", a.amount.to_string(), b.amount.to_string());
    field(
        "payment_id",
        format!("{:?}", a.payment_id),
        format!("{:?}", b.payment_id),
    );
    field(
        "created_at",
        a.created_at.to_string(),
        b.created_at.to_string(),
    );
    field(
        "updated_at",
        a.updated_at.to_string(),
        b.updated_at.to_string(),
    );
    field("lines", format!("{:?}", a.lines), format!("{:?}", b.lines));
}

/// One side of the comparison, a page at a time.
#[derive(Default)]
struct Pages {
    page: std::collections::VecDeque<(OrderState, i64)>,
    after: String,
    done: bool,
}

impl Pages {
    fn wants_more(&self) -> bool {
        self.page.is_empty() && !self.done
    }

    fn fill(&mut self, page: Vec<(OrderState, i64)>) {
        if (page.len() as i64) < PAGE {
            self.done = true;
        }
        if let Some((last, _)) = page.last() {
            self.after = last.order_id.clone();
        }
        self.page.extend(page);
    }

    fn peek(&self) -> Option<(OrderState, i64)> {
        self.page.front().cloned()
    }

    fn next(&mut self) {
        self.page.pop_front();
    }
}
