//! What a cluster of several brokers holds, asked of the cluster itself.
//!
//! With more than one master, a topic is a set of queues on each broker:
//! ordermq must create its topics on every master (a topic on one broker
//! only puts every event on that broker, and its death stops them all),
//! and operators and tests must be able to see where messages went and
//! which group still owes which broker. These are the admin requests
//! `mqadmin updateTopic -c`, `topicRoute`, `topicStatus` and
//! `consumerProgress` make, through rocketmq-rust's admin client.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use cheetah_string::CheetahString;
use rocketmq_client_rust::{DefaultMQAdminExt, MQAdminReadExt, TopicAdmin};
use rocketmq_model::topic::TopicConfig;

use crate::{MqClient, MqError};

/// How long one admin session may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A topic's part on one broker, from the NameServers' route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerQueues {
    /// The broker's name (`brokerName`).
    pub broker: String,
    /// Queues producers may write.
    pub write_queues: u32,
    /// Queues consumers read.
    pub read_queues: u32,
}

/// One consumer group's progress on one broker, summed over its queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupProgress {
    /// Messages the broker holds for the topic (sum of queue max offsets).
    pub broker_offset: i64,
    /// Messages the group has committed (sum of its queue offsets).
    pub consumer_offset: i64,
}

impl GroupProgress {
    /// Messages the group still owes this broker.
    pub fn lag(&self) -> i64 {
        self.broker_offset - self.consumer_offset
    }
}

/// Runs `work` with an admin session on the client's NameServers.
pub(crate) async fn with_admin<T, F, Fut>(client: &MqClient, work: F) -> Result<T, MqError>
where
    F: FnOnce(DefaultMQAdminExt) -> Fut,
    Fut: Future<Output = (DefaultMQAdminExt, Result<T, MqError>)>,
{
    let mut admin = match &client.rpc_hook {
        Some(hook) => DefaultMQAdminExt::with_rpc_hook_and_timeout(
            client.runtime.clone(),
            hook.clone(),
            ADMIN_TIMEOUT,
        ),
        None => DefaultMQAdminExt::with_timeout(client.runtime.clone(), ADMIN_TIMEOUT),
    };
    admin.set_namesrv_addr(client.namesrv_addr.as_str());
    // Boxed: the admin client's futures are deep enough to pass the
    // compiler's layout depth limit in every caller that awaits this.
    Box::pin(admin.start())
        .await
        .map_err(|e| MqError::client("admin start", e))?;
    let (mut admin, result) =
        match tokio::time::timeout(ADMIN_TIMEOUT * 3, Box::pin(work(admin))).await {
            Ok(done) => done,
            Err(_) => return Err(MqError::client("admin", "no answer within 15 s")),
        };
    Box::pin(admin.shutdown()).await;
    result
}

/// Every master's name and address, as the NameServers list them.
async fn masters(admin: &DefaultMQAdminExt) -> Result<Vec<(String, CheetahString)>, MqError> {
    let cluster = admin
        .examine_broker_cluster_info()
        .await
        .map_err(|e| MqError::client("cluster info", e))?;
    let mut found: Vec<(String, CheetahString)> = cluster
        .broker_addr_table
        .unwrap_or_default()
        .values()
        .filter_map(|data| {
            // Id 0 is the master: the broker a producer sends to.
            data.broker_addrs()
                .get(&0)
                .map(|addr| (data.broker_name().as_str().to_owned(), addr.clone()))
        })
        .collect();
    found.sort();
    Ok(found)
}

impl MqClient {
    /// Creates `topic` with `queues` read and write queues on every master
    /// the NameServers list (what `mqadmin updateTopic -c <cluster>` does),
    /// and returns the brokers it was created on. A broker that refuses is
    /// logged and skipped: it may manage its topics itself.
    ///
    /// # Errors
    ///
    /// [`MqError::Client`] if the NameServers list no master or cannot be asked.
    pub async fn create_topic_on_every_master(
        &self,
        topic: &str,
        queues: u32,
    ) -> Result<Vec<String>, MqError> {
        let topic = topic.to_owned();
        with_admin(self, |admin| async move {
            let result = async {
                let masters = masters(&admin).await?;
                if masters.is_empty() {
                    return Err(MqError::client(
                        "create topic",
                        "the NameServers list no master",
                    ));
                }
                let mut created = Vec::new();
                for (broker, addr) in masters {
                    let config = TopicConfig::with_queues(topic.as_str(), queues, queues);
                    match admin
                        .create_and_update_topic_config(addr.clone(), config)
                        .await
                    {
                        Ok(()) => created.push(broker),
                        Err(e) => tracing::warn!(
                            topic, broker, addr = %addr, error = %e,
                            "could not create the topic on this broker"
                        ),
                    }
                }
                Ok(created)
            }
            .await;
            (admin, result)
        })
        .await
    }

    /// `topic`'s queues on each broker, from the NameServers' route
    /// (`mqadmin topicRoute`), sorted by broker name.
    pub async fn topic_route(&self, topic: &str) -> Result<Vec<BrokerQueues>, MqError> {
        let topic = CheetahString::from(topic);
        with_admin(self, |admin| async move {
            let result = MQAdminReadExt::examine_topic_route_info(&admin, topic)
                .await
                .map_err(|e| MqError::client("topic route", e))
                .map(|route| {
                    let mut queues: Vec<BrokerQueues> = route
                        .map(|route| route.queue_datas)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|q| BrokerQueues {
                            broker: q.broker_name.as_str().to_owned(),
                            write_queues: q.write_queue_nums,
                            read_queues: q.read_queue_nums,
                        })
                        .collect();
                    queues.sort_by(|a, b| a.broker.cmp(&b.broker));
                    queues
                });
            (admin, result)
        })
        .await
    }

    /// How many messages each broker holds for `topic` (`mqadmin
    /// topicStatus`: its queues' max offset less their min), per broker
    /// name. Read from the brokers themselves, so unlike
    /// [`group_progress`](Self::group_progress) it needs no group that
    /// subscribes the topic. Brokers that do not answer are missing.
    pub async fn messages_stored(&self, topic: &str) -> Result<BTreeMap<String, i64>, MqError> {
        let topic = CheetahString::from(topic);
        with_admin(self, |admin| async move {
            let result = TopicAdmin::examine_topic_stats(&admin, topic, None)
                .await
                .map_err(|e| MqError::client("topic stats", e))
                .map(|stats| {
                    let mut per_broker: BTreeMap<String, i64> = BTreeMap::new();
                    for (queue, offsets) in stats.get_offset_table() {
                        *per_broker
                            .entry(queue.broker_name().as_str().to_owned())
                            .or_default() +=
                            (offsets.get_max_offset() - offsets.get_min_offset()).max(0);
                    }
                    per_broker
                });
            (admin, result)
        })
        .await
    }

    /// `group`'s progress on `topic`, per broker name (`mqadmin
    /// consumerProgress`): what each broker holds and what the group has
    /// committed there. Brokers that do not answer are missing.
    pub async fn group_progress(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<BTreeMap<String, GroupProgress>, MqError> {
        let (group, topic) = (CheetahString::from(group), CheetahString::from(topic));
        with_admin(self, |admin| async move {
            let result =
                MQAdminReadExt::examine_consume_stats(&admin, group, Some(topic), None, None, None)
                    .await
                    .map_err(|e| MqError::client("consume stats", e))
                    .map(|stats| {
                        let mut per_broker: BTreeMap<String, GroupProgress> = BTreeMap::new();
                        for (queue, offsets) in stats.get_offset_table() {
                            let progress = per_broker
                                .entry(queue.broker_name().as_str().to_owned())
                                .or_default();
                            progress.broker_offset += offsets.get_broker_offset();
                            progress.consumer_offset += offsets.get_consumer_offset().max(0);
                        }
                        per_broker
                    });
            (admin, result)
        })
        .await
    }
}
