//! Graceful drain: the order role as a process of the built binary under a
//! steady load of orders and payments, stopped with SIGTERM, then started
//! again on the same database and broker.
//!
//! What it proves: the process exits cleanly (status 0) within its drain
//! time; every payment it answered 200 is `PAID` in the order database and
//! its `OrderPaid` outbox row is marked sent (the relay finished its round
//! and recorded what the broker confirmed); after the restart nothing is
//! sent twice: the topic holds exactly one message per sent row.
//!
//! Why a process: SIGTERM and the exit are the process's; in-process the
//! test could only call the shutdown path, not the signal that starts it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ordermq_api::auth::DEMO_SHOP_TOKEN;
use ordermq_api::signature::CallbackSigner;
use ordermq_messaging::{DelayedDelivery, MqClient};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::cluster::{Proc, free_port, one_broker};

const PAYMENT_SECRET: &str = "drain-test-secret";
const TOPIC: &str = "TopicOrderPaySuccess";

/// What the shoppers saw: orders whose payment was answered 200, and every
/// other answer (expected only once the process stops taking work).
#[derive(Default)]
struct Seen {
    paid: Vec<String>,
    other: Vec<String>,
}

/// One shopper: creates an order and pays it on `base`, again and again,
/// until `stop` or until the process stops answering.
async fn shop(base: String, shopper: usize, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let client = reqwest::Client::new();
    let signer = CallbackSigner::from_secret(PAYMENT_SECRET.as_bytes());
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let created = client
            .post(format!("{base}/api/orders"))
            .bearer_auth(DEMO_SHOP_TOKEN)
            .json(&json!({"user_id": format!("drain-{shopper}"), "items": [{"sku": "SKU-1", "quantity": 1}]}))
            .send()
            .await;
        let Ok(created) = created else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if created.status() != 201 {
            seen.lock()
                .await
                .other
                .push(format!("create {}", created.status()));
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let order: Value = created.json().await.expect("order json");
        let id = order["order_id"].as_str().expect("order id").to_owned();
        let body = json!({"order_id": id, "payment_id": format!("drain-{shopper}-{n}"), "amount": order["amount"]})
            .to_string();
        let mut request = client
            .post(format!("{base}/api/payments/notify"))
            .header("content-type", "application/json");
        for (name, value) in signer.sign(body.as_bytes()).pairs() {
            request = request.header(name, value);
        }
        match request.body(body).send().await {
            Ok(r) if r.status() == 200 => seen.lock().await.paid.push(id),
            Ok(r) => seen
                .lock()
                .await
                .other
                .push(format!("pay {id}: {}", r.status())),
            Err(e) => seen.lock().await.other.push(format!("pay {id}: {e}")),
        }
    }
}

/// The order role's settings: its own data directory, the broker's NameServer.
fn order_env(namesrv_addr: &str, dir: &Path, http: u16) -> Vec<(&'static str, String)> {
    vec![
        ("ORDERMQ_ROLE", "order".to_owned()),
        ("ORDERMQ_NAMESRV_ADDR", namesrv_addr.to_owned()),
        ("ORDERMQ_DATA_DIR", dir.display().to_string()),
        ("ORDERMQ_HTTP_ADDR", format!("127.0.0.1:{http}")),
        ("ORDERMQ_PAYMENT_SECRET", PAYMENT_SECRET.to_owned()),
    ]
}

/// Messages the broker holds on `TOPIC` (the sum of its queues' offsets).
async fn messages_on_topic(mq: &MqClient) -> i64 {
    // From the broker's own queues: no group subscribes the topic here
    // (the systems are not started), so no group's progress would count it.
    mq.messages_stored(TOPIC)
        .await
        .expect("topic stats")
        .values()
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_every_answered_payment_and_a_restart_sends_nothing_twice() {
    let dir = tempfile::Builder::new()
        .prefix("ordermq-drain-")
        .tempdir()
        .expect("temp dir");
    let root = dir.path();
    let (mut broker, namesrv_addr) = one_broker(root).await;

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = order_env(&namesrv_addr, &root.join("order"), port);
    let log = root.join("order.log");
    let mut order = Proc::spawn(&["serve"], &env, &log);
    order.wait_for_log("ordermq serving on").await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shoppers: Vec<_> = (0..4)
        .map(|i| tokio::spawn(shop(base.clone(), i, Arc::clone(&stop), Arc::clone(&seen))))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let paid_at_sigterm = seen.lock().await.paid.len();
    let started = Instant::now();
    let status = order.terminate(Duration::from_secs(60));
    let drained_in = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for shopper in shoppers {
        shopper.await.expect("shopper");
    }
    let seen = Arc::try_unwrap(seen)
        .ok()
        .expect("shoppers done")
        .into_inner();
    eprintln!(
        "SIGTERM with {paid_at_sigterm} payments answered; exited {status} after {drained_in:?}; {} answered 200 in all",
        seen.paid.len()
    );
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(paid_at_sigterm > 0, "no payment before SIGTERM");

    // Every payment answered 200: PAID, its OrderPaid row marked sent.
    let url = format!(
        "sqlite://{}",
        root.join("order").join("orders.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.expect("orders.db");
    let mut unsent = Vec::new();
    for id in &seen.paid {
        let (status,): (String,) = sqlx::query_as("SELECT status FROM orders WHERE order_id = ?")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("order row");
        assert_eq!(status, "PAID", "{id}");
        let (sent,): (Option<i64>,) =
            sqlx::query_as("SELECT sent_at FROM outbox WHERE msg_key = ? AND tag = 'OrderPaid'")
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("OrderPaid row");
        if sent.is_none() {
            unsent.push(id.clone());
        }
    }
    assert!(
        unsent.is_empty(),
        "{} of {} answered payments have their OrderPaid row unsent after the drain (e.g. {:?})",
        unsent.len(),
        seen.paid.len(),
        unsent.first()
    );
    let (sent_rows,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM outbox WHERE topic = ? AND deliver_at IS NULL AND sent_at IS NOT NULL",
    )
    .bind(TOPIC)
    .fetch_one(&pool)
    .await
    .expect("sent rows");
    pool.close().await;

    // Started again on the same database: nothing is sent a second time.
    let mq = MqClient::connect(
        &namesrv_addr,
        "drain_check_producer",
        DelayedDelivery::default(),
    )
    .await
    .expect("admin client");
    let before = messages_on_topic(&mq).await;
    let mut order = Proc::spawn(&["serve"], &env, &log);
    order.wait_for_log("ordermq serving on").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = messages_on_topic(&mq).await;
    eprintln!(
        "{sent_rows} rows sent before the restart; the topic holds {before}, {after} after it"
    );
    assert_eq!(
        before, sent_rows,
        "the topic does not hold one message per sent row"
    );
    assert_eq!(after, before, "the restart sent something again");
    let status = order.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    mq.shutdown().await;
    broker.kill9();
}
