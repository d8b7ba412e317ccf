//! A commit whose answer never came back (PostgreSQL, MariaDB): the
//! connection is cut right after `COMMIT` reached the server, before its
//! answer reached ordermq. The batch's answers must say what the server did: a payment or
//! an order that committed is answered as committed, not "unavailable";
//! one that did not commit is answered unavailable and leaves nothing.
//!
//! Between the store and the server runs [`Cutter`], a TCP proxy that,
//! when armed, cuts the next connection that sends `COMMIT`: after
//! forwarding it and swallowing the server's answer ([`Cut::AfterCommit`]),
//! or without forwarding it ([`Cut::BeforeCommit`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ordermq_domain::ports::StorageErrorKind;
use ordermq_domain::{CreateOrderError, OrderStatus, PayOrderError, UserLimits};
use ordermq_store::{Store, WriteOp, WriteResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::helpers::{TestDb, fanout_only, mysql, new_order, notice, order_id, postgres, seed};

#[derive(Debug, Clone, Copy)]
enum Cut {
    /// `COMMIT` reaches the server; its answer never reaches the client.
    AfterCommit,
    /// `COMMIT` never reaches the server: the connection just drops.
    BeforeCommit,
}

/// A TCP proxy to the database server that cuts one commit when armed.
struct Cutter {
    addr: SocketAddr,
    armed: Arc<Mutex<Option<Cut>>>,
}

impl Cutter {
    async fn start(server: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = Arc::new(Mutex::new(None));
        let shared = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(server).await else {
                    continue;
                };
                tokio::spawn(pipe(client, upstream, shared.clone()));
            }
        });
        Self { addr, armed }
    }

    fn arm(&self, cut: Cut) {
        *self.armed.lock().unwrap() = Some(cut);
    }

    /// Whether the armed cut happened (it disarms itself when it does).
    fn fired(&self) -> bool {
        self.armed.lock().unwrap().is_none()
    }
}

/// One proxied connection. The client's bytes go up one chunk at a time;
/// the first chunk holding `COMMIT` while armed is the cut.
async fn pipe(client: TcpStream, upstream: TcpStream, armed: Arc<Mutex<Option<Cut>>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = upstream.into_split();
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let down_cut = cut.clone();
    let down = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Once cut, the server's answer is swallowed and the client's
            // connection closed (dropping its write half sends FIN).
            if down_cut.load(std::sync::atomic::Ordering::SeqCst)
                || client_write.write_all(&buf[..n]).await.is_err()
            {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let commit = chunk.windows(6).any(|w| w == b"COMMIT");
        let fire = if commit {
            armed.lock().unwrap().take()
        } else {
            None
        };
        match fire {
            None => {
                if server_write.write_all(chunk).await.is_err() {
                    break;
                }
            }
            Some(Cut::AfterCommit) => {
                cut.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = server_write.write_all(chunk).await;
                // Wait for the server's answer (swallowed above), so the
                // commit is surely done before the client hears anything.
                let _ = down.await;
                return;
            }
            Some(Cut::BeforeCommit) => {
                cut.store(true, std::sync::atomic::Ordering::SeqCst);
                drop(server_write);
                let _ = down.await;
                return;
            }
        }
    }
    down.abort();
}

/// A fresh database (`db`), and a second store on it through a cutter.
async fn through_cutter(db: Option<TestDb>) -> Option<(TestDb, Store, Cutter)> {
    let db = db?;
    let (head, rest) = db.url.split_once('@').expect("a URL with credentials");
    let (host_port, path) = rest.split_once('/').expect("a URL with a database");
    let server: SocketAddr = tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .expect("the server's address");
    let cutter = Cutter::start(server).await;
    let url = format!("{head}@{}/{path}", cutter.addr);
    let store = Store::open(&url, &fanout_only()).await.unwrap();
    Some((db, store, cutter))
}

fn create(n: u32) -> WriteOp {
    WriteOp::Create {
        order: new_order(&format!("u{n}"), &[("SKU-1", 1)]),
        order_id: order_id(n),
        close_after_ms: None,
        limits: UserLimits::OFF,
    }
}

async fn status(store: &Store, n: u32) -> Option<OrderStatus> {
    store
        .order(&order_id(n))
        .await
        .unwrap()
        .map(|view| view.status)
}

async fn a_payment_whose_commit_answer_was_lost_is_answered_by_what_committed(db: Option<TestDb>) {
    let Some((db, store, cutter)) = through_cutter(db).await else {
        return;
    };
    seed(&db.store, "SKU-1", 100, 10).await;
    for n in [1, 2] {
        assert!(matches!(
            &db.store.write_batch(&[create(n)], 1).await[..],
            [WriteResult::Created(Ok(_))]
        ));
    }
    // Order 1's payment commits, its answer lost: answered paid, as it is.
    cutter.arm(Cut::AfterCommit);
    let paid = store
        .write_batch(&[WriteOp::Pay(notice(&order_id(1), "p-1", 100))], 2)
        .await;
    assert!(cutter.fired(), "the cutter saw the payment's COMMIT");
    assert!(
        matches!(&paid[..], [WriteResult::Paid(Ok(receipt))] if !receipt.duplicate),
        "{paid:?}"
    );
    assert_eq!(status(&db.store, 1).await, Some(OrderStatus::Paid));
    assert_eq!(db.store.outbox_backlog().await.unwrap(), 1);
    // Order 2's payment never reaches COMMIT: unavailable, nothing written.
    cutter.arm(Cut::BeforeCommit);
    let refused = store
        .write_batch(&[WriteOp::Pay(notice(&order_id(2), "p-2", 100))], 3)
        .await;
    assert!(cutter.fired(), "the cutter saw the payment's COMMIT");
    assert!(
        matches!(&refused[..], [WriteResult::Paid(Err(PayOrderError::Storage(e)))] if e.kind() == StorageErrorKind::Unavailable),
        "{refused:?}"
    );
    assert_eq!(status(&db.store, 2).await, Some(OrderStatus::Unpaid));
    assert_eq!(db.store.outbox_backlog().await.unwrap(), 1);
    // And the store goes on: the retried notice pays order 2.
    let retried = store
        .write_batch(&[WriteOp::Pay(notice(&order_id(2), "p-2", 100))], 4)
        .await;
    assert!(
        matches!(&retried[..], [WriteResult::Paid(Ok(_))]),
        "{retried:?}"
    );
}

async fn an_order_whose_commit_answer_was_lost_is_answered_created(db: Option<TestDb>) {
    let Some((db, store, cutter)) = through_cutter(db).await else {
        return;
    };
    seed(&db.store, "SKU-1", 100, 10).await;
    // Two creates: the general path, in savepoints, one commit.
    cutter.arm(Cut::AfterCommit);
    let created = store.write_batch(&[create(1), create(2)], 1).await;
    assert!(cutter.fired(), "the cutter saw the batch's COMMIT");
    assert!(
        matches!(
            &created[..],
            [WriteResult::Created(Ok(_)), WriteResult::Created(Ok(_))]
        ),
        "{created:?}"
    );
    assert_eq!(status(&db.store, 1).await, Some(OrderStatus::Unpaid));
    assert_eq!(status(&db.store, 2).await, Some(OrderStatus::Unpaid));
    // One create that never reaches COMMIT: unavailable, no order.
    cutter.arm(Cut::BeforeCommit);
    let refused = store.write_batch(&[create(3)], 2).await;
    assert!(cutter.fired(), "the cutter saw the create's COMMIT");
    assert!(
        matches!(&refused[..], [WriteResult::Created(Err(CreateOrderError::Storage(e)))] if e.kind() == StorageErrorKind::Unavailable),
        "{refused:?}"
    );
    assert_eq!(status(&db.store, 3).await, None);
    assert_eq!(db.store.stock("SKU-1").await.unwrap(), Some((10, 2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_whose_commit_answer_was_lost_on_postgres() {
    a_payment_whose_commit_answer_was_lost_is_answered_by_what_committed(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_whose_commit_answer_was_lost_on_mysql() {
    a_payment_whose_commit_answer_was_lost_is_answered_by_what_committed(mysql().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_whose_commit_answer_was_lost_on_postgres() {
    an_order_whose_commit_answer_was_lost_is_answered_created(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_whose_commit_answer_was_lost_on_mysql() {
    an_order_whose_commit_answer_was_lost_is_answered_created(mysql().await).await;
}
