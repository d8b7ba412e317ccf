//! The processes a fault trial runs and kills: the real `ordermq` binary and,
//! in external-broker mode, `ordermq broker` as a process of its own.
//!
//! Faults must hit a real process boundary to mean anything: `kill -9` leaves
//! no destructor, flush or graceful shutdown to hide a bug behind. So the
//! suite never runs ordermq in-process; it spawns the binary with `ORDERMQ_*`
//! variables, on ports it chose once per trial (a restarted process comes
//! back on the same ones, as a real deployment would), with its output
//! appended to a log file in the trial's directory.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ChaosError;

/// The ports of one trial: HTTP, the NameServer and the broker (which also
/// binds `broker - 2` and `broker + 1`).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub namesrv: u16,
    pub broker: u16,
}

/// The OS's range for the local ports of outgoing connections (Linux's
/// `ip_local_port_range`; its default where it cannot be read).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| {
            let mut ends = range.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((ends.next()??, ends.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// A port free now, outside the OS's ephemeral range. A trial's processes
/// come back on their ports after a kill or an outage, and a port in that
/// range can be taken meanwhile by any outgoing connection on the machine
/// (a broker-outage trial once could not restart its broker: its HA port
/// had become a client's local port).
pub fn free_port() -> Result<u16, ChaosError> {
    let (low, high) = ephemeral_range();
    let (from, to) = if low > 11_000 {
        (10_000, low)
    } else {
        (high.saturating_add(1).max(1_027), u16::MAX)
    };
    (0..1_000)
        .map(|_| fastrand::u16(from..to))
        .find(|&port| port_free(port))
        .ok_or_else(|| ChaosError::Setup(format!("no free port in {from}..{to}")))
}

/// A free port ([`free_port`]) not in `taken`, which it joins: the ports of
/// one trial stay distinct even when two are picked free at the same moment.
pub fn free_port_besides(taken: &mut Vec<u16>) -> Result<u16, ChaosError> {
    for _ in 0..1_000 {
        let port = free_port()?;
        if !taken.contains(&port) {
            taken.push(port);
            return Ok(port);
        }
    }
    Err(ChaosError::Setup(format!(
        "no free port besides the {} this trial holds",
        taken.len()
    )))
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl Ports {
    /// Free ports ([`free_port`]), distinct from each other.
    pub fn pick() -> Result<Self, ChaosError> {
        let mut taken = Vec::new();
        let http = free_port_besides(&mut taken)?;
        let namesrv = free_port_besides(&mut taken)?;
        Ok(Self {
            http,
            namesrv,
            broker: free_broker_port(&taken)?,
        })
    }
}

/// A port for a broker: free, as are `port - 2` and `port + 1`, which a
/// broker binds too; none of the three in `taken`.
pub fn free_broker_port(taken: &[u16]) -> Result<u16, ChaosError> {
    for _ in 0..500 {
        let p = free_port()?;
        if p > 1026
            && p < u16::MAX
            && ![p, p - 2, p + 1].iter().any(|q| taken.contains(q))
            && port_free(p - 2)
            && port_free(p + 1)
        {
            return Ok(p);
        }
    }
    Err(ChaosError::Setup("no free broker port triple".into()))
}

/// A spawned child process with its output going to a log file.
#[derive(Debug)]
pub struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `bin args` with `env` added to the environment, minus every
    /// inherited `ORDERMQ_*` variable (ordermq refuses unknown ones, and the
    /// test environment has some of its own).
    pub fn spawn(
        name: &'static str,
        bin: &Path,
        args: &[&str],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Self, ChaosError> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| ChaosError::Setup(format!("cannot open {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| ChaosError::Setup(format!("cannot open {}: {e}", log.display())))?;
        let mut command = Command::new(bin);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("NO_COLOR", "1");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ORDERMQ_") {
                command.env_remove(&key);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .map_err(|e| ChaosError::Setup(format!("cannot start {}: {e}", bin.display())))?;
        Ok(Self {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// An error describing an unexpected exit, with the end of the log.
    pub fn exited(&mut self, what: &str) -> ChaosError {
        let status = self
            .child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "still running".into());
        ChaosError::Process(format!(
            "{} {what} ({status}); last log lines of {}:\n{}",
            self.name,
            self.log.display(),
            log_tail(&self.log, 25)
        ))
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process, as `kill -SIGNAL`.
    pub fn signal(&self, signal: &str) -> Result<(), ChaosError> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| ChaosError::Process(format!("cannot run kill: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(ChaosError::Process(format!(
                "kill -{signal} {} failed ({status})",
                self.name
            )))
        }
    }

    /// SIGTERM, then `kill -9` if it has not exited within `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill9();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill9();
        }
    }
}

/// The last `n` lines of a log file (for error messages).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How many lines of a log file contain `needle`.
pub fn count_in_log(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits until something accepts TCP connections on `port`, or `proc` exits.
pub async fn wait_for_port(
    proc: &mut Proc,
    port: u16,
    timeout: Duration,
) -> Result<(), ChaosError> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if !proc.is_running() {
            return Err(proc.exited("exited while starting"));
        }
        if Instant::now() >= deadline {
            return Err(proc.exited(&format!("did not listen on {port} within {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `GET /healthz` answers 200, or `proc` exits.
pub async fn wait_for_health(
    proc: &mut Proc,
    client: &reqwest::Client,
    port: u16,
    timeout: Duration,
) -> Result<(), ChaosError> {
    let deadline = Instant::now() + timeout;
    let url = format!("http://127.0.0.1:{port}/healthz");
    loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if !proc.is_running() {
            return Err(proc.exited("exited while starting"));
        }
        if Instant::now() >= deadline {
            return Err(proc.exited(&format!("was not healthy within {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `bin args` to completion with `env`, returning (success, stdout, stderr).
pub async fn run_to_end(
    bin: &Path,
    args: &[&str],
    env: &[(String, String)],
) -> Result<(bool, String, String), ChaosError> {
    let mut command = tokio::process::Command::new(bin);
    command.args(args).stdin(Stdio::null()).env("NO_COLOR", "1");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ORDERMQ_") {
            command.env_remove(&key);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .map_err(|_| {
            ChaosError::Process(format!(
                "{} {args:?} did not finish in 120 s",
                bin.display()
            ))
        })?
        .map_err(|e| ChaosError::Setup(format!("cannot run {}: {e}", bin.display())))?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::{Ports, ephemeral_range, free_port};

    #[test]
    fn a_trials_ports_are_outside_the_ephemeral_range() {
        let (low, high) = ephemeral_range();
        let outside = |port: u16| !(low..=high).contains(&port);
        for _ in 0..50 {
            let port = free_port().unwrap();
            assert!(outside(port), "{port} is in {low}..={high}");
        }
        let ports = Ports::pick().unwrap();
        for port in [
            ports.http,
            ports.namesrv,
            ports.broker - 2,
            ports.broker + 1,
        ] {
            assert!(outside(port), "{port} ({ports:?}) is in {low}..={high}");
        }
    }
}
