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
use ordermq_chaos::{Database, Options, Report, Scenario, find_ordermq};
use ordermq_testkit::postgres::PgServer;

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
    /// `kill -9`s per crash trial (instance-crash and system-crash: a
    /// quarter of it, at least 2, per trial).
    #[arg(long, default_value_t = 20)]
    crashes: usize,
    /// Seconds the broker stays stopped in broker-outage (db-restart: a
    /// third of it, at least 3 s, for each of its two outages).
    #[arg(long, default_value_t = 30)]
    outage_secs: u64,
    /// SIGSTOPs of ordermq per pause trial.
    #[arg(long, default_value_t = 3)]
    pauses: usize,
    /// Seconds ordermq stays stopped at each pause (the relay's lease is 30 s).
    #[arg(long, default_value_t = 35)]
    pause_secs: u64,
    /// Power cuts per power-loss trial.
    #[arg(long, default_value_t = 5)]
    power_cuts: usize,
    /// Power-loss trials with the broker's flush `async` and the reconciler
    /// off: what the defaults protect against (losses expected, reported).
    #[arg(long)]
    power_loss_unsafe: bool,
    /// Times the disk fills up per disk-full trial.
    #[arg(long, default_value_t = 3)]
    disk_fills: usize,
    /// Disk-full trials with the embedded broker's store on the full disk
    /// too (ordermq dies of SIGBUS there today: a known defect, reported).
    #[arg(long)]
    disk_full_embedded: bool,
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
    /// The order database of every trial: `sqlite` (files in the trial's
    /// directory), `postgres` (a database of each trial's own on
    /// `--database-url`, else on a PostgreSQL server the run starts from the
    /// Debian package and stops at its end) or `mysql` (a database of each
    /// trial's own on the MySQL/MariaDB server of `--database-url mysql://…`,
    /// e.g. `scripts/start-mariadb.sh`'s). Scenarios that stop or crash the
    /// database server itself run on a PostgreSQL server of their own
    /// whatever this says.
    #[arg(long, value_enum, default_value_t = DatabaseArg::Sqlite)]
    database: DatabaseArg,
    /// The server for `--database postgres` or `mysql` (any database URL of
    /// it; the suite creates and drops a database per trial there).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Lets ordermq start on a `--database-url` server that would lose
    /// acknowledged commits if it crashed itself (`fsync = off`, as test
    /// servers run): the suite kills ordermq, not the database server.
    #[arg(long)]
    allow_unsafe_durability: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DatabaseArg {
    Sqlite,
    Postgres,
    Mysql,
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
    FlashSale,
    Pause,
    DbRestart,
    Poison,
    PowerLoss,
    DiskFull,
    Clock,
    InstanceCrash,
    SystemCrash,
    RollingRestart,
    BrokerFailover,
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
            Self::FlashSale => vec![Scenario::FlashSale],
            Self::Pause => vec![Scenario::Pause],
            Self::DbRestart => vec![Scenario::DbRestart],
            Self::Poison => vec![Scenario::Poison],
            Self::PowerLoss => vec![Scenario::PowerLoss],
            Self::DiskFull => vec![Scenario::DiskFull],
            Self::Clock => vec![Scenario::Clock],
            Self::InstanceCrash => vec![Scenario::InstanceCrash],
            Self::SystemCrash => vec![Scenario::SystemCrash],
            Self::RollingRestart => vec![Scenario::RollingRestart],
            Self::BrokerFailover => vec![Scenario::BrokerFailover],
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
    if cli.database_url.is_some() && cli.database == DatabaseArg::Sqlite {
        eprintln!("chaos: --database-url is for --database postgres or mysql");
        return ExitCode::from(2);
    }
    // The run's own server, when it needs one: lives until the run ends.
    let mut server = None;
    let database = match (cli.database, &cli.database_url) {
        (DatabaseArg::Sqlite, _) => Database::Sqlite,
        (DatabaseArg::Mysql, Some(url)) if url.starts_with("mysql://") => Database::Mysql {
            server_url: url.clone(),
        },
        (DatabaseArg::Mysql, _) => {
            eprintln!(
                "chaos: --database mysql needs --database-url mysql://user@host:port/db \
                 (e.g. the server of scripts/start-mariadb.sh)"
            );
            return ExitCode::from(2);
        }
        (DatabaseArg::Postgres, Some(url)) => Database::Postgres {
            server_url: url.clone(),
            allow_unsafe_durability: cli.allow_unsafe_durability,
        },
        (DatabaseArg::Postgres, None) => {
            eprintln!("chaos: starting a PostgreSQL server for the run (fsync=on)");
            match PgServer::start(None) {
                Ok(started) => {
                    let server_url = started.url("postgres");
                    server = Some(started);
                    Database::Postgres {
                        server_url,
                        allow_unsafe_durability: false,
                    }
                }
                Err(e) => {
                    eprintln!("chaos: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let options = Options {
        database,
        trials: cli.trials.max(1),
        crashes_per_trial: cli.crashes.max(1),
        outage: Duration::from_secs(cli.outage_secs),
        pauses_per_trial: cli.pauses.max(1),
        power_cuts_per_trial: cli.power_cuts.max(1),
        power_loss_unsafe: cli.power_loss_unsafe,
        disk_fills_per_trial: cli.disk_fills.max(1),
        disk_full_embedded: cli.disk_full_embedded,
        pause: Duration::from_secs(cli.pause_secs),
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
            database: options.database.name().to_owned(),
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
    drop(server);
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
