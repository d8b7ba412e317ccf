//! A complete ordermq in one process, on a fresh temporary data directory and
//! ports chosen by the OS, with the real embedded RocketMQ broker. The
//! benchmark (`ordermq-bench`) measures it and the end-to-end tests drive it.

use std::net::SocketAddr;
use std::time::Duration;

use ordermq::config::ApiTokens;
use ordermq_api::signature::CallbackSigner;
use ordermq_domain::signing::Keyring;
use ordermq_messaging::{Deliveries, GroupDeliveries, MqClient};
use ordermq_store::Store;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use ordermq::{Application, Config, StartError};
use ordermq_gateways::FakeGateway;

use crate::router::{OPERATOR_TOKEN, SHOP_TOKEN, test_tokens};

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
    #[error("cannot connect a producer to the app's broker")]
    Producer(#[source] ordermq_messaging::MqError),
}

/// A running in-process ordermq. Stop it with [`LocalApp::stop`].
#[derive(Debug)]
pub struct LocalApp {
    pub addr: SocketAddr,
    /// The operator routes' own listener, when `operator_http_addr` is set.
    pub operator_addr: Option<SocketAddr>,
    pub store: Store,
    /// Signs payment callbacks with the app's keys.
    pub signer: CallbackSigner,
    pub client: reqwest::Client,
    /// The fake SMS gateway (`None` when configured over HTTP).
    pub sms: Option<std::sync::Arc<FakeGateway>>,
    /// The fake logistics system (`None` over HTTP).
    pub logistics: Option<std::sync::Arc<FakeGateway>>,
    /// The fake payment gateway that refunds go through (`None` over HTTP).
    pub payments: Option<std::sync::Arc<FakeGateway>>,
    /// Signs carrier callbacks.
    pub carrier_signer: CallbackSigner,
    /// What each consumer group's handler was given and how it answered.
    pub deliveries: Deliveries,
    /// The embedded NameServer's address (`127.0.0.1:<port>`).
    pub namesrv_addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), StartError>>>,
    dir: tempfile::TempDir,
    /// The configuration it was started with (boxed: it is large).
    config: Box<Config>,
}

/// Settings for a local run: loopback, OS-chosen ports, `dir` as the data
/// directory, a payment secret and the test tokens ([`SHOP_TOKEN`],
/// [`OPERATOR_TOKEN`]) as configured ones, and no per-user or order rate
/// limits ([`Config::without_limits`]: tests load many orders per user;
/// the tests of the limits set them).
pub fn local_config(dir: &std::path::Path) -> Config {
    let entries: Vec<String> = test_tokens()
        .entries()
        .iter()
        .map(|e| e.config_entry())
        .collect();
    Config {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_path_buf(),
        embedded_namesrv_port: 0,
        embedded_broker_port: 0,
        payment_secret: Some("local-secret".into()),
        api_tokens: Some(ApiTokens::parse(&entries.join(",")).expect("test tokens parse")),
        ..Config::default()
    }
    .without_limits()
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
        let operator_addr = app.operator_addr();
        let store = app.store().clone();
        let signer = app.signer().clone();
        let (sms, logistics) = (app.sms_gateway(), app.logistics_gateway());
        let (payments, carrier_signer) = (app.payment_gateway(), app.carrier_signer().clone());
        let deliveries = app.deliveries();
        let namesrv_addr = app.namesrv_addr().to_owned();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            operator_addr,
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
            namesrv_addr,
            stop: Some(stop),
            task: Some(task),
            dir,
            config: Box::new(config),
        })
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The URL of an operator route: on the operator listener when there is one.
    pub fn operator_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.operator_addr.unwrap_or(self.addr))
    }

    /// A request to `path` with the shop's token.
    pub fn as_shop(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(SHOP_TOKEN)
    }

    /// A request to `path` (on the operator listener, if any) with the operator's token.
    pub fn as_operator(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.operator_url(path))
            .bearer_auth(OPERATOR_TOKEN)
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
        let mut request = self
            .client
            .post(self.url("/api/payments/notify"))
            .header("content-type", "application/json");
        for (name, value) in self.signer.sign(body.as_bytes()).pairs() {
            request = request.header(name, value);
        }
        request.body(body).send().await
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
        let mut request = self
            .client
            .post(self.url("/api/logistics/notify"))
            .header("content-type", "application/json");
        for (name, value) in self.carrier_signer.sign(body.as_bytes()).pairs() {
            request = request.header(name, value);
        }
        request.body(body).send().await
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
        self.wait_groups(groups, timeout, "settle", |counts| counts.handled)
            .await
    }

    /// Waits until each `(group, at_least)` has parked at least that many
    /// messages (failed verification) and is settled, and returns their
    /// counts. Panics with the counts if that takes longer than `timeout`.
    pub async fn wait_parked(
        &self,
        groups: &[(&str, u64)],
        timeout: Duration,
    ) -> Vec<GroupDeliveries> {
        self.wait_groups(groups, timeout, "park", |counts| counts.parked)
            .await
    }

    /// Waits until `count` of each group reaches its `at_least` and the group
    /// is settled; panics naming `what` did not happen after `timeout`.
    async fn wait_groups(
        &self,
        groups: &[(&str, u64)],
        timeout: Duration,
        what: &str,
        count: impl Fn(&GroupDeliveries) -> u64,
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
                .all(|((_, at_least), counts)| count(counts) >= *at_least && counts.is_settled());
            if done {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "consumer groups did not {what} within {timeout:?}: wanted {groups:?}, have {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A producer on this app's broker that is not this app: it signs with
    /// `keys` (`None`: unsigned), as another team's producer on a shared
    /// cluster, or an attacker, would. Shut it down when done.
    pub async fn foreign_producer(&self, keys: Option<Keyring>) -> Result<MqClient, LocalAppError> {
        crate::events::foreign_producer(&self.namesrv_addr, keys)
            .await
            .map_err(LocalAppError::Producer)
    }

    /// The configuration an operator's command (`ordermq dlq …`) run beside
    /// this app would have: the app's, with the running NameServer's address.
    pub fn tool_config(&self) -> Config {
        Config {
            namesrv_addr: Some(self.namesrv_addr.clone()),
            ..(*self.config).clone()
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
