//! Scenario 5, `last-unit`: a stampede of concurrent buyers for the last unit
//! of one product and the last five of another; the winners pay twice at once.
//!
//! Overselling is a race, not a crash, so it needs its own trial: many
//! orders landing on one stock row at the same instant, where only a guarded
//! update (never a read then a write) lets exactly as many win as there are
//! units.

use futures_util::future::join_all;
use ordermq_store::DemoProduct;
use serde_json::Value;

use super::TrialOutcome;
use crate::checker::Expectations;
use crate::driver::Answer;
use crate::{Options, Trial, catalog_stock};

/// Scenario 5: The last unit (and the last five) with many concurrent buyers.
pub(super) async fn last_unit(options: &Options) -> TrialOutcome {
    let products = [
        DemoProduct {
            sku: "LAST-1",
            name: "The last one",
            price: 5_000,
            stock: 1,
        },
        DemoProduct {
            sku: "LAST-5",
            name: "The last five",
            price: 700,
            stock: 5,
        },
    ];
    let mut trial = Trial::new(options, false).await?;
    trial.seed(&products).await?;
    trial.start_ordermq().await?;
    let driver = trial.driver.clone();
    let mut notes = Vec::new();
    let mut contenders = 0;
    for product in &products {
        let n = 64;
        contenders += n;
        let creates = join_all((0..n).map(|i| {
            let driver = driver.clone();
            async move {
                driver
                    .create(&format!("buyer-{i}"), &[(product.sku, 1)])
                    .await
            }
        }))
        .await;
        let winners: Vec<(String, i64)> = creates
            .iter()
            .filter_map(|a| match a {
                Answer::Got(201, o) => Some((
                    o["order_id"].as_str().unwrap_or("?").to_owned(),
                    o["amount"].as_i64().unwrap_or(0),
                )),
                _ => None,
            })
            .collect();
        let out_of_stock = creates
            .iter()
            .filter(|a| matches!(a, Answer::Got(409, b) if b["code"] == "OUT_OF_STOCK"))
            .count();
        if winners.len() as i64 != product.stock || winners.len() + out_of_stock != n {
            notes.push(format!(
                "{}: {} orders won and {out_of_stock} were OUT_OF_STOCK of {n}, stock {}",
                product.sku,
                winners.len(),
                product.stock
            ));
        }
        // Winners pay, each twice at once (a gateway retry racing the first).
        let pays: Vec<(String, i64)> = winners
            .iter()
            .flat_map(|w| [w.clone(), w.clone()])
            .collect();
        join_all(pays.into_iter().map(|(id, amount)| {
            let driver = driver.clone();
            async move { driver.pay(&id, &format!("pay-{id}"), amount).await }
        }))
        .await;
    }
    let drained = trial.wait_drained(options.drain_timeout).await;
    let stock: Vec<(String, i64)> = match trial.driver.get("/api/products").await {
        Answer::Got(200, Value::Array(list)) => list
            .iter()
            .map(|p| {
                (
                    p["sku"].as_str().unwrap_or("").to_owned(),
                    p["stock"].as_i64().unwrap_or(-1),
                )
            })
            .filter(|(sku, _)| sku.starts_with("LAST-"))
            .collect(),
        _ => Vec::new(),
    };
    options.say(format!(
        "  {contenders} contenders, stock left {stock:?}, drained: {drained}"
    ));
    if stock.iter().any(|(_, s)| *s != 0) {
        notes.push(format!("stock left after selling out: {stock:?}"));
    }
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&products),
            ..Expectations::default()
        })
        .await?;
    verdict.violations.extend(notes);
    Ok((verdict, contenders, trial))
}
