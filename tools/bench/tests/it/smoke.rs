//! A few seconds of each benchmark scenario: checks that the reports are
//! written and internally consistent. Performance targets are not asserted
//! here (a shared CI machine is no place for timing); `ordermq-bench` is.

use std::time::Duration;

use ordermq_bench::{self as bench, BrokerArgs, CapacityArgs, Output, Scenario, SeedArgs};
use serde_json::{Value, json};

fn output(dir: &std::path::Path, name: &str) -> Output {
    Output {
        json: Some(dir.join(format!("{name}.json"))),
        html: Some(dir.join(format!("{name}.html"))),
    }
}

fn num(report: &Value, path: &[&str]) -> f64 {
    let mut v = report;
    for key in path {
        v = &v[*key];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {report}", path.join(".")))
}

/// Equal JSON, numbers to within float round-trip error.
fn assert_same(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                "{at}: {x} != {y}"
            );
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}"
            );
            for (k, v) in x {
                assert_same(v, &y[k], &format!("{at}.{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                assert_same(v, w, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

fn assert_written(dir: &std::path::Path, name: &str, report: &Value) {
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    assert_same(&json, report, name);
    let html = std::fs::read_to_string(dir.join(format!("{name}.html"))).unwrap();
    assert!(
        html.contains("<svg") && html.contains("</html>"),
        "HTML report with charts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_report_is_complete_and_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench::run(Scenario::Seed(SeedArgs {
        rate: 20.0,
        duration: Duration::from_secs(2),
        target: Default::default(),
        output: output(dir.path(), "seed"),
    }))
    .await
    .unwrap();
    assert_written(dir.path(), "seed", &report);
    assert_eq!(
        report["durability"]["broker_flush"], "SYNC_FLUSH",
        "ordermq's default, stated"
    );
    for mode in ["serial", "parallel", "ordermq"] {
        let (p50, p95, p99, max) = (
            num(&report, &["modes", mode, "p50_ms"]),
            num(&report, &["modes", mode, "p95_ms"]),
            num(&report, &["modes", mode, "p99_ms"]),
            num(&report, &["modes", mode, "max_ms"]),
        );
        assert!(
            0.0 < p50 && p50 <= p95 && p95 <= p99 && p99 <= max,
            "{mode}: {p50} {p95} {p99} {max}"
        );
        assert_eq!(num(&report, &["modes", mode, "requests"]), 40.0);
        assert_eq!(num(&report, &["modes", mode, "errors"]), 0.0);
    }
    // The serial mode waits on 50 + 60 + ~100 + ~500 ms of calls by construction.
    assert!(num(&report, &["modes", "serial", "p50_ms"]) >= 700.0);
    assert_eq!(
        num(&report, &["modes", "ordermq", "e2e_measured"]),
        40.0,
        "every payment fanned out"
    );
    assert!(
        num(&report, &["modes", "ordermq", "e2e_p99_ms"])
            >= num(&report, &["modes", "ordermq", "e2e_p50_ms"])
    );
    let ratio = num(&report, &["ratios", "serial_over_ordermq_p50"]);
    let expected = num(&report, &["modes", "serial", "p50_ms"])
        / num(&report, &["modes", "ordermq", "p50_ms"]);
    assert!((ratio - expected).abs() < 1e-6 * expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_report_is_complete_and_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench::run(Scenario::Capacity(CapacityArgs {
        start_rate: 50.0,
        max_rate: 100.0,
        growth: 2.0,
        step_duration: Duration::from_secs(1),
        refine: 2,
        p99_limit_ms: 5_000.0,
        yardstick_duration: Duration::from_millis(300),
        retry_host_pauses: true,
        target: bench::target::TargetArgs {
            settings: vec!["write_linger_ms=0".into(), "topic_queues=2".into()],
            broker_flush: Some(ordermq_messaging::BrokerFlush::Async),
            ..Default::default()
        },
        output: output(dir.path(), "capacity"),
    }))
    .await
    .unwrap();
    assert_written(dir.path(), "capacity", &report);
    assert_eq!(
        report["settings"],
        serde_json::json!(["write_linger_ms=0", "topic_queues=2"]),
        "the report says how its ordermq was tuned"
    );
    assert_eq!(report["durability"]["broker_flush"], "ASYNC_FLUSH");
    let html = std::fs::read_to_string(dir.path().join("capacity.html")).unwrap();
    assert!(html.contains("<h1>ordermq-bench capacity (broker ASYNC_FLUSH)</h1>"));
    let steps = report["steps"].as_array().unwrap();
    assert!(!steps.is_empty() && steps.len() <= 2);
    assert!(num(&report, &["yardsticks", "fsync_per_s"]) > 0.0);
    assert!(num(&report, &["yardsticks", "sqlite_commit_per_s"]) > 0.0);
    assert_eq!(report["database"], "sqlite");
    assert!(report["postgres_yardsticks"].is_null());
    assert!(num(&report, &["peak_rss_mb"]) > 0.0);
    // Sampled parts of the resident memory: each at most the exact peak.
    for part in ["peak_rss_anon_mb", "peak_rss_file_mb"] {
        let mib = num(&report, &[part]);
        assert!(
            mib > 0.0 && mib <= num(&report, &["peak_rss_mb"]),
            "{part} {mib} not within (0, peak_rss_mb]"
        );
    }
    assert_eq!(report["fanned_out_all"], true, "{report}");
    for step in steps {
        // The host probe ran beside every step: an fsync takes some time.
        assert!(num(step, &["host_pause_ms", "fsync"]) > 0.0, "{step}");
        assert!(num(step, &["host_pause_ms", "wake_late"]) >= 0.0, "{step}");
        assert!(num(step, &["slow_commits"]) <= num(step, &["slow_commit_ms"]) / 100.0);
        if step["passed"] == true {
            assert_eq!(step["repeated"], false, "only failed steps are repeated");
        }
    }
    let best = steps
        .iter()
        .filter(|s| s["passed"] == true)
        .max_by(|a, b| num(a, &["offered_per_s"]).total_cmp(&num(b, &["offered_per_s"])));
    if let Some(best) = best {
        assert_eq!(
            num(best, &["achieved_per_s"]),
            num(&report, &["max_sustained_per_s"])
        );
        assert_eq!(num(best, &["p99_ms"]), num(&report, &["p99_ms_at_max"]));
    }
    // 20 paced warm-up payments and two seconds at the first rate, then
    // every step's successful payments.
    assert_eq!(num(&report, &["warm_up_payments"]), 20.0 + 2.0 * 50.0);
    let paid: f64 = num(&report, &["warm_up_payments"])
        + steps
            .iter()
            .map(|s| num(s, &["payments"]) - num(s, &["errors"]))
            .sum::<f64>();
    assert_eq!(num(&report, &["paid_total"]), paid);
}

/// On PostgreSQL (the store tests' server, in a database of its own): the
/// report names the database and carries PostgreSQL's yardsticks beside
/// ordermq's figure, and every payment fanned out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_runs_on_postgres_beside_its_yardsticks() {
    let Ok(admin_url) = std::env::var("ORDERMQ_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the bench on PostgreSQL: set ORDERMQ_TEST_POSTGRES_URL"
        );
        return;
    };
    use sqlx::Connection;
    let name = format!("ordermq_bench_{:016x}", fastrand::u64(..));
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = bench::run(Scenario::Capacity(CapacityArgs {
        start_rate: 50.0,
        max_rate: 50.0,
        growth: 2.0,
        step_duration: Duration::from_secs(1),
        refine: 0,
        p99_limit_ms: 5_000.0,
        yardstick_duration: Duration::from_millis(200),
        retry_host_pauses: false,
        target: bench::target::TargetArgs {
            // The tests' server runs with fsync=off.
            settings: vec!["database_allow_unsafe_durability=true".into()],
            database_url: Some(format!("{base}/{name}")),
            ..Default::default()
        },
        output: output(dir.path(), "capacity"),
    }))
    .await
    .unwrap();
    assert_written(dir.path(), "capacity", &report);
    assert_eq!(report["database"], "postgres", "{report}");
    for yardstick in [
        "insert_1_connection_per_s",
        "insert_8_connections_per_s",
        "naive_payments_8_connections_per_s",
    ] {
        assert!(
            num(&report, &["postgres_yardsticks", yardstick]) > 0.0,
            "{yardstick}: {report}"
        );
    }
    assert_eq!(report["fanned_out_all"], true, "{report}");
    assert!(num(&report, &["paid_total"]) >= 20.0, "{report}");
}

/// A limit nothing can meet: every step fails, and since the host probe's own
/// fsync always takes longer than it, each failure counts as "the host
/// paused" and the step is repeated, twice at most, before the search gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_repeats_a_step_failed_in_a_host_pause_at_most_twice() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench::run(Scenario::Capacity(CapacityArgs {
        start_rate: 40.0,
        max_rate: 80.0,
        growth: 2.0,
        step_duration: Duration::from_millis(500),
        refine: 0,
        p99_limit_ms: 0.000_1,
        yardstick_duration: Duration::from_millis(100),
        retry_host_pauses: true,
        target: Default::default(),
        output: output(dir.path(), "capacity"),
    }))
    .await
    .unwrap();
    let steps = report["steps"].as_array().unwrap();
    let repeated: Vec<&Value> = steps.iter().map(|s| &s["repeated"]).collect();
    assert_eq!(repeated, [true, true, false], "{report}");
    assert_eq!(num(&report, &["repeated_steps"]), 2.0);
    for step in steps {
        assert_eq!(num(step, &["offered_per_s"]), 40.0);
        assert_eq!(step["passed"], false);
        assert!(
            step["why_not"].as_str().unwrap().contains("host paused"),
            "{step}"
        );
    }
    assert_eq!(num(&report, &["max_sustained_per_s"]), 0.0);
    assert_eq!(report["fanned_out_all"], true, "{report}");
}

/// `--url`: the same scenario against an ordermq that is already running,
/// reached through its HTTP API only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_runs_against_a_running_ordermq_by_url() {
    let running = ordermq_testkit::LocalApp::start(|_| {}).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = bench::run(Scenario::Capacity(CapacityArgs {
        start_rate: 50.0,
        max_rate: 50.0,
        growth: 2.0,
        step_duration: Duration::from_secs(1),
        refine: 2,
        p99_limit_ms: 5_000.0,
        yardstick_duration: Duration::from_millis(200),
        retry_host_pauses: true,
        target: bench::target::TargetArgs {
            // The same instance twice: `--url` repeated spreads the
            // payments over the instances named, in turn.
            url: vec![running.url(""), running.url("")],
            payment_secret: Some("local-secret".into()),
            shop_token: Some(ordermq_testkit::SHOP_TOKEN.into()),
            operator_token: Some(ordermq_testkit::OPERATOR_TOKEN.into()),
            settings: Vec::new(),
            broker_flush: None,
            database: Default::default(),
            database_url: None,
            postgres_dir: None,
        },
        output: output(dir.path(), "capacity"),
    }))
    .await
    .unwrap();
    assert_written(dir.path(), "capacity", &report);
    let target = report["target"].as_str().unwrap();
    assert!(target.contains(&running.url("")), "{target}");
    assert!(target.starts_with("2 ordermq instances at "), "{target}");
    assert_eq!(report["fanned_out_all"], true, "{report}");
    assert!(
        report["durability"]["broker_flush"]
            .as_str()
            .unwrap()
            .contains("--url"),
        "the bench cannot see a running ordermq's flush"
    );
    for memory in ["peak_rss_mb", "peak_rss_anon_mb", "peak_rss_file_mb"] {
        assert!(
            report[memory].is_null(),
            "{memory}: not this process's memory"
        );
    }
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1);
    assert!(
        steps[0]["host_pause_ms"].is_null(),
        "not this machine's disk"
    );
    assert_eq!(num(&steps[0], &["errors"]), 0.0, "{report}");
    // What the bench counted is what the running ordermq recorded.
    let paid = running
        .store
        .order_ids_with_status(ordermq_domain::OrderStatus::Paid)
        .await
        .unwrap()
        .len() as f64;
    assert_eq!(num(&report, &["paid_total"]), paid);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_report_counts_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench::run(Scenario::Broker(BrokerArgs {
        messages: 2_000,
        batch: 128,
        single_sends: 200,
        broker_flush: ordermq_messaging::BrokerFlush::Async,
        output: output(dir.path(), "broker"),
    }))
    .await
    .unwrap();
    assert_written(dir.path(), "broker", &report);
    assert_eq!(report["broker_flush"], "ASYNC_FLUSH");
    assert_eq!(num(&report, &["produce_failed"]), 0.0);
    assert!(num(&report, &["consumed"]) >= 2_000.0, "{report}");
    assert!(num(&report, &["produce_per_s"]) > 0.0 && num(&report, &["consume_per_s"]) > 0.0);
    assert_eq!(num(&report, &["single_send_errors"]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_report_is_complete_and_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench::run(Scenario::FlashSale(bench::FlashArgs {
        attempts: 300,
        units: 40,
        rate: 2_000.0,
        order_rate: 400,
        connections: 16,
        max_in_flight: 1_024,
        // Leases of 7 units: six leases and a short one sell the 40.
        settings: vec!["flash_sale_lease_chunk=7".into()],
        output: output(dir.path(), "flash-sale"),
    }))
    .await
    .unwrap();
    assert_written(dir.path(), "flash-sale", &report);
    // Every shopper got a decision; as many won as there were units, once.
    assert_eq!(num(&report, &["flash", "admission", "errors"]), 0.0);
    assert_eq!(num(&report, &["flash", "queued"]), 40.0);
    assert_eq!(num(&report, &["flash", "sold_out"]), 260.0);
    assert_eq!(report["flash"]["drained"], true);
    assert_eq!(report["settings"], json!(["flash_sale_lease_chunk=7"]));
    assert_eq!(
        num(&report, &["flash", "created"]) + num(&report, &["flash", "rejected"]),
        40.0
    );
    assert_eq!(num(&report, &["flash", "oversold"]), 0.0);
    assert!(num(&report, &["flash", "orders_per_s_at_db"]) >= 0.0);
    assert_eq!(num(&report, &["plain", "created"]), 40.0);
    assert_eq!(num(&report, &["plain", "out_of_stock"]), 260.0);
    // The crowd's client counts what each answer was.
    assert_eq!(report["flash"]["statuses"], json!({"202": 40, "409": 260}));
    assert_eq!(report["plain"]["statuses"], json!({"201": 40, "409": 260}));
    assert!(num(&report, &["flash", "client_cpu_s"]) >= 0.0, "{report}");
    // The order writer committed every winner during the crowd, in fewer
    // commits than operations or as many.
    let writer = |name: &str| num(&report, &["flash", "writer_during_crowd", name]);
    assert!(writer("operations") >= 40.0, "{report}");
    assert!(
        (1.0..=writer("operations")).contains(&writer("commits")),
        "{report}"
    );
    let (p50, p99) = (
        num(&report, &["flash", "admission", "p50_ms"]),
        num(&report, &["flash", "admission", "p99_ms"]),
    );
    assert!(0.0 < p50 && p50 <= p99, "{p50} {p99}");
    // The latencies by answer cover every attempt: 40 winners, 260 refused.
    let by_answer = |answer: &str| num(&report, &["flash", "latency_by_answer", answer, "count"]);
    assert_eq!((by_answer("won"), by_answer("refused")), (40.0, 260.0));
    assert_eq!(
        num(&report, &["plain", "latency_by_answer", "won", "count"]),
        40.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feed_report_counts_every_event_of_each_phase() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench::run(Scenario::Feed(bench::FeedArgs {
        rate: 50.0,
        duration: Duration::from_secs(2),
        events: 300,
        orders: 300,
        phases: vec![
            bench::FeedPhase::Lag,
            bench::FeedPhase::Drain,
            bench::FeedPhase::Snapshot,
        ],
        settings: Vec::new(),
        output: output(dir.path(), "feed"),
    }))
    .await
    .unwrap();
    assert_written(dir.path(), "feed", &report);
    // Every payment's paid event reached the sink and has a lag.
    assert_eq!(num(&report, &["lag", "payments"]), 100.0);
    assert_eq!(num(&report, &["lag", "paid_events_applied"]), 100.0);
    let (p50, p99) = (
        num(&report, &["lag", "lag_p50_ms"]),
        num(&report, &["lag", "lag_p99_ms"]),
    );
    assert!(p50 <= p99 && p99 <= num(&report, &["lag", "lag_max_ms"]));
    // Every pre-loaded event and every snapshotted order was applied once.
    assert_eq!(num(&report, &["drain", "applied"]), 300.0);
    assert!(num(&report, &["drain", "events_per_s"]) > 0.0);
    assert_eq!(num(&report, &["snapshot", "sent"]), 300.0);
    assert_eq!(num(&report, &["snapshot", "applied"]), 300.0);
    assert!(num(&report, &["snapshot", "send_orders_per_s"]) > 0.0);
}
