//! The `ordermq-fake-provider` binary: the fake third parties of
//! `docs/gateways.md` as a server of their own, for running ordermq with
//! `gateways.*.mode = "http"` on a laptop and for the fault suite, which
//! kills and restarts it.
//!
//! Thin on purpose: flags (or `FAKE_PROVIDER_*` variables) become
//! [`Options`]; the first line on stdout is the bound address (`port 0`
//! picks one, and a test or the fault suite reads it from there); Ctrl-C or
//! SIGTERM stops it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ordermq_fake_provider::{Knobs, Options, parse_keys, spawn};

#[derive(Debug, Parser)]
#[command(
    name = "ordermq-fake-provider",
    version,
    about = "Fake SMS gateway, logistics system and payment gateway speaking ordermq's provider protocol (docs/gateways.md)"
)]
struct Cli {
    /// Address to listen on (port 0: any free port). The bound address is the first line on stdout.
    #[arg(long, env = "FAKE_PROVIDER_LISTEN", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Directory of the call log and idempotency keys (calls.jsonl), kept across restarts.
    #[arg(
        long,
        env = "FAKE_PROVIDER_DATA_DIR",
        default_value = "./fake-provider-data"
    )]
    data_dir: PathBuf,
    /// Keys whose signatures are accepted: id:secret[,id:secret...] (ordermq's gateways.*.keys).
    #[arg(long, env = "FAKE_PROVIDER_KEYS", hide_env_values = true)]
    keys: String,
    /// How far a signed timestamp may be from this clock, in ms.
    #[arg(long, env = "FAKE_PROVIDER_FRESHNESS_MS", default_value_t = 300_000)]
    freshness_ms: u64,
    /// Latency of every call, in ms.
    #[arg(long, env = "FAKE_PROVIDER_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Uniform extra latency 0..=jitter, in ms.
    #[arg(long, env = "FAKE_PROVIDER_JITTER_MS", default_value_t = 0)]
    jitter_ms: u64,
    /// Probability that a call is answered 503 with no effect.
    #[arg(long, env = "FAKE_PROVIDER_FAILURE_RATE", default_value_t = 0.0, value_parser = probability)]
    failure_rate: f64,
    /// Probability that a call has its effect and then answers 503 (a lost answer).
    #[arg(long, env = "FAKE_PROVIDER_LOST_ANSWER_RATE", default_value_t = 0.0, value_parser = probability)]
    lost_answer_rate: f64,
    /// Probability that a call hangs for --hang-ms before going on.
    #[arg(long, env = "FAKE_PROVIDER_HANG_RATE", default_value_t = 0.0, value_parser = probability)]
    hang_rate: f64,
    /// How long a hanging call hangs, in ms.
    #[arg(long, env = "FAKE_PROVIDER_HANG_MS", default_value_t = 60_000)]
    hang_ms: u64,
}

fn probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a probability from 0 to 1")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let keys = match parse_keys(&cli.keys) {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("ordermq-fake-provider: --keys / FAKE_PROVIDER_KEYS: {e}");
            return ExitCode::from(2);
        }
    };
    let options = Options {
        listen: cli.listen,
        data_dir: cli.data_dir,
        keys,
        freshness: Duration::from_millis(cli.freshness_ms),
        knobs: Knobs {
            latency: Duration::from_millis(cli.latency_ms),
            jitter: Duration::from_millis(cli.jitter_ms),
            failure_rate: cli.failure_rate,
            lost_answer_rate: cli.lost_answer_rate,
            hang_rate: cli.hang_rate,
            hang: Duration::from_millis(cli.hang_ms),
        },
    };
    let (addr, handle) = match spawn(options).await {
        Ok(started) => started,
        Err(e) => {
            eprintln!("ordermq-fake-provider: {e}: {}", source_of(&e));
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{addr}");
    let _ = stdout.flush();
    eprintln!("ordermq-fake-provider: serving on http://{addr} (GET /calls for the call log)");
    shutdown_signal().await;
    match handle.stop().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordermq-fake-provider: {e}");
            ExitCode::FAILURE
        }
    }
}

fn source_of(e: &dyn std::error::Error) -> String {
    e.source().map(ToString::to_string).unwrap_or_default()
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
