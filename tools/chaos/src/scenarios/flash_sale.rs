//! Scenario 8, `flash-sale`: a crowd at a flash sale while ordermq is
//! killed with `kill -9` and restarted, then a last sweep that buys what is
//! left.
//!
//! A flash sale is decided in memory (each instance admits from units it
//! leased from the database) and finished later (a paced consumer group
//! creates the orders), so a crash can strike between every step the
//! ordinary order path does in one transaction: after an attempt was
//! answered `QUEUED`, while a lease holds units no request took yet, while
//! a sale order waits for its payment or its close. Half the sale orders
//! are paid; the rest close unpaid after [`CLOSE_AFTER`] and their units go
//! back to the sale for the next shoppers, so units go round during the
//! kills.
//!
//! What must hold, beside the checker's rules for every order (each one a
//! chain, each paid one applied once by every system): every attempt
//! answered `QUEUED` ends `CREATED` or `REJECTED` (none admitted and lost);
//! the sale's books balance (units = unallocated + leased + held by
//! attempts); the units held are those of the sale's open orders (a close
//! or a rejection gave its units back once); one order per created attempt;
//! never more units in open orders than the sale has; and once the sweep is
//! answered `SOLD_OUT`, no unit sits in a lease (a dead instance's lease
//! was returned: nothing stuck).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordermq_api::auth::{DEMO_OPERATOR_TOKEN, DEMO_SHOP_TOKEN};
use ordermq_domain::SaleId;
use ordermq_store::DemoProduct;
use serde_json::{Value, json};

use super::TrialOutcome;
use crate::checker::Expectations;
use crate::driver::{Answer, Driver};
use crate::sale_check::{SaleFacts, judge};
use crate::{ChaosError, Options, Trial, catalog_stock};

/// The product on sale: only sale orders ever buy it.
const PRODUCT: DemoProduct = DemoProduct {
    sku: "FLASH-CHAOS",
    name: "Flash-sale chaos headphones",
    price: 999,
    stock: 100,
};

/// Units the sale offers (out of the product's stock).
const UNITS: i64 = 60;

/// Sale orders created per second: slow enough that a queue forms behind
/// the crowd, so kills find attempts queued.
const ORDER_RATE: u32 = 40;

/// How long a sale order stays unpaid before it closes (and its unit goes
/// back to the sale).
const CLOSE_AFTER: Duration = Duration::from_secs(4);

/// How long a lease lives without an admission: a killed instance's lease
/// is returned this long after its last admission.
const LEASE_TTL: Duration = Duration::from_secs(2);

/// Units an instance leases at once: small, so several leases are written
/// (and several are in flight when a kill strikes).
const LEASE_CHUNK: u32 = 8;

/// The share of created sale orders that are paid.
const PAY_PROBABILITY: f64 = 0.5;

/// Shoppers sending attempts at once.
const CROWD: usize = 8;

/// What the crowd and the sweep saw.
#[derive(Debug, Default)]
struct Seen {
    /// Attempts answered 202 `QUEUED`, in order.
    queued: Vec<String>,
    /// Refusals by code.
    refused: BTreeMap<String, u64>,
    /// Attempts whose answer was lost (the process died with them).
    lost_answers: u64,
    /// 5xx answers.
    server_errors: Vec<String>,
}

impl Seen {
    fn note(&mut self, answer: &Answer) {
        match answer {
            Answer::Got(202, body) => self
                .queued
                .push(body["attempt_id"].as_str().unwrap_or("?").to_owned()),
            Answer::Got(status, body) if *status >= 500 => {
                self.server_errors.push(format!("attempt: {status} {body}"));
            }
            Answer::Got(_, body) => {
                let code = body["code"].as_str().unwrap_or("?").to_owned();
                *self.refused.entry(code).or_default() += 1;
            }
            Answer::Lost(_) => self.lost_answers += 1,
            Answer::Refused(_) => {}
        }
    }
}

/// Scenario 8: a flash sale under `kill -9`, then a sweep of what is left.
pub(super) async fn flash_sale(options: &Options) -> TrialOutcome {
    let mut trial = Trial::new(options, false).await?;
    trial.set("flash_sale_order_rate", ORDER_RATE);
    trial.set(
        "flash_sale_order_close_after",
        format!("{}s", CLOSE_AFTER.as_secs()),
    );
    trial.set("flash_sale_lease_ttl", format!("{}s", LEASE_TTL.as_secs()));
    trial.set("flash_sale_lease_chunk", LEASE_CHUNK);
    trial.seed(&[PRODUCT]).await?;
    trial.start_ordermq().await?;
    let sale_id = create_sale(&trial.driver).await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let crowd = Crowd::start(&trial.driver, &sale_id, &seen);
    let payer = Payer::start(&trial.driver, &seen);
    let mut kills = 0;
    for _ in 0..options.crashes_per_trial {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..=1_500))).await;
        trial.kill_ordermq();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=300))).await;
        if let Err(e) = trial.start_ordermq().await {
            crowd.stop().await;
            payer.stop().await;
            return Err(e);
        }
    }
    tokio::time::sleep(options.load_phase).await;
    crowd.stop().await;
    let ended = payer.wait_all_ended(options.drain_timeout).await;
    payer.stop().await;
    let settled = trial.wait_drained(options.drain_timeout).await
        && trial.wait_settled(CLOSE_AFTER * 8).await;
    // A killed instance's lease comes back only once it expired.
    tokio::time::sleep(LEASE_TTL + Duration::from_millis(500)).await;
    let swept = sweep(&trial.driver, &sale_id, &seen, options.drain_timeout).await;
    let settled_again = trial.wait_drained(options.drain_timeout).await
        && trial.wait_settled(CLOSE_AFTER * 8).await;
    let summary = {
        let seen = seen.lock().expect("seen");
        format!(
            "{} attempts queued, refused {:?}, {} answers lost, {} server errors; \
             every attempt ended: {ended}, settled: {settled}/{settled_again}, \
             sweep sold out: {swept}",
            seen.queued.len(),
            seen.refused,
            seen.lost_answers,
            seen.server_errors.len(),
        )
    };
    options.say(format!("  {kills} kills, {summary}"));
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            closes_due: true,
            // Restarted on its databases: "try again later" while they recover.
            storage_may_refuse: true,
            ..Expectations::default()
        })
        .await?;
    let store = trial.open_store().await?;
    verdict.figures.push(format!("flash sale: {summary}"));
    let (queued, server_errors) = {
        let seen = seen.lock().expect("seen");
        (seen.queued.clone(), seen.server_errors.clone())
    };
    for error in server_errors {
        verdict
            .violations
            .push(format!("a request got a server error: {error}"));
    }
    let facts = SaleFacts::read(
        &store,
        (&sale_id, PRODUCT.sku, UNITS),
        PRODUCT.stock,
        &queued,
        swept,
    )
    .await;
    store.close().await;
    match facts {
        Ok(facts) => judge(&facts, &mut verdict),
        Err(e) => verdict
            .violations
            .push(format!("cannot read the sale back: {e}")),
    }
    Ok((verdict, kills, trial))
}

/// Creates the sale (open from now for an hour, one unit a shopper), as
/// the operator; retried while ordermq is starting.
async fn create_sale(driver: &Driver) -> Result<SaleId, ChaosError> {
    let now = chrono_now_ms();
    let body = json!({
        "sku": PRODUCT.sku, "units": UNITS, "start": now - 1_000,
        "end": now + 3_600_000, "per_user_limit": 1,
    });
    for _ in 0..50 {
        match post(driver, "/api/sales", &body, DEMO_OPERATOR_TOKEN).await {
            Answer::Got(201, sale) => {
                let id = sale["sale_id"].as_str().unwrap_or_default();
                return SaleId::parse(id)
                    .map_err(|e| ChaosError::Setup(format!("the sale's id {id:?}: {e}")));
            }
            Answer::Got(status, body) => {
                return Err(ChaosError::Setup(format!(
                    "creating the sale answered {status} {body}"
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Err(ChaosError::Setup(
        "ordermq never answered the sale's creation".into(),
    ))
}

/// Epoch milliseconds now.
fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `POST path` with a JSON body and a bearer token.
async fn post(driver: &Driver, path: &str, body: &Value, token: &str) -> Answer {
    Driver::answer(
        driver
            .client
            .post(driver.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await,
    )
    .await
}

/// One shopper's attempt.
async fn attempt(driver: &Driver, sale_id: &SaleId, user: &str) -> Answer {
    post(
        driver,
        &format!("/api/sales/{sale_id}/attempts"),
        &json!({ "user_id": user }),
        DEMO_SHOP_TOKEN,
    )
    .await
}

/// The crowd: [`CROWD`] shoppers at a time, each a new user, one in ten
/// tapping twice at once (the second must be `ALREADY_ATTEMPTED`).
struct Crowd {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Crowd {
    fn start(driver: &Driver, sale_id: &SaleId, seen: &Arc<Mutex<Seen>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let tasks = (0..CROWD)
            .map(|_| {
                let (driver, sale_id, seen) = (driver.clone(), sale_id.clone(), seen.clone());
                let (stop, next) = (stop.clone(), next.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let user = format!("shopper-{}", next.fetch_add(1, Ordering::Relaxed));
                        let answers = if fastrand::f64() < 0.1 {
                            let (a, b) = tokio::join!(
                                attempt(&driver, &sale_id, &user),
                                attempt(&driver, &sale_id, &user)
                            );
                            vec![a, b]
                        } else {
                            vec![attempt(&driver, &sale_id, &user).await]
                        };
                        {
                            let mut seen = seen.lock().expect("seen");
                            for answer in &answers {
                                seen.note(answer);
                            }
                        }
                        if answers.iter().any(|a| matches!(a, Answer::Refused(_))) {
                            // ordermq is down: do not spin.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        } else {
                            tokio::time::sleep(Duration::from_millis(fastrand::u64(5..=25))).await;
                        }
                    }
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Follows every queued attempt to its end and pays [`PAY_PROBABILITY`] of
/// the sale orders created.
struct Payer {
    stop: Arc<AtomicBool>,
    /// Attempts not yet seen ended.
    open: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Payer {
    fn start(driver: &Driver, seen: &Arc<Mutex<Seen>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicU64::new(u64::MAX));
        let (driver, seen) = (driver.clone(), seen.clone());
        let task = {
            let (stop, open) = (stop.clone(), open.clone());
            tokio::spawn(async move {
                let mut next = 0;
                let mut waiting: Vec<String> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    {
                        let seen = seen.lock().expect("seen");
                        waiting.extend(seen.queued[next..].iter().cloned());
                        next = seen.queued.len();
                    }
                    let mut still = Vec::new();
                    for id in waiting.drain(..) {
                        match follow(&driver, &id).await {
                            Some(true) => {}
                            Some(false) | None => still.push(id),
                        }
                    }
                    waiting = still;
                    open.store(waiting.len() as u64, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        Self { stop, open, task }
    }

    /// Waits until every attempt queued so far was seen ended.
    async fn wait_all_ended(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.open.load(Ordering::Relaxed) == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

/// Reads attempt `id`; once it ended, pays its order by chance. `Some(true)`:
/// ended; `Some(false)`: still queued; `None`: no answer.
async fn follow(driver: &Driver, id: &str) -> Option<bool> {
    let Answer::Got(200, attempt) = driver_get_shop(driver, &format!("/api/attempts/{id}")).await
    else {
        return None;
    };
    match attempt["state"].as_str() {
        Some("CREATED") => {
            if fastrand::f64() < PAY_PROBABILITY
                && let Some(order) = attempt["order_id"].as_str()
            {
                let quantity = attempt["quantity"].as_i64().unwrap_or(1);
                driver
                    .pay(order, &format!("pay-{order}"), PRODUCT.price * quantity)
                    .await;
            }
            Some(true)
        }
        Some("REJECTED") => Some(true),
        _ => Some(false),
    }
}

/// `GET path` with the shop's token.
async fn driver_get_shop(driver: &Driver, path: &str) -> Answer {
    Driver::answer(
        driver
            .client
            .get(driver.url(path))
            .bearer_auth(DEMO_SHOP_TOKEN)
            .send()
            .await,
    )
    .await
}

/// After the kills: new shoppers, one at a time, until one is answered
/// `SOLD_OUT`; each admitted one's order is paid, so no unit comes back.
/// Returns whether `SOLD_OUT` came.
async fn sweep(
    driver: &Driver,
    sale_id: &SaleId,
    seen: &Arc<Mutex<Seen>>,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    for i in 0..=UNITS * 2 {
        if Instant::now() >= deadline {
            return false;
        }
        let answer = attempt(driver, sale_id, &format!("sweeper-{i}")).await;
        seen.lock().expect("seen").note(&answer);
        match answer {
            Answer::Got(409, body) if body["code"] == "SOLD_OUT" => return true,
            Answer::Got(202, body) => {
                let id = body["attempt_id"].as_str().unwrap_or("?").to_owned();
                loop {
                    match driver_get_shop(driver, &format!("/api/attempts/{id}")).await {
                        Answer::Got(200, a) if a["state"] == "CREATED" => {
                            let order = a["order_id"].as_str().unwrap_or("?");
                            driver
                                .pay(order, &format!("pay-{order}"), PRODUCT.price)
                                .await;
                            break;
                        }
                        Answer::Got(200, a) if a["state"] == "REJECTED" => break,
                        _ if Instant::now() >= deadline => return false,
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            _ => return false,
        }
    }
    false
}
