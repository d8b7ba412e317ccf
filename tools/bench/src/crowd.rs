//! The crowd's HTTP client: keep-alive connections sending prebuilt
//! HTTP/1.1 requests, one at a time each, on a thread of their own.
//!
//! Why not the client the other scenarios use: a flash-sale crowd is
//! 20,000 requests a second against an answer that takes microseconds, on
//! the same two cores as the server. Through `reqwest` each request cost
//! the load generator a spawned task, a URL parsed, a header map and a
//! JSON value built and parsed again — the profile of 2026-12-07 found
//! HTTP on both sides the hottest code, and the crowd's client and the
//! server sharing the tokio workers. Here a request is bytes written to a
//! socket and an answer is a status line, a `Content-Length` and a body
//! read back (kept only for 2xx answers, whose ids the run needs), as
//! load generators such as wrk2 do; and the client runs on a
//! current-thread runtime on a thread of its own, so the server's workers
//! serve only the server and the operating system shares the cores
//! between the two as it would between two processes.
//!
//! The schedule is open loop as in [`load`]: request `i` is
//! due at `i / rate` seconds and its latency counts from then, so a request
//! that waited for a free connection carries that wait (no coordinated
//! omission). Each connection takes the next due request when it is free.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::load::{self, OpenLoopRun, Sample};

/// Writes request `i` (a whole HTTP/1.1 request, head and body) into the buffer.
pub type Build = dyn Fn(usize, &mut Vec<u8>) + Send + Sync;

/// What a crowd asks: where, how fast, how many, over how many connections.
#[derive(Debug, Clone)]
pub struct Plan {
    pub label: String,
    pub addr: SocketAddr,
    pub rate: f64,
    pub count: usize,
    pub connections: usize,
    /// Stop taking new requests once this many due ones are unanswered.
    pub max_in_flight: usize,
    /// The statuses that answer the request (a decision, whatever it is);
    /// any other, or no answer, is an error.
    pub answers: &'static [u16],
}

/// One answer worth keeping: a 2xx's request index, status and body.
#[derive(Debug, Clone)]
pub struct Won {
    pub index: usize,
    pub status: u16,
    pub body: Vec<u8>,
}

/// A crowd's run: the samples (as [`load::run_open_loop_bounded`] gives
/// them), the statuses counted, the 2xx answers, and the CPU time the
/// client's thread used.
#[derive(Debug)]
pub struct CrowdRun {
    pub run: OpenLoopRun,
    /// `(status, answers)`, by status.
    pub statuses: Vec<(u16, usize)>,
    pub won: Vec<Won>,
    /// CPU seconds of the client's thread (user + system), when the
    /// platform says (Linux: `/proc/thread-self/stat`).
    pub client_cpu_s: Option<f64>,
}

/// Why an exchange failed.
#[derive(Debug)]
enum Exchange {
    Io(std::io::Error),
    /// The server closed the connection before a whole answer.
    Closed,
    Malformed(&'static str),
}

impl std::fmt::Display for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Closed => f.write_str("the server closed the connection"),
            Self::Malformed(what) => write!(f, "a malformed answer: {what}"),
        }
    }
}

impl From<std::io::Error> for Exchange {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// One answer read off a connection.
struct Answer {
    status: u16,
    /// Where the body sits in the read buffer.
    body: std::ops::Range<usize>,
    /// `Connection: close`: the connection carries no further request.
    close: bool,
}

/// Runs the crowd on a thread of its own and waits for it.
///
/// # Errors
/// The thread could not be started, or no connection could be opened.
pub async fn run(plan: Plan, build: Arc<Build>) -> Result<CrowdRun, String> {
    let (done, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-crowd".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = match runtime {
                Ok(runtime) => runtime.block_on(crowd(plan, build)),
                Err(e) => Err(format!("could not start the crowd's runtime: {e}")),
            };
            let _ = done.send(result);
        })
        .map_err(|e| format!("could not start the crowd's thread: {e}"))?;
    answer
        .await
        .map_err(|_| "the crowd's thread ended without an answer".to_owned())?
}

/// What the connections share.
struct Shared {
    plan: Plan,
    build: Arc<Build>,
    begun: Instant,
    interval: Duration,
    next: AtomicUsize,
    answered: AtomicUsize,
    stopped: AtomicBool,
    stopped_at: AtomicUsize,
}

/// What one connection saw.
#[derive(Default)]
struct Seen {
    samples: Vec<Sample>,
    statuses: Vec<(u16, usize)>,
    won: Vec<Won>,
}

impl Seen {
    /// Adds `n` answers of `status`.
    fn count(&mut self, status: u16, n: usize) {
        match self.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, total)) => *total += n,
            None => self.statuses.push((status, n)),
        }
    }
}

async fn crowd(plan: Plan, build: Arc<Build>) -> Result<CrowdRun, String> {
    // Open every connection before the crowd starts, as a load balancer in
    // front of ordermq holds them.
    let mut streams = Vec::with_capacity(plan.connections.max(1));
    for _ in 0..plan.connections.max(1) {
        streams.push(connect(plan.addr).await.map_err(|e| {
            format!(
                "could not open the crowd's connections to {}: {e}",
                plan.addr
            )
        })?);
    }
    let cpu_before = thread_cpu_s();
    let shared = Arc::new(Shared {
        interval: Duration::from_secs_f64(1.0 / plan.rate.max(0.001)),
        begun: Instant::now(),
        plan,
        build,
        next: AtomicUsize::new(0),
        answered: AtomicUsize::new(0),
        stopped: AtomicBool::new(false),
        stopped_at: AtomicUsize::new(0),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for stream in streams {
        tasks.spawn(connection(stream, Arc::clone(&shared)));
    }
    let progress = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let plan = &shared.plan;
                // Taken and due: a connection takes its next request ahead of time.
                let due = (shared.begun.elapsed().as_secs_f64() * plan.rate) as usize + 1;
                load::progress(
                    &plan.label,
                    shared.next.load(Ordering::Relaxed).min(due).min(plan.count),
                    plan.count,
                    shared.answered.load(Ordering::Relaxed) as u64,
                    shared.begun.elapsed(),
                );
            }
        })
    };
    let mut seen = Seen::default();
    while let Some(joined) = tasks.join_next().await {
        let one = joined.map_err(|e| format!("a crowd connection failed: {e}"))?;
        seen.samples.extend(one.samples);
        seen.won.extend(one.won);
        for (status, n) in one.statuses {
            seen.count(status, n);
        }
    }
    progress.abort();
    let wall = shared.begun.elapsed();
    let plan = &shared.plan;
    load::progress(
        &plan.label,
        seen.samples.len(),
        plan.count,
        seen.samples.len() as u64,
        wall,
    );
    eprintln!();
    seen.samples.sort_by_key(|s| s.start);
    seen.statuses.sort_unstable();
    let client_cpu_s = match (cpu_before, thread_cpu_s()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    Ok(CrowdRun {
        run: OpenLoopRun {
            samples: seen.samples,
            wall,
            stopped_at_in_flight: shared
                .stopped
                .load(Ordering::Relaxed)
                .then(|| shared.stopped_at.load(Ordering::Relaxed)),
        },
        statuses: seen.statuses,
        won: seen.won,
        client_cpu_s,
    })
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Takes the next due request whenever this connection is free, until
/// every request is taken or the run stops.
async fn connection(stream: TcpStream, shared: Arc<Shared>) -> Seen {
    let mut stream = Some(stream);
    let mut request = Vec::with_capacity(512);
    let mut read = Vec::with_capacity(4_096);
    let mut seen = Seen::default();
    let plan = &shared.plan;
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.count || shared.stopped.load(Ordering::Relaxed) {
            return seen;
        }
        let due = shared.begun + shared.interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        // Due by now, taken or waiting for a free connection, and unanswered.
        let due_now = ((shared.begun.elapsed().as_secs_f64() * plan.rate) as usize + 1)
            .clamp(i + 1, plan.count);
        let in_flight = due_now - shared.answered.load(Ordering::Relaxed).min(due_now);
        if in_flight >= plan.max_in_flight {
            shared.stopped_at.store(in_flight, Ordering::Relaxed);
            shared.stopped.store(true, Ordering::Relaxed);
            return seen;
        }
        request.clear();
        (shared.build)(i, &mut request);
        let outcome = match stream.as_mut() {
            Some(open) => exchange(open, &request, &mut read).await,
            None => match connect(plan.addr).await {
                Ok(open) => exchange(stream.insert(open), &request, &mut read).await,
                Err(e) => Err(Exchange::Io(e)),
            },
        };
        let latency = Instant::now().saturating_duration_since(due);
        shared.answered.fetch_add(1, Ordering::Relaxed);
        let ok = match outcome {
            Ok(answer) => {
                seen.count(answer.status, 1);
                if (200..300).contains(&answer.status) {
                    seen.won.push(Won {
                        index: i,
                        status: answer.status,
                        body: read[answer.body.clone()].to_vec(),
                    });
                }
                if answer.close {
                    stream = None;
                }
                plan.answers.contains(&answer.status)
            }
            Err(e) => {
                tracing::debug!(error = %e, "a crowd request failed; reconnecting");
                stream = None;
                false
            }
        };
        seen.samples.push(Sample {
            index: i,
            start: due.saturating_duration_since(shared.begun),
            latency,
            ok,
        });
    }
}

/// Writes one request and reads its answer into `read`.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    read: &mut Vec<u8>,
) -> Result<Answer, Exchange> {
    stream.write_all(request).await?;
    read.clear();
    loop {
        if let Some(answer) = parse(read)? {
            return Ok(answer);
        }
        if read.capacity() - read.len() < 1_024 {
            read.reserve(4_096);
        }
        if stream.read_buf(read).await? == 0 {
            return Err(Exchange::Closed);
        }
    }
}

/// A whole answer at the start of `read`, or `None` if more is to come.
fn parse(read: &[u8]) -> Result<Option<Answer>, Exchange> {
    let Some(head_end) = read.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&read[..head_end])
        .map_err(|_| Exchange::Malformed("the answer's head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or(Exchange::Malformed("no HTTP/1.1 status line"))?;
    let mut length = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| Exchange::Malformed("a Content-Length that is not a number"))?,
            );
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Exchange::Malformed(
                "a chunked answer (the crowd reads Content-Length bodies only)",
            ));
        }
    }
    let start = head_end + 4;
    let end = start + length.unwrap_or(0);
    if read.len() < end {
        return Ok(None);
    }
    Ok(Some(Answer {
        status,
        body: start..end,
        close,
    }))
}

/// Appends a `POST path` with a JSON body and a bearer token.
pub fn post_json(out: &mut Vec<u8>, host: &str, path: &str, token: &str, body: &str) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// CPU seconds (user + system) the calling thread has used.
fn thread_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_whole_only_with_its_body() {
        let head =
            b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n";
        let mut read = head.to_vec();
        assert!(parse(&read).expect("well formed").is_none(), "no body yet");
        read.extend_from_slice(b"{\"a\"");
        assert!(parse(&read).expect("well formed").is_none(), "4 of 5 bytes");
        read.extend_from_slice(b"}");
        let answer = parse(&read).expect("well formed").expect("whole");
        assert_eq!(answer.status, 202);
        assert_eq!(&read[answer.body], b"{\"a\"}");
        assert!(!answer.close);
    }

    #[test]
    fn a_closing_answer_says_so_and_a_chunked_one_is_refused() {
        let read = b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let answer = parse(read).expect("well formed").expect("whole");
        assert_eq!((answer.status, answer.close), (401, true));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(matches!(parse(chunked), Err(Exchange::Malformed(_))));
        assert!(matches!(
            parse(b"HTTP/1.0 200 OK\r\n\r\n"),
            Err(Exchange::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_crowd_counts_every_answer_against_a_real_server() {
        // A server that answers 202 to even requests and 409 to odd ones.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 1024];
                        let Ok(n) = socket.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_string();
                            let length: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            if buf.len() < end + 4 + length {
                                break;
                            }
                            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length])
                                .to_string();
                            buf.drain(..end + 4 + length);
                            let i: usize = body.trim().parse().unwrap_or(1);
                            let (status, text) = if i.is_multiple_of(2) {
                                ("202 Accepted", format!("{{\"i\":{i}}}"))
                            } else {
                                ("409 Conflict", "{}".to_owned())
                            };
                            let answer = format!(
                                "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{text}",
                                text.len()
                            );
                            if socket.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let plan = Plan {
            label: "test".into(),
            addr,
            rate: 5_000.0,
            count: 500,
            connections: 4,
            max_in_flight: 10_000,
            answers: &[202, 409],
        };
        let build: Arc<Build> = Arc::new(|i, out: &mut Vec<u8>| {
            post_json(out, "test", "/x", "token", &i.to_string());
        });
        let crowd = run(plan, build).await.expect("the crowd runs");
        assert_eq!(crowd.run.samples.len(), 500);
        assert!(crowd.run.samples.iter().all(|s| s.ok));
        assert_eq!(crowd.statuses, vec![(202, 250), (409, 250)]);
        assert_eq!(crowd.won.len(), 250);
        for won in &crowd.won {
            assert_eq!(won.index % 2, 0, "only the even requests won");
            assert_eq!(won.body, format!("{{\"i\":{}}}", won.index).into_bytes());
        }
        assert_eq!(crowd.run.stopped_at_in_flight, None);
    }
}
