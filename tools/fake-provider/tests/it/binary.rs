//! The `ordermq-fake-provider` program: its first line is its address, and
//! what it answered survives a `kill -9`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use ordermq_domain::now_millis;
use serde_json::json;

use crate::{KEY, keyring, post};

/// Starts the program on port 0 in `dir`; returns it and its address.
fn start(dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ordermq-fake-provider"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("FAKE_PROVIDER_KEYS", format!("{}:{}", KEY.0, KEY.1))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the provider starts");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_owned())
}

#[tokio::test]
async fn a_killed_provider_remembers_what_it_answered() {
    let dir = tempfile::tempdir().unwrap();
    let body = json!({
        "idempotency_key": "OrderPaid:O1", "order_id": "O1", "user_id": "u1",
        "lines": [{"sku": "SKU-1", "quantity": 1}]
    });
    let (mut child, addr) = start(dir.path());
    let url = format!("http://{addr}/logistics/shipments");
    let (status, booked) = post(&url, &keyring(), now_millis(), "OrderPaid:O1", &body).await;
    assert_eq!(status, 200, "{booked}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (mut child, addr) = start(dir.path());
    let url = format!("http://{addr}/logistics/shipments");
    let (status, again) = post(&url, &keyring(), now_millis(), "OrderPaid:O1", &body).await;
    assert_eq!((status, &again), (200, &booked));
    let calls: serde_json::Value = reqwest::get(format!("http://{addr}/calls"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let outcomes: Vec<_> = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["effect", "replay"]);
    child.kill().unwrap();
    child.wait().unwrap();
}
