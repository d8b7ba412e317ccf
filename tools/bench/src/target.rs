//! What a benchmark drives: its own ordermq, started in-process on a fresh
//! temporary directory (the default), or one already running (`--url`).
//!
//! A remote ordermq is measured through its public API only: orders created
//! with `POST /api/orders` (the shop's token), paid through the signed
//! callback (key id, timestamp, HMAC), fan-out followed
//! on `GET /api/stats` (counted from where it stood when the run began, so
//! other traffic during the run makes the figures wrong; the operator's
//! token) and end-to-end times
//! read from each order's `consumers` on `GET /api/orders/{id}`.
//!
//! The in-process ordermq's orders are loaded straight into its store,
//! without the per-user limits (a thousand users hold far more unpaid
//! orders than a shopper may). A remote one creates them over HTTP, so it
//! must run with its limits off (`ORDERMQ_LIMITS_UNPAID_ORDERS_PER_USER=0`,
//! `ORDERMQ_LIMITS_UNITS_PER_SKU_PER_USER=0`,
//! `ORDERMQ_LIMITS_ORDERS_PER_MINUTE_PER_USER=0`,
//! `ORDERMQ_LIMITS_ORDERS_PER_SECOND_PER_TOKEN=0`), or creating the run's
//! orders stops at the first refusal, which names its code.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use ordermq_api::auth::{DEMO_OPERATOR_TOKEN, DEMO_SHOP_TOKEN};
use ordermq_api::signature::CallbackSigner;
use ordermq_domain::{OrderEvent, OrderId, System};
use ordermq_messaging::BrokerFlush;
use serde_json::{Value, json};

use super::{BENCH_PRICE, BenchResult, load, precreate_orders};
use ordermq_testkit::LocalApp;

/// Where the benchmark's ordermq runs.
#[derive(Debug, Clone, Default, Args)]
pub struct TargetArgs {
    /// Benchmark an ordermq already running at this base URL (e.g.
    /// http://10.0.0.5:8080) instead of starting one. Nothing else should
    /// use it during the run. Repeat it for several order instances of
    /// one deployment (one database, one broker): payments and creates go
    /// to each in turn; stats are read from the first.
    #[arg(long)]
    pub url: Vec<String>,
    /// The payment secret of the ordermq at --url (default: $ORDERMQ_PAYMENT_SECRET,
    /// else the development secret).
    #[arg(long)]
    pub payment_secret: Option<String>,
    /// A shop token of the ordermq at --url, to create orders (default:
    /// $ORDERMQ_BENCH_SHOP_TOKEN, else the demo token of a loopback ordermq).
    #[arg(long)]
    pub shop_token: Option<String>,
    /// An operator token of the ordermq at --url, to read /api/stats
    /// (default: $ORDERMQ_BENCH_OPERATOR_TOKEN, else the demo token).
    #[arg(long)]
    pub operator_token: Option<String>,
    /// Runs the in-process ordermq with this setting, e.g. `--set topic_queues=2`:
    /// any key of `ordermq config` except where it runs (addresses, ports,
    /// data_dir, database_url, secrets). Repeatable. The bench does not read
    /// ordermq.toml or ORDERMQ_* variables: runs stay comparable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// When the in-process ordermq's embedded broker answers a send: `sync`
    /// (once on disk, ordermq's default) or `async` (once in memory); the
    /// same as `--set embedded_broker_flush=...`. Every report states the
    /// mode it ran with.
    #[arg(long, value_name = "sync|async")]
    pub broker_flush: Option<BrokerFlush>,
    /// The database the in-process ordermq runs on: sqlite (files in the
    /// run's temporary directory), postgres (--database-url, else a
    /// throwaway server started from the Debian package in a temporary
    /// directory with fsync, synchronous_commit and full_page_writes on) or
    /// mysql (--database-url mysql://…, e.g. the durable MariaDB of
    /// scripts/start-mariadb.sh).
    #[arg(long, value_enum, default_value_t = Database::Sqlite)]
    pub database: Database,
    /// PostgreSQL (postgres://…) or MySQL/MariaDB (mysql://…) for the
    /// in-process ordermq; its tables are created there, and the
    /// yardsticks' own tables (ordermq_yardstick_*) for the length of the
    /// run.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Where the throwaway PostgreSQL server keeps its data (default: the
    /// system's temporary directory). Put it on the disk to be measured.
    #[arg(long)]
    pub postgres_dir: Option<std::path::PathBuf>,
}

/// Which database the in-process ordermq runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Database {
    /// SQLite files in the run's temporary directory (the default).
    #[default]
    Sqlite,
    /// PostgreSQL: `--database-url`, else a throwaway durable server.
    Postgres,
    /// MySQL or MariaDB: `--database-url mysql://…`.
    Mysql,
}

impl TargetArgs {
    /// The in-process ordermq's configuration: defaults, `--set` and `--broker-flush`.
    ///
    /// # Errors
    /// A malformed `--set`, a key the bench owns, or `--broker-flush` with
    /// `--url` or with `--set embedded_broker_flush`.
    pub fn local_config(&self) -> BenchResult<ordermq::Config> {
        let mut config = parse_settings(&self.settings)?;
        if let Some(flush) = self.broker_flush {
            if !self.url.is_empty() {
                return Err("--broker-flush sets the in-process ordermq's broker; with --url, configure that ordermq".into());
            }
            if self.settings.iter().any(|s| {
                s.split_once('=').is_some_and(|(key, _)| {
                    key.trim().eq_ignore_ascii_case("embedded_broker_flush")
                })
            }) {
                return Err("--broker-flush and --set embedded_broker_flush: give one".into());
            }
            config.embedded_broker_flush = flush;
        }
        Ok(config)
    }

    /// The broker's flush mode as the reports state it: RocketMQ's name
    /// (`SYNC_FLUSH`, `ASYNC_FLUSH`) for the in-process ordermq; with
    /// `--url`, that ordermq's own setting, which the bench cannot see.
    ///
    /// # Errors
    /// As [`TargetArgs::local_config`].
    pub fn broker_flush_label(&self) -> BenchResult<String> {
        if !self.url.is_empty() {
            return Ok("set by the ordermq at --url (not visible to the bench)".into());
        }
        Ok(self
            .local_config()?
            .embedded_broker_flush
            .rocketmq_name()
            .to_owned())
    }
}

/// Keys that place the in-process ordermq; the bench owns them.
const PLACEMENT_KEYS: &[&str] = &[
    "http_addr",
    "data_dir",
    "database_url",
    "namesrv_addr",
    "embedded_namesrv_port",
    "embedded_broker_port",
    "payment_secret",
    "logistics_secret",
    "payment_keys",
    "logistics_keys",
    "api_tokens",
    "operator_http_addr",
    "dev_mode",
];

/// Parses `--set KEY=VALUE` options into a configuration (defaults plus
/// them), with the same parsing and validation as `ordermq run`.
pub fn parse_settings(settings: &[String]) -> BenchResult<ordermq::Config> {
    let mut pairs = Vec::with_capacity(settings.len());
    for setting in settings {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("--set {setting:?}: expected KEY=VALUE"))?;
        let key = key.trim().to_ascii_lowercase();
        if PLACEMENT_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "--set {key}: the bench decides where its ordermq runs; use --url to measure another"
            ));
        }
        pairs.push((ordermq::config::env_var_of(&key), value.trim().to_owned()));
    }
    ordermq::Config::load_from(None, pairs).map_err(|e| format!("--set: {e}"))
}

/// `tuned` (the defaults and `--set`s of [`parse_settings`]) as the
/// in-process ordermq's configuration: `local` says where it runs (its
/// directory, ports, secrets and tokens), `database_url` on which database.
pub fn place(local: &mut ordermq::Config, tuned: ordermq::Config, database_url: Option<&str>) {
    *local = ordermq::Config {
        http_addr: local.http_addr,
        data_dir: local.data_dir.clone(),
        embedded_namesrv_port: local.embedded_namesrv_port,
        embedded_broker_port: local.embedded_broker_port,
        payment_secret: local.payment_secret.clone(),
        api_tokens: local.api_tokens.clone(),
        database_url: database_url.map(ordermq::config::DatabaseUrl::from),
        ..tuned
    };
}

/// Most payments the load generator has in flight at once, so most HTTP
/// connections it opens: a payment gateway sends through a bounded pool.
/// Unbounded, an overloaded step opened ~1,500 connections, and their buffers
/// on both ends (~180 KB each, client and server in this one process) stayed
/// in the peak RSS the benchmark reports. In flight at 7,000/s: ~80 at the
/// p50, ~350 at a 50 ms p99.
pub const MAX_CONNECTIONS: usize = 512;

static CONNECTIONS: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(MAX_CONNECTIONS));

/// A running ordermq under test.
#[derive(Debug)]
pub enum Target {
    Local(LocalApp),
    Remote(Remote),
}

/// An ordermq reached over HTTP only: one instance, or several of one
/// deployment taking requests in turn.
#[derive(Debug)]
pub struct Remote {
    /// The first instance: its products, stats and orders are the
    /// deployment's.
    base: String,
    /// Every instance, the first included.
    bases: Vec<String>,
    /// Which instance takes the next request.
    turn: std::sync::atomic::AtomicUsize,
    client: reqwest::Client,
    signer: CallbackSigner,
    /// Creates and reads orders.
    shop_token: String,
    /// Reads `/api/stats`.
    operator_token: String,
    sku: String,
    price: i64,
    /// Per-system applied counts when the run began.
    baseline: HashMap<System, i64>,
}

fn http(e: reqwest::Error) -> String {
    format!("HTTP: {e}")
}

impl Target {
    /// Connects to `args.url`, or starts a local ordermq configured by `adjust`.
    pub async fn start(
        args: &TargetArgs,
        adjust: impl FnOnce(&mut ordermq::Config),
    ) -> BenchResult<Self> {
        let Some(url) = args.url.first() else {
            let tuned = args.local_config()?;
            return Ok(Self::Local(
                LocalApp::start(|config| {
                    place(config, tuned, args.database_url.as_deref());
                    adjust(config);
                })
                .await
                .map_err(|e| e.to_string())?,
            ));
        };
        if !args.settings.is_empty() || args.broker_flush.is_some() || args.database_url.is_some() {
            return Err(
                "--set, --broker-flush and --database-url place and tune the in-process ordermq; with --url, configure that ordermq"
                    .into(),
            );
        }
        let base = url.trim_end_matches('/').to_owned();
        let bases = args
            .url
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(MAX_CONNECTIONS)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(http)?;
        let token = |given: &Option<String>, var: &str, demo: &str| {
            given
                .clone()
                .or_else(|| std::env::var(var).ok())
                .unwrap_or_else(|| demo.to_owned())
        };
        let shop_token = token(
            &args.shop_token,
            "ORDERMQ_BENCH_SHOP_TOKEN",
            DEMO_SHOP_TOKEN,
        );
        let operator_token = token(
            &args.operator_token,
            "ORDERMQ_BENCH_OPERATOR_TOKEN",
            DEMO_OPERATOR_TOKEN,
        );
        let products: Value = client
            .get(format!("{base}/api/products"))
            .bearer_auth(&shop_token)
            .send()
            .await
            .map_err(|e| format!("cannot reach ordermq at {base}: {e}"))?
            .json()
            .await
            .map_err(http)?;
        // The product with the most stock carries the benchmark's orders.
        let product = products
            .as_array()
            .and_then(|all| all.iter().max_by_key(|p| p["stock"].as_i64().unwrap_or(0)))
            .ok_or_else(|| format!("{base}/api/products lists no product"))?;
        let secret = args
            .payment_secret
            .clone()
            .or_else(|| std::env::var("ORDERMQ_PAYMENT_SECRET").ok())
            .unwrap_or_else(|| ordermq::config::DEV_PAYMENT_SECRET.to_owned());
        let mut remote = Remote {
            base,
            bases,
            turn: std::sync::atomic::AtomicUsize::new(0),
            client,
            signer: CallbackSigner::from_secret(secret.as_bytes()),
            shop_token,
            operator_token,
            sku: product["sku"].as_str().unwrap_or_default().to_owned(),
            price: product["price"].as_i64().unwrap_or(0),
            baseline: HashMap::new(),
        };
        remote.baseline = remote.applied_counts().await?;
        Ok(Self::Remote(remote))
    }

    /// What a benchmark order costs (the callback must name the amount).
    pub fn price(&self) -> i64 {
        match self {
            Self::Local(_) => BENCH_PRICE,
            Self::Remote(r) => r.price,
        }
    }

    /// Whether this is an ordermq this process started (its databases are readable).
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local(_))
    }

    /// Where yardsticks measure the disk: the local app's data directory, or
    /// (remote) a temporary directory on this machine.
    pub fn describe(&self) -> String {
        match self {
            Self::Local(_) => "in-process ordermq on a fresh temporary directory".into(),
            Self::Remote(r) if r.bases.len() > 1 => format!(
                "{} ordermq instances at {} (SKU {})",
                r.bases.len(),
                r.bases.join(", "),
                r.sku
            ),
            Self::Remote(r) => format!("ordermq at {} (SKU {})", r.base, r.sku),
        }
    }

    /// Creates `count` one-unit orders; creation is not what is measured.
    pub async fn create_orders(&self, count: usize, label: &str) -> BenchResult<Vec<OrderId>> {
        match self {
            Self::Local(app) => precreate_orders(&app.store, count, label).await,
            Self::Remote(r) => r.create_orders(count, label).await,
        }
    }

    /// Pays one order through the signed callback; true on a 2xx. At most
    /// [`MAX_CONNECTIONS`] payments are on the wire at once; the others wait
    /// for one to finish, and that wait counts in their latency (the load
    /// generator times each payment from when it was due).
    pub async fn pay(&self, id: &OrderId) -> bool {
        let Ok(_connection) = CONNECTIONS.acquire().await else {
            return false;
        };
        let id = id.as_str();
        let body =
            json!({"order_id": id, "payment_id": format!("pay-{id}"), "amount": self.price()})
                .to_string();
        let (client, url, signer) = match self {
            Self::Local(app) => (&app.client, app.url("/api/payments/notify"), &app.signer),
            Self::Remote(r) => (
                &r.client,
                format!("{}/api/payments/notify", r.next_base()),
                &r.signer,
            ),
        };
        let mut request = client.post(url).header("content-type", "application/json");
        for (name, value) in signer.sign(body.as_bytes()).pairs() {
            request = request.header(name, value);
        }
        matches!(
            request.body(body).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    /// How many payments of this run each system has applied.
    pub async fn applied(&self) -> BenchResult<HashMap<System, i64>> {
        match self {
            Self::Local(app) => {
                let stats = app.store.stats().await.map_err(|e| e.to_string())?;
                Ok(System::ALL
                    .into_iter()
                    .map(|s| (s, stats.systems.get(&s).map_or(0, |c| c.applied)))
                    .collect())
            }
            Self::Remote(r) => {
                let now = r.applied_counts().await?;
                Ok(System::ALL
                    .into_iter()
                    .map(|s| (s, now[&s] - r.baseline.get(&s).copied().unwrap_or(0)))
                    .collect())
            }
        }
    }

    /// The order writer's counters (`group_commit` of `/api/stats`): commits,
    /// operations, busy ms, slow commits and their ms since that ordermq started.
    pub async fn group_commit(&self) -> BenchResult<[u64; 5]> {
        match self {
            Self::Local(app) => local_group_commit(app).await,
            Self::Remote(r) => Ok(group_commit_of(&r.stats().await?)),
        }
    }

    /// Events committed but not yet handed to the broker.
    pub async fn outbox_backlog(&self) -> BenchResult<i64> {
        match self {
            Self::Local(app) => app.store.outbox_backlog().await.map_err(|e| e.to_string()),
            Self::Remote(r) => Ok(r.stats().await?["outbox_backlog"].as_i64().unwrap_or(0)),
        }
    }

    /// When each system applied each order's `OrderPaid` (epoch ms), handed
    /// to `each` one system at a time: for `orders` (a remote ordermq is asked
    /// order by order); locally, every order whose effect was applied from
    /// `since` (epoch ms) on, which the caller narrows to `orders`. One
    /// system's map at a time: all four at once (~400,000 strings after a
    /// 96,000-payment step) made the bench's own end-of-step computation the
    /// process's peak memory.
    pub async fn applied_times(
        &self,
        orders: &[OrderId],
        since: i64,
        mut each: impl FnMut(System, HashMap<String, i64>),
    ) -> BenchResult<()> {
        match self {
            Self::Local(app) => {
                for system in System::ALL {
                    let times = app
                        .store
                        .applied_times(system, since)
                        .await
                        .map_err(|e| e.to_string())?;
                    each(system, times);
                }
            }
            Self::Remote(r) => {
                let mut all = r.applied_times(orders).await?;
                for system in System::ALL {
                    each(system, all.remove(&system).unwrap_or_default());
                }
            }
        }
        Ok(())
    }

    /// Stops the local ordermq; a remote one is left running.
    pub async fn stop(self) -> BenchResult<()> {
        match self {
            Self::Local(app) => app.stop().await.map_err(|e| e.to_string()),
            Self::Remote(_) => Ok(()),
        }
    }

    /// The local app's data directory (yardsticks measure its disk).
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        match self {
            Self::Local(app) => Some(app.data_dir()),
            Self::Remote(_) => None,
        }
    }
}

/// Unwraps the target once the load tasks have dropped their handles.
pub fn into_inner(target: Arc<Target>) -> BenchResult<Target> {
    Arc::try_unwrap(target).map_err(|_| "benchmark tasks still hold the target".to_owned())
}

impl Remote {
    /// The instance whose turn it is (round robin).
    fn next_base(&self) -> &str {
        let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.bases[turn % self.bases.len()]
    }

    async fn stats(&self) -> BenchResult<Value> {
        self.client
            .get(format!("{}/api/stats", self.base))
            .bearer_auth(&self.operator_token)
            .send()
            .await
            .map_err(http)?
            .json()
            .await
            .map_err(http)
    }

    async fn applied_counts(&self) -> BenchResult<HashMap<System, i64>> {
        let stats = self.stats().await?;
        Ok(System::ALL
            .into_iter()
            .map(|s| {
                (
                    s,
                    stats["systems"][s.name()]["applied"].as_i64().unwrap_or(0),
                )
            })
            .collect())
    }

    async fn create_orders(&self, count: usize, label: &str) -> BenchResult<Vec<OrderId>> {
        let begun = Instant::now();
        let mut ids = Vec::with_capacity(count);
        let mut creates = futures_util::stream::iter(0..count)
            .map(|i| async move {
                let response = self
                    .client
                    .post(format!("{}/api/orders", self.next_base()))
                    .bearer_auth(&self.shop_token)
                    .json(&json!({"user_id": format!("bench-user-{}", i % 1_000),
                                  "items": [{"sku": self.sku, "quantity": 1}]}))
                    .send()
                    .await
                    .map_err(http)?;
                let status = response.status();
                let body: Value = response.json().await.map_err(http)?;
                if body["code"] == "OUT_OF_STOCK" {
                    return Err(format!(
                        "creating a benchmark order answered {status}: {body}; every step \
                         buys {} from the ordermq at --url, the product with the most stock: \
                         give it more (its on_hand) or start from a fresh deployment",
                        self.sku
                    ));
                }
                if !status.is_success() {
                    return Err(format!(
                        "creating a benchmark order answered {status}: {body}"
                    ));
                }
                OrderId::parse(body["order_id"].as_str().unwrap_or_default())
                    .map_err(|e| e.to_string())
            })
            .buffer_unordered(64);
        while let Some(created) = creates.next().await {
            ids.push(created?);
            if ids.len() % 100 == 0 || ids.len() == count {
                load::progress(label, ids.len(), count, ids.len() as u64, begun.elapsed());
            }
        }
        eprintln!();
        Ok(ids)
    }

    async fn applied_times(
        &self,
        orders: &[OrderId],
    ) -> BenchResult<HashMap<System, HashMap<String, i64>>> {
        let mut all: HashMap<System, HashMap<String, i64>> = HashMap::new();
        let mut reads = futures_util::stream::iter(orders)
            .map(|id| async move {
                let order: Value = self
                    .client
                    .get(format!("{}/api/orders/{id}", self.base))
                    .bearer_auth(&self.shop_token)
                    .send()
                    .await
                    .map_err(http)?
                    .json()
                    .await
                    .map_err(http)?;
                Ok::<_, String>((id, order))
            })
            .buffer_unordered(32);
        while let Some(read) = reads.next().await {
            let (id, order) = read?;
            let paid_event = OrderEvent::paid_event_id(id);
            for consumer in order["consumers"].as_array().into_iter().flatten() {
                let system = System::ALL
                    .into_iter()
                    .find(|s| consumer["group"] == s.consumer_group());
                if let (Some(system), Some(at)) = (system, consumer["applied_at"].as_i64())
                    && consumer["event_id"] == paid_event.as_str()
                {
                    all.entry(system).or_default().insert(id.to_string(), at);
                }
            }
        }
        Ok(all)
    }
}

/// [`Target::group_commit`] of an in-process ordermq.
pub(crate) async fn local_group_commit(app: &LocalApp) -> BenchResult<[u64; 5]> {
    let stats: Value = app
        .as_operator(reqwest::Method::GET, "/api/stats")
        .send()
        .await
        .map_err(http)?
        .json()
        .await
        .map_err(http)?;
    Ok(group_commit_of(&stats))
}

/// The `group_commit` counters of an `/api/stats` answer, in
/// [`Target::group_commit`]'s order (0 where one is missing).
fn group_commit_of(stats: &Value) -> [u64; 5] {
    let counter = |name: &str| stats["group_commit"][name].as_u64().unwrap_or(0);
    [
        counter("commits"),
        counter("operations"),
        counter("busy_ms"),
        counter("slow_commits"),
        counter("slow_commit_ms"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(settings: &[&str]) -> BenchResult<ordermq::Config> {
        parse_settings(&settings.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn settings_tune_the_in_process_ordermq() {
        let tuned = set(&["topic_queues=2", "RELAY_LINGER_MS = 25"]).unwrap();
        assert_eq!(tuned.topic_queues, 2);
        assert_eq!(tuned.relay_linger, Duration::from_millis(25));
        assert_eq!(
            tuned.write_batch_max,
            ordermq::Config::default().write_batch_max
        );
    }

    #[test]
    fn settings_that_place_it_or_do_not_parse_are_refused() {
        for (bad, why) in [
            ("database_url=postgres://x", "decides where"),
            ("data_dir=/tmp/x", "decides where"),
            ("topic_queues", "KEY=VALUE"),
            ("no_such_key=1", "no_such_key"),
            ("topic_queues=0", "topic_queues"),
            ("topic_queues=many", "topic_queues"),
        ] {
            let error = set(&[bad]).unwrap_err();
            assert!(
                error.to_lowercase().contains(&why.to_lowercase()),
                "{bad}: {error} should mention {why}"
            );
        }
    }

    #[test]
    fn the_broker_flush_is_chosen_once_and_only_for_the_in_process_ordermq() {
        let args = |settings: &[&str], flush, url: Option<&str>| TargetArgs {
            settings: settings.iter().map(|s| s.to_string()).collect(),
            broker_flush: flush,
            url: url.map(str::to_owned).into_iter().collect(),
            ..TargetArgs::default()
        };
        assert_eq!(
            args(&[], None, None).broker_flush_label().unwrap(),
            "SYNC_FLUSH"
        );
        let asked = args(&[], Some(BrokerFlush::Async), None);
        assert_eq!(asked.broker_flush_label().unwrap(), "ASYNC_FLUSH");
        assert_eq!(
            asked.local_config().unwrap().embedded_broker_flush,
            BrokerFlush::Async
        );
        let set = args(&["embedded_broker_flush=async"], None, None);
        assert_eq!(set.broker_flush_label().unwrap(), "ASYNC_FLUSH");
        let both = args(
            &["embedded_broker_flush=async"],
            Some(BrokerFlush::Sync),
            None,
        );
        assert!(both.local_config().is_err());
        let remote = args(&[], Some(BrokerFlush::Async), Some("http://x"));
        assert!(remote.local_config().is_err());
    }
}
