//! Scenario 7, `security`: the doors a stranger tries, against the live
//! binary and its broker.
//!
//! The router's tests prove each refusal in-process; this scenario tries
//! them the way an attacker would, over real sockets, while real orders are
//! paid, and lets the checker judge the databases afterwards (an effect for
//! an order nobody paid is a *phantom*). Its trial, one function each:
//! - [`strangers`]: every route that needs a credential, without one, with
//!   a made-up one, and with the shop's where the operator's is needed;
//! - [`forged_callbacks`]: payment and carrier callbacks signed with a
//!   guessed secret, under a key ordermq does not hold, too old, too far in
//!   the future, or not at all;
//! - [`forged_events`]: an `OrderPaid` for the unpaid order published
//!   straight to the broker, unsigned and under guessed keys: parked by
//!   every group, applied by none;
//! - [`slow_clients`]: hundreds of connections that send their headers a
//!   line every second (and reconnect when cut off) while shoppers buy and
//!   pay: every payment answered, its p99 reported beside a calm phase's;
//! - [`limits::hoarding`] and [`limits::signin_guessing`]: a script that
//!   wants a whole SKU and one that guesses the operator's token, against
//!   the shipped limits (the one trial of the suite that runs with them).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ordermq_api::auth::DEMO_SHOP_TOKEN;
use ordermq_api::routes::{Access, ROUTES};
use ordermq_api::signature::{CallbackSigner, now_millis};
use ordermq_domain::signing::Keyring;
use ordermq_testkit::bad_request::internal_text;
use ordermq_testkit::events::{order_paid, publish_as};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod limits;

use super::TrialOutcome;
use crate::checker::Expectations;
use crate::driver::{Answer, Driver};
use crate::{ChaosError, Options, Trial, catalog_stock};

/// Scenario 7: unauthenticated and wrongly-authorised calls, forged
/// callbacks, forged events on the broker, and slow clients under load.
pub(super) async fn security(options: &Options) -> TrialOutcome {
    let mut trial = Trial::new(options, false).await?;
    // The suite's load runs without limits; this trial tries them.
    limits::restore_shipped_limits(&mut trial);
    trial.start_ordermq().await?;
    let driver = trial.driver.clone();
    let mut notes = Vec::new();
    let mut figures = Vec::new();
    let victim = victim(&driver).await?;

    let mut faults = strangers(&driver, &mut notes).await?;
    faults += forged_callbacks(&driver, &victim, &mut notes).await;
    faults += forged_events(&trial, &victim, options, &mut notes).await;
    faults += slow_clients(&trial, options, &mut notes, &mut figures).await;
    faults += limits::hoarding(&driver, &mut notes).await;
    faults += limits::signin_guessing(&driver, &mut notes).await;
    still_unpaid(&driver, &victim, &mut notes).await;

    let drained = trial.wait_drained(options.drain_timeout).await;
    options.say(format!(
        "  {faults} forged or hostile calls, drained: {drained}, {} problems",
        notes.len()
    ));
    let mut verdict = trial
        .finish(&Expectations {
            start_stock: catalog_stock(&[]),
            ..Expectations::default()
        })
        .await?;
    verdict.violations.extend(notes);
    verdict.figures.extend(figures);
    Ok((verdict, faults, trial))
}

/// The order the forgeries aim at: created, never paid.
#[derive(Debug, Clone)]
struct Victim {
    order_id: String,
    user: String,
    amount: i64,
}

async fn victim(driver: &Driver) -> Result<Victim, ChaosError> {
    let user = "mallory".to_owned();
    match driver.create(&user, &[("SKU-2", 1)]).await {
        Answer::Got(201, order) => Ok(Victim {
            order_id: order["order_id"].as_str().unwrap_or("?").to_owned(),
            user,
            amount: order["amount"].as_i64().unwrap_or(0),
        }),
        other => Err(ChaosError::Setup(format!(
            "cannot create the victim order: {other:?}"
        ))),
    }
}

/// What a refusal must look like: a status and a stable code; a page
/// refuses a stranger by redirecting to the sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Status(u16, &'static str),
    SignIn,
}

/// Every route that needs a credential, called without one, with a made-up
/// one, and (operator routes) with the shop's token. Returns the calls made.
async fn strangers(driver: &Driver, notes: &mut Vec<String>) -> Result<usize, ChaosError> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ChaosError::Setup(e.to_string()))?;
    let mut calls = 0;
    for route in ROUTES.iter().filter(|r| r.access != Access::Public) {
        let path = route
            .path
            .replace("{id}", "O-nobody")
            .replace("{kind}", "sms");
        let stranger = if route.page {
            Refusal::SignIn
        } else {
            Refusal::Status(401, "UNAUTHENTICATED")
        };
        let mut tries = vec![
            ("no token", None, stranger),
            ("a made-up token", Some("guessed-token-0000"), stranger),
        ];
        if route.access == Access::Operator {
            tries.push((
                "the shop's token",
                Some(DEMO_SHOP_TOKEN),
                Refusal::Status(403, "FORBIDDEN"),
            ));
        }
        for (what, token, want) in tries {
            calls += 1;
            let method = reqwest::Method::from_bytes(route.method.as_str().as_bytes())
                .expect("the route table uses standard methods");
            let mut request = client.request(method, driver.url(&path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let got = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let location = response
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    judge_refusal(status, &location, &body, want)
                }
                Err(e) => Err(format!("no answer: {e}")),
            };
            if let Err(problem) = got {
                notes.push(format!(
                    "{} {} with {what}: {problem}",
                    route.method, route.path
                ));
            }
        }
    }
    Ok(calls)
}

fn judge_refusal(status: u16, location: &str, body: &Value, want: Refusal) -> Result<(), String> {
    match want {
        Refusal::SignIn if (300..400).contains(&status) && location.starts_with("/signin") => {
            Ok(())
        }
        Refusal::SignIn => Err(format!(
            "{status} (location {location:?}), expected a redirect to /signin"
        )),
        Refusal::Status(want_status, want_code) => {
            let code = body["code"].as_str().unwrap_or_default();
            if status != want_status || code != want_code {
                return Err(format!(
                    "{status} {code}, expected {want_status} {want_code}"
                ));
            }
            match internal_text(body["message"].as_str().unwrap_or_default()) {
                Some(leak) => Err(format!(
                    "the message shows internal text ({leak:?}): {body}"
                )),
                None => Ok(()),
            }
        }
    }
}

/// Payment and carrier callbacks for the victim that no one with the keys
/// signed; each must be 401 with its code. Returns the calls made.
async fn forged_callbacks(driver: &Driver, victim: &Victim, notes: &mut Vec<String>) -> usize {
    let paid = json!({
        "order_id": victim.order_id,
        "payment_id": "pay-forged",
        "amount": victim.amount,
    })
    .to_string();
    let shipped = json!({
        "order_id": victim.order_id,
        "tracking_no": "TRK-forged-1",
        "status": "DELIVERED",
    })
    .to_string();
    let ten_minutes = 10 * 60 * 1000;
    let guessed = signer("default", "guessed-secret");
    let retired = signer("retired", crate::SECRET);
    let cases = vec![
        (
            "a guessed secret",
            "/api/payments/notify",
            &paid,
            Some(headers(&guessed, &paid, now_millis())),
            "INVALID_SIGNATURE",
        ),
        (
            "a key id ordermq does not hold",
            "/api/payments/notify",
            &paid,
            Some(headers(&retired, &paid, now_millis())),
            "INVALID_SIGNATURE",
        ),
        (
            "the real key, 10 min old",
            "/api/payments/notify",
            &paid,
            Some(headers(&driver.signer, &paid, now_millis() - ten_minutes)),
            "SIGNATURE_EXPIRED",
        ),
        (
            "the real key, 10 min ahead",
            "/api/payments/notify",
            &paid,
            Some(headers(&driver.signer, &paid, now_millis() + ten_minutes)),
            "SIGNATURE_EXPIRED",
        ),
        (
            "no signature",
            "/api/payments/notify",
            &paid,
            None,
            "INVALID_SIGNATURE",
        ),
        (
            "a guessed carrier secret",
            "/api/logistics/notify",
            &shipped,
            Some(headers(&guessed, &shipped, now_millis())),
            "INVALID_SIGNATURE",
        ),
    ];
    let calls = cases.len();
    for (what, path, body, signed, want_code) in cases {
        let mut request = driver
            .client
            .post(driver.url(path))
            .header("content-type", "application/json")
            .body(body.clone());
        for (name, value) in signed.iter().flatten() {
            request = request.header(name.as_str(), value.as_str());
        }
        let got = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                judge_refusal(status, "", &body, Refusal::Status(401, want_code))
            }
            Err(e) => Err(format!("no answer: {e}")),
        };
        if let Err(problem) = got {
            notes.push(format!("POST {path} with {what}: {problem}"));
        }
    }
    calls
}

/// A callback's three signature headers.
type Headers = [(String, String); 3];

fn signer(key_id: &str, secret: &str) -> CallbackSigner {
    let keys = Keyring::new([(key_id.to_owned(), secret.as_bytes())]).expect("a valid key");
    CallbackSigner::new(keys, Duration::from_secs(300))
}

fn headers(signer: &CallbackSigner, body: &str, at_ms: i64) -> Headers {
    signer
        .sign_at(body.as_bytes(), at_ms)
        .pairs()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
}

/// An `OrderPaid` for the victim, its amount raised, published straight to
/// the broker unsigned and under two guessed keys: every group of
/// `TopicOrderPaySuccess` must park all three (`/api/stats` `parked`); the
/// checker then finds any effect applied for the unpaid order. Returns the
/// messages sent.
async fn forged_events(
    trial: &Trial,
    victim: &Victim,
    options: &Options,
    notes: &mut Vec<String>,
) -> usize {
    let namesrv = format!("127.0.0.1:{}", trial.ports.namesrv);
    let forged = order_paid(&victim.order_id, &victim.user, "SKU-2", 100_000_000);
    let parked_before = parked(trial).await;
    let mut sent = 0;
    for keys in [
        None,
        Some(("default", "guessed-secret")),
        Some(("k9", "attacker-secret")),
    ] {
        let keys = keys.map(|(id, secret)| {
            Keyring::new([(id.to_owned(), secret.as_bytes())]).expect("a valid key")
        });
        // Boxed: the RocketMQ producer's future is deep enough to pass the
        // compiler's layout depth limit in the suite's main future.
        match Box::pin(publish_as(&namesrv, keys, &forged)).await {
            Ok(()) => sent += 1,
            Err(e) => notes.push(format!("the broker refused a forged event: {e}")),
        }
    }
    // Four groups subscribe to the topic; each parks each forgery.
    let wanted = parked_before + 4 * sent;
    let deadline = Instant::now() + options.drain_timeout;
    let mut now_parked = parked(trial).await;
    while now_parked < wanted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        now_parked = parked(trial).await;
    }
    if now_parked != wanted {
        notes.push(format!(
            "{sent} forged events: {} parked by the groups, expected {}",
            now_parked - parked_before,
            4 * sent
        ));
    }
    sent
}

/// Messages parked so far (`/api/stats` `parked`, summed over groups).
async fn parked(trial: &Trial) -> usize {
    let Some(stats) = trial.stats().await else {
        return 0;
    };
    match &stats["parked"] {
        Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
        Value::Object(groups) => groups.values().filter_map(Value::as_u64).sum::<u64>() as usize,
        _ => 0,
    }
}

/// The victim is still unpaid, and nobody did anything for its user.
async fn still_unpaid(driver: &Driver, victim: &Victim, notes: &mut Vec<String>) {
    match driver
        .get(&format!("/api/orders/{}", victim.order_id))
        .await
    {
        Answer::Got(200, order) if order["status"] == "UNPAID" => {}
        other => notes.push(format!(
            "the victim order is not UNPAID after the forgeries: {other:?}"
        )),
    }
}

/// Shoppers buy and pay for `phase` while `slow` clients hold connections
/// open sending a header line a second; before it, the same shoppers for
/// the same time alone. Every payment must be answered; the p99s are
/// figures. Returns the slow connections opened.
async fn slow_clients(
    trial: &Trial,
    options: &Options,
    notes: &mut Vec<String>,
    figures: &mut Vec<String>,
) -> usize {
    let driver = &trial.driver;
    let calm = shoppers(driver, "calm", options.slow_phase).await;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(SlowCounts::default());
    let addr = format!("127.0.0.1:{}", trial.ports.http);
    let attackers: Vec<_> = (0..options.slow_connections)
        .map(|_| tokio::spawn(slow_client(addr.clone(), stop.clone(), counts.clone())))
        .collect();
    // Let them connect before the shoppers start.
    let ramp = Instant::now();
    while counts.open.load(Ordering::Relaxed) < options.slow_connections
        && ramp.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let under = shoppers(driver, "slow", options.slow_phase).await;
    stop.store(true, Ordering::Relaxed);
    join_all(attackers).await;
    let opened = counts.opened.load(Ordering::Relaxed);
    figures.push(format!(
        "payments alone: {} answered of {}, p50 {:.1} ms, p99 {:.1} ms",
        calm.answered, calm.sent, calm.p50, calm.p99
    ));
    figures.push(format!(
        "payments beside {} slow connections (peak {} open, {} opened in all, {} refused): {} answered of {}, p50 {:.1} ms, p99 {:.1} ms",
        options.slow_connections,
        counts.peak.load(Ordering::Relaxed),
        opened,
        counts.refused.load(Ordering::Relaxed),
        under.answered,
        under.sent,
        under.p50,
        under.p99
    ));
    for (phase, run) in [("alone", &calm), ("beside slow clients", &under)] {
        if run.answered != run.sent || run.sent == 0 {
            notes.push(format!(
                "payments {phase}: {} answered of {} ({})",
                run.answered,
                run.sent,
                run.problems.join("; ")
            ));
        }
    }
    opened
}

/// The slow clients' tallies.
#[derive(Debug, Default)]
struct SlowCounts {
    open: AtomicUsize,
    peak: AtomicUsize,
    opened: AtomicUsize,
    refused: AtomicUsize,
}

/// One slow client: connects, starts a request, sends a header line a
/// second until the server cuts it off, and starts again, until `stop`.
async fn slow_client(addr: String, stop: Arc<AtomicBool>, counts: Arc<SlowCounts>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(&addr).await else {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        counts.opened.fetch_add(1, Ordering::Relaxed);
        let open = counts.open.fetch_add(1, Ordering::Relaxed) + 1;
        counts.peak.fetch_max(open, Ordering::Relaxed);
        let mut line = 0u32;
        let mut sink = [0u8; 512];
        let mut started = stream
            .write_all(b"POST /api/orders HTTP/1.1\r\nHost: ordermq\r\n")
            .await
            .is_ok();
        while started && !stop.load(Ordering::Relaxed) {
            tokio::select! {
                read = stream.read(&mut sink) => {
                    // An answer (408) or a close: the server cut us off.
                    if matches!(read, Ok(0) | Err(_)) { break; }
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    line += 1;
                    let header = format!("X-Slow-{line}: 1\r\n");
                    started = stream.write_all(header.as_bytes()).await.is_ok();
                }
            }
        }
        counts.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a shopping phase saw.
#[derive(Debug, Default)]
struct Shopping {
    sent: usize,
    answered: usize,
    p50: f64,
    p99: f64,
    problems: Vec<String>,
}

/// A shopper's pause between orders: four shoppers pay about 100 orders a
/// second, a shop's steady traffic (and within SKU-1's stock over a trial).
const THINK: Duration = Duration::from_millis(30);

/// Four shoppers creating and paying orders, one at a time each, for
/// `phase`; the payments' latencies.
async fn shoppers(driver: &Driver, name: &str, phase: Duration) -> Shopping {
    let until = Instant::now() + phase;
    let workers = (0..4).map(|w| {
        let driver = driver.clone();
        let name = format!("{name}-{w}");
        async move {
            let mut latencies = Vec::new();
            let mut problems = Vec::new();
            let mut sent = 0;
            let mut n = 0;
            while Instant::now() < until {
                n += 1;
                let user = format!("{name}-{n}");
                let order = match driver.create(&user, &[("SKU-1", 1)]).await {
                    Answer::Got(201, order) => order,
                    other => {
                        problems.push(format!("{user}: create answered {other:?}"));
                        break;
                    }
                };
                let id = order["order_id"].as_str().unwrap_or("?").to_owned();
                let amount = order["amount"].as_i64().unwrap_or(0);
                sent += 1;
                let started = Instant::now();
                match driver.pay(&id, &format!("pay-{id}"), amount).await {
                    Answer::Got(200, _) => latencies.push(started.elapsed().as_secs_f64() * 1e3),
                    other => problems.push(format!("{id}: {other:?}")),
                }
                tokio::time::sleep(THINK).await;
            }
            (sent, latencies, problems)
        }
    });
    let mut shopping = Shopping::default();
    let mut latencies = Vec::new();
    for (sent, mut l, problems) in join_all(workers).await {
        shopping.sent += sent;
        shopping.answered += l.len();
        latencies.append(&mut l);
        shopping.problems.extend(problems.into_iter().take(3));
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    shopping.p50 = at(0.50);
    shopping.p99 = at(0.99);
    shopping
}
