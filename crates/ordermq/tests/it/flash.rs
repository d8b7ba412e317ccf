//! Flash sales through the router (`oneshot`, the real services, SQLite, no
//! broker): a sale, attempts answered `QUEUED` or refused with their codes,
//! the attempt's state by polling and as server-sent events, and bad input
//! that changes nothing; and two instances sharing one PostgreSQL database.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ordermq_domain::{AttemptId, RejectReason, SaleId, now_millis};
use ordermq_store::{SaleCounts, WriteOp};
use ordermq_testkit::{OPERATOR_TOKEN, RouterHarness, SHOP_TOKEN, bearer};
use serde_json::{Value, json};
use tower::ServiceExt;

const SKU: &str = "SKU-3";

/// A sale of `units` of SKU-3, open for the next minute (or, with `later`,
/// from an hour from now), one unit a user.
async fn create_sale(harness: &RouterHarness, units: i64, later: bool) -> String {
    let start = now_millis() + if later { 3_600_000 } else { -1_000 };
    let (status, body) = harness
        .post_json(
            "/api/sales",
            json!({"sku": SKU, "units": units, "start": start, "end": start + 60_000,
                   "per_user_limit": 1})
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sale = body["sale_id"].as_str().unwrap().to_owned();
    if !later {
        // The instance that created an open sale leases its first units in
        // the background: wait for it, so that a test's "before" is settled.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while counts(harness, &sale).await.leased == 0 {
            assert!(std::time::Instant::now() < deadline, "no first lease");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    sale
}

async fn attempt(harness: &RouterHarness, sale: &str, body: Value) -> (StatusCode, Value) {
    harness
        .send(
            Request::post(format!("/api/sales/{sale}/attempts"))
                .header("content-type", "application/json")
                .header("authorization", bearer(SHOP_TOKEN))
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
}

async fn get(harness: &RouterHarness, path: &str) -> (StatusCode, Value) {
    harness
        .send(
            Request::get(path)
                .header("authorization", bearer(SHOP_TOKEN))
                .body(Body::empty())
                .unwrap(),
        )
        .await
}

async fn counts(harness: &RouterHarness, sale: &str) -> SaleCounts {
    harness
        .store
        .sale_counts(&SaleId::parse(sale).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_sale_admits_as_many_as_it_has_and_refuses_the_rest_with_their_codes() {
    let harness = RouterHarness::start().await;
    let stock_before = harness.store.products().await.unwrap();
    let sale = create_sale(&harness, 2, false).await;
    let stock_after = harness.store.products().await.unwrap();
    let available = |products: &[ordermq_domain::Product]| {
        products
            .iter()
            .find(|p| p.sku.as_str() == SKU)
            .unwrap()
            .stock
    };
    assert_eq!(available(&stock_after), available(&stock_before) - 2);

    let mut ids = Vec::new();
    for user in ["u1", "u2"] {
        let (status, body) = attempt(&harness, &sale, json!({"user_id": user})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["state"], "QUEUED", "{body}");
        ids.push(body["attempt_id"].as_str().unwrap().to_owned());
    }
    let (status, body) = attempt(&harness, &sale, json!({"user_id": "u3"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("SOLD_OUT")),
        "{body}"
    );
    let (status, body) = attempt(&harness, &sale, json!({"user_id": "u1"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("ALREADY_ATTEMPTED")),
        "{body}"
    );
    let (status, body) = get(&harness, &format!("/api/attempts/{}", ids[0])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["state"].as_str(), body["user_id"].as_str()),
        (Some("QUEUED"), Some("u1"))
    );

    let later = create_sale(&harness, 1, true).await;
    let (status, body) = attempt(&harness, &later, json!({"user_id": "u1"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("SALE_NOT_ACTIVE")),
        "{body}"
    );
    let c = counts(&harness, &sale).await;
    assert_eq!((c.queued, c.held), (2, 2), "{c:?}");

    // The operator's view: both sales, the latest start first, each with
    // its units, attempts and the refusals counted here.
    let read = |path: String, token: &'static str| {
        harness.send(
            Request::get(path)
                .header("authorization", bearer(token))
                .body(Body::empty())
                .unwrap(),
        )
    };
    let (status, listed) = read("/api/sales".into(), OPERATOR_TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let progress = |p: &Value| {
        json!([
            p["sale_id"],
            p["status"],
            p["units_left"],
            p["queued"],
            p["created"],
            p["rejected"],
            p["rejected_by_reason"],
            p["created_per_s"],
            p["refused_here"]
        ])
    };
    assert_eq!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(progress)
            .collect::<Vec<_>>(),
        [
            json!([later, "SCHEDULED", 1, 0, 0, 0, {}, 0.0, {"SALE_NOT_ACTIVE": 1}]),
            json!([sale, "RUNNING", 0, 2, 0, 0, {}, 0.0,
                   {"SOLD_OUT": 1, "ALREADY_ATTEMPTED": 1}]),
        ],
        "{listed}"
    );
    let (status, one) = read(format!("/api/sales/{sale}"), OPERATOR_TOKEN).await;
    assert_eq!((status, &one), (StatusCode::OK, &listed[1]));
    let (status, error) = read(format!("/api/sales/{sale}"), SHOP_TOKEN).await;
    assert_eq!(
        (status, &error["code"]),
        (StatusCode::FORBIDDEN, &json!("FORBIDDEN"))
    );
    let unknown = SaleId::generate(now_millis(), 7u64);
    let (status, error) = read(format!("/api/sales/{unknown}"), OPERATOR_TOKEN).await;
    assert_eq!(
        (status, &error["code"]),
        (StatusCode::NOT_FOUND, &json!("SALE_NOT_FOUND"))
    );
}

#[tokio::test]
async fn bad_sales_and_attempts_change_nothing() {
    let harness = RouterHarness::start().await;
    let sale = create_sale(&harness, 3, false).await;
    let before = (harness.state().await, counts(&harness, &sale).await);
    let now = now_millis();
    let bad_sales = [
        (
            json!({"sku": SKU, "units": 0, "start": now, "end": now + 1, "per_user_limit": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            json!({"sku": SKU, "units": 1, "start": now, "end": now, "per_user_limit": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            json!({"sku": SKU, "units": 1, "start": now, "end": now + 1, "per_user_limit": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            json!({"sku": "NOPE", "units": 1, "start": now, "end": now + 1, "per_user_limit": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNKNOWN_SKU",
        ),
        (
            json!({"sku": SKU, "units": 1_000_000, "start": now, "end": now + 1, "per_user_limit": 1}),
            StatusCode::CONFLICT,
            "OUT_OF_STOCK",
        ),
        (
            json!({"sku": SKU, "units": 1, "start": now, "end": now + 1, "per_user_limit": 1, "x": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
    ];
    for (body, status, code) in bad_sales {
        let (got, answer) = harness.post_json("/api/sales", body.to_string()).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    // A shop may not create a sale.
    let (status, _) = harness
        .send(
            Request::post("/api/sales")
                .header("content-type", "application/json")
                .header("authorization", bearer(SHOP_TOKEN))
                .body(Body::from(json!({"sku": SKU, "units": 1, "start": now, "end": now + 1, "per_user_limit": 1}).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let bad_attempts = [
        (
            sale.as_str(),
            json!({"user_id": "u1", "quantity": 2}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "SALE_LIMIT_EXCEEDED",
        ),
        (
            sale.as_str(),
            json!({"user_id": "u1", "quantity": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            sale.as_str(),
            json!({"user_id": "no spaces"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            sale.as_str(),
            json!({"user": "u1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            "S0000000000000ffff",
            json!({"user_id": "u1"}),
            StatusCode::NOT_FOUND,
            "SALE_NOT_FOUND",
        ),
        (
            "not%20an%20id",
            json!({"user_id": "u1"}),
            StatusCode::NOT_FOUND,
            "SALE_NOT_FOUND",
        ),
    ];
    for (sale, body, status, code) in bad_attempts {
        let (got, answer) = attempt(&harness, sale, body.clone()).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    let (status, body) = get(&harness, "/api/attempts/A00000000000000000000000000000").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ATTEMPT_NOT_FOUND"))
    );
    assert_eq!(
        (harness.state().await, counts(&harness, &sale).await),
        before
    );
}

#[tokio::test]
async fn the_attempts_stream_sends_its_state_and_ends_with_the_final_one() {
    let harness = RouterHarness::start().await;
    let sale = create_sale(&harness, 1, false).await;
    let (_, body) = attempt(&harness, &sale, json!({"user_id": "u1"})).await;
    let id = body["attempt_id"].as_str().unwrap().to_owned();
    let response = harness
        .router
        .clone()
        .oneshot(
            Request::get(format!("/api/attempts/{id}/events"))
                .header("authorization", bearer(SHOP_TOKEN))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let reading = tokio::spawn(axum::body::to_bytes(response.into_body(), 1 << 20));
    // The peak-shaving consumer turns the attempt away (as it would past its cap).
    let rejected = harness
        .store
        .write_batch(
            &[WriteOp::RejectAttempt {
                sale_id: SaleId::parse(&sale).unwrap(),
                attempt_id: AttemptId::parse(&id).unwrap(),
                reason: RejectReason::QueueTimeout,
            }],
            now_millis(),
        )
        .await;
    assert_eq!(rejected.len(), 1);
    let events = tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("the stream ends after the final state")
        .unwrap()
        .unwrap();
    let events = String::from_utf8(events.to_vec()).unwrap();
    let states: Vec<&str> = events
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| {
            let v: Value = serde_json::from_str(data).unwrap();
            if v["state"] == "QUEUED" {
                "QUEUED"
            } else {
                "REJECTED"
            }
        })
        .collect();
    assert_eq!(states, ["QUEUED", "REJECTED"], "{events}");
    assert!(events.contains("QUEUE_TIMEOUT"), "{events}");
    assert_eq!(
        counts(&harness, &sale).await.unallocated,
        1,
        "the unit went back"
    );
}

/// Two instances as two processes would be: their own PostgreSQL pools,
/// writers (four parallel writer tasks each) and budgets, one database.
/// Every unit sells, not one more, and a user gets one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgres_never_oversell() {
    use std::sync::Arc;

    use futures_util::future::join_all;
    use ordermq_domain::ports::FlashSaleService;
    use ordermq_domain::{AttemptRefusal, NewSale, Sku, UserId};
    use ordermq_service::{FlashSales, FlashSettings, OrderWriter};
    use ordermq_store::{Store, StoreOptions};

    const UNITS: usize = 53;
    let Ok(admin) = std::env::var("ORDERMQ_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test on PostgreSQL: set ORDERMQ_TEST_POSTGRES_URL"
        );
        eprintln!("skipping: ORDERMQ_TEST_POSTGRES_URL is not set");
        return;
    };
    let name = format!("ordermq_flash_{:016x}", fastrand::u64(..));
    let url = ordermq_testkit::postgres::create_database(&admin, &name)
        .await
        .unwrap();
    let mut instances = Vec::new();
    for owner in ["A", "B"] {
        let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
        let (writer, _task) = OrderWriter::spawn_parallel(store.clone(), 64, Duration::ZERO, 4);
        let flash = FlashSales::new(
            store.clone(),
            writer,
            Arc::new(tokio::sync::Notify::new()),
            FlashSettings {
                owner: owner.into(),
                chunk: 5,
                lease_ttl: Duration::from_secs(60),
                sold_out_recheck: Duration::from_millis(20),
            },
        );
        instances.push((store, flash));
    }
    let store = instances[0].0.clone();
    store
        .seed_catalog(ordermq::startup::DEMO_CATALOG)
        .await
        .unwrap();
    let now = now_millis();
    let sale_id = SaleId::generate(now, fastrand::u64(..));
    let sale = NewSale::new(
        Sku::parse(SKU).unwrap(),
        UNITS as i64,
        now - 1_000,
        now + 600_000,
        1,
    )
    .unwrap();
    store.create_sale(&sale, &sale_id, now).await.unwrap();
    // 400 shoppers, each trying on both instances at once.
    let mut tries = Vec::new();
    for n in 0..400 {
        let user = UserId::parse(&format!("pg{n}")).unwrap();
        for (_, flash) in &instances {
            tries.push(flash.attempt(sale_id.clone(), user.clone(), 1));
        }
    }
    let mut answers = join_all(tries).await;
    // What the crowd left in one instance's lease (its shoppers went to the
    // other) is sold to that instance's later shoppers.
    for wave in 0..40 {
        let counts = store.sale_counts(&sale_id).await.unwrap();
        assert_eq!(
            counts.unallocated + counts.leased + counts.held,
            UNITS as i64,
            "{counts:?}"
        );
        if counts.held == UNITS as i64 {
            break;
        }
        let mut late = Vec::new();
        for (i, (_, flash)) in instances.iter().enumerate() {
            let user = UserId::parse(&format!("late{wave}-{i}")).unwrap();
            late.push(flash.attempt(sale_id.clone(), user, 1));
        }
        answers.extend(join_all(late).await);
        // Past the sold-out answer each instance believes for 20 ms.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let admitted: Vec<_> = answers.iter().flatten().collect();
    assert_eq!(admitted.len(), UNITS, "{answers:?}");
    let mut users: Vec<_> = admitted.iter().map(|a| a.user_id.clone()).collect();
    users.sort_unstable();
    users.dedup();
    assert_eq!(users.len(), UNITS, "a user admitted twice");
    let odd: Vec<_> = answers
        .iter()
        .filter(|a| {
            !matches!(
                a,
                Ok(_) | Err(AttemptRefusal::SoldOut | AttemptRefusal::AlreadyAttempted)
            )
        })
        .collect();
    assert!(odd.is_empty(), "{odd:?}");
    let counts = store.sale_counts(&sale_id).await.unwrap();
    assert_eq!(
        (
            counts.queued,
            counts.held,
            counts.leased,
            counts.unallocated
        ),
        (UNITS as i64, UNITS as i64, 0, 0),
        "{counts:?}"
    );
    drop(instances);
    drop(store);
    ordermq_testkit::postgres::drop_database(&admin, &name)
        .await
        .unwrap();
}
