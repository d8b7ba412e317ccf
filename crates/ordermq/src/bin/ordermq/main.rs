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
//! work is in the library ([`ordermq::startup`], [`ordermq::dlq`],
//! [`ordermq::outbox`], [`ordermq::feed`]). The benchmark and the fault
//! suite are separate programs (`tools/bench`, `tools/chaos`).
//!
//! # Layout
//!
//! - this file: the command line, `serve`, `config` and `token`;
//! - `feed`, `dlq`, `outbox`: the operator subcommands of those names, each
//!   with its own arguments;
//! - `nodes`: `broker` and `namesrv`, one RocketMQ node per process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dlq::DlqAction;
use feed::FeedAction;
use ordermq::logging::log_filter;
use ordermq::{Application, Config};
use outbox::OutboxAction;

mod dlq;
mod feed;
mod nodes;
mod outbox;

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
        Command::Broker => nodes::broker(config),
        Command::Namesrv { listen } => nodes::namesrv(config, listen),
        Command::Dlq { action } => dlq::run(config, action),
        Command::Outbox { action } => outbox::run(&config, action),
        Command::Feed { action } => feed::run(&config, action),
        Command::Token { name, role } => token(&name, &role),
    }
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
pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
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
