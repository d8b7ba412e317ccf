//! Configuration keys: how ordermq moves work — delayed delivery and
//! redelivery, group commit and the database's pools and timeouts, the
//! relay, timers and the reconciler, flash-sale admission, refunds and the
//! HTTP server's limits. Their defaults are what `ordermq bench` measures;
//! most deployments never set them.
//!
//! One section of the one table (see `keys/mod.rs`).

/// Appends this section's entries to those it is given and passes them on.
macro_rules! tuning_keys {
    ($next:ident $(, $rest:ident)* => $($entries:tt)*) => {
        $next! { $($rest),* => $($entries)*
        /// RocketMQ messageDelayLevel: the embedded broker's (the n-th
        /// redelivery of a failed message waits level 3+n), and the levels
        /// delayed closes hop through (delayed_delivery = levels). With an
        /// external cluster whose messageDelayLevel is not the default, set it
        /// to the cluster's.
        retry_delay_levels: Option<RetryLevels> = Optional<RetryLevels> {
            key: "retry_delay_levels",
            default: None,
            unset: "RocketMQ's default, 1s 5s 10s 30s 1m ... 2h",
        }
        /// How unpaid orders' closes are delayed. levels: RocketMQ delay levels,
        /// on any RocketMQ 4.x/5.x; a close hops through the levels until due
        /// and fires at most one shortest level (1 s) late. timer: RocketMQ 5
        /// timer messages (the broker must enable its timer wheel; the embedded
        /// one then holds ~37 MiB more memory).
        delayed_delivery: DeliveryMode = DeliveryMode {
            key: "delayed_delivery",
            default: DeliveryMode::Levels,
        }
        /// Embedded broker only: index messages by key for RocketMQ's query by
        /// key (mqadmin queryMsgByKey). Off: less CPU and memory per message;
        /// orders' events are still visible in ordermq's own API.
        embedded_message_index: bool = Flag {
            key: "embedded_message_index",
            default: false,
        }
        /// Embedded broker and `ordermq broker`: when a send is answered. sync: once the message
        /// is on disk (RocketMQ's SYNC_FLUSH, one group-committed msync for every
        /// send waiting), so nothing the relay marked sent is lost with the
        /// power. async: once it is in memory (ASYNC_FLUSH, flushed within
        /// ~0.5-10 s): less disk work, but a power loss can lose events already
        /// marked sent. An external cluster decides this itself (its
        /// flushDiskType and brokerRole; see docs/reliability.md).
        embedded_broker_flush: BrokerFlush = Flush {
            key: "embedded_broker_flush",
            default: BrokerFlush::Sync,
        }
        /// Redeliveries of a failing message before RocketMQ moves it to the
        /// group's dead-letter queue (`%DLQ%` and the group's name).
        max_reconsume_times: i32 = Int<i32> {
            key: "max_reconsume_times",
            default: 16,
            range: 0..,
        }
        /// Deliveries each consumer group handles at once (needs rate x
        /// third-party latency).
        consumer_concurrency: u32 = Int<u32> {
            key: "consumer_concurrency",
            default: 64,
            range: 1..,
        }
        /// Most creates/payments sharing one commit (group commit).
        write_batch_max: usize = Int<usize> {
            key: "write_batch_max",
            default: 256,
            range: 1..,
        }
        /// Group commit under load: when payments are queuing (the last commit
        /// carried 4 or more), wait up to this long for more before committing.
        /// Fewer, larger commits (less CPU per payment) for up to this much
        /// payment latency. 0 = commit what is queued.
        // Side by side at 5,000/s (docs/benchmarks.md): 307-335 µs of CPU per
        // payment with 2 ms against 371-396 without, payment p99 lower.
        write_linger: Duration = Millis {
            key: "write_linger_ms",
            default: ms(2),
        }
        /// PostgreSQL and MySQL/MariaDB: order-database batches committing at
        /// once (group commit), each on its own connection; the server flushes
        /// commits that arrive together with one log flush. An order's payments
        /// always go to the same one. SQLite has one writer.
        // 2: while one batch waits for its commit, the next runs its
        // statements and waits for the products it shares (a hot SKU's row is
        // held to the commit). More split the load into smaller batches that
        // queue on that row. `bench capacity` (one hot SKU), one sitting,
        // PostgreSQL 1 / 2 / 3 / 4 writers: 1,222 / 1,707 / 783 / < 700
        // payments/s; MariaDB 1 / 2 / 4: 813 / 928 / 625.
        postgres_writers: usize = Int<usize> {
            key: "postgres_writers",
            default: 2,
            range: 1..=64,
        }
        /// PostgreSQL: a batch's payments as one set-based statement (the
        /// default). Off: each payment through the general path, one savepoint
        /// each (for comparison; the same answers and rows).
        postgres_set_based: bool = Flag {
            key: "postgres_set_based",
            default: true,
        }
        /// The data team's change feed (TopicOrderChangeFeed). on: every order
        /// change also writes one outbox row in its transaction, relayed as an
        /// ordered message per order for `ordermq feed sink`. off (the
        /// default): none is written, and a payment costs what it did without
        /// the feed (order_seq is still counted, so switching it on later
        /// needs no migration).
        feed: FeedMode = FeedMode {
            key: "feed",
            default: FeedMode::Off,
        }
        /// `ordermq feed sink`: most change events applied in one handler call
        /// (one commit each). 256: a whole pull in one commit, a third faster
        /// than 64 on a 2-core machine (docs/benchmarks.md).
        feed_sink_batch: u32 = Int<u32> {
            key: "feed_sink_batch",
            default: 256,
            range: 1..=1024,
        }
        /// How long a request waits for a database connection before it is
        /// answered 503 STORAGE_UNAVAILABLE (a database outage is answered
        /// quickly instead of every request queueing).
        database_acquire_timeout: Duration = Millis {
            key: "database_acquire_timeout_ms",
            default: ms(2_000),
        }
        /// PostgreSQL and MySQL/MariaDB: the longest one statement may run
        /// before the server cancels it (PostgreSQL statement_timeout; MariaDB
        /// max_statement_time; MySQL max_execution_time, reads only). 0 = the
        /// server's.
        database_statement_timeout: Duration = Millis {
            key: "database_statement_timeout_ms",
            default: ms(30_000),
        }
        /// PostgreSQL and MySQL/MariaDB: the longest a statement waits for a
        /// lock (PostgreSQL lock_timeout; innodb_lock_wait_timeout, whole
        /// seconds, at least 1). 0 = the server's.
        database_lock_timeout: Duration = Millis {
            key: "database_lock_timeout_ms",
            default: ms(10_000),
        }
        /// PostgreSQL and MariaDB: a session idle this long inside a
        /// transaction is ended and its locks released (PostgreSQL
        /// idle_in_transaction_session_timeout; MariaDB idle_transaction_timeout,
        /// whole seconds; MySQL has none). 0 = the server's.
        database_idle_in_transaction_timeout: Duration = Millis {
            key: "database_idle_in_transaction_timeout_ms",
            default: ms(60_000),
        }
        /// Start even though acknowledged commits would not survive a crash
        /// (PostgreSQL: fsync = off, or synchronous_commit = off for ordermq's
        /// sessions; MySQL/MariaDB: innodb_flush_log_at_trx_commit other than
        /// 1), with a warning. Off: ordermq refuses to start. For test servers
        /// only.
        database_allow_unsafe_durability: bool = Flag {
            key: "database_allow_unsafe_durability",
            default: false,
        }
        /// Group commit in each downstream system under load: when its consumer
        /// batches are queuing (the last commit carried 2 or more), wait up to
        /// this long for more before committing. Fewer commits (less CPU and
        /// disk per event) for up to this much fan-out delay. 0 = commit what is
        /// queued.
        effect_linger: Duration = Millis {
            key: "effect_linger_ms",
            default: ms(5),
        }
        /// How much lower the fan-out's threads run than the payment path (nice
        /// value added to the broker, relay, consumers and downstream systems'
        /// threads): a waking payment runs ahead of them. 0 = same priority.
        fanout_nice: i32 = Int<i32> {
            key: "fanout_nice",
            default: 10,
            range: 0..=19,
        }
        /// Outbox rows the relay claims and publishes per round.
        relay_batch_size: usize = Int<usize> {
            key: "relay_batch_size",
            default: 512,
            range: 1..,
        }
        /// After a round that published, the relay lets events gather this long
        /// before the next (unless a full batch waits), counted from the start
        /// of the round, its send included: fewer, larger sends and pulls for
        /// up to this much fan-out delay. 0 = go on the next commit.
        // Side by side at 1,000 payments/s (docs/benchmarks.md): 10 ms and 4
        // queues took 1,060-1,100 µs of CPU per payment against 1,870-1,890 with
        // no linger and 8 queues; later, 25 ms took 1,090-1,120 against 10 ms's
        // 1,370-1,400 on a slower machine (and 750-780 against 840-860 at
        // 1,900/s), for end-to-end p99 60 ms instead of 50. 50 ms saved ~6 %
        // more but pushed e2e p99 past 100 ms at 1,900/s.
        relay_linger: Duration = Millis {
            key: "relay_linger_ms",
            default: ms(25),
        }
        /// An outbox row the broker refuses this many times while it takes
        /// other rows is parked: no longer tried, counted in /api/stats (outbox
        /// parked), listed by `ordermq outbox parked` and put back by `ordermq
        /// outbox requeue`. Until then it waits on its own backoff (100 ms
        /// doubling to 10 s) without holding back the rows behind it. During an
        /// outage (the broker takes nothing) no row is parked.
        relay_park_after_attempts: u32 = Int<u32> {
            key: "relay_park_after_attempts",
            default: 20,
            range: 1..,
        }
        /// Queues per topic when ordermq creates its topics (embedded broker, or
        /// a cluster that allows it). At least the instances consuming each
        /// group; fewer queues mean larger batches per pull.
        topic_queues: i32 = Int<i32> {
            key: "topic_queues",
            default: 4,
            range: 1..,
        }
        /// An unpaid order closes itself (stock released) this long after
        /// creation.
        order_close_after: Duration = Span {
            key: "order_close_after",
            default: Duration::from_secs(30 * 60),
        }
        /// Backstop for lost close messages: every interval, close UNPAID orders
        /// overdue by more than one interval (indexed, never a scan). 0s
        /// disables it.
        close_sweep_interval: Duration = Span {
            key: "close_sweep_interval",
            default: Duration::from_secs(60),
        }
        /// The reconciler: a sent event that some subscribed group has not
        /// acknowledged this long after its send (a receipt from each
        /// downstream system; a close due this long ago with the order still
        /// unpaid; a refund still REQUESTED) is published again.
        reconcile_after: Duration = Span {
            key: "reconcile_after",
            default: Duration::from_secs(300),
        }
        /// Time between the reconciler's passes. 0s disables it.
        reconcile_interval: Duration = Span {
            key: "reconcile_interval",
            default: Duration::from_secs(60),
        }
        /// Events first written longer ago than this are no longer published
        /// again by the reconciler (counted and listed by `ordermq outbox
        /// missing` instead).
        reconcile_window: Duration = Span {
            key: "reconcile_window",
            default: Duration::from_secs(7 * 24 * 3600),
        }
        /// Most events the reconciler publishes again per pass, oldest first.
        reconcile_batch: u32 = Int<u32> {
            key: "reconcile_batch",
            default: 500,
            range: 1..,
        }
        /// Times the reconciler publishes one event again before leaving it for
        /// an operator (`ordermq outbox missing`).
        reconcile_max: u32 = Int<u32> {
            key: "reconcile_max",
            default: 5,
            range: 1..,
        }
        /// Flash-sale orders created per second, evenly spaced (peak shaving:
        /// the order database sees at most this rate of sale orders, however
        /// many attempts were admitted at once). 0 = as fast as they come.
        flash_sale_order_rate: u32 = Int<u32> {
            key: "flash_sale_order_rate",
            default: 200,
            range: 0..=100_000,
        }
        /// The longest an admitted flash-sale attempt may wait for its order
        /// (from its admission to its turn at flash_sale_order_rate); one that
        /// would wait longer is REJECTED (QUEUE_TIMEOUT) and its units go back
        /// to the sale. 0s = no cap.
        flash_sale_max_wait: Duration = Span {
            key: "flash_sale_max_wait",
            default: Duration::from_secs(60),
        }
        /// How long a flash-sale order may stay unpaid before it closes (its
        /// units going back to the sale): shorter than order_close_after, since
        /// other shoppers wait for the units.
        flash_sale_order_close_after: Duration = Span {
            key: "flash_sale_order_close_after",
            default: Duration::from_secs(5 * 60),
        }
        /// Units of a flash sale an instance leases from the database at once
        /// for its in-memory admission budget (the next chunk is leased ahead
        /// when half is left; leases less than a second apart double it, up to
        /// 8 times). Larger: fewer database trips; smaller: less stranded in one
        /// instance's lease at the end of a sale.
        flash_sale_lease_chunk: u32 = Int<u32> {
            key: "flash_sale_lease_chunk",
            default: 50,
            range: 1..=10_000,
        }
        /// A lease of flash-sale units that no admission renewed for this long
        /// (its instance died or went idle) is returned to the sale by the next
        /// lease of another instance.
        flash_sale_lease_ttl: Duration = Span {
            key: "flash_sale_lease_ttl",
            default: Duration::from_secs(30),
        }
        /// Gateway refund attempts per delivery (with backoff) before RocketMQ
        /// redelivers later; after max_reconsume_times deliveries the refund is
        /// FAILED.
        refund_attempts: u32 = Int<u32> {
            key: "refund_attempts",
            default: 3,
            range: 1..,
        }
        /// How long the warehouse waits for the logistics system before retrying
        /// later.
        logistics_timeout: Duration = Millis {
            key: "logistics_timeout_ms",
            default: ms(5_000),
        }
        /// HTTP: how long a client has to send a request's headers, counted from
        /// when the connection starts waiting for a request (so it also closes a
        /// keep-alive connection idle this long). Slow or half-sent headers are
        /// cut off instead of holding a descriptor.
        http_header_timeout: Duration = Span {
            key: "http_header_timeout",
            default: Duration::from_secs(10),
        }
        /// HTTP: the longest a request may take, its body included, before it is
        /// answered 408 REQUEST_TIMEOUT and its connection closed.
        http_request_timeout: Duration = Span {
            key: "http_request_timeout",
            default: Duration::from_secs(30),
        }
        /// HTTP: a keep-alive connection with no request in flight for this long
        /// is closed (http_header_timeout closes it too, whichever is shorter).
        http_idle_timeout: Duration = Span {
            key: "http_idle_timeout",
            default: Duration::from_secs(5),
        }
        /// HTTP: most connections open at once. Over it a new connection waits
        /// up to a second for one to close, then is closed: slow clients cannot
        /// take every descriptor (the broker and SQLite need them too).
        http_max_connections: usize = Int<usize> {
            key: "http_max_connections",
            default: 1_024,
            range: 1..,
        }
        }
    };
}
