//! The data team's consumer (`order_feed_sink_group`, run by `ordermq feed
//! sink`): applies change-feed events to the analytics database.
//!
//! The feed's messages are ordered per order (one queue per order id, each
//! order's rows relayed only after its previous one was stored), but a
//! push consumer may still hand two of one order's events to two listener
//! calls at once, and a redelivery may come after later events. So the
//! handler trusts `order_seq`, not arrival: the sink applies the next one,
//! skips what it has, and parks what came early, for its order only
//! (`FeedSink::apply`). A whole batch is one transaction. A body that is
//! not a feed event can never apply: it is logged and acknowledged, so it
//! cannot hold up its queue (the relay only publishes what the domain built).

use ordermq_domain::feed::FeedEvent;
use ordermq_domain::now_millis;
use ordermq_domain::ports::{BoxFuture, Delivery, Handler, Outcome};
use ordermq_store::FeedSink;

/// Applies feed events to the analytics database.
#[derive(Debug, Clone)]
pub struct FeedSinkHandler {
    sink: FeedSink,
}

impl FeedSinkHandler {
    pub fn new(sink: FeedSink) -> Self {
        Self { sink }
    }

    async fn consume(&self, batch: Vec<Delivery>) -> Outcome {
        let mut events = Vec::with_capacity(batch.len());
        for delivery in &batch {
            match FeedEvent::from_json(&delivery.body) {
                Ok(event) => events.push(event),
                Err(e) => {
                    tracing::warn!(error = %e, msg_id = %delivery.msg_id, key = %delivery.key, "not a change-feed event; skipped");
                }
            }
        }
        match self.sink.apply(&events, now_millis()).await {
            Ok(report) => {
                if report.parked > 0 {
                    tracing::info!(
                        parked = report.parked,
                        "feed events parked until their predecessors arrive"
                    );
                }
                Outcome::Consumed
            }
            Err(e) => Outcome::RetryLater(e.to_string()),
        }
    }
}

impl Handler for FeedSinkHandler {
    fn handle(&self, batch: Vec<Delivery>) -> BoxFuture<'_, Outcome> {
        Box::pin(self.consume(batch))
    }
}
