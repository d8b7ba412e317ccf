//! The provider's memory: every call it received, and the answer each
//! idempotency key got, appended to `<data dir>/calls.jsonl` (one JSON
//! object a line) and read back at start.
//!
//! Why on disk: the fault suite kills the provider (`kill -9`) and starts it
//! again; a real provider does not forget that it already sent an SMS, so
//! neither may this one. Each record is written with one `write` on a file
//! opened for appending, so what the process wrote survives its death
//! (the OS has it); a line cut short by a crash of the machine is skipped
//! when the log is read back.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /logistics/shipments`: book a shipment (the ledger remembers
/// which booking each order got, for cancellations).
pub(crate) const BOOK: &str = "/logistics/shipments";

/// The call log's file name inside the data directory.
pub const CALL_LOG: &str = "calls.jsonl";

/// What became of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// The call had its effect (an SMS sent, a shipment booked or cancelled,
    /// money refunded). Its answer may still have been lost (`status` 503).
    Effect,
    /// The key was known: the first answer was sent again, nothing done.
    Replay,
    /// Refused (4xx): a bad signature, a bad request, a key reused for
    /// another request. Nothing done.
    Refused,
    /// Failed on purpose (5xx or 429 from the knobs). Nothing done.
    Failed,
}

/// One call as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Its number, from 1, across restarts.
    pub seq: u64,
    /// When it was answered, ms since the epoch.
    pub at_ms: i64,
    /// The path called, e.g. `/sms/send`.
    pub endpoint: String,
    /// The `Idempotency-Key` header, if any.
    pub idempotency_key: Option<String>,
    /// The `X-Ordermq-Key-Id` header, if any.
    pub key_id: Option<String>,
    /// The status answered.
    pub status: u16,
    /// What became of the call.
    pub outcome: CallOutcome,
    /// The request body (`null` if it was not JSON).
    pub request: Value,
    /// The body answered; for an [`CallOutcome::Effect`] whose answer was
    /// lost, the answer a retry gets.
    pub response: Value,
}

/// The first answer to a key, and the request it answered.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) request: Value,
    pub(crate) response: Value,
}

/// The call log and what it implies: answers by key, bookings by tracking number.
#[derive(Debug)]
pub(crate) struct Ledger {
    file: File,
    calls: Vec<CallRecord>,
    /// (endpoint, idempotency key) → the first answer.
    answers: HashMap<(String, String), Stored>,
    /// Tracking number → order id, of every booking made.
    bookings: HashMap<String, String>,
    effects: u64,
}

impl Ledger {
    /// Opens (creating) `dir` and its call log, and reads back what it holds.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(CALL_LOG);
        let mut ledger = Self {
            file: OpenOptions::new().create(true).append(true).open(&path)?,
            calls: Vec::new(),
            answers: HashMap::new(),
            bookings: HashMap::new(),
            effects: 0,
        };
        for line in BufReader::new(File::open(&path)?).lines() {
            // A line cut short by a crash does not parse: it never happened.
            if let Ok(record) = serde_json::from_str::<CallRecord>(&line?) {
                ledger.remember(record);
            }
        }
        Ok(ledger)
    }

    /// The next call's number.
    pub(crate) fn next_seq(&self) -> u64 {
        self.calls.last().map_or(1, |c| c.seq + 1)
    }

    /// The number the next effect's reference carries.
    pub(crate) fn next_effect(&self) -> u64 {
        self.effects + 1
    }

    /// The first answer given to `key` at `endpoint`.
    pub(crate) fn answer_of(&self, endpoint: &str, key: &str) -> Option<&Stored> {
        self.answers.get(&(endpoint.to_owned(), key.to_owned()))
    }

    /// The order a tracking number was booked for.
    pub(crate) fn booking(&self, tracking_no: &str) -> Option<&str> {
        self.bookings.get(tracking_no).map(String::as_str)
    }

    /// Appends `record` to the log, then remembers it.
    pub(crate) fn record(&mut self, record: CallRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.remember(record);
        Ok(())
    }

    fn remember(&mut self, record: CallRecord) {
        if record.outcome == CallOutcome::Effect
            && let Some(key) = &record.idempotency_key
        {
            self.effects += 1;
            if record.endpoint == BOOK
                && let (Some(tracking), Some(order)) = (
                    record.response["tracking_no"].as_str(),
                    record.request["order_id"].as_str(),
                )
            {
                self.bookings.insert(tracking.to_owned(), order.to_owned());
            }
            self.answers.insert(
                (record.endpoint.clone(), key.clone()),
                Stored {
                    request: record.request.clone(),
                    response: record.response.clone(),
                },
            );
        }
        self.calls.push(record);
    }

    /// Every call, oldest first.
    pub(crate) fn calls(&self) -> &[CallRecord] {
        &self.calls
    }
}
