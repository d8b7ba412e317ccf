//! ordermq on a RocketMQ cluster of separate processes: two NameServers
//! (`ordermq namesrv`) and two masters (`ordermq broker`, broker-a and
//! broker-b), spawned from the built binary; ordermq itself in-process
//! with `namesrv_addr` listing both NameServers.
//!
//! What it proves: the topics are created on both brokers; the relay's
//! sends land on both brokers' queues and every group consumes from both;
//! `kill -9` of broker-b under a steady load of orders and payments fails
//! the sends over to broker-a while every payment is still answered PAID;
//! once broker-b is back, what it held that the groups had not consumed yet
//! is consumed and sends reach it again; and every paid order gets exactly
//! one effect in each of the four systems (nothing lost, nothing doubled).
//!
//! It waits for what is owed, with bounds from the client's own timings
//! (`CIRCUIT_OPEN`, `REROUTE`): after a broker's death rocketmq-rust's
//! clients refuse to connect to it for 30 s, so the backlog it held is
//! consumed late, not lost, and sends reach it again only then. The test
//! prints how late. Once broker-b is back the load trickles (one payment
//! per shopper per `TRICKLE`) while it waits for the sends to reach
//! broker-b: at full speed that wait (up to 45 s) piled up more than the
//! slow warehouse consumes in the time the test gives it.
//!
//! Why processes: a `kill -9` of a broker inside the test's own process is
//! not possible, and a broker that dies without its destructors running is
//! the fault in question.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use ordermq_domain::System;
use ordermq_messaging::{GroupProgress, MqClient};
use ordermq_testkit::LocalApp;
use serde_json::Value;
use tokio::sync::Mutex;

const TOPIC: &str = "TopicOrderPaySuccess";
const CLUSTER: &str = "OrdermqIt";
/// Shoppers creating and paying orders at once, throughout.
const SHOPPERS: usize = 4;
/// How long a client refuses to connect to a broker after five failed
/// connections in a row: rocketmq-rust 1.0.0's transport circuit breaker
/// (`CircuitBreaker::default_breaker`, not configurable). Every consumer
/// trips it on broker-b when it dies, so none pulls from broker-b again
/// until up to this long after its return: its backlog is late by up to
/// this much, not lost.
const CIRCUIT_OPEN: Duration = Duration::from_secs(30);
/// How long after its client may connect to broker-b again the relay
/// sends there again at the latest: the publisher leaves a broker a send
/// failed on out for 10 s, and looks up the route every 5 s.
const REROUTE: Duration = Duration::from_secs(15);
/// Time for the groups to consume what they are owed once they can (the
/// warehouse is slow on purpose, and the machine may be loaded).
const SETTLE: Duration = Duration::from_secs(40);
/// After `SETTLE`, how long without any progress fails the test.
const STALLED: Duration = Duration::from_secs(15);
/// After `SETTLE`, the most extra time a slow but progressing machine gets.
const MAX_SLOW: Duration = Duration::from_secs(90);

/// A process spawned from the `ordermq` binary, killed if still running when dropped.
pub(crate) struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// `ordermq args` with `env` and none of the test's own `ORDERMQ_*`
    /// variables, its output appended to `log`.
    pub(crate) fn spawn(args: &[&str], env: &[(&str, String)], log: &Path) -> Self {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_ordermq"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("NO_COLOR", "1");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ORDERMQ_") {
                command.env_remove(&key);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        Self {
            child: command.spawn().expect("spawn ordermq"),
            log: log.to_path_buf(),
        }
    }

    /// Waits until the log has `line` (20 s at most), failing if the process exits.
    pub(crate) async fn wait_for_log(&mut self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(line) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{text}", self.log.display());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {line:?} within 20 s:\n{text}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for the exit (`within` at most, else `kill -9`
    /// and a panic).
    pub(crate) fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!(
                    "{} still running {within:?} after SIGTERM",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`: no shutdown code runs.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `ordermq broker` with its NameServer in the same process, its store in
/// `root/broker` and its output in `root/broker.log`, once it runs; and the
/// NameServer's address, for the processes that use it.
pub(crate) async fn one_broker(root: &Path) -> (Proc, String) {
    let ns_port = free_port();
    let mut broker = Proc::spawn(
        &["broker"],
        &[
            (
                "ORDERMQ_DATA_DIR",
                root.join("broker").display().to_string(),
            ),
            ("ORDERMQ_EMBEDDED_NAMESRV_PORT", ns_port.to_string()),
            (
                "ORDERMQ_EMBEDDED_BROKER_PORT",
                free_broker_port().to_string(),
            ),
        ],
        &root.join("broker.log"),
    );
    broker.wait_for_log("RocketMQ broker running").await;
    (broker, format!("127.0.0.1:{ns_port}"))
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A free port `p` with `p - 2` and `p + 1` free too (a broker's three listeners).
pub(crate) fn free_broker_port() -> u16 {
    for _ in 0..500 {
        let p = free_port();
        let free = |q: u16| TcpListener::bind(("127.0.0.1", q)).is_ok();
        if p > 1026 && p < u16::MAX && free(p - 2) && free(p + 1) {
            return p;
        }
    }
    panic!("no free broker port triple")
}

/// Two NameServers and two brokers, each its own process, under `dir`.
struct Cluster {
    dir: PathBuf,
    namesrv_addr: String,
    _namesrvs: Vec<Proc>,
    brokers: BTreeMap<&'static str, (u16, Option<Proc>)>,
}

impl Cluster {
    async fn start(dir: &Path) -> Self {
        let ns_ports = [free_port(), free_port()];
        let namesrv_addr = ns_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(";");
        let mut namesrvs = Vec::new();
        for port in ns_ports {
            let listen = format!("127.0.0.1:{port}");
            let mut proc = Proc::spawn(
                &["namesrv", "--listen", &listen],
                &[("ORDERMQ_DATA_DIR", dir.join("ns").display().to_string())],
                &dir.join(format!("namesrv-{port}.log")),
            );
            proc.wait_for_log("RocketMQ NameServer running").await;
            namesrvs.push(proc);
        }
        let mut cluster = Self {
            dir: dir.to_path_buf(),
            namesrv_addr,
            _namesrvs: namesrvs,
            brokers: BTreeMap::new(),
        };
        for name in ["broker-a", "broker-b"] {
            cluster.brokers.insert(name, (free_broker_port(), None));
            cluster.start_broker(name).await;
        }
        cluster
    }

    /// Starts (or restarts, on its port and store) broker `name`; returns
    /// once it has registered with both NameServers.
    async fn start_broker(&mut self, name: &'static str) {
        let port = self.brokers[name].0;
        let env = [
            (
                "ORDERMQ_DATA_DIR",
                self.dir.join(name).display().to_string(),
            ),
            ("ORDERMQ_BROKER_CLUSTER", CLUSTER.to_owned()),
            ("ORDERMQ_BROKER_NAME", name.to_owned()),
            ("ORDERMQ_EMBEDDED_BROKER_PORT", port.to_string()),
            ("ORDERMQ_BROKER_NAMESRV_ADDR", self.namesrv_addr.clone()),
        ];
        let log = self.dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let mut proc = Proc::spawn(&["broker"], &env, &log);
        proc.wait_for_log("broker registered").await;
        self.brokers.get_mut(name).expect("known broker").1 = Some(proc);
    }

    fn kill9(&mut self, name: &str) {
        if let Some(mut proc) = self.brokers.get_mut(name).and_then(|b| b.1.take()) {
            proc.kill9();
        }
    }
}

/// What the shoppers saw: every payment's answer and how long it took.
#[derive(Default)]
struct Seen {
    paid: Vec<String>,
    failures: Vec<String>,
    latencies: Vec<Duration>,
}

/// How fast the shoppers go: as fast as they can, one payment each per
/// `TRICKLE`, or not at all.
const FULL: u8 = 0;
const TRICKLING: u8 = 1;
const STOPPED: u8 = 2;
/// Each shopper's pause between payments once broker-b is back: enough
/// sends to see them reach broker-b again, without piling up a backlog the
/// slow warehouse needs minutes for while the load waits (up to
/// `CIRCUIT_OPEN + REROUTE`) for them to.
const TRICKLE: Duration = Duration::from_millis(500);

/// One shopper: creates an order and pays it, again and again, at `pace`.
async fn shop(app: Arc<LocalApp>, shopper: usize, pace: Arc<AtomicU8>, seen: Arc<Mutex<Seen>>) {
    let mut n = 0;
    loop {
        match pace.load(Ordering::Relaxed) {
            FULL => {}
            TRICKLING => tokio::time::sleep(TRICKLE).await,
            _ => break,
        }
        n += 1;
        let sku = ["SKU-1", "SKU-2", "SKU-4"][n % 3];
        let response =
            ordermq_testkit::create_order(&app, &format!("shopper-{shopper}"), &[(sku, 1)]).await;
        if response.status() != 201 {
            let failure = format!("create: {}", response.status());
            seen.lock().await.failures.push(failure);
            continue;
        }
        let body: Value = response.json().await.expect("order json");
        let id = body["order_id"].as_str().expect("order id").to_owned();
        let amount = body["amount"].as_i64().expect("amount");
        let started = Instant::now();
        let answer = app.notify(&id, &format!("pay-{shopper}-{n}"), amount).await;
        let took = started.elapsed();
        let mut seen = seen.lock().await;
        seen.latencies.push(took);
        match answer {
            Ok(r) if r.status() == 200 => seen.paid.push(id),
            Ok(r) => seen.failures.push(format!("pay {id}: {}", r.status())),
            Err(e) => seen.failures.push(format!("pay {id}: {e}")),
        }
    }
}

/// Each group's progress on `TOPIC`, per broker.
async fn progress(mq: &MqClient) -> BTreeMap<&'static str, BTreeMap<String, GroupProgress>> {
    let mut all = BTreeMap::new();
    for system in System::ALL {
        let group = system.consumer_group();
        let per_broker = mq
            .group_progress(group, TOPIC)
            .await
            .expect("consume stats");
        all.insert(group, per_broker);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_under_load_loses_nothing_and_its_backlog_is_consumed_when_it_returns() {
    // ORDERMQ_TEST_LOG (an env filter) shows the in-process ordermq's log.
    if let Ok(filter) = std::env::var("ORDERMQ_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("ordermq-cluster-")
        .tempdir()
        .expect("temp dir");
    let mut cluster = Cluster::start(dir.path()).await;
    eprintln!("cluster up after {:?}", started.elapsed());

    let namesrv_addr = cluster.namesrv_addr.clone();
    let app = Arc::new(
        LocalApp::start(|c| {
            ordermq_testkit::fast_third_parties(c);
            c.namesrv_addr = Some(namesrv_addr);
            c.topic_queues = 4;
            // The warehouse's carrier is slow and its group narrow, so it
            // holds a backlog on both brokers when one of them dies.
            c.logistics_latency = Duration::from_millis(150);
            c.consumer_concurrency = 2;
        })
        .await
        .expect("ordermq starts on the cluster"),
    );
    let mq = app.foreign_producer(None).await.expect("admin client");

    // The topic has its queues on both brokers.
    let route = mq.topic_route(TOPIC).await.expect("route");
    let brokers: Vec<&str> = route.iter().map(|q| q.broker.as_str()).collect();
    assert_eq!(brokers, ["broker-a", "broker-b"], "{route:?}");
    assert!(route.iter().all(|q| q.write_queues == 4), "{route:?}");

    // Orders and payments under way throughout.
    let pace = Arc::new(AtomicU8::new(FULL));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shoppers: Vec<_> = (0..SHOPPERS)
        .map(|i| {
            tokio::spawn(shop(
                Arc::clone(&app),
                i,
                Arc::clone(&pace),
                Arc::clone(&seen),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = progress(&mq).await;
    let paid_before = seen.lock().await.paid.len();
    eprintln!("before the kill ({paid_before} paid): {before:?}");
    for (group, per_broker) in &before {
        for broker in ["broker-a", "broker-b"] {
            let on = per_broker.get(broker).copied().unwrap_or_default();
            assert!(
                on.broker_offset > 0,
                "{group}: nothing sent to {broker} yet: {per_broker:?}"
            );
        }
    }
    let backlog_on_b = before["warehouse_group"]
        .get("broker-b")
        .map(GroupProgress::lag)
        .unwrap_or_default();

    cluster.kill9("broker-b");
    let kill_time = Instant::now();
    let killed_at = seen.lock().await.paid.len();
    eprintln!("broker-b killed (-9) with a warehouse backlog of {backlog_on_b} there");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = progress(&mq).await;
    let paid_during = seen.lock().await.paid.len() - killed_at;
    eprintln!("while broker-b is down ({paid_during} more paid): {during:?}");

    cluster.start_broker("broker-b").await;
    let returned_at = Instant::now();
    pace.store(TRICKLING, Ordering::Relaxed);
    let b_returned = progress(&mq).await["credit_group"]
        .get("broker-b")
        .copied()
        .unwrap_or_default();
    eprintln!("broker-b back, holding {b_returned:?} for credit_group");
    // The load goes on, trickling, until sends reach broker-b again: once
    // the relay's client may connect to it (CIRCUIT_OPEN) and the relay
    // tries it again (after REROUTE).
    let sends_back_by = returned_at + CIRCUIT_OPEN + REROUTE;
    let sends_back = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let b_now = progress(&mq).await["credit_group"]
            .get("broker-b")
            .copied()
            .unwrap_or_default();
        if b_now.broker_offset > b_returned.broker_offset {
            break returned_at.elapsed();
        }
        assert!(
            Instant::now() < sends_back_by,
            "no send went to broker-b within {:?} of its return: {b_returned:?} then {b_now:?}",
            CIRCUIT_OPEN + REROUTE
        );
    };
    eprintln!("sends reached broker-b again {sends_back:?} after its return");
    pace.store(STOPPED, Ordering::Relaxed);
    for shopper in shoppers {
        shopper.await.expect("shopper");
    }
    let load_ended = Instant::now();
    let seen = Arc::try_unwrap(seen)
        .ok()
        .expect("shoppers done")
        .into_inner();

    // Every payment was answered, through the outage too.
    assert!(seen.failures.is_empty(), "failures: {:?}", seen.failures);
    assert!(
        paid_during > 0,
        "no payment was answered while broker-b was down"
    );
    let mut latencies = seen.latencies.clone();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "{} payments answered PAID, 0 failed; p50 {:?}, p99 {:?}, max {:?}",
        seen.paid.len(),
        latencies[latencies.len() / 2],
        p99,
        latencies.last().copied().unwrap_or_default()
    );

    // The sends went to broker-a while broker-b was down.
    for (group, per_broker) in &during {
        let a_then = during[group].get("broker-a").copied().unwrap_or_default();
        let a_before = before[group].get("broker-a").copied().unwrap_or_default();
        assert!(
            a_then.broker_offset > a_before.broker_offset,
            "{group}: broker-a took nothing while broker-b was down: {per_broker:?}"
        );
    }

    // Every paid order: exactly one effect in each system, and nothing owed
    // on either broker, broker-b's backlog included.
    // What is owed, honestly: broker-b's backlog can be pulled only once
    // the clients connect to it again, at most CIRCUIT_OPEN after its
    // return (see there), and then it takes its consumption time (SETTLE).
    let reconnect_by = returned_at + CIRCUIT_OPEN;
    // Past that, a slow machine gets more time only while the groups
    // still make progress: a lost message makes none.
    let owed_by = load_ended.max(reconnect_by) + SETTLE;
    let mut next_report = Instant::now() + Duration::from_secs(5);
    let (mut fewest, mut last_progress) = (usize::MAX, Instant::now());
    loop {
        let mut missing = Vec::new();
        for system in System::ALL {
            let counts = app
                .store
                .effect_counts_by_order(system)
                .await
                .expect("effects");
            for id in &seen.paid {
                match counts.get(id).copied().unwrap_or(0) {
                    1 => {}
                    0 => missing.push(format!("{system:?} {id}")),
                    n => panic!("{system:?} applied {id} {n} times"),
                }
            }
        }
        let after = progress(&mq).await;
        let owed: Vec<String> = after
            .iter()
            .flat_map(|(group, per_broker)| {
                per_broker
                    .iter()
                    .filter(|(_, p)| p.lag() > 0)
                    .map(move |(broker, p)| format!("{group}@{broker}: {}", p.lag()))
            })
            .collect();
        let b_back = after
            .values()
            .all(|per_broker| per_broker.contains_key("broker-b"));
        if missing.is_empty() && owed.is_empty() && b_back {
            eprintln!("after: {after:?}");
            break;
        }
        if Instant::now() >= next_report && !missing.is_empty() {
            next_report += Duration::from_secs(5);
            eprintln!(
                "{:?} after the load: {} effects missing (e.g. {:?}), owed {owed:?}; {:?}",
                load_ended.elapsed(),
                missing.len(),
                missing.first(),
                app.deliveries.snapshot()
            );
        }
        let owed_count = missing.len() + owed.len();
        if owed_count < fewest {
            (fewest, last_progress) = (owed_count, Instant::now());
        }
        let now = Instant::now();
        let given_up =
            now >= owed_by + MAX_SLOW || (now >= owed_by && now >= last_progress + STALLED);
        if given_up {
            explain(&app, &mq, &missing).await;
        }
        assert!(
            !given_up,
            "not settled {:?} after the load ({:?} after broker-b's return): {} effects missing (e.g. {:?}), owed {owed:?}, broker-b listed: {b_back}",
            load_ended.elapsed(),
            returned_at.elapsed(),
            missing.len(),
            missing.first()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "all settled {:?} after the start: {:?} after the load ended, {:?} after broker-b's return ({:?} after its kill); {:?}",
        started.elapsed(),
        load_ended.elapsed(),
        returned_at.elapsed(),
        kill_time.elapsed(),
        app.deliveries.snapshot()
    );
    eprintln!("{}", outbox_summary(&app).await);
    for system in System::ALL {
        let group = system.consumer_group();
        let handled = app.deliveries.of(group).handled;
        eprintln!(
            "{group}: {handled} deliveries handled for {} paid orders ({} redelivered, absorbed by the inbox)",
            seen.paid.len(),
            handled.saturating_sub(seen.paid.len() as u64)
        );
    }

    mq.shutdown().await;
    Arc::try_unwrap(app)
        .expect("one owner")
        .stop()
        .await
        .expect("ordermq stops");
}

/// The outbox as the relay left it: rows not sent, and rows the broker
/// refused at least once (with the most attempts one took).
async fn outbox_summary(app: &LocalApp) -> String {
    let url = format!("sqlite://{}", app.data_dir().join("orders.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("orders.db");
    let unsent: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(&pool)
        .await
        .expect("unsent");
    let refused: (i64, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), MAX(attempts) FROM outbox WHERE attempts > 1")
            .fetch_one(&pool)
            .await
            .expect("refused");
    pool.close().await;
    format!(
        "outbox: {} unsent, {} refused at least once (most attempts {:?})",
        unsent.0, refused.0, refused.1
    )
}

/// An outbox row as `explain` shows it: id, tag, attempts, sent at, last
/// error, next attempt at, lease owner.
type OutboxRow = (
    i64,
    String,
    i64,
    Option<i64>,
    Option<String>,
    i64,
    Option<String>,
);

/// Prints where the missing effects' events are: their outbox rows, each
/// group's delivery counts and failures, and the groups' retry topics.
async fn explain(app: &LocalApp, mq: &MqClient, missing: &[String]) {
    let url = format!("sqlite://{}", app.data_dir().join("orders.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("orders.db");
    for m in missing.iter().take(12) {
        let order = m.split(' ').nth(1).unwrap_or_default();
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, tag, attempts, sent_at, last_error, next_attempt_at, lease_owner \
                 FROM outbox WHERE msg_key = ?",
        )
        .bind(order)
        .fetch_all(&pool)
        .await
        .expect("outbox rows");
        eprintln!("missing {m}: outbox {rows:?}");
    }
    eprintln!("deliveries: {:?}", app.deliveries.snapshot());
    eprintln!("{}", outbox_summary(app).await);
    for system in System::ALL {
        let failures = app.store.failures(system).await.expect("failures");
        eprintln!("{system:?} failures: {failures:?}");
        let group = system.consumer_group();
        let retry = mq
            .group_progress(group, &format!("%RETRY%{group}"))
            .await
            .map_err(|e| e.to_string());
        eprintln!("{group} on %RETRY%{group}: {retry:?}");
    }
}
