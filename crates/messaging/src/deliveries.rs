//! Counting what each consumer group's handler was given and how it answered.
//!
//! "Has every message been handled, and is nothing about to come back?" is a
//! question both an operator and a test ask. The broker knows offsets, but
//! asking it needs a client in the group, which would take part in the
//! group's rebalance. The listener bridge sees every delivery anyway, so it
//! counts them here: messages handled, messages answered "retry later",
//! messages in a handler right now, and retries still owed (answered "retry
//! later" below the last try and not yet seen again). A group with nothing in
//! flight and no retry owed is *settled*: nothing it already received can come
//! back by itself.
//!
//! Messages that arrive before their due time and are sent on (delay-level
//! hops, see [`crate::delay`]) are not counted: the handler never sees them.
//! Messages the handler said wait for an earlier event are sent on to come
//! back soon (by the listener bridge): retried, and owed until they return.
//! Messages that fail verification are counted apart, as *parked* (recorded
//! for the first time; see [`ordermq_domain::parked`]): the handler never
//! sees them either, but they come back with their batch like any other.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One group's counts at one moment (a domain type: `/api/stats` shows it).
pub use ordermq_domain::view::GroupDeliveries;

/// The live counters of one group (shared with its listener bridge).
#[derive(Debug, Default)]
pub(crate) struct GroupCounters {
    handled: AtomicU64,
    retried: AtomicU64,
    in_flight: AtomicU64,
    retries_owed: AtomicU64,
    parked: AtomicU64,
}

impl GroupCounters {
    /// `messages` enter the handler; `redelivered` of them are retries coming back.
    pub(crate) fn enter(&self, messages: u64, redelivered: u64) {
        self.in_flight.fetch_add(messages, Ordering::SeqCst);
        // Saturating: a retry owed by an earlier process (before a restart)
        // was never counted here.
        let _ = self
            .retries_owed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |owed| {
                Some(owed.saturating_sub(redelivered))
            });
    }

    /// A message is about to be sent on to come back (a wait or a retry):
    /// owed from before its send, as it may be back in a handler before
    /// the call that sent it has left (a retry due at once, or the others
    /// of its batch slow to send).
    pub(crate) fn owe(&self) {
        self.retries_owed.fetch_add(1, Ordering::SeqCst);
    }

    /// A message [`Self::owe`]d was not sent after all (the client is
    /// stopping): it comes back with its batch instead, counted there.
    pub(crate) fn forgive(&self) {
        let _ = self
            .retries_owed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |owed| {
                Some(owed.saturating_sub(1))
            });
    }

    /// The handler call for `messages` answered: `handled` of them applied,
    /// the others not (failed, or waiting for an earlier event), of which
    /// `owed` come back through the client (the bridge's own hops are owed
    /// as they are sent, [`Self::owe`]).
    pub(crate) fn leave(&self, messages: u64, handled: u64, owed: u64) {
        let handled = handled.min(messages);
        self.handled.fetch_add(handled, Ordering::SeqCst);
        self.retried.fetch_add(messages - handled, Ordering::SeqCst);
        self.retries_owed.fetch_add(owed, Ordering::SeqCst);
        self.in_flight.fetch_sub(messages, Ordering::SeqCst);
    }

    /// Messages that failed verification: `new` of them parked for the first
    /// time, `redelivered` of them retries coming back, `will_return` of them
    /// coming back again (their batch was answered "retry later").
    pub(crate) fn park(&self, new: u64, redelivered: u64, will_return: u64) {
        self.parked.fetch_add(new, Ordering::SeqCst);
        let _ = self
            .retries_owed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |owed| {
                Some(owed.saturating_sub(redelivered) + will_return)
            });
    }

    fn snapshot(&self) -> GroupDeliveries {
        GroupDeliveries {
            handled: self.handled.load(Ordering::SeqCst),
            retried: self.retried.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            retries_owed: self.retries_owed.load(Ordering::SeqCst),
            parked: self.parked.load(Ordering::SeqCst),
        }
    }
}

/// Every subscribed group's counters; cheap to clone, readable from anywhere.
#[derive(Debug, Clone, Default)]
pub struct Deliveries {
    groups: Arc<Mutex<BTreeMap<String, Arc<GroupCounters>>>>,
}

impl Deliveries {
    /// The counters of `group`, created on first use.
    pub(crate) fn group(&self, group: &str) -> Arc<GroupCounters> {
        let mut groups = self.groups.lock().expect("delivery counters lock");
        Arc::clone(groups.entry(group.to_owned()).or_default())
    }

    /// Each group's counts now, by group name.
    pub fn snapshot(&self) -> BTreeMap<String, GroupDeliveries> {
        let groups = self.groups.lock().expect("delivery counters lock");
        groups
            .iter()
            .map(|(name, counters)| (name.clone(), counters.snapshot()))
            .collect()
    }

    /// `group`'s counts now (all zero for a group never subscribed).
    pub fn of(&self, group: &str) -> GroupDeliveries {
        self.snapshot().remove(group).unwrap_or_default()
    }
}

impl ordermq_domain::ports::DeliveryCounts for Deliveries {
    fn by_group(&self) -> BTreeMap<String, GroupDeliveries> {
        self.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_settles_when_its_retries_come_back() {
        let deliveries = Deliveries::default();
        let group = deliveries.group("g");
        group.enter(3, 0);
        assert!(!deliveries.of("g").is_settled(), "three in flight");
        group.leave(3, 0, 2); // one of three was on its last try
        let now = deliveries.of("g");
        assert_eq!((now.retried, now.in_flight, now.retries_owed), (3, 0, 2));
        assert!(!now.is_settled(), "two retries owed");
        group.enter(2, 2);
        group.leave(2, 2, 0);
        let now = deliveries.of("g");
        assert_eq!((now.handled, now.retries_owed), (2, 0));
        assert!(now.is_settled());
    }

    #[test]
    fn parked_messages_count_apart_and_come_back_with_their_batch() {
        let deliveries = Deliveries::default();
        let group = deliveries.group("g");
        group.park(2, 0, 2);
        let now = deliveries.of("g");
        assert_eq!((now.parked, now.handled, now.retries_owed), (2, 0, 2));
        assert!(!now.is_settled(), "their batch comes back");
        group.park(0, 2, 0);
        let now = deliveries.of("g");
        assert_eq!((now.parked, now.retries_owed), (2, 0));
        assert!(now.is_settled());
    }

    #[test]
    fn a_hop_back_before_its_batch_left_is_not_owed_for_ever() {
        let deliveries = Deliveries::default();
        let group = deliveries.group("g");
        // A batch of two: one waits, hopped at once, and is back in a
        // handler (applied) while the batch's other hop is still sending.
        group.enter(2, 0);
        group.owe();
        group.enter(1, 1);
        group.leave(1, 1, 0);
        group.owe();
        group.leave(2, 0, 0);
        let now = deliveries.of("g");
        assert_eq!(
            (now.in_flight, now.retries_owed),
            (0, 1),
            "the second is owed"
        );
        group.enter(1, 1);
        group.leave(1, 1, 0);
        assert!(deliveries.of("g").is_settled());
        // A hop not sent after all is not owed.
        group.owe();
        group.forgive();
        assert!(deliveries.of("g").is_settled());
    }

    #[test]
    fn a_retry_owed_by_an_earlier_process_does_not_underflow() {
        let deliveries = Deliveries::default();
        let group = deliveries.group("g");
        group.enter(1, 1);
        group.leave(1, 1, 0);
        assert_eq!(deliveries.of("g").retries_owed, 0);
        assert_eq!(deliveries.of("never"), GroupDeliveries::default());
    }
}
