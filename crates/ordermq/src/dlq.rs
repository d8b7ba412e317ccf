//! `ordermq dlq list|replay|parked`: the operator's view of messages that
//! were not applied.
//!
//! RocketMQ moves a message to `%DLQ%<group>` after the group failed it
//! `max_reconsume_times` times and then forgets it. `list` reads those
//! messages from the broker and joins each with what ordermq recorded about
//! it: the last failure's reason, and whether the group has applied it since.
//! `replay` hands each not-yet-applied message to the group's own handler
//! ([`SystemHandler`]), in this process, with the configured third parties:
//! only that group sees it (republishing to the topic would reach all four),
//! and the inbox makes a replay of an applied message a no-op — replaying
//! twice changes nothing.
//!
//! The tool covers the four downstream systems' groups. The order service's
//! own two groups recover without it: a refund that exhausts its retries is
//! `FAILED` and retried with `POST /api/refunds/{id}/retry`, and an unpaid
//! order whose close was dead-lettered is closed by the sweep
//! (`close_sweep_interval`).
//!
//! A replay verifies each message's signature first, as the group's listener
//! does: a message that does not verify is reported `unverified` and not
//! applied.
//!
//! `parked` lists what consumer groups refused because it failed
//! verification (forged, unsigned, under an unknown key): never applied,
//! never replayable, kept with its reason. It lives here because `ordermq
//! dlq` is where an operator already looks for messages that were not
//! applied; it reads only the database (`list`'s JSON stays the DLQ's, and
//! its table ends with the parked count).
//!
//! The broker is the configured cluster (`namesrv_addr`) or, when unset, the
//! embedded broker of a running ordermq on this machine (its NameServer port).

use std::time::Duration;

use ordermq_domain::System;
use ordermq_domain::parked::ParkedMessage;
use ordermq_domain::ports::{Handler, Outcome};
use ordermq_domain::signing::Keyring;
use ordermq_messaging::{ClientSecurity, DeadLetter, MqClient};
use ordermq_store::Store;
use serde::Serialize;

use crate::config::Config;
use crate::gateways::{Gateways, GatewaysError};
use ordermq_service::EffectWriter;
use ordermq_service::consumers::SystemHandler;

/// How long reading one DLQ may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One dead-lettered message and what ordermq knows about it.
#[derive(Debug, Clone, Serialize)]
pub struct DlqEntry {
    pub group: String,
    pub msg_id: String,
    pub event_id: String,
    pub order_id: String,
    /// Deliveries the group failed before giving up.
    pub attempts: i64,
    pub dead_lettered_at: i64,
    /// The last failure recorded by the group (empty once applied by a replay).
    pub reason: String,
    /// `pending`: not applied; `applied`: the group applied it since (a replay).
    pub state: &'static str,
}

/// The result of replaying one message.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayOutcome {
    pub group: String,
    pub event_id: String,
    pub order_id: String,
    /// `applied`, `already_applied`, `failed` or `unverified` (its signature
    /// does not hold: not applied).
    pub result: &'static str,
    pub reason: String,
}

/// What went wrong running a DLQ command.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("unknown consumer group {0:?}: expected one of {groups}", groups = system_groups())]
    UnknownGroup(String),
    #[error(transparent)]
    EventKeys(#[from] crate::event_keys::EventKeysError),
    #[error(transparent)]
    Store(#[from] ordermq_store::OpenError),
    #[error("cannot set up the third parties")]
    Gateways(#[from] GatewaysError),
    #[error("database: {0}")]
    Storage(#[from] ordermq_domain::ports::StorageError),
    #[error("RocketMQ ({namesrv}): {source}")]
    Mq {
        namesrv: String,
        source: ordermq_messaging::MqError,
    },
}

/// The downstream systems' group names, from the topology table: `a, b, …`.
fn system_groups() -> String {
    System::ALL
        .iter()
        .map(|system| system.consumer_group())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The systems named by `--group` (all four when absent).
pub fn systems(group: Option<&str>) -> Result<Vec<System>, DlqError> {
    match group {
        None => Ok(System::ALL.to_vec()),
        Some(g) => System::ALL
            .into_iter()
            .find(|s| s.consumer_group() == g || s.name() == g)
            .map(|s| vec![s])
            .ok_or_else(|| DlqError::UnknownGroup(g.to_owned())),
    }
}

/// The NameServer the tool talks to.
pub fn namesrv_of(config: &Config) -> String {
    config
        .namesrv_addr
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", config.embedded_namesrv_port))
}

/// A connected tool: the store and a RocketMQ client.
struct Tool {
    store: Store,
    mq: MqClient,
    namesrv: String,
    /// The event keys: replays verify with them, and marketing keys coupon codes.
    keys: Keyring,
}

impl Tool {
    async fn open(config: &Config) -> Result<Self, DlqError> {
        let keys = crate::event_keys::event_keys(config)?;
        let store = Store::open(&config.database_url(), &config.store_options()).await?;
        let namesrv = namesrv_of(config);
        // Reads only: no event keys on the client (nothing is published or subscribed).
        let security = ClientSecurity {
            acl: config.rocketmq_acl(),
            ..ClientSecurity::default()
        };
        let mq = MqClient::connect_with(
            &namesrv,
            "ordermq_dlq_tool",
            config.delayed_delivery(),
            security,
        )
        .await
        .map_err(|source| DlqError::Mq {
            namesrv: namesrv.clone(),
            source,
        })?;
        Ok(Self {
            store,
            mq,
            namesrv,
            keys,
        })
    }

    async fn letters(&self, system: System) -> Result<Vec<DeadLetter>, DlqError> {
        // Boxed: the RocketMQ pull consumer's future is deep enough that the
        // layout of every caller's future would pass the compiler's query
        // depth limit.
        Box::pin(self.mq.dead_letters(system.consumer_group(), READ_TIMEOUT))
            .await
            .map_err(|source| DlqError::Mq {
                namesrv: self.namesrv.clone(),
                source,
            })
    }

    async fn entries(&self, system: System) -> Result<Vec<DlqEntry>, DlqError> {
        let failures = self.store.failures(system).await?;
        let mut entries = Vec::new();
        for letter in self.letters(system).await? {
            let event_id = event_id_of(&letter);
            let failure = failures.iter().find(|f| f.event_id == event_id);
            let applied = self.store.is_applied(system, &event_id).await?;
            entries.push(DlqEntry {
                group: system.consumer_group().to_owned(),
                msg_id: letter.msg_id.clone(),
                order_id: letter.key.clone(),
                attempts: i64::from(letter.reconsume_times),
                dead_lettered_at: letter.stored_at,
                reason: failure.map(|f| f.last_error.clone()).unwrap_or_default(),
                state: if applied { "applied" } else { "pending" },
                event_id,
            });
        }
        Ok(entries)
    }

    async fn close(self) {
        self.mq.shutdown().await;
        self.store.close().await;
    }
}

fn event_id_of(letter: &DeadLetter) -> String {
    letter
        .event_id
        .clone()
        .unwrap_or_else(|| format!("{}:{}", letter.tag, letter.key))
}

/// Every dead-lettered message of `systems`, with its reason and state.
pub async fn list(config: &Config, systems: &[System]) -> Result<Vec<DlqEntry>, DlqError> {
    let tool = Tool::open(config).await?;
    let mut all = Vec::new();
    let mut result = Ok(());
    for &system in systems {
        match tool.entries(system).await {
            Ok(entries) => all.extend(entries),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    tool.close().await;
    result.map(|()| all)
}

/// Applies every not-yet-applied dead-lettered message of `systems` through
/// its group's handler. Messages already applied are reported and skipped.
pub async fn replay(config: &Config, systems: &[System]) -> Result<Vec<ReplayOutcome>, DlqError> {
    let gateways = Gateways::from_config(config)?;
    gateways.warn_about_fakes();
    let tool = Tool::open(config).await?;
    let mut outcomes = Vec::new();
    let mut result = Ok(());
    'systems: for &system in systems {
        let letters = match tool.letters(system).await {
            Ok(letters) => letters,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let (writer, task) = EffectWriter::spawn(tool.store.clone());
        let handler = SystemHandler::new(
            system,
            tool.store.clone(),
            writer,
            gateways.for_systems(),
            tool.keys.clone(),
        );
        for letter in letters {
            let event_id = event_id_of(&letter);
            let outcome = |result, reason: String| ReplayOutcome {
                group: system.consumer_group().to_owned(),
                event_id: event_id.clone(),
                order_id: letter.key.clone(),
                result,
                reason,
            };
            if let Err(refused) = letter.verify(&tool.keys) {
                tracing::warn!(group = system.consumer_group(), event_id, reason = %refused, "not replaying a message that fails verification");
                outcomes.push(outcome("unverified", refused.to_string()));
                continue;
            }
            match tool.store.is_applied(system, &event_id).await {
                Ok(true) => outcomes.push(outcome("already_applied", String::new())),
                Ok(false) => match handler.handle(vec![letter.to_delivery()]).await {
                    Outcome::Consumed => outcomes.push(outcome("applied", String::new())),
                    Outcome::RetryLater(reason) => outcomes.push(outcome("failed", reason)),
                    // Left in the DLQ with its reason: replay it again once
                    // the event it waits for is applied.
                    Outcome::Waiting(waiting) => outcomes.push(outcome("failed", waiting.reason)),
                },
                Err(e) => {
                    result = Err(e.into());
                    break 'systems;
                }
            }
        }
        drop(handler);
        let _ = task.await;
    }
    tool.close().await;
    result.map(|()| outcomes)
}

/// `list` as a table.
pub fn render_list(entries: &[DlqEntry]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<16} {:<28} {:>8} {:<8} {}\n",
        "GROUP", "EVENT", "ATTEMPTS", "STATE", "REASON"
    );
    for e in entries {
        let _ = writeln!(
            out,
            "{:<16} {:<28} {:>8} {:<8} {}",
            e.group,
            e.event_id,
            e.attempts,
            e.state,
            if e.reason.is_empty() { "-" } else { &e.reason }
        );
    }
    let _ = writeln!(out, "{} dead-lettered message(s)", entries.len());
    out
}

/// `replay` as a table plus a summary line.
pub fn render_replay(outcomes: &[ReplayOutcome]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for o in outcomes {
        let _ = writeln!(
            out,
            "{:<16} {:<28} {:<16} {}",
            o.group, o.event_id, o.result, o.reason
        );
    }
    let count = |r: &str| outcomes.iter().filter(|o| o.result == r).count();
    let _ = write!(
        out,
        "replayed {}: {} applied, {} already applied, {} failed",
        outcomes.len(),
        count("applied"),
        count("already_applied"),
        count("failed")
    );
    match count("unverified") {
        0 => out.push('\n'),
        n => {
            let _ = writeln!(out, ", {n} unverified (not applied)");
        }
    }
    out
}

/// Messages consumer groups parked because they failed verification, oldest
/// first: of `group` (any of the six) or of all. Reads the database only.
pub async fn parked(config: &Config, group: Option<&str>) -> Result<Vec<ParkedMessage>, DlqError> {
    if let Some(group) = group
        && !ordermq_domain::CONSUMER_GROUPS
            .iter()
            .any(|g| g.name == group)
    {
        return Err(DlqError::UnknownGroup(group.to_owned()));
    }
    let store = Store::open(&config.database_url(), &config.store_options()).await?;
    let parked = store.parked(group).await;
    store.close().await;
    Ok(parked?)
}

/// How many messages are parked, for the line `list` ends with.
pub async fn parked_count(config: &Config) -> Result<i64, DlqError> {
    let store = Store::open(&config.database_url(), &config.store_options()).await?;
    let counts = store.parked_counts().await;
    store.close().await;
    Ok(counts?.values().sum())
}

/// `parked` as a table.
pub fn render_parked(parked: &[ParkedMessage]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<20} {:<28} {:<22} {:<18} {}\n",
        "GROUP", "EVENT", "KEY", "REASON", "MSG ID"
    );
    for p in parked {
        let _ = writeln!(
            out,
            "{:<20} {:<28} {:<22} {:<18} {}",
            p.group,
            p.event_id.as_deref().unwrap_or("-"),
            if p.key.is_empty() { "-" } else { &p.key },
            p.reason,
            p.msg_id
        );
    }
    let _ = writeln!(
        out,
        "{} parked message(s): failed verification, never applied",
        parked.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_named_by_group_or_system() {
        assert_eq!(systems(None).unwrap().len(), 4);
        assert_eq!(
            systems(Some("warehouse_group")).unwrap(),
            vec![System::Warehouse]
        );
        assert_eq!(systems(Some("push")).unwrap(), vec![System::Push]);
        let unknown = systems(Some("nope")).unwrap_err();
        assert!(matches!(unknown, DlqError::UnknownGroup(_)));
        assert_eq!(
            unknown.to_string(),
            "unknown consumer group \"nope\": expected one of credit_group, marketing_group, push_group, warehouse_group"
        );
    }

    #[test]
    fn list_and_replay_render_the_reason_state_and_a_summary() {
        let entries = vec![DlqEntry {
            group: "warehouse_group".into(),
            msg_id: "m1".into(),
            event_id: "OrderPaid:O1".into(),
            order_id: "O1".into(),
            attempts: 2,
            dead_lettered_at: 5,
            reason: "logistics system failed: simulated failure".into(),
            state: "pending",
        }];
        let table = render_list(&entries);
        assert!(table.contains("OrderPaid:O1"));
        assert!(table.contains("pending  logistics system failed: simulated failure"));
        assert!(table.ends_with("1 dead-lettered message(s)\n"));
        let outcomes = vec![
            ReplayOutcome {
                group: "warehouse_group".into(),
                event_id: "OrderPaid:O1".into(),
                order_id: "O1".into(),
                result: "applied",
                reason: String::new(),
            },
            ReplayOutcome {
                group: "warehouse_group".into(),
                event_id: "OrderPaid:O2".into(),
                order_id: "O2".into(),
                result: "already_applied",
                reason: String::new(),
            },
        ];
        assert!(
            render_replay(&outcomes)
                .ends_with("replayed 2: 1 applied, 1 already applied, 0 failed\n")
        );
    }

    #[test]
    fn the_tool_finds_the_embedded_nameserver_when_no_cluster_is_set() {
        let config = Config {
            embedded_namesrv_port: 4321,
            ..Config::default()
        };
        assert_eq!(namesrv_of(&config), "127.0.0.1:4321");
    }
}
