//! Scenario 11, `poison`: messages no group can ever apply, signed under
//! ordermq's own event key (so they pass verification) and published
//! straight to the broker under load, between real payments, refunds and
//! closes: bodies that are not JSON, JSON that is no event, an event with
//! fields missing — on the payment, refund and close topics.
//!
//! A message that cannot be decoded is the same on every retry. Answered
//! "retry later" it would come back `max_reconsume_times` times, holding
//! back each batch it arrives in (the batch is retried with it) and end in
//! a dead-letter queue. So every group that reads such a topic must park it
//! on its own (`ordermq dlq parked`, reason `undecodable`), once, and apply
//! the rest of its batch. After the trial: each poison message parked by
//! every group subscribed to its tag (from the topology table) and by no
//! other, and the checker's usual rules — nothing lost or doubled, no
//! pending dead letter, every close fired and every refund done.

use std::collections::{BTreeMap, BTreeSet};

use ordermq_domain::topology::CONSUMER_GROUPS;
use ordermq_domain::{EventKind, OutboxMessage};
use ordermq_testkit::events;

use super::{TrialOutcome, closes_soon, settle};
use crate::checker::Expectations;
use crate::driver::{Load, LoadOptions};
use crate::{ChaosError, Options, Trial, catalog_stock};

/// Rounds of poison, one per load phase.
const ROUNDS: usize = 3;

/// The bodies of one round: none of them an event.
const BODIES: [&str; 3] = [
    "{not json",
    r#"{"hello":"this is no event"}"#,
    r#"{"type":"OrderPaid","order_id":"O-poison"}"#,
];

/// The kinds whose topic and tag the poison is sent under.
const KINDS: [EventKind; 3] = [
    EventKind::OrderPaid,
    EventKind::OrderRefundRequested,
    EventKind::OrderCloseDue,
];

/// The groups that receive a message of `kind`.
fn receivers(kind: EventKind) -> BTreeSet<&'static str> {
    CONSUMER_GROUPS
        .iter()
        .filter(|g| g.subscriptions.iter().any(|s| s.kinds.contains(&kind)))
        .map(|g| g.name)
        .collect()
}

/// Scenario 11: undecodable messages among real ones, under load.
pub(super) async fn poison(options: &Options) -> TrialOutcome {
    let mut trial = Trial::new(options, false).await?;
    closes_soon(&mut trial);
    trial.start_ordermq().await?;
    let config = ordermq::Config::load_from(None, trial.env())
        .map_err(|e| ChaosError::Setup(format!("the trial's configuration: {e}")))?;
    let keys = ordermq::event_keys::event_keys(&config)
        .map_err(|e| ChaosError::Setup(format!("the trial's event key: {e}")))?;
    let namesrv = format!("127.0.0.1:{}", trial.ports.namesrv);
    let load = Load::start(
        &trial.driver,
        LoadOptions {
            refund_probability: 0.1,
            ..LoadOptions::default()
        },
    );
    // Each poison message's key, with the groups that must park it.
    let mut expected: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    let result = async {
        for round in 0..ROUNDS {
            tokio::time::sleep(options.load_phase).await;
            for kind in KINDS {
                for (n, body) in BODIES.iter().enumerate() {
                    let key = format!("poison-{round}-{}-{n}", kind.tag());
                    let message = OutboxMessage {
                        id: 0,
                        topic: kind.topic().to_owned(),
                        tag: kind.tag().to_owned(),
                        key: key.clone(),
                        event_id: format!("Poison:{key}"),
                        body: (*body).to_owned(),
                        deliver_at: None,
                        attempts: 0,
                    };
                    events::publish_as(&namesrv, Some(keys.clone()), &message)
                        .await
                        .map_err(|e| ChaosError::Process(format!("publishing {key}: {e}")))?;
                    expected.insert(key, receivers(kind));
                }
            }
        }
        tokio::time::sleep(options.load_phase).await;
        Ok::<(), ChaosError>(())
    }
    .await;
    load.stop().await;
    result?;
    let (drained, settled) = settle(&trial, options).await;
    // Parked by whom, per poison key (read while ordermq still runs: a
    // parked row is written before its batch is acknowledged).
    let store = trial.open_store().await?;
    let parked = store
        .parked(None)
        .await
        .map_err(|e| ChaosError::Setup(format!("cannot read the parked messages: {e}")));
    store.close().await;
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for message in parked? {
        seen.entry(message.key).or_default().insert(message.group);
    }
    let mut notes = Vec::new();
    let mut parkings = 0;
    for (key, groups) in &expected {
        let got = seen.remove(key).unwrap_or_default();
        parkings += got.len();
        let want: BTreeSet<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        if got != want {
            notes.push(format!(
                "poison {key}: parked by {got:?}, every group that receives it is {want:?}"
            ));
        }
    }
    for (key, groups) in seen {
        notes.push(format!(
            "a message nobody sent as poison was parked: {key} by {groups:?}"
        ));
    }
    options.say(format!(
        "  {} poison messages, {parkings} parkings; drained: {drained}, closes and refunds settled: {settled}",
        expected.len()
    ));
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            closes_due: true,
            ..Expectations::default()
        })
        .await?;
    verdict.figures.push(format!("poison parked: {parkings}"));
    verdict.violations.extend(notes);
    Ok((verdict, expected.len(), trial))
}
