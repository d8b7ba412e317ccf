//! The `ordermq` binary: `ordermq` (or `ordermq serve`) runs everything;
//! `ordermq config` lists every configuration key and its current value;
//! `ordermq broker` runs only a RocketMQ broker (with a NameServer of its
//! own unless `broker.namesrv_addr` names the cluster's);
//! `ordermq namesrv` runs only a RocketMQ NameServer;
//! `ordermq dlq list|replay` inspects and replays dead-lettered messages;
//! `ordermq dlq parked` lists messages refused because they failed verification.
//! `ordermq outbox parked|requeue` lists and hands back outbox rows the relay parked;
//! `ordermq outbox missing` lists sent events the reconciler left for an operator.
//! `ordermq token` makes an API token and prints its configuration entry.
//!
//! Thin on purpose: parsing the command line and choosing a subcommand; the
//! work is in the library ([`ordermq::startup`], [`ordermq::dlq`]). The
//! benchmark and the fault suite are separate programs (`tools/bench`,
//! `tools/chaos`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ordermq::logging::log_filter;
use ordermq::{Application, Config};
use tracing_subscriber::EnvFilter;

#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "ordermq",
    version,
    about = "Order system with a fast payment path: everything that can wait goes through RocketMQ"
)]
struct Cli {
    /// TOML configuration file (default: ./ordermq.toml if it exists; env: ORDERMQ_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API, the outbox relay, the four consumer groups and (unless a
    /// NameServer is configured) an embedded RocketMQ NameServer + broker. The default.
    /// With role (ORDERMQ_ROLE) order or one system's name, only that part.
    Serve,
    /// Print every configuration key, its environment variable, current value and meaning.
    Config {
        /// Print the README's table of keys and defaults instead.
        #[arg(long)]
        markdown: bool,
    },
    /// Run only a RocketMQ broker until Ctrl-C/SIGTERM: on embedded_broker_port,
    /// storing under broker.store_dir, as broker.name / broker.id / broker.role of
    /// broker.cluster, registered with broker.namesrv_addr (unset: with a
    /// NameServer it starts itself on embedded_namesrv_port). An ordermq
    /// started with ORDERMQ_NAMESRV_ADDR=<the NameServers> uses it; the fault
    /// suite runs it this way to stop and kill the broker on its own.
    Broker,
    /// Run only a RocketMQ NameServer until Ctrl-C/SIGTERM. Brokers register
    /// with every NameServer of broker.namesrv_addr; clients take any of
    /// namesrv_addr. It keeps no state: routes come back as brokers re-register.
    Namesrv {
        /// Address to listen on (default: 127.0.0.1:<embedded_namesrv_port>).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Dead-lettered messages (%DLQ%<group>): list them with the recorded reason,
    /// or replay them through their group's handler (idempotent); and parked
    /// ones (failed verification, never applied).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Outbox rows the relay parked after the broker refused them on every
    /// attempt (relay_park_after_attempts): list them, or hand them back;
    /// and sent events the reconciler gave up on (missing).
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
    /// The data team's change feed (TopicOrderChangeFeed): run the sink that
    /// keeps the analytics database, see its parked events, or verify it
    /// against the order database.
    Feed {
        #[command(subcommand)]
        action: FeedAction,
    },
    /// Make a random API token and print it with its configuration entry
    /// (name:role:sha256hex, for api_tokens / ORDERMQ_API_TOKENS): the
    /// configuration holds only the hash, so nobody hashes by hand.
    Token {
        /// The token's name, recorded with the refunds and retries it asks for.
        #[arg(long, default_value = "operator")]
        name: String,
        /// shop (create and read orders and users) or operator (also refunds,
        /// retries, stats and the dashboard).
        #[arg(long, default_value = "operator")]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// Every message in the DLQ of one group (or all four), its reason and state.
    List {
        /// credit_group, marketing_group, push_group or warehouse_group (default: all).
        #[arg(long)]
        group: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Apply every not-yet-applied dead-lettered message through its group's
    /// handler; already applied ones are skipped. Exits 1 if any still fails.
    Replay {
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Messages consumer groups refused because they failed verification
    /// (forged, unsigned, under an unknown key): never applied, never
    /// replayed; each with its group, message id, key, reason and time.
    Parked {
        /// Any consumer group, e.g. credit_group (default: all).
        #[arg(long)]
        group: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum FeedAction {
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

#[derive(Debug, Subcommand)]
enum OutboxAction {
    /// Every parked row: its event, attempts, last error and when it was parked.
    Parked {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Sent events some subscribed group still owes after the reconciler
    /// published them again reconcile_max times, with the groups that owe them.
    Missing {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Hand a parked row (or every one, --all) back to the relay, its
    /// attempts counted from zero. Exits 1 if the id names no parked row.
    Requeue {
        /// The row's id, as `ordermq outbox parked` shows it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every parked row.
        #[arg(long)]
        all: bool,
    },
}

fn config_path(cli: &Cli) -> Option<PathBuf> {
    cli.config
        .clone()
        .or_else(|| std::env::var_os("ORDERMQ_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let default = PathBuf::from("ordermq.toml");
            default.exists().then_some(default)
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Token { name, role }) = &cli.command {
        // Needs no configuration: it only prints.
        return token(name, role);
    }
    let config = match Config::load(config_path(&cli).as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ordermq: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Config { markdown } => {
            if markdown {
                print!("{}", ordermq::config::markdown_table());
            } else {
                print!("{}", config.describe());
            }
            ExitCode::SUCCESS
        }
        Command::Serve => serve(config),
        Command::Broker => broker(config),
        Command::Namesrv { listen } => namesrv(config, listen),
        Command::Dlq { action } => dlq(config, action),
        Command::Outbox { action } => outbox(&config, action),
        Command::Feed { action } => feed(&config, action),
        Command::Token { name, role } => token(&name, &role),
    }
}

/// `ordermq feed sink|parked|verify`.
fn feed(config: &Config, action: FeedAction) -> ExitCode {
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

fn token(name: &str, role: &str) -> ExitCode {
    use ordermq_api::auth::{Role, TokenEntry, generate_token};
    let Some(role) = Role::parse(role) else {
        eprintln!("ordermq token: --role is shop or operator, not {role:?}");
        return ExitCode::from(2);
    };
    let token = match generate_token() {
        Ok(token) => token,
        Err(e) => {
            eprintln!("ordermq token: no randomness from the operating system: {e}");
            return ExitCode::FAILURE;
        }
    };
    let entry = match TokenEntry::for_token(name, role, &token) {
        Ok(entry) => entry,
        Err(e) => {
            eprintln!("ordermq token: {e}");
            return ExitCode::from(2);
        }
    };
    println!("token (give it to the caller; ordermq keeps only its hash):\n  {token}");
    println!(
        "configuration entry (api_tokens / ORDERMQ_API_TOKENS, entries separated by commas):\n  {}",
        entry.config_entry()
    );
    ExitCode::SUCCESS
}

#[cfg(not(feature = "embedded-broker"))]
fn broker(_config: Config) -> ExitCode {
    eprintln!(
        "ordermq broker: this build has no embedded broker (built without the `embedded-broker` feature)"
    );
    ExitCode::from(2)
}

#[cfg(feature = "embedded-broker")]
fn broker(config: Config) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(&config))
        .init();
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let broker = ordermq_messaging::EmbeddedBroker::start(config.embedded_options()).await?;
        tracing::info!(
            namesrv = %broker.namesrv_addr(),
            broker = %broker.broker_addr(),
            "RocketMQ broker running; set ORDERMQ_NAMESRV_ADDR={} for ordermq",
            broker.namesrv_addr()
        );
        ordermq::startup::shutdown_signal().await;
        tracing::info!("stopping the broker");
        broker.shutdown().await;
        Ok::<(), ordermq_messaging::MqError>(())
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordermq broker: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "embedded-broker"))]
fn namesrv(_config: Config, _listen: Option<std::net::SocketAddr>) -> ExitCode {
    eprintln!(
        "ordermq namesrv: this build has no embedded NameServer (built without the `embedded-broker` feature)"
    );
    ExitCode::from(2)
}

#[cfg(feature = "embedded-broker")]
fn namesrv(config: Config, listen: Option<std::net::SocketAddr>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(&config))
        .init();
    let listen = listen.unwrap_or_else(|| {
        std::net::SocketAddr::from(([127, 0, 0, 1], config.embedded_namesrv_port))
    });
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    // Its kvConfig and properties files, one directory per listening port.
    let dir = config
        .data_dir
        .join(format!("rocketmq-namesrv-{}", listen.port()));
    let result = runtime.block_on(async {
        let namesrv = ordermq_messaging::EmbeddedNameServer::start(&dir, listen).await?;
        tracing::info!(addr = %namesrv.addr(), "RocketMQ NameServer running");
        ordermq::startup::shutdown_signal().await;
        tracing::info!("stopping the NameServer");
        namesrv.shutdown().await;
        Ok::<(), ordermq_messaging::MqError>(())
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordermq namesrv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dlq(config: Config, action: DlqAction) -> ExitCode {
    // The tool reports its own errors; the RocketMQ client's connection
    // chatter only shows when ORDERMQ_LOG asks for it.
    let filter = match std::env::var_os("ORDERMQ_LOG") {
        Some(_) => EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("error")),
        None => EnvFilter::new("error,rocketmq_transport=off,rocketmq_client_rust=off"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let (group, json) = match &action {
        DlqAction::List { group, json }
        | DlqAction::Replay { group, json }
        | DlqAction::Parked { group, json } => (group.clone(), *json),
    };
    if matches!(action, DlqAction::Parked { .. }) {
        let code = runtime.block_on(dlq_parked(&config, group.as_deref(), json));
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        return code;
    }
    let systems = match ordermq::dlq::systems(group.as_deref()) {
        Ok(systems) => systems,
        Err(e) => {
            eprintln!("ordermq dlq: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async {
        match action {
            DlqAction::List { .. } => match ordermq::dlq::list(&config, &systems).await {
                Ok(entries) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&entries).unwrap_or_default()
                        );
                    } else {
                        print!("{}", ordermq::dlq::render_list(&entries));
                        if let Ok(parked @ 1..) = ordermq::dlq::parked_count(&config).await {
                            println!(
                                "{parked} parked message(s) failed verification and were never applied: `ordermq dlq parked`"
                            );
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ordermq dlq list: {e}");
                    ExitCode::FAILURE
                }
            },
            DlqAction::Replay { .. } => match ordermq::dlq::replay(&config, &systems).await {
                Ok(outcomes) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&outcomes).unwrap_or_default()
                        );
                    } else {
                        print!("{}", ordermq::dlq::render_replay(&outcomes));
                    }
                    if outcomes
                        .iter()
                        .any(|o| o.result == "failed" || o.result == "unverified")
                    {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("ordermq dlq replay: {e}");
                    ExitCode::FAILURE
                }
            },
            DlqAction::Parked { .. } => dlq_parked(&config, group.as_deref(), json).await,
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

/// `ordermq outbox parked|requeue|missing`.
fn outbox(config: &Config, action: OutboxAction) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let code = runtime.block_on(async {
        match action {
            OutboxAction::Parked { json } => match ordermq::outbox::parked(config).await {
                Ok(rows) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&ordermq::outbox::parked_json(&rows))
                            .unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Ok(rows) => {
                    print!("{}", ordermq::outbox::render_parked(&rows));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ordermq outbox parked: {e}");
                    ExitCode::FAILURE
                }
            },
            OutboxAction::Missing { json } => match ordermq::outbox::missing(config).await {
                Ok(rows) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&ordermq::outbox::missing_json(&rows))
                            .unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Ok(rows) => {
                    print!("{}", ordermq::outbox::render_missing(&rows));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ordermq outbox missing: {e}");
                    ExitCode::FAILURE
                }
            },
            OutboxAction::Requeue { id, all } => {
                let id = if all { None } else { id };
                match ordermq::outbox::requeue(config, id).await {
                    Ok(0) if id.is_some() => {
                        eprintln!(
                            "ordermq outbox requeue: no parked row has id {}",
                            id.unwrap_or_default()
                        );
                        ExitCode::FAILURE
                    }
                    Ok(n) => {
                        println!("{n} outbox row(s) handed back to the relay");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("ordermq outbox requeue: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

/// `ordermq dlq parked`: what consumer groups refused as unverified.
async fn dlq_parked(config: &Config, group: Option<&str>, json: bool) -> ExitCode {
    match ordermq::dlq::parked(config, group).await {
        Ok(parked) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&parked).unwrap_or_default()
                );
            } else {
                print!("{}", ordermq::dlq::render_parked(&parked));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ordermq dlq parked: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(&config))
        .init();
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let app = Application::build(&config).await?;
        app.run_until_stopped(ordermq::startup::shutdown_signal())
            .await
    });
    // The broker's background tasks may still hold the runtime; do not wait on them forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("ordermq failed: {e}");
            eprintln!("ordermq: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-threaded Tokio runtime everything runs on (RocketMQ borrows it).
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("ordermq: cannot start the async runtime: {e}");
            None
        }
    }
}
