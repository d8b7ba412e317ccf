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
//!   `stampede` for last-unit, `bad_input`, `flash_sale`).
//! - [`sale_check`]: the flash-sale scenario's rules, on facts read from
//!   the databases (so the self-test can plant faults in them).
//! - [`report`]: the table and the JSON.
//! - [`feed_check`]: `ordermq feed verify` after a trial that ran the
//!   change feed's sink (crash, broker outage): 0 differences, 0 gaps, 0
//!   reorderings.

pub mod checker;
pub mod driver;
pub mod feed_check;
pub mod process;
pub mod report;
pub mod sale_check;
pub mod scenarios;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ordermq_store::{DemoProduct, Store, StoreOptions};
use serde_json::Value;
use thiserror::Error;

use self::checker::{Expectations, Verdict};
use self::driver::{Answer, Driver};
use self::process::{Ports, Proc};

pub use self::report::{Report, ScenarioResult};
pub use self::scenarios::Scenario;

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
}

impl Database {
    /// The backend's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres { .. } => "postgres",
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
    /// How long the broker stays stopped in the broker-outage scenario.
    pub outage: Duration,
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
            load_phase: Duration::from_secs(3),
            drain_timeout: Duration::from_secs(90),
            bad_requests: 500,
            slow_connections: 500,
            slow_phase: Duration::from_secs(20),
            progress: true,
            keep: false,
        }
    }

    /// The short form run by CI: 20 crashes, an 8 s broker outage, fewer bad
    /// requests, shorter shopping beside the slow connections.
    pub fn short(bin: PathBuf) -> Self {
        Self {
            outage: Duration::from_secs(8),
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

/// One trial: a fresh data directory, fixed ports, the processes and a driver.
#[derive(Debug)]
pub struct Trial {
    pub dir: tempfile::TempDir,
    pub ports: Ports,
    pub bin: PathBuf,
    /// Whether ordermq uses a separate `ordermq broker` process.
    pub external_broker: bool,
    /// `ORDERMQ_*` settings added to (or overriding) the defaults of a trial.
    pub overrides: HashMap<String, String>,
    pub ordermq: Option<Proc>,
    pub broker: Option<Proc>,
    /// The SMS gateway, logistics system and payment gateway as one
    /// `ordermq-fake-provider` process, once [`Trial::start_providers`]
    /// started it: ordermq then calls them over HTTP.
    pub providers: Option<Proc>,
    /// The providers' port, once started (ordermq's gateways point there).
    providers_port: Option<u16>,
    /// `ordermq feed sink`, in trials that run it.
    pub feed_sink: Option<Proc>,
    /// The trial runs the feed sink: `finish` runs `feed verify`.
    pub checks_feed: bool,
    pub driver: Driver,
    /// How many times ordermq was started.
    pub starts: usize,
    /// The trial's PostgreSQL database (server URL, name), when it has one.
    postgres: Option<(String, String)>,
    /// See [`Database::Postgres`].
    allow_unsafe_durability: bool,
}

impl Trial {
    /// A trial of `options` (its binary and database), ordermq on the
    /// embedded broker or, with `external_broker`, on `ordermq broker`.
    pub async fn new(options: &Options, external_broker: bool) -> Result<Self, ChaosError> {
        let dir = tempfile::Builder::new()
            .prefix("ordermq-chaos-")
            .tempdir()
            .map_err(|e| ChaosError::Setup(format!("cannot create a temp dir: {e}")))?;
        let ports = Ports::pick()?;
        let postgres = match &options.database {
            Database::Sqlite => None,
            Database::Postgres { server_url, .. } => {
                let name = format!("ordermq_chaos_{}_{}", ports.http, fastrand::u32(..));
                ordermq_testkit::postgres::create_database(server_url, &name)
                    .await
                    .map_err(|e| {
                        ChaosError::Setup(format!("cannot create the trial's database: {e}"))
                    })?;
                Some((server_url.clone(), name))
            }
        };
        Ok(Self {
            driver: Driver::new(ports.http, SECRET),
            dir,
            ports,
            bin: options.bin.clone(),
            external_broker,
            overrides: HashMap::new(),
            ordermq: None,
            broker: None,
            providers: None,
            providers_port: None,
            feed_sink: None,
            checks_feed: false,
            starts: 0,
            postgres,
            allow_unsafe_durability: matches!(
                options.database,
                Database::Postgres {
                    allow_unsafe_durability: true,
                    ..
                }
            ),
        })
    }

    /// The order database's URL: the trial's PostgreSQL database, or the
    /// SQLite file in its directory.
    pub fn database_url(&self) -> String {
        match &self.postgres {
            Some((server, name)) => ordermq_testkit::postgres::with_database(server, name)
                .unwrap_or_else(|_| server.clone()),
            None => format!("sqlite://{}", self.data_dir().join("orders.db").display()),
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("ordermq.log")
    }

    pub fn broker_log(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    /// Sets `ORDERMQ_<key>` for the next start.
    pub fn set(&mut self, key: &str, value: impl ToString) {
        self.overrides.insert(
            format!("ORDERMQ_{}", key.to_ascii_uppercase()),
            value.to_string(),
        );
    }

    /// The environment of every process of this trial.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: HashMap<String, String> = [
            ("HTTP_ADDR", format!("127.0.0.1:{}", self.ports.http)),
            ("DATA_DIR", self.data_dir().display().to_string()),
            ("EMBEDDED_NAMESRV_PORT", self.ports.namesrv.to_string()),
            ("EMBEDDED_BROKER_PORT", self.ports.broker.to_string()),
            ("PAYMENT_SECRET", SECRET.to_owned()),
            ("LOGISTICS_SECRET", CARRIER_SECRET.to_owned()),
            ("RETRY_DELAY_LEVELS", FAST_RETRY_DELAYS.to_owned()),
            // Fast third parties: the suite is about ordermq, not their latency.
            ("SMS_LATENCY_MS", "2".into()),
            ("SMS_JITTER_MS", "3".into()),
            ("SMS_SPIKE_PROBABILITY", "0".into()),
            ("LOGISTICS_LATENCY_MS", "3".into()),
            ("LOGISTICS_JITTER_MS", "5".into()),
            ("LOGISTICS_SPIKE_PROBABILITY", "0".into()),
            ("CONSUMER_CONCURRENCY", "8".into()),
            // The load's workers each create orders for one user as fast as
            // they can and pay only some: the per-user and rate limits would
            // refuse most of them. The suite is about faults, not limits.
            ("LIMITS_UNPAID_ORDERS_PER_USER", "0".into()),
            ("LIMITS_UNITS_PER_SKU_PER_USER", "0".into()),
            ("LIMITS_ORDERS_PER_MINUTE_PER_USER", "0".into()),
            ("LIMITS_ORDERS_PER_SECOND_PER_TOKEN", "0".into()),
            (
                "LOG",
                format!(
                    "{},ordermq_service::consumers::system=debug",
                    ordermq::Config::default().log
                ),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (format!("ORDERMQ_{k}"), v))
        .collect();
        if self.postgres.is_some() {
            env.insert("ORDERMQ_DATABASE_URL".into(), self.database_url());
            if self.allow_unsafe_durability {
                env.insert(
                    "ORDERMQ_DATABASE_ALLOW_UNSAFE_DURABILITY".into(),
                    "true".into(),
                );
            }
        }
        if self.external_broker {
            env.insert(
                "ORDERMQ_NAMESRV_ADDR".into(),
                format!("127.0.0.1:{}", self.ports.namesrv),
            );
        }
        if let Some(port) = self.providers_port {
            for gateway in ["SMS", "LOGISTICS", "PAYMENTS"] {
                for (key, value) in [
                    ("MODE", "http".to_owned()),
                    ("URL", format!("http://127.0.0.1:{port}")),
                    ("KEYS", PROVIDER_KEYS.to_owned()),
                ] {
                    env.insert(format!("ORDERMQ_GATEWAYS_{gateway}_{key}"), value);
                }
            }
        }
        env.extend(self.overrides.clone());
        let mut env: Vec<_> = env.into_iter().collect();
        env.sort();
        env
    }

    /// Sets products' stock before ordermq first starts (creating the tables).
    pub async fn seed(&self, products: &[DemoProduct]) -> Result<(), ChaosError> {
        let store = self.open_store().await?;
        for p in products {
            store
                .upsert_product(p)
                .await
                .map_err(|e| ChaosError::Setup(format!("cannot seed {}: {e}", p.sku)))?;
        }
        store.close().await;
        Ok(())
    }

    /// Opens the trial's databases (for a check once ordermq stopped).
    pub async fn open_store(&self) -> Result<Store, ChaosError> {
        Store::open(&self.database_url(), &StoreOptions::default())
            .await
            .map_err(|e| ChaosError::Setup(format!("cannot open the trial's databases: {e}")))
    }

    /// Starts `ordermq broker` and waits until its NameServer and broker listen.
    pub async fn start_broker(&mut self) -> Result<(), ChaosError> {
        let mut proc = Proc::spawn(
            "ordermq broker",
            &self.bin,
            &["broker"],
            &self.env(),
            &self.broker_log(),
        )?;
        process::wait_for_port(&mut proc, self.ports.namesrv, Duration::from_secs(60)).await?;
        process::wait_for_port(&mut proc, self.ports.broker, Duration::from_secs(60)).await?;
        self.broker = Some(proc);
        Ok(())
    }

    /// SIGTERM to the broker process; waits for it to exit.
    pub async fn stop_broker(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            broker.terminate(Duration::from_secs(20)).await;
        }
    }

    pub fn kill_broker(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            broker.kill9();
        }
    }

    /// The providers' directory: their call log and idempotency keys.
    pub fn providers_dir(&self) -> PathBuf {
        self.data_dir().join(PROVIDERS_DIR)
    }

    /// Starts `ordermq-fake-provider` (next to the `ordermq` binary) as
    /// the SMS gateway, logistics system and payment gateway, and has
    /// every later start of ordermq call it over HTTP. It is a process of
    /// its own: ordermq's `kill -9` leaves it, its keys and its call log
    /// alone.
    pub async fn start_providers(&mut self) -> Result<(), ChaosError> {
        let bin = self.bin.with_file_name(format!(
            "ordermq-fake-provider{}",
            std::env::consts::EXE_SUFFIX
        ));
        let port = match self.providers_port {
            Some(port) => port,
            None => process::free_port()?,
        };
        let dir = self.providers_dir().display().to_string();
        let listen = format!("127.0.0.1:{port}");
        let mut proc = Proc::spawn(
            "ordermq-fake-provider",
            &bin,
            &["--listen", &listen, "--data-dir", &dir],
            &[("FAKE_PROVIDER_KEYS".to_owned(), PROVIDER_KEYS.to_owned())],
            &self.dir.path().join("providers.log"),
        )?;
        process::wait_for_port(&mut proc, port, Duration::from_secs(30)).await?;
        self.providers = Some(proc);
        self.providers_port = Some(port);
        Ok(())
    }

    /// Every call the providers received, from their call log on disk.
    pub fn provider_calls(&self) -> Result<Vec<ordermq_fake_provider::CallRecord>, ChaosError> {
        let path = self
            .providers_dir()
            .join(ordermq_fake_provider::ledger::CALL_LOG);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ChaosError::Setup(format!("cannot read {}: {e}", path.display())))?;
        // A line cut short (a crash mid-write) never happened, as for the provider.
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }

    /// Starts ordermq without waiting for it (to kill it while it starts).
    pub fn spawn_ordermq(&mut self) -> Result<(), ChaosError> {
        self.ordermq = Some(Proc::spawn(
            "ordermq",
            &self.bin,
            &["serve"],
            &self.env(),
            &self.log(),
        )?);
        self.starts += 1;
        Ok(())
    }

    /// Starts ordermq and waits until it answers `/healthz`.
    pub async fn start_ordermq(&mut self) -> Result<(), ChaosError> {
        let mut proc = Proc::spawn("ordermq", &self.bin, &["serve"], &self.env(), &self.log())?;
        process::wait_for_health(
            &mut proc,
            &self.driver.client,
            self.ports.http,
            Duration::from_secs(90),
        )
        .await?;
        self.ordermq = Some(proc);
        self.starts += 1;
        Ok(())
    }

    /// Starts `ordermq feed sink` (the broker must be up); from now on
    /// `finish` checks the feed with `ordermq feed verify`. ordermq must
    /// have been started with `feed` on (it is off by default): a sink fed
    /// nothing would verify nothing.
    pub fn start_feed_sink(&mut self) -> Result<(), ChaosError> {
        if self.overrides.get("ORDERMQ_FEED").map(String::as_str) != Some("on") {
            return Err(ChaosError::Setup(
                "the feed sink needs ordermq started with feed on (trial.set(\"feed\", \"on\"))"
                    .into(),
            ));
        }
        self.feed_sink = Some(Proc::spawn(
            "ordermq feed sink",
            &self.bin,
            &["feed", "sink"],
            &self.env(),
            &self.dir.path().join("feed-sink.log"),
        )?);
        self.checks_feed = true;
        Ok(())
    }

    /// `kill -9` the feed sink.
    pub fn kill_feed_sink(&mut self) {
        if let Some(mut proc) = self.feed_sink.take() {
            proc.kill9();
        }
    }

    /// The sink is still running (not exited on its own).
    pub fn feed_sink_running(&mut self) -> bool {
        self.feed_sink.as_mut().is_some_and(Proc::is_running)
    }

    /// `kill -9` ordermq.
    pub fn kill_ordermq(&mut self) {
        if let Some(mut proc) = self.ordermq.take() {
            proc.kill9();
        }
    }

    /// Graceful stop (SIGTERM); `kill -9` after 30 s.
    pub async fn stop_ordermq(&mut self) -> bool {
        match self.ordermq.take() {
            Some(mut proc) => proc.terminate(Duration::from_secs(30)).await,
            None => true,
        }
    }

    /// `/api/stats`, if ordermq answers.
    pub async fn stats(&self) -> Option<Value> {
        match self.driver.get("/api/stats").await {
            Answer::Got(200, stats) => Some(stats),
            _ => None,
        }
    }

    /// Waits until the outbox is empty and every group has applied (or
    /// dead-lettered) every paid order's event. Returns whether it drained.
    pub async fn wait_drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(stats) = self.stats().await
                && drained(&stats)
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until no order is UNPAID (every close fired) or REFUNDING
    /// (every refund answered by the gateway). Returns whether that happened
    /// within `timeout`.
    pub async fn wait_settled(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(stats) = self.stats().await
                && ["UNPAID", "REFUNDING"]
                    .iter()
                    .all(|s| stats["orders_by_status"][s].as_i64().unwrap_or(0) == 0)
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops every process gracefully and checks the databases (and the
    /// providers' call log, when they ran as their own process).
    pub async fn finish(&mut self, expect: &Expectations) -> Result<Verdict, ChaosError> {
        // The feed first, while ordermq and the broker still run: the sink
        // may still be catching up.
        let feed = if self.checks_feed {
            let alive = self.feed_sink_running();
            let check =
                feed_check::verify_until_clean(&self.bin, &self.env(), Duration::from_secs(60))
                    .await?;
            if let Some(mut sink) = self.feed_sink.take() {
                sink.terminate(Duration::from_secs(20)).await;
            }
            Some((alive, check))
        } else {
            None
        };
        let clean = self.stop_ordermq().await;
        self.stop_broker().await;
        let mut expect = expect.clone();
        if let Some(mut providers) = self.providers.take() {
            providers.terminate(Duration::from_secs(10)).await;
            expect.provider_calls = Some(self.provider_calls()?);
        }
        let store = self.open_store().await?;
        let ledger = self.driver.ledger.lock().expect("ledger").clone();
        let mut verdict = checker::check(&store, &ledger, &expect).await;
        store.close().await;
        if !clean {
            verdict
                .violations
                .push("ordermq did not stop within 30 s of SIGTERM".into());
        }
        if let Some((alive, check)) = feed {
            verdict.figures.push(check.summary());
            if !alive {
                verdict
                    .violations
                    .push("ordermq feed sink exited on its own during the trial".into());
            }
            if !check.clean() {
                let detail: Vec<&str> = check.output.lines().take(10).collect();
                verdict.violations.push(format!(
                    "{} after 60 s:\n{}",
                    check.summary(),
                    detail.join("\n")
                ));
            }
        }
        Ok(verdict)
    }

    /// Keeps the trial's directory (logs, databases) and returns its path
    /// (and the PostgreSQL database's URL, when it has one).
    pub fn keep(self) -> String {
        let database = self.postgres.as_ref().map(|_| self.database_url());
        let dir = self.dir.keep();
        match database {
            Some(url) => format!("{} (database {url})", dir.display()),
            None => dir.display().to_string(),
        }
    }

    /// Drops the trial's PostgreSQL database (a trial not kept); a no-op on SQLite.
    pub async fn discard(mut self) {
        self.kill_feed_sink();
        if let Some((server, name)) = self.postgres.take() {
            self.kill_ordermq();
            self.kill_broker();
            if let Err(e) = ordermq_testkit::postgres::drop_database(&server, &name).await {
                eprintln!("chaos: cannot drop the trial's database {name}: {e}");
            }
        }
    }
}

/// Whether `/api/stats` shows nothing left to deliver: the outbox empty,
/// and every group's inbox (or dead letters) holding at least one row per
/// paid order (refunded since or not) and one per refund, which every
/// group receives.
pub fn drained(stats: &Value) -> bool {
    let count = |map: &Value, keys: &[&str]| -> i64 {
        keys.iter().map(|k| map[k].as_i64().unwrap_or(0)).sum()
    };
    let paid = count(
        &stats["orders_by_status"],
        &["PAID", "SHIPPED", "DELIVERED", "REFUNDING", "REFUNDED"],
    );
    let refunds: i64 = stats["refunds_by_status"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_i64).sum())
        .unwrap_or(0);
    let backlog = stats["outbox_backlog"].as_i64().unwrap_or(i64::MAX);
    let systems = stats["systems"].as_object();
    backlog == 0
        && systems.is_some_and(|systems| {
            systems.len() == 4
                && systems.values().all(|s| {
                    s["applied"].as_i64().unwrap_or(0) + s["failed"].as_i64().unwrap_or(0)
                        >= paid + refunds
                })
        })
}

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
