//! `HttpLogistics` against the fake provider's `POST /logistics/shipments`
//! and `POST /logistics/shipments/cancel`.

use std::time::Duration;

use ordermq_domain::event::PaidLine;
use ordermq_domain::ports::{Cancellation, LogisticsGateway};
use ordermq_domain::{Amount, OrderId, OrderPaid, PaymentId, Sku, UserId};
use ordermq_fake_provider::CallOutcome;
use ordermq_gateways::HttpLogistics;

use crate::support::{Provider, assert_one_signed_effect, fail_then_lose_the_answer, hanging};

const BOOK: &str = "/logistics/shipments";
const CANCEL: &str = "/logistics/shipments/cancel";

fn paid(order: &str) -> OrderPaid {
    OrderPaid {
        order_id: OrderId::parse(order).unwrap(),
        user_id: UserId::parse("u1").unwrap(),
        payment_id: PaymentId::parse("pay-1").unwrap(),
        amount: Amount::parse(17_800).unwrap(),
        paid_at: 0,
        lines: vec![PaidLine {
            sku: Sku::parse("SKU-1").unwrap(),
            quantity: 2,
            unit_price: Amount::parse(8_900).unwrap(),
        }],
    }
}

#[tokio::test]
async fn a_booking_is_signed_verified_and_answered_with_the_tracking_number() {
    let provider = Provider::start().await;
    let logistics = HttpLogistics::new(provider.options(Duration::from_secs(5), 2)).unwrap();
    let tracking = logistics
        .create_shipment("OrderPaid:O1", &paid("O1"))
        .await
        .unwrap();
    assert_one_signed_effect(&provider, BOOK, "OrderPaid:O1", "tracking_no", &tracking);
    let request = &provider.calls(BOOK)[0].request;
    assert_eq!(request["order_id"], "O1");
    assert_eq!(request["lines"][0]["sku"], "SKU-1");
    assert_eq!(request["lines"][0]["quantity"], 2);
}

#[tokio::test]
async fn a_cancellation_names_the_booking_and_is_answered_once() {
    let provider = Provider::start().await;
    let logistics = HttpLogistics::new(provider.options(Duration::from_secs(5), 3)).unwrap();
    let tracking = logistics
        .create_shipment("OrderPaid:O2", &paid("O2"))
        .await
        .unwrap();
    fail_then_lose_the_answer(&provider);
    let key = "OrderRefundRequested:R2";
    assert_eq!(
        logistics
            .cancel_shipment(key, "O2", &tracking)
            .await
            .unwrap(),
        Cancellation::Cancelled
    );
    let cancels = provider.handle.effects(CANCEL);
    assert_eq!(cancels.len(), 1, "cancelled once through the retries");
    assert_eq!(cancels[0].request["tracking_no"], tracking.as_str());
    assert_eq!(provider.calls(CANCEL).len(), 3);
    // A tracking number the carrier never issued is refused, not retried.
    let err = logistics
        .cancel_shipment("OrderRefundRequested:R3", "O2", "TRK-nope")
        .await
        .unwrap_err();
    assert!(err.reason.contains("HTTP 404 SHIPMENT_NOT_FOUND"), "{err}");
    assert_eq!(provider.calls(CANCEL).len(), 4);
}

#[tokio::test]
async fn a_booking_retried_through_an_outage_and_a_lost_answer_books_once() {
    let provider = Provider::start().await;
    fail_then_lose_the_answer(&provider);
    let logistics = HttpLogistics::new(provider.options(Duration::from_secs(5), 3)).unwrap();
    let tracking = logistics
        .create_shipment("OrderPaid:O4", &paid("O4"))
        .await
        .unwrap();
    let effects = provider.handle.effects(BOOK);
    assert_eq!(effects.len(), 1, "one booking");
    assert_eq!(effects[0].response["tracking_no"], tracking.as_str());
}

#[tokio::test]
async fn a_refusal_is_not_retried() {
    let provider = Provider::start().await;
    provider.handle.answer_next(400, 1);
    let logistics = HttpLogistics::new(provider.options(Duration::from_secs(5), 3)).unwrap();
    let err = logistics
        .create_shipment("OrderPaid:O5", &paid("O5"))
        .await
        .unwrap_err();
    assert!(err.reason.contains("HTTP 400"), "{err}");
    assert_eq!(provider.calls(BOOK).len(), 1);
}

#[tokio::test]
async fn a_hanging_provider_is_given_up_at_the_timeout() {
    let provider = Provider::with_knobs(hanging()).await;
    let logistics = HttpLogistics::new(provider.options(Duration::from_millis(200), 1)).unwrap();
    let started = std::time::Instant::now();
    let err = logistics
        .create_shipment("OrderPaid:O6", &paid("O6"))
        .await
        .unwrap_err();
    assert!(err.reason.contains("no answer within 200 ms"), "{err}");
    assert!(started.elapsed() < crate::support::HANG);
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_not_retried() {
    let provider = Provider::start().await;
    let logistics = HttpLogistics::new(provider.options_signed_by("k1", "wrong")).unwrap();
    let err = logistics
        .create_shipment("OrderPaid:O7", &paid("O7"))
        .await
        .unwrap_err();
    assert!(err.reason.contains("HTTP 401 INVALID_SIGNATURE"), "{err}");
    let calls = provider.calls(BOOK);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].outcome, CallOutcome::Refused);
}
