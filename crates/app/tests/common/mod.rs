//! Starts a whole ordermq for a test: random ports, a fresh temporary data
//! directory, the real embedded RocketMQ broker, fast fake third parties.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use ordermq::{Application, Config};
use ordermq_api::signature::PaymentSigner;
use ordermq_store::Store;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Store,
    pub signer: PaymentSigner,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ordermq::StartError>>>,
    _dir: tempfile::TempDir,
}

/// A config for tests: everything local, ports chosen by the OS.
pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        http_addr: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        embedded_namesrv_port: 0,
        embedded_broker_port: 0,
        payment_secret: Some("test-secret".into()),
        sms_latency_ms: 2,
        sms_jitter_ms: 5,
        sms_spike_probability: 0.0,
        logistics_latency_ms: 5,
        logistics_jitter_ms: 10,
        logistics_spike_probability: 0.0,
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    adjust(&mut config);
    let app = Application::build(&config).await.expect("ordermq starts");
    let addr = app.http_addr();
    let store = app.store().clone();
    let signer = app.signer().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        store,
        signer,
        client: reqwest::Client::new(),
        stop: Some(stop),
        task: Some(task),
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn create_order(&self, user: &str, items: &[(&str, i64)]) -> reqwest::Response {
        let items: Vec<Value> = items
            .iter()
            .map(|(sku, q)| json!({"sku": sku, "quantity": q}))
            .collect();
        self.client
            .post(self.url("/api/orders"))
            .json(&json!({"user_id": user, "items": items}))
            .send()
            .await
            .expect("request")
    }

    /// Sends a payment notice signed with the app's secret.
    pub async fn notify(&self, order_id: &str, payment_id: &str, amount: i64) -> reqwest::Response {
        let body =
            json!({"order_id": order_id, "payment_id": payment_id, "amount": amount}).to_string();
        let signature = self.signer.sign(body.as_bytes());
        self.client
            .post(self.url("/api/payments/notify"))
            .header("content-type", "application/json")
            .header("x-signature", signature)
            .body(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }

    /// Stops the app gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("ordermq stops within 60 s")
                .expect("task joins")
                .expect("ordermq stops cleanly");
        }
    }
}
