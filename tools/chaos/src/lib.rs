//! The fault-injection suite: `cargo run --release -p ordermq-chaos -- --scenario all --trials N`.
//!
//! ordermq promises that a paid order gets exactly one of each effect
//! whatever happens. This suite tries to break that promise on purpose and
//! counts how often it held: it runs the real `ordermq` binary (and, for
//! broker faults, `ordermq broker` as its own process), drives load, injects
//! a fault — `kill -9`, a broker outage, failing third parties, redelivery
//! from offset zero, a stampede on the last unit, hostile input — heals, waits
//! for every backlog to drain, and then reads every database directly
//! ([`checker`]) against the ledger of what clients were told ([`driver`]).
//!
//! # Layout
//! - [`process`]: spawning, killing and restarting the binaries; free ports.
//! - [`driver`]: HTTP load and the ledger of answers.
//! - [`checker`]: the invariants, from the databases, one step per family
//!   of rules.
//! - generated bad requests come from `ordermq_testkit::bad_request` (also
//!   used by the router's property test).
//! - [`scenarios`]: the [`Scenario`] list and its runner; each scenario's
//!   trial in a file of its own (`crash`, `broker`, `flaky`, `redelivery`,
//!   `stampede` for last-unit, `bad_input`, `flash_sale`, …; `topology`
//!   for the three faults of several processes per role).
//! - [`sale_check`]: the flash-sale scenario's rules, on facts read from
//!   the databases (so the self-test can plant faults in them).
//! - [`report`]: the table and the JSON.
//! - [`trial`]: one [`Trial`] — its directory, settings and processes, and
//!   the check at its end ([`Trial::finish`]); a trial of several order
//!   instances and the systems apart ([`Trial::with_topology`]).
//! - [`feed_check`]: `ordermq feed verify` after a trial that ran the
//!   change feed's sink (crash, broker outage): 0 differences, 0 gaps, 0
//!   reorderings.
//! - [`dead_letters`]: `ordermq dlq list` at the end of every trial: a
//!   message dead-lettered that the scenario did not doom on purpose is a
//!   violation, whether or not the databases show its effect missing.

pub mod checker;
pub mod dead_letters;
pub mod driver;
pub mod feed_check;
pub mod process;
pub mod report;
pub mod sale_check;
pub mod scenarios;
pub mod trial;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ordermq_store::DemoProduct;
use thiserror::Error;

pub use self::report::{Report, ScenarioResult};
pub use self::scenarios::Scenario;
pub use self::trial::{Trial, drained};

/// Why a trial could not be run (as opposed to an invariant breaking).
#[derive(Debug, Error)]
pub enum ChaosError {
    #[error("setup: {0}")]
    Setup(String),
    #[error("process: {0}")]
    Process(String),
}

/// The order database every trial's ordermq runs on.
#[derive(Debug, Clone, Default)]
pub enum Database {
    /// SQLite files in the trial's directory (ordermq's default).
    #[default]
    Sqlite,
    /// A database of the trial's own, created on this server (any database
    /// URL of it; the suite needs the right to create and drop databases)
    /// and dropped after the trial unless it is kept.
    Postgres {
        /// Where the trial's databases are created.
        server_url: String,
        /// Lets ordermq start on a server that would lose acknowledged
        /// commits in a crash of its own (`fsync = off`, as a test server
        /// runs): the suite kills ordermq, never that server.
        allow_unsafe_durability: bool,
    },
    /// A database of the trial's own on this MySQL or MariaDB server
    /// (`mysql://…`, the right to create and drop databases), dropped after
    /// the trial unless it is kept. The server must be durable
    /// (`innodb_flush_log_at_trx_commit = 1`): ordermq refuses one that is
    /// not, and the suite has no setting to allow it.
    Mysql {
        /// Where the trial's databases are created.
        server_url: String,
    },
}

impl Database {
    /// The backend's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres { .. } => "postgres",
            Self::Mysql { .. } => "mysql",
        }
    }
}

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `ordermq` binary to run.
    pub bin: PathBuf,
    /// The order database of every trial.
    pub database: Database,
    /// Trials per scenario.
    pub trials: usize,
    /// `kill -9`s per crash trial.
    pub crashes_per_trial: usize,
    /// How long the broker stays stopped in the broker-outage scenario
    /// (db-restart: a third of it, at least 3 s, for each outage).
    pub outage: Duration,
    /// SIGSTOPs of ordermq per pause trial.
    pub pauses_per_trial: usize,
    /// Power cuts per power-loss trial.
    pub power_cuts_per_trial: usize,
    /// Power-loss trials run the broker with `async` flush and the
    /// reconciler off: what the defaults protect against (losses expected).
    pub power_loss_unsafe: bool,
    /// Times the disk fills up per disk-full trial.
    pub disk_fills_per_trial: usize,
    /// Disk-full trials put the embedded broker's store on the full disk
    /// too (ordermq dies of it today: see the scenario).
    pub disk_full_embedded: bool,
    /// How long ordermq stays stopped at each pause (past the relay's
    /// 30 s lease by default).
    pub pause: Duration,
    /// How long load runs between faults.
    pub load_phase: Duration,
    /// How long to wait for every backlog to drain after healing.
    pub drain_timeout: Duration,
    /// Bad requests sent per bad-input trial.
    pub bad_requests: usize,
    /// Slow connections held open in the security trial.
    pub slow_connections: usize,
    /// How long shoppers buy in each of the security trial's two phases
    /// (alone, then beside the slow connections).
    pub slow_phase: Duration,
    /// Print progress to stderr.
    pub progress: bool,
    /// Keep each trial's directory (logs, databases) instead of deleting it.
    pub keep: bool,
}

impl Options {
    /// The long form (`--trials N` multiplies it).
    pub fn new(bin: PathBuf) -> Self {
        Self {
            bin,
            database: Database::Sqlite,
            trials: 1,
            crashes_per_trial: 20,
            outage: Duration::from_secs(30),
            pauses_per_trial: 3,
            power_cuts_per_trial: 5,
            power_loss_unsafe: false,
            disk_fills_per_trial: 3,
            disk_full_embedded: false,
            pause: Duration::from_secs(35),
            load_phase: Duration::from_secs(3),
            drain_timeout: Duration::from_secs(90),
            bad_requests: 500,
            slow_connections: 500,
            slow_phase: Duration::from_secs(20),
            progress: true,
            keep: false,
        }
    }

    /// The short form run by CI: 20 crashes, an 8 s broker outage, one
    /// 32 s pause, two power cuts, two disk fills, fewer bad
    /// requests, shorter shopping beside the slow connections.
    pub fn short(bin: PathBuf) -> Self {
        Self {
            outage: Duration::from_secs(8),
            pauses_per_trial: 1,
            power_cuts_per_trial: 2,
            disk_fills_per_trial: 2,
            pause: Duration::from_secs(32),
            load_phase: Duration::from_secs(2),
            bad_requests: 300,
            slow_phase: Duration::from_secs(6),
            progress: false,
            ..Self::new(bin)
        }
    }

    pub fn say(&self, text: impl AsRef<str>) {
        if self.progress {
            eprintln!("  {}", text.as_ref());
        }
    }
}

/// The payment secret every trial's ordermq uses.
pub const SECRET: &str = "chaos-secret";

/// The carrier's callback secret every trial's ordermq uses.
pub const CARRIER_SECRET: &str = "chaos-carrier-secret";

/// The key ordermq signs its calls to the providers with, and the
/// providers check (`gateways.*.keys`, `--keys`).
pub const PROVIDER_KEYS: &str = "chaos:chaos-provider-secret";

/// The providers' data directory inside a trial's: their call log and
/// idempotency keys (`calls.jsonl`), kept across their restarts and
/// ordermq's kills.
pub const PROVIDERS_DIR: &str = "providers";

/// Retries every second or two instead of RocketMQ's 10 s, 30 s, 1 m…: a trial
/// waits for retries to drain, and the schedule does not change what is tested.
pub const FAST_RETRY_DELAYS: &str = "1s 1s 1s 1s 1s 1s 1s 2s 2s 2s 2s 2s 2s 2s 2s 2s 2s 2s";

/// Start stock of the demo catalog, for the checker.
pub fn catalog_stock(extra: &[DemoProduct]) -> HashMap<String, i64> {
    ordermq::startup::DEMO_CATALOG
        .iter()
        .chain(extra)
        .map(|p| (p.sku.to_owned(), p.stock))
        .collect()
}

/// The `ordermq` binary next to this executable (`target/<profile>/ordermq`),
/// freshly built by cargo in the same profile when run by cargo (`cargo run`,
/// `cargo test`).
pub fn find_ordermq() -> Result<PathBuf, ChaosError> {
    let exe = std::env::current_exe()
        .map_err(|e| ChaosError::Setup(format!("cannot locate this executable: {e}")))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| ChaosError::Setup("this executable has no directory".into()))?;
    // A test binary lives in target/<profile>/deps; binaries one level up.
    let from_test = dir.ends_with("deps");
    if from_test {
        dir = dir.parent().unwrap_or(dir);
    }
    let sibling = dir.join(format!("ordermq{}", std::env::consts::EXE_SUFFIX));
    // Under `cargo run` only the chaos binary is built: build ordermq too, so
    // the suite never tests a stale binary.
    if let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) {
        let mut command = std::process::Command::new(cargo);
        // `cargo run` describes the running package in CARGO_PKG_* and friends;
        // build scripts that watch them would rebuild for nothing.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_",
            ]
            .iter()
            .any(|p| key.starts_with(p))
                || key == "LD_LIBRARY_PATH"
            {
                command.env_remove(key.as_ref());
            }
        }
        // From a test binary (`cargo test`), build what `cargo test
        // --workspace` builds, so the features match and the binary it
        // already built is reused; `-p ordermq` alone would unify features
        // differently and rebuild the whole dependency tree.
        let args: &[&str] = if from_test {
            &["build", "--workspace", "--all-targets"]
        } else {
            &[
                "build",
                "--bin",
                "ordermq",
                "-p",
                "ordermq",
                "--bin",
                "ordermq-fake-provider",
                "-p",
                "ordermq-fake-provider",
                "--bin",
                "ordermq-powercut",
                "-p",
                "ordermq-powercut",
                "--lib",
                "-p",
                "ordermq-clockshift",
            ]
        };
        command
            .args(args)
            .arg("--manifest-path")
            .arg(Path::new(&manifest).join("Cargo.toml"));
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        eprintln!(
            "chaos: cargo {}{} (so the suite never runs a stale binary)",
            args.join(" "),
            if cfg!(debug_assertions) {
                ""
            } else {
                " --release"
            }
        );
        let status = command
            .status()
            .map_err(|e| ChaosError::Setup(format!("cannot run cargo: {e}")))?;
        if !status.success() {
            return Err(ChaosError::Setup(format!(
                "`cargo {}` failed ({status})",
                args.join(" ")
            )));
        }
    }
    if sibling.exists() {
        Ok(sibling)
    } else {
        Err(ChaosError::Setup(format!(
            "no ordermq binary at {}: build it first with `cargo build --release --bin ordermq`, \
             or pass --ordermq PATH",
            sibling.display()
        )))
    }
}
