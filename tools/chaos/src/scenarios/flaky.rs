//! Scenario 3, `flaky`: the SMS gateway and the carrier failing 30 % of calls
//! under load; then the carrier down for good, so five paid orders' shipments
//! reach the dead-letter queue, are listed, replayed once the carrier is
//! back, and replayed again to no effect.
//!
//! It is the one scenario that runs the operator's tools (`ordermq dlq list`
//! and `replay`) as well as the server, so its trial is a sequence of steps,
//! each a function here: [`flaky_load`], [`dead_letter_orders`],
//! [`wait_dead_lettered`], [`list_dead_letters`] and [`replay_twice`].

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::TrialOutcome;
use crate::checker::Expectations;
use crate::driver::{Answer, Load, LoadOptions};
use crate::process::{count_in_log, run_to_end};
use crate::{ChaosError, Options, Trial, catalog_stock};

/// How many orders are paid while the carrier is down for good.
const DOOMED: usize = 5;

/// `ordermq dlq list` for the carrier's consumer group.
const LIST_ARGS: [&str; 5] = ["dlq", "list", "--group", "warehouse_group", "--json"];

/// `ordermq dlq replay` for the carrier's consumer group.
const REPLAY_ARGS: [&str; 5] = ["dlq", "replay", "--group", "warehouse_group", "--json"];

/// Parses the JSON a `ordermq dlq` command printed.
fn dlq_json(stdout: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// Scenario 3: Flaky third parties, then one down for good: DLQ, list, replay, replay again.
pub(super) async fn flaky(options: &Options) -> TrialOutcome {
    let mut trial = Trial::new(options, false).await?;
    let failed_calls = flaky_load(&mut trial, options).await?;
    let mut notes = Vec::new();
    if failed_calls == 0 {
        notes.push("no third-party call failed: the fault was not injected".into());
    }
    let doomed = dead_letter_orders(&mut trial).await?;
    wait_dead_lettered(&trial, options, doomed.len()).await;
    let env = trial.env();
    let listed = list_dead_letters(&trial.bin, &env, &doomed, &mut notes).await?;
    let (applied, again) = replay_twice(&trial.bin, &env, doomed.len(), &mut notes).await?;
    options.say(format!(
        "  dlq list: {} messages; replay: {applied} applied; replay again: {again} already applied",
        listed.len()
    ));
    trial.wait_drained(Duration::from_secs(10)).await;
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            ..Expectations::default()
        })
        .await?;
    verdict.violations.extend(notes);
    Ok((verdict, failed_calls + doomed.len(), trial))
}

/// SMS and logistics failing 30 % of calls under load, then drained: returns
/// how many deliveries failed and were retried (from ordermq's log).
async fn flaky_load(trial: &mut Trial, options: &Options) -> Result<usize, ChaosError> {
    trial.set("sms_failure_rate", "0.3");
    trial.set("logistics_failure_rate", "0.3");
    trial.start_ordermq().await?;
    let load = Load::start(
        &trial.driver,
        LoadOptions {
            workers: 4,
            ..LoadOptions::default()
        },
    );
    tokio::time::sleep(options.load_phase * 2).await;
    load.stop().await;
    let drained = trial.wait_drained(options.drain_timeout).await;
    let failed_calls = count_in_log(&trial.log(), "delivery failed; RocketMQ will retry");
    options.say(format!(
        "  30 % failures: {failed_calls} failed deliveries retried; drained: {drained}"
    ));
    Ok(failed_calls)
}

/// The carrier goes down for good (2 redeliveries, then the DLQ): ordermq
/// restarts so, and [`DOOMED`] orders are created and paid. Returns the ids
/// of those whose payment was acknowledged.
async fn dead_letter_orders(trial: &mut Trial) -> Result<Vec<String>, ChaosError> {
    trial.stop_ordermq().await;
    trial.set("sms_failure_rate", "0");
    trial.set("logistics_failure_rate", "1");
    trial.set("max_reconsume_times", "2");
    trial.start_ordermq().await?;
    let mut doomed = Vec::new();
    for i in 0..DOOMED {
        if let Answer::Got(201, order) = trial.driver.create("chaos-dlq", &[("SKU-2", 1)]).await {
            let id = order["order_id"].as_str().unwrap_or("?").to_owned();
            let amount = order["amount"].as_i64().unwrap_or(0);
            if let Answer::Got(200, _) =
                trial.driver.pay(&id, &format!("pay-dlq-{i}"), amount).await
            {
                doomed.push(id);
            }
        }
    }
    Ok(doomed)
}

/// Waits (up to the drain timeout) until the warehouse group has given up on
/// `doomed` events, and says how many it did.
async fn wait_dead_lettered(trial: &Trial, options: &Options, doomed: usize) {
    let deadline = Instant::now() + options.drain_timeout;
    let mut dead = 0;
    while Instant::now() < deadline {
        dead = trial
            .stats()
            .await
            .and_then(|s| s["systems"]["warehouse"]["failed"].as_i64())
            .unwrap_or(0);
        if dead >= doomed as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    options.say(format!(
        "  logistics down: {dead} of {doomed} dead-lettered"
    ));
}

/// `ordermq dlq list`, tried up to 40 times half a second apart until it
/// shows every doomed order: each must be there, pending, with its reason.
/// Returns what it listed last.
async fn list_dead_letters(
    bin: &Path,
    env: &[(String, String)],
    doomed: &[String],
    notes: &mut Vec<String>,
) -> Result<Vec<Value>, ChaosError> {
    // The DLQ message is stored once the broker gets the last failure back;
    // give it a moment after ordermq recorded the failure.
    let mut listed = Vec::new();
    for _ in 0..40 {
        let (ok, stdout, stderr) = run_to_end(bin, &LIST_ARGS, env).await?;
        if !ok {
            notes.push(format!("`ordermq dlq list` failed: {stderr}"));
            break;
        }
        listed = dlq_json(&stdout);
        if listed.len() >= doomed.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for id in doomed {
        let entry = listed.iter().find(|e| e["order_id"] == id.as_str());
        match entry {
            Some(e)
                if e["state"] == "pending"
                    && e["reason"]
                        .as_str()
                        .unwrap_or("")
                        .contains("simulated failure") => {}
            other => notes.push(format!(
                "order {id}: `dlq list` shows {other:?}, expected it pending with its reason"
            )),
        }
    }
    if listed.len() != doomed.len() {
        notes.push(format!(
            "`dlq list` shows {} messages, expected {}",
            listed.len(),
            doomed.len()
        ));
    }
    Ok(listed)
}

/// The carrier recovers: `ordermq dlq replay` applies each dead letter
/// exactly once; a second replay changes nothing; `dlq list` then shows
/// nothing pending. Returns (applied by the first, already applied per the
/// second).
async fn replay_twice(
    bin: &Path,
    env: &[(String, String)],
    doomed: usize,
    notes: &mut Vec<String>,
) -> Result<(usize, usize), ChaosError> {
    let mut recovered = env.to_vec();
    recovered.retain(|(k, _)| k != "ORDERMQ_LOGISTICS_FAILURE_RATE");
    recovered.push(("ORDERMQ_LOGISTICS_FAILURE_RATE".into(), "0".into()));
    let (ok, stdout, stderr) = run_to_end(bin, &REPLAY_ARGS, &recovered).await?;
    let first = dlq_json(&stdout);
    let applied = first.iter().filter(|o| o["result"] == "applied").count();
    if !ok || applied != doomed {
        notes.push(format!(
            "first replay applied {applied} of {doomed} (exit ok: {ok}): {stdout} {stderr}"
        ));
    }
    let (ok, stdout, stderr) = run_to_end(bin, &REPLAY_ARGS, &recovered).await?;
    let second = dlq_json(&stdout);
    let again = second
        .iter()
        .filter(|o| o["result"] == "already_applied")
        .count();
    if !ok || again != doomed || second.len() != doomed {
        notes.push(format!(
            "second replay: {again} already applied of {doomed} (exit ok: {ok}): {stdout} {stderr}"
        ));
    }
    let (_, stdout, _) = run_to_end(bin, &LIST_ARGS, env).await?;
    let after = dlq_json(&stdout);
    if after.iter().any(|e| e["state"] != "applied") {
        notes.push(format!(
            "after replay, `dlq list` still shows pending messages: {stdout}"
        ));
    }
    Ok((applied, again))
}
