//! The security scenario's abuse of the shop's own doors: a hoarding script
//! and a sign-in guesser, against the limits the trial runs with.
//!
//! Why here and not only in the router's tests: those prove each limit on
//! one request; this drives them the way a script would, many requests at
//! once over real sockets, and reads what the server holds afterwards (the
//! catalog's stock), not what the script was told.

use futures_util::future::join_all;
use ordermq_api::auth::DEMO_OPERATOR_TOKEN;
use serde_json::{Value, json};

use crate::Trial;
use crate::driver::{Answer, Driver};

/// The limits the trial runs with: ordermq's shipped defaults.
fn shipped() -> ordermq::Config {
    ordermq::Config::default()
}

/// Sets the trial's limits back to the shipped defaults (the suite's other
/// trials run without them).
pub(super) fn restore_shipped_limits(trial: &mut Trial) {
    let shipped = shipped();
    trial.set(
        "limits_unpaid_orders_per_user",
        shipped.limits_unpaid_orders_per_user,
    );
    trial.set(
        "limits_units_per_sku_per_user",
        shipped.limits_units_per_sku_per_user,
    );
    trial.set(
        "limits_orders_per_minute_per_user",
        shipped.limits_orders_per_minute_per_user,
    );
    trial.set(
        "limits_orders_per_second_per_token",
        shipped.limits_orders_per_second_per_token,
    );
}

/// The SKU the hoarder tries to empty: nothing else in the trial orders it
/// while the hoarder runs, so its stock's fall is the hoarder's holding.
const HOARDED: &str = "SKU-2";

/// A script that wants the whole of one SKU: 30 orders of 3 units at once
/// from one user, then one order of more units than a user may hold from
/// another. A user may hold at most the per-user limits; every refusal must
/// be one of the limits' stable codes; a shopper buys and pays the same SKU
/// right after. Returns the calls made.
pub(super) async fn hoarding(driver: &Driver, notes: &mut Vec<String>) -> usize {
    let shipped = shipped();
    let max_orders = i64::from(shipped.limits_unpaid_orders_per_user);
    let max_units = i64::from(shipped.limits_units_per_sku_per_user);
    let Some(before) = stock_of(driver, HOARDED, notes).await else {
        return 0;
    };
    let answers = join_all((0..30).map(|_| driver.create("hoarder", &[(HOARDED, 3)]))).await;
    let mut created = 0;
    for answer in &answers {
        match answer {
            Answer::Got(201, _) => created += 1,
            Answer::Got(409, body)
                if matches!(
                    body["code"].as_str(),
                    Some("TOO_MANY_UNPAID_ORDERS" | "SKU_LIMIT_EXCEEDED")
                ) => {}
            Answer::Got(429, body) if body["code"] == "RATE_LIMITED" => {}
            other => notes.push(format!("hoarding: a create answered {other:?}")),
        }
    }
    if created > max_orders || created * 3 > max_units {
        notes.push(format!(
            "hoarding: one user got {created} orders of 3 × {HOARDED} (limits: {max_orders} unpaid orders, {max_units} units)"
        ));
    }
    if created == 0 {
        notes.push(
            "hoarding: the hoarder got no order at all: the limits refused a first order".into(),
        );
    }
    if let Some(after) = stock_of(driver, HOARDED, notes).await {
        // The server's own count: what the hoarder reserved.
        let held = before - after;
        if held != created * 3 {
            notes.push(format!(
                "hoarding: {HOARDED}'s stock fell by {held}, the hoarder was answered 201 for {} units",
                created * 3
            ));
        }
    }
    match driver.create("hoarder-2", &[(HOARDED, max_units + 5)]).await {
        Answer::Got(409, body) if body["code"] == "SKU_LIMIT_EXCEEDED" => {}
        other => notes.push(format!(
            "hoarding: {} units of {HOARDED} in one order answered {other:?}, not 409 SKU_LIMIT_EXCEEDED",
            max_units + 5
        )),
    }
    neighbour_buys(driver, notes).await;
    answers.len() + 1
}

/// Another shopper buys and pays the hoarded SKU.
async fn neighbour_buys(driver: &Driver, notes: &mut Vec<String>) {
    let order = match driver.create("neighbour", &[(HOARDED, 1)]).await {
        Answer::Got(201, order) => order,
        other => {
            notes.push(format!(
                "hoarding: another shopper could not order {HOARDED}: {other:?}"
            ));
            return;
        }
    };
    let id = order["order_id"].as_str().unwrap_or("?");
    let amount = order["amount"].as_i64().unwrap_or(0);
    match driver.pay(id, &format!("pay-{id}"), amount).await {
        Answer::Got(200, _) => {}
        other => notes.push(format!(
            "hoarding: another shopper's payment answered {other:?}"
        )),
    }
}

/// The catalog's stock of `sku`, read through `GET /api/products`.
async fn stock_of(driver: &Driver, sku: &str, notes: &mut Vec<String>) -> Option<i64> {
    match driver.get("/api/products").await {
        Answer::Got(200, Value::Array(products)) => {
            let stock = products
                .iter()
                .find(|p| p["sku"] == sku)
                .and_then(|p| p["stock"].as_i64());
            if stock.is_none() {
                notes.push(format!("the catalog has no stock figure for {sku}"));
            }
            stock
        }
        other => {
            notes.push(format!("GET /api/products answered {other:?}"));
            None
        }
    }
}

/// A guesser at the dashboard's sign-in: the first failures are 401, then
/// 429 `RATE_LIMITED` with `Retry-After` — and then even the right token is
/// not told apart while the limit lasts. Returns the calls made.
pub(super) async fn signin_guessing(driver: &Driver, notes: &mut Vec<String>) -> usize {
    let client = reqwest::Client::new();
    let signin = |token: String| {
        client
            .post(driver.url("/signin"))
            .json(&json!({ "token": token }))
            .send()
    };
    let mut calls = 0;
    let mut statuses = Vec::new();
    let allowed = shipped().limits_signin_failures_per_minute as usize;
    for guess in 0..allowed + 2 {
        calls += 1;
        match signin(format!("guess-{guess}")).await {
            Ok(answer) => {
                let retry_after = answer.headers().contains_key("retry-after");
                let status = answer.status().as_u16();
                let body: Value = answer.json().await.unwrap_or(Value::Null);
                statuses.push(status);
                let want = if guess < allowed {
                    (401, "UNAUTHENTICATED")
                } else {
                    (429, "RATE_LIMITED")
                };
                if (status, body["code"].as_str().unwrap_or("?")) != want {
                    notes.push(format!(
                        "sign-in guess {guess}: {status} {body}, want {} {}",
                        want.0, want.1
                    ));
                }
                if status == 429 && !retry_after {
                    notes.push("sign-in: 429 without Retry-After".into());
                }
            }
            Err(e) => notes.push(format!("sign-in guess {guess}: {e}")),
        }
    }
    calls += 1;
    match signin(DEMO_OPERATOR_TOKEN.to_owned()).await {
        Ok(answer) if answer.status().as_u16() == 429 => {}
        Ok(answer) => notes.push(format!(
            "sign-in: the right token was told apart while guessing was limited ({})",
            answer.status()
        )),
        Err(e) => notes.push(format!("sign-in with the right token: {e}")),
    }
    calls
}
