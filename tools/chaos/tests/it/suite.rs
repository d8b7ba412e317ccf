//! The fault suite's short forms, against the debug `ordermq` binary: each
//! scenario must inject its faults and end with nothing lost, nothing applied
//! twice, nothing oversold, and every backlog drained.
//!
//! Short forms: one trial each; 20 `kill -9`s for crash and for the
//! flash sale; the broker outage is 8 s instead of the long form's 30 s;
//! 300 bad requests; 6 s of shopping beside the 500 slow connections
//! instead of 20 s; the crash and flash-sale scenarios once more on
//! PostgreSQL (`ORDERMQ_TEST_POSTGRES_URL`, required in CI); db-restart on
//! a PostgreSQL server of its own, stopped and crashed for 3 s each; two
//! power cuts (ordermq's data directory on the power-cut filesystem); two
//! disk fills of 6 s (ordermq's data directory on a small tmpfs); one
//! clock trial (ordermq's wall clock stepped 75 s ahead and back); the
//! topology faults on the tests' PostgreSQL server (three order instances,
//! the systems apart): 5 kills of an order instance, 5 of a system's
//! instance, each of two brokers killed for 3 s, and one rolling restart
//! of all eleven processes.
//! Together about twenty minutes on two cores. Scenarios run one at a time (they start
//! processes and brokers of their own, and share two cores).
//!
//! The last test shows the checker is not blind: it is given databases with
//! planted faults and must report each of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use ordermq_chaos::checker::{Expectations, check, check_apart};
use ordermq_chaos::driver::{Ledger, OrderRecord};
use ordermq_chaos::{Database, Options, Scenario, ScenarioResult, find_ordermq};
use ordermq_domain::{
    Amount, Effect, IdempotencyKey, NewOrder, OrderId, OrderLine, PaymentId, PaymentNotice,
    Quantity, RefundId, RefundRequest, Sku, System, UserId,
};
use ordermq_store::{
    CloseOutcome, Databases, DemoProduct, Store, StoreOptions, WriteOp, WriteResult,
};
use sqlx::Connection as _;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(scenario: Scenario) -> ScenarioResult {
    run_on(scenario, Database::Sqlite)
}

/// The PostgreSQL server of the tests (`ORDERMQ_TEST_POSTGRES_URL`); CI
/// must have one (`CI` set), elsewhere its tests are skipped with a message.
fn postgres() -> Option<Database> {
    let Ok(server_url) = std::env::var("ORDERMQ_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the fault suite on PostgreSQL too: set ORDERMQ_TEST_POSTGRES_URL"
        );
        eprintln!("skipping PostgreSQL: ORDERMQ_TEST_POSTGRES_URL is not set");
        return None;
    };
    // The tests' server runs with fsync off; the suite kills ordermq, not it.
    Some(Database::Postgres {
        server_url,
        allow_unsafe_durability: true,
    })
}

/// The MariaDB server of the tests (`ORDERMQ_TEST_MYSQL_URL`, durable:
/// `scripts/start-mariadb.sh`); CI must have one, elsewhere its tests are
/// skipped with a message.
fn mariadb() -> Option<Database> {
    let Ok(server_url) = std::env::var("ORDERMQ_TEST_MYSQL_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the topology faults on MariaDB too: set ORDERMQ_TEST_MYSQL_URL"
        );
        eprintln!("skipping MariaDB: ORDERMQ_TEST_MYSQL_URL is not set");
        return None;
    };
    Some(Database::Mysql { server_url })
}

fn run_on(scenario: Scenario, database: Database) -> ScenarioResult {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let options = Options {
        progress: true,
        database,
        ..Options::short(find_ordermq().expect("the ordermq binary"))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(scenario.run(&options));
    assert!(
        result.passed,
        "{}: invariants broken:\n{}\nkept: {:?}",
        result.name,
        result.violations.join("\n"),
        result.kept
    );
    assert_eq!(
        (
            result.lost,
            result.doubled,
            result.oversold,
            result.phantom,
            result.undrained
        ),
        (0, 0, 0, 0, 0),
        "{}",
        result.name
    );
    assert!(result.orders > 0 && result.acknowledged > 0, "{result:?}");
    result
}

#[test]
fn crash_twenty_kills_lose_and_double_nothing() {
    let result = run(Scenario::Crash);
    assert!(result.faults >= 20, "{} kills", result.faults);
}

#[test]
fn crash_on_postgres_twenty_kills_lose_and_double_nothing() {
    let Some(database) = postgres() else { return };
    let result = run_on(Scenario::Crash, database);
    assert!(result.faults >= 20, "{} kills", result.faults);
}

#[test]
fn broker_outage_payments_go_on_and_everything_is_delivered_after() {
    let result = run(Scenario::BrokerOutage);
    assert_eq!(result.faults, 2, "one stop and one kill -9 of the broker");
}

#[test]
fn flaky_third_parties_apply_exactly_once_and_the_dlq_replays_once() {
    let result = run(Scenario::Flaky);
    // Failed calls under 30 % failures, plus the five dead-lettered orders.
    assert!(result.faults > 5, "{} faults", result.faults);
}

#[test]
fn redelivery_from_offset_zero_and_double_payments_change_nothing() {
    let result = run(Scenario::Redelivery);
    assert_eq!(
        result.refunds_flagged, 10,
        "every second payment is owed back"
    );
}

#[test]
fn last_unit_goes_to_exactly_one_buyer() {
    let result = run(Scenario::LastUnit);
    // One order for LAST-1 and five for LAST-5, out of 128 contenders.
    assert_eq!((result.orders, result.paid), (6, 6));
}

#[test]
fn flash_sale_under_kills_sells_each_unit_once_and_ends_every_attempt() {
    let result = run(Scenario::FlashSale);
    assert!(result.faults >= 20, "{} kills", result.faults);
    // The sale's own rules (every QUEUED attempt ended, the books balance,
    // nothing stuck in a lease) are violations when broken: `run` saw none.
    assert!(result.paid <= 60, "{} paid of 60 units", result.paid);
}

#[test]
fn flash_sale_on_postgres_under_kills_sells_each_unit_once() {
    let Some(database) = postgres() else { return };
    let result = run_on(Scenario::FlashSale, database);
    assert!(result.faults >= 20, "{} kills", result.faults);
}

#[test]
fn pause_past_the_relay_lease_loses_and_doubles_nothing() {
    let result = run(Scenario::Pause);
    assert!(result.faults >= 1, "{} pauses", result.faults);
}

#[test]
fn db_restart_under_load_loses_and_doubles_nothing() {
    // A PostgreSQL server of the trial's own: the Debian package's binaries.
    if !std::path::Path::new("/usr/lib/postgresql").is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run db-restart: install Debian's postgresql package"
        );
        eprintln!("skipping db-restart: no PostgreSQL server binaries");
        return;
    }
    let result = run(Scenario::DbRestart);
    assert_eq!(result.faults, 2, "one stop and one crash of the server");
}

#[test]
fn instance_crash_kills_one_of_three_order_instances_and_loses_nothing() {
    let Some(database) = postgres() else { return };
    let result = run_on(Scenario::InstanceCrash, database);
    assert_eq!(result.faults, 5, "kills of an order instance");
}

/// Three order instances and the four systems on one MariaDB server (a
/// database each), one order instance killed at a time under load.
#[test]
fn instance_crash_on_mariadb_kills_one_of_three_order_instances_and_loses_nothing() {
    let Some(database) = mariadb() else { return };
    let result = run_on(Scenario::InstanceCrash, database);
    assert_eq!(result.faults, 5, "kills of an order instance");
}

#[test]
fn system_crash_kills_one_systems_instance_and_applies_nothing_twice() {
    let Some(database) = postgres() else { return };
    let result = run_on(Scenario::SystemCrash, database);
    assert_eq!(result.faults, 5, "kills of a system's instance");
}

#[test]
fn broker_failover_of_each_of_two_brokers_loses_nothing() {
    let Some(database) = postgres() else { return };
    let result = run_on(Scenario::BrokerFailover, database);
    assert_eq!(result.faults, 2, "broker-b, then broker-a, killed and back");
}

#[test]
fn rolling_restart_of_every_process_doubles_nothing() {
    let Some(database) = postgres() else { return };
    let result = run_on(Scenario::RollingRestart, database);
    assert_eq!(
        result.faults, 11,
        "3 order instances and 2 of each of the 4 systems, restarted in turn"
    );
}

#[test]
fn poison_is_parked_by_every_group_that_receives_it_and_holds_nothing_back() {
    let result = run(Scenario::Poison);
    assert_eq!(result.faults, 27, "3 rounds of 3 bodies on 3 topics");
}

#[test]
fn power_loss_under_load_loses_nothing_acknowledged() {
    // The power-cut filesystem mounts through /dev/fuse, as root.
    if !std::path::Path::new("/dev/fuse").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run power-loss: it needs /dev/fuse"
        );
        eprintln!("skipping power-loss: no /dev/fuse");
        return;
    }
    let result = run(Scenario::PowerLoss);
    assert_eq!(result.faults, 2, "two power cuts");
}

#[test]
fn a_full_disk_is_answered_503_loses_nothing_and_heals_by_itself() {
    // The small disk is a tmpfs of the trial's own: mounting one needs root.
    if !running_as_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run disk-full: it mounts a tmpfs, as root"
        );
        eprintln!("skipping disk-full: not root");
        return;
    }
    let result = run(Scenario::DiskFull);
    eprintln!("disk-full figures: {:#?}", result.figures);
    assert_eq!(result.faults, 2, "two fills");
}

#[test]
fn clock_steps_close_nothing_early_and_strand_no_lease() {
    let result = run(Scenario::Clock);
    eprintln!("clock figures: {:#?}", result.figures);
    // Ahead, back to the real time (a restart), back, forward.
    assert_eq!(result.faults, 4, "four clock steps");
}

/// Whether the tests run as root (read from `/proc`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

#[test]
fn bad_input_against_the_binary_is_refused_cleanly() {
    let result = run(Scenario::BadInput);
    assert_eq!(result.faults, 300);
}

#[test]
fn security_refuses_strangers_and_forgeries_and_serves_shoppers_beside_slow_clients() {
    let result = run(Scenario::Security);
    eprintln!("security figures: {:#?}", result.figures);
    // Every guarded route tried two or three ways, six forged callbacks,
    // three forged events and the slow connections (each counted once
    // opened: at least the 500 held at the start).
    assert!(result.faults > 500, "{} faults", result.faults);
    // The payments' two figures, beside those every trial reports (its
    // dead letters, for one).
    let payments: Vec<&String> = result
        .figures
        .iter()
        .filter(|f| f.contains(": payments "))
        .collect();
    assert_eq!(payments.len(), 2, "{:?}", result.figures);
    assert!(
        payments[1].contains("beside 500 slow connections"),
        "{:?}",
        result.figures
    );
}

fn line(sku: &str, quantity: i64) -> OrderLine {
    OrderLine {
        sku: Sku::parse(sku).unwrap(),
        quantity: Quantity::parse(quantity).unwrap(),
    }
}

#[tokio::test]
async fn the_checker_reports_planted_faults() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/orders.db", dir.path().display());
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    store
        .upsert_product(&DemoProduct {
            sku: "P-1",
            name: "p",
            price: 100,
            stock: 10,
        })
        .await
        .unwrap();
    let user = UserId::parse("u1").unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = OrderId::parse(&format!("O{i}")).unwrap();
        let order = NewOrder::new(user.clone(), vec![line("P-1", 2)]).unwrap();
        store.create_order(&order, &id, 1, None).await.unwrap();
        ids.push(id);
    }
    // O0 and O1 are paid; O2 and O3 are not.
    for id in &ids[..2] {
        let notice = PaymentNotice {
            order_id: id.clone(),
            payment_id: PaymentId::parse(&format!("pay-{id}")).unwrap(),
            amount: Amount::parse(200).unwrap(),
        };
        store.pay_order(&notice, 2).await.unwrap();
    }
    // O0 gets all four effects; O1 (paid) none; O3 (unpaid) a points entry.
    let effects = |order: &OrderId| {
        vec![
            Effect::Points {
                user_id: user.clone(),
                order_id: order.clone(),
                points: 2,
            },
            Effect::Coupon {
                user_id: user.clone(),
                order_id: order.clone(),
                coupon_code: format!("C-{order}"),
                value: Amount::parse(100).unwrap(),
            },
            Effect::Sms {
                user_id: user.clone(),
                order_id: order.clone(),
                text: "t".into(),
                external_ref: "SMS-1".into(),
            },
            Effect::Shipment {
                user_id: user.clone(),
                order_id: order.clone(),
                tracking_no: "TRK-1".into(),
            },
        ]
    };
    for effect in effects(&ids[0]) {
        store
            .apply_effect(&format!("OrderPaid:{}", ids[0]), "m", &effect, 3)
            .await
            .unwrap();
    }
    store
        .apply_effect("OrderPaid:O3", "m", &effects(&ids[3])[0], 3)
        .await
        .unwrap();

    // The client was told: O0 paid, O2 paid (a lie: it is UNPAID), O3 never paid.
    let mut ledger = Ledger::default();
    for (id, acknowledged, attempted) in
        [("O0", true, true), ("O2", true, true), ("O3", false, false)]
    {
        ledger.orders.insert(
            id.into(),
            OrderRecord {
                amount: 200,
                lines: vec![("P-1".into(), 2)],
                pay_attempted: attempted,
                acknowledged,
                ..OrderRecord::default()
            },
        );
    }
    // Claim a start stock of 3: 4 units were sold (oversold), and on hand
    // (10: orders take nothing off it) differs from 3.
    let expect = Expectations {
        start_stock: HashMap::from([("P-1".to_owned(), 3)]),
        ..Expectations::default()
    };
    let verdict = check(&store, &ledger, &expect).await;
    store.close().await;
    assert!(!verdict.holds());
    // O2 acknowledged but UNPAID (1) + O1 PAID without its four effects (4).
    assert_eq!(verdict.lost, 5, "{:#?}", verdict.violations);
    assert_eq!(verdict.phantom, 1, "O3's points: {:#?}", verdict.violations);
    assert_eq!(verdict.oversold, 1, "{:#?}", verdict.violations);
    assert_eq!(
        (verdict.orders, verdict.paid, verdict.acknowledged),
        (4, 2, 2)
    );
    assert!(
        verdict.violations.iter().any(|v| v.contains("on hand 10")),
        "{:#?}",
        verdict.violations
    );
    // A clean database with an honest ledger passes.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/orders.db", dir.path().display());
    let clean = Store::open(&url, &StoreOptions::default()).await.unwrap();
    let verdict = check(&clean, &Ledger::default(), &Expectations::default()).await;
    assert!(verdict.holds(), "{:#?}", verdict.violations);
    // A 503 STORAGE_UNAVAILABLE is a violation unless the scenario took the
    // database away.
    let unavailable = Ledger {
        unavailable: 2,
        ..Ledger::default()
    };
    let verdict = check(&clean, &unavailable, &Expectations::default()).await;
    assert!(
        verdict
            .violations
            .iter()
            .any(|v| v.contains("2 request(s) answered 503 STORAGE_UNAVAILABLE")),
        "{:#?}",
        verdict.violations
    );
    let away = Expectations {
        storage_may_refuse: true,
        ..Expectations::default()
    };
    let verdict = check(&clean, &unavailable, &away).await;
    clean.close().await;
    assert!(verdict.holds(), "{:#?}", verdict.violations);
}

/// With the systems as processes of their own, each system's effects are
/// read from its own database: an order whose four effects are there
/// passes, and one whose shipment is missing from the warehouse's is lost,
/// although the order database knows nothing of either.
#[tokio::test]
async fn the_checker_reads_each_systems_effects_from_its_own_database() {
    let dir = tempfile::tempdir().unwrap();
    let open = |file: &str, databases: Databases| {
        let url = format!("sqlite://{}/{file}", dir.path().display());
        async move {
            let options = StoreOptions {
                databases,
                ..StoreOptions::default()
            };
            Store::open(&url, &options).await.unwrap()
        }
    };
    let orders = open("orders.db", Databases::Orders).await;
    let mut own = BTreeMap::new();
    for system in System::ALL {
        let file = format!("{}.db", system.name());
        own.insert(system, open(&file, Databases::System(system)).await);
    }
    orders
        .upsert_product(&DemoProduct {
            sku: "P-1",
            name: "p",
            price: 100,
            stock: 10,
        })
        .await
        .unwrap();
    let user = UserId::parse("u1").unwrap();
    let mut ledger = Ledger::default();
    for i in 0..2 {
        let id = OrderId::parse(&format!("O{i}")).unwrap();
        let order = NewOrder::new(user.clone(), vec![line("P-1", 1)]).unwrap();
        orders.create_order(&order, &id, 1, None).await.unwrap();
        let notice = PaymentNotice {
            order_id: id.clone(),
            payment_id: PaymentId::parse(&format!("pay-{id}")).unwrap(),
            amount: Amount::parse(100).unwrap(),
        };
        orders.pay_order(&notice, 2).await.unwrap();
        ledger.orders.insert(
            id.to_string(),
            OrderRecord {
                amount: 100,
                lines: vec![("P-1".into(), 1)],
                pay_attempted: true,
                acknowledged: true,
                ..OrderRecord::default()
            },
        );
        let effects = [
            (
                System::Credit,
                Effect::Points {
                    user_id: user.clone(),
                    order_id: id.clone(),
                    points: 1,
                },
            ),
            (
                System::Marketing,
                Effect::Coupon {
                    user_id: user.clone(),
                    order_id: id.clone(),
                    coupon_code: format!("C-{id}"),
                    value: Amount::parse(100).unwrap(),
                },
            ),
            (
                System::Push,
                Effect::Sms {
                    user_id: user.clone(),
                    order_id: id.clone(),
                    text: "t".into(),
                    external_ref: format!("SMS-{id}"),
                },
            ),
            (
                System::Warehouse,
                Effect::Shipment {
                    user_id: user.clone(),
                    order_id: id.clone(),
                    tracking_no: format!("TRK-{id}"),
                },
            ),
        ];
        for (system, effect) in effects {
            // O1's shipment never reached the warehouse's database.
            if i == 1 && system == System::Warehouse {
                continue;
            }
            own[&system]
                .apply_effect(&format!("OrderPaid:{id}"), "m", &effect, 3)
                .await
                .unwrap();
        }
    }
    let expect = Expectations {
        start_stock: HashMap::from([("P-1".to_owned(), 10)]),
        ..Expectations::default()
    };
    let systems = own.iter().map(|(s, store)| (*s, store)).collect();
    let verdict = check_apart(&orders, &systems, &ledger, &expect).await;
    assert_eq!(verdict.lost, 1, "{:#?}", verdict.violations);
    assert!(
        verdict
            .violations
            .iter()
            .any(|v| v.contains("O1") && v.contains("warehouse")),
        "{:#?}",
        verdict.violations
    );
    assert_eq!((verdict.paid, verdict.doubled), (2, 0));
    // The order database alone holds none of the systems' tables: the
    // check of one process's databases fails on it.
    let blind = check(&orders, &ledger, &expect).await;
    assert!(!blind.holds() && blind.lost == 0, "{:#?}", blind.violations);
    orders.close().await;
    for store in own.into_values() {
        store.close().await;
    }
}

#[tokio::test]
async fn the_checker_reports_a_broken_history_and_a_lost_close() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/orders.db", dir.path().display());
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    store
        .upsert_product(&DemoProduct {
            sku: "P-1",
            name: "p",
            price: 100,
            stock: 10,
        })
        .await
        .unwrap();
    let user = UserId::parse("u1").unwrap();
    let ids: Vec<OrderId> = (0..3)
        .map(|i| OrderId::parse(&format!("O{i}")).unwrap())
        .collect();
    for id in &ids {
        let order = NewOrder::new(user.clone(), vec![line("P-1", 1)]).unwrap();
        store.create_order(&order, id, 1, Some(1)).await.unwrap();
    }
    // O0 and O1 close as they should; O2's close never comes.
    let closed = store
        .write_batch(
            &[
                WriteOp::Close(ids[0].clone()),
                WriteOp::Close(ids[1].clone()),
            ],
            10,
        )
        .await;
    assert!(
        closed
            .iter()
            .all(|r| matches!(r, WriteResult::Closed(Ok(CloseOutcome::Closed)))),
        "{closed:?}"
    );
    let expect = Expectations {
        closes_due: true,
        ..Expectations::default()
    };
    let honest = check(&store, &Ledger::default(), &expect).await;
    assert_eq!(
        (honest.lost, honest.doubled),
        (1, 0),
        "only O2's lost close: {:#?}",
        honest.violations
    );
    // Plant O1's close recorded twice, and O0's creation missing.
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for statement in [
        "INSERT INTO order_history (order_id, from_status, to_status, at) \
         VALUES ('O1', 'UNPAID', 'CANCELLED', 11)",
        "DELETE FROM order_history WHERE order_id = 'O0' AND from_status IS NULL",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    let verdict = check(&store, &Ledger::default(), &expect).await;
    // And an early close: O0's late payment found it closed 300 ms
    // after its creation, O1's 5 s after (on time, closes after 4 s).
    let mut ledger = Ledger::default();
    for (id, age) in [("O0", 300), ("O1", 5_000)] {
        ledger.orders.insert(
            id.to_owned(),
            OrderRecord {
                found_cancelled_at: Some(std::time::Duration::from_millis(age)),
                ..OrderRecord::default()
            },
        );
    }
    let early = check(
        &store,
        &ledger,
        &Expectations {
            close_after: Some(std::time::Duration::from_secs(4)),
            ..expect.clone()
        },
    )
    .await;
    store.close().await;
    let early: Vec<&String> = early
        .violations
        .iter()
        .filter(|v| v.contains("closed early"))
        .collect();
    assert_eq!(
        early,
        [
            "order O0: closed early: a payment answered 300 ms after its create was sent \
             found it closed (it closes 4000 ms after creation)"
        ],
        "only O0's close was early"
    );
    assert_eq!(
        (verdict.lost, verdict.doubled),
        (1, 1),
        "{:#?}",
        verdict.violations
    );
    for expected in [
        "order O1: Some(\"UNPAID\") → CANCELLED recorded twice",
        "order O0: history does not start with its creation",
        "order O2: still UNPAID after its close was due",
    ] {
        assert!(
            verdict.violations.iter().any(|v| v == expected),
            "{expected}: {:#?}",
            verdict.violations
        );
    }
}

#[tokio::test]
async fn the_checker_reports_a_refund_not_done_or_not_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/orders.db", dir.path().display());
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    store
        .upsert_product(&DemoProduct {
            sku: "P-1",
            name: "p",
            price: 100,
            stock: 10,
        })
        .await
        .unwrap();
    let user = UserId::parse("u1").unwrap();
    let id = OrderId::parse("O0").unwrap();
    let order = NewOrder::new(user.clone(), vec![line("P-1", 1)]).unwrap();
    store.create_order(&order, &id, 1, None).await.unwrap();
    let notice = PaymentNotice {
        order_id: id.clone(),
        payment_id: PaymentId::parse("pay-O0").unwrap(),
        amount: Amount::parse(100).unwrap(),
    };
    store.pay_order(&notice, 2).await.unwrap();
    for effect in [
        Effect::Points {
            user_id: user.clone(),
            order_id: id.clone(),
            points: 1,
        },
        Effect::Coupon {
            user_id: user.clone(),
            order_id: id.clone(),
            coupon_code: "C-O0".into(),
            value: Amount::parse(100).unwrap(),
        },
        Effect::Sms {
            user_id: user.clone(),
            order_id: id.clone(),
            text: "t".into(),
            external_ref: "SMS-1".into(),
        },
        Effect::Shipment {
            user_id: user.clone(),
            order_id: id.clone(),
            tracking_no: "TRK-1".into(),
        },
    ] {
        store
            .apply_effect("OrderPaid:O0", "m", &effect, 3)
            .await
            .unwrap();
    }
    // Refunded in full, as far as the client knows; nothing has happened since.
    let request = RefundRequest::new(
        id.clone(),
        IdempotencyKey::parse("refund-O0").unwrap(),
        None,
        None,
    )
    .unwrap();
    store
        .request_refund(&request, &RefundId::generate(4, 1u64), 4)
        .await
        .unwrap();
    let mut ledger = Ledger::default();
    ledger.orders.insert(
        "O0".into(),
        OrderRecord {
            amount: 100,
            lines: vec![("P-1".into(), 1)],
            pay_attempted: true,
            acknowledged: true,
            refund_asked: true,
            refund_accepted: true,
            ..OrderRecord::default()
        },
    );
    // And a points reversal for a refund that does not exist.
    let credit = format!("sqlite://{}/credit.db", dir.path().display());
    let mut conn = sqlx::SqliteConnection::connect(&credit).await.unwrap();
    sqlx::query(
        "INSERT INTO credit_point_reversals (refund_id, user_id, order_id, points, created_at) \
         VALUES ('R-none', 'u1', 'O0', 1, 5)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let verdict = check(&store, &ledger, &Expectations::default()).await;
    store.close().await;
    // The order is REFUNDING (1), the refund REQUESTED (1), and none of its
    // four reversals happened (4).
    assert_eq!(
        (verdict.lost, verdict.doubled, verdict.phantom),
        (6, 0, 1),
        "{:#?}",
        verdict.violations
    );
    for expected in [
        "full refund accepted but the order is Some(\"REFUNDING\")",
        "is REQUESTED",
        "no points reversal",
        "no refund SMS",
        "no coupon revoked",
        "no shipment cancelled",
        "a reversal for refund R-none, which takes nothing back",
    ] {
        assert!(
            verdict.violations.iter().any(|v| v.contains(expected)),
            "{expected}: {:#?}",
            verdict.violations
        );
    }
}

/// Carrier updates and closes, as the crash scenario runs them: a status
/// answered 200 but never applied by the warehouse, a shipment left behind
/// what the carrier reported, a status answered but never recorded, and a
/// close of a paid order are each reported.
#[tokio::test]
async fn the_checker_reports_carrier_updates_lost_or_out_of_order_and_a_paid_order_closed() {
    use ordermq_domain::{CarrierStatus, CarrierUpdate, TrackingNo};

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/orders.db", dir.path().display());
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    store
        .upsert_product(&DemoProduct {
            sku: "P-1",
            name: "p",
            price: 100,
            stock: 10,
        })
        .await
        .unwrap();
    let user = UserId::parse("u1").unwrap();
    let ids: Vec<OrderId> = (0..3)
        .map(|i| OrderId::parse(&format!("O{i}")).unwrap())
        .collect();
    let mut ledger = Ledger::default();
    for id in &ids {
        let order = NewOrder::new(user.clone(), vec![line("P-1", 1)]).unwrap();
        store.create_order(&order, id, 1, None).await.unwrap();
        let notice = PaymentNotice {
            order_id: id.clone(),
            payment_id: PaymentId::parse(&format!("pay-{id}")).unwrap(),
            amount: Amount::parse(100).unwrap(),
        };
        store.pay_order(&notice, 2).await.unwrap();
        let tracking_no = format!("TRK-{id}");
        for effect in [
            Effect::Points {
                user_id: user.clone(),
                order_id: id.clone(),
                points: 1,
            },
            Effect::Coupon {
                user_id: user.clone(),
                order_id: id.clone(),
                coupon_code: format!("C-{id}"),
                value: Amount::parse(100).unwrap(),
            },
            Effect::Sms {
                user_id: user.clone(),
                order_id: id.clone(),
                text: "t".into(),
                external_ref: format!("SMS-{id}"),
            },
            Effect::Shipment {
                user_id: user.clone(),
                order_id: id.clone(),
                tracking_no: tracking_no.clone(),
            },
        ] {
            store
                .apply_effect(&format!("OrderPaid:{id}"), "m", &effect, 3)
                .await
                .unwrap();
        }
        ledger.orders.insert(
            id.to_string(),
            OrderRecord {
                amount: 100,
                lines: vec![("P-1".into(), 1)],
                pay_attempted: true,
                acknowledged: true,
                ..OrderRecord::default()
            },
        );
    }
    let carry = |id: &OrderId, status: CarrierStatus| CarrierUpdate {
        order_id: id.clone(),
        tracking_no: TrackingNo::parse(&format!("TRK-{id}")).unwrap(),
        status,
    };
    // O0: picked up and delivered, both answered 200 and recorded; the
    // warehouse applies the pick-up only.
    for status in [CarrierStatus::PickedUp, CarrierStatus::Delivered] {
        store
            .carrier_update(&carry(&ids[0], status), 4)
            .await
            .unwrap();
    }
    store
        .apply_effect(
            "ShipmentUpdated:O0:PICKED_UP",
            "m",
            &Effect::ShipmentProgress {
                order_id: ids[0].clone(),
                status: CarrierStatus::PickedUp,
            },
            5,
        )
        .await
        .unwrap();
    let acked = |statuses: &[&str]| statuses.iter().map(|s| (*s).to_owned()).collect();
    let o0 = ledger.orders.get_mut("O0").unwrap();
    o0.carrier_acked = acked(&["PICKED_UP", "DELIVERED"]);
    o0.carrier_sent = acked(&["PICKED_UP", "DELIVERED"]);
    // O1: the carrier was answered 200 for PICKED_UP, and nothing of it is anywhere.
    let o1 = ledger.orders.get_mut("O1").unwrap();
    o1.carrier_acked = acked(&["PICKED_UP"]);
    o1.carrier_sent = acked(&["PICKED_UP"]);
    let honest_o2 = check(&store, &ledger, &Expectations::default()).await;
    // O2: closed after it was paid.
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO order_history (order_id, from_status, to_status, at) \
         VALUES ('O2', 'PAID', 'CANCELLED', 6)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let verdict = check(&store, &ledger, &Expectations::default()).await;
    store.close().await;
    // O0: DELIVERED never applied (1), the shipment behind it (1); O1: not
    // recorded (1), not applied (1), the order still PAID (1), the shipment
    // still CREATED (1).
    assert_eq!(
        (honest_o2.lost, honest_o2.doubled, honest_o2.phantom),
        (6, 0, 0),
        "{:#?}",
        honest_o2.violations
    );
    assert_eq!(
        (verdict.lost, verdict.doubled, verdict.phantom),
        (6, 0, 1),
        "{:#?}",
        verdict.violations
    );
    for expected in [
        "order O0: the warehouse never applied carrier DELIVERED",
        "order O0: carrier sent DELIVERED but the shipment is Some(\"PICKED_UP\") (applied out of order)",
        "order O1: carrier PICKED_UP answered 200 but not recorded",
        "order O1: the warehouse never applied carrier PICKED_UP",
        "order O1: carrier sent PICKED_UP but the order is Some(\"PAID\")",
        "order O2: PAID → CANCELLED is not a move the order may make",
    ] {
        assert!(
            verdict.violations.iter().any(|v| v == expected),
            "{expected}: {:#?}",
            verdict.violations
        );
    }
}

/// The providers' call log: a key done twice (a provider that forgot it),
/// a paid order never booked, and an SMS for an order never paid are each
/// reported; a key answered from the provider's memory is counted.
#[tokio::test]
async fn the_checker_reports_duplicate_missing_and_phantom_provider_calls() {
    use ordermq_fake_provider::{CallOutcome, CallRecord};

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/orders.db", dir.path().display());
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    store
        .upsert_product(&DemoProduct {
            sku: "P-1",
            name: "p",
            price: 100,
            stock: 10,
        })
        .await
        .unwrap();
    let user = UserId::parse("u1").unwrap();
    for id in ["O0", "O1"] {
        let order = NewOrder::new(user.clone(), vec![line("P-1", 1)]).unwrap();
        let id = OrderId::parse(id).unwrap();
        store.create_order(&order, &id, 1, None).await.unwrap();
    }
    // O0 is paid; O1 is not.
    let notice = PaymentNotice {
        order_id: OrderId::parse("O0").unwrap(),
        payment_id: PaymentId::parse("pay-O0").unwrap(),
        amount: Amount::parse(100).unwrap(),
    };
    store.pay_order(&notice, 2).await.unwrap();
    let call = |seq: u64, key: &str, outcome: CallOutcome| CallRecord {
        seq,
        at_ms: 10 + seq as i64,
        endpoint: "/sms/send".into(),
        idempotency_key: Some(key.into()),
        key_id: Some("chaos".into()),
        status: 200,
        outcome,
        request: serde_json::json!({"idempotency_key": key}),
        response: serde_json::json!({"message_id": format!("M{seq}")}),
    };
    // O0's SMS done twice under one key, then answered from memory once;
    // an SMS for O1; no booking for O0.
    let calls = vec![
        call(1, "OrderPaid:O0", CallOutcome::Effect),
        call(2, "OrderPaid:O0", CallOutcome::Effect),
        call(3, "OrderPaid:O0", CallOutcome::Replay),
        call(4, "OrderPaid:O1", CallOutcome::Effect),
    ];
    let without = check(&store, &Ledger::default(), &Expectations::default()).await;
    let with = check(
        &store,
        &Ledger::default(),
        &Expectations {
            provider_calls: Some(calls),
            ..Expectations::default()
        },
    )
    .await;
    store.close().await;
    assert_eq!(
        (
            with.lost - without.lost,
            with.doubled - without.doubled,
            with.phantom - without.phantom
        ),
        (1, 1, 1),
        "{:#?}",
        with.violations
    );
    for expected in [
        "provider /sms/send: key OrderPaid:O0 done 2 times (the provider forgot it)",
        "order O0: /logistics/shipments for its payment: not done at the provider",
        "order O1 is UNPAID but /sms/send was done for its payment",
    ] {
        assert!(
            with.violations.iter().any(|v| v == expected),
            "{expected}: {:#?}",
            with.violations
        );
    }
    assert_eq!(
        with.figures,
        [
            "providers: 4 calls, 3 done, 1 deduplicated (a key again), duplicates: 1 SMS, 0 bookings, 0 refunds"
        ]
    );
}

/// The feed invariant is not blind either: `ordermq feed verify`, run as a
/// trial runs it, passes on a sink that followed the order database, and
/// fails on one where a fault was planted (a row changed, an event applied
/// before its predecessor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_check_reports_a_fault_planted_in_the_sink() {
    use ordermq_chaos::feed_check::verify_once;
    use ordermq_domain::feed::{FeedChange, FeedEvent};

    let dir = tempfile::tempdir().unwrap();
    let config = ordermq::Config {
        data_dir: dir.path().to_path_buf(),
        ..ordermq::Config::default()
    };
    let store = Store::open(
        &config.database_url(),
        &StoreOptions {
            feed: ordermq_store::Feed::On,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    store
        .upsert_product(&DemoProduct {
            sku: "P-1",
            name: "p",
            price: 100,
            stock: 10,
        })
        .await
        .unwrap();
    let id = OrderId::parse("F1").unwrap();
    let order = NewOrder::new(UserId::parse("u1").unwrap(), vec![line("P-1", 2)]).unwrap();
    store.create_order(&order, &id, 1, None).await.unwrap();
    let (created, _) = store.feed_states("", 10).await.unwrap().remove(0);
    let notice = PaymentNotice {
        order_id: id.clone(),
        payment_id: PaymentId::parse("pay-F1").unwrap(),
        amount: Amount::parse(200).unwrap(),
    };
    store.pay_order(&notice, 2).await.unwrap();
    let (paid, seq) = store.feed_states("", 10).await.unwrap().remove(0);
    assert_eq!(seq, 2);
    store.close().await;
    let sink = ordermq_store::FeedSink::open(&ordermq::feed::sink_url(&config, None))
        .await
        .unwrap();
    sink.apply(
        &[
            FeedEvent::new(FeedChange::Created, 1, created, 1),
            FeedEvent::new(FeedChange::Paid, 2, paid, 2),
        ],
        10,
    )
    .await
    .unwrap();
    let bin = find_ordermq().expect("the ordermq binary");
    let env = vec![(
        "ORDERMQ_DATA_DIR".to_owned(),
        dir.path().display().to_string(),
    )];
    let check = verify_once(&bin, &env).await.unwrap();
    assert!(check.clean(), "{check:?}");
    assert_eq!(check.orders, 1);

    // An event applied before its predecessor.
    sink.execute("UPDATE order_events SET applied_at = 99 WHERE order_seq = 1")
        .await
        .unwrap();
    let check = verify_once(&bin, &env).await.unwrap();
    assert!(!check.clean());
    assert_eq!((check.reorderings, check.exit), (1, Some(1)), "{check:?}");
    // A row that differs from the order database.
    sink.execute("UPDATE orders SET status = 'UNPAID'")
        .await
        .unwrap();
    let check = verify_once(&bin, &env).await.unwrap();
    assert_eq!((check.differences, check.reorderings), (1, 1), "{check:?}");
}
