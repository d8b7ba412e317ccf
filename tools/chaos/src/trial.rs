//! One trial: its directory, ports, settings, processes and driver, and
//! the check at its end.
//!
//! A scenario is a sequence of steps on a [`Trial`]: start what it needs,
//! drive load, inject its fault, heal, then [`Trial::finish`], which stops
//! everything gracefully and hands the databases to the [`checker`]. The
//! processes themselves (start, stop, `kill -9` of ordermq, the broker, the
//! providers and the feed sink) are in `trial/processes.rs`; what the trial's
//! dead-letter queues hold is read by [`dead_letters`].
//!
//! [`checker`]: crate::checker
//! [`dead_letters`]: crate::dead_letters

mod clock;
mod power;
mod processes;
mod small_disk;
mod topology;

pub use clock::TAKES_EFFECT_WITHIN as CLOCK_TAKES_EFFECT_WITHIN;
pub use topology::{BROKERS, MqCluster, Node, NodeId, Topology};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordermq_store::{DemoProduct, Store, StoreOptions};
use ordermq_testkit::postgres::{PgServer, PgServerError};
use serde_json::Value;

use crate::checker::{self, Expectations, Verdict};
use crate::driver::{Answer, Driver};
use crate::process::{Ports, Proc};
use crate::{
    CARRIER_SECRET, ChaosError, Database, FAST_RETRY_DELAYS, Options, PROVIDER_KEYS, SECRET,
    dead_letters, feed_check,
};

/// One trial: a fresh data directory, fixed ports, the processes and a driver.
#[derive(Debug)]
pub struct Trial {
    /// The power-cut disk ordermq's data directory is on, in trials that
    /// cut the power ([`Trial::on_power_cut_disk`]). First: fields drop in
    /// order, and it unmounts before the directory under it goes.
    power: Option<power::PowerDisk>,
    /// The small disk ordermq's data directory is on, in trials that fill
    /// it ([`Trial::on_small_disk`]); first for the same reason.
    small: Option<small_disk::SmallDisk>,
    pub dir: tempfile::TempDir,
    pub ports: Ports,
    pub bin: PathBuf,
    /// Whether ordermq uses a separate `ordermq broker` process.
    pub external_broker: bool,
    /// Where that broker keeps its store, when not in ordermq's data
    /// directory (a disk of its own: another machine's).
    pub broker_data_dir: Option<PathBuf>,
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
    /// The trial's database on a PostgreSQL or MySQL server (server URL,
    /// name), when it has one.
    server_database: Option<(String, String)>,
    /// The PostgreSQL server of the trial's own, which it may stop, crash
    /// and start again ([`Trial::with_own_postgres`]).
    own_postgres: Option<Arc<PgServer>>,
    /// See [`Database::Postgres`].
    allow_unsafe_durability: bool,
    /// ordermq's wall clock, in trials that move it ([`Trial::fake_clock`]).
    clock: Option<clock::FakeClock>,
    /// Several order instances and the systems apart, in the topology
    /// trials ([`Trial::with_topology`]); `ordermq` above is then unused.
    topology: Option<Topology>,
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
        let server_database = match &options.database {
            Database::Sqlite => None,
            Database::Postgres { server_url, .. } | Database::Mysql { server_url } => {
                let name = format!("ordermq_chaos_{}_{}", ports.http, fastrand::u32(..));
                ordermq_testkit::databases::create(server_url, &name)
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
            server_database,
            own_postgres: None,
            power: None,
            small: None,
            broker_data_dir: None,
            clock: None,
            topology: None,
            allow_unsafe_durability: matches!(
                options.database,
                Database::Postgres {
                    allow_unsafe_durability: true,
                    ..
                }
            ),
        })
    }

    /// A trial of `options` on a PostgreSQL server of its own (`fsync` on,
    /// whatever `options.database` says), which the scenario may stop,
    /// crash and start again ([`Self::postgres_server`]). The server lives
    /// as long as the trial, and is kept with it on request.
    pub async fn with_own_postgres(
        options: &Options,
        external_broker: bool,
    ) -> Result<Self, ChaosError> {
        let server = tokio::task::spawn_blocking(|| PgServer::start(None))
            .await
            .map_err(|e| ChaosError::Setup(format!("starting PostgreSQL: {e}")))?
            .map_err(|e| {
                ChaosError::Setup(format!("cannot start the trial's PostgreSQL server: {e}"))
            })?;
        let options = Options {
            database: Database::Postgres {
                server_url: server.url("postgres"),
                allow_unsafe_durability: false,
            },
            ..options.clone()
        };
        let mut trial = Self::new(&options, external_broker).await?;
        trial.own_postgres = Some(Arc::new(server));
        Ok(trial)
    }

    /// Does `action` (`PgServer::stop`, `kill` or `resume`) to the trial's
    /// own PostgreSQL server, off the async workers; `what` names it in an
    /// error.
    pub async fn postgres_server(
        &self,
        what: &'static str,
        action: fn(&PgServer) -> Result<(), PgServerError>,
    ) -> Result<(), ChaosError> {
        let server = self.own_postgres.clone().ok_or_else(|| {
            ChaosError::Setup("the trial has no PostgreSQL server of its own".into())
        })?;
        tokio::task::spawn_blocking(move || action(&server))
            .await
            .map_err(|e| ChaosError::Process(format!("PostgreSQL {what}: {e}")))?
            .map_err(|e| ChaosError::Process(format!("PostgreSQL {what}: {e}")))
    }

    /// The order database's URL: the trial's PostgreSQL or MySQL
    /// database, or the SQLite file in its directory.
    pub fn database_url(&self) -> String {
        match &self.server_database {
            Some((server, name)) => ordermq_testkit::postgres::with_database(server, name)
                .unwrap_or_else(|_| server.clone()),
            None => format!("sqlite://{}", self.data_dir().join("orders.db").display()),
        }
    }

    /// ordermq's data directory: the trial's directory, or the mount of its
    /// power-cut or small disk.
    pub fn data_dir(&self) -> &Path {
        match (&self.power, &self.small) {
            (Some(disk), _) => &disk.mountpoint,
            (None, Some(disk)) => &disk.mountpoint,
            (None, None) => self.dir.path(),
        }
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
        if self.server_database.is_some() {
            env.insert("ORDERMQ_DATABASE_URL".into(), self.database_url());
            if self.allow_unsafe_durability {
                env.insert(
                    "ORDERMQ_DATABASE_ALLOW_UNSAFE_DURABILITY".into(),
                    "true".into(),
                );
            }
        }
        if let Some(addr) = self.cluster_namesrv_addr() {
            env.insert("ORDERMQ_NAMESRV_ADDR".into(), addr);
        } else if self.external_broker {
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
    /// In a topology, the order database only (the systems have their own).
    pub async fn open_store(&self) -> Result<Store, ChaosError> {
        let options = StoreOptions {
            databases: match self.topology {
                Some(_) => ordermq_store::Databases::Orders,
                None => ordermq_store::Databases::All,
            },
            ..StoreOptions::default()
        };
        Store::open(&self.database_url(), &options)
            .await
            .map_err(|e| ChaosError::Setup(format!("cannot open the trial's databases: {e}")))
    }

    /// `/api/stats`, if ordermq answers.
    pub async fn stats(&self) -> Option<Value> {
        match self.driver.get("/api/stats").await {
            Answer::Got(200, stats) => Some(stats),
            _ => None,
        }
    }

    /// Waits until the outbox is empty and every group has applied (or
    /// dead-lettered) every paid order's event ([`drained`]), then up to
    /// [`SETTLE_GRACE`] more for every consumer group to settle
    /// ([`groups_settled`]). Returns whether it drained.
    pub async fn wait_drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut counts_met_at: Option<Instant> = None;
        loop {
            if let Some(stats) = self.stats().await
                && drained(&stats)
            {
                if groups_settled(&stats) {
                    return true;
                }
                let since = *counts_met_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= SETTLE_GRACE {
                    eprintln!(
                        "    groups not settled {}s after the counts were met: {}",
                        SETTLE_GRACE.as_secs(),
                        stats["deliveries"]
                    );
                    return true;
                }
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
        // The dead-letter queues, read through the broker while it runs.
        let letters = if self.ordermq.is_some()
            || self.broker.is_some()
            || self.cluster_namesrv_addr().is_some()
        {
            Some(dead_letters::list(&self.bin, &self.env()).await)
        } else {
            None
        };
        let clean = self.stop_ordermq().await;
        if self.topology.is_some() {
            self.stop_topology().await;
            self.stop_mq_cluster().await;
        }
        self.stop_broker().await;
        let mut expect = expect.clone();
        if let Some(mut providers) = self.providers.take() {
            providers.terminate(Duration::from_secs(10)).await;
            expect.provider_calls = Some(self.provider_calls()?);
        }
        let store = self.open_store().await?;
        let ledger = self.driver.ledger.lock().expect("ledger").clone();
        let mut verdict = match &self.topology {
            None => checker::check(&store, &ledger, &expect).await,
            Some(topology) => {
                let own = self.open_system_stores().await?;
                let systems = own.iter().map(|(s, store)| (*s, store)).collect();
                let verdict = checker::check_apart(&store, &systems, &ledger, &expect).await;
                for store in own.into_values() {
                    store.close().await;
                }
                let mut verdict = verdict;
                for name in &topology.unclean_stops {
                    verdict
                        .violations
                        .push(format!("{name} did not stop within 30 s of SIGTERM"));
                }
                verdict
            }
        };
        store.close().await;
        if !clean {
            verdict
                .violations
                .push("ordermq did not stop within 30 s of SIGTERM".into());
        }
        match letters {
            Some(Ok(letters)) => {
                verdict
                    .figures
                    .push(format!("dead letters: {}", letters.len()));
                for violation in dead_letters::unexpected(&letters, &expect) {
                    verdict.violation(violation);
                }
            }
            Some(Err(e)) => verdict
                .violations
                .push(format!("cannot read the dead-letter queues: {e}")),
            None => verdict
                .figures
                .push("dead letters: not read (no broker running at the end)".into()),
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
    pub fn keep(mut self) -> String {
        let database = self.server_database.as_ref().map(|_| self.database_url());
        // A server of the trial's own is stopped, its data kept.
        let server = self
            .own_postgres
            .take()
            .and_then(|server| Arc::try_unwrap(server).ok())
            .map(PgServer::keep);
        self.kill_ordermq();
        self.kill_topology();
        self.kill_broker();
        self.kill_feed_sink();
        self.unmount_power_disk();
        if let Some(disk) = &self.small {
            // Its files go with the tmpfs: copied beside it first.
            let _ = std::process::Command::new("cp")
                .arg("-a")
                .arg(&disk.mountpoint)
                .arg(self.dir.path().join("data.kept"))
                .status();
        }
        self.unmount_small_disk();
        let dir = self.dir.keep();
        let mut kept = match database {
            Some(url) => format!("{} (database {url})", dir.display()),
            None => dir.display().to_string(),
        };
        if let Some(server) = server {
            kept.push_str(&format!(" (PostgreSQL data {})", server.display()));
        }
        kept
    }

    /// Drops the trial's PostgreSQL database (a trial not kept); a no-op on SQLite.
    pub async fn discard(mut self) {
        self.kill_feed_sink();
        self.kill_topology();
        self.drop_system_databases().await;
        if let Some((server, name)) = self.server_database.take() {
            self.kill_ordermq();
            self.kill_broker();
            if let Err(e) = ordermq_testkit::databases::drop(&server, &name).await {
                eprintln!("chaos: cannot drop the trial's database {name}: {e}");
            }
        }
        self.kill_ordermq();
        self.kill_broker();
        self.unmount_power_disk();
        self.unmount_small_disk();
        // A server of the trial's own goes with it (stopped, deleted).
        if let Some(server) = self.own_postgres.take() {
            let _ = tokio::task::spawn_blocking(move || drop(server)).await;
        }
    }
}

/// How long past [`drained`] a trial waits for every consumer group to
/// settle: the counts can be met while a refund still hops back, waiting
/// for its order's re-sent payment, and the check would come a second too
/// early. A bound, not a requirement: a group's `retries_owed` is the
/// process's own count (a hop sent by a process killed since is not in
/// it), and before `c5a63b5` it could stay above zero for good
/// (docs/reliability.md, "Defects found").
pub const SETTLE_GRACE: Duration = Duration::from_secs(20);

/// Whether `/api/stats` shows nothing left to deliver: the outbox empty,
/// and every group's inbox (or dead letters) holding at least one row per
/// paid order (refunded since or not) and one per refund, which every
/// group receives — less two per payment owed back: an order closed before
/// its payment came is REFUNDED without ever being paid (no event for the
/// groups, no reversal), and a second payment's refund reverses nothing.
/// A wait's bound, not a check: the checker counts exactly.
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
    let owed_back = stats["payments_refund_required"].as_i64().unwrap_or(0);
    let backlog = stats["outbox_backlog"].as_i64().unwrap_or(i64::MAX);
    let systems = stats["systems"].as_object();
    backlog == 0
        && systems.is_some_and(|systems| {
            systems.len() == 4
                && systems.values().all(|s| {
                    s["applied"].as_i64().unwrap_or(0) + s["failed"].as_i64().unwrap_or(0)
                        >= paid + refunds - 2 * owed_back
                })
        })
}

/// Whether every consumer group of the instance is settled in `/api/stats`:
/// nothing in a handler, no retry or wait for an earlier event owed back.
pub fn groups_settled(stats: &Value) -> bool {
    stats["deliveries"].as_object().is_some_and(|groups| {
        groups
            .values()
            .all(|g| g["in_flight"].as_u64() == Some(0) && g["retries_owed"].as_u64() == Some(0))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{drained, groups_settled};

    /// `/api/stats` of one paid order, every group done, `credit_group` as given.
    fn stats(credit: Value) -> Value {
        let done = json!({"applied": 1, "failed": 0});
        let settled = json!({"handled": 1, "retried": 0, "in_flight": 0, "retries_owed": 0});
        json!({
            "orders_by_status": {"PAID": 1},
            "refunds_by_status": {},
            "payments_refund_required": 0,
            "outbox_backlog": 0,
            "systems": {"credit": done, "marketing": done, "push": done, "warehouse": done},
            "deliveries": {
                "credit_group": credit,
                "marketing_group": settled,
            },
        })
    }

    #[test]
    fn a_group_owing_a_retry_or_holding_one_is_not_settled() {
        let settled = json!({"handled": 1, "retried": 0, "in_flight": 0, "retries_owed": 0});
        assert!(groups_settled(&stats(settled)));
        let owes = json!({"handled": 1, "retried": 1, "in_flight": 0, "retries_owed": 1});
        assert!(drained(&stats(owes.clone())), "the counts are met");
        assert!(!groups_settled(&stats(owes)));
        let holds = json!({"handled": 1, "retried": 0, "in_flight": 1, "retries_owed": 0});
        assert!(!groups_settled(&stats(holds)));
        // An ordermq that does not report its groups is never taken as settled.
        let mut silent = stats(json!({}));
        silent.as_object_mut().unwrap().remove("deliveries");
        assert!(!groups_settled(&silent));
    }

    #[test]
    fn an_order_whose_effect_is_missing_is_not_drained() {
        let settled = json!({"handled": 1, "retried": 0, "in_flight": 0, "retries_owed": 0});
        let mut short = stats(settled);
        short["systems"]["push"]["applied"] = json!(0);
        assert!(!drained(&short));
        short["systems"]["push"]["failed"] = json!(1);
        assert!(drained(&short), "dead-lettered counts as delivered");
        short["outbox_backlog"] = json!(1);
        assert!(!drained(&short));
    }
}
