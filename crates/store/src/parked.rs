//! Messages consumer groups refused because they failed verification
//! (`ordermq_domain::parked`): recorded once per (group, message id),
//! listed for operators, counted for `GET /api/stats`. The store is the
//! `ParkingLot` the listener bridge writes to.
//!
//! Operation module: it imports only the base and the handle.

use std::collections::BTreeMap;

use ordermq_domain::parked::{ParkedMessage, clip};
use ordermq_domain::ports::{BoxFuture, ParkingLot, StorageError};

use crate::dialect;
use crate::fail::{get, storage};
use crate::store::{Db, Store};

impl Store {
    /// Records a parked message; `true` if it is new for its group. Every
    /// field is cut to its column's width (the sender chose them).
    pub async fn park(&self, m: &ParkedMessage) -> Result<bool, StorageError> {
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        let fresh = dialect::query(
            "INSERT INTO parked_messages (consumer_group, msg_id, topic, tag, msg_key, event_id, \
             key_id, reason, detail, body, parked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (consumer_group, msg_id) DO NOTHING",
        )
        .bind(clip(&m.group, 64))
        .bind(clip(&m.msg_id, 128))
        .bind(clip(&m.topic, 128))
        .bind(clip(&m.tag, 64))
        .bind(clip(&m.key, 128))
        .bind(m.event_id.as_deref().map(|id| clip(id, 160)))
        .bind(m.key_id.as_deref().map(|id| clip(id, 64)))
        .bind(clip(&m.reason, 32))
        .bind(clip(&m.detail, 1_000))
        .bind(clip(&m.body, ordermq_domain::parked::MAX_PARKED_BODY))
        .bind(m.parked_at)
        .execute(&mut *tx)
        .await
        .map_err(storage)?
        .rows_affected()
            == 1;
        tx.commit().await.map_err(storage)?;
        Ok(fresh)
    }

    /// Parked messages, oldest first: of `group` only, or of every group.
    pub async fn parked(&self, group: Option<&str>) -> Result<Vec<ParkedMessage>, StorageError> {
        let rows = dialect::query(
            "SELECT consumer_group, msg_id, topic, tag, msg_key, event_id, key_id, reason, \
             detail, body, parked_at FROM parked_messages \
             WHERE $1 = '' OR consumer_group = $1 ORDER BY parked_at, id",
        )
        .bind(group.unwrap_or(""))
        .fetch_all(&self.orders)
        .await
        .map_err(storage)?;
        rows.iter()
            .map(|r| {
                Ok(ParkedMessage {
                    group: get(r, "consumer_group")?,
                    msg_id: get(r, "msg_id")?,
                    topic: get(r, "topic")?,
                    tag: get(r, "tag")?,
                    key: get(r, "msg_key")?,
                    event_id: get(r, "event_id")?,
                    key_id: get(r, "key_id")?,
                    reason: get(r, "reason")?,
                    detail: get(r, "detail")?,
                    body: get(r, "body")?,
                    parked_at: get(r, "parked_at")?,
                })
            })
            .collect()
    }

    /// Parked messages per group: every group of the topology, 0 if none.
    pub async fn parked_counts(&self) -> Result<BTreeMap<String, i64>, StorageError> {
        let mut counts: BTreeMap<String, i64> = ordermq_domain::CONSUMER_GROUPS
            .iter()
            .map(|g| (g.name.to_owned(), 0))
            .collect();
        for row in dialect::query(
            "SELECT consumer_group, COUNT(*) AS n FROM parked_messages GROUP BY consumer_group",
        )
        .fetch_all(&self.orders)
        .await
        .map_err(storage)?
        {
            counts.insert(get(&row, "consumer_group")?, get(&row, "n")?);
        }
        Ok(counts)
    }
}

impl ParkingLot for Store {
    fn park(&self, message: ParkedMessage) -> BoxFuture<'_, Result<bool, StorageError>> {
        Box::pin(async move { Store::park(self, &message).await })
    }
}
