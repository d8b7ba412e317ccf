//! `chaos`: ordermq's fault-injection suite as one command.
//!
//! ```sh
//! cargo run --release -p ordermq-chaos -- --scenario all --trials 15 --json chaos.json
//! ```
//!
//! Runs the real `ordermq` binary under faults, prints a table, optionally
//! writes JSON, and exits 1 if any invariant broke (see the `ordermq_chaos` library).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ordermq_chaos::{Options, Report, Scenario, find_ordermq};

#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    about = "Fault-injection suite: runs ordermq under crashes, broker outages, flaky third parties, \
             redelivery, stock contention, bad input and attacks, then checks that nothing was lost or applied twice"
)]
struct Cli {
    /// `all`, or one scenario.
    #[arg(long, default_value = "all")]
    scenario: ScenarioArg,
    /// Trials per scenario (each crash trial kills ordermq --crashes times).
    #[arg(long, default_value_t = 1)]
    trials: usize,
    /// `kill -9`s per crash trial.
    #[arg(long, default_value_t = 20)]
    crashes: usize,
    /// Seconds the broker stays stopped in broker-outage.
    #[arg(long, default_value_t = 30)]
    outage_secs: u64,
    /// Bad requests per bad-input trial.
    #[arg(long, default_value_t = 500)]
    bad_requests: usize,
    /// Slow connections held open in the security scenario.
    #[arg(long, default_value_t = 500)]
    slow_connections: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The ordermq binary (default: next to this one, built by cargo under `cargo run`).
    #[arg(long)]
    ordermq: Option<PathBuf>,
    /// Keep every trial's directory (logs and databases); failed trials are always kept.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ScenarioArg {
    All,
    Crash,
    BrokerOutage,
    Flaky,
    Redelivery,
    LastUnit,
    BadInput,
    Security,
}

impl ScenarioArg {
    fn scenarios(self) -> Vec<Scenario> {
        match self {
            Self::All => Scenario::ALL.to_vec(),
            Self::Crash => vec![Scenario::Crash],
            Self::BrokerOutage => vec![Scenario::BrokerOutage],
            Self::Flaky => vec![Scenario::Flaky],
            Self::Redelivery => vec![Scenario::Redelivery],
            Self::LastUnit => vec![Scenario::LastUnit],
            Self::BadInput => vec![Scenario::BadInput],
            Self::Security => vec![Scenario::Security],
        }
    }
}

fn write_json(report: &Report, path: &std::path::Path) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(report).expect("report serializes");
    std::fs::write(path, json + "\n")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let bin = match cli.ordermq.clone().map(Ok).unwrap_or_else(find_ordermq) {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let options = Options {
        trials: cli.trials.max(1),
        crashes_per_trial: cli.crashes.max(1),
        outage: Duration::from_secs(cli.outage_secs),
        bad_requests: cli.bad_requests,
        slow_connections: cli.slow_connections,
        keep: cli.keep,
        ..Options::new(bin)
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chaos: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    eprintln!("chaos: {} with {}", command, options.bin.display());
    let json = cli.json.clone();
    let run = async {
        let mut report = Report {
            command,
            scenarios: Vec::new(),
        };
        for scenario in cli.scenario.scenarios() {
            eprintln!("chaos: {} ({} trial(s))", scenario.name(), options.trials);
            report.scenarios.push(scenario.run(&options).await);
            // Written after every scenario, so a long run that is cut short keeps its figures.
            if let Some(path) = &json {
                let _ = write_json(&report, path);
            }
        }
        report
    };
    // On Ctrl-C or SIGTERM the run is dropped: each trial's processes are
    // killed and its directory removed (their Drop does it).
    let report = runtime.block_on(async {
        tokio::select! {
            report = run => Some(report),
            _ = ordermq::startup::shutdown_signal() => None,
        }
    });
    let Some(report) = report else {
        eprintln!("chaos: interrupted; trial processes stopped");
        return ExitCode::from(130);
    };
    print!("\n{}", report.table());
    if let Some(path) = &cli.json {
        if let Err(e) = write_json(&report, path) {
            eprintln!("chaos: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("chaos: wrote {}", path.display());
    }
    if report.passed() {
        println!("\nall invariants held");
        ExitCode::SUCCESS
    } else {
        println!("\nINVARIANTS BROKEN (see above)");
        ExitCode::FAILURE
    }
}
