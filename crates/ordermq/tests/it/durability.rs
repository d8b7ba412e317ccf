//! What a `SEND_OK` from the broker promises: the embedded broker answers
//! after its commit log is on disk unless `embedded_broker_flush = async`
//! asks otherwise, and the brokers themselves say so (the same query
//! start-up logs for an external cluster). What the relay could not publish
//! is parked, and the operator's command lists it and hands it back.

use ordermq_messaging::BrokerFlush;
use ordermq_testkit::{LocalApp, fast_third_parties};

#[tokio::test]
async fn the_embedded_broker_answers_after_the_disk_by_default_and_before_it_when_asked() {
    for (flush, expected) in [
        (None, "SYNC_FLUSH"),
        (Some(BrokerFlush::Async), "ASYNC_FLUSH"),
    ] {
        let app = LocalApp::start(|config| {
            fast_third_parties(config);
            if let Some(flush) = flush {
                config.embedded_broker_flush = flush;
            }
        })
        .await
        .unwrap();
        // The broker's own answer to GET_BROKER_CONFIG.
        let client = app.foreign_producer(None).await.unwrap();
        let brokers = client.broker_durability().await.unwrap();
        client.shutdown().await;
        app.stop().await.unwrap();
        let settings: Vec<_> = brokers
            .into_iter()
            .map(|b| (b.flush_disk_type, b.broker_role))
            .collect();
        assert_eq!(
            settings,
            [(Some(expected.to_owned()), Some("ASYNC_MASTER".to_owned()))],
            "{flush:?}"
        );
    }
}

/// `ordermq outbox parked` lists a row the relay parked, with its last
/// error; `requeue` of an id that names no parked row changes nothing, and
/// `requeue` hands the row back to the relay.
#[tokio::test]
async fn an_operator_lists_and_requeues_parked_outbox_rows() {
    use ordermq_domain::{NewOrder, OrderId, OrderLine, Quantity, Sku, UserId};
    use ordermq_store::{OutboxRetry, Store, StoreOptions};

    let dir = tempfile::tempdir().unwrap();
    let config = ordermq_testkit::local_config(dir.path());
    let store = Store::open(&config.database_url(), &StoreOptions::default())
        .await
        .unwrap();
    store
        .seed_catalog(ordermq::startup::DEMO_CATALOG)
        .await
        .unwrap();
    let order = NewOrder::new(
        UserId::parse("u1").unwrap(),
        vec![OrderLine {
            sku: Sku::parse("SKU-1").unwrap(),
            quantity: Quantity::parse(1).unwrap(),
        }],
    )
    .unwrap();
    store
        .create_order(&order, &OrderId::generate(1, 7u64), 1, Some(60_000))
        .await
        .unwrap();
    let claimed = store.claim_outbox("relay", 10, 1_000, 2).await.unwrap();
    let retry = OutboxRetry {
        id: claimed[0].id,
        error: "CODE: 13 the topic is not allowed".into(),
        retry_at: 3,
    };
    assert_eq!(
        store.retry_outbox(&[retry], 1, 2).await.unwrap(),
        [claimed[0].id]
    );
    store.close().await;

    let parked = ordermq::outbox::parked(&config).await.unwrap();
    assert_eq!(parked.len(), 1);
    let table = ordermq::outbox::render_parked(&parked);
    assert!(table.contains(&claimed[0].event_id), "{table}");
    assert!(table.contains("the topic is not allowed"), "{table}");
    assert_eq!(
        ordermq::outbox::parked_json(&parked)[0]["attempts"],
        serde_json::json!(1)
    );
    assert_eq!(
        ordermq::outbox::requeue(&config, Some(claimed[0].id + 1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(ordermq::outbox::parked(&config).await.unwrap().len(), 1);
    assert_eq!(
        ordermq::outbox::requeue(&config, Some(claimed[0].id))
            .await
            .unwrap(),
        1
    );
    assert!(ordermq::outbox::parked(&config).await.unwrap().is_empty());
}
