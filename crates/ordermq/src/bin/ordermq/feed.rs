//! `ordermq feed sink|parked|verify|snapshot|replay`: the data team's change
//! feed from the command line. Times are parsed before anything connects, so
//! a bad `--since` or `--from` changes nothing; the work is in
//! [`ordermq::feed`].

use std::process::ExitCode;

use clap::Subcommand;
use ordermq::Config;
use ordermq::logging::log_filter;
use tracing_subscriber::EnvFilter;

use crate::runtime;

#[derive(Debug, Subcommand)]
pub(crate) enum FeedAction {
    /// Consume the feed as order_feed_sink_group into the analytics
    /// database, until Ctrl-C/SIGTERM.
    Sink {
        /// The analytics database: sqlite://PATH or postgres://… (default:
        /// sqlite://<data_dir>/analytics.db).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Events waiting for their predecessor (each parked for its order only).
    Parked {
        #[arg(long)]
        database_url: Option<String>,
        /// Try them again; those whose predecessor is applied are applied.
        #[arg(long)]
        replay: bool,
    },
    /// Compare every order's latest state in the order database with the
    /// sink's, and check each order's order_seq history for holes and for
    /// events applied before their predecessor. Prints each difference;
    /// exits 1 on any (or on a parked event).
    Verify {
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Publish every order's current state (or only of those changed at or
    /// after --since) to the feed as ordermq.order.snapshot.v1 events, a
    /// page at a time, while the live feed goes on: the sink applies a
    /// snapshot only over an older state. Progress on stderr.
    Snapshot {
        /// Epoch milliseconds or RFC 3339 UTC (2026-12-05T14:00:00Z).
        #[arg(long)]
        since: Option<String>,
    },
    /// Move order_feed_sink_group back to the first feed message stored at
    /// or after --from (RocketMQ's reset offset by timestamp): the sink
    /// reads from there again and applies nothing twice. Stop the sink
    /// first; start it again after.
    Replay {
        /// Epoch milliseconds or RFC 3339 UTC (2026-12-05T14:00:00Z).
        #[arg(long)]
        from: String,
    },
}

/// `ordermq feed sink|parked|verify`.
pub(crate) fn run(config: &Config, action: FeedAction) -> ExitCode {
    let filter = match &action {
        FeedAction::Sink { .. } => log_filter(config),
        // Reports print their own results; only errors are logged.
        _ => EnvFilter::new("error,rocketmq_transport=off,rocketmq_client_rust=off"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let time_arg = |flag: &str, raw: Option<&str>| -> Result<i64, ExitCode> {
        match raw {
            None => Ok(i64::MIN),
            Some(raw) => ordermq_domain::feed::parse_time_millis(raw).ok_or_else(|| {
                eprintln!(
                    "ordermq feed: {flag} {raw:?} is not a time: give epoch milliseconds \
                     or RFC 3339 in UTC, e.g. 2026-12-05T14:00:00Z"
                );
                ExitCode::from(2)
            }),
        }
    };
    // Bad input changes nothing: the times are read before anything connects.
    let bound = match &action {
        FeedAction::Snapshot { since } => time_arg("--since", since.as_deref()),
        FeedAction::Replay { from } => time_arg("--from", Some(from)),
        _ => Ok(i64::MIN),
    };
    let bound = match bound {
        Ok(bound) => bound,
        Err(code) => return code,
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let code = runtime.block_on(async {
        match action {
            FeedAction::Snapshot { .. } => {
                let mut line = ordermq::feed::ProgressLine::new(std::time::Duration::from_secs(2));
                let mut progress = |r: &ordermq::feed::SnapshotReport| {
                    if let Some(text) = line.line(r, false) {
                        eprintln!("{text}");
                    }
                };
                match ordermq::feed::snapshot(config, bound, &mut progress).await {
                    Ok(report) => {
                        if let Some(text) = line.line(&report, true) {
                            eprintln!("{text}");
                        }
                        println!("{} orders sent as snapshot events", report.orders);
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("ordermq feed snapshot: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            FeedAction::Replay { .. } => match ordermq::feed::replay_from(config, bound).await {
                Ok(queues) => {
                    for q in &queues {
                        println!("{} queue {}: offset {}", q.broker, q.queue_id, q.offset);
                    }
                    println!(
                        "order_feed_sink_group moved to {} on {} queue(s); the next `ordermq feed sink` reads from there",
                        ordermq_domain::feed::rfc3339_millis(bound),
                        queues.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ordermq feed replay: {e}");
                    ExitCode::FAILURE
                }
            },
            FeedAction::Sink { database_url } => {
                let url = ordermq::feed::sink_url(config, database_url.as_deref());
                match ordermq::feed::RunningSink::start(config, &url).await {
                    Ok(sink) => {
                        tracing::info!(
                            database = %ordermq_store::redact(&url),
                            "order_feed_sink_group consuming TopicOrderChangeFeed; Ctrl-C stops"
                        );
                        if config.feed == ordermq::config::FeedMode::Off {
                            tracing::warn!(
                                "feed is off in this configuration (the default): an order \
                                 service started with it writes no feed events; start it \
                                 with feed = on (ORDERMQ_FEED=on) for this sink to receive any"
                            );
                        }
                        ordermq::startup::shutdown_signal().await;
                        sink.stop().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("ordermq feed sink: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            FeedAction::Parked {
                database_url,
                replay,
            } => {
                let url = ordermq::feed::sink_url(config, database_url.as_deref());
                if replay {
                    match ordermq::feed::replay(&url).await {
                        Ok(report) => {
                            println!("{} applied, {} still parked", report.applied, report.parked);
                            return ExitCode::SUCCESS;
                        }
                        Err(e) => {
                            eprintln!("ordermq feed parked --replay: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                match ordermq::feed::parked(&url, 1_000).await {
                    Ok(rows) => {
                        print!("{}", ordermq::feed::render_parked(&rows));
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("ordermq feed parked: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            FeedAction::Verify { database_url } => {
                let url = ordermq::feed::sink_url(config, database_url.as_deref());
                match ordermq::feed::verify(config, &url).await {
                    Ok(report) => {
                        print!("{}", report.render());
                        if report.is_clean() {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::FAILURE
                        }
                    }
                    Err(e) => {
                        eprintln!("ordermq feed verify: {e}");
                        ExitCode::from(2)
                    }
                }
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}
