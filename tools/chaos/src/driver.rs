//! Load against a live ordermq, and the ledger of what it answered.
//!
//! The checker can only call a payment "lost" if it knows which payments
//! were acknowledged, so every request's outcome is written down here: a 200
//! from the notify endpoint is a promise (the order must end PAID with all
//! its effects); a request whose answer never came (connection reset by a
//! crash, a timeout) may or may not have been applied and must be
//! all-or-nothing; a 4xx must have changed nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordermq_api::auth::{DEMO_OPERATOR_TOKEN, DEMO_SHOP_TOKEN};
use ordermq_api::signature::CallbackSigner;
use serde_json::{Value, json};

/// What happened to one order, as seen by the client.
#[derive(Debug, Clone, Default)]
pub struct OrderRecord {
    pub amount: i64,
    /// `(sku, quantity)`.
    pub lines: Vec<(String, i64)>,
    /// A payment notice was sent at least once.
    pub pay_attempted: bool,
    /// A notify answered 200 (not `refund_required`) for this order.
    pub acknowledged: bool,
    /// A notify got no answer (crash, timeout).
    pub answer_lost: bool,
    /// Payment ids notified for this order, and whether each was acknowledged
    /// as the applied one (`Some(false)` = 200 with `refund_required`).
    pub payments: BTreeMap<String, Option<bool>>,
    /// A full refund was asked for (the answer may have been lost).
    pub refund_asked: bool,
    /// A full refund was accepted (202): the order must end REFUNDED, its
    /// effects taken back once.
    pub refund_accepted: bool,
    /// Carrier statuses (`PICKED_UP`, `IN_TRANSIT`, `DELIVERED`) the carrier
    /// callback answered 200 for, in the order sent: each must be recorded
    /// once, the order and its shipment moved forward to the last.
    pub carrier_acked: Vec<String>,
    /// Carrier statuses sent at least once (answered or not), in order.
    pub carrier_sent: Vec<String>,
    /// When the create was sent, on this (the client's) clock: the order
    /// was created after it.
    pub created: Option<Instant>,
    /// From [`OrderRecord::created`] to the answer of a payment that was
    /// `refund_required` while none of the order's payments had been
    /// applied: the order was closed in between, so its age at its close
    /// was less than this. Less than its close delay (and ordermq's
    /// tolerance) is an early close.
    pub found_cancelled_at: Option<Duration>,
}

/// Everything the load saw, shared by its workers.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub orders: BTreeMap<String, OrderRecord>,
    /// Creates whose answer was lost: the order may exist without us knowing its id.
    pub creates_lost: u64,
    /// Requests refused with a 4xx, by code.
    pub rejected: BTreeMap<String, u64>,
    /// 5xx answers (never expected from a healthy or restarting ordermq),
    /// but for 503 `STORAGE_UNAVAILABLE`, counted in `unavailable`.
    pub server_errors: Vec<String>,
    /// 503 `STORAGE_UNAVAILABLE` answers: the order database away (only
    /// expected where a scenario takes it away).
    pub unavailable: u64,
    /// How long each payment answered 200 took, in the order they came.
    pub payment_times: Vec<Duration>,
}

impl Ledger {
    pub fn acknowledged(&self) -> usize {
        self.orders.values().filter(|o| o.acknowledged).count()
    }

    pub fn answers_lost(&self) -> usize {
        self.orders.values().filter(|o| o.answer_lost).count() + self.creates_lost as usize
    }

    /// The `q`-quantile (0..=1) of the payments answered 200, nearest
    /// rank; `None` before the first.
    pub fn payment_quantile(&self, q: f64) -> Option<Duration> {
        let mut times = self.payment_times.clone();
        times.sort_unstable();
        let last = times.len().checked_sub(1)?;
        let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1;
        times.get(rank.min(last)).copied()
    }
}

/// The answer to one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A status and its JSON body.
    Got(u16, Value),
    /// Sent, but no answer came: connection reset or timed out. It may have been applied.
    Lost(String),
    /// Never reached the server (connection refused: ordermq is down).
    Refused(String),
}

/// A client of one ordermq, or of several order instances (each request
/// to one of them at random, so one order's create, payment and refund
/// land on different instances). Ports never change across restarts.
#[derive(Debug, Clone)]
pub struct Driver {
    pub client: reqwest::Client,
    bases: Arc<Vec<String>>,
    /// Where a user's shipments are read, when the warehouse is a process
    /// of its own (its instances); else the order instances.
    warehouse: Option<Arc<Vec<String>>>,
    pub signer: CallbackSigner,
    /// Signs the carrier's callbacks ([`crate::CARRIER_SECRET`]).
    pub carrier_signer: CallbackSigner,
    pub ledger: Arc<Mutex<Ledger>>,
}

impl Driver {
    pub fn new(http_port: u16, secret: &str) -> Self {
        Self::spread(&[http_port], secret)
    }

    /// A driver of the order instances on `http_ports`.
    ///
    /// # Panics
    /// If `http_ports` is empty.
    pub fn spread(http_ports: &[u16], secret: &str) -> Self {
        assert!(!http_ports.is_empty(), "a driver needs an instance");
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(64)
                .build()
                .expect("HTTP client"),
            bases: Arc::new(http_ports.iter().map(|p| local(*p)).collect()),
            warehouse: None,
            signer: CallbackSigner::from_secret(secret.as_bytes()),
            carrier_signer: CallbackSigner::from_secret(crate::CARRIER_SECRET.as_bytes()),
            ledger: Arc::new(Mutex::new(Ledger::default())),
        }
    }

    /// Reads users' shipments from the warehouse's own processes on
    /// `http_ports` (the order role answers none of a user's records).
    pub fn with_warehouse(mut self, http_ports: &[u16]) -> Self {
        self.warehouse = Some(Arc::new(http_ports.iter().map(|p| local(*p)).collect()));
        self
    }

    /// `path` on one of the order instances, at random.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", one_of(&self.bases))
    }

    /// The answer of a sent request, its body as JSON.
    pub async fn answer(response: reqwest::Result<reqwest::Response>) -> Answer {
        match response {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Ok(bytes) => Answer::Got(
                        status,
                        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    ),
                    Err(e) => Answer::Lost(e.to_string()),
                }
            }
            Err(e) if e.is_connect() => Answer::Refused(e.to_string()),
            Err(e) => Answer::Lost(e.to_string()),
        }
    }

    fn note_rejection(&self, status: u16, body: &Value, what: &str) {
        let mut ledger = self.ledger.lock().expect("ledger");
        if status == 503 && body["code"] == "STORAGE_UNAVAILABLE" {
            ledger.unavailable += 1;
        } else if status >= 500 {
            ledger
                .server_errors
                .push(format!("{what}: {status} {body}"));
        } else {
            let code = body["code"].as_str().unwrap_or("?").to_owned();
            *ledger.rejected.entry(code).or_default() += 1;
        }
    }

    /// Creates an order; on 201 it is written into the ledger.
    pub async fn create(&self, user: &str, items: &[(&str, i64)]) -> Answer {
        let sent = Instant::now();
        let items: Vec<Value> = items
            .iter()
            .map(|(sku, q)| json!({"sku": sku, "quantity": q}))
            .collect();
        let answer = Self::answer(
            self.client
                .post(self.url("/api/orders"))
                .bearer_auth(DEMO_SHOP_TOKEN)
                .json(&json!({"user_id": user, "items": items}))
                .send()
                .await,
        )
        .await;
        match &answer {
            Answer::Got(201, body) => {
                let record = OrderRecord {
                    amount: body["amount"].as_i64().unwrap_or(-1),
                    lines: body["lines"]
                        .as_array()
                        .map(|lines| {
                            lines
                                .iter()
                                .map(|l| {
                                    (
                                        l["sku"].as_str().unwrap_or("?").to_owned(),
                                        l["quantity"].as_i64().unwrap_or(0),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    created: Some(sent),
                    ..OrderRecord::default()
                };
                let id = body["order_id"].as_str().unwrap_or("?").to_owned();
                self.ledger
                    .lock()
                    .expect("ledger")
                    .orders
                    .insert(id, record);
            }
            Answer::Got(status, body) => self.note_rejection(*status, body, "create"),
            Answer::Lost(_) => self.ledger.lock().expect("ledger").creates_lost += 1,
            Answer::Refused(_) => {}
        }
        answer
    }

    /// Sends a signed payment notice and records its outcome.
    pub async fn pay(&self, order_id: &str, payment_id: &str, amount: i64) -> Answer {
        let body =
            json!({"order_id": order_id, "payment_id": payment_id, "amount": amount}).to_string();
        let signature = self.signer.sign(body.as_bytes());
        let mut request = self
            .client
            .post(self.url("/api/payments/notify"))
            .header("content-type", "application/json");
        for (name, value) in signature.pairs() {
            request = request.header(name, value);
        }
        {
            let mut ledger = self.ledger.lock().expect("ledger");
            let record = ledger.orders.entry(order_id.to_owned()).or_default();
            record.pay_attempted = true;
            record.payments.entry(payment_id.to_owned()).or_insert(None);
        }
        let sent = Instant::now();
        let answer = Self::answer(request.body(body).send().await).await;
        match &answer {
            Answer::Got(200, receipt) => {
                let refund = receipt["refund_required"].as_bool().unwrap_or(false);
                let mut ledger = self.ledger.lock().expect("ledger");
                ledger.payment_times.push(sent.elapsed());
                let record = ledger.orders.entry(order_id.to_owned()).or_default();
                record.payments.insert(payment_id.to_owned(), Some(!refund));
                if !refund {
                    record.acknowledged = true;
                } else if !record.acknowledged && record.found_cancelled_at.is_none() {
                    // Owed back, and no payment of this order was applied:
                    // it was closed (the receipt says REFUNDING: the refund
                    // of this payment starts in the same transaction).
                    record.found_cancelled_at = record.created.map(|at| at.elapsed());
                }
            }
            Answer::Got(status, body) => self.note_rejection(*status, body, "pay"),
            Answer::Refused(_) => {}
            Answer::Lost(_) => {
                let mut ledger = self.ledger.lock().expect("ledger");
                ledger
                    .orders
                    .entry(order_id.to_owned())
                    .or_default()
                    .answer_lost = true;
            }
        }
        answer
    }

    /// Asks, as the operator, for a full refund of a paid order under
    /// `key` (the same key again names the same refund), and records it.
    pub async fn refund(&self, order_id: &str, key: &str) -> Answer {
        self.ledger
            .lock()
            .expect("ledger")
            .orders
            .entry(order_id.to_owned())
            .or_default()
            .refund_asked = true;
        let answer = Self::answer(
            self.client
                .post(self.url(&format!("/api/orders/{order_id}/refund")))
                .bearer_auth(DEMO_OPERATOR_TOKEN)
                .header("idempotency-key", key)
                .json(&json!({}))
                .send()
                .await,
        )
        .await;
        match &answer {
            Answer::Got(202, _) => {
                self.ledger
                    .lock()
                    .expect("ledger")
                    .orders
                    .entry(order_id.to_owned())
                    .or_default()
                    .refund_accepted = true;
            }
            Answer::Got(status, body) => self.note_rejection(*status, body, "refund"),
            Answer::Lost(_) | Answer::Refused(_) => {}
        }
        answer
    }

    /// The carrier's signed callback for `order_id`'s parcel; a 200 is
    /// written into the ledger.
    pub async fn carrier(&self, order_id: &str, tracking_no: &str, status: &str) -> Answer {
        let body =
            json!({"order_id": order_id, "tracking_no": tracking_no, "status": status}).to_string();
        let signature = self.carrier_signer.sign(body.as_bytes());
        let mut request = self
            .client
            .post(self.url("/api/logistics/notify"))
            .header("content-type", "application/json");
        for (name, value) in signature.pairs() {
            request = request.header(name, value);
        }
        {
            let mut ledger = self.ledger.lock().expect("ledger");
            let sent = &mut ledger
                .orders
                .entry(order_id.to_owned())
                .or_default()
                .carrier_sent;
            if !sent.iter().any(|s| s == status) {
                sent.push(status.to_owned());
            }
        }
        let answer = Self::answer(request.body(body).send().await).await;
        match &answer {
            Answer::Got(200, _) => {
                let mut ledger = self.ledger.lock().expect("ledger");
                let acked = &mut ledger
                    .orders
                    .entry(order_id.to_owned())
                    .or_default()
                    .carrier_acked;
                if !acked.iter().any(|s| s == status) {
                    acked.push(status.to_owned());
                }
            }
            // Not booked yet: the carrier tries again (not a rejection).
            Answer::Got(409, body) if body["code"] == "SHIPMENT_NOT_FOUND" => {}
            Answer::Got(status, body) => self.note_rejection(*status, body, "carrier"),
            Answer::Lost(_) | Answer::Refused(_) => {}
        }
        answer
    }

    /// The tracking number the warehouse booked for `order_id` of `user`, if any yet.
    pub async fn tracking_no(&self, user: &str, order_id: &str) -> Option<String> {
        let path = format!("/api/users/{user}/shipments");
        let answer = match &self.warehouse {
            Some(bases) => {
                let request = self
                    .client
                    .get(format!("{}{path}", one_of(bases)))
                    .bearer_auth(DEMO_OPERATOR_TOKEN);
                Self::answer(request.send().await).await
            }
            None => self.get(&path).await,
        };
        let Answer::Got(200, shipments) = answer else {
            return None;
        };
        let list = shipments
            .as_array()
            .or_else(|| shipments["shipments"].as_array())?;
        list.iter()
            .find(|s| s["order_id"] == order_id)
            .and_then(|s| s["tracking_no"].as_str())
            .map(str::to_owned)
    }

    /// `GET path` as JSON, with the (demo) operator token.
    pub async fn get(&self, path: &str) -> Answer {
        let request = self
            .client
            .get(self.url(path))
            .bearer_auth(DEMO_OPERATOR_TOKEN);
        Self::answer(request.send().await).await
    }
}

/// `http://127.0.0.1:port`.
fn local(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// One of `bases`, at random.
fn one_of(bases: &[String]) -> &str {
    &bases[fastrand::usize(..bases.len())]
}

/// Settings of the background load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub workers: usize,
    /// SKUs to order from (each line 1..=3 units of one of them).
    pub skus: Vec<String>,
    /// Probability that a created order is paid.
    pub pay_probability: f64,
    /// Probability that a payment notice is sent again (a gateway retry).
    pub duplicate_probability: f64,
    /// Probability that an acknowledged order is then refunded in full.
    pub refund_probability: f64,
    /// Probability that an acknowledged order not refunded is then moved
    /// by its carrier: picked up, in transit, delivered.
    pub carrier_probability: f64,
    /// Probability that a paid order is paid late: [`LoadOptions::late_by`]
    /// after its creation instead of at once (by a task of its own, so that
    /// the worker goes on shopping).
    pub late_payments: f64,
    /// How late a late payment comes: within the order's close delay, so
    /// that it must find the order still open.
    pub late_by: Duration,
    /// Pause between a worker's orders.
    pub think: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            workers: 8,
            skus: vec![
                "SKU-1".into(),
                "SKU-2".into(),
                "SKU-3".into(),
                "SKU-4".into(),
            ],
            pay_probability: 0.8,
            duplicate_probability: 0.1,
            refund_probability: 0.0,
            carrier_probability: 0.0,
            late_payments: 0.0,
            late_by: Duration::ZERO,
            think: Duration::from_millis(5),
        }
    }
}

/// Asks for a full refund, again under the same key while no answer comes
/// (ordermq down or restarting), as an operator's tool would.
async fn refund(driver: &Driver, order_id: &str, stop: &AtomicBool) {
    let key = format!("refund-{order_id}");
    for attempt in 0..5u64 {
        match driver.refund(order_id, &key).await {
            Answer::Got(_, _) => return,
            Answer::Lost(_) | Answer::Refused(_) => {
                if stop.load(Ordering::Relaxed) && attempt > 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
}

/// How long the carrier keeps trying one order's callbacks (ordermq down,
/// its shipment not booked yet).
const CARRIER_PATIENCE: Duration = Duration::from_secs(60);

/// The carrier of one paid order: waits for its booking, then reports each
/// status in order, sending again (the same status) while no answer comes
/// or the shipment is not booked yet, and now and then twice as carriers do.
async fn carry(driver: Driver, user: String, order_id: String) {
    let deadline = tokio::time::Instant::now() + CARRIER_PATIENCE;
    let pause = || tokio::time::sleep(Duration::from_millis(fastrand::u64(100..=400)));
    let tracking_no = loop {
        if let Some(tracking_no) = driver.tracking_no(&user, &order_id).await {
            break tracking_no;
        }
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        pause().await;
    };
    for status in ["PICKED_UP", "IN_TRANSIT", "DELIVERED"] {
        loop {
            match driver.carrier(&order_id, &tracking_no, status).await {
                Answer::Got(200, _) => {
                    if fastrand::f64() < 0.2 {
                        driver.carrier(&order_id, &tracking_no, status).await;
                    }
                    break;
                }
                Answer::Got(409, body) if body["code"] == "SHIPMENT_NOT_FOUND" => {}
                // Refused for a reason of its own (recorded): give up on this order.
                Answer::Got(_, _) => return,
                Answer::Lost(_) | Answer::Refused(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            pause().await;
        }
        pause().await;
    }
}

/// One order's payment as its gateway sends it, and what follows it: a
/// duplicate notice, a refund or the carrier.
struct Payment {
    driver: Driver,
    options: LoadOptions,
    user: String,
    order_id: String,
    amount: i64,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    carriers: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Payment {
    async fn run(self) {
        let Self {
            driver,
            options,
            user,
            order_id,
            amount,
            stop,
            acknowledged,
            carriers,
        } = self;
        let payment_id = format!("pay-{order_id}");
        // A gateway retries a notice whose answer it did not get.
        for attempt in 0..3 {
            match driver.pay(&order_id, &payment_id, amount).await {
                Answer::Got(200, _) => {
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                    if fastrand::f64() < options.duplicate_probability {
                        driver.pay(&order_id, &payment_id, amount).await;
                    }
                    if fastrand::f64() < options.refund_probability {
                        refund(&driver, &order_id, &stop).await;
                    } else if fastrand::f64() < options.carrier_probability {
                        let carrier = tokio::spawn(carry(driver.clone(), user, order_id));
                        carriers.lock().expect("carriers").push(carrier);
                    }
                    return;
                }
                Answer::Got(_, _) => return,
                Answer::Lost(_) | Answer::Refused(_) => {
                    if stop.load(Ordering::Relaxed) && attempt > 0 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                }
            }
        }
    }
}

/// Background load: workers creating and paying orders until stopped.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The carriers of orders moved by their carrier (see [`carry`]) and
    /// the late payments.
    carriers: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Payments acknowledged so far (for "payments keep succeeding" checks).
    acknowledged: Arc<AtomicU64>,
}

impl Load {
    /// Payments acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Waits until more than `before` payments are acknowledged, for at
    /// most `within`: how long that took, or `None` if it did not happen
    /// (a fault's "payments are answered again after it healed" check).
    pub async fn acknowledged_past(&self, before: u64, within: Duration) -> Option<Duration> {
        let since = std::time::Instant::now();
        loop {
            if self.acknowledged() > before {
                return Some(since.elapsed());
            }
            if since.elapsed() >= within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn start(driver: &Driver, options: LoadOptions) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let carriers = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..options.workers)
            .map(|w| {
                let (driver, options) = (driver.clone(), options.clone());
                let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
                let carriers = carriers.clone();
                tokio::spawn(async move {
                    let user = format!("chaos-u{w}");
                    while !stop.load(Ordering::Relaxed) {
                        let sku = &options.skus[fastrand::usize(..options.skus.len())];
                        let quantity = fastrand::i64(1..=3);
                        let created = driver.create(&user, &[(sku.as_str(), quantity)]).await;
                        let Answer::Got(201, body) = created else {
                            // Down or restarting: back off a little.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        };
                        if fastrand::f64() < options.pay_probability {
                            let order_id = body["order_id"].as_str().unwrap_or("?").to_owned();
                            let amount = body["amount"].as_i64().unwrap_or(0);
                            let payment = Payment {
                                driver: driver.clone(),
                                options: options.clone(),
                                user: user.clone(),
                                order_id,
                                amount,
                                stop: stop.clone(),
                                acknowledged: acknowledged.clone(),
                                carriers: carriers.clone(),
                            };
                            if fastrand::f64() < options.late_payments {
                                let late = tokio::spawn(async move {
                                    tokio::time::sleep(payment.options.late_by).await;
                                    payment.run().await;
                                });
                                carriers.lock().expect("carriers").push(late);
                            } else {
                                payment.run().await;
                            }
                        }
                        tokio::time::sleep(options.think).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            carriers,
            acknowledged,
        }
    }

    /// Stops the workers and waits for their last requests, the late
    /// payments, and the carriers to report their orders' last status.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        // A late payment may start a carrier while the others are awaited.
        loop {
            let carriers = std::mem::take(&mut *self.carriers.lock().expect("carriers"));
            if carriers.is_empty() {
                break;
            }
            for carrier in carriers {
                let _ = carrier.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Ledger;

    #[test]
    fn payment_quantiles_are_nearest_rank() {
        let mut ledger = Ledger::default();
        assert_eq!(ledger.payment_quantile(0.99), None);
        ledger.payment_times = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(
            ledger.payment_quantile(0.5),
            Some(Duration::from_millis(50))
        );
        assert_eq!(
            ledger.payment_quantile(0.99),
            Some(Duration::from_millis(99))
        );
        assert_eq!(
            ledger.payment_quantile(1.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(ledger.payment_quantile(0.0), Some(Duration::from_millis(1)));
    }
}
