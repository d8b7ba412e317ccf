//! What a `SEND_OK` from the broker promises: the embedded broker answers
//! after its commit log is on disk unless `embedded_broker_flush = async`
//! asks otherwise, and the brokers themselves say so (the same query
//! start-up logs for an external cluster).

use ordermq_messaging::BrokerFlush;
use ordermq_testkit::{LocalApp, fast_third_parties};

/// The embedded broker's own answer to `GET_BROKER_CONFIG` for `flush`.
async fn flush_disk_type(flush: Option<BrokerFlush>) -> Vec<(Option<String>, Option<String>)> {
    let app = LocalApp::start(|config| {
        fast_third_parties(config);
        if let Some(flush) = flush {
            config.embedded_broker_flush = flush;
        }
    })
    .await
    .unwrap();
    let client = app.foreign_producer(None).await.unwrap();
    let brokers = client.broker_durability().await.unwrap();
    client.shutdown().await;
    app.stop().await.unwrap();
    brokers
        .into_iter()
        .map(|b| (b.flush_disk_type, b.broker_role))
        .collect()
}

#[tokio::test]
async fn the_embedded_broker_answers_after_the_disk_by_default_and_before_it_when_asked() {
    assert_eq!(
        flush_disk_type(None).await,
        [(Some("SYNC_FLUSH".into()), Some("ASYNC_MASTER".into()))],
        "the default"
    );
    assert_eq!(
        flush_disk_type(Some(BrokerFlush::Async)).await,
        [(Some("ASYNC_FLUSH".into()), Some("ASYNC_MASTER".into()))]
    );
}
