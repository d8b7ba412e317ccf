//! The README's curl flow with `ORDERMQ_DATABASE_URL=mysql://…`: the whole
//! server on MariaDB (a fresh database on the server
//! `ORDERMQ_TEST_MYSQL_URL` names; skipped without it, required in CI, as
//! the store's tests are) and the real embedded broker. An order is
//! created, paid, and every consumer group applies it.

use std::time::Duration;

use ordermq::config::DatabaseUrl;
use ordermq_testkit::LocalApp;
use serde_json::Value;

use crate::lifecycle::wait_for_order;

/// A fresh database on the test server, as a URL; `None` when the server is
/// not configured outside CI.
async fn fresh_database() -> Option<String> {
    let Ok(admin_url) = std::env::var("ORDERMQ_TEST_MYSQL_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run ordermq on MariaDB: set ORDERMQ_TEST_MYSQL_URL"
        );
        eprintln!("skipping MariaDB: ORDERMQ_TEST_MYSQL_URL is not set");
        return None;
    };
    let name = format!("ordermq_app_{:016x}", fastrand::u64(..));
    let url = ordermq_testkit::databases::create(&admin_url, &name)
        .await
        .expect("a database of the test's own on the MariaDB server");
    Some(url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_paid_on_mariadb_reaches_every_group() {
    let Some(url) = fresh_database().await else {
        return;
    };
    let app = LocalApp::start(|c| {
        ordermq_testkit::fast_third_parties(c);
        c.database_url = Some(DatabaseUrl::from(url.as_str()));
    })
    .await
    .expect("ordermq starts on MariaDB");
    assert_eq!(app.store.backend(), ordermq_store::Backend::Mysql);

    let created = ordermq_testkit::create_order(&app, "u1", &[("SKU-1", 2)]).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let order = created["order_id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "UNPAID");
    assert_eq!(created["amount"], 17_800);

    let paid = app.notify(&order, "pay-1", 17_800).await.unwrap();
    assert_eq!(paid.status(), 200);
    let paid: Value = paid.json().await.unwrap();
    assert_eq!(paid["status"], "PAID");
    assert_eq!(paid["duplicate"], false);

    let done = wait_for_order(&app, &order, Duration::from_secs(30), |o| {
        ["credit", "marketing", "push", "warehouse"]
            .iter()
            .all(|group| o["fanout"][group] == "done")
    })
    .await;
    assert_eq!(done["status"], "PAID");
    let (status, user) = ordermq_testkit::get_json(&app, "/api/users/u1").await;
    assert_eq!(status, 200);
    assert_eq!(user["points_total"], 178, "{user}");
    for effect in ["coupons", "sms", "shipments"] {
        assert_eq!(user[effect].as_array().map(Vec::len), Some(1), "{user}");
    }
    app.stop().await.unwrap();
}
