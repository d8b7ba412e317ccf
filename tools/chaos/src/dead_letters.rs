//! What the trial's dead-letter queues hold when it ends.
//!
//! The checker reads the databases: it sees an effect missing, not that the
//! message which carried it was given up on. A message RocketMQ moved to a
//! group's `%DLQ%` is one no retry will ever bring back; in a trial only the
//! ones the scenario dooms on purpose (its
//! [`Expectations::dead_letter_allowed`]) may be there and still pending.
//! So [`Trial::finish`](crate::Trial::finish) runs the operator's own tool,
//! `ordermq dlq list --json`, over every system's group while ordermq and
//! the broker still run, and each pending letter not allowed is a violation
//! of its own — also when another delivery applied the same event, or the
//! event was one the checker has no rule for.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use crate::ChaosError;
use crate::checker::Expectations;
use crate::process::run_to_end;

/// `ordermq dlq list` over every system's consumer group.
const LIST_ARGS: [&str; 3] = ["dlq", "list", "--json"];

/// One entry of `ordermq dlq list --json` (the fields the check reads).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Letter {
    pub group: String,
    pub event_id: String,
    pub order_id: String,
    /// `pending` (not applied) or `applied` (applied since, by a replay).
    pub state: String,
    pub reason: String,
}

/// Every dead letter of every system's group, as `ordermq dlq list` shows them.
///
/// # Errors
///
/// [`ChaosError::Process`] if the command fails or prints something that is
/// not its JSON list.
pub async fn list(bin: &Path, env: &[(String, String)]) -> Result<Vec<Letter>, ChaosError> {
    let (ok, stdout, stderr) = run_to_end(bin, &LIST_ARGS, env).await?;
    if !ok {
        return Err(ChaosError::Process(format!(
            "`ordermq dlq list` failed: {}",
            stderr.trim()
        )));
    }
    serde_json::from_str(&stdout).map_err(|e| {
        ChaosError::Process(format!(
            "`ordermq dlq list --json` printed something else ({e}): {}",
            stdout.chars().take(200).collect::<String>()
        ))
    })
}

/// One violation per pending letter the scenario did not doom on purpose.
pub fn unexpected(letters: &[Letter], expect: &Expectations) -> Vec<String> {
    let allowed: BTreeSet<(&str, &str)> = expect
        .dead_letter_allowed
        .iter()
        .map(|(system, order)| (system.consumer_group(), order.as_str()))
        .collect();
    letters
        .iter()
        .filter(|l| l.state == "pending")
        .filter(|l| !allowed.contains(&(l.group.as_str(), l.order_id.as_str())))
        .map(|l| {
            format!(
                "{}: event {} of order {} dead-lettered, not applied: {}",
                l.group,
                l.event_id,
                l.order_id,
                if l.reason.is_empty() {
                    "(no failure recorded)"
                } else {
                    &l.reason
                }
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ordermq_domain::System;

    use super::*;

    fn letter(group: &str, order: &str, state: &str) -> Letter {
        Letter {
            group: group.into(),
            event_id: format!("ev-{order}"),
            order_id: order.into(),
            state: state.into(),
            reason: "simulated failure".into(),
        }
    }

    #[test]
    fn a_pending_letter_not_doomed_on_purpose_is_a_violation() {
        let letters = [letter("credit_group", "o-1", "pending")];
        let found = unexpected(&letters, &Expectations::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("credit_group") && found[0].contains("o-1"));
    }

    #[test]
    fn doomed_or_applied_letters_are_allowed() {
        let mut expect = Expectations::default();
        expect
            .dead_letter_allowed
            .insert((System::Warehouse, "o-2".into()));
        let letters = [
            letter("warehouse_group", "o-2", "pending"),
            letter("push_group", "o-3", "applied"),
            // Allowed for the warehouse only: the same order in another group is not.
            letter("push_group", "o-2", "pending"),
        ];
        let found = unexpected(&letters, &expect);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("push_group"), "{found:?}");
    }

    #[test]
    fn the_list_is_read_from_the_tools_json() {
        let json = r#"[{"group":"push_group","msg_id":"m","event_id":"e","order_id":"o",
            "attempts":3,"dead_lettered_at":1,"reason":"r","state":"pending"}]"#;
        let letters: Vec<Letter> = serde_json::from_str(json).expect("the tool's JSON");
        assert_eq!(
            letters,
            vec![Letter {
                group: "push_group".into(),
                event_id: "e".into(),
                order_id: "o".into(),
                state: "pending".into(),
                reason: "r".into(),
            }]
        );
    }
}
