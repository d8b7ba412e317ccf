//! The HTTP server through its real listener (not the router's `oneshot`):
//! a client that sends half a header is cut off after the header timeout,
//! and connections over the cap wait and are closed without keeping a
//! normal request from being answered once others close.

use std::time::Duration;

use ordermq_testkit::{LocalApp, fast_third_parties};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; panics after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) {
    let mut buffer = [0u8; 1024];
    let read_to_end = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end)
        .await
        .expect("the server should have closed the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_sending_half_a_header_is_cut_off_after_the_header_timeout() {
    let app = LocalApp::start(|config| {
        fast_third_parties(config);
        config.http_header_timeout = Duration::from_millis(500);
        config.http_idle_timeout = Duration::from_secs(120);
    })
    .await
    .unwrap();
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: ordermq\r\n")
        .await
        .unwrap();
    closed_within(&mut slow, Duration::from_secs(10)).await;
    // The server itself is fine.
    let healthy = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(healthy.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_over_the_cap_wait_and_are_closed_and_the_rest_are_served() {
    let app = LocalApp::start(|config| {
        fast_third_parties(config);
        config.http_max_connections = 2;
        config.http_header_timeout = Duration::from_secs(120);
        config.http_idle_timeout = Duration::from_secs(120);
    })
    .await
    .unwrap();
    // Two silent clients take both slots.
    let mut holders = Vec::new();
    for _ in 0..2 {
        holders.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // A third waits for a slot, gets none, and is closed.
    let mut over = TcpStream::connect(app.addr).await.unwrap();
    closed_within(&mut over, Duration::from_secs(10)).await;
    // A normal request while the cap is reached, answered once a slot frees.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = app.url("/healthz");
    let request = tokio::spawn(async move { client.get(url).send().await });
    drop(holders);
    let answered = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("answered once the silent clients left")
        .unwrap()
        .unwrap();
    assert_eq!(answered.status(), 200);
    app.stop().await.unwrap();
}
