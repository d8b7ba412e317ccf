//! No hoarding through the whole server: a script hammering order creation
//! for a scarce product is held to the per-user limits (and slowed by the
//! rate limit) with the shipped settings, while other shoppers still buy
//! the rest and pay for it; failed sign-ins are limited per client address
//! as the real listener sees it.

use ordermq::Config;
use ordermq_store::DemoProduct;
use ordermq_testkit::{LocalApp, OPERATOR_TOKEN, create_order, default_limits, fast_third_parties};
use serde_json::Value;
use tokio::task::JoinSet;

const HOT: &str = "HOT-1";
const STOCK: i64 = 100;
const PRICE: i64 = 1_500;
const PER_ORDER: i64 = 5;
const SHOPPERS: usize = 16;

/// One answer to a create: the status, the code of a refusal, `Retry-After`.
#[derive(Debug)]
struct Answer {
    user: String,
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

async fn send(app: &LocalApp, user: String, quantity: i64) -> Answer {
    let response = create_order(app, &user, &[(HOT, quantity)]).await;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        user,
        status,
        body,
        retry_after,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hoarding_script_cannot_take_more_than_its_limit_while_other_shoppers_still_buy() {
    let app = std::sync::Arc::new(
        LocalApp::start(|config| {
            fast_third_parties(config);
            default_limits(config);
        })
        .await
        .expect("ordermq starts"),
    );
    let shipped = Config::default();
    let units_limit = i64::from(shipped.limits_units_per_sku_per_user);
    assert_eq!(
        units_limit, 20,
        "the test's arithmetic assumes the shipped limit"
    );
    app.store
        .upsert_product(&DemoProduct {
            sku: HOT,
            name: "Scarce product",
            price: PRICE,
            stock: STOCK,
        })
        .await
        .unwrap();

    // The script asks for the whole stock in one line, then hammers with
    // small orders, all at once, while the shoppers order.
    let greedy = send(&app, "hoarder".into(), STOCK).await;
    assert_eq!(greedy.status, 409, "{:?}", greedy.body);
    assert_eq!(greedy.body["code"], "SKU_LIMIT_EXCEEDED");
    let mut requests = JoinSet::new();
    for i in 0..(SHOPPERS * 3) {
        let script = app.clone();
        requests.spawn(async move { send(&script, "hoarder".into(), PER_ORDER).await });
        if i % 3 == 0 {
            let app = app.clone();
            let shopper = format!("shopper-{}", i / 3);
            requests.spawn(async move { send(&app, shopper, PER_ORDER).await });
        }
    }
    let answers = requests.join_all().await;

    let (hoarder, shoppers): (Vec<&Answer>, Vec<&Answer>) =
        answers.iter().partition(|a| a.user == "hoarder");
    let hoarded: Vec<&&Answer> = hoarder.iter().filter(|a| a.status == 201).collect();
    assert_eq!(
        hoarded.len() as i64 * PER_ORDER,
        units_limit,
        "the script holds exactly its limit of the SKU"
    );
    for refused in hoarder.iter().filter(|a| a.status != 201) {
        let code = refused.body["code"].as_str().unwrap_or("?");
        match refused.status {
            409 => assert!(
                ["SKU_LIMIT_EXCEEDED", "TOO_MANY_UNPAID_ORDERS"].contains(&code),
                "{refused:?}"
            ),
            429 => {
                assert_eq!(code, "RATE_LIMITED");
                let seconds: u64 = refused.retry_after.as_deref().unwrap().parse().unwrap();
                assert!(seconds >= 1, "{refused:?}");
            }
            _ => panic!("unexpected answer to the script: {refused:?}"),
        }
    }
    assert!(
        hoarder.iter().any(|a| a.status == 429),
        "a burst of 48 creates for one user is rate limited"
    );

    // Every shopper got an order, and pays for it.
    assert_eq!(shoppers.len(), SHOPPERS);
    for shopper in &shoppers {
        assert_eq!(shopper.status, 201, "{shopper:?}");
        let order_id = shopper.body["order_id"].as_str().unwrap();
        let paid = app
            .notify(order_id, &format!("pay-{order_id}"), PRICE * PER_ORDER)
            .await
            .unwrap();
        assert_eq!(paid.status(), 200);
    }
    let sold = SHOPPERS as i64 * PER_ORDER;
    assert_eq!(
        app.store.stock(HOT).await.unwrap(),
        Some((STOCK, sold + units_limit)),
        "sold to the shoppers, and the script's limit reserved until it pays or \
         its orders close"
    );
}

/// A sign-in from `from` (a loopback address of this machine) to the app's
/// real listener; the status and `Retry-After`.
async fn sign_in(app: &LocalApp, from: [u8; 4], token: &str) -> (u16, Option<String>) {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .build()
        .unwrap();
    let response = client
        .post(app.operator_url("/signin"))
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), retry_after)
}

/// Failed sign-ins are counted per client address as the accept loop sees
/// it: the guessing address is refused (even the right token), another is not.
#[tokio::test]
async fn failed_sign_ins_are_limited_per_client_address_through_the_listener() {
    let app = LocalApp::start(|_| {}).await.expect("ordermq starts");
    let allowed = Config::default().limits_signin_failures_per_minute;
    for i in 0..allowed {
        let (status, _) = sign_in(&app, [127, 0, 0, 2], &format!("guess-{i}")).await;
        assert_eq!(status, 401);
    }
    let (status, retry_after) = sign_in(&app, [127, 0, 0, 2], OPERATOR_TOKEN).await;
    assert_eq!(status, 429);
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    let (status, _) = sign_in(&app, [127, 0, 0, 3], OPERATOR_TOKEN).await;
    assert_eq!(status, 204, "another address signs in");
}
