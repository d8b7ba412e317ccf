//! What `SEND_OK` promises on the cluster ordermq publishes to.
//!
//! The relay marks an outbox row sent when the broker answers `SEND_OK`, and
//! never sends it again. Whether that answer means "on disk" (the broker's
//! `flushDiskType = SYNC_FLUSH`) or "on a replica too" (`brokerRole =
//! SYNC_MASTER`) is the broker's setting, not the client's: an external
//! cluster decides it. This module asks each broker for those two settings
//! (RocketMQ's `GET_BROKER_CONFIG`, what `mqadmin getBrokerConfig` shows) so
//! start-up can log what ordermq's events are trusted to; a cluster that
//! refuses the request (ACL without the permission, a proxy in front) is
//! logged as unknown.

use std::time::Duration;

use rocketmq_client_rust::{BrokerAdmin, DefaultMQAdminExt, MQAdminReadExt};

use crate::{MqClient, MqError};

/// One broker's answer: its durability settings as RocketMQ names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDurability {
    /// The broker's name (a master and its slaves share it).
    pub broker: String,
    /// Its address, `host:port`.
    pub addr: String,
    /// `SYNC_FLUSH` or `ASYNC_FLUSH`, if it said.
    pub flush_disk_type: Option<String>,
    /// `SYNC_MASTER`, `ASYNC_MASTER` or `SLAVE`, if it said.
    pub broker_role: Option<String>,
}

impl BrokerDurability {
    /// Whether a `SEND_OK` from this broker means the message survives a
    /// power loss of this broker's host: it was flushed (`SYNC_FLUSH`) or
    /// copied to a slave before the answer (`SYNC_MASTER`). `None` if the
    /// broker did not say.
    pub fn survives_power_loss(&self) -> Option<bool> {
        let flushed = self.flush_disk_type.as_deref().map(|t| t == "SYNC_FLUSH");
        let replicated = self.broker_role.as_deref().map(|r| r == "SYNC_MASTER");
        match (flushed, replicated) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        }
    }
}

/// How long the whole query may take: it runs once at start-up.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

impl MqClient {
    /// Each master broker's `flushDiskType` and `brokerRole`, read from the
    /// brokers themselves.
    ///
    /// # Errors
    ///
    /// [`MqError::Client`] if the admin client cannot start, the NameServer
    /// does not list the cluster, or it takes longer than 5 s; a broker that
    /// does not answer is listed with both settings unknown.
    pub async fn broker_durability(&self) -> Result<Vec<BrokerDurability>, MqError> {
        let mut admin = match &self.rpc_hook {
            Some(hook) => DefaultMQAdminExt::with_rpc_hook_and_timeout(
                self.runtime.clone(),
                hook.clone(),
                QUERY_TIMEOUT,
            ),
            None => DefaultMQAdminExt::with_timeout(self.runtime.clone(), QUERY_TIMEOUT),
        };
        admin.set_namesrv_addr(self.namesrv_addr.as_str());
        // Boxed: the admin client's futures are deep enough to pass the
        // compiler's layout depth limit in every caller that awaits this.
        Box::pin(admin.start())
            .await
            .map_err(|e| MqError::client("admin start", e))?;
        let found = tokio::time::timeout(QUERY_TIMEOUT, Box::pin(read_masters(&admin))).await;
        Box::pin(admin.shutdown()).await;
        found.map_err(|_| MqError::client("broker config", "no answer within 5 s"))?
    }
}

/// Asks the NameServer for every broker, then each master for its settings.
async fn read_masters(admin: &DefaultMQAdminExt) -> Result<Vec<BrokerDurability>, MqError> {
    let cluster = admin
        .examine_broker_cluster_info()
        .await
        .map_err(|e| MqError::client("cluster info", e))?;
    let mut found = Vec::new();
    for data in cluster.broker_addr_table.unwrap_or_default().values() {
        // Id 0 is the master: the broker a producer sends to.
        let Some(addr) = data.broker_addrs().get(&0) else {
            continue;
        };
        let config = admin
            .get_broker_config(addr.clone())
            .await
            .unwrap_or_default();
        let setting = |name: &str| {
            config
                .iter()
                .find(|(key, _)| key.as_str() == name)
                .map(|(_, value)| value.as_str().to_owned())
        };
        found.push(BrokerDurability {
            broker: data.broker_name().as_str().to_owned(),
            addr: addr.as_str().to_owned(),
            flush_disk_type: setting("flushDiskType"),
            broker_role: setting("brokerRole"),
        });
    }
    found.sort_by(|a, b| a.broker.cmp(&b.broker));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(flush: Option<&str>, role: Option<&str>) -> BrokerDurability {
        BrokerDurability {
            broker: "b".into(),
            addr: "127.0.0.1:1".into(),
            flush_disk_type: flush.map(str::to_owned),
            broker_role: role.map(str::to_owned),
        }
    }

    #[test]
    fn a_send_survives_power_loss_if_flushed_or_replicated_first() {
        for (flush, role, survives) in [
            (Some("SYNC_FLUSH"), Some("ASYNC_MASTER"), Some(true)),
            (Some("ASYNC_FLUSH"), Some("SYNC_MASTER"), Some(true)),
            (Some("ASYNC_FLUSH"), Some("ASYNC_MASTER"), Some(false)),
            (Some("ASYNC_FLUSH"), None, None),
            (None, None, None),
        ] {
            assert_eq!(
                broker(flush, role).survives_power_loss(),
                survives,
                "{flush:?} {role:?}"
            );
        }
    }
}
