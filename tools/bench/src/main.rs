//! `ordermq-bench`: measures ordermq on this machine. Each scenario starts its
//! own ordermq in-process on a temporary directory (or drives one elsewhere
//! with `--url`), prints a table and writes JSON + HTML reports.
//!
//! ```text
//! cargo run --release -p ordermq-bench -- capacity
//! cargo run --release -p ordermq-bench -- seed
//! cargo run --release -p ordermq-bench -- broker
//! cargo run --release -p ordermq-bench -- feed
//! ```

use std::process::ExitCode;

use clap::Parser;
use ordermq::logging::QUIET_NAMESRV_SELF_CONNECT;
use ordermq_bench::Scenario;
use tracing_subscriber::EnvFilter;

// The server's allocator, so the figures (CPU per payment, peak RSS) are the server's.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "ordermq-bench",
    version,
    about = "Measure ordermq on this machine (starts its own instance on a temp dir); \
             prints a table and writes JSON + HTML reports"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Errors only, so the progress lines stay readable; ORDERMQ_LOG (same
    // syntax as RUST_LOG) shows more, e.g. `warn` for slow-commit warnings.
    let filter = std::env::var("ORDERMQ_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("error,{QUIET_NAMESRV_SELF_CONNECT}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ordermq-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(ordermq_bench::run(cli.scenario));
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordermq-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
