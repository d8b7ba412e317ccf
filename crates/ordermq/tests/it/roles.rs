//! The order service and the four downstream systems as five processes of
//! the built binary (`role = order`, `credit`, `marketing`, `push`,
//! `warehouse`), each with its own SQLite database, on one broker process
//! (`ordermq broker`, its NameServer in the same process).
//!
//! What it proves: the README's flow (create, pay) against the order
//! process gives PAID, and the order page shows all four groups done,
//! although the order process never opens a system's database (it learns
//! their progress from their receipts); each system's effects are in its
//! own database and nowhere else, and each system process answers its part
//! of a user's records (`GET /api/users/{id}`) while the order process
//! answers none; and a carrier's callback to the order process is checked
//! against the tracking number the warehouse's receipt carried (a wrong one
//! refused), moves the order to SHIPPED, and reaches the warehouse.
//!
//! Why processes: "no process reads another system's database" is a claim
//! about processes and files; in one process the store could still reach
//! every file.

use std::path::Path;
use std::time::{Duration, Instant};

use ordermq_api::auth::DEMO_SHOP_TOKEN;
use ordermq_api::signature::CallbackSigner;
use ordermq_domain::System;
use ordermq_store::{Databases, Store, StoreOptions};
use serde_json::{Value, json};

use crate::cluster::{Proc, free_port, one_broker};

const PAYMENT_SECRET: &str = "roles-test-secret";
const CARRIER_SECRET: &str = "roles-carrier-secret";
const EVENT_KEYS: &str = "roles:5f0c2a9e8b7d4c1f6a3e9d2b8c7f4a1e0d9c8b7a6f5e4d3c2b1a09f8e7d6c5b4";

/// The settings every ordermq process of the test shares.
fn common(namesrv_addr: &str, dir: &Path, http: u16) -> Vec<(&'static str, String)> {
    vec![
        ("ORDERMQ_NAMESRV_ADDR", namesrv_addr.to_owned()),
        ("ORDERMQ_DATA_DIR", dir.display().to_string()),
        ("ORDERMQ_HTTP_ADDR", format!("127.0.0.1:{http}")),
        ("ORDERMQ_PAYMENT_SECRET", PAYMENT_SECRET.to_owned()),
        ("ORDERMQ_LOGISTICS_SECRET", CARRIER_SECRET.to_owned()),
        // One event key for all five: each verifies what the others sign.
        ("ORDERMQ_EVENT_KEYS", EVENT_KEYS.to_owned()),
        ("ORDERMQ_SMS_LATENCY_MS", "2".to_owned()),
        ("ORDERMQ_SMS_SPIKE_PROBABILITY", "0".to_owned()),
        ("ORDERMQ_LOGISTICS_LATENCY_MS", "5".to_owned()),
        ("ORDERMQ_LOGISTICS_SPIKE_PROBABILITY", "0".to_owned()),
    ]
}

/// The carrier's signed callback to `base`: status and JSON body.
async fn carrier_notify(
    client: &reqwest::Client,
    base: &str,
    order_id: &str,
    tracking_no: &str,
    status: &str,
) -> (u16, Value) {
    let body =
        json!({"order_id": order_id, "tracking_no": tracking_no, "status": status}).to_string();
    let signer = CallbackSigner::from_secret(CARRIER_SECRET.as_bytes());
    let mut request = client
        .post(format!("{base}/api/logistics/notify"))
        .header("content-type", "application/json");
    for (name, value) in signer.sign(body.as_bytes()).pairs() {
        request = request.header(name, value);
    }
    let response = request.body(body).send().await.expect("carrier callback");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `GET url` with the shop's token: status and JSON body.
async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client
        .get(url)
        .bearer_auth(DEMO_SHOP_TOKEN)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_service_and_four_systems_as_processes_pay_and_fan_out_each_into_its_own_database()
 {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("ordermq-roles-")
        .tempdir()
        .expect("temp dir");
    let root = dir.path();

    // One broker, its NameServer in the same process.
    let (mut broker, namesrv_addr) = one_broker(root).await;

    let order_port = free_port();
    let mut env = common(&namesrv_addr, &root.join("order"), order_port);
    env.push(("ORDERMQ_ROLE", "order".to_owned()));
    let mut order = Proc::spawn(&["serve"], &env, &root.join("order.log"));
    order.wait_for_log("ordermq serving on").await;

    let mut systems = Vec::new();
    for system in System::ALL {
        let port = free_port();
        let mut env = common(&namesrv_addr, &root.join(system.name()), port);
        env.push(("ORDERMQ_ROLE", system.name().to_owned()));
        let mut proc = Proc::spawn(
            &["serve"],
            &env,
            &root.join(format!("{}.log", system.name())),
        );
        proc.wait_for_log("ordermq serving on").await;
        systems.push((system, port, proc));
    }
    eprintln!("5 processes and a broker up after {:?}", started.elapsed());

    // The README's flow, against the order process.
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{order_port}");
    let user = "roles-alice";
    let created: Value = client
        .post(format!("{base}/api/orders"))
        .bearer_auth(DEMO_SHOP_TOKEN)
        .json(&json!({"user_id": user, "items": [{"sku": "SKU-1", "quantity": 2}]}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("order json");
    let order_id = created["order_id"].as_str().expect("order id").to_owned();
    let amount = created["amount"].as_i64().expect("amount");
    let body =
        json!({"order_id": order_id, "payment_id": "roles-pay-1", "amount": amount}).to_string();
    let signer = CallbackSigner::from_secret(PAYMENT_SECRET.as_bytes());
    let mut request = client
        .post(format!("{base}/api/payments/notify"))
        .header("content-type", "application/json");
    for (name, value) in signer.sign(body.as_bytes()).pairs() {
        request = request.header(name, value);
    }
    let paid = request.body(body).send().await.expect("pay");
    assert_eq!(paid.status(), 200, "{:?}", paid.text().await);

    // The order page: PAID, and every group done, from the receipts.
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        let (status, page) = get(&client, &format!("{base}/api/orders/{order_id}")).await;
        assert_eq!(status, 200, "{page}");
        let done = System::ALL
            .iter()
            .all(|s| page["fanout"][s.name()] == "done");
        if page["status"] == "PAID" && done {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "not PAID with all four groups done within 60 s: {page:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "PAID and fanned out to four processes after {:?}: {}",
        started.elapsed(),
        page["fanout"]
    );
    for consumer in page["consumers"].as_array().expect("consumers") {
        if consumer["state"] == "done" {
            assert!(consumer["receipt_at"].is_i64(), "{consumer}");
        }
    }

    // Each system answers its own part of the user's records; the order
    // service answers none.
    let (status, activity) = get(&client, &format!("{base}/api/users/{user}")).await;
    assert_eq!(status, 200, "{activity}");
    assert_eq!(activity["systems"], json!([]), "{activity}");
    for (system, port, _) in &systems {
        let (status, activity) = get(
            &client,
            &format!("http://127.0.0.1:{port}/api/users/{user}"),
        )
        .await;
        assert_eq!(status, 200, "{system:?}: {activity}");
        assert_eq!(activity["systems"], json!([system.name()]), "{activity}");
        let held = |kind: &str| activity[kind].as_array().map_or(0, Vec::len);
        let counts = [
            held("points"),
            held("coupons"),
            held("sms"),
            held("shipments"),
        ];
        let own = System::ALL.iter().position(|s| s == system).expect("known");
        for (i, n) in counts.iter().enumerate() {
            assert_eq!(*n, usize::from(i == own), "{system:?}: {activity}");
        }
        // Nothing about orders is served there.
        let (status, _) = get(
            &client,
            &format!("http://127.0.0.1:{port}/api/orders/{order_id}"),
        )
        .await;
        assert_eq!(status, 404, "{system:?} serves the order page");
    }

    // The carrier calls the order process: its callback is checked against
    // the tracking number the warehouse's receipt carried (the order page
    // showed the warehouse done, so its receipt is in), moves the order,
    // and the warehouse process records the shipment's progress.
    let warehouse_port = systems
        .iter()
        .find(|(s, _, _)| *s == System::Warehouse)
        .map(|(_, port, _)| *port)
        .expect("warehouse process");
    let warehouse_url = format!("http://127.0.0.1:{warehouse_port}/api/users/{user}");
    let (_, activity) = get(&client, &warehouse_url).await;
    let tracking_no = activity["shipments"][0]["tracking_no"]
        .as_str()
        .expect("the warehouse's tracking number")
        .to_owned();
    let (status, refused) =
        carrier_notify(&client, &base, &order_id, "NOT-THE-PARCEL", "PICKED_UP").await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], "TRACKING_MISMATCH", "{refused}");
    let (status, receipt) =
        carrier_notify(&client, &base, &order_id, &tracking_no, "PICKED_UP").await;
    assert_eq!(status, 200, "{receipt}");
    let (_, page) = get(&client, &format!("{base}/api/orders/{order_id}")).await;
    assert_eq!(page["status"], "SHIPPED", "{page}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, activity) = get(&client, &warehouse_url).await;
        if activity["shipments"][0]["status"] == "PICKED_UP" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the warehouse did not record the pick-up within 30 s: {activity}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("carrier callback on the order process: SHIPPED, and PICKED_UP at the warehouse");

    // Stopped, the databases tell the same: each system's effects only in
    // its own file, and no process created another's.
    order.kill9();
    for (_, _, proc) in &mut systems {
        proc.kill9();
    }
    let files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("data dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".db"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(files(&root.join("order")), ["orders.db", "receipts.db"]);
    for system in System::ALL {
        let own = root.join(system.name());
        assert_eq!(files(&own), [format!("{}.db", system.name())]);
        let store = Store::open(
            &format!(
                "sqlite://{}",
                own.join(format!("{}.db", system.name())).display()
            ),
            &StoreOptions {
                lanes: false,
                databases: Databases::System(system),
                ..StoreOptions::default()
            },
        )
        .await
        .expect("the system's database opens");
        let effects = store.effect_counts_by_order(system).await.expect("effects");
        assert_eq!(effects.get(&order_id), Some(&1), "{system:?}: {effects:?}");
        assert_eq!(effects.len(), 1, "{system:?}: {effects:?}");
        store.close().await;
    }
    broker.kill9();
}
