//! A complete ordermq in one process, on a fresh temporary data directory and
//! ports chosen by the OS, with the real embedded RocketMQ broker. The
//! benchmark (`ordermq-bench`) measures it and the end-to-end tests drive it.

use std::net::SocketAddr;
use std::time::Duration;

use ordermq_api::signature::PaymentSigner;
use ordermq_messaging::{Deliveries, GroupDeliveries};
use ordermq_store::Store;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use ordermq::{Application, Config, StartError};
use ordermq_gateways::FakeGateway;

/// Why a local ordermq could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum LocalAppError {
    #[error("cannot create the temporary data directory")]
    TempDir(#[source] std::io::Error),
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the server task panicked")]
    Panicked(#[source] tokio::task::JoinError),
    #[error("did not stop within 60 s")]
    StopTimeout,
}

/// A running in-process ordermq. Stop it with [`LocalApp::stop`].
#[derive(Debug)]
pub struct LocalApp {
    pub addr: SocketAddr,
    pub store: Store,
    pub signer: PaymentSigner,
    pub client: reqwest::Client,
    /// The fake SMS gateway (`None` when configured over HTTP).
    pub sms: Option<std::sync::Arc<FakeGateway>>,
    /// The fake logistics system (`None` over HTTP).
    pub logistics: Option<std::sync::Arc<FakeGateway>>,
    /// The fake payment gateway that refunds go through (`None` over HTTP).
    pub payments: Option<std::sync::Arc<FakeGateway>>,
    /// Signs carrier callbacks.
    pub carrier_signer: PaymentSigner,
    /// What each consumer group's handler was given and how it answered.
    pub deliveries: Deliveries,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), StartError>>>,
    dir: tempfile::TempDir,
}

/// Settings for a local run: loopback, OS-chosen ports, `dir` as the data directory.
pub fn local_config(dir: &std::path::Path) -> Config {
    Config {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_path_buf(),
        embedded_namesrv_port: 0,
        embedded_broker_port: 0,
        payment_secret: Some("local-secret".into()),
        ..Config::default()
    }
}

impl LocalApp {
    /// Starts ordermq with [`local_config`] changed by `adjust`.
    pub async fn start(adjust: impl FnOnce(&mut Config)) -> Result<Self, LocalAppError> {
        let dir = tempfile::Builder::new()
            .prefix("ordermq-")
            .tempdir()
            .map_err(LocalAppError::TempDir)?;
        Self::start_in(dir, adjust).await
    }

    /// Stops gracefully and starts again on the same data (databases and the
    /// broker's store), with `adjust` applied to a fresh [`local_config`]:
    /// what an operator's restart does.
    pub async fn restart(
        mut self,
        adjust: impl FnOnce(&mut Config),
    ) -> Result<Self, LocalAppError> {
        self.shutdown().await?;
        Self::start_in(self.dir, adjust).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        adjust: impl FnOnce(&mut Config),
    ) -> Result<Self, LocalAppError> {
        let mut config = local_config(dir.path());
        adjust(&mut config);
        let app = Application::build(&config).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let addr = app.http_addr();
        let store = app.store().clone();
        let signer = app.signer().clone();
        let (sms, logistics) = (app.sms_gateway(), app.logistics_gateway());
        let (payments, carrier_signer) = (app.payment_gateway(), app.carrier_signer().clone());
        let deliveries = app.deliveries();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            store,
            signer,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .build()
                .map_err(LocalAppError::Client)?,
            sms,
            logistics,
            payments,
            carrier_signer,
            deliveries,
            stop: Some(stop),
            task: Some(task),
            dir,
        })
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Posts a payment notice signed with the app's secret.
    pub async fn notify(
        &self,
        order_id: &str,
        payment_id: &str,
        amount: i64,
    ) -> reqwest::Result<reqwest::Response> {
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
    }

    /// Posts a carrier update signed with the app's carrier secret.
    pub async fn carrier_notify(
        &self,
        order_id: &str,
        tracking_no: &str,
        status: &str,
    ) -> reqwest::Result<reqwest::Response> {
        let body =
            json!({"order_id": order_id, "tracking_no": tracking_no, "status": status}).to_string();
        let signature = self.carrier_signer.sign(body.as_bytes());
        self.client
            .post(self.url("/api/logistics/notify"))
            .header("content-type", "application/json")
            .header("x-signature", signature)
            .body(body)
            .send()
            .await
    }

    /// Waits until each `(group, at_least)` has handled at least that many
    /// messages and is settled (nothing in a handler, no retry owed: nothing
    /// it received can come back by itself), and returns their counts.
    /// Panics with the counts if that takes longer than `timeout`.
    pub async fn wait_settled(
        &self,
        groups: &[(&str, u64)],
        timeout: Duration,
    ) -> Vec<GroupDeliveries> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now: Vec<GroupDeliveries> = groups
                .iter()
                .map(|(group, _)| self.deliveries.of(group))
                .collect();
            let done = groups
                .iter()
                .zip(&now)
                .all(|((_, at_least), counts)| counts.handled >= *at_least && counts.is_settled());
            if done {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "consumer groups did not settle within {timeout:?}: wanted {groups:?}, have {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops gracefully; waits up to a minute.
    pub async fn stop(mut self) -> Result<(), LocalAppError> {
        self.shutdown().await
    }

    async fn shutdown(&mut self) -> Result<(), LocalAppError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => match tokio::time::timeout(Duration::from_secs(60), task).await {
                Ok(Ok(result)) => Ok(result?),
                Ok(Err(e)) => Err(LocalAppError::Panicked(e)),
                Err(_) => Err(LocalAppError::StopTimeout),
            },
            None => Ok(()),
        }
    }
}
