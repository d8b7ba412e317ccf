//! Scenario 6, `bad-input`: generated malformed and hostile requests sent to
//! the live binary, over real connections.
//!
//! The router's property test sends the same generated cases
//! (`ordermq_testkit::bad_request`) in-process; this scenario adds what only
//! the real server shows: the HTTP stack, body limits on a socket, and a
//! process that must stay up. Its trial: a few real orders to aim at
//! ([`known_orders`]), the state before ([`snapshot`]), the requests
//! ([`send_bad_requests`]), and the state after, which must be unchanged.

use std::time::Duration;

use ordermq_testkit::bad_request::{FuzzContext, KnownOrder, bad_request};

use super::TrialOutcome;
use crate::checker::Expectations;
use crate::driver::{Answer, Driver};
use crate::{ChaosError, Options, Trial, catalog_stock};

/// Scenario 6: Generated bad requests against the live binary: always a 4xx with a
/// stable code, never a 5xx or a dropped connection, and no state change.
pub(super) async fn bad_input(options: &Options) -> TrialOutcome {
    let mut trial = Trial::new(options, false).await?;
    trial.start_ordermq().await?;
    let driver = trial.driver.clone();
    let known = known_orders(&driver).await;
    trial.wait_drained(options.drain_timeout).await;
    let ids: Vec<String> = known.iter().map(|k| k.order_id.clone()).collect();
    let before = snapshot(&driver, &ids).await;
    let ctx = FuzzContext {
        signer: driver.signer.clone(),
        orders: known,
        scarce_sku: ("SKU-5".into(), 100),
    };
    let seed = fastrand::u64(..);
    let mut notes = Vec::new();
    send_bad_requests(&driver, &ctx, options.bad_requests, seed, &mut notes).await?;
    let after = snapshot(&driver, &ids).await;
    if before != after {
        notes.push(format!(
            "state changed by rejected requests:\n    before {before:?}\n    after  {after:?}"
        ));
    }
    if !trial.ordermq.as_mut().is_some_and(|p| p.is_running()) {
        notes.push("ordermq died under bad input".into());
    }
    options.say(format!(
        "  {} bad requests (seed {seed}), {} problems",
        options.bad_requests,
        notes.len()
    ));
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            ..Expectations::default()
        })
        .await?;
    verdict.violations.extend(notes);
    Ok((verdict, options.bad_requests, trial))
}

/// A few real orders to aim at: six, every other one paid.
async fn known_orders(driver: &Driver) -> Vec<KnownOrder> {
    let mut known = Vec::new();
    for i in 0..6 {
        if let Answer::Got(201, o) = driver.create("fuzz-target", &[("SKU-1", 1 + i)]).await {
            let id = o["order_id"].as_str().unwrap_or("?").to_owned();
            let amount = o["amount"].as_i64().unwrap_or(0);
            let payment_id = (i % 2 == 0).then(|| format!("pay-{id}"));
            if let Some(p) = &payment_id {
                driver.pay(&id, p, amount).await;
            }
            known.push(KnownOrder {
                order_id: id,
                amount,
                payment_id,
            });
        }
    }
    known
}

/// What a rejected request must not change, as ordermq shows it: the stats,
/// the products, and each known order's status and payment.
async fn snapshot(driver: &Driver, ids: &[String]) -> Vec<String> {
    let mut parts = Vec::new();
    for path in ["/api/stats", "/api/products"] {
        parts.push(match driver.get(path).await {
            Answer::Got(s, mut v) => {
                // The writer's and the consumer groups' counters are this
                // process's activity (the relay's idle polls count, receipts
                // of earlier effects keep arriving), not state.
                if let Some(stats) = v.as_object_mut() {
                    stats.remove("group_commit");
                    stats.remove("deliveries");
                }
                format!("{s} {v}")
            }
            Answer::Lost(e) | Answer::Refused(e) => format!("lost {e}"),
        });
    }
    for id in ids {
        parts.push(match driver.get(&format!("/api/orders/{id}")).await {
            Answer::Got(s, v) => format!("{s} {} {}", v["status"], v["payment_id"]),
            Answer::Lost(e) | Answer::Refused(e) => format!("lost {e}"),
        });
    }
    parts
}

/// Sends `count` requests generated from `seed` and judges each answer;
/// the first 20 problems go to `notes`, each with the seed.
async fn send_bad_requests(
    driver: &Driver,
    ctx: &FuzzContext,
    count: usize,
    seed: u64,
    notes: &mut Vec<String>,
) -> Result<(), ChaosError> {
    let mut rng = fastrand::Rng::with_seed(seed);
    // One connection per bad request: the server rightly closes a connection
    // after refusing an oversized body unread, and a pooled client could
    // otherwise send the next case on that closing connection (a transport
    // error that says nothing about ordermq).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ChaosError::Setup(e.to_string()))?;
    for _ in 0..count {
        let request = bad_request(&mut rng, ctx);
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).expect("method");
        let mut builder = fresh
            .request(method, driver.url(&request.path))
            .bearer_auth(ordermq_api::auth::DEMO_OPERATOR_TOKEN)
            .body(request.body.clone());
        if let Some(ct) = &request.content_type {
            builder = builder.header("content-type", ct);
        }
        for (name, value) in request.signature.iter().flat_map(|s| s.pairs()) {
            builder = builder.header(name, value);
        }
        if let Some(key) = &request.idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        let verdict = match builder.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap_or_default();
                request.judge(status, &body)
            }
            Err(e) => Err(format!("{}: no answer: {e}", request.kind)),
        };
        if let Err(problem) = verdict
            && notes.len() < 20
        {
            notes.push(format!("seed {seed}: {problem}"));
        }
    }
    Ok(())
}
