//! Peak shaving through the real embedded RocketMQ broker: a crowd's
//! admitted attempts become orders at the configured rate, those that would
//! wait past the cap are rejected with their units back, every admitted
//! attempt ends `CREATED` or `REJECTED`, and sale orders that close unpaid
//! give their units back to the sale.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ordermq_domain::{SaleId, now_millis};
use ordermq_testkit::LocalApp;
use reqwest::Method;
use serde_json::{Value, json};

use crate::lifecycle::wait_for_order;

const SKU: &str = "SKU-3";
const UNITS: usize = 30;
const RATE: u32 = 20;

async fn attempt_of(app: &LocalApp, id: &str) -> Value {
    let response = app
        .as_shop(Method::GET, &format!("/api/attempts/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Waits until the flash-sale group consumes: a one-unit sale's attempt
/// becomes an order. Right after start the group may not own its queues
/// yet (RocketMQ rebalances), and a crowd's attempts would wait past
/// `flash_sale_max_wait` for that, not for the pacing under test.
async fn warm_up(app: &LocalApp) {
    let start = now_millis() - 1_000;
    let response = app
        .as_operator(Method::POST, "/api/sales")
        .json(
            &json!({"sku": SKU, "units": 1, "start": start, "end": start + 600_000,
                      "per_user_limit": 1}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let sale: Value = response.json().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // An attempt rejected for waiting too long gives its unit back: try again.
    for n in 0.. {
        let answer = app
            .as_shop(
                Method::POST,
                &format!("/api/sales/{}/attempts", sale["sale_id"].as_str().unwrap()),
            )
            .json(&json!({"user_id": format!("warm{n}")}))
            .send()
            .await
            .unwrap();
        if answer.status() == 202 {
            let body: Value = answer.json().await.unwrap();
            let id = body["attempt_id"].as_str().unwrap();
            loop {
                let attempt = attempt_of(app, id).await;
                match attempt["state"].as_str() {
                    Some("CREATED") => return,
                    Some("REJECTED") => break,
                    _ => {}
                }
                assert!(
                    Instant::now() < deadline,
                    "the flash-sale group never consumed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the flash-sale group never consumed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crowd_becomes_orders_at_the_configured_rate_and_no_admitted_attempt_is_lost() {
    let app = LocalApp::start(|c| {
        ordermq_testkit::fast_third_parties(c);
        c.flash_sale_order_rate = RATE;
        c.flash_sale_max_wait = Duration::from_millis(1_000);
        c.flash_sale_order_close_after = Duration::from_secs(2);
    })
    .await
    .expect("ordermq starts");
    warm_up(&app).await;
    let start = now_millis() - 1_000;
    let response = app
        .as_operator(Method::POST, "/api/sales")
        .json(
            &json!({"sku": SKU, "units": UNITS, "start": start, "end": start + 600_000,
                      "per_user_limit": 1}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let sale: Value = response.json().await.unwrap();
    let sale_id = sale["sale_id"].as_str().unwrap().to_owned();

    // 50 shoppers at once for 30 units.
    let answers = join_all((0..50).map(|n| {
        app.as_shop(Method::POST, &format!("/api/sales/{sale_id}/attempts"))
            .json(&json!({"user_id": format!("crowd{n}")}))
            .send()
    }))
    .await;
    let mut queued = Vec::new();
    let mut sold_out = 0;
    for answer in answers {
        let answer = answer.unwrap();
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap();
        match status {
            202 => queued.push(body["attempt_id"].as_str().unwrap().to_owned()),
            409 if body["code"] == "SOLD_OUT" => sold_out += 1,
            _ => panic!("{status} {body}"),
        }
    }
    assert_eq!((queued.len(), sold_out), (UNITS, 50 - UNITS));

    // Every admitted attempt ends CREATED or REJECTED.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ended = Vec::new();
    for id in &queued {
        loop {
            let attempt = attempt_of(&app, id).await;
            if attempt["state"] != "QUEUED" {
                ended.push(attempt);
                break;
            }
            assert!(Instant::now() < deadline, "attempt {id} never ended");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let created: Vec<&Value> = ended.iter().filter(|a| a["state"] == "CREATED").collect();
    let rejected: Vec<&Value> = ended.iter().filter(|a| a["state"] == "REJECTED").collect();
    assert_eq!(created.len() + rejected.len(), UNITS);
    // At 20/s within 1 s: about 20 are created, the rest rejected (9 seen
    // on a 2-core machine running builds beside the test: the bound is
    // "paced, not stalled", the rate's ceiling is checked below).
    assert!(created.len() >= 5 && !rejected.is_empty(), "{ended:#?}");
    assert!(
        rejected.iter().all(|a| a["reason"] == "QUEUE_TIMEOUT"),
        "{rejected:#?}"
    );

    // The orders are ordinary UNPAID orders, created no faster than the rate.
    let mut made_at = Vec::new();
    for attempt in &created {
        let order = wait_for_order(
            &app,
            attempt["order_id"].as_str().unwrap(),
            Duration::from_secs(5),
            |_| true,
        )
        .await;
        assert_eq!(order["user_id"], attempt["user_id"]);
        made_at.push(order["created_at"].as_i64().unwrap());
    }
    made_at.sort_unstable();
    // Turns are 1/RATE apart, but an order's `created_at` is its commit: a
    // writer that stalls (a loaded machine) commits several turns in one
    // batch. What the database must not see is more than the rate: at most
    // RATE orders (and one at the window's edge) in any second.
    for (i, first) in made_at.iter().enumerate() {
        let within = made_at[i..]
            .iter()
            .take_while(|t| **t < first + 1_000)
            .count();
        assert!(
            within <= RATE as usize + 1,
            "{within} orders within a second of {first} (rate {RATE}/s): {made_at:?}"
        );
    }

    // One buyer pays; the other sale orders close unpaid and their units,
    // like the rejected ones', go back to the sale — none is stranded.
    let paid = created[0]["order_id"].as_str().unwrap();
    let order = wait_for_order(&app, paid, Duration::from_secs(1), |_| true).await;
    let amount = order["amount"].as_i64().unwrap();
    assert_eq!(
        app.notify(paid, "pay-flash-1", amount)
            .await
            .unwrap()
            .status(),
        200
    );
    let sale_id = SaleId::parse(&sale_id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = app.store.sale_counts(&sale_id).await.unwrap();
        assert_eq!(
            counts.unallocated + counts.leased + counts.held,
            counts.units,
            "{counts:?}"
        );
        if counts.held == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "units never came back: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let order = wait_for_order(&app, paid, Duration::from_secs(1), |_| true).await;
    assert_eq!(order["status"], "PAID");
    app.stop().await.unwrap();
}
