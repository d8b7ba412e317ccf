//! Starting a whole ordermq for a test ([`LocalApp`]): random ports, a fresh
//! temporary data directory, the real embedded RocketMQ broker, and fast fake
//! third parties; and the JSON requests the end-to-end tests make.

use std::time::Duration;

use ordermq::Config;

use crate::local_app::LocalApp;
use serde_json::{Value, json};

/// Third parties answer in a few milliseconds, so tests are about ordermq.
pub fn fast_third_parties(config: &mut Config) {
    config.sms_latency = Duration::from_millis(2);
    config.sms_jitter = Duration::from_millis(5);
    config.sms_spike_probability = 0.0;
    config.logistics_latency = Duration::from_millis(5);
    config.logistics_jitter = Duration::from_millis(10);
    config.logistics_spike_probability = 0.0;
}

/// The per-user and rate limits as shipped (`limits.*` defaults), which
/// [`local_config`](crate::local_config) turns off: for the tests of the limits.
pub fn default_limits(config: &mut Config) {
    let shipped = Config::default();
    config.limits_unpaid_orders_per_user = shipped.limits_unpaid_orders_per_user;
    config.limits_units_per_sku_per_user = shipped.limits_units_per_sku_per_user;
    config.limits_orders_per_minute_per_user = shipped.limits_orders_per_minute_per_user;
    config.limits_order_burst_per_user = shipped.limits_order_burst_per_user;
    config.limits_orders_per_second_per_token = shipped.limits_orders_per_second_per_token;
    config.limits_order_burst_per_token = shipped.limits_order_burst_per_token;
}

/// A whole ordermq with [`fast_third_parties`]; panics if it cannot start.
pub async fn spawn_app() -> LocalApp {
    LocalApp::start(fast_third_parties)
        .await
        .expect("ordermq starts")
}

/// POSTs an order of `items` (`(sku, quantity)`) for `user`, with the shop's token.
pub async fn create_order(app: &LocalApp, user: &str, items: &[(&str, i64)]) -> reqwest::Response {
    let items: Vec<Value> = items
        .iter()
        .map(|(sku, q)| json!({"sku": sku, "quantity": q}))
        .collect();
    app.as_shop(reqwest::Method::POST, "/api/orders")
        .json(&json!({"user_id": user, "items": items}))
        .send()
        .await
        .expect("request")
}

/// GETs `path` with the operator's token (on the operator listener, if
/// any); the status and the JSON body.
pub async fn get_json(app: &LocalApp, path: &str) -> (u16, Value) {
    let response = app
        .as_operator(reqwest::Method::GET, path)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}
