//! Scenario 4, `redelivery`: every payment callback sent three times, all
//! shuffled together, some orders paid twice by different payments at once;
//! then the broker's consumer offsets deleted, so every group receives every
//! message again from offset zero.
//!
//! At-least-once delivery is the broker's promise, exactly-once effects are
//! ordermq's: this scenario feeds it nothing but repeats (callbacks and
//! messages) and checks they changed nothing. Its trial is a sequence of
//! steps, each a function here: [`create_orders`], [`Callbacks::plan`],
//! [`send_callbacks`], [`reset_offsets`] and [`wait_redelivered`].

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ordermq_domain::System;

use super::TrialOutcome;
use crate::checker::Expectations;
use crate::driver::{Answer, Driver};
use crate::{ChaosError, Options, Trial, catalog_stock};

/// Scenario 4: Redelivery of everything (consumer offsets reset to zero), duplicate
/// and reordered callbacks, and two payments for one order.
pub(super) async fn redelivery(options: &Options) -> TrialOutcome {
    let mut trial = Trial::new(options, false).await?;
    trial.start_ordermq().await?;
    let driver = trial.driver.clone();
    let mut notes = Vec::new();

    let orders = create_orders(&driver).await;
    let callbacks = Callbacks::plan(&orders);
    send_callbacks(&driver, &callbacks.notices, &mut notes).await;
    let drained = trial.wait_drained(options.drain_timeout).await;

    reset_offsets(&mut trial, &mut notes).await;
    let redelivered = wait_redelivered(&mut trial, options, callbacks.paid, &mut notes).await?;
    let doubles = callbacks.doubles;
    options.say(format!(
        "  {} callbacks ({doubles} second payments), drained: {drained}; offsets reset: {redelivered} redeliveries skipped",
        callbacks.notices.len()
    ));
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            ..Expectations::default()
        })
        .await?;
    if verdict.refunds_flagged != doubles {
        verdict.violations.push(format!(
            "{doubles} second payments but {} flagged for refund",
            verdict.refunds_flagged
        ));
    }
    verdict.violations.extend(notes);
    Ok((verdict, redelivered + callbacks.notices.len(), trial))
}

/// 60 orders of SKU-4 by seven users: (order id, amount) of each created.
async fn create_orders(driver: &Driver) -> Vec<(String, i64)> {
    let mut orders = Vec::new();
    for i in 0..60 {
        if let Answer::Got(201, o) = driver
            .create(
                &format!("chaos-r{}", i % 7),
                &[("SKU-4", 1 + (i % 3) as i64)],
            )
            .await
        {
            orders.push((
                o["order_id"].as_str().unwrap_or("?").to_owned(),
                o["amount"].as_i64().unwrap_or(0),
            ));
        }
    }
    orders
}

/// The payment callbacks of the trial, shuffled.
struct Callbacks {
    /// (order id, payment id, amount) of each callback to send.
    notices: Vec<(String, String, i64)>,
    /// Orders also paid by a second, different payment.
    doubles: usize,
    /// Orders paid at all.
    paid: usize,
}

impl Callbacks {
    /// Every order's callback 3 times, all shuffled together; every sixth
    /// order never paid, every fifth also paid by a second payment.
    fn plan(orders: &[(String, i64)]) -> Self {
        let mut notices = Vec::new();
        let mut doubles = 0;
        let mut paid = 0;
        for (i, (id, amount)) in orders.iter().enumerate() {
            if i % 6 == 5 {
                continue; // never paid
            }
            paid += 1;
            for _ in 0..3 {
                notices.push((id.clone(), format!("pay-{id}"), *amount));
            }
            if i % 5 == 0 {
                notices.push((id.clone(), format!("pay2-{id}"), *amount));
                doubles += 1;
            }
        }
        fastrand::shuffle(&mut notices);
        Self {
            notices,
            doubles,
            paid,
        }
    }
}

/// Sends the callbacks 16 at a time (so a second payment races the first)
/// and checks exactly one answer per order reported a transition: a 200
/// neither duplicate nor refund_required.
async fn send_callbacks(
    driver: &Driver,
    notices: &[(String, String, i64)],
    notes: &mut Vec<String>,
) {
    let answers = join_all(notices.chunks(16).map(|chunk| {
        let driver = driver.clone();
        let chunk = chunk.to_vec();
        async move {
            let mut answers = Vec::new();
            for (id, payment, amount) in chunk {
                answers.push((id.clone(), driver.pay(&id, &payment, amount).await));
            }
            answers
        }
    }))
    .await;
    // Exactly one transition per order: one non-duplicate, non-refund 200 each.
    let mut transitions = HashMap::<String, usize>::new();
    for (id, answer) in answers.into_iter().flatten() {
        if let Answer::Got(200, receipt) = answer
            && receipt["duplicate"] == false
            && receipt["refund_required"] == false
        {
            *transitions.entry(id).or_default() += 1;
        }
    }
    if let Some((id, n)) = transitions.iter().find(|(_, n)| **n != 1) {
        notes.push(format!("order {id}: {n} answers reported a transition"));
    }
}

/// Resets every consumer group's offsets to the beginning: stops ordermq and
/// deletes the broker's consumer offsets. Every message is delivered again
/// at the next start.
async fn reset_offsets(trial: &mut Trial, notes: &mut Vec<String>) {
    trial.stop_ordermq().await;
    let config = trial
        .data_dir()
        .join("rocketmq")
        .join("store")
        .join("config");
    let mut removed = 0;
    for name in ["consumerOffset.json", "consumerOffset.json.bak"] {
        if std::fs::remove_file(config.join(name)).is_ok() {
            removed += 1;
        }
    }
    if removed == 0 {
        notes.push(format!(
            "no consumer offset file under {}: offsets not reset",
            config.display()
        ));
    }
}

/// Starts ordermq again and waits (up to the drain timeout) until every
/// group has seen every paid order's event again and skipped it. Returns how
/// many redeliveries were skipped.
async fn wait_redelivered(
    trial: &mut Trial,
    options: &Options,
    paid: usize,
    notes: &mut Vec<String>,
) -> Result<usize, ChaosError> {
    let skipped_before = skipped_in_log(&trial.log());
    trial.start_ordermq().await?;
    // Every group sees every event again: wait until the redeliveries were skipped.
    let deadline = Instant::now() + options.drain_timeout;
    let mut redelivered = 0;
    while Instant::now() < deadline {
        redelivered = skipped_in_log(&trial.log()) - skipped_before;
        if redelivered >= paid * System::ALL.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if redelivered < paid * System::ALL.len() {
        notes.push(format!(
            "after the offset reset only {redelivered} of {} redeliveries were seen",
            paid * System::ALL.len()
        ));
    }
    Ok(redelivered)
}

/// Sum of `skipped=N` over the "already applied; skipped" log lines.
fn skipped_in_log(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("redelivered events already applied; skipped"))
        .filter_map(|l| {
            l.split("skipped=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<usize>().ok())
        })
        .sum()
}
